// One descriptor per collective for cohort-bench (after nccl-tests' src/common.h): how a
// message size maps to element counts and buffers, how to fill and check the data exactly,
// the bus-bandwidth factor, and how to run it. The sweep engine (sweep.cc) does the rest.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace cohort::bench {

struct BenchParams {
  DataType dtype = DataType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
  std::string algorithm;
};

struct Buffers {
  std::vector<char> input;
  std::vector<char> output;
  size_t count = 0;  // elements per rank block (allgather etc.) or whole buffer (allreduce)
};

struct Collective {
  const char* name;
  bool reduces;   // prints redop
  bool rooted;    // prints root
  // busbw = algbw * factor(n), as nccl-tests defines it.
  double (*bus_factor)(int n);
  // Whether a sweep size (nccl-tests' "size": the larger of the send and receive buffers) holds
  // one block per rank (allgather, alltoall, ...) or is the whole per-rank buffer (allreduce).
  bool per_rank_blocks;
  // Allocates and fills buffers for `count`.
  void (*prepare)(Buffers& buffers, const BenchParams& params, int rank, int n, size_t count);
  std::shared_ptr<Work> (*run)(Communicator& comm, Buffers& buffers, const BenchParams& params,
                               bool in_place);
  // Elements of the result that differ from the exact expectation.
  size_t (*count_wrong)(const Buffers& buffers, const BenchParams& params, int rank, int n,
                        bool in_place);
};

// nullptr when unknown.
const Collective* FindCollective(const std::string& name);
std::vector<std::string> CollectiveNames();

}  // namespace cohort::bench
