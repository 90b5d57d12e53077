// The gate kernel: a stream waits for a word in mapped host memory (cuda_kernels.h).
#include "cuda_kernels.h"

namespace cohort::cuda {
namespace {

__global__ void WaitForValueKernel(const volatile unsigned long long* word,
                                   unsigned long long value) {
  // Volatile loads go to host memory each time; the nap keeps the PCIe traffic small.
  while (*word < value) __nanosleep(500);
}

}  // namespace

cudaError_t WaitForValue(const void* word, uint64_t value, cudaStream_t stream) {
  if (word == nullptr) return cudaErrorInvalidValue;
  WaitForValueKernel<<<1, 1, 0, stream>>>(static_cast<const volatile unsigned long long*>(word),
                                          static_cast<unsigned long long>(value));
  return cudaGetLastError();
}

}  // namespace cohort::cuda
