// Work: the handle every asynchronous operation returns. Wait with a timeout, test, read the
// final status, or register a callback (torch futures use it).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "collectives/types.h"

namespace cohort {

class Engine;
namespace device {
class Event;
}

class Work {
 public:
  Work(std::shared_ptr<Engine> engine, OpType op, uint64_t sequence);
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // Blocks until the operation finished or `timeout` passed. Returns the operation's status, or
  // DeadlineExceeded when the wait timed out (the operation goes on; its own timeout is
  // COHORT_TIMEOUT or the one in its options).
  absl::Status Wait(absl::Duration timeout = absl::InfiniteDuration());
  bool IsCompleted() const { return done_.load(std::memory_order_acquire); }
  // The final status; OK while the operation is still running.
  absl::Status status() const ABSL_NO_THREAD_SAFETY_ANALYSIS;
  // Runs `callback` once with the final status: now if already finished, else on completion
  // (on the thread that completes the operation).
  void OnCompletion(std::function<void(const absl::Status&)> callback);

  OpType op() const { return op_; }
  uint64_t sequence() const { return sequence_; }
  // For a receive from any source: the rank the message came from.
  int source_rank() const { return source_rank_.load(); }
  // The registered algorithm that runs (ran) this collective, as `cohort-bench algos` names it;
  // empty for point-to-point operations and for calls refused before an algorithm was chosen.
  std::string_view algorithm() const { return algorithm_; }
  // An operation on CUDA buffers: the event recorded on its stream after its last device step
  // (another stream that uses the results waits for it; the host need not), else nullptr.
  const std::shared_ptr<device::Event>& device_event() const { return device_event_; }

  // Called by the engine.
  void Complete(absl::Status status);
  // The engine hands out a finished Work nobody else holds again for its next blocking call.
  void Reuse(OpType op, uint64_t sequence, std::string_view algorithm, absl::Status status)
      ABSL_NO_THREAD_SAFETY_ANALYSIS;
  void set_source_rank(int rank) { source_rank_.store(rank); }
  // Before the Work is handed out. `algorithm` must outlive it (the registry's names do).
  void set_algorithm(std::string_view algorithm) { algorithm_ = algorithm; }
  // Before the Work is handed out.
  void set_device_event(std::shared_ptr<device::Event> event) { device_event_ = std::move(event); }

 private:
  std::shared_ptr<Engine> engine_;
  OpType op_;
  uint64_t sequence_;
  std::string_view algorithm_;
  std::atomic<bool> done_{false};
  std::atomic<int> source_rank_{-1};
  std::shared_ptr<device::Event> device_event_;
  mutable absl::Mutex mutex_;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::function<void(const absl::Status&)>> callbacks_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace cohort
