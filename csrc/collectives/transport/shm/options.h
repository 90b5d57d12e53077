// Settings of the shm/ channel (CommOptions carries them; the environment only fills defaults).
#pragma once

#include <cstddef>

namespace cohort::shm {

struct ShmOptions {
  size_t ring_bytes = 1 << 20;          // per ordered pair; a power of two
  size_t single_copy_bytes = 64 << 10;  // 0: never read from the peer's memory directly
  size_t lane_bytes = 1 << 20;  // lane slot size when every rank is on this host; 0: no lane
};

}  // namespace cohort::shm
