// Sockets: an owning file descriptor, TCP listen/connect with deadlines, exact reads and writes
// with deadlines, and address helpers. Shared by the store and the TCP transport.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"

namespace cohort {

// Owns one file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

struct HostPort {
  std::string host;
  int port = 0;
  std::string ToString() const;
};

// "host:port", "[v6]:port" or ":port" (empty host). Errors name the text and the form expected.
absl::StatusOr<HostPort> ParseHostPort(const std::string& text);

// A listening TCP socket on host (empty: all interfaces) and port (0: ephemeral). A port
// another socket holds (EADDRINUSE) gives AlreadyExists; other failures Unavailable.
absl::StatusOr<Fd> ListenTcp(const std::string& host, int port, int backlog = 1024);
// The port a bound socket listens on.
absl::StatusOr<int> LocalPort(int fd);
// The address (numeric text) of the local end of a connected socket.
absl::StatusOr<std::string> LocalAddress(int fd);
// Connects to host:port, retrying refused connections until the deadline (the server may not
// be up yet). The returned socket is blocking, with TCP_NODELAY.
absl::StatusOr<Fd> ConnectTcp(const std::string& host, int port, Deadline deadline);
// Accepts one connection before the deadline.
absl::StatusOr<Fd> AcceptTcp(int listen_fd, Deadline deadline);

absl::Status SetNonBlocking(int fd, bool non_blocking);
absl::Status SetNoDelay(int fd);
absl::Status SetBufferSizes(int fd, int64_t bytes);

// Writes / reads exactly `length` bytes (blocking or non-blocking sockets), failing at the
// deadline or when the peer closes. `what` names the peer in errors.
absl::Status WriteFully(int fd, const void* data, size_t length, Deadline deadline,
                        const std::string& what);
absl::Status ReadFully(int fd, void* data, size_t length, Deadline deadline,
                       const std::string& what);

// The IPv4 address of the first interface that `interface_names` selects (NameFilter syntax,
// as COHORT_SOCKET_IFNAME: a whole name, prefixes, ^ to exclude), or an error naming the
// interfaces that exist.
absl::StatusOr<std::string> InterfaceAddress(const std::string& interface_names);

}  // namespace cohort
