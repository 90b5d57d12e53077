// Grid sizing shared by the kernels/*.cu launchers (not part of the public API).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "cuda_kernels.h"
#include "elementwise.h"

namespace cohort::cuda::detail {

inline constexpr int kDefaultThreadsPerBlock = 512;
// Every kernel is compiled for at most this many threads per block (__launch_bounds__), which
// caps its registers at 128 so a 512-thread block always fits the register file.
inline constexpr int kMaxThreadsPerBlock = 512;
inline constexpr int kDefaultBlocksPerMultiprocessor = 4;

// Multiprocessors of the current device, read once per device.
inline int MultiprocessorCount() {
  constexpr int kCached = 64;
  static std::atomic<int> cache[kCached] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  if (device >= 0 && device < kCached) {
    const int known = cache[device].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int count = 1;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      count <= 0) {
    (void)cudaGetLastError();
    count = 1;
  }
  if (device >= 0 && device < kCached) cache[device].store(count, std::memory_order_relaxed);
  return count;
}

struct Grid {
  unsigned blocks = 1;
  unsigned threads = kDefaultThreadsPerBlock;
};

// The most threads per block `kernel` launches with on the current device, read once per kernel
// (its __launch_bounds__, or fewer where its registers demand).
template <auto kKernel>
int MaxThreads() {
  static const int max_threads = [] {
    cudaFuncAttributes attributes{};
    if (cudaFuncGetAttributes(&attributes, kKernel) != cudaSuccess) {
      (void)cudaGetLastError();
      return kMaxThreadsPerBlock;
    }
    return std::min(attributes.maxThreadsPerBlock, kMaxThreadsPerBlock);
  }();
  return max_threads;
}

// Enough threads for `items` units of work, capped at a persistent grid (blocks per
// multiprocessor x multiprocessors) that then loops grid-stride. A requested block size above
// what the kernel takes is lowered to it (a multiple of 32).
inline Grid GridFor(size_t items, LaunchShape shape, int max_threads) {
  Grid grid;
  int threads = shape.threads_per_block > 0 ? shape.threads_per_block : kDefaultThreadsPerBlock;
  threads = std::max(32, std::min(threads, max_threads) / 32 * 32);
  grid.threads = static_cast<unsigned>(threads);
  const int per_sm = shape.blocks_per_multiprocessor > 0 ? shape.blocks_per_multiprocessor
                                                         : kDefaultBlocksPerMultiprocessor;
  const size_t cap = static_cast<size_t>(per_sm) * static_cast<size_t>(MultiprocessorCount());
  const size_t wanted = (std::max<size_t>(items, 1) + grid.threads - 1) / grid.threads;
  grid.blocks = static_cast<unsigned>(std::clamp<size_t>(wanted, 1, cap));
  return grid;
}

// Work units of a split: every scalar edge element, and `packs_per_item` packs per thread step.
inline size_t ItemsOf(const Split& split, size_t packs_per_item) {
  return std::max(split.edges(), (split.packs + packs_per_item - 1) / packs_per_item);
}

inline bool PartlyOverlaps(const void* x, const void* y, size_t bytes) {
  if (x == y) return false;
  const auto xs = reinterpret_cast<uintptr_t>(x);
  const auto ys = reinterpret_cast<uintptr_t>(y);
  return xs < ys + bytes && ys < xs + bytes;
}

}  // namespace cohort::cuda::detail
