// Deadlines on the monotonic clock. Every wait in cohort is bounded by one of these.
#pragma once

#include <chrono>
#include <cstdint>

#include "absl/time/time.h"

namespace cohort {

using SteadyClock = std::chrono::steady_clock;

inline int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             SteadyClock::now().time_since_epoch())
      .count();
}

// A point on the monotonic clock, or "never" for infinite durations.
class Deadline {
 public:
  static Deadline Never() { return Deadline(INT64_MAX); }
  static Deadline In(absl::Duration duration) {
    if (duration == absl::InfiniteDuration()) return Never();
    return Deadline(NowNanos() + absl::ToInt64Nanoseconds(duration));
  }
  bool IsNever() const { return at_nanos_ == INT64_MAX; }
  bool Expired() const { return !IsNever() && NowNanos() >= at_nanos_; }
  // Remaining time in milliseconds for poll()/epoll_wait(), capped at cap_ms (-1: no cap).
  int RemainingMillis(int cap_ms = -1) const {
    if (IsNever()) return cap_ms;
    int64_t left = (at_nanos_ - NowNanos() + 999'999) / 1'000'000;
    if (left < 0) left = 0;
    if (cap_ms >= 0 && left > cap_ms) left = cap_ms;
    return static_cast<int>(left);
  }
  absl::Duration Remaining() const {
    if (IsNever()) return absl::InfiniteDuration();
    return absl::Nanoseconds(at_nanos_ - NowNanos());
  }
  Deadline Earlier(const Deadline& other) const {
    return at_nanos_ <= other.at_nanos_ ? *this : other;
  }

 private:
  explicit Deadline(int64_t at_nanos) : at_nanos_(at_nanos) {}
  int64_t at_nanos_;
};

}  // namespace cohort
