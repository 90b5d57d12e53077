// The device side of one communicator: how an operation on CUDA buffers runs without the host
// ever blocking the caller's stream. Used by the engine (engine_device.cc) and the device
// algorithms (algorithms/device.cc, algorithms/device_hierarchical.cc).
//
// An operation on device memory has two halves:
//
//   * its device steps, enqueued on the caller's stream when the operation is submitted, on the
//     caller's thread, so that whatever the caller enqueues next on that stream runs after them
//     (torch's contract): device-group collectives (NCCL inside the host), copies between the
//     buffers and pinned staging memory, events the host part waits for, and *gates*;
//   * its host part, run by the engine in issue order with everything else (OpContext): the
//     fingerprint check against the peers, rails between hosts over the channels, the host
//     algorithm of a staged operation. It opens the gates as it goes.
//
// A gate is a word in pinned host memory and a wait for it enqueued on the stream (a one-thread
// kernel for CUDA, device::Stream::WaitValue): the device steps behind a gate run only once the
// host opened it. Every device algorithm puts a gate before its first device-group call, opened
// after the host part checked fingerprints with the peers, so ranks that called different
// collectives get cohort's error and never reach NCCL's kernels with it.
//
// The operation's Work completes when the event recorded after its last device step completes
// (the engine polls it with NCCL's asynchronous errors, the peers' connections and the
// deadline). On a failure the engine opens every gate (streams drain: nothing waits forever on
// the host) and then aborts the device group (NCCL's kernels return).
//
// Gates and staging memory of an operation that failed are never reused: the stream may still
// pass its gates and copies after the failure. They are kept until the communicator goes, whose
// destructor waits (boundedly) for every stream to pass what it still holds.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "collectives/device/backend.h"
#include "collectives/op_args.h"
#include "collectives/topology.h"
#include "common/bootstrap.h"

namespace cohort {

class OpContext;
class DeviceRuntime;
struct Algorithm;
struct Tuning;

// How CUDA buffers' collectives run (COHORT_CUDA_PATH).
enum class DevicePath {
  kAuto,    // device groups inside hosts where every host can have one, else staged
  kGroups,  // device groups required (an operation fails, saying why, where there are none)
  kStaged,  // always through pinned host memory and cohort's host algorithms
};
absl::StatusOr<DevicePath> ParseDevicePath(const std::string& text);

// What every rank agreed on when the communicator met its first CUDA buffer. The tuner reads it
// (Tuning::device): `groups` decides between the device-group algorithms and the staged one.
struct DeviceState {
  std::atomic<bool> prepared{false};  // the fields below are set (and stay as they are)
  bool groups = false;          // every host has a device group of all its ranks
  std::string no_groups;        // why not, when !groups ("ranks 0 and 1 of host a share ...")
  int device = -1;              // this rank's device
  device::DeviceGroup* group = nullptr;  // this host's group, when groups
  int host = 0;                 // this rank's host (index into Topology::hosts)
  int local_rank = 0;
  int local_size = 1;
};

struct DeviceRuntimeOptions {
  std::string name;  // the communicator's bootstrap prefix
  int rank = 0;
  int size = 1;
  absl::Duration timeout = absl::Minutes(5);
  DevicePath path = DevicePath::kAuto;
  std::string label;  // "communicator 'x' rank 3 (host)", for errors
  size_t segment_bytes = 512 << 10;  // COHORT_CHUNK_BYTES: device pipelines cut by a multiple
};

// One operation's device steps and what its host part needs of them.
class DevicePlan {
 public:
  DevicePlan(DeviceRuntime& runtime, const OpArgs& args, const Tuning& tuning,
             std::string host_algorithm);
  // Opens every gate it holds that is still closed (a plan dropped before its host part ran,
  // e.g. queued when the communicator failed, must not leave a stream waiting), and hands its
  // gates and staging back, or to the runtime's keep when it did not finish cleanly.
  ~DevicePlan();
  DevicePlan(const DevicePlan&) = delete;
  DevicePlan& operator=(const DevicePlan&) = delete;

  // ---- At submit (the caller's thread; device operations are enqueued in issue order) ----
  const OpArgs& args() const { return args_; }
  device::Stream& stream() const { return *args_.stream; }
  const DeviceState& state() const;
  device::DeviceGroup& group() const;  // requires state().groups
  const Tuning& tuning() const { return tuning_; }
  // The communicator's forced algorithm when it is a host one (a staged operation runs it).
  const std::string& host_algorithm() const { return host_algorithm_; }
  int rank() const;
  int size() const;
  size_t segment_bytes() const;
  // Enqueues a gate on the stream; returns its number in this plan (for Open).
  absl::StatusOr<int> AddGate();
  // Records an event on the stream; returns its number (for WaitEvent).
  absl::StatusOr<int> AddEvent();
  // Pinned host memory for this operation, at least `bytes` (64-byte aligned); one region per
  // call, alive until the plan goes.
  absl::StatusOr<char*> Staging(size_t bytes);
  char* staging(int index) const { return static_cast<char*>(staging_[index]->data()); }
  // Enqueues a device-group call on the stream.
  absl::Status Call(const device::DeviceCall& call);
  // Records the event the operation's Work completes with: the last device step.
  absl::Status Finish();
  // A staged operation: the host algorithm its host part runs, on `args` (the staging memory).
  void SetHostRun(const Algorithm* algorithm, OpArgs args);
  const Algorithm* host_run() const { return host_run_; }
  const OpArgs& host_args() const { return host_args_; }

  // ---- In the host part (the executing thread) ----
  // Lets the stream pass gate `gate` (and every earlier gate of this plan still closed).
  void Open(int gate);
  void OpenAll();
  // Until event `event` completed, driving the channels (errors of the stream's work, a peer's
  // loss, an abort and the deadline end it); `what` names it in errors.
  absl::Status WaitEvent(OpContext& context, int event, const char* what);

  // ---- For the engine ----
  const std::shared_ptr<device::Event>& done() const { return done_; }
  // The done event's state: true once the device steps completed.
  absl::StatusOr<bool> QueryDone();
  // The operation finished cleanly (its done event completed): gates and staging may be reused.
  void MarkFinished() { finished_ = true; }

 private:
  DeviceRuntime& runtime_;
  const OpArgs args_;
  const Tuning& tuning_;
  const std::string host_algorithm_;
  std::vector<int> gates_;  // indexes into the runtime's gate words
  size_t opened_ = 0;       // gates_[0, opened_) are open
  std::vector<std::unique_ptr<device::Event>> events_;
  std::vector<std::shared_ptr<device::HostMemory>> staging_;
  std::shared_ptr<device::Event> done_;
  bool finished_ = false;
  const Algorithm* host_run_ = nullptr;
  OpArgs host_args_;
};

class DeviceRuntime {
 public:
  // `backend` may be null (libcohort without CUDA): every CUDA operation then fails saying so.
  // `bootstrap` must outlive the communicator (device groups are made from it when the first
  // CUDA operation comes).
  DeviceRuntime(std::shared_ptr<device::DeviceBackend> backend, Bootstrap* bootstrap,
                const Topology& topology, DeviceRuntimeOptions options);
  // Opens every gate, then waits (at most a few seconds) for every stream to pass what the
  // kept plans hold before freeing their memory (leaked, with a warning, if one never does).
  ~DeviceRuntime();

  device::DeviceBackend* backend() const { return backend_.get(); }
  const DeviceState& state() const { return state_; }
  const DeviceRuntimeOptions& options() const { return options_; }

  // Whether an operation on `args` (CUDA memory) can be taken: a backend, a stream of its kind,
  // one device per communicator. The error says what to change.
  absl::Status Check(const OpArgs& args) const;
  // The first CUDA operation of the communicator, on every rank (collective, through the
  // bootstrap): agrees with every rank on device groups and makes this host's. Later calls
  // return at once (the first result, which sticks).
  absl::Status Prepare(int device);

  // Fails what is pending: opens every gate (streams drain), then aborts the device group.
  // Callable from any thread, more than once.
  void Fail(const absl::Status& reason);
  // NCCL's asynchronous error (or the fake's), OK when healthy or without a group.
  absl::Status AsyncError();

  // For plans.
  absl::StatusOr<int> AcquireGate();
  void OpenGate(int gate);
  void ReleaseGates(const std::vector<int>& gates, bool reuse);
  const std::atomic<uint64_t>* gate_word(int gate) const;
  absl::StatusOr<std::shared_ptr<device::HostMemory>> Stage(size_t bytes);
  void ReturnStaging(std::vector<std::shared_ptr<device::HostMemory>> staging, bool reuse,
                     std::shared_ptr<device::Event> done);

 private:
  absl::Status PrepareLocked(int device) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status AllocateGatesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const std::shared_ptr<device::DeviceBackend> backend_;
  Bootstrap* const bootstrap_;
  const Topology& topology_;
  const DeviceRuntimeOptions options_;
  DeviceState state_;

  absl::Mutex mutex_;
  bool prepare_started_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status prepared_ ABSL_GUARDED_BY(mutex_);
  std::unique_ptr<device::DeviceGroup> group_;   // made once, in Prepare (under mutex_)
  std::atomic<device::DeviceGroup*> group_ptr_{nullptr};  // group_, for Fail from any thread
  std::atomic<bool> failed_{false};

  // Gate words: one pinned slab, allocated in Prepare; a word is 0 while closed, 1 once open.
  static constexpr int kGates = 4096;
  absl::Mutex gate_mutex_;
  std::unique_ptr<device::HostMemory> gates_;
  std::atomic<std::atomic<uint64_t>*> words_{nullptr};  // gates_'s memory
  std::vector<int> free_gates_ ABSL_GUARDED_BY(gate_mutex_);

  // Staging buffers finished with, for reuse (at most kPooled), and those of failed operations
  // with the done event to wait for before freeing them.
  static constexpr size_t kPooled = 8;
  absl::Mutex staging_mutex_;
  std::vector<std::shared_ptr<device::HostMemory>> pool_ ABSL_GUARDED_BY(staging_mutex_);
  struct Kept {
    std::vector<std::shared_ptr<device::HostMemory>> memory;
    std::shared_ptr<device::Event> done;
  };
  std::vector<Kept> kept_ ABSL_GUARDED_BY(staging_mutex_);
};

// Bytes of an operation's input and output buffers on this rank, from its args (what a staged
// operation copies to and from the host): 0 where the rank neither reads nor writes one.
size_t InputBytes(const OpArgs& args, int rank, int size);
size_t OutputBytes(const OpArgs& args, int rank, int size);

// The host part's first step in every device algorithm: one zero-byte frame to the next rank,
// one from the previous, each carrying the operation's fingerprint; the protocol compares
// them, so around the ring every rank runs the same collective or the mismatch is an error.
absl::Status CheckFingerprintsOnHost(OpContext& context);

}  // namespace cohort
