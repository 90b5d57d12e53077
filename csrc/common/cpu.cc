#include "common/cpu.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common/clock.h"

namespace cohort {
namespace {

// /proc/loadavg's fourth field is "runnable/threads", machine-wide: every network namespace,
// container and process of the machine counts, spinners included (they are runnable).
int RunnableNow() {
  static const int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char text[128];
  const ssize_t got = pread(fd, text, sizeof(text) - 1, 0);
  if (got <= 0) return -1;
  text[got] = '\0';
  const char* field = text;
  for (int spaces = 0; spaces < 3 && field != nullptr; ++spaces) {
    field = std::strchr(field, ' ');
    if (field != nullptr) ++field;
  }
  if (field == nullptr) return -1;
  char* end = nullptr;
  const long runnable = std::strtol(field, &end, 10);
  if (end == field || *end != '/') return -1;
  return static_cast<int>(runnable);
}

}  // namespace

bool CoresToSpare() {
  // Read at most every 2 ms: a wait asks each time it starts, and the answer changes slowly.
  static std::atomic<int64_t> checked_at{0};
  static std::atomic<bool> spare{true};
  static const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const int64_t now = NowNanos();
  int64_t last = checked_at.load(std::memory_order_relaxed);
  if (now - last >= 2'000'000 &&
      checked_at.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    const int runnable = RunnableNow();
    spare.store(runnable < 0 || cores <= 0 || runnable <= cores, std::memory_order_relaxed);
  }
  return spare.load(std::memory_order_relaxed);
}

}  // namespace cohort
