// The sweep engine of cohort-bench: for each size, warm up, time back-to-back operations, check
// the result exactly, and print nccl-tests-style rows (rank 0) with algbw and busbw.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

#include "bench/descriptors.h"
#include "collectives/communicator.h"

namespace cohort::bench {

struct SweepOptions {
  size_t min_bytes = 32 << 20;
  size_t max_bytes = 32 << 20;
  size_t step_bytes = 1 << 20;
  double step_factor = 1;  // > 1: multiply instead of add
  int iterations = 20;
  int warmup = 5;
  bool check = true;
  bool blocking = false;  // wait for each operation before issuing the next
  BenchParams params;
};

struct SweepResult {
  size_t wrong = 0;
  double average_bus_bandwidth = 0;  // GB/s over every row and both columns
};

// Runs the sweep on every rank of `comm`; rank 0 prints to `out`.
absl::StatusOr<SweepResult> RunSweep(Communicator& comm, const Collective& collective,
                                     const SweepOptions& options, FILE* out);

}  // namespace cohort::bench
