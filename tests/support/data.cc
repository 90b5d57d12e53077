#include "support/data.h"

#include <cmath>
#include <cstring>

#include "collectives/reduce.h"

namespace cohort::testing {
namespace {

// Wraps an exact integer to the type's width (two's complement), like integer kernels do.
double Wrap(DataType type, int64_t value) {
  switch (type) {
    case DataType::kInt8: return static_cast<int8_t>(static_cast<uint64_t>(value));
    case DataType::kUInt8: return static_cast<uint8_t>(static_cast<uint64_t>(value));
    case DataType::kInt32: return static_cast<int32_t>(static_cast<uint64_t>(value));
    default: return static_cast<double>(value);
  }
}

}  // namespace

double Load(const void* buffer, DataType type, size_t index) {
  return LoadElement(buffer, type, index);
}

void Store(void* buffer, DataType type, size_t index, double value) {
  StoreElement(buffer, type, index, value);
}

double InputValue(DataType type, ReduceOp op, int rank, size_t index) {
  uint64_t mix = static_cast<uint64_t>(rank) * 7919u + index * 104729u + 17u;
  mix ^= mix >> 7;
  if (type == DataType::kBool) return static_cast<double>(mix % 2);
  if (op == ReduceOp::kProd) {
    int choice = static_cast<int>(mix % 3);  // -1, 1 or 2: products stay exact
    if (type == DataType::kUInt8) return choice == 2 ? 2 : 1;
    return choice == 0 ? -1 : choice == 1 ? 1 : 2;
  }
  if (op == ReduceOp::kBand || op == ReduceOp::kBor || op == ReduceOp::kBxor) {
    return static_cast<double>(mix % 128);
  }
  if (type == DataType::kUInt8) return static_cast<double>(mix % 5);
  return static_cast<double>(static_cast<int>(mix % 9) - 4);  // -4..4
}

double Reference(DataType type, ReduceOp op, int size, size_t index) {
  bool integer = IsInteger(type) || type == DataType::kBool;
  double accumulated = InputValue(type, op, 0, index);
  int64_t exact = static_cast<int64_t>(accumulated);
  for (int rank = 1; rank < size; ++rank) {
    double value = InputValue(type, op, rank, index);
    int64_t integer_value = static_cast<int64_t>(value);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        accumulated += value;
        exact = static_cast<int64_t>(static_cast<uint64_t>(exact) +
                                     static_cast<uint64_t>(integer_value));
        break;
      case ReduceOp::kProd:
        accumulated *= value;
        exact = static_cast<int64_t>(static_cast<uint64_t>(exact) *
                                     static_cast<uint64_t>(integer_value));
        break;
      case ReduceOp::kMin:
        accumulated = std::min(accumulated, value);
        exact = std::min(exact, integer_value);
        break;
      case ReduceOp::kMax:
        accumulated = std::max(accumulated, value);
        exact = std::max(exact, integer_value);
        break;
      case ReduceOp::kBand: exact &= integer_value; break;
      case ReduceOp::kBor: exact |= integer_value; break;
      case ReduceOp::kBxor: exact ^= integer_value; break;
    }
  }
  if (op == ReduceOp::kAvg) {
    if (integer) return Wrap(type, exact / size);
    return accumulated / size;
  }
  if (integer) return Wrap(type, exact);
  return accumulated;
}

double Tolerance(DataType type, ReduceOp op, double reference) {
  if (op != ReduceOp::kAvg) return 0;
  if (type == DataType::kFloat16 || type == DataType::kBFloat16) {
    return 1e-2 * std::fabs(reference) + 1e-2;
  }
  if (IsFloatingPoint(type)) return 1e-6 * std::fabs(reference) + 1e-6;
  return 0;
}

std::vector<char> MakeInput(DataType type, ReduceOp op, int rank, size_t count) {
  std::vector<char> buffer(count * DataTypeSize(type) + 1);
  for (size_t index = 0; index < count; ++index) {
    Store(buffer.data(), type, index, InputValue(type, op, rank, index));
  }
  return buffer;
}

std::vector<ReduceOp> ReduceOpsFor(DataType type) {
  if (type == DataType::kBool) {
    return {ReduceOp::kMin, ReduceOp::kMax, ReduceOp::kBand, ReduceOp::kBor, ReduceOp::kBxor};
  }
  std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin, ReduceOp::kMax,
                               ReduceOp::kAvg};
  if (IsInteger(type)) {
    ops.insert(ops.end(), {ReduceOp::kBand, ReduceOp::kBor, ReduceOp::kBxor});
  }
  return ops;
}

std::vector<DataType> AllDataTypes() {
  return {DataType::kFloat32, DataType::kFloat64, DataType::kFloat16, DataType::kBFloat16,
          DataType::kInt8,    DataType::kUInt8,   DataType::kInt32,   DataType::kInt64,
          DataType::kBool};
}

}  // namespace cohort::testing
