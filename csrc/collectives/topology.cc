#include "collectives/topology.h"

#include <hwloc.h>

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace cohort {

const char* LinkClassName(LinkClass link) {
  switch (link) {
    case LinkClass::kSelf: return "self";
    case LinkClass::kSharedMemory: return "shm";
    case LinkClass::kNetwork: return "net";
  }
  return "?";
}

void DescribeBinding(int* numa_node, std::string* cpus) {
  *numa_node = -1;
  cpus->clear();
  hwloc_topology_t topology;
  if (hwloc_topology_init(&topology) != 0) return;
  if (hwloc_topology_load(topology) == 0) {
    hwloc_bitmap_t binding = hwloc_bitmap_alloc();
    if (hwloc_get_cpubind(topology, binding, HWLOC_CPUBIND_PROCESS) == 0) {
      char* text = nullptr;
      hwloc_bitmap_list_asprintf(&text, binding);
      if (text != nullptr) {
        *cpus = text;
        free(text);
      }
      hwloc_obj_t node = nullptr;
      while ((node = hwloc_get_next_obj_by_type(topology, HWLOC_OBJ_NUMANODE, node)) != nullptr) {
        if (hwloc_bitmap_intersects(node->cpuset, binding)) {
          *numa_node = static_cast<int>(node->os_index);
          break;
        }
      }
    }
    hwloc_bitmap_free(binding);
  }
  hwloc_topology_destroy(topology);
}

Topology Topology::FromPlaces(std::vector<RankPlace> places) {
  Topology topology;
  topology.places_ = std::move(places);
  std::map<std::string, int> index;
  for (size_t rank = 0; rank < topology.places_.size(); ++rank) {
    RankPlace& place = topology.places_[rank];
    auto [it, inserted] = index.emplace(place.host_id, static_cast<int>(topology.hosts_.size()));
    if (inserted) topology.hosts_.emplace_back();
    place.host = it->second;
    place.local_rank = static_cast<int>(topology.hosts_[it->second].size());
    topology.hosts_[it->second].push_back(static_cast<int>(rank));
  }
  return topology;
}

absl::StatusOr<Topology> Topology::Exchange(Bootstrap& bootstrap, const std::string& prefix,
                                            int rank, int size, absl::Duration timeout,
                                            const std::string& host_id,
                                            const std::string& host_name) {
  int numa = -1;
  std::string cpus;
  DescribeBinding(&numa, &cpus);
  // host_id has no spaces; host_name comes last so it may.
  COHORT_RETURN_IF_ERROR(bootstrap.Set(
      absl::StrCat(prefix, "/topo/", rank),
      absl::StrCat(host_id, " ", numa, " ", cpus.empty() ? "-" : cpus, " ", host_name)));
  std::vector<RankPlace> places(size);
  for (int peer = 0; peer < size; ++peer) {
    COHORT_ASSIGN_OR_RETURN(std::string text,
                            bootstrap.Get(absl::StrCat(prefix, "/topo/", peer), timeout));
    std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(' ', 3));
    if (parts.size() != 4 || !absl::SimpleAtoi(parts[1], &places[peer].numa_node)) {
      return absl::DataLossError(absl::StrCat("malformed topology record of rank ", peer, ": \"",
                                              text, "\""));
    }
    places[peer].host_id = parts[0];
    places[peer].cpus = parts[2] == "-" ? "" : parts[2];
    places[peer].host_name = parts[3];
  }
  return FromPlaces(std::move(places));
}

LinkClass Topology::Link(int a, int b) const {
  if (a == b) return LinkClass::kSelf;
  return places_[a].host == places_[b].host ? LinkClass::kSharedMemory : LinkClass::kNetwork;
}

bool Topology::Uniform() const {
  for (const auto& host : hosts_) {
    if (host.size() != hosts_[0].size()) return false;
  }
  return true;
}

std::string Topology::Describe() const {
  std::string text = absl::StrCat("# ", size(), " ranks on ", hosts_.size(), " host",
                                  hosts_.size() == 1 ? "" : "s", "\n");
  for (size_t host = 0; host < hosts_.size(); ++host) {
    const RankPlace& first = places_[hosts_[host][0]];
    absl::StrAppend(&text, "host ", host, " ", first.host_name, " (", first.host_id, "): ",
                    hosts_[host].size(), " rank", hosts_[host].size() == 1 ? "" : "s", "\n");
    for (int rank : hosts_[host]) {
      const RankPlace& place = places_[rank];
      absl::StrAppend(&text, "  rank ", rank, "  local ", place.local_rank, "  numa ",
                      place.numa_node < 0 ? std::string("?") : std::to_string(place.numa_node),
                      "  cpus ", place.cpus.empty() ? "?" : place.cpus, "\n");
    }
  }
  absl::StrAppend(&text, "# links (shm: shared memory, net: network)\n     ");
  for (int b = 0; b < size(); ++b) absl::StrAppend(&text, absl::StrFormat("%5d", b));
  absl::StrAppend(&text, "\n");
  for (int a = 0; a < size(); ++a) {
    absl::StrAppend(&text, absl::StrFormat("%5d", a));
    for (int b = 0; b < size(); ++b) {
      absl::StrAppend(&text, absl::StrFormat("%5s", a == b ? "-" : LinkClassName(Link(a, b))));
    }
    absl::StrAppend(&text, "\n");
  }
  return text;
}

}  // namespace cohort
