// `cohort-bench validate`: run on every rank of a job (one or more per node, under cohortrun),
// it measures the cluster - inventory per node, memcpy, a straggler check, point-to-point
// bandwidth and latency between every pair of nodes in rounds of disjoint pairs plus random
// re-pairings, an allreduce inside each node and one across the cluster with the ring forced -
// gathers everything at rank 0 through the job's store, and judges it (verdict.h).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/verdict.h"
#include "collectives/communicator.h"
#include "common/bootstrap.h"

namespace cohort::bench {

struct ValidateOptions {
  std::string expect_path;          // --expect: minima per link and node (JSON)
  double threshold = -1;            // --threshold: fraction of the median; < 0: the file's or 0.8
  double p2p_seconds = 0.25;        // --p2p-seconds: timed transfer per pair and direction
  size_t p2p_max_bytes = 16 << 20;  // --p2p-max-bytes: largest message of the bandwidth test
  int latency_iterations = 50;      // --latency-iters: round trips per pair
  int repairings = 2;               // --repairings: random re-pairing rounds after the round-robin
  int confirmations = 2;            // --confirmations: passes re-measuring slow-looking links
  uint64_t seed = 0;                // --seed: of the re-pairings; 0: random (printed in the JSON)
  size_t intra_bytes = 16 << 20;    // --intra-bytes: intra-node allreduce size
  size_t allreduce_bytes =
      0;                     // --allreduce-bytes: cluster allreduce; 0: ~0.1 s at the slowest link
  int iterations = 5;        // -n: timed allreduce iterations (intra-node and cluster)
  int straggler_steps = 12;  // --steps: work + allreduce steps of the straggler check
  std::string cluster_algorithm = "ring";      // --algo
  absl::Duration timeout = absl::Seconds(60);  // -T: any single wait of the measurements
  std::vector<std::string> argv;               // the command line, for the JSON report
};

// Runs validate on this rank. `world` spans the job; `bootstrap` is the job's store, used to
// gather the results at rank 0 (keys under `prefix`). Rank 0 prints the report to `out` and
// writes the JSON report to `json_path` (when not empty). Every rank returns the same exit code:
// 0 when every node and link passed, 1 otherwise (2 for a bad --expect file).
absl::StatusOr<int> RunValidate(Communicator& world, Bootstrap& bootstrap,
                                const std::string& prefix, const ValidateOptions& options,
                                FILE* out, const std::string& json_path);

// The round-robin schedule of n nodes: n - 1 rounds (n rounds when n is odd, one node resting
// in each) of disjoint pairs, every pair exactly once. Pairs are (lower, higher).
std::vector<std::vector<std::pair<int, int>>> RoundRobin(int n);
// A random perfect matching of n nodes (one rests when n is odd).
std::vector<std::pair<int, int>> RandomPairing(int n, uint64_t seed);

}  // namespace cohort::bench
