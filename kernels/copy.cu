// Cast and strided copy: __global__ wrappers around elementwise.h's bodies and their launchers.
#include <cstring>

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

template <DataType kTo, DataType kFrom>
__global__ void __launch_bounds__(detail::kMaxThreadsPerBlock) CastKernelBody(CastArgs args) {
  CastThread<kTo, kFrom>(args, ThreadIndex(), ThreadCount());
}

template <typename Word, typename Index>
__global__ void __launch_bounds__(detail::kMaxThreadsPerBlock)
    StridedCopyKernelBody(CopyArgs args) {
  StridedCopyThread<Word, Index>(args, ThreadIndex(), ThreadCount());
}

template <typename Word>
cudaError_t LaunchStridedCopy(const CopyArgs& args, cudaStream_t stream) {
  const detail::Grid grid = detail::GridFor(args.count, LaunchShape{}, detail::kMaxThreadsPerBlock);
  // 32-bit indices while index + grid size cannot wrap (the grid is far below 2^31 threads).
  if (args.count <= 0x7FFFFFFFull) {
    StridedCopyKernelBody<Word, uint32_t><<<grid.blocks, grid.threads, 0, stream>>>(args);
  } else {
    StridedCopyKernelBody<Word, uint64_t><<<grid.blocks, grid.threads, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t Cast(void* out, DataType out_type, const void* in, DataType in_type, size_t count,
                 cudaStream_t stream) {
  if (static_cast<int>(out_type) >= kNumDataTypes || static_cast<int>(in_type) >= kNumDataTypes) {
    return cudaErrorInvalidValue;
  }
  if (count == 0) return cudaSuccess;
  if (out == nullptr || in == nullptr) return cudaErrorInvalidValue;
  if (detail::PartlyOverlaps(out, in, count * DataTypeSize(out_type)) || out == in) {
    if (out_type == in_type && out == in) return cudaSuccess;
    return cudaErrorInvalidValue;
  }
  if (out_type == in_type) {
    return cudaMemcpyAsync(out, in, count * DataTypeSize(in_type), cudaMemcpyDefault, stream);
  }
  cudaError_t result = cudaErrorInvalidValue;
  VisitType(out_type, [&]<DataType kTo>() {
    VisitType(in_type, [&]<DataType kFrom>() {
      const CastArgs args = MakeCastArgs<kTo, kFrom>(out, in, count);
      const detail::Grid grid =
          detail::GridFor(detail::ItemsOf(args.split, CastPacked<kTo, kFrom>::kSteps),
                          LaunchShape{}, detail::kMaxThreadsPerBlock);
      CastKernelBody<kTo, kFrom><<<grid.blocks, grid.threads, 0, stream>>>(args);
      result = cudaGetLastError();
    });
  });
  return result;
}

cudaError_t StridedCopy(void* out, const int64_t* out_strides, const void* in,
                        const int64_t* in_strides, const int64_t* sizes, int dims,
                        size_t element_bytes, cudaStream_t stream) {
  CopyArgs args{};
  size_t word = 0;
  if (!PrepareStridedCopy(out, out_strides, in, in_strides, sizes, dims, element_bytes, args,
                          word)) {
    return cudaErrorInvalidValue;
  }
  if (args.count == 0) return cudaSuccess;
  if (out == nullptr || in == nullptr) return cudaErrorInvalidValue;
  if (args.dims == 1 && args.out_strides[0] == 1 && args.in_strides[0] == 1) {
    return cudaMemcpyAsync(out, in, args.count * word, cudaMemcpyDefault, stream);
  }
  switch (word) {
    case 1:
      return LaunchStridedCopy<uint8_t>(args, stream);
    case 2:
      return LaunchStridedCopy<uint16_t>(args, stream);
    case 4:
      return LaunchStridedCopy<uint32_t>(args, stream);
    case 8:
      return LaunchStridedCopy<uint64_t>(args, stream);
    default:
      return LaunchStridedCopy<Word16>(args, stream);
  }
}

}  // namespace cohort::cuda
