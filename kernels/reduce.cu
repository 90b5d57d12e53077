// The reduce and average kernels: __global__ wrappers around elementwise.h's bodies, their
// launchers, and the (data type, reduce op) table behind GetReduceKernel.
#include <array>

#include "cuda_kernels.h"
#include "elementwise.h"
#include "launch.h"

namespace cohort::cuda {
namespace {

__device__ __forceinline__ size_t ThreadIndex() {
  return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ size_t ThreadCount() {
  return static_cast<size_t>(gridDim.x) * blockDim.x;
}

template <DataType kType, class Op>
__global__ void __launch_bounds__(detail::kMaxThreadsPerBlock) ReduceKernelBody(ReduceArgs args) {
  ReduceThread<kType, Op>(args, ThreadIndex(), ThreadCount());
}

template <DataType kType, class Op>
__global__ void __launch_bounds__(detail::kMaxThreadsPerBlock)
    ReduceManyKernelBody(ReduceManyArgs args) {
  ReduceManyThread<kType, Op>(args, ThreadIndex(), ThreadCount());
}

template <DataType kType>
__global__ void __launch_bounds__(detail::kMaxThreadsPerBlock) ScaleKernelBody(ScaleArgs args) {
  ScaleThread<kType>(args, ThreadIndex(), ThreadCount());
}

template <DataType kType, class Op>
cudaError_t LaunchReduceTyped(void* out, const void* a, const void* b, size_t count,
                              cudaStream_t stream, LaunchShape shape) {
  using S = typename Element<kType>::Storage;
  if (count == 0) return cudaSuccess;
  if (out == nullptr || a == nullptr || b == nullptr) return cudaErrorInvalidValue;
  const size_t bytes = count * sizeof(S);
  if (detail::PartlyOverlaps(out, a, bytes) || detail::PartlyOverlaps(out, b, bytes)) {
    return cudaErrorInvalidValue;
  }
  const ReduceArgs args = MakeReduceArgs<kType>(out, a, b, count);
  const detail::Grid grid =
      detail::GridFor(detail::ItemsOf(args.split, Packed<kType>::kSteps), shape,
                      detail::MaxThreads<ReduceKernelBody<kType, Op>>());
  ReduceKernelBody<kType, Op><<<grid.blocks, grid.threads, 0, stream>>>(args);
  return cudaGetLastError();
}

template <DataType kType, class Op>
cudaError_t ReduceEntry(void* out, const void* a, const void* b, size_t count,
                        cudaStream_t stream) {
  return LaunchReduceTyped<kType, Op>(out, a, b, count, stream, LaunchShape{});
}

template <DataType kType, class Op>
cudaError_t ReduceManyEntry(void* out, const void* const* inputs, int num_inputs, size_t count,
                            cudaStream_t stream) {
  using S = typename Element<kType>::Storage;
  if (count == 0 || num_inputs <= 0) return cudaSuccess;
  if (num_inputs > kMaxReduceInputs || out == nullptr || inputs == nullptr) {
    return cudaErrorInvalidValue;
  }
  const size_t bytes = count * sizeof(S);
  for (int k = 0; k < num_inputs; ++k) {
    if (inputs[k] == nullptr || detail::PartlyOverlaps(out, inputs[k], bytes)) {
      return cudaErrorInvalidValue;
    }
  }
  if (num_inputs == 1) {
    if (out == inputs[0]) return cudaSuccess;
    return cudaMemcpyAsync(out, inputs[0], bytes, cudaMemcpyDefault, stream);
  }
  if (num_inputs == 2) return ReduceEntry<kType, Op>(out, inputs[0], inputs[1], count, stream);
  const ReduceManyArgs args = MakeReduceManyArgs<kType>(out, inputs, num_inputs, count);
  const detail::Grid grid = detail::GridFor(detail::ItemsOf(args.split, 2), LaunchShape{},
                                            detail::MaxThreads<ReduceManyKernelBody<kType, Op>>());
  ReduceManyKernelBody<kType, Op><<<grid.blocks, grid.threads, 0, stream>>>(args);
  return cudaGetLastError();
}

struct Entry {
  ReduceKernel reduce = nullptr;
  ReduceManyKernel reduce_many = nullptr;
};

using Table = std::array<Entry, kNumDataTypes * kNumReduceOps>;

const Table& KernelTable() {
  static const Table table = [] {
    Table built{};
    for (int t = 0; t < kNumDataTypes; ++t) {
      for (int o = 0; o < kNumReduceOps; ++o) {
        Entry& entry = built[t * kNumReduceOps + o];
        VisitReduce(static_cast<DataType>(t), static_cast<ReduceOp>(o),
                    [&]<DataType kType, class Op>() {
                      entry.reduce = &ReduceEntry<kType, Op>;
                      entry.reduce_many = &ReduceManyEntry<kType, Op>;
                    });
      }
    }
    return built;
  }();
  return table;
}

bool ValidPair(DataType type, ReduceOp op) {
  return static_cast<int>(type) < kNumDataTypes && static_cast<int>(op) < kNumReduceOps;
}

}  // namespace

ReduceKernel GetReduceKernel(DataType type, ReduceOp op) {
  if (!ValidPair(type, op)) return nullptr;
  return KernelTable()[static_cast<int>(type) * kNumReduceOps + static_cast<int>(op)].reduce;
}

ReduceManyKernel GetReduceManyKernel(DataType type, ReduceOp op) {
  if (!ValidPair(type, op)) return nullptr;
  return KernelTable()[static_cast<int>(type) * kNumReduceOps + static_cast<int>(op)].reduce_many;
}

cudaError_t LaunchReduce(DataType type, ReduceOp op, void* out, const void* a, const void* b,
                         size_t count, cudaStream_t stream, LaunchShape shape) {
  cudaError_t result = cudaErrorInvalidValue;
  VisitReduce(type, op, [&]<DataType kType, class Op>() {
    result = LaunchReduceTyped<kType, Op>(out, a, b, count, stream, shape);
  });
  return result;
}

cudaError_t ScaleForAverage(void* data, DataType type, size_t count, int64_t divisor,
                            cudaStream_t stream) {
  if (count == 0 || type == DataType::kBool) return cudaSuccess;
  if (IsInteger(type) && divisor == 1) return cudaSuccess;
  if (data == nullptr) return cudaErrorInvalidValue;
  cudaError_t result = cudaErrorInvalidValue;
  VisitType(type, [&]<DataType kType>() {
    const ScaleArgs args = MakeScaleArgs<kType>(data, count, divisor);
    const detail::Grid grid =
        detail::GridFor(detail::ItemsOf(args.split, Packed<kType>::kSteps), LaunchShape{},
                        detail::MaxThreads<ScaleKernelBody<kType>>());
    ScaleKernelBody<kType><<<grid.blocks, grid.threads, 0, stream>>>(args);
    result = cudaGetLastError();
  });
  return result;
}

}  // namespace cohort::cuda
