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

// Enough threads for `items` units of work, capped at a persistent grid (blocks per
// multiprocessor x multiprocessors) that then loops grid-stride.
inline Grid GridFor(size_t items, LaunchShape shape) {
  Grid grid;
  grid.threads = static_cast<unsigned>(shape.threads_per_block > 0 ? shape.threads_per_block
                                                                   : kDefaultThreadsPerBlock);
  const int per_sm = shape.blocks_per_multiprocessor > 0 ? shape.blocks_per_multiprocessor
                                                         : kDefaultBlocksPerMultiprocessor;
  const size_t cap = static_cast<size_t>(per_sm) * static_cast<size_t>(MultiprocessorCount());
  const size_t wanted = (std::max<size_t>(items, 1) + grid.threads - 1) / grid.threads;
  grid.blocks = static_cast<unsigned>(std::clamp<size_t>(wanted, 1, cap));
  return grid;
}

// Work units of a split: every scalar edge element, and kUnroll packs per thread step.
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
