// The Work torch gets back from every ProcessGroupCohort operation, on CPU or CUDA tensors. It
// wraps one or more libcohort Works (an operation that takes several libcohort calls, or a
// coalesced group) and finishes once they all have: it then runs the operation's epilogue
// (copying results out of staging buffers), releases the buffers, and completes torch's Work and
// its Future.
//
// On CUDA tensors (SetDeviceStream) everything is ordered on the call's stream instead: the
// epilogues are enqueued there at once, an end event is recorded after them, wait() and
// synchronize() make the caller's current stream wait for it (the host does not block; a wait
// with a timeout also waits on the host), and the Future completes the CUDA way, as
// ProcessGroupNCCL's (its consumers' streams wait). The Work itself finishes, on the host, once
// libcohort's operations completed on the device; a failure (a lost peer, NCCL's error) is its
// exception, and later calls on the group raise it.
//
// Small blocking calls are the latency path, so a Work costs nothing it does not need: without
// an epilogue or a Future nothing is registered with libcohort, and the Work is finished by
// whoever first sees its operations done (wait(), is_completed(), exception() ...); a Future
// or an epilogue makes it finish on the thread that completes the operation instead.
#pragma once

#include <c10/core/Event.h>
#include <c10/core/Stream.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "collectives/work.h"
#include "torch_compat.h"

namespace cohort::torch_ext {

class CohortWork : public c10d::Work {
 public:
  // Most operations have one output tensor and one libcohort operation: kept inline.
  using Tensors = absl::InlinedVector<at::Tensor, 1>;
  using Parts = absl::InlinedVector<std::shared_ptr<cohort::Work>, 1>;

  // `outputs` are what result() and the Future's value hold (torch's convention: the tensors
  // the operation wrote). `profiling_inputs` feed torch's profiler when it is on.
  CohortWork(int rank, c10d::OpType type, const char* profiling_title,
             c10::ArrayRef<at::Tensor> profiling_inputs, c10::ArrayRef<at::Tensor> outputs);
  // Keeps the buffers of an operation still running alive until it is done (async_op=True
  // and the Work dropped without wait()).
  ~CohortWork() override;

  // Before Attach: what must stay alive until the operation is done, and what to run after
  // it succeeded (on the thread that completes it).
  void KeepAlive(at::Tensor tensor) { keep_alive_.push_back(std::move(tensor)); }
  // Epilogues run in the order added, after the operation succeeded, on the thread that
  // completes it; an exception thrown by one becomes the Work's error.
  void AddEpilogue(std::function<void()> epilogue) { epilogues_.push_back(std::move(epilogue)); }
  // A coalesced group's Work: it finishes after `member` has (whose epilogues copy results out)
  // and takes on its error.
  // A member on CUDA tensors makes this one a CUDA Work whose end includes the member's.
  void AddMember(c10::intrusive_ptr<CohortWork> member);
  void SetSourceRank(int rank) { fixed_source_rank_ = rank; }
  // A call on CUDA tensors that runs on `stream` (see above); before Attach, with that stream
  // current.
  void SetDeviceStream(c10::Stream stream) { device_stream_ = stream; }
  bool on_device() const { return device_stream_.has_value(); }

  // Starts tracking `parts` (called once, right after they were submitted). Their errors,
  // even those libcohort reports at once, surface from wait() and the Future, as with gloo;
  // argument errors are found (and thrown) before anything is submitted.
  void Attach(Parts parts);

  bool wait(std::chrono::milliseconds timeout) override;
  bool isCompleted() override;
  bool isSuccess() const override;
  std::exception_ptr exception() const override;
  int sourceRank() const override;
  std::vector<at::Tensor> result() override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;
  // CUDA: the caller's current stream waits for the call's end.
  void synchronize() override;

  // The libcohort operations behind this Work (for grouping coalesced operations).
  const Parts& parts() const { return parts_; }

 private:
  // Has every part call OnPartDone when it completes (once; holds a reference to this Work
  // until then). Never called with state_mutex_ held: a part already done calls back at once.
  void FinishOnCompletion();
  void OnPartDone();
  // Finishes the Work if every part is done and nobody has yet; returns whether it is finished
  // or being finished (by this thread or another).
  bool FinishIfDone();
  // Runs once, by whoever claimed finishing_: epilogues, torch's finish(), the Future.
  void Finish();
  void MarkFuture(c10::ivalue::Future& future) const;
  // CUDA: every current stream of the devices involved waits for the end events.
  void BlockCurrentStreams() const;

  const c10d::OpType type_;
  Tensors outputs_;
  Tensors keep_alive_;
  std::vector<std::function<void()>> epilogues_;
  int fixed_source_rank_ = -1;
  Parts parts_;
  std::vector<c10::intrusive_ptr<CohortWork>> members_;
  std::optional<c10::Stream> device_stream_;
  std::vector<std::shared_ptr<c10::Event>> end_events_;  // this call's and its members' ends
  std::atomic<bool> callbacks_registered_{false};
  std::atomic<bool> finishing_{false};  // claimed by the one thread that runs Finish()

  std::mutex state_mutex_;  // guards the fields below (the base class's mutex_ is torch's)
  bool done_ = false;
  std::exception_ptr error_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

}  // namespace cohort::torch_ext
