// What one GPU thread of the reduce, scale, cast and strided-copy kernels does, written so the host
// compiler can run it too: kernels/*.cu wrap each body in a __global__ function, and
// tests/unit/kernels_host_test.cc runs the same bodies over every simulated thread on the CPU
// against csrc/collectives/reduce.cc. Element semantics (NaN propagation, integer wrapping, fp16
// and bf16 computed in fp32 and rounded once, average as sum then divide) match reduce.cc.
//
// Work split: a buffer is cut into a scalar head (elements before every pointer reaches a 16-byte
// boundary), 16-byte packs, and a scalar tail. Packs go to threads grid-stride, 4 at a time (2 for
// 1-byte types) with all loads issued before the first use; head and tail elements go to the
// first threads.
// When the pointers disagree on their offset within 16 bytes, everything is scalar.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "collectives/reduce.h"
#include "collectives/types.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define COHORT_HD __host__ __device__ __forceinline__
#else
#define COHORT_HD inline
#endif
// Only the device pass unrolls on request (the host compiler would warn about the pragma).
#if defined(__CUDA_ARCH__)
#define COHORT_UNROLL _Pragma("unroll")
#else
#define COHORT_UNROLL
#endif

namespace cohort::cuda {

inline constexpr int kPackBytes = 16;
inline constexpr int kUnroll = 4;            // packs in flight per thread per loop step
inline constexpr int kByteUnroll = 2;        // for 1-byte types, whose 16-element packs take more
                                             // registers (4 would not fit 512 threads per block)
inline constexpr int kMaxReduceInputs = 64;  // ReduceMany inputs in one launch (kernel parameter)
inline constexpr int kMaxCopyDims = 8;       // StridedCopy dimensions after merging

template <typename To, typename From>
COHORT_HD To BitCast(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// ---------------------------------------------------------------------------------------------
// 16-bit floats. fp16 uses the hardware conversions on the device (one instruction each way,
// round to nearest even; NaN stays NaN) and reduce.cc's exact bit conversions on the host; bf16
// uses the same bit code as reduce.cc on both (a shift, and a rounding add).

COHORT_HD float HalfBitsToFloat(uint16_t bits) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(bits));
#else
  return ::cohort::HalfToFloat(bits);
#endif
}

COHORT_HD uint16_t FloatToHalfBits(float value) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(value));
#else
  return ::cohort::FloatToHalf(value);
#endif
}

COHORT_HD float BFloat16BitsToFloat(uint16_t bits) {
  return BitCast<float>(static_cast<uint32_t>(bits) << 16);
}

COHORT_HD uint16_t FloatToBFloat16Bits(float value) {
  const uint32_t bits = BitCast<uint32_t>(value);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;  // a NaN must not round into inf
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

// ---------------------------------------------------------------------------------------------
// Element types: storage, compute type, and the conversions between them.

template <typename T>
struct NativeElement {
  using Storage = T;
  using Compute = T;
  COHORT_HD static Compute Load(Storage value) { return value; }
  COHORT_HD static Storage Store(Compute value) { return value; }
};

template <DataType kType>
struct Element;
template <>
struct Element<DataType::kFloat32> : NativeElement<float> {};
template <>
struct Element<DataType::kFloat64> : NativeElement<double> {};
template <>
struct Element<DataType::kInt8> : NativeElement<int8_t> {};
template <>
struct Element<DataType::kUInt8> : NativeElement<uint8_t> {};
template <>
struct Element<DataType::kInt32> : NativeElement<int32_t> {};
template <>
struct Element<DataType::kInt64> : NativeElement<int64_t> {};
template <>
struct Element<DataType::kBool> : NativeElement<uint8_t> {};  // one byte, any nonzero is true
template <>
struct Element<DataType::kFloat16> {
  using Storage = uint16_t;
  using Compute = float;
  COHORT_HD static Compute Load(Storage value) { return HalfBitsToFloat(value); }
  COHORT_HD static Storage Store(Compute value) { return FloatToHalfBits(value); }
};
template <>
struct Element<DataType::kBFloat16> {
  using Storage = uint16_t;
  using Compute = float;
  COHORT_HD static Compute Load(Storage value) { return BFloat16BitsToFloat(value); }
  COHORT_HD static Storage Store(Compute value) { return FloatToBFloat16Bits(value); }
};

// ---------------------------------------------------------------------------------------------
// Reduce ops, as in reduce.cc: integer sum and product wrap (through the unsigned type), floating
// min and max return a NaN from either side.

template <typename T>
struct UnsignedOf {
  using type = std::make_unsigned_t<T>;
};

struct SumOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = typename UnsignedOf<T>::type;
      return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
    } else {
      return a + b;
    }
  }
};

struct ProdOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = typename UnsignedOf<T>::type;
      return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
    } else {
      return a * b;
    }
  }
};

struct MinOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a < b || a != a) ? a : b;
    } else {
      return a < b ? a : b;
    }
  }
};

struct MaxOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return (a > b || a != a) ? a : b;
    } else {
      return a > b ? a : b;
    }
  }
};

struct BandOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    return static_cast<T>(a & b);
  }
};

struct BorOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    return static_cast<T>(a | b);
  }
};

struct BxorOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    return static_cast<T>(a ^ b);
  }
};

// bool: min and band are logical and, max and bor logical or; results are 0 or 1.
struct LogicalAndOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    return static_cast<T>((a != 0) & (b != 0));
  }
};

struct LogicalOrOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    return static_cast<T>((a != 0) | (b != 0));
  }
};

struct LogicalXorOp {
  template <typename T>
  COHORT_HD static T Apply(T a, T b) {
    return static_cast<T>((a != 0) ^ (b != 0));
  }
};

// Calls `visit.template operator()<kType, Op>()` for the kernel serving (type, op), with the same
// pairs as reduce.cc's table (bool maps min/band to logical and, max/bor to or, bxor to xor; avg
// is the sum, finished by a scale). Returns false, calling nothing, for a pair reduce.cc rejects.
template <DataType kType, class Visitor>
inline bool VisitOpForType(ReduceOp op, Visitor&& visit) {
  if constexpr (kType == DataType::kBool) {
    switch (op) {
      case ReduceOp::kMin:
      case ReduceOp::kBand:
        visit.template operator()<kType, LogicalAndOp>();
        return true;
      case ReduceOp::kMax:
      case ReduceOp::kBor:
        visit.template operator()<kType, LogicalOrOp>();
        return true;
      case ReduceOp::kBxor:
        visit.template operator()<kType, LogicalXorOp>();
        return true;
      default:
        return false;
    }
  } else {
    constexpr bool kIntegral = std::is_integral_v<typename Element<kType>::Storage> &&
                               kType != DataType::kFloat16 && kType != DataType::kBFloat16;
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        visit.template operator()<kType, SumOp>();
        return true;
      case ReduceOp::kProd:
        visit.template operator()<kType, ProdOp>();
        return true;
      case ReduceOp::kMin:
        visit.template operator()<kType, MinOp>();
        return true;
      case ReduceOp::kMax:
        visit.template operator()<kType, MaxOp>();
        return true;
      case ReduceOp::kBand:
      case ReduceOp::kBor:
      case ReduceOp::kBxor:
        if constexpr (kIntegral) {
          if (op == ReduceOp::kBand) visit.template operator()<kType, BandOp>();
          if (op == ReduceOp::kBor) visit.template operator()<kType, BorOp>();
          if (op == ReduceOp::kBxor) visit.template operator()<kType, BxorOp>();
          return true;
        } else {
          return false;
        }
    }
    return false;
  }
}

// As above over every data type.
template <class Visitor>
inline bool VisitReduce(DataType type, ReduceOp op, Visitor&& visit) {
  switch (type) {
    case DataType::kFloat32:
      return VisitOpForType<DataType::kFloat32>(op, visit);
    case DataType::kFloat64:
      return VisitOpForType<DataType::kFloat64>(op, visit);
    case DataType::kFloat16:
      return VisitOpForType<DataType::kFloat16>(op, visit);
    case DataType::kBFloat16:
      return VisitOpForType<DataType::kBFloat16>(op, visit);
    case DataType::kInt8:
      return VisitOpForType<DataType::kInt8>(op, visit);
    case DataType::kUInt8:
      return VisitOpForType<DataType::kUInt8>(op, visit);
    case DataType::kInt32:
      return VisitOpForType<DataType::kInt32>(op, visit);
    case DataType::kInt64:
      return VisitOpForType<DataType::kInt64>(op, visit);
    case DataType::kBool:
      return VisitOpForType<DataType::kBool>(op, visit);
  }
  return false;
}

// Calls `visit.template operator()<kType>()` for the data type.
template <class Visitor>
inline bool VisitType(DataType type, Visitor&& visit) {
  switch (type) {
    case DataType::kFloat32:
      visit.template operator()<DataType::kFloat32>();
      return true;
    case DataType::kFloat64:
      visit.template operator()<DataType::kFloat64>();
      return true;
    case DataType::kFloat16:
      visit.template operator()<DataType::kFloat16>();
      return true;
    case DataType::kBFloat16:
      visit.template operator()<DataType::kBFloat16>();
      return true;
    case DataType::kInt8:
      visit.template operator()<DataType::kInt8>();
      return true;
    case DataType::kUInt8:
      visit.template operator()<DataType::kUInt8>();
      return true;
    case DataType::kInt32:
      visit.template operator()<DataType::kInt32>();
      return true;
    case DataType::kInt64:
      visit.template operator()<DataType::kInt64>();
      return true;
    case DataType::kBool:
      visit.template operator()<DataType::kBool>();
      return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The work split.

template <typename T, int kN>
struct alignas(kPackBytes) Pack {
  T v[kN];
};

// Elements [0, head) and [head + packs * per_pack, count) are scalar, the rest in packs.
struct Split {
  size_t head = 0;
  size_t packs = 0;
  size_t per_pack = 1;  // elements per pack
  size_t count = 0;
  COHORT_HD size_t edges() const { return count - packs * per_pack; }
  // The index of the e-th scalar element (e < edges()).
  COHORT_HD size_t EdgeIndex(size_t e) const { return e < head ? e : e + packs * per_pack; }
};

// For buffers of `element_bytes`-sized elements that move together, `per_pack` elements per pack
// (per_pack * element_bytes a power of two up to 16): packs only where every pointer reaches its
// pack boundary after the same number of elements.
inline Split SplitForPacks(const void* const* pointers, const size_t* element_bytes,
                           int num_pointers, size_t count, size_t per_pack) {
  Split split;
  split.count = count;
  split.per_pack = per_pack;
  split.head = count;  // all scalar unless the pointers agree
  size_t head = 0;
  for (int p = 0; p < num_pointers; ++p) {
    const size_t pack_bytes = per_pack * element_bytes[p];
    const size_t offset = reinterpret_cast<uintptr_t>(pointers[p]) % pack_bytes;
    const size_t to_boundary = (pack_bytes - offset) % pack_bytes;
    if (to_boundary % element_bytes[p] != 0) return split;  // not even element-aligned
    const size_t elements = to_boundary / element_bytes[p];
    if (p == 0) {
      head = elements;
    } else if (elements != head) {
      return split;
    }
  }
  if (head >= count) return split;
  split.head = head;
  split.packs = (count - head) / per_pack;
  return split;
}

// ---------------------------------------------------------------------------------------------
// Bodies. `thread` is the global thread index, `threads` the grid's thread count.

template <typename S>
inline constexpr int kUnrollOf = sizeof(S) == 1 ? kByteUnroll : kUnroll;

template <DataType kType>
struct Packed {
  using S = typename Element<kType>::Storage;
  static constexpr int kPer = kPackBytes / static_cast<int>(sizeof(S));
  static constexpr int kSteps = kUnrollOf<S>;  // packs per thread per loop step
  using P = Pack<S, kPer>;
};

struct ReduceArgs {
  void* out;
  const void* a;
  const void* b;
  Split split;
};

template <DataType kType>
inline ReduceArgs MakeReduceArgs(void* out, const void* a, const void* b, size_t count) {
  using S = typename Element<kType>::Storage;
  const void* pointers[3] = {out, a, b};
  const size_t sizes[3] = {sizeof(S), sizeof(S), sizeof(S)};
  return {out, a, b, SplitForPacks(pointers, sizes, 3, count, Packed<kType>::kPer)};
}

// out[i] = op(a[i], b[i]). Each element is read and written by one thread, loads first, so out
// may be a or b (exactly; partly overlapping ranges are rejected by the launcher).
template <DataType kType, class Op>
COHORT_HD void ReduceThread(const ReduceArgs& args, size_t thread, size_t threads) {
  using E = Element<kType>;
  using S = typename E::Storage;
  using P = typename Packed<kType>::P;
  constexpr int kPer = Packed<kType>::kPer;
  constexpr int kSteps = Packed<kType>::kSteps;
  auto* out = static_cast<S*>(args.out);
  const auto* a = static_cast<const S*>(args.a);
  const auto* b = static_cast<const S*>(args.b);
  const Split& split = args.split;
  for (size_t e = thread; e < split.edges(); e += threads) {
    const size_t i = split.EdgeIndex(e);
    out[i] = E::Store(Op::Apply(E::Load(a[i]), E::Load(b[i])));
  }
  auto* out_packs = reinterpret_cast<P*>(out + split.head);
  const auto* a_packs = reinterpret_cast<const P*>(a + split.head);
  const auto* b_packs = reinterpret_cast<const P*>(b + split.head);
  for (size_t base = thread; base < split.packs; base += threads * kSteps) {
    P x[kSteps] = {};  // (initialised: GCC cannot see that unloaded packs go unused)
    P y[kSteps] = {};
    COHORT_UNROLL
    for (int k = 0; k < kSteps; ++k) {
      const size_t j = base + k * threads;
      if (j < split.packs) {
        x[k] = a_packs[j];
        y[k] = b_packs[j];
      }
    }
    COHORT_UNROLL
    for (int k = 0; k < kSteps; ++k) {
      const size_t j = base + k * threads;
      if (j < split.packs) {
        P result;
        COHORT_UNROLL
        for (int v = 0; v < kPer; ++v) {
          result.v[v] = E::Store(Op::Apply(E::Load(x[k].v[v]), E::Load(y[k].v[v])));
        }
        out_packs[j] = result;
      }
    }
  }
}

// Up to kMaxReduceInputs device pointers, passed by value as a kernel parameter.
struct ReduceManyArgs {
  void* out;
  const void* inputs[kMaxReduceInputs];
  int num_inputs;
  Split split;
};

template <DataType kType>
inline ReduceManyArgs MakeReduceManyArgs(void* out, const void* const* inputs, int num_inputs,
                                         size_t count) {
  using S = typename Element<kType>::Storage;
  ReduceManyArgs args{};
  args.out = out;
  args.num_inputs = num_inputs;
  const void* pointers[kMaxReduceInputs + 1];
  size_t sizes[kMaxReduceInputs + 1];
  pointers[0] = out;
  sizes[0] = sizeof(S);
  for (int k = 0; k < num_inputs; ++k) {
    args.inputs[k] = inputs[k];
    pointers[k + 1] = inputs[k];
    sizes[k + 1] = sizeof(S);
  }
  args.split = SplitForPacks(pointers, sizes, num_inputs + 1, count, Packed<kType>::kPer);
  return args;
}

// out[i] = op(inputs[0][i], ..., inputs[n-1][i]), computed in the compute type and rounded once
// (n >= 2; the launcher copies for n == 1). out may be one of the inputs.
template <DataType kType, class Op>
COHORT_HD void ReduceManyThread(const ReduceManyArgs& args, size_t thread, size_t threads) {
  using E = Element<kType>;
  using S = typename E::Storage;
  using C = typename E::Compute;
  using P = typename Packed<kType>::P;
  constexpr int kPer = Packed<kType>::kPer;
  constexpr int kManyUnroll = 2;
  auto* out = static_cast<S*>(args.out);
  const Split& split = args.split;
  const int n = args.num_inputs;
  for (size_t e = thread; e < split.edges(); e += threads) {
    const size_t i = split.EdgeIndex(e);
    C acc = Op::Apply(E::Load(static_cast<const S*>(args.inputs[0])[i]),
                      E::Load(static_cast<const S*>(args.inputs[1])[i]));
    for (int k = 2; k < n; ++k)
      acc = Op::Apply(acc, E::Load(static_cast<const S*>(args.inputs[k])[i]));
    out[i] = E::Store(acc);
  }
  auto* out_packs = reinterpret_cast<P*>(out + split.head);
  for (size_t base = thread; base < split.packs; base += threads * kManyUnroll) {
    C acc[kManyUnroll][kPer] = {};
    COHORT_UNROLL
    for (int u = 0; u < kManyUnroll; ++u) {
      const size_t j = base + u * threads;
      if (j >= split.packs) continue;
      const P x = reinterpret_cast<const P*>(static_cast<const S*>(args.inputs[0]) + split.head)[j];
      const P y = reinterpret_cast<const P*>(static_cast<const S*>(args.inputs[1]) + split.head)[j];
      COHORT_UNROLL
      for (int v = 0; v < kPer; ++v) acc[u][v] = Op::Apply(E::Load(x.v[v]), E::Load(y.v[v]));
    }
    for (int k = 2; k < n; ++k) {
      const auto* input =
          reinterpret_cast<const P*>(static_cast<const S*>(args.inputs[k]) + split.head);
      COHORT_UNROLL
      for (int u = 0; u < kManyUnroll; ++u) {
        const size_t j = base + u * threads;
        if (j >= split.packs) continue;
        const P x = input[j];
        COHORT_UNROLL
        for (int v = 0; v < kPer; ++v) acc[u][v] = Op::Apply(acc[u][v], E::Load(x.v[v]));
      }
    }
    COHORT_UNROLL
    for (int u = 0; u < kManyUnroll; ++u) {
      const size_t j = base + u * threads;
      if (j >= split.packs) continue;
      P result;
      COHORT_UNROLL
      for (int v = 0; v < kPer; ++v) result.v[v] = E::Store(acc[u][v]);
      out_packs[j] = result;
    }
  }
}

// data[i] /= divisor, finishing an average as reduce.cc's ScaleForAverage does: floating types
// divide in their compute type (IEEE division); integers truncate toward zero like C, a zero
// divisor leaves them unchanged and -1 wraps; bool is left alone (avg is not defined for it).
template <DataType kType>
COHORT_HD typename Element<kType>::Storage ScaleElement(typename Element<kType>::Storage x,
                                                        int64_t divisor) {
  using E = Element<kType>;
  using S = typename E::Storage;
  using C = typename E::Compute;
  if constexpr (kType == DataType::kBool) {
    return x;
  } else if constexpr (std::is_floating_point_v<C>) {
    return E::Store(E::Load(x) / static_cast<C>(divisor));
  } else {
    if (divisor == 0) return x;
    if (divisor == -1) return ProdOp::Apply<S>(x, static_cast<S>(-1));
    return static_cast<S>(static_cast<int64_t>(x) / divisor);
  }
}

struct ScaleArgs {
  void* data;
  int64_t divisor;
  Split split;
};

template <DataType kType>
inline ScaleArgs MakeScaleArgs(void* data, size_t count, int64_t divisor) {
  using S = typename Element<kType>::Storage;
  const void* pointers[1] = {data};
  const size_t sizes[1] = {sizeof(S)};
  return {data, divisor, SplitForPacks(pointers, sizes, 1, count, Packed<kType>::kPer)};
}

template <DataType kType>
COHORT_HD void ScaleThread(const ScaleArgs& args, size_t thread, size_t threads) {
  using S = typename Element<kType>::Storage;
  using P = typename Packed<kType>::P;
  constexpr int kPer = Packed<kType>::kPer;
  constexpr int kSteps = Packed<kType>::kSteps;
  auto* data = static_cast<S*>(args.data);
  const Split& split = args.split;
  for (size_t e = thread; e < split.edges(); e += threads) {
    const size_t i = split.EdgeIndex(e);
    data[i] = ScaleElement<kType>(data[i], args.divisor);
  }
  auto* packs = reinterpret_cast<P*>(data + split.head);
  for (size_t base = thread; base < split.packs; base += threads * kSteps) {
    P x[kSteps] = {};
    COHORT_UNROLL
    for (int k = 0; k < kSteps; ++k) {
      const size_t j = base + k * threads;
      if (j < split.packs) x[k] = packs[j];
    }
    COHORT_UNROLL
    for (int k = 0; k < kSteps; ++k) {
      const size_t j = base + k * threads;
      if (j >= split.packs) continue;
      COHORT_UNROLL
      for (int v = 0; v < kPer; ++v) x[k].v[v] = ScaleElement<kType>(x[k].v[v], args.divisor);
      packs[j] = x[k];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cast, like torch's .to(dtype): through the source's compute type (float for fp16/bf16, so
// float64 -> fp16 rounds twice, as torch does), to bool as "!= 0", floating to integer truncating
// (values outside the target's range are undefined, as in C and torch).

template <DataType kTo, DataType kFrom>
COHORT_HD typename Element<kTo>::Storage CastElement(typename Element<kFrom>::Storage x) {
  using From = Element<kFrom>;
  using To = Element<kTo>;
  const auto value = From::Load(x);
  if constexpr (kTo == DataType::kBool) {
    return static_cast<uint8_t>(value != 0 ? 1 : 0);
  } else if constexpr (kFrom == DataType::kBool) {
    return To::Store(static_cast<typename To::Compute>(value != 0 ? 1 : 0));
  } else {
    return To::Store(static_cast<typename To::Compute>(value));
  }
}

template <DataType kTo, DataType kFrom>
struct CastPacked {
  static constexpr size_t kFromBytes = sizeof(typename Element<kFrom>::Storage);
  static constexpr size_t kToBytes = sizeof(typename Element<kTo>::Storage);
  // Elements per pack: the wider side moves 16 bytes, the narrower a power of two below that.
  static constexpr int kPer =
      kPackBytes / static_cast<int>(kFromBytes > kToBytes ? kFromBytes : kToBytes);
  static constexpr int kSteps = kPer == kPackBytes ? kByteUnroll : kUnroll;
};

struct CastArgs {
  void* out;
  const void* in;
  Split split;
};

template <DataType kTo, DataType kFrom>
inline CastArgs MakeCastArgs(void* out, const void* in, size_t count) {
  const void* pointers[2] = {out, in};
  const size_t sizes[2] = {CastPacked<kTo, kFrom>::kToBytes, CastPacked<kTo, kFrom>::kFromBytes};
  return {out, in, SplitForPacks(pointers, sizes, 2, count, CastPacked<kTo, kFrom>::kPer)};
}

template <DataType kTo, DataType kFrom>
COHORT_HD void CastThread(const CastArgs& args, size_t thread, size_t threads) {
  using SFrom = typename Element<kFrom>::Storage;
  using STo = typename Element<kTo>::Storage;
  constexpr int kPer = CastPacked<kTo, kFrom>::kPer;
  constexpr int kSteps = CastPacked<kTo, kFrom>::kSteps;
  struct alignas(kPer * sizeof(SFrom)) FromPack {
    SFrom v[kPer];
  };
  struct alignas(kPer * sizeof(STo)) ToPack {
    STo v[kPer];
  };
  auto* out = static_cast<STo*>(args.out);
  const auto* in = static_cast<const SFrom*>(args.in);
  const Split& split = args.split;
  for (size_t e = thread; e < split.edges(); e += threads) {
    const size_t i = split.EdgeIndex(e);
    out[i] = CastElement<kTo, kFrom>(in[i]);
  }
  auto* out_packs = reinterpret_cast<ToPack*>(out + split.head);
  const auto* in_packs = reinterpret_cast<const FromPack*>(in + split.head);
  for (size_t base = thread; base < split.packs; base += threads * kSteps) {
    FromPack x[kSteps] = {};
    COHORT_UNROLL
    for (int k = 0; k < kSteps; ++k) {
      const size_t j = base + k * threads;
      if (j < split.packs) x[k] = in_packs[j];
    }
    COHORT_UNROLL
    for (int k = 0; k < kSteps; ++k) {
      const size_t j = base + k * threads;
      if (j >= split.packs) continue;
      ToPack result;
      COHORT_UNROLL
      for (int v = 0; v < kPer; ++v) result.v[v] = CastElement<kTo, kFrom>(x[k].v[v]);
      out_packs[j] = result;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Strided copy: out[offset_out(index)] = in[offset_in(index)] over an N-d shape, strides in
// elements. The launcher first merges dimensions that are contiguous on both sides and drops
// size-1 ones (MergeDims), so a transposed matrix is 2 dimensions and a contiguous one is 1.

struct CopyArgs {
  void* out;
  const void* in;
  int dims;
  int64_t sizes[kMaxCopyDims];
  int64_t out_strides[kMaxCopyDims];
  int64_t in_strides[kMaxCopyDims];
  size_t count;
};

// Fills args' shape from (sizes, strides), merged; false when more than kMaxCopyDims remain or a
// size is negative. Dimension 0 is the outermost, as in torch.
inline bool MergeDims(const int64_t* sizes, const int64_t* out_strides, const int64_t* in_strides,
                      int dims, CopyArgs& args) {
  args.dims = 0;
  args.count = 1;
  for (int d = 0; d < dims; ++d) {
    if (sizes[d] < 0) return false;
    args.count *= static_cast<size_t>(sizes[d]);
  }
  if (args.count == 0) return true;
  // Innermost first into a scratch list, merging into the previous (inner) entry when the outer
  // dimension steps exactly over it on both sides.
  int64_t merged_sizes[64];
  int64_t merged_out[64];
  int64_t merged_in[64];
  int merged = 0;
  for (int d = dims - 1; d >= 0; --d) {
    if (sizes[d] == 1) continue;
    if (merged > 0 && out_strides[d] == merged_out[merged - 1] * merged_sizes[merged - 1] &&
        in_strides[d] == merged_in[merged - 1] * merged_sizes[merged - 1]) {
      merged_sizes[merged - 1] *= sizes[d];
      continue;
    }
    if (merged == 64) return false;
    merged_sizes[merged] = sizes[d];
    merged_out[merged] = out_strides[d];
    merged_in[merged] = in_strides[d];
    ++merged;
  }
  if (merged == 0) {  // every size is 1: one element
    merged_sizes[0] = 1;
    merged_out[0] = 1;
    merged_in[0] = 1;
    merged = 1;
  }
  if (merged > kMaxCopyDims) return false;
  args.dims = merged;
  for (int d = 0; d < merged; ++d) {  // back to outermost-first
    args.sizes[d] = merged_sizes[merged - 1 - d];
    args.out_strides[d] = merged_out[merged - 1 - d];
    args.in_strides[d] = merged_in[merged - 1 - d];
  }
  return true;
}

// The launcher's preparation: moves the widest power-of-two word (up to 16 bytes) dividing the
// element size and both addresses, an element of several words becoming one more, innermost,
// dimension; then merges. False for a bad argument or too many dimensions.
inline bool PrepareStridedCopy(void* out, const int64_t* out_strides, const void* in,
                               const int64_t* in_strides, const int64_t* sizes, int dims,
                               size_t element_bytes, CopyArgs& args, size_t& word) {
  if (dims < 0 || dims > 63 || element_bytes == 0) return false;
  if (dims > 0 && (sizes == nullptr || out_strides == nullptr || in_strides == nullptr)) {
    return false;
  }
  word = 16;
  while (word > 1 && (element_bytes % word != 0 || reinterpret_cast<uintptr_t>(out) % word != 0 ||
                      reinterpret_cast<uintptr_t>(in) % word != 0)) {
    word /= 2;
  }
  const auto words = static_cast<int64_t>(element_bytes / word);
  int64_t word_sizes[64];
  int64_t word_out[64];
  int64_t word_in[64];
  for (int d = 0; d < dims; ++d) {
    word_sizes[d] = sizes[d];
    word_out[d] = out_strides[d] * words;
    word_in[d] = in_strides[d] * words;
  }
  word_sizes[dims] = words;
  word_out[dims] = 1;
  word_in[dims] = 1;
  args.out = out;
  args.in = in;
  return MergeDims(word_sizes, word_out, word_in, dims + 1, args);
}

struct alignas(16) Word16 {
  uint64_t half[2];
};

// The innermost dimension is walked by consecutive threads (coalesced where its stride is 1); the
// outer coordinates come from one division per outer dimension.
template <typename Word, typename Index>
COHORT_HD void StridedCopyThread(const CopyArgs& args, size_t thread, size_t threads) {
  auto* out = static_cast<Word*>(args.out);
  const auto* in = static_cast<const Word*>(args.in);
  const Index count = static_cast<Index>(args.count);
  for (Index linear = static_cast<Index>(thread); linear < count;
       linear += static_cast<Index>(threads)) {
    Index rest = linear;
    int64_t out_offset = 0;
    int64_t in_offset = 0;
    for (int d = args.dims - 1; d >= 0; --d) {
      const Index size = static_cast<Index>(args.sizes[d]);
      const Index coordinate = d == 0 ? rest : rest % size;
      rest = d == 0 ? 0 : rest / size;
      out_offset += static_cast<int64_t>(coordinate) * args.out_strides[d];
      in_offset += static_cast<int64_t>(coordinate) * args.in_strides[d];
    }
    out[out_offset] = in[in_offset];
  }
}

}  // namespace cohort::cuda
