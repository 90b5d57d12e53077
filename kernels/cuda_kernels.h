// CUDA versions of libcohort's reduce kernels (csrc/collectives/reduce.h) plus cast and strided
// copy, as host-callable functions that enqueue on a stream and return at once. The (data type,
// reduce op) pairs served are exactly reduce.h's (CheckReduceSupported); results equal reduce.cc's
// bit for bit except NaN payloads. Used by libcohort's CUDA paths and tests/gpu/kernels_test.cu.
//
// Kernels run on the current device (cudaSetDevice), and `stream` must be one of its streams.
// Pointers are device memory (or anything the device can address: managed, mapped pinned host).
// Every function returns the launch's cudaError_t (ToStatus in cuda_status.h turns it into an
// absl::Status); errors of the kernel itself appear later on the stream, as with any launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "collectives/types.h"

namespace cohort::cuda {

// out[i] = op(a[i], b[i]) for i < count. `out` may be `a` or `b` (the same pointer; partly
// overlapping ranges are cudaErrorInvalidValue). For ReduceOp::kAvg this is the sum; finish with
// ScaleForAverage.
using ReduceKernel = cudaError_t (*)(void* out, const void* a, const void* b, size_t count,
                                     cudaStream_t stream);

// out[i] = op(inputs[0][i], ..., inputs[n-1][i]), fp16/bf16 accumulated in fp32 and rounded once.
// `inputs` is a host array of device pointers; 1 <= n <= kMaxReduceInputs (64). `out` may be one
// of the inputs.
using ReduceManyKernel = cudaError_t (*)(void* out, const void* const* inputs, int num_inputs,
                                         size_t count, cudaStream_t stream);

// The kernel for (type, op); nullptr when reduce.h's CheckReduceSupported rejects the pair.
ReduceKernel GetReduceKernel(DataType type, ReduceOp op);
ReduceManyKernel GetReduceManyKernel(DataType type, ReduceOp op);

// data[i] = data[i] / divisor, finishing an average like reduce.h's ScaleForAverage (integers
// truncate toward zero; a zero divisor leaves them unchanged; bool is left alone).
cudaError_t ScaleForAverage(void* data, DataType type, size_t count, int64_t divisor,
                            cudaStream_t stream);

// out[i] = in[i] converted from in_type to out_type like torch's .to(): floating to integer
// truncates (out-of-range values are undefined, as in C), anything to bool is "!= 0", fp16/bf16
// round to nearest even. Equal types copy. `out` and `in` must not overlap.
cudaError_t Cast(void* out, DataType out_type, const void* in, DataType in_type, size_t count,
                 cudaStream_t stream);

// Copies an N-d array of `element_bytes`-sized elements between two strided layouts of the same
// shape (sizes[0] outermost; strides in elements, as torch's). Dimensions contiguous on both
// sides are merged first; at most 8 may remain. Contiguous on both sides is one cudaMemcpyAsync.
cudaError_t StridedCopy(void* out, const int64_t* out_strides, const void* in,
                        const int64_t* in_strides, const int64_t* sizes, int dims,
                        size_t element_bytes, cudaStream_t stream);

// Work enqueued on `stream` after this starts once the 64-bit word at `word` holds `value` or
// more: one thread polls it (with __nanosleep between reads). `word` is pinned host memory mapped
// into the device (cudaHostAlloc with cudaHostAllocMapped; its host address is its device address
// under unified addressing) that the host raises: the gate between a collective's host part and
// its device part (csrc/collectives/device_runtime.h). Spinning occupies one thread of one
// multiprocessor until the host raises the word.
cudaError_t WaitForValue(const void* word, uint64_t value, cudaStream_t stream);

// The grid a kernel launches with. Zero fields take the defaults (512 threads per block, 4
// blocks per multiprocessor, fewer when the buffer is small); benchmarks set them to compare.
struct LaunchShape {
  int threads_per_block = 0;
  int blocks_per_multiprocessor = 0;
};

// As GetReduceKernel(type, op)(...) with a chosen grid; cudaErrorInvalidValue for an unsupported
// pair.
cudaError_t LaunchReduce(DataType type, ReduceOp op, void* out, const void* a, const void* b,
                         size_t count, cudaStream_t stream, LaunchShape shape);

}  // namespace cohort::cuda
