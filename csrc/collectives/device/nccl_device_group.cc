// States of an NcclDeviceGroup: healthy (failure_ OK) -> failed (failure_ set by an NCCL error
// from a call or from ncclCommGetAsyncError, or by Abort) -> aborted (ncclCommAbort called once,
// aborted_). A failed group refuses every call with failure_; the engine aborts it. The
// communicator is non-blocking, so any call may return ncclInProgress: the group then polls
// ncclCommGetAsyncError (holding mutex_, for at most the timeout, giving up when Abort sets
// aborting_) before recording the event, so an event never precedes the enqueued kernels.
#include "collectives/device/nccl_device_group.h"

#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "collectives/device/nccl_support.h"
#include "collectives/device/unique_id.h"

namespace cohort::device {
namespace {

absl::StatusCode CodeFor(ncclResult_t result) {
  switch (result) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::StatusCode::kInvalidArgument;
    case ncclRemoteError:  // a peer failed or the network did
    case ncclSystemError:  // a socket, a file, an allocation of the system
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string NcclReason(const NcclApi& api, ncclResult_t result, ncclComm_t comm) {
  std::string reason =
      absl::StrCat(NcclResultName(result), " (", api.get_error_string(result), ")");
  const char* last = api.get_last_error(comm);
  if (last != nullptr && *last != '\0') absl::StrAppend(&reason, ": ", last);
  return reason;
}

// The sleeps between polls: short first (most waits end within microseconds), at most 1 ms.
void Nap(absl::Duration& nap) {
  absl::SleepFor(nap);
  nap = std::min(nap * 2, absl::Milliseconds(1));
}

// The state of a communicator in ncclInProgress once it left it, or ncclInProgress when the
// deadline passed or `stop` was set first.
ncclResult_t PollWhileInProgress(const NcclApi& api, ncclComm_t comm, absl::Time deadline,
                                 const std::atomic<bool>* stop) {
  absl::Duration nap = absl::Microseconds(5);
  while (true) {
    ncclResult_t state = ncclInProgress;
    const ncclResult_t queried = api.comm_get_async_error(comm, &state);
    if (queried != ncclSuccess) return queried;
    if (state != ncclInProgress) return state;
    if (absl::Now() > deadline || (stop != nullptr && stop->load())) return ncclInProgress;
    Nap(nap);
  }
}

// Makes the group's device current for a scope, through the table (so tests need no GPU).
class ApiDeviceGuard {
 public:
  ApiDeviceGuard(const NcclApi& api, int device) : api_(api) {
    int current = -1;
    if (api_.get_device(&current) == cudaSuccess && current == device) return;
    if (api_.set_device(device) == cudaSuccess) previous_ = current;
  }
  ~ApiDeviceGuard() {
    if (previous_ >= 0) api_.set_device(previous_);
  }
  ApiDeviceGuard(const ApiDeviceGuard&) = delete;
  ApiDeviceGuard& operator=(const ApiDeviceGuard&) = delete;

 private:
  const NcclApi& api_;
  int previous_ = -1;
};

absl::StatusOr<ncclDataType_t> NcclType(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kFloat16:
      return ncclFloat16;
    case DataType::kBFloat16:
      return ncclBfloat16;
    case DataType::kInt8:
      return ncclInt8;
    case DataType::kUInt8:
      return ncclUint8;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt64:
      return ncclInt64;
    case DataType::kBool:
      return ncclUint8;  // torch's bool is one byte, 0 or 1
  }
  return absl::InvalidArgumentError("unknown data type");
}

ncclRedOp_t NcclOp(NcclReduction reduction) {
  switch (reduction) {
    case NcclReduction::kSum:
    case NcclReduction::kSumThenDivide:
      return ncclSum;
    case NcclReduction::kProd:
      return ncclProd;
    case NcclReduction::kMin:
      return ncclMin;
    case NcclReduction::kMax:
      return ncclMax;
    case NcclReduction::kAvg:
      return ncclAvg;
  }
  return ncclSum;
}

bool Reduces(OpType op) {
  return op == OpType::kAllreduce || op == OpType::kReduceScatter || op == OpType::kReduce;
}

}  // namespace

NcclDeviceGroup::NcclDeviceGroup(const NcclApi* api, ncclComm_t comm, int rank, int size,
                                 NcclDeviceGroupOptions options, std::string who)
    : api_(api),
      comm_(comm),
      rank_(rank),
      size_(size),
      options_(std::move(options)),
      who_(std::move(who)) {}

absl::StatusOr<std::unique_ptr<NcclDeviceGroup>> NcclDeviceGroup::Create(
    Bootstrap& bootstrap, const std::string& key, int rank, int size,
    NcclDeviceGroupOptions options) {
  const std::string who =
      absl::StrCat(options.label, options.label.empty() ? "" : ": ", "nccl device group rank ",
                   rank, "/", size, " (cuda:", options.device, ")");
  const NcclApi* api = options.api;
  if (api == nullptr) {
    absl::StatusOr<const NcclApi*> loaded = LoadNcclApi();
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(),
                          absl::StrCat(who, ": ", loaded.status().message()));
    }
    api = *loaded;
  }
  const absl::Time deadline = absl::Now() + options.timeout;

  absl::StatusOr<std::string> id_bytes = ShareUniqueId(
      bootstrap, key, rank, size, options.timeout, sizeof(ncclUniqueId), "nccl device group",
      [&]() -> absl::StatusOr<std::string> {
        ncclUniqueId id;
        const ncclResult_t result = api->get_unique_id(&id);
        if (result != ncclSuccess) {
          return absl::Status(CodeFor(result), absl::StrCat("ncclGetUniqueId failed: ",
                                                            NcclReason(*api, result, nullptr)));
        }
        return std::string(reinterpret_cast<const char*>(&id), sizeof(id));
      });
  if (!id_bytes.ok()) {
    return absl::Status(id_bytes.status().code(),
                        absl::StrCat(options.label, options.label.empty() ? "" : ": ",
                                     id_bytes.status().message()));
  }
  ncclUniqueId id;
  std::memcpy(&id, id_bytes->data(), sizeof(id));

  ApiDeviceGuard guard(*api, options.device);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // set-up and calls return ncclInProgress instead of blocking
  ncclComm_t comm = nullptr;
  ncclResult_t result = api->comm_init_rank_config(&comm, size, id, rank, &config);
  if (result == ncclInProgress && comm != nullptr) {
    result = PollWhileInProgress(*api, comm, deadline, nullptr);
    if (result == ncclInProgress) {
      api->comm_abort(comm);
      return absl::DeadlineExceededError(absl::StrCat(
          who, ": NCCL communicator set-up (ncclCommInitRankConfig) did not finish within ",
          absl::FormatDuration(options.timeout),
          "; a rank of the host may be stuck or gone "
          "(NCCL_DEBUG=INFO shows where NCCL waits)"));
    }
  }
  if (result != ncclSuccess) {
    const std::string reason = NcclReason(*api, result, comm);
    if (comm != nullptr) api->comm_abort(comm);
    return absl::Status(CodeFor(result),
                        absl::StrCat(who, ": ncclCommInitRankConfig failed: ", reason));
  }
  return std::unique_ptr<NcclDeviceGroup>(
      new NcclDeviceGroup(api, comm, rank, size, std::move(options), who));
}

NcclDeviceGroup::~NcclDeviceGroup() {
  absl::MutexLock lock(&mutex_);
  if (aborted_ || comm_ == nullptr) return;
  ApiDeviceGuard guard(*api_, options_.device);
  if (failure_.ok()) {
    ncclResult_t result = api_->comm_finalize(comm_);
    if (result == ncclInProgress) {
      result = PollWhileInProgress(*api_, comm_, absl::Now() + options_.timeout, &aborting_);
    }
    if (result == ncclSuccess) {
      api_->comm_destroy(comm_);
      return;
    }
  }
  api_->comm_abort(comm_);  // failed, or finalizing did not finish: abort frees it
}

absl::Status NcclDeviceGroup::NcclError(ncclResult_t result, const char* call,
                                        const std::string& what) const {
  return absl::Status(CodeFor(result), absl::StrCat(who_, ": ", what, ": ", call,
                                                    " failed: ", NcclReason(*api_, result, comm_)));
}

absl::Status NcclDeviceGroup::WaitWhileInProgress(const char* call, const std::string& what) {
  const ncclResult_t state =
      PollWhileInProgress(*api_, comm_, absl::Now() + options_.timeout, &aborting_);
  if (state == ncclSuccess) return absl::OkStatus();
  if (state != ncclInProgress) return NcclError(state, call, what);
  if (aborting_.load()) {
    return absl::AbortedError(absl::StrCat(who_, ": ", what, ": aborted while NCCL was enqueuing"));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      who_, ": ", what, ": ", call, " stayed in progress for ",
      absl::FormatDuration(options_.timeout), " (NCCL could not enqueue the collective)"));
}

absl::Status NcclDeviceGroup::CheckSupported(const DeviceCall& call) const {
  absl::Status shape = CheckDeviceCallShape(call, rank_, size_, who_);
  if (!shape.ok()) return shape;
  if (!Reduces(call.op)) return absl::OkStatus();
  return NcclReductionFor(call.type, call.reduce,
                          absl::StrCat(who_, ": ", DescribeDeviceCall(call)))
      .status();
}

absl::StatusOr<std::unique_ptr<Event>> NcclDeviceGroup::Enqueue(const DeviceCall& call,
                                                                Stream& stream) {
  absl::Status supported = CheckSupported(call);
  if (!supported.ok()) return supported;
  const std::string what = DescribeDeviceCall(call);
  if (stream.kind() != StreamKind::kCuda) {
    return absl::InvalidArgumentError(absl::StrCat(who_, ": ", what,
                                                   ": NCCL runs on CUDA "
                                                   "streams, not on a ",
                                                   StreamKindName(stream.kind()), " stream"));
  }
  const ncclDataType_t type = *NcclType(call.type);
  NcclReduction reduction = NcclReduction::kSum;
  if (Reduces(call.op)) reduction = *NcclReductionFor(call.type, call.reduce, who_);
  const ncclRedOp_t op = NcclOp(reduction);
  auto* cuda_stream = static_cast<cudaStream_t>(stream.native_handle());

  absl::MutexLock lock(&mutex_);
  if (!failure_.ok()) return failure_;
  ApiDeviceGuard guard(*api_, options_.device);
  const char* name = "";
  ncclResult_t result = ncclSuccess;
  switch (call.op) {
    case OpType::kAllreduce:
      name = "ncclAllReduce";
      result = api_->all_reduce(call.send, call.recv, call.count, type, op, comm_, cuda_stream);
      break;
    case OpType::kReduceScatter:
      name = "ncclReduceScatter";
      result = api_->reduce_scatter(call.send, call.recv, call.count, type, op, comm_, cuda_stream);
      break;
    case OpType::kAllgather:
      name = "ncclAllGather";
      result = api_->all_gather(call.send, call.recv, call.count, type, comm_, cuda_stream);
      break;
    case OpType::kBroadcast:
      name = "ncclBroadcast";
      result =
          api_->broadcast(call.send, call.recv, call.count, type, call.root, comm_, cuda_stream);
      break;
    case OpType::kReduce:
      name = "ncclReduce";
      result =
          api_->reduce(call.send, call.recv, call.count, type, op, call.root, comm_, cuda_stream);
      break;
    default:
      return absl::InternalError(absl::StrCat(who_, ": ", what, ": not a device collective"));
  }
  absl::Status status = result == ncclInProgress ? WaitWhileInProgress(name, what)
                        : result == ncclSuccess  ? absl::OkStatus()
                                                 : NcclError(result, name, what);
  if (!status.ok()) {
    // A bad argument leaves the communicator usable; anything else may not.
    if (status.code() != absl::StatusCode::kInvalidArgument) failure_ = status;
    return status;
  }
  ++calls_;
  if (reduction == NcclReduction::kSumThenDivide &&
      (call.op != OpType::kReduce || rank_ == call.root)) {
    const cudaError_t scaled =
        api_->scale_for_average(call.recv, call.type, call.count, size_, cuda_stream);
    if (scaled != cudaSuccess) {
      failure_ = absl::InternalError(absl::StrCat(
          who_, ": ", what,
          ": the average's division kernel failed to launch: ", cudaGetErrorName(scaled)));
      return failure_;
    }
  }
  absl::StatusOr<std::unique_ptr<Event>> event = stream.Record();
  if (!event.ok()) {
    failure_ = absl::Status(event.status().code(),
                            absl::StrCat(who_, ": ", what, ": ", event.status().message()));
    return failure_;
  }
  return event;
}

absl::Status NcclDeviceGroup::AsyncError() {
  // A call holding the lock is talking to NCCL and sees its errors itself; the poller must not
  // wait behind it (it may poll ncclInProgress for a while).
  if (!mutex_.TryLock()) return absl::OkStatus();
  absl::Status status = AsyncErrorLocked();
  mutex_.Unlock();
  return status;
}

absl::Status NcclDeviceGroup::AsyncErrorLocked() {
  if (!failure_.ok() || aborted_) return failure_;
  ncclResult_t state = ncclSuccess;
  const ncclResult_t queried = api_->comm_get_async_error(comm_, &state);
  if (queried != ncclSuccess) state = queried;
  if (state == ncclSuccess || state == ncclInProgress) return absl::OkStatus();
  failure_ = absl::Status(CodeFor(state), absl::StrCat(who_,
                                                       ": NCCL reported an asynchronous "
                                                       "error: ",
                                                       NcclReason(*api_, state, comm_)));
  return failure_;
}

void NcclDeviceGroup::Abort(const absl::Status& reason) {
  aborting_.store(true);
  absl::MutexLock lock(&mutex_);
  if (failure_.ok()) {
    failure_ = reason.ok() ? absl::AbortedError(absl::StrCat(who_, ": aborted")) : reason;
  }
  if (aborted_) return;
  aborted_ = true;
  ApiDeviceGuard guard(*api_, options_.device);
  api_->comm_abort(comm_);  // kernels waiting on peers return; the communicator is freed
}

}  // namespace cohort::device
