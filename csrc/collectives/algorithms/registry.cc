#include "collectives/algorithms/registry.h"

#include <unistd.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort {

bool Algorithm::Serves(OpType op) const {
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

const std::vector<Algorithm>& Algorithms() {
  static const std::vector<Algorithm> registry = [] {
    std::vector<Algorithm> entries;
    RegisterRingAlgorithms(entries);
    RegisterRecursiveDoublingAlgorithms(entries);
    RegisterTreeAlgorithms(entries);
    RegisterDirectAlgorithms(entries);
    RegisterHierarchicalAlgorithms(entries);
    RegisterShotAlgorithms(entries);
    RegisterLaneAlgorithms(entries);
    return entries;
  }();
  return registry;
}

std::vector<std::string> AlgorithmNames() {
  std::vector<std::string> names;
  for (const Algorithm& algorithm : Algorithms()) names.push_back(algorithm.name);
  return names;
}

absl::Status ValidateAlgorithmName(const std::string& forced) {
  if (forced.empty() || forced == "auto") return absl::OkStatus();
  for (const Algorithm& algorithm : Algorithms()) {
    if (algorithm.name == forced) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "COHORT_ALGO=\"", forced, "\" is not a known algorithm; accepted: auto, ",
      absl::StrJoin(AlgorithmNames(), ", "), ". Unset it to let the tuner choose."));
}

absl::StatusOr<const Algorithm*> SelectAlgorithm(const OpArgs& args, const Tuning& tuning,
                                                 const std::string& forced,
                                                 double* predicted_seconds) {
  const int world_size = tuning.size();
  const Algorithm* best = nullptr;
  double best_cost = std::numeric_limits<double>::infinity();
  for (const Algorithm& algorithm : Algorithms()) {
    if (!algorithm.Serves(args.op) || !algorithm.supports(args, tuning)) continue;
    double cost = algorithm.cost(args, tuning);
    if (!forced.empty() && forced != "auto" && algorithm.name == forced) {
      if (predicted_seconds != nullptr) *predicted_seconds = cost;
      return &algorithm;
    }
    if (cost < best_cost) {
      best_cost = cost;
      best = &algorithm;
    }
  }
  if (predicted_seconds != nullptr) *predicted_seconds = best_cost;
  if (best == nullptr) {
    return absl::UnimplementedError(absl::StrCat("no algorithm serves ", OpTypeName(args.op),
                                                 " on ", world_size, " ranks"));
  }
  return best;
}

std::vector<size_t> BlockCounts(const OpArgs& args, int world_size) {
  if (!args.counts.empty()) return args.counts;
  return std::vector<size_t>(world_size, args.count);
}

std::vector<size_t> BlockOffsets(const std::vector<size_t>& counts) {
  std::vector<size_t> offsets(counts.size(), 0);
  for (size_t i = 1; i < counts.size(); ++i) offsets[i] = offsets[i - 1] + counts[i - 1];
  return offsets;
}

double OversubscriptionFactor(int ranks, long cpus) {
  cpus = std::max(1L, cpus);
  const long ranks_per_cpu = (std::max(1, ranks) + cpus - 1) / cpus;
  return ranks_per_cpu <= 1 ? 1.0 : 2.0 * static_cast<double>(ranks_per_cpu);
}

double OversubscriptionFactor(const Tuning& tuning) {
  static const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return OversubscriptionFactor(tuning.size(), cpus);
}

size_t OpBytes(const OpArgs& args, int world_size) {
  size_t elements = args.count;
  if (!args.counts.empty()) {
    elements = 0;
    for (size_t count : args.counts) elements += count;
  } else if (args.op == OpType::kAllgather || args.op == OpType::kReduceScatter ||
             args.op == OpType::kAlltoall) {
    elements = args.count * static_cast<size_t>(world_size);
  }
  return elements * args.element_size();
}

}  // namespace cohort
