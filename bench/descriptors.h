// One descriptor per collective for cohort-bench (after nccl-tests' src/common.h): how a
// message size maps to element counts and buffers, how to fill the data and what every element
// of the result must be (exactly), the bus-bandwidth factor, and how to run it. The sweep engine
// (sweep.cc) does the rest; validate (validate.cc) reuses the allreduce descriptor.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "collectives/communicator.h"

namespace cohort::bench {

struct BenchParams {
  DataType dtype = DataType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
  std::string algorithm;
  bool blocking = false;  // -z 1: blocking calls (each returns finished, as MPI's do)
  // -d cuda: the operations run on device buffers ordered on `stream` (device_buffers.h).
  MemoryKind memory = MemoryKind::kHost;
  std::shared_ptr<device::Stream> stream;
};

// A descriptor fills and checks the host vectors; with -d cuda, device copies of them (at the
// same offsets, device_buffers.h) are what the operations run on. `run` uses In(), Out() and
// Copy(), which mean the device copies when there are.
struct Buffers {
  std::vector<char> input;
  std::vector<char> output;
  std::vector<char> scratch;  // sendrecv in place: the copy a receive-first rank sends from
  size_t count = 0;  // elements per rank block (allgather etc.) or whole buffer (allreduce)
  // -d cuda: the device copies (as large as the vectors) and the stream they are ordered on.
  char* device_input = nullptr;
  char* device_output = nullptr;
  char* device_scratch = nullptr;  // as large as `input`
  device::Stream* stream = nullptr;

  char* In() { return device_input != nullptr ? device_input : input.data(); }
  char* Out() { return device_input != nullptr ? device_output : output.data(); }
  // memcpy, or a copy on the stream between device buffers.
  void Copy(void* destination, const void* source, size_t bytes);
  // A copy of the input to send from while the input is received into (sendrecv in place).
  char* CopyInputToScratch();
};

// Where a rank's result lies: `count` elements of the benchmark's type at `data`. A rank with no
// result (not the root of reduce or gather) has count 0.
struct ResultRegion {
  char* data = nullptr;
  size_t count = 0;
};

// A collective's Works (one, or two for sendrecv), kept inline: no allocation per call.
using Works = absl::InlinedVector<std::shared_ptr<Work>, 2>;

struct Collective {
  const char* name;
  bool reduces;  // prints redop
  bool rooted;   // prints root
  // busbw = algbw * factor(n), as nccl-tests defines it (PERFORMANCE.md there).
  double (*bus_factor)(int n);
  // Whether a sweep size (nccl-tests' "size": the larger of the send and receive buffers) holds
  // one block per rank (allgather, alltoall, ...) or is the whole per-rank buffer (allreduce).
  bool per_rank_blocks;
  // Allocates and fills buffers for `count`.
  void (*prepare)(Buffers& buffers, const BenchParams& params, int rank, int n, size_t count);
  // Issues one operation (sendrecv: a send and a receive). May wait inside when an ordering is
  // needed for correctness (sendrecv in place).
  Works (*run)(Communicator& comm, Buffers& buffers, const BenchParams& params, bool in_place);
  ResultRegion (*result)(Buffers& buffers, const BenchParams& params, int rank, int n,
                         bool in_place);
  // The exact value of element `index` of the result region of `rank`.
  double (*expected)(const Buffers& buffers, const BenchParams& params, int rank, int n,
                     size_t index);
};

// nullptr when unknown.
const Collective* FindCollective(const std::string& name);
std::vector<std::string> CollectiveNames();

// The input value of `rank` at element `index`: small integers whose reductions are exact in
// every type, for the type, op and rank count at hand (fp16 and bf16 sums of many ranks use
// smaller values so that no partial sum is rounded; products multiply at most one factor > 1).
double InputValue(const BenchParams& params, int n, int rank, size_t index);
// `op` over ranks 0..n-1 of InputValue, as the type stores it (integers wrap around).
double ReducedValue(const BenchParams& params, int n, size_t index);

// Elements of the result that differ from the expectation (floating-point averages and
// products within a relative tolerance, everything else exactly).
size_t CountWrong(const Collective& collective, Buffers& buffers, const BenchParams& params,
                  int rank, int n, bool in_place);

// Changes the first `elements` elements of this rank's result so that each differs from its
// expectation: the deliberate corruption that tests of #wrong use (COHORT_BENCH_CORRUPT).
// Returns how many were changed (fewer when the region is smaller).
size_t CorruptResult(const Collective& collective, Buffers& buffers, const BenchParams& params,
                     int rank, int n, bool in_place, size_t elements);

}  // namespace cohort::bench
