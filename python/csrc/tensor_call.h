// Where one call of the backend runs. Its tensors are all on the CPU, or all on one CUDA device;
// CPU and CUDA tensors then take the same code in ProcessGroupCohort and the same libcohort
// calls, which differ only in the memory kind and stream a TensorCall puts in their options.
//
// A CUDA call runs on the group's stream for its device (as ProcessGroupNCCL does): that stream
// first waits for the caller's current stream (the inputs are ready), and is made current for
// the call's own torch work (contiguous copies, staging buffers, copies back), so everything the
// call does is ordered on it; libcohort enqueues the collective's device steps there too. The
// caller's stream is not held: Work.wait() makes it wait for the call's end (CohortWork). Receives
// run on a second stream, since a receive holds its stream until its message is there and a send
// issued after it must not wait behind it.
//
// Only the stream handles need CUDA's headers (COHORT_TORCH_CUDA); the rest is written against
// c10's device-generic streams and events, so it compiles, and is checked, in every build.
#pragma once

#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "collectives/communicator.h"
#include "torch_compat.h"

namespace cohort::torch_ext {

// The group's streams, one pair per CUDA device, made when first needed.
class CallStreams {
 public:
  struct Pair {
    c10::Stream collectives;
    c10::Stream receives;
    std::shared_ptr<device::Stream> cohort_collectives;  // libcohort's view of each
    std::shared_ptr<device::Stream> cohort_receives;
  };
  const Pair& For(c10::Device device);

 private:
  std::mutex mutex_;
  std::map<int, Pair> pairs_;
};

class TensorCall {
 public:
  // A CPU call (the group's own host traffic, e.g. monitored_barrier's tokens).
  TensorCall() = default;
  // Checks that `tensors` (undefined ones skipped) are all on the CPU or all on one CUDA device,
  // naming what was passed otherwise. A CUDA call enters its stream (see above) until destroyed.
  TensorCall(CallStreams& streams, const char* what, c10::ArrayRef<const at::Tensor*> tensors,
             bool receive = false);
  TensorCall(const TensorCall&) = delete;
  TensorCall& operator=(const TensorCall&) = delete;

  bool cuda() const { return stream_.has_value(); }
  // The call's stream (CUDA calls only).
  const c10::Stream& stream() const { return *stream_; }
  // A dense tensor where this call's tensors are (the CPU, or this call's CUDA device).
  void CheckDense(const at::Tensor& tensor, const char* what) const;
  // Marks the caller's tensors as used on this call's stream, so that the caching allocator
  // does not hand their memory out again before the stream is done with them (CUDA calls).
  void Use(c10::ArrayRef<at::Tensor> tensors) const;

  template <typename Options>
  void Apply(Options& options) const {
    if (!cuda()) return;
    options.memory = MemoryKind::kCuda;
    options.stream = cohort_stream_;
  }

 private:
  std::optional<c10::Stream> stream_;
  std::shared_ptr<device::Stream> cohort_stream_;
  std::optional<c10::StreamGuard> guard_;
};

}  // namespace cohort::torch_ext
