#include "store_bootstrap.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort::torch_ext {
namespace {

std::chrono::milliseconds ToMilliseconds(absl::Duration timeout) {
  // c10d::Store treats 0 as "no timeout": never pass it for a finite wait.
  if (timeout == absl::InfiniteDuration()) return std::chrono::hours(24 * 365);
  return std::chrono::milliseconds(std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout)));
}

// Store errors arrive as exceptions (c10::Error, std::runtime_error): turn them into a Status
// that says which keys were involved, and whether it looks like a timeout.
absl::Status FromException(const std::exception& error, const std::string& what) {
  std::string message = error.what();
  // c10::Error appends a C++ backtrace after the first line; keep the first line only.
  if (auto newline = message.find('\n'); newline != std::string::npos) message.resize(newline);
  std::string lower = message;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  std::string text = absl::StrCat("torch store: ", what, ": ", message);
  if (lower.find("timeout") != std::string::npos || lower.find("timed out") != std::string::npos) {
    return absl::DeadlineExceededError(text);
  }
  return absl::UnavailableError(text);
}

}  // namespace

StoreBootstrap::StoreBootstrap(c10::intrusive_ptr<c10d::Store> store, std::string local_address)
    : store_(std::move(store)), local_address_(std::move(local_address)) {}

absl::Status StoreBootstrap::Set(const std::string& key, const std::string& value) {
  try {
    store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
    return absl::OkStatus();
  } catch (const std::exception& error) {
    return FromException(error, absl::StrCat("set \"", key, "\""));
  }
}

absl::StatusOr<std::string> StoreBootstrap::Get(const std::string& key, absl::Duration timeout) {
  try {
    store_->wait({key}, ToMilliseconds(timeout));
    std::vector<uint8_t> value = store_->get(key);
    return std::string(value.begin(), value.end());
  } catch (const std::exception& error) {
    return FromException(error, absl::StrCat("get \"", key, "\" (waited up to ",
                                             absl::FormatDuration(timeout), ")"));
  }
}

absl::Status StoreBootstrap::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  try {
    store_->wait(keys, ToMilliseconds(timeout));
    return absl::OkStatus();
  } catch (const std::exception& error) {
    return FromException(error, absl::StrCat("wait for \"", absl::StrJoin(keys, "\", \""),
                                             "\" (up to ", absl::FormatDuration(timeout), ")"));
  }
}

absl::StatusOr<int64_t> StoreBootstrap::Add(const std::string& key, int64_t delta) {
  try {
    return store_->add(key, delta);
  } catch (const std::exception& error) {
    return FromException(error, absl::StrCat("add to \"", key, "\""));
  }
}

absl::StatusOr<std::string> StoreBootstrap::CompareSet(const std::string& key,
                                                       const std::string& expected,
                                                       const std::string& desired) {
  try {
    std::vector<uint8_t> stored =
        store_->compareSet(key, std::vector<uint8_t>(expected.begin(), expected.end()),
                           std::vector<uint8_t>(desired.begin(), desired.end()));
    return std::string(stored.begin(), stored.end());
  } catch (const std::exception& error) {
    std::string message = error.what();
    // Stores that have no compare_set (some Python stores) say so by throwing.
    if (message.find("ot implemented") != std::string::npos) {
      return absl::UnimplementedError(absl::StrCat("torch store: ", message));
    }
    return FromException(error, absl::StrCat("compare_set \"", key, "\""));
  }
}

std::string LocalAddressToward(const std::string& host) {
  if (host.empty()) return "";
  addrinfo hints = {};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &found) != 0 || found == nullptr) return "";
  std::string result;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    sockaddr_in local = {};
    socklen_t length = sizeof(local);
    if (connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      char text[INET_ADDRSTRLEN] = {};
      if (inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text)) != nullptr) result = text;
    }
    close(fd);
  }
  freeaddrinfo(found);
  return result;
}

}  // namespace cohort::torch_ext
