// The topology every rank of a communicator agrees on: which host each rank is on (host
// identity from COHORT_HOST_ID or hostname + boot id), its local rank, NUMA node and CPU
// binding (hwloc), and the link class between any two ranks. Algorithms derive their groups
// and ring orders from it; `cohort-bench topo` prints it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bootstrap.h"

namespace cohort {

enum class LinkClass { kSelf, kSharedMemory, kNetwork };
const char* LinkClassName(LinkClass link);

struct RankPlace {
  std::string host_id;
  std::string host_name;
  int host = 0;        // index into Topology::hosts
  int local_rank = 0;  // position among the ranks of its host
  int numa_node = -1;  // -1: unknown
  std::string cpus;    // CPU binding as a list ("0-3,8"), empty when unknown
};

class Topology {
 public:
  // Publishes this rank's place under `prefix` and reads every other rank's.
  static absl::StatusOr<Topology> Exchange(Bootstrap& bootstrap, const std::string& prefix,
                                           int rank, int size, absl::Duration timeout,
                                           const std::string& host_id,
                                           const std::string& host_name);
  // From known places (tests, tools).
  static Topology FromPlaces(std::vector<RankPlace> places);

  int size() const { return static_cast<int>(places_.size()); }
  const RankPlace& place(int rank) const { return places_[rank]; }
  // Ranks of each host, hosts in order of their lowest rank, ranks ascending.
  const std::vector<std::vector<int>>& hosts() const { return hosts_; }
  LinkClass Link(int a, int b) const;
  // Every host has the same number of ranks.
  bool Uniform() const;
  // A human-readable map (cohort-bench topo).
  std::string Describe() const;

 private:
  std::vector<RankPlace> places_;
  std::vector<std::vector<int>> hosts_;
};

// This process's NUMA node and CPU binding, from hwloc.
void DescribeBinding(int* numa_node, std::string* cpus);

}  // namespace cohort
