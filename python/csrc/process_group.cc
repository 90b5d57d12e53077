#include "process_group.h"

#include <Python.h>

#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "collectives/transport/channel.h"
#include "common/config.h"
#include "tensor_args.h"

#if COHORT_TORCH_NCCL
#include "nccl_path.h"
#endif

namespace cohort::torch_ext {
namespace {

#if COHORT_TORCH_BACKEND_CLASS
constexpr c10d::OpType kCoalescedOpType = c10d::OpType::COALESCED;
#else
constexpr c10d::OpType kCoalescedOpType = c10d::OpType::UNKNOWN;
#endif

enum class Placement { kCpu, kCuda };

// Where the tensors of one call live. All must be on the CPU, or all on CUDA devices; anything
// else is rejected with a message that names what was passed.
Placement PlacementOf(const char* what, c10::ArrayRef<const at::Tensor*> tensors) {
  const at::Tensor* first = nullptr;
  for (const at::Tensor* tensor : tensors) {
    if (!tensor->defined()) continue;
    const at::Device device = tensor->device();
    TORCH_CHECK(device.is_cpu() || device.is_cuda(), "cohort: ", what,
                ": tensors must be on the CPU or a CUDA device; got ", DescribeTensor(*tensor));
    if (first == nullptr) {
      first = tensor;
    } else {
      TORCH_CHECK(device.type() == first->device().type(), "cohort: ", what,
                  ": all tensors of one call must be on the same kind of device; got ",
                  DescribeTensor(*first), " and ", DescribeTensor(*tensor));
    }
  }
  return first != nullptr && first->device().is_cuda() ? Placement::kCuda : Placement::kCpu;
}

// The tensors of a call, for PlacementOf (inline: no allocation on the latency path).
using TensorPointers = absl::InlinedVector<const at::Tensor*, 4>;

TensorPointers All(const std::vector<at::Tensor>& tensors) {
  TensorPointers result;
  for (const at::Tensor& tensor : tensors) result.push_back(&tensor);
  return result;
}

TensorPointers All(const std::vector<std::vector<at::Tensor>>& lists,
                   const std::vector<at::Tensor>& more = {}) {
  TensorPointers result = All(more);
  for (const auto& list : lists) {
    for (const at::Tensor& tensor : list) result.push_back(&tensor);
  }
  return result;
}

// Host copies of GPU tensors, for CUDA tensors when the extension has no NCCL: the operation
// runs on the copies and the results are copied back when it completes.
class HostStaging {
 public:
  HostStaging() = default;
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  at::Tensor Input(const at::Tensor& tensor) const { return tensor.to(at::kCPU); }
  std::vector<at::Tensor> Inputs(const std::vector<at::Tensor>& tensors) const {
    std::vector<at::Tensor> result;
    for (const at::Tensor& tensor : tensors) result.push_back(Input(tensor));
    return result;
  }
  // A host tensor whose contents go back to `tensor` at the end; `read`: it starts as a copy.
  at::Tensor Output(const at::Tensor& tensor, bool read) {
    at::Tensor host = read ? tensor.to(at::kCPU)
                           : at::empty(tensor.sizes(), tensor.options().device(at::kCPU));
    copies_.emplace_back(tensor, host);
    return host;
  }
  std::vector<at::Tensor> Outputs(const std::vector<at::Tensor>& tensors, bool read) {
    std::vector<at::Tensor> result;
    for (const at::Tensor& tensor : tensors) result.push_back(Output(tensor, read));
    return result;
  }
  std::function<void()> CopyBack() {
    if (copies_.empty()) return nullptr;
    return [copies = std::move(copies_)]() mutable {
      for (auto& [device, host] : copies) device.copy_(host);
    };
  }

 private:
  at::NoGradGuard no_grad_;  // copies of tensors that require grad are plain data
  std::vector<std::pair<at::Tensor, at::Tensor>> copies_;
};

bool AllEqual(const std::vector<size_t>& values) {
  for (size_t value : values) {
    if (value != values.front()) return false;
  }
  return true;
}

// A contiguous tensor to write results into: `tensor` itself, or a new one copied back into
// `tensor` by an epilogue added to `work`.
at::Tensor OutputBuffer(const at::Tensor& tensor, CohortWork& work, bool read) {
  if (tensor.is_contiguous()) return tensor;
  at::Tensor buffer = read ? tensor.contiguous() : at::empty(tensor.sizes(), tensor.options());
  work.AddEpilogue([tensor, buffer]() mutable { tensor.copy_(buffer); });
  return buffer;
}

// Element counts of split sizes along dimension 0 (alltoall_base); equal splits when empty.
std::vector<size_t> SplitCounts(const std::vector<int64_t>& splits, const at::Tensor& tensor,
                                int size, size_t units_per_element, const char* side) {
  const size_t numel = static_cast<size_t>(tensor.numel());
  std::vector<size_t> counts(size);
  if (splits.empty()) {
    TORCH_CHECK(numel % size == 0 && (tensor.dim() == 0 || tensor.size(0) % size == 0),
                "cohort: alltoall_base: the ", side, " tensor (", DescribeTensor(tensor),
                ") cannot be split evenly among ", size, " ranks; pass split sizes");
    for (auto& count : counts) count = numel / size * units_per_element;
    return counts;
  }
  TORCH_CHECK(static_cast<int>(splits.size()) == size, "cohort: alltoall_base: ", side,
              " split sizes have ", splits.size(), " entries; the group has ", size, " ranks");
  TORCH_CHECK(tensor.dim() >= 1, "cohort: alltoall_base: split sizes need a tensor with at "
              "least one dimension; got ", DescribeTensor(tensor));
  int64_t rows = 0;
  for (int64_t split : splits) {
    TORCH_CHECK(split >= 0, "cohort: alltoall_base: negative ", side, " split size ", split);
    rows += split;
  }
  TORCH_CHECK(rows == tensor.size(0), "cohort: alltoall_base: ", side, " split sizes add up to ",
              rows, " rows, but the ", side, " tensor has ", tensor.size(0), " (",
              DescribeTensor(tensor), ")");
  const size_t row_elements = tensor.size(0) == 0 ? 0 : numel / tensor.size(0);
  for (int i = 0; i < size; ++i) counts[i] = splits[i] * row_elements * units_per_element;
  return counts;
}

}  // namespace

ProcessGroupCohort::ProcessGroupCohort(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                       int size, std::chrono::milliseconds timeout,
                                       const std::string& local_address,
                                       const std::string& group_name)
    : BackendBase(rank, size), store_(store), timeout_(timeout) {
  bootstrap_ = std::make_unique<StoreBootstrap>(store, local_address);
  // Several groups (new_group, or a re-initialised default group) may share one store: every
  // rank of a group creates its communicators in the same order, so a shared counter names
  // them alike on every rank and differently from every other communicator on the store.
  absl::StatusOr<int64_t> generation = bootstrap_->Add("cohort/communicators", 1);
  TORCH_CHECK(generation.ok(), "cohort: creating the process group (rank ", rank, " of ", size,
              ") failed: ", generation.status().message());
  std::string group = group_name.empty() ? "cohort" : group_name;
  std::replace(group.begin(), group.end(), ' ', '_');
  name_ = absl::StrCat("cohort/", group, "/", (*generation - 1) / size);
  CommOptions options;
  options.name = name_;
  if (timeout.count() > 0) options.timeout = absl::FromChrono(timeout);
  absl::StatusOr<std::unique_ptr<Communicator>> comm =
      Communicator::Create(*bootstrap_, rank, size, options);
  TORCH_CHECK(comm.ok(), "cohort: ", comm.status().message());
  comm_ = std::move(*comm);
  // Communicator::Create validated the value; "nccl" without NCCL in this build is an error.
  absl::StatusOr<std::string> cuda_path = config::GetString("COHORT_TORCH_CUDA");
  const std::string mode = cuda_path.ok() ? *cuda_path : "auto";
  TORCH_CHECK(mode != "nccl" || COHORT_TORCH_NCCL,
              "cohort: COHORT_TORCH_CUDA=nccl, but this build of the extension has no NCCL "
              "(torch without CUDA, or NCCL not found when it was built); use auto or staged");
  use_nccl_ = COHORT_TORCH_NCCL && mode != "staged";
  init();
}

ProcessGroupCohort::~ProcessGroupCohort() {
  // Closing joins the progress thread, which may be running a Future callback that needs the
  // GIL (DDP communication hooks): never hold the GIL while waiting for it.
  PyThreadState* saved = nullptr;
  if (Py_IsInitialized() && PyGILState_Check()) saved = PyEval_SaveThread();
#if COHORT_TORCH_NCCL
  {
    // First, so that the peer watch failing as the communicator closes finds no NCCL to abort.
    std::lock_guard<std::mutex> lock(nccl_mutex_);
    nccl_.reset();
  }
#endif
  comm_.reset();
  if (saved != nullptr) PyEval_RestoreThread(saved);
}

Communicator& ProcessGroupCohort::comm() const {
  TORCH_CHECK(comm_ != nullptr, "cohort: the process group has been shut down");
  return *comm_;
}

void ProcessGroupCohort::Abort(const std::string& reason) {
  if (comm_ != nullptr) comm_->Abort(absl::CancelledError(reason));
#if COHORT_TORCH_NCCL
  std::lock_guard<std::mutex> lock(nccl_mutex_);
  if (nccl_ != nullptr) nccl_->Abort(reason);
#endif
}

absl::Duration ProcessGroupCohort::OpTimeout(std::chrono::milliseconds timeout) const {
  // torch leaves per-call timeouts unset (-1): the group's timeout applies.
  return timeout.count() > 0 ? absl::FromChrono(timeout) : absl::ZeroDuration();
}

c10::intrusive_ptr<CohortWork> ProcessGroupCohort::MakeWork(c10d::OpType type, const char* title,
                                                            c10::ArrayRef<at::Tensor> inputs,
                                                            c10::ArrayRef<at::Tensor> outputs) {
  auto work = c10::make_intrusive<CohortWork>(rank_, type, title, inputs, outputs);
  if (type == c10d::OpType::SEND || type == c10d::OpType::RECV ||
      type == c10d::OpType::RECVANYSOURCE) {
    // libcohort's point-to-point transfers have no deadline of their own.
    work->SetWaitLimit(timeout_);
  }
  return work;
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::Group(
    const std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  std::vector<at::Tensor> outputs;
  CohortWork::Parts parts;
  for (const auto& work : works) {
    auto* member = dynamic_cast<CohortWork*>(work.get());
    TORCH_CHECK(member != nullptr, "cohort: cannot coalesce CPU and GPU operations in one group");
    for (const at::Tensor& tensor : member->result()) outputs.push_back(tensor);
    for (const auto& part : member->parts()) parts.push_back(part);
  }
  auto group = MakeWork(kCoalescedOpType, "cohort:coalesced", {}, outputs);
  for (const auto& work : works) {
    group->AddMember(
        c10::intrusive_ptr<CohortWork>::reclaim_copy(static_cast<CohortWork*>(work.get())));
  }
  group->Attach(std::move(parts));
  return group;
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::Launch(
    const c10::intrusive_ptr<CohortWork>& work, std::shared_ptr<cohort::Work> part) {
  CohortWork::Parts parts;
  parts.push_back(std::move(part));
  work->Attach(std::move(parts));
  return Record(work);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::Record(c10::intrusive_ptr<c10d::Work> work) {
  std::lock_guard<std::mutex> lock(coalescing_mutex_);
  if (coalescing_) coalesced_.push_back(work);
  return work;
}

#if COHORT_TORCH_NCCL
NcclPath& ProcessGroupCohort::Nccl() {
  std::lock_guard<std::mutex> lock(nccl_mutex_);
  if (nccl_ == nullptr) {
    nccl_ = std::make_shared<NcclPath>(store_, name_, rank_, size_, timeout_);
    WatchPeersForNccl();
  }
  return *nccl_;
}

void ProcessGroupCohort::WatchPeersForNccl() {
  // A tag no torch call uses (torch tags are small non-negative ints).
  constexpr uint32_t kPeerWatchTag = 0xC0BE7A11u;
  RecvOptions options;
  options.data = &peer_watch_byte_;
  options.count = 1;
  options.dtype = DataType::kUInt8;
  options.peer = kAnySource;
  options.tag = kPeerWatchTag;
  peer_watch_ = comm().Recv(options);
  std::weak_ptr<NcclPath> nccl = nccl_;
  peer_watch_->OnCompletion([nccl](const absl::Status& status) {
    // Cancelled: this group is closing. FailedPrecondition: a peer closed the group cleanly
    // (its last operation was done); neither is a failure NCCL needs to hear about.
    if (status.ok() || status.code() == absl::StatusCode::kCancelled ||
        status.code() == absl::StatusCode::kFailedPrecondition) {
      return;
    }
    if (auto alive = nccl.lock()) alive->Abort(std::string(status.message()));
  });
}
#define COHORT_GPU(nccl_call, staged_call) \
  if (use_nccl_) return Record(nccl_call);    \
  staged_call
#else
#define COHORT_GPU(nccl_call, staged_call) staged_call
#endif

// ---------------------------------------------------------------------------------------------
// Routing: CPU tensors run here; CUDA tensors go to NCCL, or are staged through host memory.

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::broadcast(std::vector<at::Tensor>& tensors,
                                                             const c10d::BroadcastOptions& opts) {
  CheckSingle(tensors, "broadcast");
  if (PlacementOf("broadcast", All(tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Broadcast(tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> host = staging.Outputs(tensors, /*read=*/true);
      return BroadcastCpu(host, opts, staging.CopyBack());
    });
  }
  return BroadcastCpu(tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allreduce(std::vector<at::Tensor>& tensors,
                                                             const c10d::AllreduceOptions& opts) {
  CheckSingle(tensors, "allreduce");
  if (PlacementOf("allreduce", All(tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Allreduce(tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> host = staging.Outputs(tensors, /*read=*/true);
      return AllreduceCpu(host, opts, staging.CopyBack());
    });
  }
  return AllreduceCpu(tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allreduce_coalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  TORCH_CHECK(!tensors.empty(), "cohort: allreduce_coalesced: got no tensors");
  if (PlacementOf("allreduce_coalesced", All(tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().AllreduceCoalesced(tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> host = staging.Outputs(tensors, /*read=*/true);
      return AllreduceCoalescedCpu(host, opts, staging.CopyBack());
    });
  }
  return AllreduceCoalescedCpu(tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::reduce(std::vector<at::Tensor>& tensors,
                                                          const c10d::ReduceOptions& opts) {
  CheckSingle(tensors, "reduce");
  if (PlacementOf("reduce", All(tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Reduce(tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> host = staging.Outputs(tensors, /*read=*/true);
      return ReduceCpu(host, opts, staging.CopyBack());
    });
  }
  return ReduceCpu(tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allgather(
    std::vector<std::vector<at::Tensor>>& output_tensors, std::vector<at::Tensor>& input_tensors,
    const c10d::AllgatherOptions& opts) {
  if (PlacementOf("allgather", All(output_tensors, input_tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Allgather(output_tensors, input_tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> inputs = staging.Inputs(input_tensors);
      std::vector<std::vector<at::Tensor>> outputs;
      for (auto& list : output_tensors) outputs.push_back(staging.Outputs(list, false));
      return AllgatherCpu(outputs, inputs, staging.CopyBack(), OpTimeout(opts.timeout));
    });
  }
  return AllgatherCpu(output_tensors, input_tensors, nullptr, OpTimeout(opts.timeout));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::_allgather_base(
    at::Tensor& output_buffer, at::Tensor& input_buffer, const c10d::AllgatherOptions& opts) {
  if (PlacementOf("allgather_into_tensor", {&output_buffer, &input_buffer}) == Placement::kCuda) {
    COHORT_GPU(Nccl().AllgatherBase(output_buffer, input_buffer, opts), {
      HostStaging staging;
      at::Tensor input = staging.Input(input_buffer);
      at::Tensor output = staging.Output(output_buffer, false);
      return AllgatherBaseCpu(output, input, staging.CopyBack(), OpTimeout(opts.timeout));
    });
  }
  return AllgatherBaseCpu(output_buffer, input_buffer, nullptr, OpTimeout(opts.timeout));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& output_tensor_lists,
    std::vector<at::Tensor>& input_tensors, const c10d::AllgatherOptions& opts) {
  if (PlacementOf("allgather_coalesced", All(output_tensor_lists, input_tensors)) ==
      Placement::kCuda) {
    COHORT_GPU(Nccl().AllgatherCoalesced(output_tensor_lists, input_tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> inputs = staging.Inputs(input_tensors);
      std::vector<std::vector<at::Tensor>> outputs;
      for (auto& list : output_tensor_lists) outputs.push_back(staging.Outputs(list, false));
      return AllgatherCoalescedCpu(outputs, inputs, staging.CopyBack(), OpTimeout(opts.timeout));
    });
  }
  return AllgatherCoalescedCpu(output_tensor_lists, input_tensors, nullptr,
                               OpTimeout(opts.timeout));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::gather(
    std::vector<std::vector<at::Tensor>>& output_tensors, std::vector<at::Tensor>& input_tensors,
    const c10d::GatherOptions& opts) {
  if (PlacementOf("gather", All(output_tensors, input_tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Gather(output_tensors, input_tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> inputs = staging.Inputs(input_tensors);
      std::vector<std::vector<at::Tensor>> outputs;
      for (auto& list : output_tensors) outputs.push_back(staging.Outputs(list, false));
      return GatherCpu(outputs, inputs, opts, staging.CopyBack());
    });
  }
  return GatherCpu(output_tensors, input_tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::scatter(
    std::vector<at::Tensor>& output_tensors, std::vector<std::vector<at::Tensor>>& input_tensors,
    const c10d::ScatterOptions& opts) {
  if (PlacementOf("scatter", All(input_tensors, output_tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Scatter(output_tensors, input_tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> outputs = staging.Outputs(output_tensors, false);
      std::vector<std::vector<at::Tensor>> inputs;
      for (auto& list : input_tensors) inputs.push_back(staging.Inputs(list));
      return ScatterCpu(outputs, inputs, opts, staging.CopyBack());
    });
  }
  return ScatterCpu(output_tensors, input_tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::reduce_scatter(
    std::vector<at::Tensor>& output_tensors, std::vector<std::vector<at::Tensor>>& input_tensors,
    const c10d::ReduceScatterOptions& opts) {
  if (PlacementOf("reduce_scatter", All(input_tensors, output_tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().ReduceScatter(output_tensors, input_tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> outputs = staging.Outputs(output_tensors, false);
      std::vector<std::vector<at::Tensor>> inputs;
      for (auto& list : input_tensors) inputs.push_back(staging.Inputs(list));
      return ReduceScatterCpu(outputs, inputs, opts, staging.CopyBack());
    });
  }
  return ReduceScatterCpu(output_tensors, input_tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::_reduce_scatter_base(
    at::Tensor& output_buffer, at::Tensor& input_buffer, const c10d::ReduceScatterOptions& opts) {
  if (PlacementOf("reduce_scatter_tensor", {&output_buffer, &input_buffer}) == Placement::kCuda) {
    COHORT_GPU(Nccl().ReduceScatterBase(output_buffer, input_buffer, opts), {
      HostStaging staging;
      at::Tensor input = staging.Input(input_buffer);
      at::Tensor output = staging.Output(output_buffer, false);
      return ReduceScatterBaseCpu(output, input, opts, staging.CopyBack());
    });
  }
  return ReduceScatterBaseCpu(output_buffer, input_buffer, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::alltoall_base(
    at::Tensor& output_buffer, at::Tensor& input_buffer, std::vector<int64_t>& output_split_sizes,
    std::vector<int64_t>& input_split_sizes, const c10d::AllToAllOptions& opts) {
  if (PlacementOf("alltoall_base", {&output_buffer, &input_buffer}) == Placement::kCuda) {
    COHORT_GPU(Nccl().AlltoallBase(output_buffer, input_buffer, output_split_sizes,
                                   input_split_sizes, opts),
               {
                 HostStaging staging;
                 at::Tensor input = staging.Input(input_buffer);
                 at::Tensor output = staging.Output(output_buffer, false);
                 return AlltoallBaseCpu(output, input, output_split_sizes, input_split_sizes,
                                        opts, staging.CopyBack());
               });
  }
  return AlltoallBaseCpu(output_buffer, input_buffer, output_split_sizes, input_split_sizes, opts,
                         nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::alltoall(std::vector<at::Tensor>& output_tensors,
                                                            std::vector<at::Tensor>& input_tensors,
                                                            const c10d::AllToAllOptions& opts) {
  TensorPointers tensors = All(output_tensors);
  for (const at::Tensor& tensor : input_tensors) tensors.push_back(&tensor);
  if (PlacementOf("alltoall", tensors) == Placement::kCuda) {
    COHORT_GPU(Nccl().Alltoall(output_tensors, input_tensors, opts), {
      HostStaging staging;
      std::vector<at::Tensor> inputs = staging.Inputs(input_tensors);
      std::vector<at::Tensor> outputs = staging.Outputs(output_tensors, false);
      return AlltoallCpu(outputs, inputs, opts, staging.CopyBack());
    });
  }
  return AlltoallCpu(output_tensors, input_tensors, opts, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::barrier(const c10d::BarrierOptions& opts) {
  // A barrier orders host threads; it runs on the CPU communicator for CPU and CUDA users alike.
  BarrierOptions options;
  options.timeout = OpTimeout(opts.timeout);
  auto work = MakeWork(c10d::OpType::BARRIER, "cohort:barrier", {}, {});
  return Launch(work, comm().Barrier(options));
}

void ProcessGroupCohort::monitoredBarrier(const c10d::BarrierOptions& opts, bool wait_all_ranks) {
  // Point-to-point messages on a tag of its own: torch's tags are small non-negative ints.
  constexpr int kArriveTag = 0x7EAD0001;
  constexpr int kReleaseTag = 0x7EAD0002;
  const std::chrono::milliseconds timeout = opts.timeout.count() > 0 ? opts.timeout : timeout_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto remaining = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now()));
  };
  std::vector<at::Tensor> token = {at::zeros({1}, at::kByte)};
  if (rank_ != 0) {
    SendCpu(token, 0, kArriveTag);
    auto release = RecvCpu(token, 0, kReleaseTag, nullptr);
    try {
      release->wait(remaining());
    } catch (const std::exception& error) {
      TORCH_CHECK(false, "cohort: monitored_barrier: rank ", rank_, " (", comm().host(rank_),
                  ") was not released by rank 0 within ", timeout.count(), " ms: ",
                  std::string(error.what()).substr(0, std::string(error.what()).find('\n')));
    }
    return;
  }
  std::vector<c10::intrusive_ptr<c10d::Work>> arrivals;
  std::vector<std::vector<at::Tensor>> buffers(size_);
  for (int peer = 1; peer < size_; ++peer) {
    buffers[peer] = {at::zeros({1}, at::kByte)};
    arrivals.push_back(RecvCpu(buffers[peer], peer, kArriveTag, nullptr));
  }
  std::string missing;
  for (int peer = 1; peer < size_; ++peer) {
    try {
      arrivals[peer - 1]->wait(remaining());
    } catch (const std::exception&) {
      absl::StrAppend(&missing, missing.empty() ? "" : ", ", peer, " (", comm().host(peer), ")");
      if (!wait_all_ranks) break;
    }
  }
  TORCH_CHECK(missing.empty(), "cohort: monitored_barrier: rank(s) ", missing,
              " did not reach the barrier within ", timeout.count(), " ms");
  for (int peer = 1; peer < size_; ++peer) SendCpu(token, peer, kReleaseTag);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::send(std::vector<at::Tensor>& tensors,
                                                        int dst_rank, int tag) {
  CheckSingle(tensors, "send");
  if (PlacementOf("send", All(tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Send(tensors, dst_rank, tag), {
      HostStaging staging;
      std::vector<at::Tensor> host = staging.Inputs(tensors);
      return SendCpu(host, dst_rank, tag);
    });
  }
  return SendCpu(tensors, dst_rank, tag);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::recv(std::vector<at::Tensor>& tensors,
                                                        int src_rank, int tag) {
  CheckSingle(tensors, "recv");
  if (PlacementOf("recv", All(tensors)) == Placement::kCuda) {
    COHORT_GPU(Nccl().Recv(tensors, src_rank, tag), {
      HostStaging staging;
      std::vector<at::Tensor> host = staging.Outputs(tensors, false);
      return RecvCpu(host, src_rank, tag, staging.CopyBack());
    });
  }
  return RecvCpu(tensors, src_rank, tag, nullptr);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::recvAnysource(std::vector<at::Tensor>& tensors,
                                                                 int tag) {
  CheckSingle(tensors, "recv");
  if (PlacementOf("recv", All(tensors)) == Placement::kCuda) {
    // NCCL has no receive from any source: stage through host memory in every build.
    HostStaging staging;
    std::vector<at::Tensor> host = staging.Outputs(tensors, false);
    return RecvCpu(host, kAnySource, tag, staging.CopyBack());
  }
  return RecvCpu(tensors, kAnySource, tag, nullptr);
}

#undef COHORT_GPU

// ---------------------------------------------------------------------------------------------
// CPU implementations.

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::BroadcastCpu(std::vector<at::Tensor>& tensors,
                                                                const c10d::BroadcastOptions& opts,
                                                                After after) {
  at::Tensor& tensor = tensors[0];
  CheckCpuDense(tensor, "broadcast");
  CheckRoot(opts.rootRank, size_, "broadcast");
  TORCH_CHECK(opts.rootTensor == 0, "cohort: broadcast takes one tensor per process; "
              "root tensor ", opts.rootTensor, " does not exist");
  auto work = MakeWork(c10d::OpType::BROADCAST, "cohort:broadcast", tensors, tensors);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/true);
  if (after) work->AddEpilogue(std::move(after));
  Elements elements = MovedElements(buffer);
  BroadcastOptions options;
  options.input = buffer.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().Broadcast(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::AllreduceCpu(std::vector<at::Tensor>& tensors,
                                                                const c10d::AllreduceOptions& opts,
                                                                After after) {
  at::Tensor& tensor = tensors[0];
  CheckCpuDense(tensor, "allreduce");
  Elements elements = ReducedElements(tensor, opts.reduceOp, "allreduce");
  auto work = MakeWork(c10d::OpType::ALLREDUCE, "cohort:all_reduce", tensors, tensors);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/true);
  if (after) work->AddEpilogue(std::move(after));
  AllreduceOptions options;
  options.input = buffer.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, tensor.scalar_type(), "allreduce");
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().Allreduce(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::AllreduceCoalescedCpu(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceOptions& opts, After after) {
  size_t count = 0;
  Elements elements;
  for (const at::Tensor& tensor : tensors) {
    CheckCpuDense(tensor, "allreduce_coalesced");
    CheckSameDtype(tensors[0], tensor, "allreduce_coalesced");
    elements = ReducedElements(tensor, opts.reduceOp, "allreduce_coalesced");
    count += elements.count;
  }
  auto work =
      MakeWork(c10d::OpType::ALLREDUCE_COALESCED, "cohort:all_reduce_coalesced", tensors, tensors);
  auto packed = std::make_shared<PackedTensors>(tensors, /*fill=*/true);
  work->AddEpilogue([packed] { packed->Unpack(); });
  if (after) work->AddEpilogue(std::move(after));
  AllreduceOptions options;
  options.input = packed->data();
  options.output = packed->data();
  options.count = count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, tensors[0].scalar_type(), "allreduce_coalesced");
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().Allreduce(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::ReduceCpu(std::vector<at::Tensor>& tensors,
                                                             const c10d::ReduceOptions& opts,
                                                             After after) {
  at::Tensor& tensor = tensors[0];
  CheckCpuDense(tensor, "reduce");
  CheckRoot(opts.rootRank, size_, "reduce");
  TORCH_CHECK(opts.rootTensor == 0, "cohort: reduce takes one tensor per process; root tensor ",
              opts.rootTensor, " does not exist");
  Elements elements = ReducedElements(tensor, opts.reduceOp, "reduce");
  auto work = MakeWork(c10d::OpType::REDUCE, "cohort:reduce", tensors, tensors);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/true);
  if (after) work->AddEpilogue(std::move(after));
  ReduceOptions options;
  options.input = buffer.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, tensor.scalar_type(), "reduce");
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().Reduce(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::AllgatherCpu(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs, After after,
    absl::Duration timeout) {
  CheckSingle(inputs, "allgather");
  TORCH_CHECK(outputs.size() == 1, "cohort: allgather takes one list of output tensors (got ",
              outputs.size(), ")");
  const at::Tensor& input = inputs[0];
  std::vector<at::Tensor>& list = outputs[0];
  CheckCpuDense(input, "allgather");
  TORCH_CHECK(static_cast<int>(list.size()) == size_, "cohort: allgather: expected ", size_,
              " output tensors (one per rank), got ", list.size());
  std::vector<size_t> counts;
  for (const at::Tensor& output : list) {
    CheckCpuDense(output, "allgather");
    CheckSameDtype(input, output, "allgather");
    counts.push_back(MovedElements(output).count);
  }
  TORCH_CHECK(list[rank_].numel() == input.numel(), "cohort: allgather: output tensor ", rank_,
              " (this rank's) has ", list[rank_].numel(), " elements but the input has ",
              input.numel());
  auto work = MakeWork(c10d::OpType::ALLGATHER, "cohort:all_gather", inputs, list);
  at::Tensor source = ContiguousInput(input);
  auto packed = std::make_shared<PackedTensors>(list, /*fill=*/false);
  work->AddEpilogue([packed, source] { packed->Unpack(); });
  if (after) work->AddEpilogue(std::move(after));
  AllgatherOptions options;
  options.input = source.data_ptr();
  options.output = packed->data();
  options.dtype = MovedElements(input).type;
  if (AllEqual(counts)) {
    options.count = counts.front();
  } else {
    options.counts = counts;  // uneven: every rank passes the same list of sizes
  }
  options.timeout = timeout;
  return Launch(work, comm().Allgather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::AllgatherBaseCpu(at::Tensor& output,
                                                                    at::Tensor& input, After after,
                                                                    absl::Duration timeout) {
  CheckCpuDense(input, "allgather_into_tensor");
  CheckCpuDense(output, "allgather_into_tensor");
  CheckSameDtype(input, output, "allgather_into_tensor");
  TORCH_CHECK(output.numel() == input.numel() * size_, "cohort: allgather_into_tensor: the output (",
              DescribeTensor(output), ") must have ", size_, " times the input's ", input.numel(),
              " elements");
  std::vector<at::Tensor> inputs = {input};
  auto work = MakeWork(c10d::OpType::_ALLGATHER_BASE, "cohort:all_gather_into_tensor", inputs,
                       {output});
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  at::Tensor source = ContiguousInput(input);
  work->KeepAlive(source);
  if (after) work->AddEpilogue(std::move(after));
  AllgatherOptions options;
  options.input = source.data_ptr();
  options.output = buffer.data_ptr();
  options.count = MovedElements(input).count;
  options.dtype = MovedElements(input).type;
  options.timeout = timeout;
  return Launch(work, comm().Allgather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::AllgatherCoalescedCpu(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs, After after,
    absl::Duration timeout) {
  // outputs[r][i] receives input i of rank r. Blocks move as bytes, so the tensors of one call
  // may have different dtypes (their shapes must agree across ranks).
  TORCH_CHECK(static_cast<int>(outputs.size()) == size_, "cohort: allgather_coalesced: expected ",
              size_, " output lists (one per rank), got ", outputs.size());
  std::vector<at::Tensor> flat_outputs;
  for (size_t r = 0; r < outputs.size(); ++r) {
    TORCH_CHECK(outputs[r].size() == inputs.size(), "cohort: allgather_coalesced: output list ", r,
                " has ", outputs[r].size(), " tensors; there are ", inputs.size(), " inputs");
    for (size_t i = 0; i < inputs.size(); ++i) {
      CheckCpuDense(inputs[i], "allgather_coalesced");
      CheckCpuDense(outputs[r][i], "allgather_coalesced");
      CheckSameDtype(inputs[i], outputs[r][i], "allgather_coalesced");
      TORCH_CHECK(outputs[r][i].numel() == inputs[i].numel(),
                  "cohort: allgather_coalesced: output ", r, "/", i, " (",
                  DescribeTensor(outputs[r][i]), ") does not match input ", i, " (",
                  DescribeTensor(inputs[i]), ")");
      flat_outputs.push_back(outputs[r][i]);
    }
  }
  auto work = MakeWork(c10d::OpType::ALLGATHER_COALESCED, "cohort:all_gather_coalesced", inputs,
                       flat_outputs);
  auto packed_inputs = std::make_shared<PackedTensors>(inputs, /*fill=*/true);
  auto packed_outputs = std::make_shared<PackedTensors>(flat_outputs, /*fill=*/false);
  work->AddEpilogue([packed_inputs, packed_outputs] { packed_outputs->Unpack(); });
  if (after) work->AddEpilogue(std::move(after));
  AllgatherOptions options;
  options.input = packed_inputs->data();
  options.output = packed_outputs->data();
  options.count = packed_inputs->bytes();
  options.dtype = DataType::kUInt8;
  options.timeout = timeout;
  return Launch(work, comm().Allgather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::GatherCpu(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts, After after) {
  CheckSingle(inputs, "gather");
  CheckRoot(opts.rootRank, size_, "gather");
  const at::Tensor& input = inputs[0];
  CheckCpuDense(input, "gather");
  const bool root = opts.rootRank == rank_;
  std::vector<at::Tensor> results;
  if (root) {
    TORCH_CHECK(outputs.size() == 1 && static_cast<int>(outputs[0].size()) == size_,
                "cohort: gather: the root takes one list of ", size_,
                " output tensors (one per rank)");
    for (const at::Tensor& output : outputs[0]) {
      CheckCpuDense(output, "gather");
      CheckSameDtype(input, output, "gather");
      TORCH_CHECK(output.numel() == input.numel(), "cohort: gather: output ",
                  DescribeTensor(output), " does not match the input ", DescribeTensor(input));
    }
    results = outputs[0];
  } else {
    TORCH_CHECK(outputs.empty() || (outputs.size() == 1 && outputs[0].empty()),
                "cohort: gather: only the root (rank ", opts.rootRank,
                ") takes output tensors; this is rank ", rank_);
  }
  auto work = MakeWork(c10d::OpType::GATHER, "cohort:gather", inputs, results);
  at::Tensor source = ContiguousInput(input);
  work->KeepAlive(source);
  GatherOptions options;
  if (root) {
    auto packed = std::make_shared<PackedTensors>(results, /*fill=*/false);
    work->AddEpilogue([packed] { packed->Unpack(); });
    options.output = packed->data();
  }
  if (after) work->AddEpilogue(std::move(after));
  options.input = source.data_ptr();
  options.count = MovedElements(input).count;
  options.dtype = MovedElements(input).type;
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().Gather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::ScatterCpu(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts, After after) {
  CheckSingle(outputs, "scatter");
  CheckRoot(opts.rootRank, size_, "scatter");
  at::Tensor& output = outputs[0];
  CheckCpuDense(output, "scatter");
  const bool root = opts.rootRank == rank_;
  std::vector<at::Tensor> sources;
  if (root) {
    TORCH_CHECK(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_,
                "cohort: scatter: the root takes one list of ", size_,
                " input tensors (one per rank)");
    for (const at::Tensor& input : inputs[0]) {
      CheckCpuDense(input, "scatter");
      CheckSameDtype(output, input, "scatter");
      TORCH_CHECK(input.numel() == output.numel(), "cohort: scatter: input ",
                  DescribeTensor(input), " does not match the output ", DescribeTensor(output));
    }
    sources = inputs[0];
  } else {
    TORCH_CHECK(inputs.empty() || (inputs.size() == 1 && inputs[0].empty()),
                "cohort: scatter: only the root (rank ", opts.rootRank,
                ") takes input tensors; this is rank ", rank_);
  }
  auto work = MakeWork(c10d::OpType::SCATTER, "cohort:scatter", sources, outputs);
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  ScatterOptions options;
  if (root) {
    auto packed = std::make_shared<PackedTensors>(sources, /*fill=*/true);
    work->KeepAlive(packed->storage());
    options.input = packed->data();
  }
  if (after) work->AddEpilogue(std::move(after));
  options.output = buffer.data_ptr();
  options.count = MovedElements(output).count;
  options.dtype = MovedElements(output).type;
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().Scatter(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::ReduceScatterCpu(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts, After after) {
  CheckSingle(outputs, "reduce_scatter");
  at::Tensor& output = outputs[0];
  CheckCpuDense(output, "reduce_scatter");
  TORCH_CHECK(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_,
              "cohort: reduce_scatter takes one list of ", size_, " input tensors (one per rank)");
  std::vector<size_t> counts;
  Elements elements;
  for (const at::Tensor& input : inputs[0]) {
    CheckCpuDense(input, "reduce_scatter");
    CheckSameDtype(output, input, "reduce_scatter");
    elements = ReducedElements(input, opts.reduceOp, "reduce_scatter");
    counts.push_back(elements.count);
  }
  TORCH_CHECK(inputs[0][rank_].numel() == output.numel(), "cohort: reduce_scatter: input ", rank_,
              " (this rank's block, ", DescribeTensor(inputs[0][rank_]),
              ") does not match the output ", DescribeTensor(output));
  auto work = MakeWork(c10d::OpType::REDUCE_SCATTER, "cohort:reduce_scatter", inputs[0], outputs);
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  auto packed = std::make_shared<PackedTensors>(inputs[0], /*fill=*/true);
  work->KeepAlive(packed->storage());
  if (after) work->AddEpilogue(std::move(after));
  ReduceScatterOptions options;
  options.input = packed->data();
  options.output = buffer.data_ptr();
  if (AllEqual(counts)) {
    options.count = counts.front();
  } else {
    options.counts = counts;
  }
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, output.scalar_type(), "reduce_scatter");
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().ReduceScatter(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::ReduceScatterBaseCpu(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts, After after) {
  CheckCpuDense(input, "reduce_scatter_tensor");
  CheckCpuDense(output, "reduce_scatter_tensor");
  CheckSameDtype(input, output, "reduce_scatter_tensor");
  TORCH_CHECK(input.numel() == output.numel() * size_, "cohort: reduce_scatter_tensor: the input (",
              DescribeTensor(input), ") must have ", size_, " times the output's ", output.numel(),
              " elements");
  Elements elements = ReducedElements(output, opts.reduceOp, "reduce_scatter_tensor");
  std::vector<at::Tensor> inputs = {input};
  auto work = MakeWork(c10d::OpType::_REDUCE_SCATTER_BASE, "cohort:reduce_scatter_tensor", inputs,
                       {output});
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  at::Tensor source = ContiguousInput(input);
  work->KeepAlive(source);
  if (after) work->AddEpilogue(std::move(after));
  ReduceScatterOptions options;
  options.input = source.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, output.scalar_type(), "reduce_scatter_tensor");
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().ReduceScatter(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::AlltoallBaseCpu(
    at::Tensor& output, at::Tensor& input, const std::vector<int64_t>& output_splits,
    const std::vector<int64_t>& input_splits, const c10d::AllToAllOptions& opts, After after) {
  CheckCpuDense(input, "alltoall_base");
  CheckCpuDense(output, "alltoall_base");
  CheckSameDtype(input, output, "alltoall_base");
  // Counts are in libcohort elements: one per tensor element, or its bytes for dtypes that move
  // as bytes.
  DataType type;
  const size_t units = ToDataType(input.scalar_type(), &type) ? 1 : input.element_size();
  std::vector<at::Tensor> profiled = {input};
  auto work = MakeWork(c10d::OpType::ALLTOALL_BASE, "cohort:all_to_all", profiled, {output});
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  at::Tensor source = ContiguousInput(input);
  work->KeepAlive(source);
  AlltoallOptions options;
  options.input = source.data_ptr();
  options.output = buffer.data_ptr();
  options.dtype = MovedElements(input).type;
  options.timeout = OpTimeout(opts.timeout);
  if (output_splits.empty() && input_splits.empty()) {
    TORCH_CHECK(input.numel() == output.numel(), "cohort: alltoall_base: input (",
                DescribeTensor(input), ") and output (", DescribeTensor(output),
                ") must have the same number of elements without split sizes");
    TORCH_CHECK(input.numel() % size_ == 0, "cohort: alltoall_base: ", input.numel(),
                " elements cannot be split evenly among ", size_, " ranks");
    options.count = static_cast<size_t>(input.numel() / size_) * units;
  } else {
    options.send_counts = SplitCounts(input_splits, input, size_, units, "input");
    options.recv_counts = SplitCounts(output_splits, output, size_, units, "output");
  }
  if (after) work->AddEpilogue(std::move(after));
  return Launch(work, comm().Alltoall(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::AlltoallCpu(std::vector<at::Tensor>& outputs,
                                                               std::vector<at::Tensor>& inputs,
                                                               const c10d::AllToAllOptions& opts,
                                                               After after) {
  TORCH_CHECK(static_cast<int>(inputs.size()) == size_ &&
                  static_cast<int>(outputs.size()) == size_,
              "cohort: alltoall takes ", size_, " input and ", size_,
              " output tensors (one per rank); got ", inputs.size(), " and ", outputs.size());
  AlltoallOptions options;
  for (int r = 0; r < size_; ++r) {
    CheckCpuDense(inputs[r], "alltoall");
    CheckCpuDense(outputs[r], "alltoall");
    CheckSameDtype(inputs[0], inputs[r], "alltoall");
    CheckSameDtype(inputs[0], outputs[r], "alltoall");
    options.send_counts.push_back(MovedElements(inputs[r]).count);
    options.recv_counts.push_back(MovedElements(outputs[r]).count);
  }
  auto work = MakeWork(c10d::OpType::ALLTOALL, "cohort:all_to_all", inputs, outputs);
  auto packed_inputs = std::make_shared<PackedTensors>(inputs, /*fill=*/true);
  auto packed_outputs = std::make_shared<PackedTensors>(outputs, /*fill=*/false);
  work->AddEpilogue([packed_inputs, packed_outputs] { packed_outputs->Unpack(); });
  if (after) work->AddEpilogue(std::move(after));
  options.input = packed_inputs->data();
  options.output = packed_outputs->data();
  options.dtype = MovedElements(inputs[0]).type;
  options.timeout = OpTimeout(opts.timeout);
  return Launch(work, comm().Alltoall(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::SendCpu(std::vector<at::Tensor>& tensors,
                                                           int dst_rank, int tag) {
  const at::Tensor& tensor = tensors[0];
  CheckCpuDense(tensor, "send");
  auto work = MakeWork(c10d::OpType::SEND, "cohort:send", tensors, tensors);
  at::Tensor source = ContiguousInput(tensor);
  work->KeepAlive(source);
  Elements elements = MovedElements(tensor);
  SendOptions options;
  options.data = source.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.peer = dst_rank;
  options.tag = static_cast<uint32_t>(tag);
  return Launch(work, comm().Send(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RecvCpu(std::vector<at::Tensor>& tensors,
                                                           int src_rank, int tag, After after) {
  at::Tensor& tensor = tensors[0];
  CheckCpuDense(tensor, "recv");
  const bool any = src_rank == kAnySource;
  auto work = MakeWork(any ? c10d::OpType::RECVANYSOURCE : c10d::OpType::RECV, "cohort:recv",
                       {}, tensors);
  work->SetSourceRank(src_rank);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/false);
  if (after) work->AddEpilogue(std::move(after));
  Elements elements = MovedElements(tensor);
  RecvOptions options;
  options.data = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.peer = src_rank;
  options.tag = static_cast<uint32_t>(tag);
  return Launch(work, comm().Recv(options));
}

// ---------------------------------------------------------------------------------------------
// torch 2.x extras.

#if COHORT_TORCH_BACKEND_CLASS
void ProcessGroupCohort::startCoalescing() {
  std::lock_guard<std::mutex> lock(coalescing_mutex_);
  TORCH_CHECK(!coalescing_, "cohort: startCoalescing called twice without endCoalescing");
  coalescing_ = true;
  coalesced_.clear();
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::endCoalescing() {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  {
    std::lock_guard<std::mutex> lock(coalescing_mutex_);
    TORCH_CHECK(coalescing_, "cohort: endCoalescing called without startCoalescing");
    coalescing_ = false;
    works.swap(coalesced_);
  }
#if COHORT_TORCH_NCCL
  if (!works.empty() && dynamic_cast<CohortWork*>(works.front().get()) == nullptr) {
    return Nccl().Group(works);
  }
#endif
  return Group(works);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  TORCH_CHECK(outputs.size() == inputs.size(), "cohort: allgather_into_tensor_coalesced: ",
              outputs.size(), " outputs for ", inputs.size(), " inputs");
#if COHORT_TORCH_NCCL
  if (use_nccl_ && PlacementOf("allgather_into_tensor_coalesced", All({outputs}, inputs)) ==
                       Placement::kCuda) {
    return Nccl().AllgatherIntoTensorCoalesced(outputs, inputs, opts);
  }
#endif
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (size_t i = 0; i < inputs.size(); ++i) {
    works.push_back(_allgather_base(outputs[i], inputs[i], opts));
  }
  return Group(works);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  TORCH_CHECK(outputs.size() == inputs.size(), "cohort: reduce_scatter_tensor_coalesced: ",
              outputs.size(), " outputs for ", inputs.size(), " inputs");
#if COHORT_TORCH_NCCL
  if (use_nccl_ && PlacementOf("reduce_scatter_tensor_coalesced", All({outputs}, inputs)) ==
                       Placement::kCuda) {
    return Nccl().ReduceScatterTensorCoalesced(outputs, inputs, opts);
  }
#endif
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (size_t i = 0; i < inputs.size(); ++i) {
    works.push_back(_reduce_scatter_base(outputs[i], inputs[i], opts));
  }
  return Group(works);
}

void ProcessGroupCohort::abort() { Abort("the process group was aborted"); }

void ProcessGroupCohort::shutdown() {
  // Resources go with the object; torch drops its references right after this.
}
#endif

}  // namespace cohort::torch_ext
