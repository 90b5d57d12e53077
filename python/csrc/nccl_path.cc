#include "nccl_path.h"

#include <cuda_runtime.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <sstream>
#include <stdexcept>

#include "tensor_args.h"

namespace cohort::torch_ext {
namespace {

constexpr auto kWatchdogPeriod = std::chrono::milliseconds(100);

void CheckCuda(cudaError_t result, const char* call) {
  TORCH_CHECK(result == cudaSuccess, "cohort: ", call, " failed: ", cudaGetErrorString(result));
}

ncclDataType_t NcclType(at::ScalarType type, const char* what) {
  switch (type) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
#if NCCL_MAJOR > 2 || (NCCL_MAJOR == 2 && NCCL_MINOR >= 10)
    case at::kBFloat16:
      return ncclBfloat16;
#endif
    case at::kChar:
      return ncclInt8;
    case at::kByte:
    case at::kBool:
      return ncclUint8;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    default:
      TORCH_CHECK(false, "cohort: ", what, ": NCCL cannot reduce CUDA tensors of dtype ",
                  c10::toString(type));
  }
}

ncclRedOp_t NcclOp(const c10d::ReduceOp& op, at::ScalarType type, const char* what) {
  const bool logical = type == at::kBool;
  switch (op.op_) {
    case c10d::ReduceOp::SUM:
      return logical ? ncclMax : ncclSum;
    case c10d::ReduceOp::PRODUCT:
      return logical ? ncclMin : ncclProd;
    case c10d::ReduceOp::MIN:
      return ncclMin;
    case c10d::ReduceOp::MAX:
      return ncclMax;
#if NCCL_MAJOR > 2 || (NCCL_MAJOR == 2 && NCCL_MINOR >= 10)
    case c10d::ReduceOp::AVG:
      TORCH_CHECK(!logical, "cohort: ", what, ": ReduceOp.AVG is not defined for bool");
      return ncclAvg;
#endif
    default:
      TORCH_CHECK(false, "cohort: ", what, ": NCCL has no reduce op ", static_cast<int>(op.op_),
                  " (bitwise ops and PREMUL_SUM are not supported for CUDA tensors by cohort)");
  }
}

// Bytes, for operations that only move data (any dtype).
size_t Bytes(const at::Tensor& tensor) {
  return static_cast<size_t>(tensor.numel()) * tensor.element_size();
}

void CheckCudaDense(const at::Tensor& tensor, const at::Device& device, const char* what) {
  TORCH_CHECK(tensor.layout() == at::kStrided, "cohort: ", what,
              ": only dense (strided) tensors are supported; got ", DescribeTensor(tensor));
  TORCH_CHECK(tensor.device() == device, "cohort: ", what,
              ": all tensors of one call must be on one GPU; got ", DescribeTensor(tensor),
              " and a tensor on ", device.str());
}

// A contiguous tensor to write into; copied back into `tensor` on the stream afterwards.
struct StagedOutput {
  at::Tensor tensor;
  at::Tensor buffer;
  void CopyBack() {
    if (!buffer.is_same(tensor)) tensor.copy_(buffer);
  }
};

StagedOutput Stage(const at::Tensor& tensor, bool read) {
  if (tensor.is_contiguous()) return {tensor, tensor};
  return {tensor, read ? tensor.contiguous() : at::empty(tensor.sizes(), tensor.options())};
}

std::string Describe(const char* what, const at::Tensor& tensor) {
  return std::string(what) + "(" + DescribeTensor(tensor) + ")";
}

}  // namespace

void CheckNccl(ncclResult_t result, const char* call, ncclComm_t comm) {
  if (result == ncclSuccess || result == ncclInProgress) return;
  std::string detail = ncclGetErrorString(result);
#if NCCL_MAJOR > 2 || (NCCL_MAJOR == 2 && NCCL_MINOR >= 13)
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') detail += std::string(": ") + last;
  }
#else
  (void)comm;
#endif
  TORCH_CHECK(false, "cohort: ", call, " failed: ", detail);
}

// ---------------------------------------------------------------------------------------------
// NcclWork

NcclWork::NcclWork(int rank, c10d::OpType type, const char* title, std::shared_ptr<NcclComm> comm,
                   at::Device device, std::vector<at::Tensor> outputs,
                   std::chrono::milliseconds timeout, std::string description)
    : c10d::Work(rank, type, title),
      comm_(std::move(comm)),
      device_(device),
      outputs_(std::move(outputs)),
      start_(std::chrono::steady_clock::now()),
      timeout_(timeout),
      description_(std::move(description)) {
  c10::cuda::CUDAGuard guard(device_);
  cudaEvent_t event = nullptr;
  CheckCuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
  end_event_ = event;
  future_ = c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()),
                                                     std::vector<c10::Device>{device_});
}

NcclWork::~NcclWork() {
  if (end_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(end_event_));
}

void NcclWork::Enqueued() {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
  CheckCuda(cudaEventRecord(static_cast<cudaEvent_t>(end_event_), stream), "cudaEventRecord");
  // Like torch's NCCL backend: the Future completes now and carries CUDA events, so whoever
  // waits on it (DDP hooks) orders its streams after the kernels instead of blocking.
  future_->markCompleted(c10::IValue(outputs_));
}

void NcclWork::Fail(const std::string& message) {
  std::lock_guard<std::mutex> lock(state_mutex_);
  if (error_.empty()) error_ = message;
}

NcclWork::State NcclWork::Poll() {
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (!error_.empty()) return State::kFailed;
  }
  {
    std::lock_guard<std::mutex> lock(comm_->mutex);
    if (!comm_->error.empty()) {
      Fail(description_ + " failed: " + comm_->error);
      return State::kFailed;
    }
  }
  cudaError_t query = cudaEventQuery(static_cast<cudaEvent_t>(end_event_));
  if (query == cudaSuccess) return State::kDone;
  if (query != cudaErrorNotReady) {
    Fail(description_ + " failed: " + cudaGetErrorString(query));
    return State::kFailed;
  }
  if (timeout_.count() > 0 && std::chrono::steady_clock::now() - start_ > timeout_) {
    std::ostringstream message;
    message << description_ << " on rank " << rank_ << " timed out after " << timeout_.count()
            << " ms (the timeout given to init_process_group); NCCL was aborted";
    Fail(message.str());
    return State::kFailed;
  }
  return State::kRunning;
}

bool NcclWork::isCompleted() { return Poll() != State::kRunning; }

bool NcclWork::isSuccess() const {
  std::lock_guard<std::mutex> lock(state_mutex_);
  return error_.empty();
}

std::exception_ptr NcclWork::exception() const {
  std::lock_guard<std::mutex> lock(state_mutex_);
  if (error_.empty()) return nullptr;
  return std::make_exception_ptr(std::runtime_error(error_));
}

void NcclWork::synchronize() {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
  CheckCuda(cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(end_event_), 0),
            "cudaStreamWaitEvent");
}

bool NcclWork::wait(std::chrono::milliseconds timeout) {
  synchronize();
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    State state = Poll();
    if (state == State::kDone) return true;
    if (state == State::kFailed) std::rethrow_exception(exception());
    if (timeout != kNoTimeout && std::chrono::steady_clock::now() - start > timeout) {
      TORCH_CHECK(false, "cohort: rank ", rank_, ": ", description_,
                  " did not finish within the wait timeout of ", timeout.count(),
                  " ms; it is still running");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// ---------------------------------------------------------------------------------------------
// NcclPath

NcclPath::NcclPath(c10::intrusive_ptr<c10d::Store> store, std::string name, int rank, int size,
                   std::chrono::milliseconds timeout)
    : store_(std::move(store)), name_(std::move(name)), rank_(rank), size_(size),
      timeout_(timeout) {
  watchdog_ = std::thread([this] { Watchdog(); });
}

NcclPath::~NcclPath() {
  {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    stop_ = true;
  }
  pending_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  std::lock_guard<std::mutex> lock(comms_mutex_);
  for (auto& comm : comms_) {
    if (comm == nullptr || comm->comm == nullptr) continue;
    std::lock_guard<std::mutex> comm_lock(comm->mutex);
    if (comm->aborted) continue;
    if (comm->error.empty()) {
      ncclCommDestroy(comm->comm);
    } else {
      ncclCommAbort(comm->comm);
    }
    comm->aborted = true;
  }
}

std::chrono::milliseconds NcclPath::OpTimeout(std::chrono::milliseconds timeout) const {
  return timeout.count() > 0 ? timeout : timeout_;
}

void NcclPath::Abort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(comms_mutex_);
  if (abort_reason_.empty()) abort_reason_ = reason;
  for (auto& comm : comms_) {
    if (comm == nullptr) continue;
    std::lock_guard<std::mutex> comm_lock(comm->mutex);
    if (comm->error.empty()) comm->error = reason;
    if (!comm->aborted && comm->comm != nullptr) {
      ncclCommAbort(comm->comm);  // kernels waiting on peers return
      comm->aborted = true;
    }
  }
}

std::shared_ptr<NcclComm> NcclPath::CommFor(const at::Device& device) {
  std::lock_guard<std::mutex> lock(comms_mutex_);
  TORCH_CHECK(abort_reason_.empty(), "cohort: this process group failed earlier: ",
              abort_reason_);
  const size_t index = static_cast<size_t>(device.index());
  if (comms_.size() <= index) comms_.resize(index + 1);
  if (comms_[index] != nullptr) return comms_[index];

  // Every rank creates its communicators in the same order (the first GPU operation of each
  // device), so a counter names the store keys alike on every rank.
  const std::string key = name_ + "/nccl/" + std::to_string(created_++);
  // A barrier through the store first: a missing rank becomes a timeout that names it instead
  // of a hang inside ncclCommInitRank.
  store_->set(key + "/ready/" + std::to_string(rank_), std::vector<uint8_t>{1});
  std::vector<std::string> ready;
  for (int r = 0; r < size_; ++r) ready.push_back(key + "/ready/" + std::to_string(r));
  try {
    store_->wait(ready, timeout_);
  } catch (const std::exception& error) {
    std::string missing;
    for (int r = 0; r < size_; ++r) {
      if (!store_->check({ready[r]})) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    TORCH_CHECK(false, "cohort: rank ", rank_, " waited ", timeout_.count(),
                " ms for ranks ", missing, " to start their first GPU operation on this group; "
                "every rank must issue the same collectives: ", error.what());
  }
  ncclUniqueId id;
  if (rank_ == 0) {
    CheckNccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    const auto* bytes = reinterpret_cast<const uint8_t*>(&id);
    store_->set(key + "/id", std::vector<uint8_t>(bytes, bytes + sizeof(id)));
  } else {
    store_->wait({key + "/id"}, timeout_);
    std::vector<uint8_t> bytes = store_->get(key + "/id");
    TORCH_CHECK(bytes.size() == sizeof(id), "cohort: malformed NCCL unique id in the store");
    std::memcpy(&id, bytes.data(), sizeof(id));
  }
  auto comm = std::make_shared<NcclComm>();
  comm->device = device.index();
  c10::cuda::CUDAGuard guard(device);
  CheckNccl(ncclCommInitRank(&comm->comm, size_, id, rank_), "ncclCommInitRank");
  comms_[index] = comm;
  return comm;
}

template <typename Enqueue, typename Finish>
c10::intrusive_ptr<c10d::Work> NcclPath::Run(c10d::OpType type, const char* title,
                                             const at::Device& device,
                                             std::vector<at::Tensor> outputs,
                                             std::chrono::milliseconds timeout,
                                             const std::string& what, Enqueue&& enqueue,
                                             Finish&& finish) {
  std::shared_ptr<NcclComm> comm = CommFor(device);
  {
    std::lock_guard<std::mutex> lock(comm->mutex);
    TORCH_CHECK(comm->error.empty(), "cohort: ", what,
                " cannot run: this process group's GPU communicator failed earlier: ",
                comm->error);
  }
  c10::cuda::CUDAGuard guard(device);
  at::NoGradGuard no_grad;  // staging copies move raw data, as NCCL does
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  auto work = c10::make_intrusive<NcclWork>(rank_, type, title, comm, device, std::move(outputs),
                                            OpTimeout(timeout), what);
  CheckNccl(ncclGroupStart(), "ncclGroupStart");
  try {
    enqueue(comm->comm, stream);
  } catch (...) {
    ncclGroupEnd();
    throw;
  }
  CheckNccl(ncclGroupEnd(), what.c_str(), comm->comm);
  // NCCL launches a group's kernels at ncclGroupEnd: copies out of staging buffers go after.
  finish();
  work->Enqueued();
  {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    pending_.push_back(work);
  }
  pending_cv_.notify_all();
  return work;
}

void NcclPath::Watchdog() {
  while (true) {
    std::deque<c10::intrusive_ptr<NcclWork>> pending;
    {
      std::unique_lock<std::mutex> lock(pending_mutex_);
      pending_cv_.wait_for(lock, kWatchdogPeriod, [this] { return stop_; });
      if (stop_) return;
      pending.swap(pending_);
    }
    std::vector<std::shared_ptr<NcclComm>> failed;
    std::deque<c10::intrusive_ptr<NcclWork>> still_running;
    for (auto& work : pending) {
      // NCCL's own asynchronous errors (a peer's connection failed, a remote error) first.
      const auto& comm = work->comm();
      ncclResult_t async = ncclSuccess;
      {
        std::lock_guard<std::mutex> lock(comm->mutex);
        if (!comm->aborted && comm->comm != nullptr) ncclCommGetAsyncError(comm->comm, &async);
        if (async != ncclSuccess && async != ncclInProgress && comm->error.empty()) {
          comm->error = std::string("NCCL reported an asynchronous error: ") +
                        ncclGetErrorString(async);
        }
      }
      switch (work->Poll()) {
        case NcclWork::State::kDone:
          break;
        case NcclWork::State::kFailed:
          failed.push_back(comm);
          break;
        case NcclWork::State::kRunning:
          still_running.push_back(work);
          break;
      }
    }
    for (auto& comm : failed) {
      std::lock_guard<std::mutex> lock(comm->mutex);
      if (comm->error.empty()) comm->error = "an operation timed out";
      if (!comm->aborted && comm->comm != nullptr) {
        ncclCommAbort(comm->comm);
        comm->aborted = true;
      }
    }
    std::lock_guard<std::mutex> lock(pending_mutex_);
    for (auto& work : still_running) pending_.push_front(work);
  }
}

// ---------------------------------------------------------------------------------------------
// Operations.

c10::intrusive_ptr<c10d::Work> NcclPath::Allreduce(std::vector<at::Tensor>& tensors,
                                                   const c10d::AllreduceOptions& opts) {
  at::Tensor& tensor = tensors[0];
  const at::Device device = tensor.device();
  CheckCudaDense(tensor, device, "allreduce");
  const ncclDataType_t type = NcclType(tensor.scalar_type(), "allreduce");
  const ncclRedOp_t op = NcclOp(opts.reduceOp, tensor.scalar_type(), "allreduce");
  auto staged = std::make_shared<StagedOutput>(Stage(tensor, true));
  return Run(c10d::OpType::ALLREDUCE, "cohort:all_reduce", device, tensors, opts.timeout,
             Describe("allreduce", tensor), [&](ncclComm_t comm, cudaStream_t stream) {
               void* data = staged->buffer.data_ptr();
               CheckNccl(ncclAllReduce(data, data, staged->buffer.numel(), type, op, comm, stream),
                         "ncclAllReduce", comm);
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::AllreduceCoalesced(std::vector<at::Tensor>& tensors,
                                                            const c10d::AllreduceOptions& opts) {
  const at::Device device = tensors[0].device();
  for (const at::Tensor& tensor : tensors) {
    CheckCudaDense(tensor, device, "allreduce_coalesced");
    CheckSameDtype(tensors[0], tensor, "allreduce_coalesced");
  }
  const ncclDataType_t type = NcclType(tensors[0].scalar_type(), "allreduce_coalesced");
  const ncclRedOp_t op = NcclOp(opts.reduceOp, tensors[0].scalar_type(), "allreduce_coalesced");
  std::vector<StagedOutput> staged;
  for (const at::Tensor& tensor : tensors) staged.push_back(Stage(tensor, true));
  return Run(c10d::OpType::ALLREDUCE_COALESCED, "cohort:all_reduce_coalesced", device, tensors,
             opts.timeout, Describe("allreduce_coalesced", tensors[0]),
             [&](ncclComm_t comm, cudaStream_t stream) {
               for (auto& part : staged) {
                 void* data = part.buffer.data_ptr();
                 CheckNccl(ncclAllReduce(data, data, part.buffer.numel(), type, op, comm, stream),
                           "ncclAllReduce", comm);
               }
             },
             [&] {
               for (auto& part : staged) part.CopyBack();
             });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Broadcast(std::vector<at::Tensor>& tensors,
                                                   const c10d::BroadcastOptions& opts) {
  at::Tensor& tensor = tensors[0];
  const at::Device device = tensor.device();
  CheckCudaDense(tensor, device, "broadcast");
  CheckRoot(opts.rootRank, size_, "broadcast");
  auto staged = std::make_shared<StagedOutput>(Stage(tensor, true));
  return Run(c10d::OpType::BROADCAST, "cohort:broadcast", device, tensors, opts.timeout,
             Describe("broadcast", tensor), [&](ncclComm_t comm, cudaStream_t stream) {
               void* data = staged->buffer.data_ptr();
               CheckNccl(ncclBroadcast(data, data, Bytes(tensor), ncclUint8,
                                       static_cast<int>(opts.rootRank), comm, stream),
                         "ncclBroadcast", comm);
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Reduce(std::vector<at::Tensor>& tensors,
                                                const c10d::ReduceOptions& opts) {
  at::Tensor& tensor = tensors[0];
  const at::Device device = tensor.device();
  CheckCudaDense(tensor, device, "reduce");
  CheckRoot(opts.rootRank, size_, "reduce");
  const ncclDataType_t type = NcclType(tensor.scalar_type(), "reduce");
  const ncclRedOp_t op = NcclOp(opts.reduceOp, tensor.scalar_type(), "reduce");
  auto staged = std::make_shared<StagedOutput>(Stage(tensor, true));
  return Run(c10d::OpType::REDUCE, "cohort:reduce", device, tensors, opts.timeout,
             Describe("reduce", tensor), [&](ncclComm_t comm, cudaStream_t stream) {
               void* data = staged->buffer.data_ptr();
               CheckNccl(ncclReduce(data, data, staged->buffer.numel(), type, op,
                                    static_cast<int>(opts.rootRank), comm, stream),
                         "ncclReduce", comm);
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::AllgatherBase(at::Tensor& output, at::Tensor& input,
                                                       const c10d::AllgatherOptions& opts) {
  const at::Device device = input.device();
  CheckCudaDense(input, device, "allgather_into_tensor");
  CheckCudaDense(output, device, "allgather_into_tensor");
  CheckSameDtype(input, output, "allgather_into_tensor");
  TORCH_CHECK(output.numel() == input.numel() * size_, "cohort: allgather_into_tensor: the output ",
              DescribeTensor(output), " must have ", size_, " times the input's elements");
  at::Tensor source = input.contiguous();
  auto staged = std::make_shared<StagedOutput>(Stage(output, false));
  return Run(c10d::OpType::_ALLGATHER_BASE, "cohort:all_gather_into_tensor", device, {output},
             opts.timeout, Describe("allgather_into_tensor", input),
             [&](ncclComm_t comm, cudaStream_t stream) {
               CheckNccl(ncclAllGather(source.data_ptr(), staged->buffer.data_ptr(), Bytes(source),
                                       ncclUint8, comm, stream),
                         "ncclAllGather", comm);
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                                   std::vector<at::Tensor>& inputs,
                                                   const c10d::AllgatherOptions& opts) {
  CheckSingle(inputs, "allgather");
  TORCH_CHECK(outputs.size() == 1 && static_cast<int>(outputs[0].size()) == size_,
              "cohort: allgather takes one list of ", size_, " output tensors (one per rank)");
  const at::Tensor& input = inputs[0];
  const at::Device device = input.device();
  CheckCudaDense(input, device, "allgather");
  for (const at::Tensor& output : outputs[0]) {
    CheckCudaDense(output, device, "allgather");
    CheckSameDtype(input, output, "allgather");
  }
  at::Tensor source = input.contiguous();
  std::vector<StagedOutput> staged;
  for (const at::Tensor& output : outputs[0]) staged.push_back(Stage(output, false));
  // A broadcast from each rank: handles equal and uneven sizes alike, without a flat buffer.
  return Run(c10d::OpType::ALLGATHER, "cohort:all_gather", device, outputs[0], opts.timeout,
             Describe("allgather", input), [&](ncclComm_t comm, cudaStream_t stream) {
               for (int r = 0; r < size_; ++r) {
                 const void* send = r == rank_ ? source.data_ptr() : nullptr;
                 CheckNccl(ncclBroadcast(send, staged[r].buffer.data_ptr(),
                                         Bytes(staged[r].buffer), ncclUint8, r, comm, stream),
                           "ncclBroadcast", comm);
               }
             },
             [&] {
               for (auto& part : staged) part.CopyBack();
             });
}

c10::intrusive_ptr<c10d::Work> NcclPath::AllgatherCoalesced(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  TORCH_CHECK(static_cast<int>(outputs.size()) == size_, "cohort: allgather_coalesced: expected ",
              size_, " output lists");
  TORCH_CHECK(!inputs.empty(), "cohort: allgather_coalesced: got no inputs");
  const at::Device device = inputs[0].device();
  std::vector<at::Tensor> sources;
  std::vector<at::Tensor> flat_outputs;
  std::vector<StagedOutput> staged;
  for (const at::Tensor& input : inputs) {
    CheckCudaDense(input, device, "allgather_coalesced");
    sources.push_back(input.contiguous());
  }
  for (int r = 0; r < size_; ++r) {
    TORCH_CHECK(outputs[r].size() == inputs.size(), "cohort: allgather_coalesced: output list ",
                r, " has ", outputs[r].size(), " tensors for ", inputs.size(), " inputs");
    for (size_t i = 0; i < inputs.size(); ++i) {
      CheckCudaDense(outputs[r][i], device, "allgather_coalesced");
      TORCH_CHECK(Bytes(outputs[r][i]) == Bytes(inputs[i]),
                  "cohort: allgather_coalesced: output ", r, "/", i, " does not match input ", i);
      flat_outputs.push_back(outputs[r][i]);
      staged.push_back(Stage(outputs[r][i], false));
    }
  }
  return Run(c10d::OpType::ALLGATHER_COALESCED, "cohort:all_gather_coalesced", device,
             flat_outputs, opts.timeout, Describe("allgather_coalesced", inputs[0]),
             [&](ncclComm_t comm, cudaStream_t stream) {
               for (int r = 0; r < size_; ++r) {
                 for (size_t i = 0; i < inputs.size(); ++i) {
                   const void* send = r == rank_ ? sources[i].data_ptr() : nullptr;
                   auto& target = staged[r * inputs.size() + i];
                   CheckNccl(ncclBroadcast(send, target.buffer.data_ptr(), Bytes(target.buffer),
                                           ncclUint8, r, comm, stream),
                             "ncclBroadcast", comm);
                 }
               }
             },
             [&] {
               for (auto& part : staged) part.CopyBack();
             });
}

c10::intrusive_ptr<c10d::Work> NcclPath::AllgatherIntoTensorCoalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  TORCH_CHECK(!inputs.empty() && outputs.size() == inputs.size(),
              "cohort: allgather_into_tensor_coalesced: ", outputs.size(), " outputs for ",
              inputs.size(), " inputs");
  const at::Device device = inputs[0].device();
  std::vector<at::Tensor> sources;
  std::vector<StagedOutput> staged;
  for (size_t i = 0; i < inputs.size(); ++i) {
    CheckCudaDense(inputs[i], device, "allgather_into_tensor_coalesced");
    CheckCudaDense(outputs[i], device, "allgather_into_tensor_coalesced");
    TORCH_CHECK(Bytes(outputs[i]) == Bytes(inputs[i]) * size_,
                "cohort: allgather_into_tensor_coalesced: output ", i, " must be ", size_,
                " times input ", i);
    sources.push_back(inputs[i].contiguous());
    staged.push_back(Stage(outputs[i], false));
  }
  return Run(c10d::OpType::_ALLGATHER_BASE, "cohort:all_gather_into_tensor_coalesced", device,
             outputs, opts.timeout, Describe("allgather_into_tensor_coalesced", inputs[0]),
             [&](ncclComm_t comm, cudaStream_t stream) {
               for (size_t i = 0; i < sources.size(); ++i) {
                 CheckNccl(ncclAllGather(sources[i].data_ptr(), staged[i].buffer.data_ptr(),
                                         Bytes(sources[i]), ncclUint8, comm, stream),
                           "ncclAllGather", comm);
               }
             },
             [&] {
               for (auto& part : staged) part.CopyBack();
             });
}

c10::intrusive_ptr<c10d::Work> NcclPath::ReduceScatterBase(at::Tensor& output, at::Tensor& input,
                                                           const c10d::ReduceScatterOptions& opts) {
  const at::Device device = input.device();
  CheckCudaDense(input, device, "reduce_scatter_tensor");
  CheckCudaDense(output, device, "reduce_scatter_tensor");
  CheckSameDtype(input, output, "reduce_scatter_tensor");
  TORCH_CHECK(input.numel() == output.numel() * size_, "cohort: reduce_scatter_tensor: the input ",
              DescribeTensor(input), " must have ", size_, " times the output's elements");
  const ncclDataType_t type = NcclType(input.scalar_type(), "reduce_scatter_tensor");
  const ncclRedOp_t op = NcclOp(opts.reduceOp, input.scalar_type(), "reduce_scatter_tensor");
  at::Tensor source = input.contiguous();
  auto staged = std::make_shared<StagedOutput>(Stage(output, false));
  return Run(c10d::OpType::_REDUCE_SCATTER_BASE, "cohort:reduce_scatter_tensor", device, {output},
             opts.timeout, Describe("reduce_scatter_tensor", input),
             [&](ncclComm_t comm, cudaStream_t stream) {
               CheckNccl(ncclReduceScatter(source.data_ptr(), staged->buffer.data_ptr(),
                                           output.numel(), type, op, comm, stream),
                         "ncclReduceScatter", comm);
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::ReduceScatterTensorCoalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  TORCH_CHECK(!inputs.empty() && outputs.size() == inputs.size(),
              "cohort: reduce_scatter_tensor_coalesced: ", outputs.size(), " outputs for ",
              inputs.size(), " inputs");
  const at::Device device = inputs[0].device();
  std::vector<at::Tensor> sources;
  std::vector<StagedOutput> staged;
  for (size_t i = 0; i < inputs.size(); ++i) {
    CheckCudaDense(inputs[i], device, "reduce_scatter_tensor_coalesced");
    CheckCudaDense(outputs[i], device, "reduce_scatter_tensor_coalesced");
    CheckSameDtype(inputs[i], outputs[i], "reduce_scatter_tensor_coalesced");
    TORCH_CHECK(inputs[i].numel() == outputs[i].numel() * size_,
                "cohort: reduce_scatter_tensor_coalesced: input ", i, " must be ", size_,
                " times output ", i);
    sources.push_back(inputs[i].contiguous());
    staged.push_back(Stage(outputs[i], false));
  }
  return Run(c10d::OpType::_REDUCE_SCATTER_BASE, "cohort:reduce_scatter_tensor_coalesced", device,
             outputs, opts.timeout, Describe("reduce_scatter_tensor_coalesced", inputs[0]),
             [&](ncclComm_t comm, cudaStream_t stream) {
               for (size_t i = 0; i < sources.size(); ++i) {
                 const auto type = NcclType(sources[i].scalar_type(), "reduce_scatter");
                 const auto op = NcclOp(opts.reduceOp, sources[i].scalar_type(), "reduce_scatter");
                 CheckNccl(ncclReduceScatter(sources[i].data_ptr(), staged[i].buffer.data_ptr(),
                                             outputs[i].numel(), type, op, comm, stream),
                           "ncclReduceScatter", comm);
               }
             },
             [&] {
               for (auto& part : staged) part.CopyBack();
             });
}

c10::intrusive_ptr<c10d::Work> NcclPath::ReduceScatter(std::vector<at::Tensor>& outputs,
                                                       std::vector<std::vector<at::Tensor>>& inputs,
                                                       const c10d::ReduceScatterOptions& opts) {
  CheckSingle(outputs, "reduce_scatter");
  TORCH_CHECK(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_,
              "cohort: reduce_scatter takes one list of ", size_, " input tensors");
  at::Tensor& output = outputs[0];
  const at::Device device = output.device();
  CheckCudaDense(output, device, "reduce_scatter");
  std::vector<at::Tensor> sources;
  for (const at::Tensor& input : inputs[0]) {
    CheckCudaDense(input, device, "reduce_scatter");
    CheckSameDtype(output, input, "reduce_scatter");
    sources.push_back(input.contiguous());
  }
  TORCH_CHECK(sources[rank_].numel() == output.numel(), "cohort: reduce_scatter: input ", rank_,
              " does not match the output ", DescribeTensor(output));
  const ncclDataType_t type = NcclType(output.scalar_type(), "reduce_scatter");
  const ncclRedOp_t op = NcclOp(opts.reduceOp, output.scalar_type(), "reduce_scatter");
  auto staged = std::make_shared<StagedOutput>(Stage(output, false));
  // A reduce to each rank in turn: equal and uneven blocks alike.
  return Run(c10d::OpType::REDUCE_SCATTER, "cohort:reduce_scatter", device, outputs, opts.timeout,
             Describe("reduce_scatter", output), [&](ncclComm_t comm, cudaStream_t stream) {
               for (int r = 0; r < size_; ++r) {
                 void* receive = r == rank_ ? staged->buffer.data_ptr() : nullptr;
                 CheckNccl(ncclReduce(sources[r].data_ptr(), receive, sources[r].numel(), type, op,
                                      r, comm, stream),
                           "ncclReduce", comm);
               }
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::AlltoallBase(at::Tensor& output, at::Tensor& input,
                                                      std::vector<int64_t>& output_splits,
                                                      std::vector<int64_t>& input_splits,
                                                      const c10d::AllToAllOptions& opts) {
  const at::Device device = input.device();
  CheckCudaDense(input, device, "alltoall_base");
  CheckCudaDense(output, device, "alltoall_base");
  CheckSameDtype(input, output, "alltoall_base");
  auto byte_splits = [&](const std::vector<int64_t>& splits, const at::Tensor& tensor,
                         const char* side) {
    std::vector<size_t> bytes(size_);
    if (splits.empty()) {
      TORCH_CHECK(tensor.numel() % size_ == 0, "cohort: alltoall_base: the ", side,
                  " cannot be split evenly among ", size_, " ranks");
      for (auto& value : bytes) value = Bytes(tensor) / size_;
      return bytes;
    }
    TORCH_CHECK(static_cast<int>(splits.size()) == size_ && tensor.dim() >= 1,
                "cohort: alltoall_base: ", side, " split sizes need one entry per rank");
    int64_t rows = 0;
    for (int64_t split : splits) rows += split;
    TORCH_CHECK(rows == tensor.size(0), "cohort: alltoall_base: ", side, " split sizes add up to ",
                rows, " rows, but the ", side, " tensor has ", tensor.size(0));
    const size_t row = tensor.size(0) == 0 ? 0 : Bytes(tensor) / tensor.size(0);
    for (int r = 0; r < size_; ++r) bytes[r] = splits[r] * row;
    return bytes;
  };
  std::vector<size_t> send = byte_splits(input_splits, input, "input");
  std::vector<size_t> receive = byte_splits(output_splits, output, "output");
  at::Tensor source = input.contiguous();
  auto staged = std::make_shared<StagedOutput>(Stage(output, false));
  return Run(c10d::OpType::ALLTOALL_BASE, "cohort:all_to_all", device, {output}, opts.timeout,
             Describe("alltoall_base", input), [&](ncclComm_t comm, cudaStream_t stream) {
               auto* in = static_cast<char*>(source.data_ptr());
               auto* out = static_cast<char*>(staged->buffer.data_ptr());
               for (int r = 0; r < size_; ++r) {
                 CheckNccl(ncclSend(in, send[r], ncclUint8, r, comm, stream), "ncclSend", comm);
                 CheckNccl(ncclRecv(out, receive[r], ncclUint8, r, comm, stream), "ncclRecv", comm);
                 in += send[r];
                 out += receive[r];
               }
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Alltoall(std::vector<at::Tensor>& outputs,
                                                  std::vector<at::Tensor>& inputs,
                                                  const c10d::AllToAllOptions& opts) {
  TORCH_CHECK(static_cast<int>(inputs.size()) == size_ && static_cast<int>(outputs.size()) == size_,
              "cohort: alltoall takes ", size_, " input and output tensors");
  const at::Device device = inputs[0].device();
  std::vector<at::Tensor> sources;
  std::vector<StagedOutput> staged;
  for (int r = 0; r < size_; ++r) {
    CheckCudaDense(inputs[r], device, "alltoall");
    CheckCudaDense(outputs[r], device, "alltoall");
    CheckSameDtype(inputs[0], inputs[r], "alltoall");
    CheckSameDtype(inputs[0], outputs[r], "alltoall");
    sources.push_back(inputs[r].contiguous());
    staged.push_back(Stage(outputs[r], false));
  }
  return Run(c10d::OpType::ALLTOALL, "cohort:all_to_all", device, outputs, opts.timeout,
             Describe("alltoall", inputs[0]), [&](ncclComm_t comm, cudaStream_t stream) {
               for (int r = 0; r < size_; ++r) {
                 CheckNccl(ncclSend(sources[r].data_ptr(), Bytes(sources[r]), ncclUint8, r, comm,
                                    stream),
                           "ncclSend", comm);
                 CheckNccl(ncclRecv(staged[r].buffer.data_ptr(), Bytes(staged[r].buffer),
                                    ncclUint8, r, comm, stream),
                           "ncclRecv", comm);
               }
             },
             [&] {
               for (auto& part : staged) part.CopyBack();
             });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Gather(std::vector<std::vector<at::Tensor>>& outputs,
                                                std::vector<at::Tensor>& inputs,
                                                const c10d::GatherOptions& opts) {
  CheckSingle(inputs, "gather");
  CheckRoot(opts.rootRank, size_, "gather");
  const at::Tensor& input = inputs[0];
  const at::Device device = input.device();
  CheckCudaDense(input, device, "gather");
  const int root = static_cast<int>(opts.rootRank);
  std::vector<StagedOutput> staged;
  std::vector<at::Tensor> results;
  if (rank_ == root) {
    TORCH_CHECK(outputs.size() == 1 && static_cast<int>(outputs[0].size()) == size_,
                "cohort: gather: the root takes one list of ", size_, " output tensors");
    for (const at::Tensor& output : outputs[0]) {
      CheckCudaDense(output, device, "gather");
      CheckSameDtype(input, output, "gather");
      TORCH_CHECK(output.numel() == input.numel(), "cohort: gather: output ",
                  DescribeTensor(output), " does not match the input ", DescribeTensor(input));
      staged.push_back(Stage(output, false));
    }
    results = outputs[0];
  }
  at::Tensor source = input.contiguous();
  return Run(c10d::OpType::GATHER, "cohort:gather", device, results, opts.timeout,
             Describe("gather", input), [&](ncclComm_t comm, cudaStream_t stream) {
               if (rank_ == root) {
                 for (int r = 0; r < size_; ++r) {
                   if (r == rank_) {
                     staged[r].buffer.copy_(source, /*non_blocking=*/true);
                   } else {
                     CheckNccl(ncclRecv(staged[r].buffer.data_ptr(), Bytes(source), ncclUint8, r,
                                        comm, stream),
                               "ncclRecv", comm);
                   }
                 }
               } else {
                 CheckNccl(ncclSend(source.data_ptr(), Bytes(source), ncclUint8, root, comm,
                                    stream),
                           "ncclSend", comm);
               }
             },
             [&] {
               for (auto& part : staged) part.CopyBack();
             });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Scatter(std::vector<at::Tensor>& outputs,
                                                 std::vector<std::vector<at::Tensor>>& inputs,
                                                 const c10d::ScatterOptions& opts) {
  CheckSingle(outputs, "scatter");
  CheckRoot(opts.rootRank, size_, "scatter");
  at::Tensor& output = outputs[0];
  const at::Device device = output.device();
  CheckCudaDense(output, device, "scatter");
  const int root = static_cast<int>(opts.rootRank);
  std::vector<at::Tensor> sources;
  if (rank_ == root) {
    TORCH_CHECK(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_,
                "cohort: scatter: the root takes one list of ", size_, " input tensors");
    for (const at::Tensor& input : inputs[0]) {
      CheckCudaDense(input, device, "scatter");
      CheckSameDtype(output, input, "scatter");
      TORCH_CHECK(input.numel() == output.numel(), "cohort: scatter: input ",
                  DescribeTensor(input), " does not match the output ", DescribeTensor(output));
      sources.push_back(input.contiguous());
    }
  }
  auto staged = std::make_shared<StagedOutput>(Stage(output, false));
  return Run(c10d::OpType::SCATTER, "cohort:scatter", device, outputs, opts.timeout,
             Describe("scatter", output), [&](ncclComm_t comm, cudaStream_t stream) {
               if (rank_ == root) {
                 for (int r = 0; r < size_; ++r) {
                   if (r == rank_) {
                     staged->buffer.copy_(sources[r], /*non_blocking=*/true);
                   } else {
                     CheckNccl(ncclSend(sources[r].data_ptr(), Bytes(sources[r]), ncclUint8, r,
                                        comm, stream),
                               "ncclSend", comm);
                   }
                 }
               } else {
                 CheckNccl(ncclRecv(staged->buffer.data_ptr(), Bytes(staged->buffer), ncclUint8,
                                    root, comm, stream),
                           "ncclRecv", comm);
               }
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Send(std::vector<at::Tensor>& tensors, int dst_rank,
                                              int /*tag: NCCL orders messages per peer*/) {
  const at::Tensor& tensor = tensors[0];
  const at::Device device = tensor.device();
  CheckCudaDense(tensor, device, "send");
  at::Tensor source = tensor.contiguous();
  return Run(c10d::OpType::SEND, "cohort:send", device, tensors, c10d::kUnsetTimeout,
             Describe("send", tensor), [&](ncclComm_t comm, cudaStream_t stream) {
               CheckNccl(ncclSend(source.data_ptr(), Bytes(source), ncclUint8, dst_rank, comm,
                                  stream),
                         "ncclSend", comm);
             },
             [] {});
}

c10::intrusive_ptr<c10d::Work> NcclPath::Recv(std::vector<at::Tensor>& tensors, int src_rank,
                                              int /*tag*/) {
  at::Tensor& tensor = tensors[0];
  const at::Device device = tensor.device();
  CheckCudaDense(tensor, device, "recv");
  auto staged = std::make_shared<StagedOutput>(Stage(tensor, false));
  return Run(c10d::OpType::RECV, "cohort:recv", device, tensors, c10d::kUnsetTimeout,
             Describe("recv", tensor), [&](ncclComm_t comm, cudaStream_t stream) {
               CheckNccl(ncclRecv(staged->buffer.data_ptr(), Bytes(staged->buffer), ncclUint8,
                                  src_rank, comm, stream),
                         "ncclRecv", comm);
             },
             [&] { staged->CopyBack(); });
}

c10::intrusive_ptr<c10d::Work> NcclPath::Group(
    const std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  // Every member ran on its device's current stream in issue order: the group is done when the
  // last one is (an error of any member is sticky on the communicator they share).
  TORCH_CHECK(!works.empty(), "cohort: empty coalescing group");
  for (const auto& work : works) {
    TORCH_CHECK(dynamic_cast<NcclWork*>(work.get()) != nullptr,
                "cohort: cannot coalesce CPU and GPU operations in one group");
  }
  return works.back();
}

}  // namespace cohort::torch_ext
