// Element types, reduction operations and collective kinds of libcohort, with their names.
// Used by the kernels, the algorithms, the wire fingerprint and every front end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace cohort {

enum class DataType : uint8_t {
  kFloat32 = 0,
  kFloat64 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kInt8 = 4,
  kUInt8 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 8,
};
inline constexpr int kNumDataTypes = 9;

enum class ReduceOp : uint8_t {
  kSum = 0,
  kProd = 1,
  kMin = 2,
  kMax = 3,
  kAvg = 4,
  kBand = 5,
  kBor = 6,
  kBxor = 7,
};
inline constexpr int kNumReduceOps = 8;

enum class OpType : uint8_t {
  kAllreduce = 0,
  kBroadcast = 1,
  kReduce = 2,
  kAllgather = 3,
  kReduceScatter = 4,
  kAlltoall = 5,
  kGather = 6,
  kScatter = 7,
  kBarrier = 8,
  kSend = 9,
  kRecv = 10,
};
inline constexpr int kNumOpTypes = 11;

size_t DataTypeSize(DataType type);
const char* DataTypeName(DataType type);     // "float32", "bfloat16", ...
const char* ReduceOpName(ReduceOp op);       // "sum", "avg", ...
const char* OpTypeName(OpType op);           // "allreduce", ...
bool IsFloatingPoint(DataType type);
bool IsInteger(DataType type);  // int8/uint8/int32/int64 (not bool)

absl::StatusOr<DataType> ParseDataType(const std::string& name);  // also "float", "half", "bf16", "int"...
absl::StatusOr<ReduceOp> ParseReduceOp(const std::string& name);  // also "prod", "min", ...

}  // namespace cohort

namespace cohort {

// Element `index` of a typed buffer as a double, and back (fp16/bf16 rounded to nearest even).
// For tools and tests that fill and check buffers of any type; not for hot loops.
double LoadElement(const void* buffer, DataType type, size_t index);
void StoreElement(void* buffer, DataType type, size_t index, double value);

}  // namespace cohort
