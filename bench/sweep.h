// The sweep engine of cohort-bench: for each data type, reduce op and size, warm up, time
// back-to-back operations (recording when each one completes), check the result exactly, and
// print nccl-tests-style rows (rank 0) with algbw and busbw, then the "# Out of bounds values" and
// "# Avg bus bandwidth" footer. Rank 0 also builds the JSON report (-J) with per-iteration
// statistics, and shows a one-line progress display when stderr is a terminal.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/descriptors.h"
#include "bench/stats.h"
#include "collectives/communicator.h"
#include "nlohmann/json.hpp"

namespace cohort::bench {

// nccl-tests' -a: how the ranks' times become the one reported.
enum class Average { kRank0 = 0, kMean = 1, kMin = 2, kMax = 3 };

struct SweepOptions {
  size_t min_bytes = 32 << 20;
  size_t max_bytes = 32 << 20;
  size_t step_bytes = 1 << 20;
  double step_factor = 1;  // > 1: multiply instead of add
  int iterations = 20;
  int warmup = 5;
  int check = 1;          // checked runs per column (0: none, #wrong prints N/A)
  bool blocking = false;  // wait for each operation before issuing the next
  Average average = Average::kMean;
  // Every combination is swept in one table (-d all, -o all); params.dtype / params.op when empty.
  std::vector<DataType> dtypes;
  std::vector<ReduceOp> ops;
  // nccl-tests' types and ops that libcohort lacks ("all" skips them; the header names them).
  std::vector<std::string> skipped_types;
  std::vector<std::string> skipped_ops;
  BenchParams params;
  // COHORT_BENCH_MIN_BW: fail (exit 7) when the average bus bandwidth is below it; < 0: unset.
  double min_bus_bandwidth = -1;
  // COHORT_BENCH_CORRUPT: this rank changes `corrupt_elements` elements of every checked result
  // before counting, so #wrong must see them.
  int corrupt_rank = -1;
  size_t corrupt_elements = 0;
  bool progress = false;  // one-line progress display on stderr (rank 0)
  // Time every iteration (the JSON report's statistics). Off, a blocking sweep reads the clock
  // once per size, as MPI benchmarks do: at 8 bytes a clock read is a tenth of an allreduce.
  bool iteration_times = true;
  // Tests: -d cuda on the fake device backend (FakeStreams, host memory as "device" memory).
  bool fake_device = false;
};

// One column (out-of-place or in-place) of one row.
struct ColumnResult {
  double microseconds = 0;  // per operation, the ranks' times combined per -a
  double algbw = 0;         // GB/s (1e9 bytes)
  double busbw = 0;
  bool checked = false;
  size_t wrong = 0;
  Stats iterations;  // per-iteration times (us), each combined across ranks per -a
};

struct RowResult {
  size_t bytes = 0;
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  int root = -1;
  std::string algorithm;  // what the tuner (or --algo, COHORT_ALGO) takes; empty for sendrecv
  ColumnResult out_of_place;
  ColumnResult in_place;
};

struct SweepResult {
  size_t wrong = 0;
  double average_bus_bandwidth = 0;  // GB/s over every row and both columns
  bool bandwidth_ok = true;          // false when below min_bus_bandwidth
  std::vector<RowResult> rows;
  // The channel kind ("shm", "tcp", "ucx") from this rank to each other rank, in rank order.
  std::vector<std::string> channels;
  // 0, or 7 (nccl-tests' exit code for wrong results) when results were wrong or the bandwidth
  // below COHORT_BENCH_MIN_BW.
  int exit_code = 0;
  // -d cuda without a usable GPU on some rank: why, and nothing was measured (exit code 0).
  std::string skipped;
};

// Runs the sweep on every rank of `comm`; rank 0 prints to `out` (when not null).
absl::StatusOr<SweepResult> RunSweep(Communicator& comm, const Collective& collective,
                                     const SweepOptions& options, FILE* out);

// The JSON report of a sweep (-J): the format version, machine, commit and command (run_info.h),
// rank 0's channel kind to each other rank, the options, every row with its algorithm and
// per-iteration statistics, and the footer's figures.
nlohmann::json SweepJson(const Collective& collective, const SweepOptions& options,
                         const SweepResult& result, int nranks, const Topology& topology,
                         const std::vector<std::string>& argv);

// "float", "half", ... as nccl-tests names types in its table.
const char* TableTypeName(DataType type);

}  // namespace cohort::bench
