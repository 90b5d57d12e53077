// Tests for the CPU reduce kernels (collectives/reduce.h): every (data type, reduce op) pair at
// every instruction-set level this CPU runs, against a scalar reference computed here; in-place
// calls, ReduceMany, averages, the unsupported-pair errors and the fp16 / bf16 conversions.
#include "collectives/reduce.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cohort {

// gtest prints parameters and failures with these rather than as "1-byte object <02>". They live
// in namespace cohort, not the anonymous one, because gtest finds them by argument lookup.
void PrintTo(DataType type, std::ostream* os) { *os << DataTypeName(type); }
void PrintTo(ReduceOp op, std::ostream* os) { *os << ReduceOpName(op); }
void PrintTo(ReduceIsa isa, std::ostream* os) { *os << ReduceIsaName(isa); }

namespace {

constexpr DataType kAllTypes[] = {DataType::kFloat32,  DataType::kFloat64, DataType::kFloat16,
                                  DataType::kBFloat16, DataType::kInt8,    DataType::kUInt8,
                                  DataType::kInt32,    DataType::kInt64,   DataType::kBool};
constexpr ReduceOp kAllOps[] = {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin, ReduceOp::kMax,
                                ReduceOp::kAvg, ReduceOp::kBand, ReduceOp::kBor, ReduceOp::kBxor};
constexpr ReduceIsa kAllIsas[] = {ReduceIsa::kBaseline, ReduceIsa::kAvx2, ReduceIsa::kAvx512};
// 0 and 1 are edge cases, 7 is shorter than any vector, 65537 runs the vector body and a tail.
constexpr size_t kSizes[] = {0, 1, 7, 64, 1000, 65537};

// The contract, written out independently of the kernel table.
bool ExpectSupported(DataType type, ReduceOp op) {
  const bool bitwise = op == ReduceOp::kBand || op == ReduceOp::kBor || op == ReduceOp::kBxor;
  if (type == DataType::kBool) {
    return bitwise || op == ReduceOp::kMin || op == ReduceOp::kMax;
  }
  if (IsFloatingPoint(type)) return !bitwise;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Test data: raw bytes, so one code path serves every type.

using Bytes = std::vector<uint8_t>;

template <typename T>
T Read(const uint8_t* data, size_t index) {
  T value;
  std::memcpy(&value, data + index * sizeof(T), sizeof(T));
  return value;
}

template <typename T>
void Write(uint8_t* data, size_t index, T value) {
  std::memcpy(data + index * sizeof(T), &value, sizeof(T));
}

// Floats are mostly moderate values with fractions (so sums and products round), sprinkled with
// NaN, infinities, signed zeros and denormals. 16-bit floats and integers are random bit patterns,
// which covers NaN, inf, denormals and wrapping. Bools are mostly 0/1 with a few other nonzero
// bytes, which the kernels must treat as true.
Bytes RandomData(DataType type, size_t count, std::mt19937_64& rng) {
  Bytes data(count * DataTypeSize(type));
  std::uniform_real_distribution<double> moderate(-4.0, 4.0);
  std::uniform_int_distribution<int> percent(0, 99);
  auto special_double = [&]() -> double {
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
    switch (type) {
      case DataType::kFloat32: {
        const bool special = percent(rng) < 3;
        float value = static_cast<float>(special ? special_double() : moderate(rng));
        if (special && value == 0.0f && std::signbit(value) == false && percent(rng) < 50) {
          value = 1e-40f;  // a float32 denormal
        }
        Write<float>(data.data(), i, value);
        break;
      }
      case DataType::kFloat64:
        Write<double>(data.data(), i, percent(rng) < 3 ? special_double() : moderate(rng));
        break;
      case DataType::kBool: {
        const int roll = percent(rng);
        data[i] = roll < 45 ? 0 : roll < 90 ? 1 : static_cast<uint8_t>(2 + roll);
        break;
      }
      default: {
        const uint64_t bits = rng();
        std::memcpy(data.data() + i * DataTypeSize(type), &bits, DataTypeSize(type));
        break;
      }
    }
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// Scalar reference.

template <typename T>
T ReferenceOp(ReduceOp op, T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
      case ReduceOp::kProd:
        return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
      case ReduceOp::kMin:
        return std::min(a, b);
      case ReduceOp::kMax:
        return std::max(a, b);
      case ReduceOp::kBand:
        return static_cast<T>(a & b);
      case ReduceOp::kBor:
        return static_cast<T>(a | b);
      case ReduceOp::kBxor:
        return static_cast<T>(a ^ b);
    }
  } else {
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        return a + b;
      case ReduceOp::kProd:
        return a * b;
      // NaN from either side wins; on ties (signed zeros) the second operand, like x86 minps.
      case ReduceOp::kMin:
        return std::isnan(a) ? a : std::isnan(b) ? b : (a < b ? a : b);
      case ReduceOp::kMax:
        return std::isnan(a) ? a : std::isnan(b) ? b : (a > b ? a : b);
      default:
        break;
    }
  }
  ADD_FAILURE() << "no reference for op " << ReduceOpName(op);
  return a;
}

uint8_t ReferenceBoolOp(ReduceOp op, uint8_t a, uint8_t b) {
  const bool x = a != 0;
  const bool y = b != 0;
  switch (op) {
    case ReduceOp::kMin:
    case ReduceOp::kBand:
      return x && y;
    case ReduceOp::kMax:
    case ReduceOp::kBor:
      return x || y;
    case ReduceOp::kBxor:
      return x != y;
    default:
      ADD_FAILURE() << "no bool reference for op " << ReduceOpName(op);
      return 0;
  }
}

// Reduce natively, left to right.
template <typename T>
void ReferenceNative(ReduceOp op, const std::vector<const uint8_t*>& inputs, size_t count,
                     uint8_t* out) {
  for (size_t i = 0; i < count; ++i) {
    T acc = Read<T>(inputs[0], i);
    for (size_t k = 1; k < inputs.size(); ++k) acc = ReferenceOp<T>(op, acc, Read<T>(inputs[k], i));
    Write<T>(out, i, acc);
  }
}

// Reduce 16-bit floats in fp32, left to right, rounding once at the end.
void ReferenceSixteen(DataType type, ReduceOp op, const std::vector<const uint8_t*>& inputs,
                      size_t count, uint8_t* out) {
  auto load = type == DataType::kFloat16 ? HalfToFloat : BFloat16ToFloat;
  auto store = type == DataType::kFloat16 ? FloatToHalf : FloatToBFloat16;
  for (size_t i = 0; i < count; ++i) {
    if (inputs.size() == 1) {  // nothing to reduce: the input unchanged, even a NaN payload
      Write<uint16_t>(out, i, Read<uint16_t>(inputs[0], i));
      continue;
    }
    float acc = load(Read<uint16_t>(inputs[0], i));
    for (size_t k = 1; k < inputs.size(); ++k) {
      acc = ReferenceOp<float>(op, acc, load(Read<uint16_t>(inputs[k], i)));
    }
    Write<uint16_t>(out, i, store(acc));
  }
}

Bytes Reference(DataType type, ReduceOp op, const std::vector<const uint8_t*>& inputs,
                size_t count) {
  Bytes out(count * DataTypeSize(type));
  switch (type) {
    case DataType::kFloat32:
      ReferenceNative<float>(op, inputs, count, out.data());
      break;
    case DataType::kFloat64:
      ReferenceNative<double>(op, inputs, count, out.data());
      break;
    case DataType::kFloat16:
    case DataType::kBFloat16:
      ReferenceSixteen(type, op, inputs, count, out.data());
      break;
    case DataType::kInt8:
      ReferenceNative<int8_t>(op, inputs, count, out.data());
      break;
    case DataType::kUInt8:
      ReferenceNative<uint8_t>(op, inputs, count, out.data());
      break;
    case DataType::kInt32:
      ReferenceNative<int32_t>(op, inputs, count, out.data());
      break;
    case DataType::kInt64:
      ReferenceNative<int64_t>(op, inputs, count, out.data());
      break;
    case DataType::kBool:
      for (size_t i = 0; i < count; ++i) {
        uint8_t acc = inputs[0][i];
        if (inputs.size() == 1) {
          out[i] = acc;
          continue;
        }
        for (size_t k = 1; k < inputs.size(); ++k) acc = ReferenceBoolOp(op, acc, inputs[k][i]);
        out[i] = acc;
      }
      break;
  }
  return out;
}

bool IsNanElement(DataType type, const uint8_t* data, size_t index) {
  switch (type) {
    case DataType::kFloat32:
      return std::isnan(Read<float>(data, index));
    case DataType::kFloat64:
      return std::isnan(Read<double>(data, index));
    case DataType::kFloat16:
      return (Read<uint16_t>(data, index) & 0x7FFF) > 0x7C00;
    case DataType::kBFloat16:
      return (Read<uint16_t>(data, index) & 0x7FFF) > 0x7F80;
    default:
      return false;
  }
}

std::string ElementHex(DataType type, const uint8_t* data, size_t index) {
  const size_t size = DataTypeSize(type);
  uint64_t bits = 0;
  std::memcpy(&bits, data + index * size, size);
  return absl::StrCat("0x", absl::Hex(bits));
}

// Bit-exact, except that any NaN matches any NaN: which NaN payload comes out of an operation on
// two NaNs depends on operand order inside the vector unit.
::testing::AssertionResult SameElements(DataType type, const Bytes& expected, const uint8_t* actual,
                                        size_t count) {
  const size_t size = DataTypeSize(type);
  for (size_t i = 0; i < count; ++i) {
    if (std::memcmp(expected.data() + i * size, actual + i * size, size) == 0) continue;
    if (IsNanElement(type, expected.data(), i) && IsNanElement(type, actual, i)) continue;
    return ::testing::AssertionFailure()
           << "element " << i << " of " << count << ": expected "
           << ElementHex(type, expected.data(), i) << ", got " << ElementHex(type, actual, i);
  }
  return ::testing::AssertionSuccess();
}

std::string ParamName(DataType type, ReduceOp op, ReduceIsa isa) {
  return absl::StrCat(DataTypeName(type), "_", ReduceOpName(op), "_", ReduceIsaName(isa));
}

// ---------------------------------------------------------------------------------------------
// ReduceFn over every type x op x size x level.

class ReduceTest
    : public ::testing::TestWithParam<std::tuple<DataType, ReduceOp, size_t, ReduceIsa>> {};

TEST_P(ReduceTest, MatchesReferenceOutOfPlaceAndInPlace) {
  const auto [type, op, count, isa] = GetParam();
  if (!ReduceIsaAvailable(isa)) GTEST_SKIP() << ReduceIsaName(isa) << " not available here";
  const ReduceFn fn = GetReduceFn(type, op, isa);
  if (!ExpectSupported(type, op)) {
    EXPECT_EQ(fn, nullptr);
    EXPECT_EQ(GetReduceManyFn(type, op, isa), nullptr);
    EXPECT_EQ(CheckReduceSupported(type, op).code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  ASSERT_NE(fn, nullptr);
  ASSERT_TRUE(CheckReduceSupported(type, op).ok());

  std::mt19937_64 rng(count * 1000 + static_cast<int>(type) * 10 + static_cast<int>(op));
  const size_t size = DataTypeSize(type);
  const Bytes a = RandomData(type, count, rng);
  const Bytes b = RandomData(type, count, rng);
  const Bytes expected = Reference(type, op, {a.data(), b.data()}, count);

  // Out of place; the output starts as garbage that must be fully overwritten.
  Bytes out(count * size, 0xA5);
  fn(out.data(), a.data(), b.data(), count);
  EXPECT_TRUE(SameElements(type, expected, out.data(), count)) << "out of place";

  // In place, out == a: the common case in ring algorithms.
  Bytes in_place_a = a;
  fn(in_place_a.data(), in_place_a.data(), b.data(), count);
  EXPECT_TRUE(SameElements(type, expected, in_place_a.data(), count)) << "out == a";

  // In place, out == b.
  Bytes in_place_b = b;
  fn(in_place_b.data(), a.data(), in_place_b.data(), count);
  EXPECT_TRUE(SameElements(type, expected, in_place_b.data(), count)) << "out == b";

  // All three the same buffer.
  Bytes all_same = a;
  const Bytes expected_self = Reference(type, op, {a.data(), a.data()}, count);
  fn(all_same.data(), all_same.data(), all_same.data(), count);
  EXPECT_TRUE(SameElements(type, expected_self, all_same.data(), count)) << "out == a == b";

  // Misaligned by one element, so no vector access can rely on alignment.
  if (count > 0) {
    Bytes shifted_a(size, 0);
    shifted_a.insert(shifted_a.end(), a.begin(), a.end());
    Bytes shifted_b(size, 0);
    shifted_b.insert(shifted_b.end(), b.begin(), b.end());
    Bytes shifted_out((count + 1) * size, 0xA5);
    fn(shifted_out.data() + size, shifted_a.data() + size, shifted_b.data() + size, count);
    EXPECT_TRUE(SameElements(type, expected, shifted_out.data() + size, count)) << "misaligned";
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllPairs, ReduceTest,
    ::testing::Combine(::testing::ValuesIn(kAllTypes), ::testing::ValuesIn(kAllOps),
                       ::testing::ValuesIn(kSizes), ::testing::ValuesIn(kAllIsas)),
    [](const auto& info) {
      return absl::StrCat(
          ParamName(std::get<0>(info.param), std::get<1>(info.param), std::get<3>(info.param)),
          "_n", std::get<2>(info.param));
    });

TEST(ReduceLookup, DefaultLookupUsesTheBestLevel) {
  ASSERT_TRUE(ReduceIsaAvailable(ReduceIsa::kBaseline));
  ASSERT_TRUE(ReduceIsaAvailable(BestReduceIsa()));
  for (int i = static_cast<int>(BestReduceIsa()) + 1; i < kNumReduceIsas; ++i) {
    EXPECT_FALSE(ReduceIsaAvailable(static_cast<ReduceIsa>(i)));
  }
  for (DataType type : kAllTypes) {
    for (ReduceOp op : kAllOps) {
      EXPECT_EQ(GetReduceFn(type, op), GetReduceFn(type, op, BestReduceIsa()));
      EXPECT_EQ(GetReduceManyFn(type, op), GetReduceManyFn(type, op, BestReduceIsa()));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ReduceManyFn: 1..8 inputs, out separate, out == inputs[0], and out == the last input.

using TypeAndOp = std::pair<DataType, ReduceOp>;

std::vector<TypeAndOp> SupportedPairs() {
  std::vector<TypeAndOp> pairs;
  for (DataType type : kAllTypes) {
    for (ReduceOp op : kAllOps) {
      if (ExpectSupported(type, op)) pairs.emplace_back(type, op);
    }
  }
  return pairs;
}

class ReduceManyTest : public ::testing::TestWithParam<std::tuple<TypeAndOp, size_t, ReduceIsa>> {};

TEST_P(ReduceManyTest, MatchesReference) {
  const auto [pair, count, isa] = GetParam();
  const auto [type, op] = pair;
  if (!ReduceIsaAvailable(isa)) GTEST_SKIP() << ReduceIsaName(isa) << " not available here";
  const ReduceManyFn fn = GetReduceManyFn(type, op, isa);
  ASSERT_NE(fn, nullptr);
  const size_t size = DataTypeSize(type);
  std::mt19937_64 rng(count * 77 + static_cast<int>(type) * 10 + static_cast<int>(op));
  std::vector<Bytes> all_buffers;
  for (int k = 0; k < 8; ++k) all_buffers.push_back(RandomData(type, count, rng));
  for (int num_inputs = 1; num_inputs <= 8; ++num_inputs) {
    SCOPED_TRACE(absl::StrCat(num_inputs, " inputs"));
    const std::vector<Bytes> buffers(all_buffers.begin(), all_buffers.begin() + num_inputs);
    std::vector<const uint8_t*> pointers;
    for (const Bytes& buffer : buffers) pointers.push_back(buffer.data());
    const Bytes expected = Reference(type, op, pointers, count);
    std::vector<const void*> inputs(pointers.begin(), pointers.end());

    Bytes out(count * size, 0xA5);
    fn(out.data(), inputs.data(), num_inputs, count);
    EXPECT_TRUE(SameElements(type, expected, out.data(), count)) << "out separate";

    Bytes first = buffers[0];
    inputs[0] = first.data();
    fn(first.data(), inputs.data(), num_inputs, count);
    EXPECT_TRUE(SameElements(type, expected, first.data(), count)) << "out == inputs[0]";
    inputs[0] = buffers[0].data();

    Bytes last = buffers[num_inputs - 1];
    inputs[num_inputs - 1] = last.data();
    fn(last.data(), inputs.data(), num_inputs, count);
    EXPECT_TRUE(SameElements(type, expected, last.data(), count)) << "out == last input";
  }
}

INSTANTIATE_TEST_SUITE_P(SupportedPairs, ReduceManyTest,
                         ::testing::Combine(::testing::ValuesIn(SupportedPairs()),
                                            ::testing::ValuesIn(kSizes),
                                            ::testing::ValuesIn(kAllIsas)),
                         [](const auto& info) {
                           const TypeAndOp pair = std::get<0>(info.param);
                           return absl::StrCat(
                               ParamName(pair.first, pair.second, std::get<2>(info.param)), "_n",
                               std::get<1>(info.param));
                         });

// Rounding once matters: 1 + 2^-11 + 2^-11 is exactly representable in fp16 (0x3C01), but
// rounding after the first addition lands on the tie 1 + 2^-11, which goes to even (1.0), and
// the second addition ties again. Same for bf16 with 2^-8.
TEST(ReduceManyRounding, SixteenBitFloatsRoundOnce) {
  for (ReduceIsa isa : kAllIsas) {
    if (!ReduceIsaAvailable(isa)) continue;
    SCOPED_TRACE(ReduceIsaName(isa));
    const uint16_t half_one = 0x3C00;
    const uint16_t half_tiny = FloatToHalf(std::ldexp(1.0f, -11));
    std::vector<uint16_t> half_inputs = {half_one, half_tiny, half_tiny};
    const void* half_pointers[] = {&half_inputs[0], &half_inputs[1], &half_inputs[2]};
    uint16_t half_out = 0;
    GetReduceManyFn(DataType::kFloat16, ReduceOp::kSum, isa)(&half_out, half_pointers, 3, 1);
    EXPECT_EQ(half_out, 0x3C01);

    const uint16_t bf16_one = 0x3F80;
    const uint16_t bf16_tiny = FloatToBFloat16(std::ldexp(1.0f, -8));
    std::vector<uint16_t> bf16_inputs = {bf16_one, bf16_tiny, bf16_tiny};
    const void* bf16_pointers[] = {&bf16_inputs[0], &bf16_inputs[1], &bf16_inputs[2]};
    uint16_t bf16_out = 0;
    GetReduceManyFn(DataType::kBFloat16, ReduceOp::kSum, isa)(&bf16_out, bf16_pointers, 3, 1);
    EXPECT_EQ(bf16_out, 0x3F81);
  }
}

// ---------------------------------------------------------------------------------------------
// Unsupported pairs.

TEST(CheckReduceSupported, NamesThePairAndTheAcceptedOps) {
  absl::Status status = CheckReduceSupported(DataType::kFloat32, ReduceOp::kBxor);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "reduce op bxor is not defined for float32; float32 accepts sum, prod, min, max, avg");

  status = CheckReduceSupported(DataType::kBool, ReduceOp::kSum);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "reduce op sum is not defined for bool; bool accepts min, max, band, bor, bxor");

  status = CheckReduceSupported(DataType::kBFloat16, ReduceOp::kBand);
  EXPECT_EQ(status.message(),
            "reduce op band is not defined for bfloat16; bfloat16 accepts sum, prod, min, max, "
            "avg");
}

TEST(CheckReduceSupported, AgreesWithTheContractForEveryPair) {
  for (DataType type : kAllTypes) {
    for (ReduceOp op : kAllOps) {
      SCOPED_TRACE(absl::StrCat(DataTypeName(type), " ", ReduceOpName(op)));
      const absl::Status status = CheckReduceSupported(type, op);
      EXPECT_EQ(status.ok(), ExpectSupported(type, op)) << status;
      EXPECT_EQ(GetReduceFn(type, op) != nullptr, ExpectSupported(type, op));
      EXPECT_EQ(GetReduceManyFn(type, op) != nullptr, ExpectSupported(type, op));
      if (!status.ok()) {
        EXPECT_NE(status.message().find(absl::StrCat("reduce op ", ReduceOpName(op),
                                                     " is not defined for ", DataTypeName(type))),
                  std::string::npos)
            << status;
      }
    }
  }
}

TEST(CheckReduceSupported, RejectsOutOfRangeValues) {
  EXPECT_EQ(CheckReduceSupported(static_cast<DataType>(200), ReduceOp::kSum).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckReduceSupported(DataType::kFloat32, static_cast<ReduceOp>(200)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetReduceFn(static_cast<DataType>(200), ReduceOp::kSum), nullptr);
  EXPECT_EQ(GetReduceFn(DataType::kFloat32, static_cast<ReduceOp>(200)), nullptr);
}

// ---------------------------------------------------------------------------------------------
// ScaleForAverage.

class ScaleForAverageTest : public ::testing::TestWithParam<ReduceIsa> {
 protected:
  void SetUp() override {
    if (!ReduceIsaAvailable(GetParam())) GTEST_SKIP() << ReduceIsaName(GetParam());
  }
};

TEST_P(ScaleForAverageTest, Float32) {
  std::vector<float> data = {3.0f,
                             -3.0f,
                             1.0f,
                             0.1f,
                             std::numeric_limits<float>::infinity(),
                             std::numeric_limits<float>::quiet_NaN(),
                             0.0f};
  ScaleForAverage(data.data(), DataType::kFloat32, data.size(), 2, GetParam());
  EXPECT_EQ(data[0], 1.5f);
  EXPECT_EQ(data[1], -1.5f);
  EXPECT_EQ(data[2], 0.5f);
  EXPECT_EQ(data[3], 0.1f / 2.0f);
  EXPECT_EQ(data[4], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(data[5]));
  EXPECT_EQ(data[6], 0.0f);

  // True division, not a reciprocal multiply: 1/3 differs between the two for some values.
  std::vector<float> thirds(1000);
  for (size_t i = 0; i < thirds.size(); ++i) thirds[i] = static_cast<float>(i) * 0.37f;
  std::vector<float> expected = thirds;
  for (float& value : expected) value = value / 3.0f;
  ScaleForAverage(thirds.data(), DataType::kFloat32, thirds.size(), 3, GetParam());
  EXPECT_EQ(thirds, expected);
}

TEST_P(ScaleForAverageTest, Float64) {
  std::vector<double> data(1001);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<double>(i) * 1.1 - 500.0;
  std::vector<double> expected = data;
  for (double& value : expected) value = value / 7.0;
  ScaleForAverage(data.data(), DataType::kFloat64, data.size(), 7, GetParam());
  EXPECT_EQ(data, expected);
}

TEST_P(ScaleForAverageTest, SixteenBitFloats) {
  std::vector<uint16_t> half = {0x4200 /* 3.0 */, 0xC200 /* -3.0 */, 0x7C00 /* inf */,
                                0x0001 /* smallest denormal */, 0x3C00 /* 1.0 */};
  ScaleForAverage(half.data(), DataType::kFloat16, half.size(), 2, GetParam());
  EXPECT_EQ(half[0], 0x3E00);  // 1.5
  EXPECT_EQ(half[1], 0xBE00);  // -1.5
  EXPECT_EQ(half[2], 0x7C00);
  EXPECT_EQ(half[3], 0x0000);  // 2^-25 is a tie between 0 and 2^-24; even is 0
  EXPECT_EQ(half[4], 0x3800);  // 0.5

  std::vector<uint16_t> bf16 = {0x4040 /* 3.0 */, 0x3F80 /* 1.0 */, 0x7FC0 /* NaN */};
  ScaleForAverage(bf16.data(), DataType::kBFloat16, bf16.size(), 4, GetParam());
  EXPECT_EQ(bf16[0], 0x3F40);  // 0.75
  EXPECT_EQ(bf16[1], 0x3E80);  // 0.25
  EXPECT_EQ(bf16[2] & 0x7FFF, 0x7FC0);
}

template <typename T>
void CheckIntegerScale(DataType type, ReduceIsa isa) {
  std::mt19937_64 rng(static_cast<int>(type));
  for (int64_t divisor : {1, 2, 3, 7, 1000, -1, -2, -3}) {
    SCOPED_TRACE(absl::StrCat(DataTypeName(type), " / ", divisor));
    std::vector<T> data(1003);
    for (T& value : data) value = static_cast<T>(rng());
    data[0] = std::numeric_limits<T>::min();
    data[1] = std::numeric_limits<T>::max();
    data[2] = 0;
    std::vector<T> expected = data;
    for (T& value : expected) {
      // C semantics, computed wide (INT_MIN / -1 wraps, as the kernel documents).
      if constexpr (std::is_same_v<T, int64_t>) {
        value = divisor == -1 ? static_cast<T>(0 - static_cast<uint64_t>(value)) : value / divisor;
      } else {
        value = static_cast<T>(static_cast<int64_t>(value) / divisor);
      }
    }
    ScaleForAverage(data.data(), type, data.size(), divisor, isa);
    EXPECT_EQ(data, expected);
  }
  // Truncation toward zero, spelled out.
  if constexpr (std::is_signed_v<T>) {
    std::vector<T> data = {7, -7, 5, -5, 1, -1};
    ScaleForAverage(data.data(), type, data.size(), 2, isa);
    EXPECT_EQ(data, (std::vector<T>{3, -3, 2, -2, 0, 0}));
  }
  // A zero divisor leaves the data alone.
  std::vector<T> data = {1, 2, 3};
  ScaleForAverage(data.data(), type, data.size(), 0, isa);
  EXPECT_EQ(data, (std::vector<T>{1, 2, 3}));
}

TEST_P(ScaleForAverageTest, IntegersTruncateTowardZero) {
  CheckIntegerScale<int8_t>(DataType::kInt8, GetParam());
  CheckIntegerScale<uint8_t>(DataType::kUInt8, GetParam());
  CheckIntegerScale<int32_t>(DataType::kInt32, GetParam());
  CheckIntegerScale<int64_t>(DataType::kInt64, GetParam());
}

TEST_P(ScaleForAverageTest, SumThenScaleIsTheAverage) {
  const ReduceIsa isa = GetParam();
  std::vector<int32_t> a = {10, -10, 3, 100};
  std::vector<int32_t> b = {20, -21, 4, 1};
  GetReduceFn(DataType::kInt32, ReduceOp::kAvg, isa)(a.data(), a.data(), b.data(), a.size());
  ScaleForAverage(a.data(), DataType::kInt32, a.size(), 2, isa);
  EXPECT_EQ(a, (std::vector<int32_t>{15, -15, 3, 50}));
}

INSTANTIATE_TEST_SUITE_P(AllLevels, ScaleForAverageTest, ::testing::ValuesIn(kAllIsas),
                         [](const auto& info) { return std::string(ReduceIsaName(info.param)); });

// ---------------------------------------------------------------------------------------------
// Streaming copies: every level copies exactly the bytes asked, whatever the alignment of either
// side and the length (head, vector body, tail), and writes nothing around them.

class StreamCopyTest : public ::testing::TestWithParam<ReduceIsa> {};

TEST_P(StreamCopyTest, CopiesExactlyTheBytesAskedAtEveryAlignment) {
  const ReduceIsa isa = GetParam();
  if (!ReduceIsaAvailable(isa)) GTEST_SKIP() << ReduceIsaName(isa) << " not available here";
  StreamCopyFn copy = GetStreamCopyFn(isa);
  ASSERT_NE(copy, nullptr);
  constexpr size_t kGuard = 128;
  std::mt19937 random(7);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{15}, size_t{63}, size_t{64}, size_t{255},
                       size_t{256}, size_t{257}, size_t{4096}, size_t{65537}}) {
    for (size_t to_shift : {0, 1, 17, 63}) {
      for (size_t from_shift : {0, 5, 32}) {
        SCOPED_TRACE(absl::StrCat(bytes, " bytes, destination +", to_shift, ", source +",
                                  from_shift));
        // 64-byte aligned storage, so the shifts are the alignments.
        std::vector<uint64_t> source_storage((bytes + 2 * kGuard) / 8 + 16);
        std::vector<uint64_t> target_storage((bytes + 2 * kGuard) / 8 + 16);
        auto* source = reinterpret_cast<uint8_t*>(source_storage.data());
        auto* target = reinterpret_cast<uint8_t*>(target_storage.data());
        source += (64 - reinterpret_cast<uintptr_t>(source) % 64) % 64 + from_shift;
        target += (64 - reinterpret_cast<uintptr_t>(target) % 64) % 64 + kGuard + to_shift;
        for (size_t i = 0; i < bytes; ++i) source[i] = static_cast<uint8_t>(random());
        std::memset(target - kGuard, 0xA5, bytes + 2 * kGuard);
        copy(target, source, bytes);
        ASSERT_EQ(std::memcmp(target, source, bytes), 0);
        for (size_t i = 1; i <= kGuard; ++i) {
          ASSERT_EQ(target[-static_cast<ptrdiff_t>(i)], 0xA5) << "wrote " << i << " before";
          ASSERT_EQ(target[bytes + i - 1], 0xA5) << "wrote " << i - 1 << " after";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllLevels, StreamCopyTest, ::testing::ValuesIn(kAllIsas),
                         [](const auto& info) { return std::string(ReduceIsaName(info.param)); });

TEST(StreamCopy, DefaultIsTheBestLevelAndUnavailableLevelsHaveNone) {
  EXPECT_EQ(GetStreamCopyFn(), GetStreamCopyFn(BestReduceIsa()));
  for (ReduceIsa isa : kAllIsas) {
    EXPECT_EQ(GetStreamCopyFn(isa) != nullptr, ReduceIsaAvailable(isa)) << ReduceIsaName(isa);
  }
}

TEST(LastLevelCache, IsAPlausibleSize) {
  EXPECT_GE(LastLevelCacheBytes(), size_t{256} << 10);
  EXPECT_LE(LastLevelCacheBytes(), size_t{4} << 30);
}

// ---------------------------------------------------------------------------------------------
// Conversions, against known bit patterns and against independent references.

// fp16 decoded from its fields with ldexp: no bit tricks shared with the library.
double DecodeHalf(uint16_t bits) {
  const int sign = bits >> 15;
  const int exponent = (bits >> 10) & 0x1F;
  const int mantissa = bits & 0x3FF;
  double magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(mantissa, -24);
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity()
                              : std::numeric_limits<double>::quiet_NaN();
  } else {
    magnitude = std::ldexp(1024 + mantissa, exponent - 25);
  }
  return sign ? -magnitude : magnitude;
}

// Nearest fp16 to `value` by search over the ordered positive encodings, ties to the even
// encoding; 0x7C00 stands for 65536 while rounding, which makes overflow round to inf exactly
// when IEEE says (at 65520 and above).
uint16_t EncodeHalfReference(float value) {
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  const double magnitude = std::fabs(static_cast<double>(value));
  auto value_of = [](uint32_t bits) { return bits == 0x7C00 ? 65536.0 : DecodeHalf(bits); };
  if (magnitude >= 65536.0) return sign | 0x7C00;
  uint32_t low = 0;
  uint32_t high = 0x7C00;
  while (high - low > 1) {  // invariant: value_of(low) <= magnitude < value_of(high)
    const uint32_t middle = (low + high) / 2;
    if (value_of(middle) <= magnitude) {
      low = middle;
    } else {
      high = middle;
    }
  }
  const double below = magnitude - value_of(low);
  const double above = value_of(high) - magnitude;
  const uint32_t nearest = below < above ? low : above < below ? high : (low % 2 == 0 ? low : high);
  return static_cast<uint16_t>(sign | nearest);
}

// Nearest bf16 by comparing the two candidates exactly in double, ties to even.
uint16_t EncodeBFloat16Reference(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t truncated = bits >> 16;
  const double low = std::fabs(static_cast<double>(std::bit_cast<float>(truncated << 16)));
  // One past the largest finite bf16 is inf; for rounding it stands for 2^128, so values at or
  // above the midpoint round to inf as IEEE says.
  const float next = std::bit_cast<float>((truncated + 1) << 16);
  const double high =
      std::isinf(next) ? std::ldexp(1.0, 128) : std::fabs(static_cast<double>(next));
  const double magnitude = std::fabs(static_cast<double>(value));
  const double below = magnitude - low;
  const double above = high - magnitude;
  const bool round_up = above < below || (above == below && (truncated & 1) != 0);
  return static_cast<uint16_t>(round_up ? truncated + 1 : truncated);
}

bool IsHalfNan(uint16_t bits) { return (bits & 0x7FFF) > 0x7C00; }
bool IsBFloat16Nan(uint16_t bits) { return (bits & 0x7FFF) > 0x7F80; }

TEST(Conversions, KnownHalfPatterns) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);  // largest finite
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);  // below the overflow midpoint
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // the midpoint rounds to even: inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7C00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);         // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);         // smallest denormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);         // tie between 0 and 2^-24: even
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -26)), 0x0001);         // above the tie
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);         // tie between 1 and 2 ulps: even
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.0f, -24)), 0x03FF);      // largest denormal
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie: even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // tie: even (up)
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3C01);
  EXPECT_EQ(FloatToHalf(1.0f / 3.0f), 0x3555);
  EXPECT_TRUE(IsHalfNan(FloatToHalf(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(IsHalfNan(FloatToHalf(-std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::quiet_NaN()) & 0x8000, 0x8000);
  // A NaN whose payload lies only in bits fp16 drops must still be NaN, not inf.
  EXPECT_TRUE(IsHalfNan(FloatToHalf(std::bit_cast<float>(0x7F800001u))));

  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(std::bit_cast<uint32_t>(HalfToFloat(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7C01)));  // signalling NaN stays NaN
}

TEST(Conversions, KnownBFloat16Patterns) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToBFloat16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);  // tie: even
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(3.0f, -8)), 0x3F82);  // tie: even (up)
  EXPECT_EQ(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7F80);  // rounds to inf
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x00010000u)), 0x0001);  // denormal
  EXPECT_TRUE(IsBFloat16Nan(FloatToBFloat16(std::numeric_limits<float>::quiet_NaN())));
  // Payload only in the dropped bits, and the all-ones payload that would carry into inf.
  EXPECT_TRUE(IsBFloat16Nan(FloatToBFloat16(std::bit_cast<float>(0x7F800001u))));
  EXPECT_TRUE(IsBFloat16Nan(FloatToBFloat16(std::bit_cast<float>(0x7FFFFFFFu))));
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0xFFFFFFFFu)) & 0x8000, 0x8000);

  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(0x7FC0)));
}

TEST(Conversions, EveryHalfDecodesExactlyAndRoundTrips) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const uint16_t half = static_cast<uint16_t>(bits);
    const float value = HalfToFloat(half);
    const double expected = DecodeHalf(half);
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(value)) << std::hex << bits;
      ASSERT_TRUE(IsHalfNan(FloatToHalf(value))) << std::hex << bits;
      continue;
    }
    ASSERT_EQ(static_cast<double>(value), expected) << std::hex << bits;
    ASSERT_EQ(std::signbit(value), (bits & 0x8000) != 0) << std::hex << bits;
    ASSERT_EQ(FloatToHalf(value), half) << std::hex << bits;
  }
}

// Every rounding boundary: for each pair of neighbouring fp16 values, the midpoint (a tie,
// exactly representable in fp32) and the floats just either side of it.
TEST(Conversions, HalfRoundsToNearestEvenAtEveryBoundary) {
  for (uint32_t bits = 0; bits < 0x7C00; ++bits) {
    const float low = HalfToFloat(static_cast<uint16_t>(bits));
    const float high = bits + 1 == 0x7C00 ? 65536.0f : HalfToFloat(static_cast<uint16_t>(bits + 1));
    const float middle = low + (high - low) / 2;
    for (float value : {middle, std::nextafter(middle, 0.0f), std::nextafter(middle, 1e9f)}) {
      for (float signed_value : {value, -value}) {
        ASSERT_EQ(FloatToHalf(signed_value), EncodeHalfReference(signed_value))
            << std::hexfloat << signed_value;
      }
    }
  }
}

TEST(Conversions, RandomFloatsMatchReferences) {
  std::mt19937 rng(12345);
  for (int i = 0; i < 300'000; ++i) {
    const uint32_t bits = rng();
    const float value = std::bit_cast<float>(bits);
    if (std::isnan(value)) {
      ASSERT_TRUE(IsHalfNan(FloatToHalf(value))) << std::hex << bits;
      ASSERT_TRUE(IsBFloat16Nan(FloatToBFloat16(value))) << std::hex << bits;
      continue;
    }
    ASSERT_EQ(FloatToBFloat16(value), EncodeBFloat16Reference(value)) << std::hex << bits;
    // Also values near fp16's range, where random bit patterns rarely land.
    const float near_range = std::ldexp(static_cast<float>(bits % 4096) / 4096.0f + 1.0f,
                                        static_cast<int>(bits % 48) - 30);
    for (float candidate : {value, near_range, -near_range}) {
      ASSERT_EQ(FloatToHalf(candidate), EncodeHalfReference(candidate))
          << std::hexfloat << candidate;
    }
  }
}

}  // namespace
}  // namespace cohort
