#include "common/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/name_filter.h"
#include "common/status.h"

namespace cohort {
namespace {

absl::Status ErrnoError(const std::string& what, int error) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(error)));
}

absl::StatusOr<addrinfo*> Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* result = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve host \"", host, "\": ", gai_strerror(rc),
                     "; give a host name or address that this machine can resolve"));
  }
  return result;
}

// Waits for fd to become readable or writable; false on deadline.
absl::Status WaitFor(int fd, short events, Deadline deadline, const std::string& what) {
  while (true) {
    pollfd entry = {fd, events, 0};
    int timeout = deadline.RemainingMillis(1000);
    int rc = ::poll(&entry, 1, timeout);
    if (rc > 0) return absl::OkStatus();
    if (rc < 0 && errno != EINTR) return ErrnoError(absl::StrCat("poll on ", what), errno);
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat("timed out waiting for ", what));
    }
  }
}

}  // namespace

void Fd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> ParseHostPort(const std::string& text) {
  HostPort result;
  std::string port_text;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" is not host:port (expected e.g. [::1]:29500)"));
    }
    result.host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" is not host:port (expected e.g. 10.0.0.1:29500)"));
    }
    result.host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (!absl::SimpleAtoi(port_text, &result.port) || result.port < 0 || result.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" has no valid port (expected 0 to 65535 after the colon)"));
  }
  return result;
}

absl::StatusOr<Fd> ListenTcp(const std::string& host, int port, int backlog) {
  auto resolved = Resolve(host, port, /*passive=*/true);
  if (!resolved.ok()) return resolved.status();
  absl::Status last = absl::UnavailableError("no address to listen on");
  for (addrinfo* info = *resolved; info != nullptr; info = info->ai_next) {
    Fd fd(::socket(info->ai_family, info->ai_socktype | SOCK_CLOEXEC, info->ai_protocol));
    if (!fd.valid()) {
      last = ErrnoError("socket", errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (info->ai_family == AF_INET6) {
      int zero = 0;  // also accept IPv4 on the wildcard address
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (::bind(fd.get(), info->ai_addr, info->ai_addrlen) != 0) {
      const int error = errno;
      last = ErrnoError(absl::StrCat("bind to ", HostPort{host, port}.ToString()), error);
      // Callers tell a taken port from other failures by this code (never by the text).
      if (error == EADDRINUSE) last = absl::AlreadyExistsError(last.message());
      continue;
    }
    if (::listen(fd.get(), backlog) != 0) {
      last = ErrnoError("listen", errno);
      continue;
    }
    freeaddrinfo(*resolved);
    return fd;
  }
  freeaddrinfo(*resolved);
  return last;
}

absl::StatusOr<int> LocalPort(int fd) {
  sockaddr_storage address = {};
  socklen_t length = sizeof(address);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return ErrnoError("getsockname", errno);
  }
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
}

absl::StatusOr<std::string> LocalAddress(int fd) {
  sockaddr_storage address = {};
  socklen_t length = sizeof(address);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return ErrnoError("getsockname", errno);
  }
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&address)->sin_addr, text, sizeof(text));
  } else {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    }
  }
  return std::string(text);
}

absl::StatusOr<Fd> ConnectTcp(const std::string& host, int port, Deadline deadline) {
  std::string target = HostPort{host, port}.ToString();
  int backoff_ms = 5;
  while (true) {
    auto resolved = Resolve(host, port, /*passive=*/false);
    if (!resolved.ok()) return resolved.status();
    absl::Status last = absl::UnavailableError("no address");
    for (addrinfo* info = *resolved; info != nullptr; info = info->ai_next) {
      Fd fd(::socket(info->ai_family, info->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                     info->ai_protocol));
      if (!fd.valid()) {
        last = ErrnoError("socket", errno);
        continue;
      }
      int rc = ::connect(fd.get(), info->ai_addr, info->ai_addrlen);
      if (rc != 0 && errno != EINPROGRESS) {
        last = ErrnoError(absl::StrCat("connect to ", target), errno);
        continue;
      }
      if (rc != 0) {
        absl::Status waited = WaitFor(fd.get(), POLLOUT, deadline, absl::StrCat("connect to ", target));
        if (!waited.ok()) {
          last = waited;
          continue;
        }
        int error = 0;
        socklen_t length = sizeof(error);
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0) {
          last = ErrnoError(absl::StrCat("connect to ", target), error);
          continue;
        }
      }
      freeaddrinfo(*resolved);
      absl::Status status = SetNonBlocking(fd.get(), false);
      if (!status.ok()) return status;
      status = SetNoDelay(fd.get());
      if (!status.ok()) return status;
      return fd;
    }
    freeaddrinfo(*resolved);
    if (deadline.Expired()) {
      return absl::UnavailableError(absl::StrCat(
          "could not connect to ", target, " before the timeout (last error: ", last.message(),
          "); check that the server is running and reachable from this host"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(
        std::min(backoff_ms, std::max(1, deadline.RemainingMillis(backoff_ms)))));
    backoff_ms = std::min(backoff_ms * 2, 200);
  }
}

absl::StatusOr<Fd> AcceptTcp(int listen_fd, Deadline deadline) {
  while (true) {
    absl::Status waited = WaitFor(listen_fd, POLLIN, deadline, "an incoming connection");
    if (!waited.ok()) return waited;
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      Fd owned(fd);
      absl::Status status = SetNoDelay(fd);
      if (!status.ok()) return status;
      return owned;
    }
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      return ErrnoError("accept", errno);
    }
  }
}

absl::Status SetNonBlocking(int fd, bool non_blocking) {
  int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0) return ErrnoError("fcntl", errno);
  flags = non_blocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (::fcntl(fd, F_SETFL, flags) != 0) return ErrnoError("fcntl", errno);
  return absl::OkStatus();
}

absl::Status SetNoDelay(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    return ErrnoError("setsockopt TCP_NODELAY", errno);
  }
  return absl::OkStatus();
}

absl::Status SetBufferSizes(int fd, int64_t bytes) {
  if (bytes <= 0) return absl::OkStatus();
  int value = static_cast<int>(bytes);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &value, sizeof(value)) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, sizeof(value)) != 0) {
    return ErrnoError("setsockopt SO_SNDBUF/SO_RCVBUF", errno);
  }
  return absl::OkStatus();
}

absl::Status WriteFully(int fd, const void* data, size_t length, Deadline deadline,
                        const std::string& what) {
  const char* cursor = static_cast<const char*>(data);
  while (length > 0) {
    ssize_t wrote = ::send(fd, cursor, length, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (wrote > 0) {
      cursor += wrote;
      length -= static_cast<size_t>(wrote);
      continue;
    }
    if (wrote < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      absl::Status waited = WaitFor(fd, POLLOUT, deadline, absl::StrCat("sending to ", what));
      if (!waited.ok()) return waited;
      continue;
    }
    return ErrnoError(absl::StrCat("sending to ", what), errno);
  }
  return absl::OkStatus();
}

absl::Status ReadFully(int fd, void* data, size_t length, Deadline deadline,
                       const std::string& what) {
  char* cursor = static_cast<char*>(data);
  while (length > 0) {
    ssize_t got = ::recv(fd, cursor, length, MSG_DONTWAIT);
    if (got > 0) {
      cursor += got;
      length -= static_cast<size_t>(got);
      continue;
    }
    if (got == 0) {
      return absl::UnavailableError(absl::StrCat(what, " closed the connection"));
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      absl::Status waited = WaitFor(fd, POLLIN, deadline, absl::StrCat("data from ", what));
      if (!waited.ok()) return waited;
      continue;
    }
    return ErrnoError(absl::StrCat("receiving from ", what), errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> InterfaceAddress(const std::string& interface_names) {
  COHORT_ASSIGN_OR_RETURN(NameFilter filter,
                          NameFilter::Parse(interface_names, false, "COHORT_SOCKET_IFNAME"));
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return ErrnoError("getifaddrs", errno);
  std::vector<std::string> names;
  std::string exact, first;
  for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) continue;
    names.push_back(entry->ifa_name);
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(entry->ifa_addr)->sin_addr, text,
              sizeof(text));
    // A whole name wins over prefixes; loopback only when an entry names it.
    if (interface_names == entry->ifa_name && exact.empty()) exact = text;
    bool loopback = (entry->ifa_flags & IFF_LOOPBACK) != 0;
    if (first.empty() && filter.Matches(entry->ifa_name) &&
        (!loopback || (!filter.exclude() && filter.Names(entry->ifa_name)))) {
      first = text;
    }
  }
  freeifaddrs(list);
  if (!exact.empty()) return exact;
  if (first.empty()) {
    return absl::NotFoundError(absl::StrCat("no network interface selected by \"", interface_names,
                                            "\" (COHORT_SOCKET_IFNAME) has an IPv4 address; "
                                            "interfaces with one here: ",
                                            absl::StrJoin(names, ", ")));
  }
  return first;
}

}  // namespace cohort
