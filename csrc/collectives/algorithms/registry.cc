#include "collectives/algorithms/registry.h"

#include <unistd.h>

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

absl::Status UnservedOp(const char* algorithm, OpType op) {
  return absl::InternalError(absl::StrCat("algorithm ", algorithm, " was run for ",
                                          OpTypeName(op),
                                          ", which it does not implement (its registry entry "
                                          "lists it by mistake); report this as a bug"));
}

namespace {

// The call and the communicator as a forced algorithm's error describes them.
std::string DescribeCall(const OpArgs& args, const Tuning& tuning) {
  const Topology& topology = *tuning.topology;
  std::string call = absl::StrCat(OpTypeName(args.op), " of ", OpBytes(args, tuning.size()),
                                  " bytes");
  if (!args.counts.empty() || !args.displacements.empty()) {
    absl::StrAppend(&call, " with per-rank counts");
  }
  const size_t hosts = topology.hosts().size();
  if (hosts == 1) {
    absl::StrAppend(&call, " on ", tuning.size(), " ranks on one host");
  } else {
    absl::StrAppend(&call, " on ", tuning.size(), " ranks on ", hosts, " hosts");
    if (!topology.Uniform()) absl::StrAppend(&call, " (unequal ranks per host)");
  }
  if (hosts == 1) {
    absl::StrAppend(&call, tuning.lane_bytes > 0
                               ? absl::StrCat(" (shared-memory lane of ", tuning.lane_bytes,
                                              " bytes)")
                               : std::string(" (no shared-memory lane)"));
  }
  return call;
}

}  // namespace

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
                                                 double* predicted_seconds, Forcing forcing) {
  const int world_size = tuning.size();
  COHORT_RETURN_IF_ERROR(CheckMemoryServed(args, forced));
  if (!forced.empty() && forced != "auto") {
    const Algorithm* named = nullptr;
    for (const Algorithm& algorithm : Algorithms()) {
      if (algorithm.name == forced) named = &algorithm;
    }
    if (named == nullptr) return ValidateAlgorithmName(forced);
    if (named->Serves(args.op) && named->supports(args, tuning)) {
      if (predicted_seconds != nullptr) *predicted_seconds = named->cost(args, tuning);
      return named;
    }
    // Forced from the communicator, it leaves the ops it does not implement to the tuner.
    if (named->Serves(args.op) || forcing == Forcing::kCall) {
      std::vector<std::string> could;
      for (const Algorithm& algorithm : Algorithms()) {
        if (algorithm.Serves(args.op) && algorithm.ServesMemory(args.memory) &&
            algorithm.supports(args, tuning)) {
          could.push_back(algorithm.name);
        }
      }
      std::string why;
      if (!named->Serves(args.op)) {
        std::vector<std::string> ops;
        for (OpType op : named->ops) ops.push_back(OpTypeName(op));
        why = absl::StrCat("it does not implement ", OpTypeName(args.op), " (it serves ",
                           absl::StrJoin(ops, ", "), ")");
      } else {
        why = absl::StrCat("it needs ", named->needs.empty() ? "other conditions" : named->needs);
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "the forced algorithm \"", forced, "\" cannot serve this ", DescribeCall(args, tuning),
          ": ", why, ". Force one that can (",
          could.empty() ? std::string("none can") : absl::StrJoin(could, ", "),
          ") or none, to let the tuner choose"));
    }
  }
  const Algorithm* best = nullptr;
  double best_cost = std::numeric_limits<double>::infinity();
  for (const Algorithm& algorithm : Algorithms()) {
    if (!algorithm.Serves(args.op) || !algorithm.ServesMemory(args.memory) ||
        !algorithm.supports(args, tuning)) {
      continue;
    }
    double cost = algorithm.cost(args, tuning);
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
