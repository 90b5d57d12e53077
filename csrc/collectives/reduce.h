// CPU reduce kernels: one table of (data type, reduce op) -> vectorized loop. fp16 and bf16
// are computed in fp32 and rounded once per element. Used by every reducing algorithm.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "collectives/types.h"

namespace cohort {

// out[i] = op(a[i], b[i]) for i < count. `out` may be the same pointer as `a` or `b`.
// For ReduceOp::kAvg this is the sum; callers finish with ScaleForAverage.
using ReduceFn = void (*)(void* out, const void* a, const void* b, size_t count);

// out[i] = op(inputs[0][i], ..., inputs[n-1][i]); fp16/bf16 accumulate in fp32 and round once.
// `out` may be one of the inputs.
using ReduceManyFn = void (*)(void* out, const void* const* inputs, int num_inputs, size_t count);

// OK when (type, op) is supported, else InvalidArgument naming the pair and what is accepted.
absl::Status CheckReduceSupported(DataType type, ReduceOp op);

// The kernel for (type, op); nullptr when unsupported (check with CheckReduceSupported first).
ReduceFn GetReduceFn(DataType type, ReduceOp op);
ReduceManyFn GetReduceManyFn(DataType type, ReduceOp op);

// data[i] = data[i] / divisor, finishing an average (integers divide with truncation toward zero,
// like C). A zero divisor leaves integer data unchanged; floating data follows IEEE (inf, NaN).
void ScaleForAverage(void* data, DataType type, size_t count, int64_t divisor);

// Instruction-set levels the kernels are compiled for. The functions above use the best level this
// CPU runs, chosen once; the overloads below pin a level so tests cover every path and benchmarks
// compare them.
enum class ReduceIsa : uint8_t {
  kBaseline = 0,  // whatever the compiler targets by default (x86-64 SSE2, aarch64 NEON)
  kAvx2 = 1,      // x86-64 with AVX2, FMA and F16C
  kAvx512 = 2,    // x86-64 with AVX-512 F, BW, VL and DQ (and F16C)
};
inline constexpr int kNumReduceIsas = 3;

const char* ReduceIsaName(ReduceIsa isa);  // "baseline", "avx2", "avx512"
bool ReduceIsaAvailable(ReduceIsa isa);    // compiled into this build and supported by this CPU
ReduceIsa BestReduceIsa();                 // the level the non-pinned functions use

// As above for one level; nullptr when the pair is unsupported or the level is not available.
ReduceFn GetReduceFn(DataType type, ReduceOp op, ReduceIsa isa);
ReduceManyFn GetReduceManyFn(DataType type, ReduceOp op, ReduceIsa isa);
// As above for one level; does nothing when the level is not available.
void ScaleForAverage(void* data, DataType type, size_t count, int64_t divisor, ReduceIsa isa);

// Copies `bytes` from `from` to `to` (the two do not overlap) with stores that bypass the caches:
// for results larger than the caches, it saves reading each destination line before writing it.
// What it wrote is visible to other cores before anything the caller writes afterwards.
using StreamCopyFn = void (*)(void* to, const void* from, size_t bytes);
StreamCopyFn GetStreamCopyFn();                // the best level this CPU runs
StreamCopyFn GetStreamCopyFn(ReduceIsa isa);   // nullptr when the level is not available
// The size of this CPU's last-level cache as Linux describes it (sysfs), else as the C library
// reports it, else 32 MiB: where streaming a result starts to pay.
size_t LastLevelCacheBytes();

// Conversions used by the kernels and by tests' references.
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);  // round to nearest even
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);  // round to nearest even

}  // namespace cohort
