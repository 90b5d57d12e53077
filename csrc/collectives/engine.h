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
#include "collectives/flight_recorder.h"
#include "collectives/device_runtime.h"
#include "collectives/op_args.h"
#include "collectives/op_context.h"
#include "collectives/transport/protocol.h"
#include "collectives/work.h"

namespace cohort {

struct EngineConfig {
  EngineSettings settings;
  absl::Duration timeout = absl::Seconds(300);
  std::string algorithm;  // forced, or empty
  std::shared_ptr<const Topology> topology;
  Tuning tuning;          // its topology pointer is set to `topology` by the engine
  bool debug_tuning = false;  // COHORT_DEBUG=TUNING: log each choice, predicted and measured
  // CUDA buffers (device_runtime.h): the backend (may be null), the bootstrap device groups are
  // made from (outlives the communicator), the communicator's name and the path they take.
  std::shared_ptr<device::DeviceBackend> device_backend;
  Bootstrap* bootstrap = nullptr;
  std::string name;            // the communicator's (CommOptions::name)
  DevicePath device_path = DevicePath::kAuto;
  size_t trace_buffer = 2000;  // the flight recorder's entries (COHORT_TRACE_BUFFER)
  std::string trace_dir;       // where it dumps (COHORT_TRACE_DIR)
  int generation = 0;          // cohortrun's (COHORT_GENERATION), for the dumps
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(std::unique_ptr<Protocol> transport, EngineConfig config);
  ~Engine();

  void Start();
  // Fails what is pending, says goodbye to peers (unless broken) and closes the transport.
  void Shutdown();

  std::shared_ptr<Work> Submit(OpArgs args, const std::string& algorithm, absl::Duration timeout);
  // Runs a collective on the calling thread and returns its finished Work, when nothing is queued
  // or in flight ahead of it (the lean path of a blocking call: no queue, no hand-off); else
  // submits it and waits.
  std::shared_ptr<Work> RunNow(OpArgs args, const std::string& algorithm, absl::Duration timeout);
  void Abort(const absl::Status& reason);
  // Wakes the progress thread to run what is queued (a Work got a completion callback).
  void Kick();

  // Shrink, step 1: stops this engine for good. Everything pending fails (peers are told, with
  // `reason`, unless it had failed already) and the progress thread ends; the protocol stays
  // as it is, for TakeProtocol.
  void Revoke(const absl::Status& reason);
  // Shrink, step 2 (after Revoke): the child view of `survivors` over this engine's channels.
  absl::StatusOr<std::unique_ptr<Protocol>> ShrinkProtocol(const std::vector<int>& survivors,
                                                           const std::string& prefix);
  // The ranks this rank learned have failed, and how.
  std::vector<FailureBlame> FailedRanks();
  // Ranks a launcher removed (thread-safe): FailedRanks reports them as Blame::kRemoved.
  void NoteRemoved(const std::vector<int>& ranks);
  // Writes the flight recorder's dump (to `directory`, else COHORT_TRACE_DIR, else here).
  absl::StatusOr<std::string> DumpTrace(const std::string& reason, const std::string& directory);
  const EngineConfig& config() const { return config_; }

  // Runs queued operations on the calling thread until `work` completes, if no other thread is
  // executing. False when another thread holds the engine (the caller should just wait).
  bool HelpUntil(const Work* work);
  // How long a waiting thread polls before it sleeps (COHORT_SPIN_US, else the transport's
  // choice, zero when the ranks of this host have fewer cores than threads that would spin,
  // shortened while waits on this communicator outlast it).
  int SpinMicros() const;

  const Protocol& transport() const { return *transport_; }
  const Topology& topology() const { return *config_.topology; }
  // Only before the first operation (the tuner probe): every rank must hold the same models.
  const Tuning& tuning() const { return config_.tuning; }
  void SetTuning(const Tuning& tuning) {
    config_.tuning = tuning;
    config_.tuning.topology = config_.topology.get();
    config_.tuning.device = &device_->state();
    config_.tuning.lane_bytes = LaneBytes();
    absl::MutexLock lock(&selection_mutex_);
    last_selection_ = {};
    tuning_generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  const std::string& SelectName(const OpArgs& args) const;
  const DeviceRuntime& device() const { return *device_; }

 private:
  struct Operation {
    OpArgs args;
    Fingerprint fingerprint;
    const Algorithm* algorithm = nullptr;
    double predicted_seconds = 0;
    absl::Duration timeout;
    std::shared_ptr<Work> work;
    Request request;  // point-to-point operations
    uint64_t trace_id = 0;  // its flight-recorder entry
    // Point-to-point: `timeout` from when the transfer was posted; an unfinished transfer past
    // it fails (and breaks the communicator, whose connection to that peer is then mid-frame).
    Deadline deadline = Deadline::Never();
    // CUDA buffers: the device steps enqueued at submit (device_runtime.h), and when the wait for
    // them (after the host part) gives up.
    std::unique_ptr<DevicePlan> plan;
    Deadline device_deadline = Deadline::Never();
  };

  size_t LaneBytes() const;
  absl::StatusOr<const Algorithm*> Select(const OpArgs& args, const std::string& forced,
                                          Forcing forcing, double* predicted_seconds);
  void ProgressThread();
  // Sets kick_ and wakes the progress thread.
  void KickLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mutex_);
  // Requires executing_: drains the queue and drives point-to-point transfers until `until`
  // completes (nullptr: until nothing is left).
  void RunLocked(const Work* until) ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void ExecuteLocked(std::shared_ptr<Operation> operation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // Runs a collective; a failure breaks the communicator and is returned (described). The
  // flight recorder notes how it ended.
  absl::Status RunCollectiveLocked(const Operation& operation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  absl::Status RunCollectiveBodyLocked(const Operation& operation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // Fills in an operation (algorithm, fingerprint without sequence); an error fails this call.
  absl::Status Prepare(Operation& operation, OpArgs args, const std::string& algorithm_name,
                       absl::Duration timeout);
  // Why the communicator cannot take an operation now (broken or shut down), or OK.
  absl::Status RefusalLocked(const Fingerprint& fingerprint) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mutex_);
  void CompleteFinishedTransfersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // Fails the first in-flight transfer past its deadline (and with it the communicator).
  void ExpireTransfersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // Fails everything pending with `status`; the first time also tells the peers (blaming whom
  // `status` blames) and dumps the flight recorder. `current`: the operation that failed.
  void BreakLocked(const absl::Status& status, const Operation* current = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // The ranks the transport knows failed, and those a launcher removed (`removed`).
  std::vector<FailureBlame> FailedRanksLocked(const std::vector<int>& removed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // The same for a flight-recorder dump.
  std::vector<FlightRecorder::FailedRank> FailedRanksLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void AfterRelease();
  std::shared_ptr<Operation> PopLocked();
  absl::Status Validate(const OpArgs& args) const;
  // The error a user sees: the op, its sequence number, this rank and host, then the cause.
  absl::Status Describe(const Operation& operation, const absl::Status& status) const;
  std::string Where() const;
  // `status` with the failure's details (collectives/failure.h): the op, its sequence, this
  // rank and the peers the status names.
  absl::Status Failed(OpType op, uint64_t sequence, absl::Status status) const;

  // Operations on CUDA buffers (engine_device.cc).
  std::shared_ptr<Work> SubmitDevice(OpArgs args, const std::string& algorithm,
                                     absl::Duration timeout);
  // The device steps of `operation` (a collective, or a staged point-to-point transfer).
  absl::Status EnqueueDevice(Operation& operation);
  // A collective's host part, then the wait for its device steps (device_pending_).
  void ExecuteDeviceLocked(std::shared_ptr<Operation> operation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // A device send: until its data reached the staging memory it is sent from.
  absl::Status AwaitDeviceSendLocked(Operation& operation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void AwaitDeviceLocked(std::shared_ptr<Operation> operation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // Completes device operations whose steps are done; fails on a device error, NCCL's
  // asynchronous error or a deadline. Returns whether one completed.
  bool PollDeviceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  void FailDeviceLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(executing_);
  // The communicator-level forced algorithm for `args` (a host-only one does not apply to CUDA
  // buffers: their device algorithm is the tuner's, and a staged one runs it inside).
  const std::string& ForcedFor(const OpArgs& args, const std::string& per_call) const;

  std::unique_ptr<DeviceRuntime> device_;  // first: outlives every operation's plan
  std::unique_ptr<Protocol> transport_;
  EngineConfig config_;
  std::unique_ptr<FlightRecorder> recorder_;
  const int rank_;
  const int size_;

  absl::Mutex executing_;  // held by the thread executing operations
  std::vector<char> scratch_ ABSL_GUARDED_BY(executing_);
  std::vector<std::shared_ptr<Operation>> in_flight_ ABSL_GUARDED_BY(executing_);
  std::atomic<int> in_flight_count_{0};
  std::atomic<bool> aborted_{false};
  // Device operations whose host part is done, waiting for their device steps.
  std::deque<std::shared_ptr<Operation>> device_pending_ ABSL_GUARDED_BY(executing_);
  std::atomic<int> device_pending_count_{0};
  int64_t device_nap_nanos_ ABSL_GUARDED_BY(executing_) = 0;
  // The spin budget learned from the waits so far (microseconds; -1: the transport's choice).
  // A wait that ended within the transport's budget doubles it (up to that budget), a longer
  // one halves it: on a host whose cores are shared with other hosts' ranks (containers,
  // namespaces) a spinning waiter keeps its peer off the core, and the waits teach it to sleep.
  std::atomic<int> spin_budget_us_{-1};
  void LearnSpin(int64_t waited_nanos);
  int LearnedSpin(int preferred) const;  // the learned budget, at most `preferred`
  // Device operations enqueue their steps in issue order (held across enqueue and queueing).
  absl::Mutex device_submit_mutex_;

  struct Selection {
    OpType op = OpType::kBarrier;
    DataType dtype = DataType::kUInt8;
    ReduceOp reduce_op = ReduceOp::kSum;
    size_t count = 0;
    int root = -1;
    const Algorithm* algorithm = nullptr;
    double predicted_seconds = 0;
  };
  absl::Mutex selection_mutex_;
  Selection last_selection_ ABSL_GUARDED_BY(selection_mutex_);
  std::atomic<bool> broken_flag_{false};  // broken_ is set (read without the lock)
  std::atomic<uint64_t> tuning_generation_{0};  // SetTuning calls
  // RunNow's last prepared operation and finished Work, reused by the next call like it.
  Operation express_ ABSL_GUARDED_BY(executing_);
  bool express_ready_ ABSL_GUARDED_BY(executing_) = false;
  absl::Duration express_timeout_ ABSL_GUARDED_BY(executing_);
  uint64_t express_generation_ ABSL_GUARDED_BY(executing_) = 0;
  std::shared_ptr<Work> finished_work_ ABSL_GUARDED_BY(executing_);

  absl::Mutex queue_mutex_;
  std::deque<std::shared_ptr<Operation>> queue_ ABSL_GUARDED_BY(queue_mutex_);
  std::atomic<size_t> queued_{0};  // queue_.size(), readable without the lock
  uint64_t next_sequence_ ABSL_GUARDED_BY(queue_mutex_) = 1;
  bool kick_ ABSL_GUARDED_BY(queue_mutex_) = false;
  absl::CondVar wake_;  // the progress thread sleeps on it (with queue_mutex_)
  // The progress thread sleeps in 1 ms naps while the communicator is busy (small submissions
  // need not wake it), and without a timeout after a second of idleness.
  bool napping_ ABSL_GUARDED_BY(queue_mutex_) = false;
  bool stop_ ABSL_GUARDED_BY(queue_mutex_) = false;
  bool shut_down_ ABSL_GUARDED_BY(queue_mutex_) = false;
  absl::Status broken_ ABSL_GUARDED_BY(queue_mutex_);
  absl::Status abort_reason_ ABSL_GUARDED_BY(queue_mutex_);
  std::vector<int> removed_ ABSL_GUARDED_BY(queue_mutex_);

  std::thread thread_;
};

}  // namespace cohort
