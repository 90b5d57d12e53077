// Hierarchical allreduce across hosts: a reduce-scatter among the ranks of each host (shared
// memory), then one allreduce per local rank across hosts, all in parallel (one "rail" per local
// rank, each moving 1/m of the data), then an allgather inside each host. Every host sends S
// bytes over its network link, against 2(n-1)/n S for a flat ring.
#include <cstring>

#include "collectives/algorithms/registry.h"
#include "collectives/algorithms/ring.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagHostGroup = 3u << 24;
constexpr uint32_t kTagRail = 4u << 24;

bool Applies(const OpArgs&, const Tuning& tuning) {
  return tuning.multi_host() && tuning.topology->Uniform() &&
         tuning.topology->hosts()[0].size() > 1;
}

double Cost(const OpArgs& args, const Tuning& tuning) {
  const auto& hosts = tuning.topology->hosts();
  double m = static_cast<double>(hosts[0].size());
  double h = static_cast<double>(hosts.size());
  double bytes = static_cast<double>(OpBytes(args, tuning.size()));
  const LinkModel& intra = tuning.intra;
  const LinkModel& inter = tuning.inter;
  double inside = 2 * (m - 1) * intra.latency_seconds +
                  2 * (m - 1) / m * bytes / intra.bytes_per_second +
                  (m - 1) / m * bytes / intra.reduce_bytes_per_second;
  // The m rails share the host's link: together they move 2(h-1)/h S through it.
  double across = 2 * (h - 1) * inter.latency_seconds +
                  2 * (h - 1) / h * bytes / inter.bytes_per_second +
                  (h - 1) / h * bytes / m / inter.reduce_bytes_per_second;
  return inside + across;
}

absl::Status HierarchicalAllreduce(OpContext& context) {
  const OpArgs& args = context.args();
  const Topology& topology = context.topology();
  const RankPlace& place = topology.place(context.rank());
  const size_t element = args.element_size();
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);

  RingGroup host_group;
  host_group.ranks = topology.hosts()[place.host];
  host_group.index = place.local_rank;
  host_group.tag_base = kTagHostGroup;
  RingGroup rail;
  for (const std::vector<int>& host : topology.hosts()) rail.ranks.push_back(host[place.local_rank]);
  rail.index = place.host;
  rail.tag_base = kTagRail;

  const int m = host_group.size();
  Blocks blocks = SplitEvenly(args.count, m);
  const int own = place.local_rank;
  char* own_block = output + blocks.offsets[own] * element;
  // 1. Inside the host: local rank i ends with block i reduced over the host.
  COHORT_RETURN_IF_ERROR(RingReduceScatter(context, host_group, input, output, output, blocks,
                                           -1, /*finish_average=*/false, [](const Piece&) {}));
  // 2. Across hosts, one rail per local rank: block i reduced over the world.
  COHORT_RETURN_IF_ERROR(RingAllreduceInPlace(context, rail, own_block, own_block,
                                              blocks.counts[own], /*finish_average=*/true));
  // 3. Inside the host: everyone gets every block.
  COHORT_RETURN_IF_ERROR(RingAllgather(context, host_group, own_block, output, blocks, own,
                                       /*first_sends_done=*/false));
  return context.WaitAll();
}

}  // namespace

void RegisterHierarchicalAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(
      Algorithm{"hierarchical", {OpType::kAllreduce}, Applies, Cost, HierarchicalAllreduce});
}

}  // namespace cohort
