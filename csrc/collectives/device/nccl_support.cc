#include "collectives/device/nccl_support.h"

#include "absl/strings/str_cat.h"
#include "collectives/reduce.h"

namespace cohort::device {

absl::StatusOr<NcclReduction> NcclReductionFor(DataType type, ReduceOp op, const std::string& who) {
  absl::Status supported = CheckReduceSupported(type, op);
  if (!supported.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": ", supported.message()));
  }
  auto no_bitwise = [&] {
    return absl::UnimplementedError(absl::StrCat(
        who, ": NCCL has no ", ReduceOpName(op), " reduction for ", DataTypeName(type),
        " (it reduces with sum, prod, min, max and avg); move the data to host memory for "
        "bitwise reductions"));
  };
  if (type == DataType::kBool) {
    switch (op) {
      case ReduceOp::kMin:
      case ReduceOp::kBand:
        return NcclReduction::kMin;
      case ReduceOp::kMax:
      case ReduceOp::kBor:
        return NcclReduction::kMax;
      default:
        return no_bitwise();
    }
  }
  switch (op) {
    case ReduceOp::kSum:
      return NcclReduction::kSum;
    case ReduceOp::kProd:
      return NcclReduction::kProd;
    case ReduceOp::kMin:
      return NcclReduction::kMin;
    case ReduceOp::kMax:
      return NcclReduction::kMax;
    case ReduceOp::kAvg:
      return IsFloatingPoint(type) ? NcclReduction::kAvg : NcclReduction::kSumThenDivide;
    case ReduceOp::kBand:
    case ReduceOp::kBor:
    case ReduceOp::kBxor:
      return no_bitwise();
  }
  return absl::InvalidArgumentError(absl::StrCat(who, ": unknown reduce op"));
}

}  // namespace cohort::device
