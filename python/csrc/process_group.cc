#include "process_group.h"

#include <Python.h>

#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "collectives/transport/channel.h"
#include "common/config.h"
#include "tensor_args.h"

namespace cohort::torch_ext {
namespace {

#if COHORT_TORCH_BACKEND_CLASS
constexpr c10d::OpType kCoalescedOpType = c10d::OpType::COALESCED;
#else
constexpr c10d::OpType kCoalescedOpType = c10d::OpType::UNKNOWN;
#endif

// The tensors of a call, for TensorCall (inline: no allocation on the latency path).
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
  TORCH_CHECK(tensor.dim() >= 1,
              "cohort: alltoall_base: split sizes need a tensor with at "
              "least one dimension; got ",
              DescribeTensor(tensor));
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
  init();
}

ProcessGroupCohort::~ProcessGroupCohort() {
  // Closing joins the progress thread, which may be running a Future callback that needs the
  // GIL (DDP communication hooks): never hold the GIL while waiting for it.
  PyThreadState* saved = nullptr;
  if (Py_IsInitialized() && PyGILState_Check()) saved = PyEval_SaveThread();
  comm_.reset();
  if (saved != nullptr) PyEval_RestoreThread(saved);
}

Communicator& ProcessGroupCohort::comm() const {
  TORCH_CHECK(comm_ != nullptr, "cohort: the process group has been shut down");
  return *comm_;
}

void ProcessGroupCohort::Abort(const std::string& reason) {
  // libcohort's abort also aborts its device group (NCCL's kernels stop waiting).
  if (comm_ != nullptr) comm_->Abort(absl::CancelledError(reason));
}

absl::Duration ProcessGroupCohort::OpTimeout(std::chrono::milliseconds timeout) const {
  // torch leaves per-call timeouts unset (-1): the group's timeout applies.
  return timeout.count() > 0 ? absl::FromChrono(timeout) : absl::ZeroDuration();
}

c10::intrusive_ptr<CohortWork> ProcessGroupCohort::MakeWork(const TensorCall& call,
                                                            c10d::OpType type, const char* title,
                                                            c10::ArrayRef<at::Tensor> inputs,
                                                            c10::ArrayRef<at::Tensor> outputs) {
  // Every libcohort operation, point-to-point included, ends at its own timeout (the group's):
  // an untimed wait() ends with it.
  auto work = c10::make_intrusive<CohortWork>(rank_, type, title, inputs, outputs);
  if (call.cuda()) {
    work->SetDeviceStream(call.stream());
    call.Use(inputs);
    call.Use(outputs);
  }
  return work;
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::Group(
    const std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  std::vector<at::Tensor> outputs;
  CohortWork::Parts parts;
  for (const auto& work : works) {
    auto* member = dynamic_cast<CohortWork*>(work.get());
    TORCH_CHECK(member != nullptr, "cohort: cannot coalesce operations of another backend");
    for (const at::Tensor& tensor : member->result()) outputs.push_back(tensor);
    for (const auto& part : member->parts()) parts.push_back(part);
  }
  auto group = MakeWork(TensorCall(), kCoalescedOpType, "cohort:coalesced", {}, outputs);
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

// ---------------------------------------------------------------------------------------------
// Routing: CPU and CUDA tensors take the same implementations; a TensorCall says where the
// call's tensors are and, for CUDA tensors, puts the call on its stream (tensor_call.h).

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::broadcast(std::vector<at::Tensor>& tensors,
                                                             const c10d::BroadcastOptions& opts) {
  CheckSingle(tensors, "broadcast");
  TensorCall call(streams_, "broadcast", All(tensors));
  return RunBroadcast(tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allreduce(std::vector<at::Tensor>& tensors,
                                                             const c10d::AllreduceOptions& opts) {
  CheckSingle(tensors, "allreduce");
  TensorCall call(streams_, "allreduce", All(tensors));
  return RunAllreduce(tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allreduce_coalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  TORCH_CHECK(!tensors.empty(), "cohort: allreduce_coalesced: got no tensors");
  TensorCall call(streams_, "allreduce_coalesced", All(tensors));
  return RunAllreduceCoalesced(tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::reduce(std::vector<at::Tensor>& tensors,
                                                          const c10d::ReduceOptions& opts) {
  CheckSingle(tensors, "reduce");
  TensorCall call(streams_, "reduce", All(tensors));
  return RunReduce(tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allgather(
    std::vector<std::vector<at::Tensor>>& output_tensors, std::vector<at::Tensor>& input_tensors,
    const c10d::AllgatherOptions& opts) {
  TensorCall call(streams_, "allgather", All(output_tensors, input_tensors));
  return RunAllgather(output_tensors, input_tensors, call, OpTimeout(opts.timeout));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::_allgather_base(
    at::Tensor& output_buffer, at::Tensor& input_buffer, const c10d::AllgatherOptions& opts) {
  TensorCall call(streams_, "allgather_into_tensor", {&output_buffer, &input_buffer});
  return RunAllgatherBase(output_buffer, input_buffer, call, OpTimeout(opts.timeout));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& output_tensor_lists,
    std::vector<at::Tensor>& input_tensors, const c10d::AllgatherOptions& opts) {
  TensorCall call(streams_, "allgather_coalesced", All(output_tensor_lists, input_tensors));
  return RunAllgatherCoalesced(output_tensor_lists, input_tensors, call, OpTimeout(opts.timeout));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::gather(
    std::vector<std::vector<at::Tensor>>& output_tensors, std::vector<at::Tensor>& input_tensors,
    const c10d::GatherOptions& opts) {
  TensorCall call(streams_, "gather", All(output_tensors, input_tensors));
  return RunGather(output_tensors, input_tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::scatter(
    std::vector<at::Tensor>& output_tensors, std::vector<std::vector<at::Tensor>>& input_tensors,
    const c10d::ScatterOptions& opts) {
  TensorCall call(streams_, "scatter", All(input_tensors, output_tensors));
  return RunScatter(output_tensors, input_tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::reduce_scatter(
    std::vector<at::Tensor>& output_tensors, std::vector<std::vector<at::Tensor>>& input_tensors,
    const c10d::ReduceScatterOptions& opts) {
  TensorCall call(streams_, "reduce_scatter", All(input_tensors, output_tensors));
  return RunReduceScatter(output_tensors, input_tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::_reduce_scatter_base(
    at::Tensor& output_buffer, at::Tensor& input_buffer, const c10d::ReduceScatterOptions& opts) {
  TensorCall call(streams_, "reduce_scatter_tensor", {&output_buffer, &input_buffer});
  return RunReduceScatterBase(output_buffer, input_buffer, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::alltoall_base(
    at::Tensor& output_buffer, at::Tensor& input_buffer, std::vector<int64_t>& output_split_sizes,
    std::vector<int64_t>& input_split_sizes, const c10d::AllToAllOptions& opts) {
  TensorCall call(streams_, "alltoall_base", {&output_buffer, &input_buffer});
  return RunAlltoallBase(output_buffer, input_buffer, output_split_sizes, input_split_sizes, opts,
                         call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::alltoall(std::vector<at::Tensor>& output_tensors,
                                                            std::vector<at::Tensor>& input_tensors,
                                                            const c10d::AllToAllOptions& opts) {
  TensorPointers tensors = All(output_tensors);
  for (const at::Tensor& tensor : input_tensors) tensors.push_back(&tensor);
  TensorCall call(streams_, "alltoall", tensors);
  return RunAlltoall(output_tensors, input_tensors, opts, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::barrier(const c10d::BarrierOptions& opts) {
  // A barrier orders host threads, for CPU and CUDA users alike: it runs after the host parts of
  // the operations issued before it, not after their device steps (synchronize the device first
  // for that).
  BarrierOptions options;
  options.timeout = OpTimeout(opts.timeout);
  auto work = MakeWork(TensorCall(), c10d::OpType::BARRIER, "cohort:barrier", {}, {});
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
    RunSend(token, 0, kArriveTag, TensorCall());
    auto release = RunRecv(token, 0, kReleaseTag, TensorCall());
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
    arrivals.push_back(RunRecv(buffers[peer], peer, kArriveTag, TensorCall()));
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
  for (int peer = 1; peer < size_; ++peer) RunSend(token, peer, kReleaseTag, TensorCall());
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::send(std::vector<at::Tensor>& tensors,
                                                        int dst_rank, int tag) {
  CheckSingle(tensors, "send");
  TensorCall call(streams_, "send", All(tensors));
  return RunSend(tensors, dst_rank, tag, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::recv(std::vector<at::Tensor>& tensors,
                                                        int src_rank, int tag) {
  CheckSingle(tensors, "recv");
  TensorCall call(streams_, "recv", All(tensors), /*receive=*/true);
  return RunRecv(tensors, src_rank, tag, call);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::recvAnysource(std::vector<at::Tensor>& tensors,
                                                                 int tag) {
  CheckSingle(tensors, "recv");
  TensorCall call(streams_, "recv", All(tensors), /*receive=*/true);
  return RunRecv(tensors, kAnySource, tag, call);
}

// ---------------------------------------------------------------------------------------------
// The implementations, for CPU and CUDA tensors alike.

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunBroadcast(std::vector<at::Tensor>& tensors,
                                                                const c10d::BroadcastOptions& opts,
                                                                const TensorCall& call) {
  at::Tensor& tensor = tensors[0];
  call.CheckDense(tensor, "broadcast");
  CheckRoot(opts.rootRank, size_, "broadcast");
  TORCH_CHECK(opts.rootTensor == 0,
              "cohort: broadcast takes one tensor per process; "
              "root tensor ",
              opts.rootTensor, " does not exist");
  auto work = MakeWork(call, c10d::OpType::BROADCAST, "cohort:broadcast", tensors, tensors);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/true);
  Elements elements = MovedElements(buffer);
  BroadcastOptions options;
  options.input = buffer.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().Broadcast(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunAllreduce(std::vector<at::Tensor>& tensors,
                                                                const c10d::AllreduceOptions& opts,
                                                                const TensorCall& call) {
  at::Tensor& tensor = tensors[0];
  call.CheckDense(tensor, "allreduce");
  Elements elements = ReducedElements(tensor, opts.reduceOp, "allreduce");
  auto work = MakeWork(call, c10d::OpType::ALLREDUCE, "cohort:all_reduce", tensors, tensors);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/true);
  AllreduceOptions options;
  options.input = buffer.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, tensor.scalar_type(), "allreduce");
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().Allreduce(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunAllreduceCoalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceOptions& opts, const TensorCall& call) {
  size_t count = 0;
  Elements elements;
  for (const at::Tensor& tensor : tensors) {
    call.CheckDense(tensor, "allreduce_coalesced");
    CheckSameDtype(tensors[0], tensor, "allreduce_coalesced");
    elements = ReducedElements(tensor, opts.reduceOp, "allreduce_coalesced");
    count += elements.count;
  }
  auto work = MakeWork(call, c10d::OpType::ALLREDUCE_COALESCED, "cohort:all_reduce_coalesced",
                       tensors, tensors);
  auto packed = std::make_shared<PackedTensors>(tensors, /*fill=*/true);
  work->AddEpilogue([packed] { packed->Unpack(); });
  AllreduceOptions options;
  options.input = packed->data();
  options.output = packed->data();
  options.count = count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, tensors[0].scalar_type(), "allreduce_coalesced");
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().Allreduce(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunReduce(std::vector<at::Tensor>& tensors,
                                                             const c10d::ReduceOptions& opts,
                                                             const TensorCall& call) {
  at::Tensor& tensor = tensors[0];
  call.CheckDense(tensor, "reduce");
  CheckRoot(opts.rootRank, size_, "reduce");
  TORCH_CHECK(opts.rootTensor == 0, "cohort: reduce takes one tensor per process; root tensor ",
              opts.rootTensor, " does not exist");
  Elements elements = ReducedElements(tensor, opts.reduceOp, "reduce");
  auto work = MakeWork(call, c10d::OpType::REDUCE, "cohort:reduce", tensors, tensors);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/true);
  ReduceOptions options;
  options.input = buffer.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, tensor.scalar_type(), "reduce");
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().Reduce(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunAllgather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const TensorCall& call, absl::Duration timeout) {
  CheckSingle(inputs, "allgather");
  TORCH_CHECK(outputs.size() == 1, "cohort: allgather takes one list of output tensors (got ",
              outputs.size(), ")");
  const at::Tensor& input = inputs[0];
  std::vector<at::Tensor>& list = outputs[0];
  call.CheckDense(input, "allgather");
  TORCH_CHECK(static_cast<int>(list.size()) == size_, "cohort: allgather: expected ", size_,
              " output tensors (one per rank), got ", list.size());
  std::vector<size_t> counts;
  for (const at::Tensor& output : list) {
    call.CheckDense(output, "allgather");
    CheckSameDtype(input, output, "allgather");
    counts.push_back(MovedElements(output).count);
  }
  TORCH_CHECK(list[rank_].numel() == input.numel(), "cohort: allgather: output tensor ", rank_,
              " (this rank's) has ", list[rank_].numel(), " elements but the input has ",
              input.numel());
  auto work = MakeWork(call, c10d::OpType::ALLGATHER, "cohort:all_gather", inputs, list);
  at::Tensor source = ContiguousInput(input);
  auto packed = std::make_shared<PackedTensors>(list, /*fill=*/false);
  work->AddEpilogue([packed, source] { packed->Unpack(); });
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
  call.Apply(options);
  return Launch(work, comm().Allgather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunAllgatherBase(at::Tensor& output,
                                                                    at::Tensor& input,
                                                                    const TensorCall& call,
                                                                    absl::Duration timeout) {
  call.CheckDense(input, "allgather_into_tensor");
  call.CheckDense(output, "allgather_into_tensor");
  CheckSameDtype(input, output, "allgather_into_tensor");
  TORCH_CHECK(output.numel() == input.numel() * size_,
              "cohort: allgather_into_tensor: the output (", DescribeTensor(output), ") must have ",
              size_, " times the input's ", input.numel(), " elements");
  std::vector<at::Tensor> inputs = {input};
  auto work = MakeWork(call, c10d::OpType::_ALLGATHER_BASE, "cohort:all_gather_into_tensor", inputs,
                       {output});
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  at::Tensor source = ContiguousInput(input);
  work->KeepAlive(source);
  AllgatherOptions options;
  options.input = source.data_ptr();
  options.output = buffer.data_ptr();
  options.count = MovedElements(input).count;
  options.dtype = MovedElements(input).type;
  options.timeout = timeout;
  call.Apply(options);
  return Launch(work, comm().Allgather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunAllgatherCoalesced(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const TensorCall& call, absl::Duration timeout) {
  // outputs[r][i] receives input i of rank r. Blocks move as bytes, so the tensors of one call
  // may have different dtypes (their shapes must agree across ranks).
  TORCH_CHECK(static_cast<int>(outputs.size()) == size_, "cohort: allgather_coalesced: expected ",
              size_, " output lists (one per rank), got ", outputs.size());
  std::vector<at::Tensor> flat_outputs;
  for (size_t r = 0; r < outputs.size(); ++r) {
    TORCH_CHECK(outputs[r].size() == inputs.size(), "cohort: allgather_coalesced: output list ", r,
                " has ", outputs[r].size(), " tensors; there are ", inputs.size(), " inputs");
    for (size_t i = 0; i < inputs.size(); ++i) {
      call.CheckDense(inputs[i], "allgather_coalesced");
      call.CheckDense(outputs[r][i], "allgather_coalesced");
      CheckSameDtype(inputs[i], outputs[r][i], "allgather_coalesced");
      TORCH_CHECK(outputs[r][i].numel() == inputs[i].numel(),
                  "cohort: allgather_coalesced: output ", r, "/", i, " (",
                  DescribeTensor(outputs[r][i]), ") does not match input ", i, " (",
                  DescribeTensor(inputs[i]), ")");
      flat_outputs.push_back(outputs[r][i]);
    }
  }
  auto work = MakeWork(call, c10d::OpType::ALLGATHER_COALESCED, "cohort:all_gather_coalesced",
                       inputs, flat_outputs);
  auto packed_inputs = std::make_shared<PackedTensors>(inputs, /*fill=*/true);
  auto packed_outputs = std::make_shared<PackedTensors>(flat_outputs, /*fill=*/false);
  work->AddEpilogue([packed_inputs, packed_outputs] { packed_outputs->Unpack(); });
  AllgatherOptions options;
  options.input = packed_inputs->data();
  options.output = packed_outputs->data();
  options.count = packed_inputs->bytes();
  options.dtype = DataType::kUInt8;
  options.timeout = timeout;
  call.Apply(options);
  return Launch(work, comm().Allgather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunGather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts, const TensorCall& call) {
  CheckSingle(inputs, "gather");
  CheckRoot(opts.rootRank, size_, "gather");
  const at::Tensor& input = inputs[0];
  call.CheckDense(input, "gather");
  const bool root = opts.rootRank == rank_;
  std::vector<at::Tensor> results;
  if (root) {
    TORCH_CHECK(outputs.size() == 1 && static_cast<int>(outputs[0].size()) == size_,
                "cohort: gather: the root takes one list of ", size_,
                " output tensors (one per rank)");
    for (const at::Tensor& output : outputs[0]) {
      call.CheckDense(output, "gather");
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
  auto work = MakeWork(call, c10d::OpType::GATHER, "cohort:gather", inputs, results);
  at::Tensor source = ContiguousInput(input);
  work->KeepAlive(source);
  GatherOptions options;
  if (root) {
    auto packed = std::make_shared<PackedTensors>(results, /*fill=*/false);
    work->AddEpilogue([packed] { packed->Unpack(); });
    options.output = packed->data();
  }
  options.input = source.data_ptr();
  options.count = MovedElements(input).count;
  options.dtype = MovedElements(input).type;
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().Gather(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunScatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts, const TensorCall& call) {
  CheckSingle(outputs, "scatter");
  CheckRoot(opts.rootRank, size_, "scatter");
  at::Tensor& output = outputs[0];
  call.CheckDense(output, "scatter");
  const bool root = opts.rootRank == rank_;
  std::vector<at::Tensor> sources;
  if (root) {
    TORCH_CHECK(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_,
                "cohort: scatter: the root takes one list of ", size_,
                " input tensors (one per rank)");
    for (const at::Tensor& input : inputs[0]) {
      call.CheckDense(input, "scatter");
      CheckSameDtype(output, input, "scatter");
      TORCH_CHECK(input.numel() == output.numel(), "cohort: scatter: input ", DescribeTensor(input),
                  " does not match the output ", DescribeTensor(output));
    }
    sources = inputs[0];
  } else {
    TORCH_CHECK(inputs.empty() || (inputs.size() == 1 && inputs[0].empty()),
                "cohort: scatter: only the root (rank ", opts.rootRank,
                ") takes input tensors; this is rank ", rank_);
  }
  auto work = MakeWork(call, c10d::OpType::SCATTER, "cohort:scatter", sources, outputs);
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  ScatterOptions options;
  if (root) {
    auto packed = std::make_shared<PackedTensors>(sources, /*fill=*/true);
    work->KeepAlive(packed->storage());
    options.input = packed->data();
  }
  options.output = buffer.data_ptr();
  options.count = MovedElements(output).count;
  options.dtype = MovedElements(output).type;
  options.root = static_cast<int>(opts.rootRank);
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().Scatter(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunReduceScatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts, const TensorCall& call) {
  CheckSingle(outputs, "reduce_scatter");
  at::Tensor& output = outputs[0];
  call.CheckDense(output, "reduce_scatter");
  TORCH_CHECK(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_,
              "cohort: reduce_scatter takes one list of ", size_, " input tensors (one per rank)");
  std::vector<size_t> counts;
  Elements elements;
  for (const at::Tensor& input : inputs[0]) {
    call.CheckDense(input, "reduce_scatter");
    CheckSameDtype(output, input, "reduce_scatter");
    elements = ReducedElements(input, opts.reduceOp, "reduce_scatter");
    counts.push_back(elements.count);
  }
  TORCH_CHECK(inputs[0][rank_].numel() == output.numel(), "cohort: reduce_scatter: input ", rank_,
              " (this rank's block, ", DescribeTensor(inputs[0][rank_]),
              ") does not match the output ", DescribeTensor(output));
  auto work =
      MakeWork(call, c10d::OpType::REDUCE_SCATTER, "cohort:reduce_scatter", inputs[0], outputs);
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  auto packed = std::make_shared<PackedTensors>(inputs[0], /*fill=*/true);
  work->KeepAlive(packed->storage());
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
  call.Apply(options);
  return Launch(work, comm().ReduceScatter(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunReduceScatterBase(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts,
    const TensorCall& call) {
  call.CheckDense(input, "reduce_scatter_tensor");
  call.CheckDense(output, "reduce_scatter_tensor");
  CheckSameDtype(input, output, "reduce_scatter_tensor");
  TORCH_CHECK(input.numel() == output.numel() * size_, "cohort: reduce_scatter_tensor: the input (",
              DescribeTensor(input), ") must have ", size_, " times the output's ", output.numel(),
              " elements");
  Elements elements = ReducedElements(output, opts.reduceOp, "reduce_scatter_tensor");
  std::vector<at::Tensor> inputs = {input};
  auto work = MakeWork(call, c10d::OpType::_REDUCE_SCATTER_BASE, "cohort:reduce_scatter_tensor",
                       inputs, {output});
  at::Tensor buffer = OutputBuffer(output, *work, /*read=*/false);
  at::Tensor source = ContiguousInput(input);
  work->KeepAlive(source);
  ReduceScatterOptions options;
  options.input = source.data_ptr();
  options.output = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.op = ToReduceOp(opts.reduceOp, output.scalar_type(), "reduce_scatter_tensor");
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().ReduceScatter(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunAlltoallBase(
    at::Tensor& output, at::Tensor& input, const std::vector<int64_t>& output_splits,
    const std::vector<int64_t>& input_splits, const c10d::AllToAllOptions& opts,
    const TensorCall& call) {
  call.CheckDense(input, "alltoall_base");
  call.CheckDense(output, "alltoall_base");
  CheckSameDtype(input, output, "alltoall_base");
  // Counts are in libcohort elements: one per tensor element, or its bytes for dtypes that move
  // as bytes.
  DataType type;
  const size_t units = ToDataType(input.scalar_type(), &type) ? 1 : input.element_size();
  std::vector<at::Tensor> profiled = {input};
  auto work = MakeWork(call, c10d::OpType::ALLTOALL_BASE, "cohort:all_to_all", profiled, {output});
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
  call.Apply(options);
  return Launch(work, comm().Alltoall(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunAlltoall(std::vector<at::Tensor>& outputs,
                                                               std::vector<at::Tensor>& inputs,
                                                               const c10d::AllToAllOptions& opts,
                                                               const TensorCall& call) {
  TORCH_CHECK(static_cast<int>(inputs.size()) == size_ && static_cast<int>(outputs.size()) == size_,
              "cohort: alltoall takes ", size_, " input and ", size_,
              " output tensors (one per rank); got ", inputs.size(), " and ", outputs.size());
  AlltoallOptions options;
  for (int r = 0; r < size_; ++r) {
    call.CheckDense(inputs[r], "alltoall");
    call.CheckDense(outputs[r], "alltoall");
    CheckSameDtype(inputs[0], inputs[r], "alltoall");
    CheckSameDtype(inputs[0], outputs[r], "alltoall");
    options.send_counts.push_back(MovedElements(inputs[r]).count);
    options.recv_counts.push_back(MovedElements(outputs[r]).count);
  }
  auto work = MakeWork(call, c10d::OpType::ALLTOALL, "cohort:all_to_all", inputs, outputs);
  auto packed_inputs = std::make_shared<PackedTensors>(inputs, /*fill=*/true);
  auto packed_outputs = std::make_shared<PackedTensors>(outputs, /*fill=*/false);
  work->AddEpilogue([packed_inputs, packed_outputs] { packed_outputs->Unpack(); });
  options.input = packed_inputs->data();
  options.output = packed_outputs->data();
  options.dtype = MovedElements(inputs[0]).type;
  options.timeout = OpTimeout(opts.timeout);
  call.Apply(options);
  return Launch(work, comm().Alltoall(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunSend(std::vector<at::Tensor>& tensors,
                                                           int dst_rank, int tag,
                                                           const TensorCall& call) {
  const at::Tensor& tensor = tensors[0];
  call.CheckDense(tensor, "send");
  auto work = MakeWork(call, c10d::OpType::SEND, "cohort:send", tensors, tensors);
  at::Tensor source = ContiguousInput(tensor);
  work->KeepAlive(source);
  Elements elements = MovedElements(tensor);
  SendOptions options;
  options.data = source.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.peer = dst_rank;
  options.tag = static_cast<uint32_t>(tag);
  call.Apply(options);
  return Launch(work, comm().Send(options));
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::RunRecv(std::vector<at::Tensor>& tensors,
                                                           int src_rank, int tag,
                                                           const TensorCall& call) {
  at::Tensor& tensor = tensors[0];
  call.CheckDense(tensor, "recv");
  const bool any = src_rank == kAnySource;
  auto work = MakeWork(call, any ? c10d::OpType::RECVANYSOURCE : c10d::OpType::RECV, "cohort:recv",
                       {}, tensors);
  work->SetSourceRank(src_rank);
  at::Tensor buffer = OutputBuffer(tensor, *work, /*read=*/false);
  Elements elements = MovedElements(tensor);
  RecvOptions options;
  options.data = buffer.data_ptr();
  options.count = elements.count;
  options.dtype = elements.type;
  options.peer = src_rank;
  options.tag = static_cast<uint32_t>(tag);
  call.Apply(options);
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
  return Group(works);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  TORCH_CHECK(outputs.size() == inputs.size(),
              "cohort: allgather_into_tensor_coalesced: ", outputs.size(), " outputs for ",
              inputs.size(), " inputs");
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (size_t i = 0; i < inputs.size(); ++i) {
    works.push_back(_allgather_base(outputs[i], inputs[i], opts));
  }
  return Group(works);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupCohort::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  TORCH_CHECK(outputs.size() == inputs.size(),
              "cohort: reduce_scatter_tensor_coalesced: ", outputs.size(), " outputs for ",
              inputs.size(), " inputs");
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
