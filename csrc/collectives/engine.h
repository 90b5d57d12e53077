// The progress engine behind a Communicator: an issue-ordered queue of operations, executed
// either by the communicator's one progress thread or, when it is idle, inline by the thread
// that waits for the result (no hand-off on the latency path). Failures break the communicator:
// every pending operation fails with the first error and peers are told why.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "collectives/algorithms/registry.h"
#include "collectives/op_args.h"
#include "collectives/op_context.h"
#include "collectives/transport/transport.h"
#include "collectives/work.h"

namespace cohort {

struct EngineConfig {
  EngineSettings settings;
  absl::Duration timeout = absl::Seconds(300);
  std::string algorithm;  // forced, or empty
  std::shared_ptr<const Topology> topology;
  Tuning tuning;          // its topology pointer is set to `topology` by the engine
  bool debug_tuning = false;  // COHORT_DEBUG=TUNING: log each choice, predicted and measured
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(std::unique_ptr<Transport> transport, EngineConfig config);
  ~Engine();

  void Start();
  // Fails what is pending, says goodbye to peers (unless broken) and closes the transport.
  void Shutdown();

  std::shared_ptr<Work> Submit(OpArgs args, const std::string& algorithm, absl::Duration timeout);
  void Abort(const absl::Status& reason);

  // Runs queued operations on the calling thread until `work` completes, if no other thread is
  // executing. False when another thread holds the engine (the caller should just wait).
  bool HelpUntil(const Work* work);

  const Transport& transport() const { return *transport_; }
  const Topology& topology() const { return *config_.topology; }
  // Only before the first operation (the tuner probe): every rank must hold the same models.
  const Tuning& tuning() const { return config_.tuning; }
  void SetTuning(const Tuning& tuning) {
    config_.tuning = tuning;
    config_.tuning.topology = config_.topology.get();
    config_.tuning.lane_bytes = LaneBytes();
  }
  const std::string& SelectName(const OpArgs& args) const;

 private:
  struct Operation {
    OpArgs args;
    Fingerprint fingerprint;
    const Algorithm* algorithm = nullptr;
    double predicted_seconds = 0;
    absl::Duration timeout;
    std::shared_ptr<Work> work;
    Request request;  // point-to-point operations
  };

  size_t LaneBytes() const;
  void ProgressThread();
  // Requires executing_: drains the queue and drives point-to-point transfers until `until`
  // completes (nullptr: until nothing is left).
  void RunLocked(const Work* until) ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void ExecuteLocked(std::shared_ptr<Operation> operation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void CompleteFinishedTransfersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void BreakLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void AfterRelease();
  std::shared_ptr<Operation> PopLocked();
  absl::Status Validate(const OpArgs& args) const;
  // The error a user sees: the op, its sequence number, this rank and host, then the cause.
  absl::Status Describe(const Operation& operation, const absl::Status& status) const;
  std::string Where() const;

  std::unique_ptr<Transport> transport_;
  EngineConfig config_;
  const int rank_;
  const int size_;

  absl::Mutex executing_;  // held by the thread executing operations
  std::vector<char> scratch_ ABSL_GUARDED_BY(executing_);
  std::vector<std::shared_ptr<Operation>> in_flight_ ABSL_GUARDED_BY(executing_);
  std::atomic<int> in_flight_count_{0};
  std::atomic<bool> aborted_{false};

  absl::Mutex queue_mutex_;
  std::deque<std::shared_ptr<Operation>> queue_ ABSL_GUARDED_BY(queue_mutex_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(queue_mutex_) = 1;
  bool kick_ ABSL_GUARDED_BY(queue_mutex_) = false;
  // The progress thread sleeps in 1 ms naps while the communicator is busy (small submissions
  // need not wake it), and without a timeout after a second of idleness.
  bool napping_ ABSL_GUARDED_BY(queue_mutex_) = false;
  bool stop_ ABSL_GUARDED_BY(queue_mutex_) = false;
  bool shut_down_ ABSL_GUARDED_BY(queue_mutex_) = false;
  absl::Status broken_ ABSL_GUARDED_BY(queue_mutex_);
  absl::Status abort_reason_ ABSL_GUARDED_BY(queue_mutex_);

  std::thread thread_;
};

}  // namespace cohort
