// CUDA tensors of a cohort process group go to NCCL, on the caller's current stream, with
// cohort's error handling around it: a unique id exchanged through torch's store after a store
// barrier (a missing rank is a timeout that names it, not a hang in ncclCommInitRank), work
// completion tracked by CUDA events, and a watchdog thread that polls NCCL's asynchronous errors
// and each operation's deadline; on either it aborts the NCCL communicator so kernels stop
// waiting, and the operation fails with a RuntimeError. A peer that dies is also noticed through
// the group's CPU communicator (its TCP connection closes), which aborts NCCL within seconds.
//
// Built only when torch has CUDA and NCCL is found (COHORT_TORCH_NCCL); used by
// ProcessGroupCohort.
#pragma once

#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "torch_compat.h"

namespace cohort::torch_ext {

// One NCCL communicator, shared by the Works that ran on it; `error` is sticky.
struct NcclComm {
  ncclComm_t comm = nullptr;
  int device = -1;
  std::mutex mutex;
  std::string error;  // empty while healthy
  bool aborted = false;
};

class NcclWork : public c10d::Work {
 public:
  NcclWork(int rank, c10d::OpType type, const char* title, std::shared_ptr<NcclComm> comm,
           at::Device device, std::vector<at::Tensor> outputs, std::chrono::milliseconds timeout,
           std::string description);
  ~NcclWork() override;

  bool isCompleted() override;
  bool isSuccess() const override;
  std::exception_ptr exception() const override;
  std::vector<at::Tensor> result() override { return outputs_; }
  // Makes the caller's current stream wait for the operation.
  void synchronize() override;
  // Waits on the host until the operation finished, failed (NCCL error, lost peer) or passed
  // its deadline; throws the error. `timeout` (if given) bounds only this wait.
  bool wait(std::chrono::milliseconds timeout) override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }

  // Called after the kernels were enqueued (records the end event, completes the Future the
  // CUDA way: consumers' streams wait for the event).
  void Enqueued();
  // For the watchdog: the operation's state now. Sets the error when the deadline passed.
  enum class State { kRunning, kDone, kFailed };
  State Poll();
  const std::shared_ptr<NcclComm>& comm() const { return comm_; }
  const std::string& description() const { return description_; }
  void Fail(const std::string& message);

 private:
  std::shared_ptr<NcclComm> comm_;
  at::Device device_;
  std::vector<at::Tensor> outputs_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::milliseconds timeout_;
  std::string description_;
  void* end_event_ = nullptr;  // cudaEvent_t
  mutable std::mutex state_mutex_;
  std::string error_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

class NcclPath {
 public:
  NcclPath(c10::intrusive_ptr<c10d::Store> store, std::string name, int rank, int size,
           std::chrono::milliseconds timeout);
  ~NcclPath();
  NcclPath(const NcclPath&) = delete;
  NcclPath& operator=(const NcclPath&) = delete;

  // Fails every pending and later GPU operation with `reason` and aborts NCCL (thread-safe).
  void Abort(const std::string& reason);

  c10::intrusive_ptr<c10d::Work> Broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts);
  c10::intrusive_ptr<c10d::Work> Allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts);
  c10::intrusive_ptr<c10d::Work> AllreduceCoalesced(std::vector<at::Tensor>& tensors,
                                                    const c10d::AllreduceOptions& opts);
  c10::intrusive_ptr<c10d::Work> Reduce(std::vector<at::Tensor>& tensors,
                                        const c10d::ReduceOptions& opts);
  c10::intrusive_ptr<c10d::Work> Allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts);
  c10::intrusive_ptr<c10d::Work> AllgatherBase(at::Tensor& output, at::Tensor& input,
                                               const c10d::AllgatherOptions& opts);
  c10::intrusive_ptr<c10d::Work> AllgatherCoalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                    std::vector<at::Tensor>& inputs,
                                                    const c10d::AllgatherOptions& opts);
  c10::intrusive_ptr<c10d::Work> AllgatherIntoTensorCoalesced(std::vector<at::Tensor>& outputs,
                                                              std::vector<at::Tensor>& inputs,
                                                              const c10d::AllgatherOptions& opts);
  c10::intrusive_ptr<c10d::Work> Gather(std::vector<std::vector<at::Tensor>>& outputs,
                                        std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& opts);
  c10::intrusive_ptr<c10d::Work> Scatter(std::vector<at::Tensor>& outputs,
                                         std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts);
  c10::intrusive_ptr<c10d::Work> ReduceScatter(std::vector<at::Tensor>& outputs,
                                               std::vector<std::vector<at::Tensor>>& inputs,
                                               const c10d::ReduceScatterOptions& opts);
  c10::intrusive_ptr<c10d::Work> ReduceScatterBase(at::Tensor& output, at::Tensor& input,
                                                   const c10d::ReduceScatterOptions& opts);
  c10::intrusive_ptr<c10d::Work> ReduceScatterTensorCoalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::ReduceScatterOptions& opts);
  c10::intrusive_ptr<c10d::Work> AlltoallBase(at::Tensor& output, at::Tensor& input,
                                              std::vector<int64_t>& output_splits,
                                              std::vector<int64_t>& input_splits,
                                              const c10d::AllToAllOptions& opts);
  c10::intrusive_ptr<c10d::Work> Alltoall(std::vector<at::Tensor>& outputs,
                                          std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& opts);
  c10::intrusive_ptr<c10d::Work> Send(std::vector<at::Tensor>& tensors, int dst_rank, int tag);
  c10::intrusive_ptr<c10d::Work> Recv(std::vector<at::Tensor>& tensors, int src_rank, int tag);
  // One Work for several NcclWorks (a coalescing group).
  c10::intrusive_ptr<c10d::Work> Group(const std::vector<c10::intrusive_ptr<c10d::Work>>& works);

 private:
  std::shared_ptr<NcclComm> CommFor(const at::Device& device);
  // Runs `enqueue(comm, stream)` on the current stream of `device` inside an NCCL group, then
  // `finish()` (copies out of staging buffers, after the group's kernels), and returns the Work
  // tracking it.
  template <typename Enqueue, typename Finish>
  c10::intrusive_ptr<c10d::Work> Run(c10d::OpType type, const char* title, const at::Device& device,
                                     std::vector<at::Tensor> outputs,
                                     std::chrono::milliseconds timeout, const std::string& what,
                                     Enqueue&& enqueue, Finish&& finish);
  std::chrono::milliseconds OpTimeout(std::chrono::milliseconds timeout) const;
  void Watchdog();

  c10::intrusive_ptr<c10d::Store> store_;
  const std::string name_;
  const int rank_;
  const int size_;
  const std::chrono::milliseconds timeout_;

  std::mutex comms_mutex_;
  std::vector<std::shared_ptr<NcclComm>> comms_;  // one per device, created on first use
  int created_ = 0;
  std::string abort_reason_;

  std::mutex pending_mutex_;
  std::condition_variable pending_cv_;
  std::deque<c10::intrusive_ptr<NcclWork>> pending_;
  bool stop_ = false;
  std::thread watchdog_;
};

// Checks an NCCL result; throws a RuntimeError naming the call and NCCL's reason.
void CheckNccl(ncclResult_t result, const char* call, ncclComm_t comm = nullptr);

}  // namespace cohort::torch_ext
