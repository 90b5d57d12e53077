// The judgement of `cohort-bench validate`: from what the ranks measured (inventory, pairwise
// bandwidth and latency, memcpy, intra-node and whole-cluster allreduce, per-rank step timings)
// and the thresholds (an --expect file's minima, else a fraction of the cluster's median), a
// verdict per node and per link (PASS / SLOW / FAIL with the figure), the culprits, the printed
// report and the JSON one. Pure functions of their inputs, so tests can feed them made-up data.
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace cohort::bench {

enum class Level { kPass = 0, kSlow = 1, kFail = 2 };
const char* LevelName(Level level);  // "PASS", "SLOW", "FAIL"

// One measurement of the pair of nodes (a, b), a < b, in one round.
struct PairSample {
  int a = 0;
  int b = 0;
  int round = 0;
  bool repairing = false;    // from a random re-pairing, not the round-robin
  bool confirming = false;   // a re-measurement of a link that looked slow
  double bandwidth_ab = -1;  // GB/s, a sending to b; < 0: not measured
  double bandwidth_ba = -1;
  double latency_us = -1;  // half a round trip of a small message
  std::string error;       // why the measurement failed; empty when it did not
};

// What one rank measured in the straggler phase: steps of local work (many short samples of a
// fixed amount) each followed by an allreduce of every rank.
struct RankTiming {
  int rank = 0;
  int node = 0;
  double compute_best_us = -1;    // the fastest sample of fixed work: the core's own speed
  double compute_median_us = -1;  // a step's work, median over steps (contention shows here)
  double wait_median_us = -1;     // time in the step's allreduce (waiting for the others)
};

struct Measurements {
  std::vector<std::string> nodes;  // host names, in topology order
  std::vector<int> ranks_per_node;
  std::vector<nlohmann::json> inventory;  // per node (inventory.h)
  std::vector<double> memcpy_gbps;        // per node; < 0: not measured
  std::vector<double> intra_busbw_gbps;   // per node; < 0: one rank (nothing to measure)
  size_t intra_bytes = 0;
  std::vector<PairSample> samples;
  int rounds = 0;               // round-robin rounds
  int repairings = 0;           // random re-pairing rounds
  int confirmation_rounds = 0;  // rounds re-measuring slow-looking links
  std::vector<RankTiming> ranks;
  double cluster_busbw_gbps = -1;  // < 0: not measured (one rank)
  double cluster_time_us = 0;
  size_t cluster_bytes = 0;
  std::string cluster_algorithm;
  double seconds = 0;  // how long validate ran
};

// Minima from --expect (the format is in docs/bench.md); a figure without one is judged
// relative to the cluster's median.
struct Expectations {
  struct Link {
    double min_bandwidth_gbps = -1;
    double max_latency_us = -1;
  };
  struct Node {
    double min_p2p_bandwidth_gbps = -1;
    double max_latency_us = -1;
    double min_memcpy_gbps = -1;
    double min_intra_allreduce_busbw_gbps = -1;
    int min_gpus = -1;
  };
  double threshold = 0.8;        // relative mode: flag what is below this fraction of the median
  double latency_slack_us = 50;  // relative latency: flag above median / threshold + slack
  Link link;                     // every link
  std::map<std::string, Link> links;  // "nodeA-nodeB" (either order)
  Node node;                          // every node
  std::map<std::string, Node> nodes;  // by host name
  double min_cluster_allreduce_busbw_gbps = -1;
  std::string source;  // the file, for the report
};

absl::StatusOr<Expectations> ParseExpectations(const nlohmann::json& document);
absl::StatusOr<Expectations> LoadExpectations(const std::string& path);

struct NodeVerdict {
  std::string name;
  Level level = Level::kPass;
  std::vector<std::string> reasons;  // one per finding, with the figure
  double p2p_gbps = -1;              // its best link (min of both directions, best sample)
  double latency_us = -1;            // its lowest-latency link
  double memcpy_gbps = -1;
  double intra_busbw_gbps = -1;
  double compute_ratio = -1;  // its slowest rank's speed / the median rank's (1 = median)
  int slowest_rank = -1;
  bool p2p_culprit = false;  // SLOW or FAIL for its network figures: explains its links
};

struct LinkVerdict {
  int a = 0;
  int b = 0;
  double bandwidth_ab = -1;  // best sample, GB/s
  double bandwidth_ba = -1;
  double latency_us = -1;  // lowest sample
  int samples = 0;
  Level level = Level::kPass;
  std::vector<std::string> reasons;
  int explained_by = -1;     // a culprit node at one end, when there is one
  double bandwidth() const;  // the slower direction
};

struct Report {
  std::vector<NodeVerdict> nodes;
  std::vector<LinkVerdict> links;
  Level cluster_level = Level::kPass;
  std::vector<std::string> cluster_reasons;
  Level overall = Level::kPass;
  std::vector<std::string> culprits;  // "node2", "node0-node3", "cluster allreduce"
  std::string summary;                // one line naming the culprits and their figures
  int exit_code = 0;                  // 0 only when everything passed
};

Report Judge(const Measurements& measurements, const Expectations& expectations);

// The human-readable report: inventory, the bandwidth and latency matrices, per-node and per-link
// verdicts, the cluster allreduce and the summary (lines starting with '#' like the sweep's).
void PrintReport(FILE* out, const Measurements& measurements, const Report& report,
                 const Expectations& expectations);

nlohmann::json ReportJson(const Measurements& measurements, const Report& report,
                          const Expectations& expectations);

}  // namespace cohort::bench
