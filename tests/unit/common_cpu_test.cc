// CoresToSpare: a machine with more runnable threads than cores has none to spin on.
#include "common/cpu.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace cohort {
namespace {

TEST(CoresToSpare, FalseWhileThreadsOutnumberCores) {
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  ASSERT_GT(cores, 0);
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (long i = 0; i < cores + 2; ++i) {
    busy.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  }
  // The answer is re-read every 2 ms; the kernel's runnable count follows at once.
  bool spare = true;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (spare && std::chrono::steady_clock::now() < until) {
    spare = CoresToSpare();
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  stop = true;
  for (auto& thread : busy) thread.join();
  EXPECT_FALSE(spare) << cores + 2 << " spinning threads on " << cores
                      << " cores, yet CoresToSpare() kept saying there is a core to spare";
}

}  // namespace
}  // namespace cohort
