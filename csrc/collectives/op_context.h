// What an algorithm sees while it runs one collective: its rank and world, asynchronous sends
// and receives to peers (tagged, carrying the collective's fingerprint), waits that drive the
// transport, scratch memory, the reduce kernel and the pipeline segment size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "collectives/op_args.h"
#include "collectives/reduce.h"
#include "collectives/topology.h"
#include "collectives/transport/protocol.h"
#include "common/clock.h"

namespace cohort {

struct EngineSettings {
  size_t segment_bytes = 512 << 10;
  int spin_microseconds = -1;  // -1: the transport's preference
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

  // The lane when every rank shares this host (transport/shm/lane.h), else nullptr.
  shm::Lane* lane() const { return transport_.lane(); }
  // Until every rank published `stage` on the lane: polls as Wait does, then sleeps on the
  // doorbell and looks at the connections every few milliseconds (a lost peer, an abort or a
  // mismatching collective ends the wait); checks the deadline and abort like Wait.
  absl::Status LaneWait(uint32_t stage);
  const Fingerprint& fingerprint() const { return fingerprint_; }

  // Scratch memory reused across operations; at least `bytes`, 64-byte aligned.
  char* Scratch(size_t bytes);

  ReduceFn reduce() const { return reduce_; }
  void Reduce(void* out, const void* a, const void* b, size_t elements) const {
    reduce_(out, a, b, elements);
  }
  // Divides by the world size when the op is avg.
  void FinishAverage(void* data, size_t elements) const;

 private:
  absl::Status TimeoutError(const Request* request) const;
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
};

}  // namespace cohort
