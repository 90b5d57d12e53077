#include "collectives/algorithms/registry.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace cohort {

bool Algorithm::Serves(OpType op) const {
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

bool Algorithm::ServesMemory(MemoryKind kind) const {
  return std::find(memory.begin(), memory.end(), kind) != memory.end();
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
    RegisterDeviceAlgorithms(entries);
    RegisterDeviceHierarchicalAlgorithms(entries);
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

absl::Status CheckMemoryServed(const OpArgs& args, const std::string& forced) {
  if (forced.empty() || forced == "auto") return absl::OkStatus();
  for (const Algorithm& algorithm : Algorithms()) {
    if (algorithm.name != forced || algorithm.ServesMemory(args.memory)) continue;
    std::vector<std::string> kinds;
    for (MemoryKind kind : algorithm.memory) kinds.push_back(MemoryKindName(kind));
    std::vector<std::string> could;
    for (const Algorithm& other : Algorithms()) {
      if (other.Serves(args.op) && other.ServesMemory(args.memory)) could.push_back(other.name);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "the forced algorithm \"", forced, "\" cannot run ", OpTypeName(args.op), " on ",
        MemoryKindName(args.memory), " memory: it serves ", absl::StrJoin(kinds, ", "),
        " memory only. Force one that serves ", MemoryKindName(args.memory), " memory (",
        could.empty() ? std::string("none does") : absl::StrJoin(could, ", "),
        ") or none, to let the tuner choose"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const Algorithm*> SelectAlgorithm(const OpArgs& args, const Tuning& tuning,
                                                 const std::string& forced,
                                                 double* predicted_seconds) {
  const int world_size = tuning.size();
  COHORT_RETURN_IF_ERROR(CheckMemoryServed(args, forced));
  const Algorithm* best = nullptr;
  double best_cost = std::numeric_limits<double>::infinity();
  for (const Algorithm& algorithm : Algorithms()) {
    if (!algorithm.Serves(args.op) || !algorithm.ServesMemory(args.memory) ||
        !algorithm.supports(args, tuning)) {
      continue;
    }
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
                                                 " on ", MemoryKindName(args.memory),
                                                 " memory on ", world_size, " ranks"));
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
