// What an algorithm sees while it runs one collective: its rank and world, asynchronous sends
// and receives to peers (tagged, carrying the collective's fingerprint), waits that drive the
// transport, scratch memory, the reduce kernel and the pipeline segment size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "collectives/op_args.h"
#include "collectives/reduce.h"
#include "collectives/topology.h"
#include "collectives/transport/protocol.h"
#include "common/clock.h"

namespace cohort {

class DevicePlan;

struct EngineSettings {
  size_t segment_bytes = 512 << 10;
  int spin_microseconds = -1;  // -1: the transport's preference
  bool windows = true;         // algorithms may put into peers' memory (COHORT_WINDOWS)
};

class OpContext {
 public:
  // The operation's deadline is `timeout` from its start, taken when something first has to
  // wait (an operation that never waits never reads the clock).
  OpContext(Protocol& transport, const Topology& topology, const Fingerprint& fingerprint,
            const OpArgs& args, absl::Duration timeout, const EngineSettings& settings,
            std::vector<char>& scratch, const std::atomic<bool>& aborted);

  int rank() const { return rank_; }
  int size() const { return size_; }
  const Topology& topology() const { return topology_; }
  const OpArgs& args() const { return args_; }
  size_t segment_bytes() const { return settings_.segment_bytes; }
  // Segment size rounded down to whole elements (at least one element).
  size_t segment_elements() const;

  // Post a send / receive of `bytes` at `data` to / from `peer` with `tag`. The buffers must
  // stay untouched until the request completes.
  Request* Send(int peer, uint32_t tag, const void* data, size_t bytes);
  Request* Recv(int peer, uint32_t tag, void* data, size_t bytes);

  // Drive the transport until the request completes; errors name the op and the peer waited
  // for. Wait(nullptr) is OK.
  absl::Status Wait(Request* request);
  // Until every request posted in this operation completed.
  absl::Status WaitAll();
  // Drives the transport once, waiting up to about a millisecond for something to happen;
  // checks the deadline and abort like Wait. For algorithms juggling several transfers.
  absl::Status ProgressOnce();

  // One-sided puts into `peer`'s memory (transport/window.h): the window of its channel, or
  // nullptr where that channel offers none or windows are off.
  Window* window(int peer) const;
  // Registers [base, base + bytes) with `window` and tells `peer` (a frame with `tag`) where it
  // is, so that it can put into it. The registration lives as long as this operation.
  absl::Status Expose(Window& window, int peer, uint32_t tag, const void* base, size_t bytes);
  // The buffer `peer` exposed to this rank with `tag`.
  absl::StatusOr<RemoteBuffer> Learn(int peer, uint32_t tag);
  // The same without waiting: the receive of the description, to read with Learned once it
  // completed (for algorithms that advance when polled).
  struct PendingLearn {
    Request* request = nullptr;
    std::unique_ptr<char[]> frame;
  };
  PendingLearn PostLearn(int peer, uint32_t tag);
  absl::StatusOr<RemoteBuffer> Learned(const PendingLearn& pending) const;
  // Puts `bytes` from `local` into `peer`'s exposed buffer at `offset`; `local` must stay
  // untouched until the operation's transfers complete (WaitAll).
  absl::Status Put(Window& window, int peer, const RemoteBuffer& remote, size_t offset,
                   const void* local, size_t bytes);
  // Until `window`'s signal word `slot` reaches `value`, driving the transport; checks the
  // deadline and abort like Wait (errors name `peer`, the one expected to raise it).
  absl::Status WaitSignal(Window& window, int slot, uint64_t value, int peer);
  // Until `ready` says true (or fails), driving the transport between looks, polling first as
  // Wait does; a timeout names `peer` and `what` was awaited from it.
  absl::Status WaitUntil(absl::FunctionRef<absl::StatusOr<bool>()> ready, int peer,
                         const char* what);

  // The shared-memory window's mapped view (the lane: every rank shares this host and shared
  // memory serves every pair; transport/shm/lane.h), else nullptr.
  shm::Lane* lane() const { return transport_.MappedWindow(); }
  // Until every rank published `stage` on the lane: polls as Wait does, then sleeps on the
  // doorbell and looks at the connections every few milliseconds (a lost peer, an abort or a
  // mismatching collective ends the wait); checks the deadline and abort like Wait.
  absl::Status LaneWait(uint32_t stage);
  const Fingerprint& fingerprint() const { return fingerprint_; }

  // Scratch memory reused across operations; at least `bytes`, 64-byte aligned.
  char* Scratch(size_t bytes);

  // An operation on CUDA buffers: its device steps, enqueued when it was submitted
  // (device_runtime.h); nullptr for host operations.
  DevicePlan* device_plan() const { return device_plan_; }
  void set_device_plan(DevicePlan* plan) { device_plan_ = plan; }
  // Run between looks by WaitDevice: the engine finishes point-to-point transfers that arrived
  // meanwhile (a device receive's gate may hold the stream this operation waits for).
  void set_device_poll(std::function<void()> poll) { device_poll_ = std::move(poll); }
  // Until `ready` says true (or fails), driving the transport without blocking in it between
  // looks (device work completes without waking a descriptor), napping up to 100 us once the
  // spin budget is spent; checks the deadline and abort like Wait. `what` names it in errors.
  absl::Status WaitDevice(absl::FunctionRef<absl::StatusOr<bool>()> ready, const char* what);
  // Runs `body` with a context for `args` (another view of this operation's buffers, e.g. its
  // staging memory: same fingerprint, deadline budget and settings) and waits for its transfers.
  absl::Status RunNested(const OpArgs& args, absl::FunctionRef<absl::Status(OpContext&)> body);

  ReduceFn reduce() const { return reduce_; }
  void Reduce(void* out, const void* a, const void* b, size_t elements) const {
    reduce_(out, a, b, elements);
  }
  // Divides by the world size when the op is avg.
  void FinishAverage(void* data, size_t elements) const;

 private:
  absl::Status TimeoutError(const Request* request) const;
  absl::Status TimeoutWaitingFor(int peer, const std::string& what) const;
  // A timeout waiting for `peer` (-1: none in particular), with the rank to blame attached.
  absl::Status Blamed(absl::Status timeout, int peer) const;
  // Called once the deadline passed while waiting for `peer`: whether to wait a little longer
  // before blaming it. The first call probes it; a peer that answers is alive and waiting
  // itself (for a rank further on), so this rank waits up to a second more for that peer's own
  // verdict (its abort frame names the rank it waited for); one that does not answer within
  // 300 ms is blamed.
  bool StillWaiting(int peer);
  int WaitMillis();  // how long one wait for progress may sleep now
  int SpinMicros() const;

  Protocol& transport_;
  const Topology& topology_;
  const Fingerprint& fingerprint_;
  const OpArgs& args_;
  const Deadline& deadline();
  absl::Duration timeout_;
  Deadline deadline_ = Deadline::Never();
  bool deadline_set_ = false;
  const EngineSettings& settings_;
  std::vector<char>& scratch_;
  const std::atomic<bool>& aborted_;
  int rank_;
  int size_;
  ReduceFn reduce_ = nullptr;
  // A deque: pointers stay valid as it grows. Made on the first transfer (a deque allocates as
  // it is constructed; lane and local-only operations post none).
  std::optional<std::deque<Request>> requests_;
  std::vector<std::shared_ptr<const Registration>> registrations_;  // exposed in this operation
  std::vector<std::unique_ptr<char[]>> frames_;                      // their descriptions, sent
  // StillWaiting's probe: of which peer, its answers before, until when to wait.
  int probed_peer_ = -1;
  uint64_t answers_before_ = 0;
  int64_t probe_until_ = 0;
  int64_t alive_until_ = 0;
  DevicePlan* device_plan_ = nullptr;
  std::function<void()> device_poll_;
};

}  // namespace cohort
