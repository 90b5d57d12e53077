// Settings of the tcp/ channel (CommOptions carries them; the environment only fills defaults).
#pragma once

#include <cstdint>
#include <string>

namespace cohort::tcp {

struct TcpOptions {
  int64_t socket_buffer_bytes = 0;  // SO_SNDBUF / SO_RCVBUF; 0: the kernel's autotuning
  std::string interface_name;       // listen on this interface's address (else the bootstrap's)
};

}  // namespace cohort::tcp
