// ProcessGroupCohort: torch's process-group backend "cohort". CPU and CUDA tensors alike run on
// one libcohort Communicator bootstrapped through torch's store: CUDA tensors on the group's
// stream for their device (tensor_call.h), where libcohort runs NCCL inside a host and its own
// rails between hosts, or stages through host memory (docs/backend.md). Registered from Python
// by `import cohort` (python/cohort/__init__.py), created by module.cc's creator.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collectives/communicator.h"
#include "store_bootstrap.h"
#include "tensor_call.h"
#include "torch_compat.h"
#include "work.h"

namespace cohort::torch_ext {

class ProcessGroupCohort final : public BackendBase {
 public:
  // Connects to every rank of the group (blocks until all have joined or `timeout` passes;
  // throws with libcohort's message on failure). `timeout` is init_process_group's and bounds
  // every operation. `group_name` is torch's name for the group (part of the communicator's).
  ProcessGroupCohort(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                     std::chrono::milliseconds timeout, const std::string& local_address,
                     const std::string& group_name);
  ~ProcessGroupCohort() override;

  const std::string getBackendName() const override { return "cohort"; }
  const std::string& communicator_name() const { return name_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(
      std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors,
                                        const c10d::ReduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& output_tensors,
                                           std::vector<at::Tensor>& input_tensors,
                                           const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output_buffer,
                                                 at::Tensor& input_buffer,
                                                 const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(
      std::vector<std::vector<at::Tensor>>& output_tensor_lists,
      std::vector<at::Tensor>& input_tensors, const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& output_tensors,
                                        std::vector<at::Tensor>& input_tensors,
                                        const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& output_tensors,
                                         std::vector<std::vector<at::Tensor>>& input_tensors,
                                         const c10d::ScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& output_tensors,
                                                std::vector<std::vector<at::Tensor>>& input_tensors,
                                                const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output_buffer, at::Tensor& input_buffer,
      const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output_buffer, at::Tensor& input_buffer,
                                               std::vector<int64_t>& output_split_sizes,
                                               std::vector<int64_t>& input_split_sizes,
                                               const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& output_tensors,
                                          std::vector<at::Tensor>& input_tensors,
                                          const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override;
  // Like gloo's: rank 0 waits for every other rank (up to the timeout) and raises naming the
  // ranks that did not arrive (all of them with wait_all_ranks, else the first).
  void monitoredBarrier(const c10d::BarrierOptions& opts, bool wait_all_ranks) override;
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dst_rank,
                                      int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int src_rank,
                                      int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override;

#if COHORT_TORCH_BACKEND_CLASS
  // torch 2.x: coalescing groups (the _coalescing_manager) and the tensor-list variants of
  // all_gather_into_tensor / reduce_scatter_tensor.
  bool supportsCoalescing() const override { return true; }
  void startCoalescing() override;
  c10::intrusive_ptr<c10d::Work> endCoalescing() override;
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::ReduceScatterOptions& opts) override;
  // Recent torch 2.x (the GPU machines' 2.11 included) has these; older 2.x does not.
  void abort() override;
  void shutdown() override;
#endif

  // One Work for several CohortWorks (coalesced groups).
  c10::intrusive_ptr<c10d::Work> Group(const std::vector<c10::intrusive_ptr<c10d::Work>>& works);

  // Fails every pending and later operation of this group with `reason` (thread-safe).
  void Abort(const std::string& reason);

  // Failures in place (shrink.cc). A group of the survivors over the same connections
  // (cohort.shrink): every survivor calls it after an operation failed; they agree through
  // cohortrun's worker store when there is one (COHORT_STORE_ADDR), else this group's store.
  // This group is revoked. `exclude`: ranks to leave out besides the failed ones.
  c10::intrusive_ptr<ProcessGroupCohort> Shrink(const std::vector<int>& exclude);
  // A group over a communicator made elsewhere (Shrink's result).
  ProcessGroupCohort(const c10::intrusive_ptr<c10d::Store>& store,
                     std::unique_ptr<StoreBootstrap> bootstrap, std::unique_ptr<Communicator> comm,
                     std::chrono::milliseconds timeout);
  // Ranks the launcher removed, by their rank in the group before any shrink.
  void RemoveRootRanks(const std::vector<int>& root_ranks, const std::string& reason);
  // The rank each rank of this group had before any shrink.
  std::vector<int> RootRanks() const;
  std::string DumpTrace(const std::string& directory) const;
  std::vector<std::pair<int, std::string>> FailedRanks() const;

 private:
  // Notes `work` as a member of the open coalescing group, if any; returns it.
  c10::intrusive_ptr<c10d::Work> Record(c10::intrusive_ptr<c10d::Work> work);
  // Creates the Work for one operation; `inputs` feed the profiler, `outputs` are its result.
  // On CUDA tensors it runs on the call's stream, which both are marked as used on.
  c10::intrusive_ptr<CohortWork> MakeWork(const TensorCall& call, c10d::OpType type,
                                          const char* title, c10::ArrayRef<at::Tensor> inputs,
                                          c10::ArrayRef<at::Tensor> outputs);
  // Hands the Work its libcohort operation, records it in an open coalescing group, returns it.
  c10::intrusive_ptr<c10d::Work> Launch(const c10::intrusive_ptr<CohortWork>& work,
                                        std::shared_ptr<cohort::Work> part);
  absl::Duration OpTimeout(std::chrono::milliseconds timeout) const;
  Communicator& comm() const;

  // The implementations, for CPU and CUDA tensors alike: `call` says where (tensor_call.h).
  c10::intrusive_ptr<c10d::Work> RunBroadcast(std::vector<at::Tensor>& tensors,
                                              const c10d::BroadcastOptions& opts,
                                              const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunAllreduce(std::vector<at::Tensor>& tensors,
                                              const c10d::AllreduceOptions& opts,
                                              const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunAllreduceCoalesced(std::vector<at::Tensor>& tensors,
                                                       const c10d::AllreduceOptions& opts,
                                                       const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunReduce(std::vector<at::Tensor>& tensors,
                                           const c10d::ReduceOptions& opts, const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunAllgather(std::vector<std::vector<at::Tensor>>& outputs,
                                              std::vector<at::Tensor>& inputs,
                                              const TensorCall& call, absl::Duration timeout);
  c10::intrusive_ptr<c10d::Work> RunAllgatherBase(at::Tensor& output, at::Tensor& input,
                                                  const TensorCall& call, absl::Duration timeout);
  c10::intrusive_ptr<c10d::Work> RunAllgatherCoalesced(
      std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
      const TensorCall& call, absl::Duration timeout);
  c10::intrusive_ptr<c10d::Work> RunGather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::GatherOptions& opts, const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunScatter(std::vector<at::Tensor>& outputs,
                                            std::vector<std::vector<at::Tensor>>& inputs,
                                            const c10d::ScatterOptions& opts,
                                            const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunReduceScatter(std::vector<at::Tensor>& outputs,
                                                  std::vector<std::vector<at::Tensor>>& inputs,
                                                  const c10d::ReduceScatterOptions& opts,
                                                  const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunReduceScatterBase(at::Tensor& output, at::Tensor& input,
                                                      const c10d::ReduceScatterOptions& opts,
                                                      const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunAlltoallBase(at::Tensor& output, at::Tensor& input,
                                                 const std::vector<int64_t>& output_splits,
                                                 const std::vector<int64_t>& input_splits,
                                                 const c10d::AllToAllOptions& opts,
                                                 const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunAlltoall(std::vector<at::Tensor>& outputs,
                                             std::vector<at::Tensor>& inputs,
                                             const c10d::AllToAllOptions& opts,
                                             const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunSend(std::vector<at::Tensor>& tensors, int dst_rank, int tag,
                                         const TensorCall& call);
  c10::intrusive_ptr<c10d::Work> RunRecv(std::vector<at::Tensor>& tensors, int src_rank, int tag,
                                         const TensorCall& call);

  c10::intrusive_ptr<c10d::Store> store_;
  std::unique_ptr<StoreBootstrap> bootstrap_;
  std::unique_ptr<Communicator> comm_;
  std::string name_;
  std::chrono::milliseconds timeout_;
  CallStreams streams_;  // CUDA tensors: the streams calls run on, per device

  std::mutex coalescing_mutex_;
  bool coalescing_ = false;
  std::vector<c10::intrusive_ptr<c10d::Work>> coalesced_;
};

}  // namespace cohort::torch_ext
