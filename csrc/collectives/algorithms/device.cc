// Algorithms for CUDA buffers inside one host, and for any CUDA collective through host memory
// (device_runtime.h says how device steps and host parts meet):
//
//   device_group   every rank on one host, in a device group (NCCL): the collective is one
//                  device-group call on the caller's stream, behind a gate the host part opens
//                  once the ranks' fingerprints matched.
//   device_staged  anything else: the inputs are copied to pinned host memory on the stream, the
//                  host part runs the host algorithm the tuner (or the communicator's forced one)
//                  picks for the same call on that memory, and the results go back on the stream
//                  behind a gate. Ranks may share a GPU; no NCCL is needed.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "collectives/algorithms/registry.h"
#include "collectives/device_runtime.h"
#include "common/status.h"

namespace cohort {
namespace {

bool Prepared(const Tuning& tuning) {
  return tuning.device != nullptr && tuning.device->prepared.load(std::memory_order_acquire);
}

// The device-group call that is this whole collective (one host).
device::DeviceCall WholeCall(const OpArgs& args) {
  device::DeviceCall call;
  call.op = args.op;
  call.send = args.input;
  call.recv = args.output;
  call.count = args.count;
  call.type = args.dtype;
  call.reduce = args.reduce_op;
  call.root = args.root < 0 ? 0 : args.root;
  return call;
}

bool GroupServes(const OpArgs& args, const Tuning& tuning) {
  if (!Prepared(tuning) || !tuning.device->groups || tuning.multi_host()) return false;
  if (!args.counts.empty() || !args.displacements.empty()) return false;
  // Whether the group serves the op, type, reduction and root; the buffers are checked when the
  // call is enqueued (the tuner is asked without them too).
  static char placeholder;
  device::DeviceCall call = WholeCall(args);
  call.send = &placeholder;
  call.recv = &placeholder;
  return tuning.device->group->CheckSupported(call).ok();
}

double GroupCost(const OpArgs& args, const Tuning& tuning) {
  // A host round for the fingerprints, then the device group (NVLink-class bandwidth).
  return tuning.intra.latency_seconds + 10e-6 +
         static_cast<double>(OpBytes(args, tuning.size())) / 100e9;
}

absl::Status GroupEnqueue(DevicePlan& plan) {
  COHORT_RETURN_IF_ERROR(plan.AddGate().status());
  return plan.Call(WholeCall(plan.args()));
}

absl::Status GroupRun(OpContext& context) {
  DevicePlan& plan = *context.device_plan();
  COHORT_RETURN_IF_ERROR(CheckFingerprintsOnHost(context));
  plan.Open(0);
  return context.WaitAll();
}

// ---------------------------------------------------------------------------------------------
// Staged

// The arguments of the same call on host memory.
OpArgs HostArgs(const OpArgs& args) {
  OpArgs host = args;
  host.memory = MemoryKind::kHost;
  host.stream = nullptr;
  return host;
}

// The host algorithm a staged call runs: the communicator's forced one when it serves host
// memory, else the tuner's.
absl::StatusOr<const Algorithm*> HostAlgorithm(const OpArgs& host, const Tuning& tuning,
                                               const std::string& forced, double* cost) {
  std::string name = forced;
  for (const Algorithm& algorithm : Algorithms()) {
    if (algorithm.name == forced && !algorithm.ServesMemory(MemoryKind::kHost)) name.clear();
  }
  return SelectAlgorithm(host, tuning, name, cost);
}

bool StagedServes(const OpArgs& args, const Tuning& tuning) {
  return Prepared(tuning) && args.op != OpType::kBarrier;
}

double StagedCost(const OpArgs& args, const Tuning& tuning) {
  // Both copies over PCIe (about 12 GB/s each way), then the host algorithm.
  double cost = 2 * static_cast<double>(OpBytes(args, tuning.size())) / 12e9 + 20e-6;
  double host = 0;
  if (HostAlgorithm(HostArgs(args), tuning, "", &host).ok()) cost += host;
  return cost;
}

bool Overlap(const char* a, size_t a_bytes, const char* b, size_t b_bytes) {
  return a_bytes > 0 && b_bytes > 0 && a < b + b_bytes && b < a + a_bytes;
}

absl::Status StagedEnqueue(DevicePlan& plan) {
  const OpArgs& args = plan.args();
  device::Stream& stream = plan.stream();
  const size_t in_bytes = InputBytes(args, plan.rank(), plan.size());
  const size_t out_bytes = OutputBytes(args, plan.rank(), plan.size());
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  OpArgs host = HostArgs(args);
  // Staging mirrors the buffers: where input and output overlap (in place), one region
  // covering both, so in-place conventions (an allgather's own block inside its output) hold.
  char* host_input = nullptr;
  char* host_output = nullptr;
  const bool overlap = Overlap(input, in_bytes, output, out_bytes);
  // Where a receive layout leaves gaps the algorithm does not write, the output is read too,
  // so that the copy back leaves them as they were.
  const bool read_output = args.op == OpType::kAlltoall && !args.recv_displacements.empty();
  if (overlap) {
    const char* low = std::min<const char*>(input, output);
    const char* high = std::max<const char*>(input + in_bytes, output + out_bytes);
    COHORT_ASSIGN_OR_RETURN(char* staging, plan.Staging(high - low));
    COHORT_RETURN_IF_ERROR(stream.CopyAsync(staging, low, high - low));
    host_input = staging + (input - low);
    host_output = staging + (output - low);
  } else {
    if (in_bytes > 0) {
      COHORT_ASSIGN_OR_RETURN(host_input, plan.Staging(in_bytes));
      COHORT_RETURN_IF_ERROR(stream.CopyAsync(host_input, input, in_bytes));
    }
    if (out_bytes > 0) {
      COHORT_ASSIGN_OR_RETURN(host_output, plan.Staging(out_bytes));
      if (read_output) COHORT_RETURN_IF_ERROR(stream.CopyAsync(host_output, output, out_bytes));
    }
  }
  if (args.input == args.output) {  // in place where only one side is used on this rank
    if (host_input == nullptr) host_input = host_output;
    if (host_output == nullptr) host_output = host_input;
  }
  COHORT_RETURN_IF_ERROR(plan.AddEvent().status());  // 0: the host copies are in place
  COHORT_RETURN_IF_ERROR(plan.AddGate().status());   // 0: the host algorithm is done
  if (out_bytes > 0) COHORT_RETURN_IF_ERROR(stream.CopyAsync(output, host_output, out_bytes));
  host.input = host_input;
  host.output = host_output;
  double cost = 0;
  COHORT_ASSIGN_OR_RETURN(const Algorithm* algorithm,
                          HostAlgorithm(host, plan.tuning(), plan.host_algorithm(), &cost));
  plan.SetHostRun(algorithm, std::move(host));
  return absl::OkStatus();
}

absl::Status StagedRun(OpContext& context) {
  DevicePlan& plan = *context.device_plan();
  COHORT_RETURN_IF_ERROR(
      plan.WaitEvent(context, 0, "the copy of the operation's buffers to host memory"));
  COHORT_RETURN_IF_ERROR(context.RunNested(plan.host_args(), [&](OpContext& host) {
    return plan.host_run()->run(host);
  }));
  plan.Open(0);
  return absl::OkStatus();
}

}  // namespace

void RegisterDeviceAlgorithms(std::vector<Algorithm>& registry) {
  Algorithm group{"device_group",
                  {OpType::kAllreduce, OpType::kBroadcast, OpType::kReduce, OpType::kAllgather,
                   OpType::kReduceScatter},
                  GroupServes,
                  GroupCost,
                  GroupRun};
  group.memory = {MemoryKind::kCuda};
  group.enqueue = GroupEnqueue;
  registry.push_back(std::move(group));

  Algorithm staged{"device_staged",
                   {OpType::kAllreduce, OpType::kBroadcast, OpType::kReduce, OpType::kAllgather,
                    OpType::kReduceScatter, OpType::kAlltoall, OpType::kGather, OpType::kScatter},
                   StagedServes,
                   StagedCost,
                   StagedRun};
  staged.memory = {MemoryKind::kCuda};
  staged.enqueue = StagedEnqueue;
  registry.push_back(std::move(staged));
}

}  // namespace cohort
