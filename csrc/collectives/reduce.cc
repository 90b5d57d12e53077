// CPU reduce kernels: one table of (data type, reduce op) -> loop, compiled once per instruction
// set (baseline, AVX2, AVX-512) from the same plain C++ and chosen once from what the CPU runs.
//
// The loops are written so GCC auto-vectorizes them at -O3: each per-ISA entry point carries a
// target attribute and inlines the same always_inline body, so one source yields three builds.
// fp16 and bf16 compute in fp32 and round once. They convert with bit manipulation (vectorizable,
// exact, and indifferent to the flush-to-zero / denormals-are-zero modes torch may set), except
// fp16 on the x86 levels, which convert 8 values per instruction with F16C.

// GCC's unroll-and-jam (on at -O3) fuses ReduceMany's one-input-per-pass loops in pairs into a
// loop it then leaves scalar, which made five or more inputs 4-5x slower per element. Set before
// the includes so every function in this file, inlined header code too, has the same options.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-loop-unroll-and-jam")
#endif

#include "collectives/reduce.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"

#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace cohort {
namespace {

// ---------------------------------------------------------------------------------------------
// Conversions. Kept always_inline so they vectorize inside the loops that call them.

// Half -> float without branches (after Maratyszcza's FP16 library): every half is exactly
// representable as a float, so this is exact, and NaN stays NaN.
[[gnu::always_inline]] inline float HalfBitsToFloat(uint16_t half) {
  const uint32_t shifted = static_cast<uint32_t>(half) << 16;
  const uint32_t sign = shifted & 0x80000000u;
  const uint32_t magnitude = shifted + shifted;  // drops the sign bit
  // Normal, inf and NaN: move exponent and mantissa into float position with an exponent offset
  // that maps half's all-ones exponent onto float's, then rescale by 2^-112 (exact) to fix the
  // bias. Inf and NaN stay inf and NaN under the scaling.
  const float normal =
      std::bit_cast<float>((magnitude >> 4) + (0xE0u << 23)) * std::bit_cast<float>(0x07800000u);
  // Zero and denormal: put the mantissa under the exponent of 0.5 and subtract 0.5 (exact).
  const float denormal = std::bit_cast<float>((magnitude >> 17) | (126u << 23)) - 0.5f;
  // Select with a mask rather than ?: so GCC keeps both (cheap) paths and vectorizes; with ?:
  // it sinks each float op into a branch and, honouring FP traps, cannot if-convert back.
  const uint32_t denormal_mask = 0u - static_cast<uint32_t>(magnitude < (1u << 27));
  return std::bit_cast<float>(sign | (std::bit_cast<uint32_t>(denormal) & denormal_mask) |
                              (std::bit_cast<uint32_t>(normal) & ~denormal_mask));
}

// Float -> half, round to nearest even, without branches (after Maratyszcza's FP16 library). The
// hardware does the rounding: adding a float whose ulp equals the target half ulp makes the FPU
// round the mantissa to nearest even, and values past half's range saturate to inf through the
// 2^112 scaling. Needs the default rounding mode, which the library never changes.
[[gnu::always_inline]] inline uint16_t FloatToHalfBits(float value) {
  const float scale_to_inf = std::bit_cast<float>(0x77800000u);   // 2^112
  const float scale_to_zero = std::bit_cast<float>(0x08800000u);  // 2^-110
  float base = (std::fabs(value) * scale_to_inf) * scale_to_zero;
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t magnitude = bits + bits;  // drops the sign bit
  const uint32_t sign = bits & 0x80000000u;
  uint32_t bias = magnitude & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;  // below half's normal range: denormal ulp
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const uint32_t rounded = std::bit_cast<uint32_t>(base);
  const uint32_t exponent_bits = (rounded >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = rounded & 0x00000FFFu;  // a carry here bumps the exponent
  const uint32_t nonsign = exponent_bits + mantissa_bits;
  // A mask, not ?:, for the same reason as in HalfBitsToFloat.
  const uint32_t nan_mask = 0u - static_cast<uint32_t>(magnitude > 0xFF000000u);
  return static_cast<uint16_t>((sign >> 16) | (0x7E00u & nan_mask) | (nonsign & ~nan_mask));
}

// bf16 is the top half of a float.
[[gnu::always_inline]] inline float BFloat16BitsToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

[[gnu::always_inline]] inline uint16_t FloatToBFloat16Bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; a carry into the
  // exponent is right (next binade, or inf past the largest finite bf16).
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  // A NaN could round into inf; keep it NaN (quiet bit set, sign and top payload kept).
  const uint32_t nan = (bits >> 16) | 0x40u;
  const bool is_nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(is_nan ? nan : rounded);
}

// ---------------------------------------------------------------------------------------------
// Element types: how each DataType is stored and in which type it is computed.

template <typename T>
struct NativeTraits {
  using Storage = T;
  using Compute = T;
  [[gnu::always_inline]] static Compute Load(Storage value) { return value; }
  [[gnu::always_inline]] static Storage Store(Compute value) { return value; }
};

template <DataType kType>
struct Traits;
template <>
struct Traits<DataType::kFloat32> : NativeTraits<float> {};
template <>
struct Traits<DataType::kFloat64> : NativeTraits<double> {};
template <>
struct Traits<DataType::kInt8> : NativeTraits<int8_t> {};
template <>
struct Traits<DataType::kUInt8> : NativeTraits<uint8_t> {};
template <>
struct Traits<DataType::kInt32> : NativeTraits<int32_t> {};
template <>
struct Traits<DataType::kInt64> : NativeTraits<int64_t> {};
// torch stores bool as one byte holding 0 or 1; the logical ops below also accept any nonzero.
template <>
struct Traits<DataType::kBool> : NativeTraits<uint8_t> {};
template <>
struct Traits<DataType::kFloat16> {
  using Storage = uint16_t;
  using Compute = float;
  [[gnu::always_inline]] static Compute Load(Storage value) { return HalfBitsToFloat(value); }
  [[gnu::always_inline]] static Storage Store(Compute value) { return FloatToHalfBits(value); }
};
template <>
struct Traits<DataType::kBFloat16> {
  using Storage = uint16_t;
  using Compute = float;
  [[gnu::always_inline]] static Compute Load(Storage value) { return BFloat16BitsToFloat(value); }
  [[gnu::always_inline]] static Storage Store(Compute value) { return FloatToBFloat16Bits(value); }
};

// ---------------------------------------------------------------------------------------------
// Reduce ops on the compute type. Integer sum and product wrap (two's complement) like torch;
// they go through the unsigned type because signed overflow is undefined in C++.

template <typename T>
using Unsigned = std::make_unsigned_t<T>;

struct SumOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(
          static_cast<Unsigned<T>>(static_cast<Unsigned<T>>(a) + static_cast<Unsigned<T>>(b)));
    } else {
      return a + b;
    }
  }
};

struct ProdOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(
          static_cast<Unsigned<T>>(static_cast<Unsigned<T>>(a) * static_cast<Unsigned<T>>(b)));
    } else {
      return a * b;
    }
  }
};

// Floating min and max propagate NaN from either side, like torch.minimum / torch.maximum
// (std::min would return whichever argument the comparison happens to favour).
struct MinOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a < b || a != a) ? a : b;
    } else {
      return a < b ? a : b;
    }
  }
};

struct MaxOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a > b || a != a) ? a : b;
    } else {
      return a > b ? a : b;
    }
  }
};

struct BandOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    return static_cast<T>(a & b);
  }
};

struct BorOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    return static_cast<T>(a | b);
  }
};

struct BxorOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    return static_cast<T>(a ^ b);
  }
};

// bool: min and band are logical and, max and bor logical or; results are 0 or 1.
struct LogicalAndOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    return static_cast<T>((a != 0) & (b != 0));
  }
};

struct LogicalOrOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    return static_cast<T>((a != 0) | (b != 0));
  }
};

struct LogicalXorOp {
  template <typename T>
  [[gnu::always_inline]] static T Apply(T a, T b) {
    return static_cast<T>((a != 0) ^ (b != 0));
  }
};

// ---------------------------------------------------------------------------------------------
// Loops. `__restrict` is only declared where the pointers cannot alias, which is what lets GCC
// vectorize without a runtime overlap check; ReduceBody picks the loop after comparing pointers.

template <class T, class Op>
[[gnu::always_inline]] inline void DisjointLoop(typename T::Storage* __restrict out,
                                                const typename T::Storage* __restrict a,
                                                const typename T::Storage* __restrict b,
                                                size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = T::Store(Op::Apply(T::Load(a[i]), T::Load(b[i])));
}

// inout[i] = op(inout[i], other[i]) (or with the operands swapped): the in-place case out == a
// (or out == b). Keeping the operand order matters for which NaN or signed zero comes out.
template <class T, class Op, bool kInoutFirst>
[[gnu::always_inline]] inline void InPlaceLoop(typename T::Storage* __restrict inout,
                                               const typename T::Storage* __restrict other,
                                               size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const auto x = T::Load(inout[i]);
    const auto y = T::Load(other[i]);
    inout[i] = T::Store(kInoutFirst ? Op::Apply(x, y) : Op::Apply(y, x));
  }
}

// Any other overlap (out == a == b, or ranges that overlap at an offset). Each element is read
// before it is written, which is right for exact aliasing; GCC versions this loop with a runtime
// overlap check and falls back to scalar code where vectors would be wrong.
template <class T, class Op>
[[gnu::always_inline]] inline void AliasedLoop(typename T::Storage* out,
                                               const typename T::Storage* a,
                                               const typename T::Storage* b, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = T::Store(Op::Apply(T::Load(a[i]), T::Load(b[i])));
}

inline bool Overlaps(const void* x, const void* y, size_t bytes) {
  const auto xs = reinterpret_cast<uintptr_t>(x);
  const auto ys = reinterpret_cast<uintptr_t>(y);
  return xs < ys + bytes && ys < xs + bytes;
}

template <DataType kType, class Op>
[[gnu::always_inline]] inline void ElementwiseReduce(void* out_ptr, const void* a_ptr,
                                                     const void* b_ptr, size_t count) {
  using T = Traits<kType>;
  using S = typename T::Storage;
  auto* out = static_cast<S*>(out_ptr);
  const auto* a = static_cast<const S*>(a_ptr);
  const auto* b = static_cast<const S*>(b_ptr);
  const size_t bytes = count * sizeof(S);
  if (!Overlaps(out, a, bytes) && !Overlaps(out, b, bytes)) {
    DisjointLoop<T, Op>(out, a, b, count);
  } else if (out == a && !Overlaps(out, b, bytes)) {
    InPlaceLoop<T, Op, true>(out, b, count);
  } else if (out == b && !Overlaps(out, a, bytes)) {
    InPlaceLoop<T, Op, false>(out, a, count);
  } else {
    AliasedLoop<T, Op>(out, a, b, count);
  }
}

// The three block steps of ReduceMany for one type, as plain loops the level's target vectorizes.
template <DataType kType>
struct ElementwiseBlocks {
  using T = Traits<kType>;
  using S = typename T::Storage;
  using C = typename T::Compute;

  template <class Op>
  [[gnu::always_inline]] static void FirstPair(C* __restrict acc, const S* __restrict a,
                                               const S* __restrict b, size_t count) {
    for (size_t i = 0; i < count; ++i) acc[i] = Op::Apply(T::Load(a[i]), T::Load(b[i]));
  }
  template <class Op>
  [[gnu::always_inline]] static void Accumulate(C* __restrict acc, const S* __restrict input,
                                                size_t count) {
    for (size_t i = 0; i < count; ++i) acc[i] = Op::Apply(acc[i], T::Load(input[i]));
  }
  [[gnu::always_inline]] static void Store(S* __restrict out, const C* __restrict acc,
                                           size_t count) {
    for (size_t i = 0; i < count; ++i) out[i] = T::Store(acc[i]);
  }
};

#if defined(__x86_64__)
// fp16 with F16C: vcvtph2ps / vcvtps2ph convert 8 values per instruction where the bit
// manipulation takes about twenty, which is what keeps fp16 memory-bound. GCC does not vectorize
// conversions through the intrinsics, so each step converts 8 values into a small fp32 array,
// applies the op elementwise (which GCC turns into one vector op, kept in registers) and converts
// back, fused in one pass; staging whole blocks through L1 instead cost a third of the bandwidth.
// The last few values go through zero-padded copies so they take the same instructions (a scalar
// tail loop also stopped GCC from vectorizing the steps). Results equal the bit manipulation's:
// both are exact, round to nearest even and keep NaN a NaN. The entry points are called, not
// inlined, because GCC will not inline F16C code through the target-less bodies leading to them.
struct F16cHalf {
  static constexpr size_t kStep = 8;

  [[gnu::target("avx2,f16c"), gnu::always_inline]] static void ToFloatStep(float* out,
                                                                           const uint16_t* in) {
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in))));
  }
  [[gnu::target("avx2,f16c"), gnu::always_inline]] static void ToHalfStep(uint16_t* out,
                                                                          const float* in) {
    // Immediate rounding control (nearest even), whatever MXCSR says.
    const __m128i half = _mm256_cvtps_ph(_mm256_loadu_ps(in), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), half);
  }
  template <class Op>
  [[gnu::target("avx2,f16c"), gnu::always_inline]] static void ReduceStep(uint16_t* out,
                                                                          const uint16_t* a,
                                                                          const uint16_t* b) {
    float x[kStep];
    float y[kStep];
    ToFloatStep(x, a);
    ToFloatStep(y, b);
    for (size_t j = 0; j < kStep; ++j) x[j] = Op::Apply(x[j], y[j]);
    ToHalfStep(out, x);
  }
  template <class Op>
  [[gnu::target("avx2,f16c"), gnu::always_inline]] static void FirstPairStep(float* acc,
                                                                             const uint16_t* a,
                                                                             const uint16_t* b) {
    float x[kStep];
    float y[kStep];
    ToFloatStep(x, a);
    ToFloatStep(y, b);
    for (size_t j = 0; j < kStep; ++j) x[j] = Op::Apply(x[j], y[j]);
    _mm256_storeu_ps(acc, _mm256_loadu_ps(x));
  }
  // Works on a local copy of the accumulator: written through `acc` directly, GCC turns min/max
  // into conditional stores and gives up vectorizing.
  template <class Op>
  [[gnu::target("avx2,f16c"), gnu::always_inline]] static void AccumulateStep(
      float* acc, const uint16_t* input) {
    float x[kStep];
    float y[kStep];
    _mm256_storeu_ps(x, _mm256_loadu_ps(acc));
    ToFloatStep(y, input);
    for (size_t j = 0; j < kStep; ++j) x[j] = Op::Apply(x[j], y[j]);
    _mm256_storeu_ps(acc, _mm256_loadu_ps(x));
  }

  // out[i] = op(a[i], b[i]); each step reads before it writes, so out may be a or b.
  template <class Op>
  [[gnu::target("avx2,f16c"), gnu::noinline]] static void Reduce(void* out_ptr, const void* a_ptr,
                                                                 const void* b_ptr, size_t count) {
    auto* out = static_cast<uint16_t*>(out_ptr);
    const auto* a = static_cast<const uint16_t*>(a_ptr);
    const auto* b = static_cast<const uint16_t*>(b_ptr);
    size_t i = 0;
    for (; i + kStep <= count; i += kStep) ReduceStep<Op>(out + i, a + i, b + i);
    if (i == count) return;
    const size_t rest = count - i;
    uint16_t padded_a[kStep] = {};
    uint16_t padded_b[kStep] = {};
    uint16_t padded_out[kStep];
    std::memcpy(padded_a, a + i, rest * sizeof(uint16_t));
    std::memcpy(padded_b, b + i, rest * sizeof(uint16_t));
    ReduceStep<Op>(padded_out, padded_a, padded_b);
    std::memcpy(out + i, padded_out, rest * sizeof(uint16_t));
  }

  template <class Op>
  [[gnu::target("avx2,f16c"), gnu::noinline]] static void FirstPair(float* __restrict acc,
                                                                    const uint16_t* __restrict a,
                                                                    const uint16_t* __restrict b,
                                                                    size_t count) {
    size_t i = 0;
    for (; i + kStep <= count; i += kStep) FirstPairStep<Op>(acc + i, a + i, b + i);
    if (i == count) return;
    const size_t rest = count - i;
    uint16_t padded_a[kStep] = {};
    uint16_t padded_b[kStep] = {};
    float padded_acc[kStep];
    std::memcpy(padded_a, a + i, rest * sizeof(uint16_t));
    std::memcpy(padded_b, b + i, rest * sizeof(uint16_t));
    FirstPairStep<Op>(padded_acc, padded_a, padded_b);
    std::memcpy(acc + i, padded_acc, rest * sizeof(float));
  }

  template <class Op>
  [[gnu::target("avx2,f16c"), gnu::noinline]] static void Accumulate(
      float* __restrict acc, const uint16_t* __restrict input, size_t count) {
    size_t i = 0;
    for (; i + kStep <= count; i += kStep) AccumulateStep<Op>(acc + i, input + i);
    if (i == count) return;
    const size_t rest = count - i;
    float padded_acc[kStep] = {};
    uint16_t padded_input[kStep] = {};
    std::memcpy(padded_acc, acc + i, rest * sizeof(float));
    std::memcpy(padded_input, input + i, rest * sizeof(uint16_t));
    AccumulateStep<Op>(padded_acc, padded_input);
    std::memcpy(acc + i, padded_acc, rest * sizeof(float));
  }

  [[gnu::target("avx2,f16c"), gnu::noinline]] static void Store(uint16_t* __restrict out,
                                                                const float* __restrict acc,
                                                                size_t count) {
    size_t i = 0;
    for (; i + kStep <= count; i += kStep) ToHalfStep(out + i, acc + i);
    if (i == count) return;
    const size_t rest = count - i;
    float padded_acc[kStep] = {};
    uint16_t padded_out[kStep];
    std::memcpy(padded_acc, acc + i, rest * sizeof(float));
    ToHalfStep(padded_out, padded_acc);
    std::memcpy(out + i, padded_out, rest * sizeof(uint16_t));
  }
};
#endif

// A level's fp16 kernels: F16cHalf where the level has F16C, else the elementwise loops.
template <DataType kType, bool kF16c>
inline constexpr bool kUseF16c = kType == DataType::kFloat16&& kF16c;

template <DataType kType, class Op, bool kF16c>
[[gnu::always_inline]] inline void ReduceBody(void* out, const void* a, const void* b,
                                              size_t count) {
#if defined(__x86_64__)
  if constexpr (kUseF16c<kType, kF16c>) {
    F16cHalf::Reduce<Op>(out, a, b, count);
    return;
  }
#endif
  ElementwiseReduce<kType, Op>(out, a, b, count);
}

// ReduceMany works in blocks small enough for L1: the accumulator lives on the stack in the
// compute type (fp32 for fp16/bf16, so they round once), every input is read once and `out` is
// written once per block after all inputs were read, so `out` may be any one of the inputs.
inline constexpr size_t kManyBlockBytes = 8192;

template <DataType kType, class Op, bool kF16c>
[[gnu::always_inline]] inline void ReduceManyBody(void* out_ptr, const void* const* inputs,
                                                  int num_inputs, size_t count) {
  using S = typename Traits<kType>::Storage;
  using C = typename Traits<kType>::Compute;
#if defined(__x86_64__)
  using Blocks = std::conditional_t<kUseF16c<kType, kF16c>, F16cHalf, ElementwiseBlocks<kType>>;
#else
  using Blocks = ElementwiseBlocks<kType>;
#endif
  if (num_inputs <= 0) return;
  auto* out = static_cast<S*>(out_ptr);
  if (num_inputs == 1) {
    if (out != inputs[0]) std::memmove(out, inputs[0], count * sizeof(S));
    return;
  }
  if (num_inputs == 2) {  // one pass with no L1 detour; rounds once all the same
    ReduceBody<kType, Op, kF16c>(out_ptr, inputs[0], inputs[1], count);
    return;
  }
  constexpr size_t kBlock = kManyBlockBytes / sizeof(C);
  alignas(64) C acc[kBlock];
  for (size_t start = 0; start < count; start += kBlock) {
    const size_t length = std::min(kBlock, count - start);
    Blocks::template FirstPair<Op>(acc, static_cast<const S*>(inputs[0]) + start,
                                   static_cast<const S*>(inputs[1]) + start, length);
    for (int k = 2; k < num_inputs; ++k) {
      Blocks::template Accumulate<Op>(acc, static_cast<const S*>(inputs[k]) + start, length);
    }
    Blocks::Store(out + start, acc, length);
  }
}

// Average: floating types divide in their compute type (IEEE division, not a reciprocal
// multiply, so results match torch's true division). Integers truncate toward zero like C.
template <DataType kType>
[[gnu::always_inline]] inline void ScaleBody(void* data_ptr, size_t count, int64_t divisor) {
  using T = Traits<kType>;
  using S = typename T::Storage;
  using C = typename T::Compute;
  auto* data = static_cast<S*>(data_ptr);
  if constexpr (kType == DataType::kBool) {
    return;  // avg is not defined for bool (CheckReduceSupported rejects it)
  } else if constexpr (std::is_floating_point_v<C>) {
    const C scale = static_cast<C>(divisor);
    for (size_t i = 0; i < count; ++i) data[i] = T::Store(T::Load(data[i]) / scale);
  } else {
    if (divisor == 0) return;
    if (divisor == -1) {  // the one quotient that can overflow (INT_MIN / -1); it wraps
      for (size_t i = 0; i < count; ++i) data[i] = ProdOp::Apply<S>(data[i], static_cast<S>(-1));
      return;
    }
    if constexpr (sizeof(S) <= 4) {
      // x86 has no vector integer division; double division vectorizes and is exact here: for
      // |x| < 2^31 a quotient just below an integer k is at least 1/|divisor| below it, far more
      // than half an ulp of k, so truncating the rounded quotient gives C's result. |quotient| <=
      // |x| (divisor is not 0 or -1), so it fits int32; uint8 with a negative divisor then wraps
      // like C's conversion of the negative quotient.
      const double scale = static_cast<double>(divisor);
      for (size_t i = 0; i < count; ++i) {
        data[i] = static_cast<S>(static_cast<int32_t>(static_cast<double>(data[i]) / scale));
      }
    } else {
      for (size_t i = 0; i < count; ++i) data[i] = static_cast<S>(data[i] / divisor);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Per-ISA entry points: the same bodies, inlined into functions compiled for each target.

#define COHORT_DEFINE_REDUCE_ISA(Name, Attribute, kF16c)                                   \
  struct Name {                                                                            \
    template <DataType kType, class Op>                                                    \
    Attribute static void Reduce(void* out, const void* a, const void* b, size_t count) {  \
      ReduceBody<kType, Op, kF16c>(out, a, b, count);                                      \
    }                                                                                      \
    template <DataType kType, class Op>                                                    \
    Attribute static void ReduceMany(void* out, const void* const* inputs, int num_inputs, \
                                     size_t count) {                                       \
      ReduceManyBody<kType, Op, kF16c>(out, inputs, num_inputs, count);                    \
    }                                                                                      \
    template <DataType kType>                                                              \
    Attribute static void Scale(void* data, size_t count, int64_t divisor) {               \
      ScaleBody<kType>(data, count, divisor);                                              \
    }                                                                                      \
  }

COHORT_DEFINE_REDUCE_ISA(BaselineIsa, , false);
#if defined(__x86_64__)
COHORT_DEFINE_REDUCE_ISA(Avx2Isa, [[gnu::target("avx2,fma,f16c")]], true);
// GCC's generic tuning stays at 256-bit vectors even with AVX-512 enabled; ask for 512 (clang
// spells that differently and rejects GCC's spelling).
#define COHORT_AVX512_TARGETS "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"
#if defined(__clang__)
#define COHORT_AVX512_ATTRIBUTE [[gnu::target(COHORT_AVX512_TARGETS), clang::min_vector_width(512)]]
#else
#define COHORT_AVX512_ATTRIBUTE [[gnu::target(COHORT_AVX512_TARGETS ",prefer-vector-width=512")]]
#endif
COHORT_DEFINE_REDUCE_ISA(Avx512Isa, COHORT_AVX512_ATTRIBUTE, true);
#undef COHORT_AVX512_ATTRIBUTE
#undef COHORT_AVX512_TARGETS
#endif
#undef COHORT_DEFINE_REDUCE_ISA

// ---------------------------------------------------------------------------------------------
// Streaming copies: stores that bypass the caches (non-temporal), for results too large to stay
// in cache. A plain store first reads the destination line (a write-allocate) and later writes it
// back; a streaming store writes the line once. Each level streams in its widest register; the
// head up to the first 64-byte boundary and the tail go through memcpy. Ends with a store fence,
// so the data is visible to other cores before anything this thread writes afterwards.

#if defined(__x86_64__)
// One body per level (a macro: a shared template could not inline each level's intrinsics).
// `Vector` is the register type, `LOAD(p)` an unaligned load from char* p, `STREAM(p, v)` a
// streaming store to 64-byte aligned char* p.
#define COHORT_STREAM_COPY(Name, Attribute, Vector, LOAD, STREAM)                           \
  Attribute void Name(void* to_ptr, const void* from_ptr, size_t bytes) {                  \
    auto* to = static_cast<char*>(to_ptr);                                                 \
    const auto* from = static_cast<const char*>(from_ptr);                                 \
    const size_t head = std::min(bytes, (64 - reinterpret_cast<uintptr_t>(to) % 64) % 64); \
    std::memcpy(to, from, head);                                                           \
    to += head;                                                                            \
    from += head;                                                                          \
    bytes -= head;                                                                         \
    constexpr size_t kWidth = sizeof(Vector);                                              \
    constexpr size_t kUnroll = 256 / kWidth; /* four cache lines per round */              \
    for (; bytes >= 256; bytes -= 256, to += 256, from += 256) {                           \
      Vector lanes[kUnroll];                                                               \
      for (size_t i = 0; i < kUnroll; ++i) lanes[i] = LOAD(from + i * kWidth);             \
      for (size_t i = 0; i < kUnroll; ++i) STREAM(to + i * kWidth, lanes[i]);              \
    }                                                                                      \
    for (; bytes >= kWidth; bytes -= kWidth, to += kWidth, from += kWidth) {               \
      STREAM(to, LOAD(from));                                                              \
    }                                                                                      \
    std::memcpy(to, from, bytes);                                                          \
    _mm_sfence();                                                                          \
  }

#define COHORT_LOAD_SSE2(p) _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
#define COHORT_STREAM_SSE2(p, v) _mm_stream_si128(reinterpret_cast<__m128i*>(p), v)
#define COHORT_LOAD_AVX2(p) _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
#define COHORT_STREAM_AVX2(p, v) _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v)
#define COHORT_LOAD_AVX512(p) _mm512_loadu_si512(p)
#define COHORT_STREAM_AVX512(p, v) _mm512_stream_si512(reinterpret_cast<__m512i*>(p), v)
COHORT_STREAM_COPY(StreamCopyBaseline, , __m128i, COHORT_LOAD_SSE2, COHORT_STREAM_SSE2)
COHORT_STREAM_COPY(StreamCopyAvx2, [[gnu::target("avx2")]], __m256i, COHORT_LOAD_AVX2,
                   COHORT_STREAM_AVX2)
COHORT_STREAM_COPY(StreamCopyAvx512, [[gnu::target("avx512f")]], __m512i, COHORT_LOAD_AVX512,
                   COHORT_STREAM_AVX512)
#undef COHORT_LOAD_SSE2
#undef COHORT_STREAM_SSE2
#undef COHORT_LOAD_AVX2
#undef COHORT_STREAM_AVX2
#undef COHORT_LOAD_AVX512
#undef COHORT_STREAM_AVX512
#undef COHORT_STREAM_COPY
#else
// Elsewhere memcpy (which may stream large copies itself).
void StreamCopyBaseline(void* to, const void* from, size_t bytes) {
  std::memcpy(to, from, bytes);
}
#endif

// ---------------------------------------------------------------------------------------------
// The table. An entry is supported exactly when it is non-null; the error messages list the
// accepted ops from the table, so the two cannot disagree.

using ScaleFn = void (*)(void* data, size_t count, int64_t divisor);

struct Kernels {
  ReduceFn reduce = nullptr;
  ReduceManyFn reduce_many = nullptr;
};

struct IsaTable {
  std::array<Kernels, kNumDataTypes * kNumReduceOps> kernels{};
  std::array<ScaleFn, kNumDataTypes> scale{};

  constexpr const Kernels& At(DataType type, ReduceOp op) const {
    return kernels[static_cast<int>(type) * kNumReduceOps + static_cast<int>(op)];
  }
};

template <class Isa, DataType kType, class Op>
constexpr void Set(IsaTable& table, ReduceOp op) {
  table.kernels[static_cast<int>(kType) * kNumReduceOps + static_cast<int>(op)] = {
      &Isa::template Reduce<kType, Op>, &Isa::template ReduceMany<kType, Op>};
}

template <class Isa, DataType kType>
constexpr void SetArithmetic(IsaTable& table) {
  Set<Isa, kType, SumOp>(table, ReduceOp::kSum);
  Set<Isa, kType, ProdOp>(table, ReduceOp::kProd);
  Set<Isa, kType, MinOp>(table, ReduceOp::kMin);
  Set<Isa, kType, MaxOp>(table, ReduceOp::kMax);
  Set<Isa, kType, SumOp>(table, ReduceOp::kAvg);  // the sum; ScaleForAverage finishes it
  table.scale[static_cast<int>(kType)] = &Isa::template Scale<kType>;
}

template <class Isa, DataType kType>
constexpr void SetBitwise(IsaTable& table) {
  Set<Isa, kType, BandOp>(table, ReduceOp::kBand);
  Set<Isa, kType, BorOp>(table, ReduceOp::kBor);
  Set<Isa, kType, BxorOp>(table, ReduceOp::kBxor);
}

template <class Isa>
constexpr IsaTable MakeTable() {
  IsaTable table;
  SetArithmetic<Isa, DataType::kFloat32>(table);
  SetArithmetic<Isa, DataType::kFloat64>(table);
  SetArithmetic<Isa, DataType::kFloat16>(table);
  SetArithmetic<Isa, DataType::kBFloat16>(table);
  SetArithmetic<Isa, DataType::kInt8>(table);
  SetArithmetic<Isa, DataType::kUInt8>(table);
  SetArithmetic<Isa, DataType::kInt32>(table);
  SetArithmetic<Isa, DataType::kInt64>(table);
  SetBitwise<Isa, DataType::kInt8>(table);
  SetBitwise<Isa, DataType::kUInt8>(table);
  SetBitwise<Isa, DataType::kInt32>(table);
  SetBitwise<Isa, DataType::kInt64>(table);
  Set<Isa, DataType::kBool, LogicalAndOp>(table, ReduceOp::kMin);
  Set<Isa, DataType::kBool, LogicalOrOp>(table, ReduceOp::kMax);
  Set<Isa, DataType::kBool, LogicalAndOp>(table, ReduceOp::kBand);
  Set<Isa, DataType::kBool, LogicalOrOp>(table, ReduceOp::kBor);
  Set<Isa, DataType::kBool, LogicalXorOp>(table, ReduceOp::kBxor);
  return table;
}

constexpr IsaTable kBaselineTable = MakeTable<BaselineIsa>();
#if defined(__x86_64__)
constexpr IsaTable kAvx2Table = MakeTable<Avx2Isa>();
constexpr IsaTable kAvx512Table = MakeTable<Avx512Isa>();
#endif

#if defined(__x86_64__)
// From CPUID directly: clang's __builtin_cpu_supports does not know "f16c". The OS-state check
// F16C needs (AVX enabled in XCR0) is part of the avx2 check it is always combined with.
bool CpuHasF16c() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

bool CpuRuns(ReduceIsa isa) {
  switch (isa) {
    case ReduceIsa::kBaseline:
      return true;
#if defined(__x86_64__)
    // libgcc's checks include the OS enabling the AVX / AVX-512 register state (XCR0).
    case ReduceIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && CpuHasF16c();
    case ReduceIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             CpuHasF16c();
#endif
    default:
      return false;
  }
}

const IsaTable* TableFor(ReduceIsa isa) {
  if (!ReduceIsaAvailable(isa)) return nullptr;
  switch (isa) {
    case ReduceIsa::kBaseline:
      return &kBaselineTable;
#if defined(__x86_64__)
    case ReduceIsa::kAvx2:
      return &kAvx2Table;
    case ReduceIsa::kAvx512:
      return &kAvx512Table;
#endif
    default:
      return nullptr;
  }
}

const IsaTable& BestTable() {
  static const IsaTable* const table = TableFor(BestReduceIsa());
  return *table;
}

bool ValidPair(DataType type, ReduceOp op) {
  return static_cast<int>(type) < kNumDataTypes && static_cast<int>(op) < kNumReduceOps;
}

}  // namespace

const char* ReduceIsaName(ReduceIsa isa) {
  switch (isa) {
    case ReduceIsa::kBaseline:
      return "baseline";
    case ReduceIsa::kAvx2:
      return "avx2";
    case ReduceIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool ReduceIsaAvailable(ReduceIsa isa) {
  static const std::array<bool, kNumReduceIsas> available = [] {
    std::array<bool, kNumReduceIsas> result{};
    for (int i = 0; i < kNumReduceIsas; ++i) result[i] = CpuRuns(static_cast<ReduceIsa>(i));
    return result;
  }();
  const int index = static_cast<int>(isa);
  return index < kNumReduceIsas && available[index];
}

ReduceIsa BestReduceIsa() {
  static const ReduceIsa best = [] {
    for (int i = kNumReduceIsas - 1; i > 0; --i) {
      if (ReduceIsaAvailable(static_cast<ReduceIsa>(i))) return static_cast<ReduceIsa>(i);
    }
    return ReduceIsa::kBaseline;
  }();
  return best;
}

absl::Status CheckReduceSupported(DataType type, ReduceOp op) {
  if (static_cast<int>(type) >= kNumDataTypes) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown data type ", static_cast<int>(type), " for a reduction"));
  }
  if (static_cast<int>(op) >= kNumReduceOps) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown reduce op ", static_cast<int>(op), " for ", DataTypeName(type)));
  }
  if (kBaselineTable.At(type, op).reduce != nullptr) return absl::OkStatus();
  std::string accepted;
  for (int i = 0; i < kNumReduceOps; ++i) {
    const auto candidate = static_cast<ReduceOp>(i);
    if (kBaselineTable.At(type, candidate).reduce == nullptr) continue;
    absl::StrAppend(&accepted, accepted.empty() ? "" : ", ", ReduceOpName(candidate));
  }
  return absl::InvalidArgumentError(absl::StrCat("reduce op ", ReduceOpName(op),
                                                 " is not defined for ", DataTypeName(type), "; ",
                                                 DataTypeName(type), " accepts ", accepted));
}

ReduceFn GetReduceFn(DataType type, ReduceOp op) {
  return ValidPair(type, op) ? BestTable().At(type, op).reduce : nullptr;
}

ReduceManyFn GetReduceManyFn(DataType type, ReduceOp op) {
  return ValidPair(type, op) ? BestTable().At(type, op).reduce_many : nullptr;
}

ReduceFn GetReduceFn(DataType type, ReduceOp op, ReduceIsa isa) {
  const IsaTable* table = TableFor(isa);
  return table != nullptr && ValidPair(type, op) ? table->At(type, op).reduce : nullptr;
}

ReduceManyFn GetReduceManyFn(DataType type, ReduceOp op, ReduceIsa isa) {
  const IsaTable* table = TableFor(isa);
  return table != nullptr && ValidPair(type, op) ? table->At(type, op).reduce_many : nullptr;
}

void ScaleForAverage(void* data, DataType type, size_t count, int64_t divisor) {
  ScaleForAverage(data, type, count, divisor, BestReduceIsa());
}

void ScaleForAverage(void* data, DataType type, size_t count, int64_t divisor, ReduceIsa isa) {
  const IsaTable* table = TableFor(isa);
  if (table == nullptr || static_cast<int>(type) >= kNumDataTypes) return;
  const ScaleFn scale = table->scale[static_cast<int>(type)];
  if (scale != nullptr) scale(data, count, divisor);
}

StreamCopyFn GetStreamCopyFn(ReduceIsa isa) {
  if (!ReduceIsaAvailable(isa)) return nullptr;
  switch (isa) {
    case ReduceIsa::kBaseline:
      return &StreamCopyBaseline;
#if defined(__x86_64__)
    case ReduceIsa::kAvx2:
      return &StreamCopyAvx2;
    case ReduceIsa::kAvx512:
      return &StreamCopyAvx512;
#endif
    default:
      return nullptr;
  }
}

StreamCopyFn GetStreamCopyFn() {
  static const StreamCopyFn best = GetStreamCopyFn(BestReduceIsa());
  return best;
}

size_t LastLevelCacheBytes() {
  static const size_t bytes = [] {
    // sysfs first: under a hypervisor CPUID (which the C library reads) may describe the
    // host's caches rather than this machine's share (384 MiB for a 32 MiB L3 has been seen).
    size_t largest = 0;
    for (int index = 0; index < 16; ++index) {
      const std::string base =
          absl::StrCat("/sys/devices/system/cpu/cpu0/cache/index", index, "/");
      std::ifstream level_file(base + "level");
      std::ifstream size_file(base + "size");
      int level = 0;
      std::string size;
      if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
      size_t value = std::strtoull(size.c_str(), nullptr, 10);
      if (size.back() == 'K') value <<= 10;
      if (size.back() == 'M') value <<= 20;
      if (level >= 2) largest = std::max(largest, value);
    }
    if (largest > 0) return largest;
    const long reported = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return reported > 0 ? static_cast<size_t>(reported) : size_t{32} << 20;
  }();
  return bytes;
}

float HalfToFloat(uint16_t bits) { return HalfBitsToFloat(bits); }
uint16_t FloatToHalf(float value) { return FloatToHalfBits(value); }
float BFloat16ToFloat(uint16_t bits) { return BFloat16BitsToFloat(bits); }
uint16_t FloatToBFloat16(float value) { return FloatToBFloat16Bits(value); }

}  // namespace cohort
