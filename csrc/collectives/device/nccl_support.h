// Which (data type, reduce op) pairs NCCL can serve and how, decided without NCCL's headers:
// NcclDeviceGroup maps calls with it, and the fake device group rejects the same calls by default,
// so make test catches a schedule that would hand NCCL something it cannot do.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "collectives/types.h"

namespace cohort::device {

// NCCL's reduction for a cohort (type, op), in NCCL's terms.
enum class NcclReduction {
  kSum,
  kProd,
  kMin,
  kMax,
  kAvg,            // ncclAvg (floating types)
  kSumThenDivide,  // ncclSum, then cohort's ScaleForAverage kernel (integer avg truncates toward
                   // zero, as on the CPU)
};

// bool travels as uint8 (min and band as ncclMin, max and bor as ncclMax); NCCL has no bitwise
// reductions, so band/bor/bxor on integers and bxor on bool are Unimplemented, as is any pair
// reduce.h rejects (InvalidArgument). `who` prefixes the message.
absl::StatusOr<NcclReduction> NcclReductionFor(DataType type, ReduceOp op, const std::string& who);

}  // namespace cohort::device
