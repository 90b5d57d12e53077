#include "collectives/types.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "collectives/reduce.h"
#include "absl/strings/str_cat.h"

namespace cohort {

size_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kFloat32: return 4;
    case DataType::kFloat64: return 8;
    case DataType::kFloat16: return 2;
    case DataType::kBFloat16: return 2;
    case DataType::kInt8: return 1;
    case DataType::kUInt8: return 1;
    case DataType::kInt32: return 4;
    case DataType::kInt64: return 8;
    case DataType::kBool: return 1;
  }
  return 0;
}

const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kFloat32: return "float32";
    case DataType::kFloat64: return "float64";
    case DataType::kFloat16: return "float16";
    case DataType::kBFloat16: return "bfloat16";
    case DataType::kInt8: return "int8";
    case DataType::kUInt8: return "uint8";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
    case DataType::kBool: return "bool";
  }
  return "unknown";
}

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kProd: return "prod";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kBand: return "band";
    case ReduceOp::kBor: return "bor";
    case ReduceOp::kBxor: return "bxor";
  }
  return "unknown";
}

const char* OpTypeName(OpType op) {
  switch (op) {
    case OpType::kAllreduce: return "allreduce";
    case OpType::kBroadcast: return "broadcast";
    case OpType::kReduce: return "reduce";
    case OpType::kAllgather: return "allgather";
    case OpType::kReduceScatter: return "reduce_scatter";
    case OpType::kAlltoall: return "alltoall";
    case OpType::kGather: return "gather";
    case OpType::kScatter: return "scatter";
    case OpType::kBarrier: return "barrier";
    case OpType::kSend: return "send";
    case OpType::kRecv: return "recv";
  }
  return "unknown";
}

bool IsFloatingPoint(DataType type) {
  return type == DataType::kFloat32 || type == DataType::kFloat64 ||
         type == DataType::kFloat16 || type == DataType::kBFloat16;
}

bool IsInteger(DataType type) {
  return type == DataType::kInt8 || type == DataType::kUInt8 || type == DataType::kInt32 ||
         type == DataType::kInt64;
}

absl::StatusOr<DataType> ParseDataType(const std::string& name) {
  std::string lower = absl::AsciiStrToLower(name);
  if (lower == "float32" || lower == "float" || lower == "f32") return DataType::kFloat32;
  if (lower == "float64" || lower == "double" || lower == "f64") return DataType::kFloat64;
  if (lower == "float16" || lower == "half" || lower == "f16") return DataType::kFloat16;
  if (lower == "bfloat16" || lower == "bf16") return DataType::kBFloat16;
  if (lower == "int8" || lower == "i8") return DataType::kInt8;
  if (lower == "uint8" || lower == "u8") return DataType::kUInt8;
  if (lower == "int32" || lower == "int" || lower == "i32") return DataType::kInt32;
  if (lower == "int64" || lower == "long" || lower == "i64") return DataType::kInt64;
  if (lower == "bool") return DataType::kBool;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown data type \"", name,
                   "\"; accepted: float32, float64, float16, bfloat16, int8, uint8, int32, int64, "
                   "bool"));
}

absl::StatusOr<ReduceOp> ParseReduceOp(const std::string& name) {
  std::string lower = absl::AsciiStrToLower(name);
  if (lower == "sum") return ReduceOp::kSum;
  if (lower == "prod" || lower == "product") return ReduceOp::kProd;
  if (lower == "min") return ReduceOp::kMin;
  if (lower == "max") return ReduceOp::kMax;
  if (lower == "avg" || lower == "mean") return ReduceOp::kAvg;
  if (lower == "band") return ReduceOp::kBand;
  if (lower == "bor") return ReduceOp::kBor;
  if (lower == "bxor") return ReduceOp::kBxor;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown reduce op \"", name, "\"; accepted: sum, prod, min, max, avg, band, bor, bxor"));
}

namespace {

template <typename T>
T ReadAs(const void* buffer, size_t index) {
  T value;
  std::memcpy(&value, static_cast<const char*>(buffer) + index * sizeof(T), sizeof(T));
  return value;
}

template <typename T>
void WriteAs(void* buffer, size_t index, T value) {
  std::memcpy(static_cast<char*>(buffer) + index * sizeof(T), &value, sizeof(T));
}

}  // namespace

double LoadElement(const void* buffer, DataType type, size_t index) {
  switch (type) {
    case DataType::kFloat32: return ReadAs<float>(buffer, index);
    case DataType::kFloat64: return ReadAs<double>(buffer, index);
    case DataType::kFloat16: return HalfToFloat(ReadAs<uint16_t>(buffer, index));
    case DataType::kBFloat16: return BFloat16ToFloat(ReadAs<uint16_t>(buffer, index));
    case DataType::kInt8: return ReadAs<int8_t>(buffer, index);
    case DataType::kUInt8: return ReadAs<uint8_t>(buffer, index);
    case DataType::kInt32: return ReadAs<int32_t>(buffer, index);
    case DataType::kInt64: return static_cast<double>(ReadAs<int64_t>(buffer, index));
    case DataType::kBool: return ReadAs<uint8_t>(buffer, index);
  }
  return 0;
}

void StoreElement(void* buffer, DataType type, size_t index, double value) {
  switch (type) {
    case DataType::kFloat32: return WriteAs<float>(buffer, index, static_cast<float>(value));
    case DataType::kFloat64: return WriteAs<double>(buffer, index, value);
    case DataType::kFloat16:
      return WriteAs<uint16_t>(buffer, index, FloatToHalf(static_cast<float>(value)));
    case DataType::kBFloat16:
      return WriteAs<uint16_t>(buffer, index, FloatToBFloat16(static_cast<float>(value)));
    case DataType::kInt8: return WriteAs<int8_t>(buffer, index, static_cast<int8_t>(value));
    case DataType::kUInt8: return WriteAs<uint8_t>(buffer, index, static_cast<uint8_t>(value));
    case DataType::kInt32: return WriteAs<int32_t>(buffer, index, static_cast<int32_t>(value));
    case DataType::kInt64: return WriteAs<int64_t>(buffer, index, static_cast<int64_t>(value));
    case DataType::kBool: return WriteAs<uint8_t>(buffer, index, value != 0 ? 1 : 0);
  }
}

}  // namespace cohort
