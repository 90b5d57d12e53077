// Header-only test data for the reduce kernels' tests (tests/unit/kernels_host_test.cc on the
// CPU, tests/gpu/kernels_test.cu on a GPU): random inputs that exercise NaN, infinities, signed
// zeros, denormals and integer wrapping, and a bit-exact comparison in which any NaN matches any
// NaN (which NaN comes out of an operation on two NaNs differs between CPUs and GPUs).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "collectives/reduce.h"
#include "collectives/types.h"

namespace cohort::testing {

inline constexpr DataType kKernelTypes[] = {
    DataType::kFloat32,  DataType::kFloat64, DataType::kFloat16,
    DataType::kBFloat16, DataType::kInt8,    DataType::kUInt8,
    DataType::kInt32,    DataType::kInt64,   DataType::kBool};
inline constexpr ReduceOp kKernelOps[] = {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin,
                                          ReduceOp::kMax, ReduceOp::kAvg,  ReduceOp::kBand,
                                          ReduceOp::kBor, ReduceOp::kBxor};

using KernelBytes = std::vector<uint8_t>;

// Floats are mostly moderate values with fractions (sums and products round), with about 3% NaN,
// infinities, signed zeros and denormals; 16-bit floats and integers are random bit patterns;
// bools mostly 0/1 with some other nonzero bytes, which count as true.
inline KernelBytes RandomKernelData(DataType type, size_t count, std::mt19937_64& rng) {
  KernelBytes data(count * DataTypeSize(type));
  std::uniform_real_distribution<double> moderate(-4.0, 4.0);
  std::uniform_int_distribution<int> percent(0, 99);
  auto special = [&]() -> double {
    switch (percent(rng) % 6) {
      case 0:
        return std::numeric_limits<double>::quiet_NaN();
      case 1:
        return std::numeric_limits<double>::infinity();
      case 2:
        return -std::numeric_limits<double>::infinity();
      case 3:
        return 0.0;
      case 4:
        return -0.0;
      default:
        return 1e-310;
    }
  };
  for (size_t i = 0; i < count; ++i) {
    uint8_t* element = data.data() + i * DataTypeSize(type);
    switch (type) {
      case DataType::kFloat32: {
        const bool is_special = percent(rng) < 3;
        float value = static_cast<float>(is_special ? special() : moderate(rng));
        if (is_special && value == 0.0f && !std::signbit(value) && percent(rng) < 50) {
          value = 1e-40f;  // a float32 denormal
        }
        std::memcpy(element, &value, sizeof(value));
        break;
      }
      case DataType::kFloat64: {
        const double value = percent(rng) < 3 ? special() : moderate(rng);
        std::memcpy(element, &value, sizeof(value));
        break;
      }
      case DataType::kBool: {
        const int roll = percent(rng);
        *element = roll < 45 ? 0 : roll < 90 ? 1 : static_cast<uint8_t>(2 + roll);
        break;
      }
      default: {
        const uint64_t bits = rng();
        std::memcpy(element, &bits, DataTypeSize(type));
        break;
      }
    }
  }
  return data;
}

inline bool IsNanKernelElement(DataType type, const uint8_t* data, size_t index) {
  switch (type) {
    case DataType::kFloat32: {
      float value;
      std::memcpy(&value, data + index * 4, 4);
      return std::isnan(value);
    }
    case DataType::kFloat64: {
      double value;
      std::memcpy(&value, data + index * 8, 8);
      return std::isnan(value);
    }
    case DataType::kFloat16:
    case DataType::kBFloat16: {
      uint16_t bits;
      std::memcpy(&bits, data + index * 2, 2);
      return type == DataType::kFloat16 ? (bits & 0x7FFF) > 0x7C00 : (bits & 0x7FFF) > 0x7F80;
    }
    default:
      return false;
  }
}

// Empty when equal (any NaN matching any NaN); else the first differences, for the test to print.
inline std::string CompareKernelElements(DataType type, const uint8_t* expected,
                                         const uint8_t* actual, size_t count) {
  const size_t size = DataTypeSize(type);
  std::ostringstream differences;
  int shown = 0;
  for (size_t i = 0; i < count; ++i) {
    if (std::memcmp(expected + i * size, actual + i * size, size) == 0) continue;
    if (IsNanKernelElement(type, expected, i) && IsNanKernelElement(type, actual, i)) continue;
    if (shown++ < 4) {
      differences << " [" << i << "] expected " << LoadElement(expected, type, i) << " got "
                  << LoadElement(actual, type, i);
    }
  }
  if (shown == 0) return "";
  return std::to_string(shown) + " of " + std::to_string(count) + " " + DataTypeName(type) +
         " elements differ:" + differences.str();
}

}  // namespace cohort::testing
