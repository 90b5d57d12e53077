// The Work torch gets back from every ProcessGroupCohort operation on CPU tensors. It wraps
// one or more libcohort Works (an operation that takes several libcohort calls, or a coalesced
// group) and finishes once they all have: it then runs the operation's epilogue (copying results
// out of staging buffers), releases the buffers, and completes torch's Work and its Future.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "collectives/work.h"
#include "torch_compat.h"

namespace cohort::torch_ext {

class CohortWork : public c10d::Work {
 public:
  // `outputs` are what result() and the Future's value hold (torch's convention: the tensors
  // the operation wrote). `profiling_inputs` feed torch's profiler when it is on.
  CohortWork(int rank, c10d::OpType type, const char* profiling_title,
             const std::vector<at::Tensor>& profiling_inputs, std::vector<at::Tensor> outputs);
  ~CohortWork() override;

  // Before Attach: what must stay alive until the operation is done, and what to run after
  // it succeeded (on the thread that completes it).
  void KeepAlive(at::Tensor tensor) { keep_alive_.push_back(std::move(tensor)); }
  // Epilogues run in the order added, after the operation succeeded, on the thread that
  // completes it; an exception thrown by one becomes the Work's error.
  void AddEpilogue(std::function<void()> epilogue) { epilogues_.push_back(std::move(epilogue)); }
  void SetSourceRank(int rank) { fixed_source_rank_ = rank; }
  // An untimed wait() gives up after `limit` (for operations without a deadline of their own:
  // point-to-point transfers); zero or negative: no limit.
  void SetWaitLimit(std::chrono::milliseconds limit) { wait_limit_ = limit; }

  // Starts tracking `parts` (called once, right after they were submitted). Their errors,
  // even those libcohort reports at once, surface from wait() and the Future, as with gloo;
  // argument errors are found (and thrown) before anything is submitted.
  void Attach(std::vector<std::shared_ptr<cohort::Work>> parts);

  bool wait(std::chrono::milliseconds timeout) override;
  int sourceRank() const override;
  std::vector<at::Tensor> result() override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;

  // The libcohort operations behind this Work (for grouping coalesced operations).
  const std::vector<std::shared_ptr<cohort::Work>>& parts() const { return parts_; }

 private:
  void OnPartDone(const absl::Status& status);
  void MarkFuture(c10::ivalue::Future& future) const;

  const c10d::OpType type_;
  std::vector<at::Tensor> outputs_;
  std::vector<at::Tensor> keep_alive_;
  std::vector<std::function<void()>> epilogues_;
  int fixed_source_rank_ = -1;
  std::chrono::milliseconds wait_limit_{0};
  std::vector<std::shared_ptr<cohort::Work>> parts_;
  std::atomic<int> remaining_{0};

  std::mutex state_mutex_;  // guards the fields below (the base class's mutex_ is torch's)
  absl::Status first_error_;
  bool done_ = false;
  std::exception_ptr error_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

// The exception a failed libcohort Status becomes in Python: a RuntimeError with its message.
std::exception_ptr ToException(const absl::Status& status);

}  // namespace cohort::torch_ext
