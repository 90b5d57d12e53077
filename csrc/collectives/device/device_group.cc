#include "collectives/device/device_group.h"

#include "absl/strings/str_cat.h"

namespace cohort::device {

std::string DescribeDeviceCall(const DeviceCall& call) {
  std::string text =
      absl::StrCat(OpTypeName(call.op), " of ", call.count, " ", DataTypeName(call.type));
  switch (call.op) {
    case OpType::kAllreduce:
    case OpType::kReduceScatter:
      absl::StrAppend(&text, " (", ReduceOpName(call.reduce), ")");
      break;
    case OpType::kReduce:
      absl::StrAppend(&text, " (", ReduceOpName(call.reduce), ", root ", call.root, ")");
      break;
    case OpType::kBroadcast:
      absl::StrAppend(&text, " (root ", call.root, ")");
      break;
    default:
      break;
  }
  return text;
}

absl::Status CheckDeviceCallShape(const DeviceCall& call, int rank, int size,
                                  const std::string& who) {
  switch (call.op) {
    case OpType::kAllreduce:
    case OpType::kReduceScatter:
    case OpType::kAllgather:
    case OpType::kBroadcast:
    case OpType::kReduce:
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat(who, ": ", OpTypeName(call.op),
                       " is not a device group collective; device groups run "
                       "allreduce, reduce_scatter, allgather, broadcast and reduce"));
  }
  if (static_cast<int>(call.type) >= kNumDataTypes) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": unknown data type ", static_cast<int>(call.type)));
  }
  if ((call.op == OpType::kBroadcast || call.op == OpType::kReduce) &&
      (call.root < 0 || call.root >= size)) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": ", DescribeDeviceCall(call), ": root ",
                                                   call.root,
                                                   " is not a rank of a "
                                                   "group of ",
                                                   size));
  }
  // Broadcast reads `send` on the root only; reduce writes `recv` on the root only.
  const bool needs_send = call.op != OpType::kBroadcast || rank == call.root;
  const bool needs_recv = call.op != OpType::kReduce || rank == call.root;
  if (call.count > 0 &&
      ((needs_send && call.send == nullptr) || (needs_recv && call.recv == nullptr))) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": ", DescribeDeviceCall(call), ": a null buffer"));
  }
  return absl::OkStatus();
}

}  // namespace cohort::device
