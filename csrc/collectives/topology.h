// The topology every rank of a communicator agrees on: which host each rank is on (host
// identity from COHORT_HOST_ID or hostname + boot id), its local rank, NUMA node and CPU
// binding (hwloc), each host's network interfaces and RDMA devices (nic.h), each rank's
// nearest NIC, and the link class between any two ranks. Algorithms derive their groups and
// ring orders from it, channels their NIC; `cohort-bench topo` prints it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "collectives/nic.h"
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
  // The rank's nearest NIC (ChooseNic in nic.h, from its own view of its host's network and
  // settings): interface and IP for sockets, RDMA device and port for verbs / UCX.
  NicChoice nic;
};

// What one rank brings to the exchange.
struct LocalFacts {
  std::string host_id;
  std::string host_name;
  int numa_node = -1;
  std::string cpus;
  HostNics nics;

  // This process: its binding (DescribeBinding) and the NICs `source` finds, selected by
  // `options`.
  static LocalFacts Discover(const std::string& host_id, const std::string& host_name,
                             const NicSource& source, const NicOptions& options);
};

class Topology {
 public:
  // Publishes this rank's facts under `prefix` (one record per rank) and reads every other
  // rank's. A communicator passes LocalFacts::Discover(..., NicSource(), its NicOptions).
  static absl::StatusOr<Topology> Exchange(Bootstrap& bootstrap, const std::string& prefix,
                                           int rank, int size, absl::Duration timeout,
                                           const LocalFacts& mine);
  // From known places (tests, tools). `nics`, when given, holds each rank's view of its host's
  // network (one per rank): the first rank's becomes the host's list, and each rank's `nic`
  // is chosen from its own view, its NUMA node and its turn among the ranks of its host on
  // that node. Without it the places' `nic` fields are kept as they are.
  static Topology FromPlaces(std::vector<RankPlace> places, std::vector<HostNics> nics = {});

  // The topology of `ranks` (ascending) alone, renumbered from 0 in that order, each keeping its
  // place, NIC and its host's network (a shrunk communicator's).
  Topology Subset(const std::vector<int>& ranks) const;

  int size() const { return static_cast<int>(places_.size()); }
  const RankPlace& place(int rank) const { return places_[rank]; }
  // Ranks of each host, hosts in order of their lowest rank, ranks ascending.
  const std::vector<std::vector<int>>& hosts() const { return hosts_; }
  LinkClass Link(int a, int b) const;
  // Every host has the same number of ranks.
  bool Uniform() const;
  // A human-readable map (cohort-bench topo).
  std::string Describe() const;

  // NICs, for the channels. Socket channels (TCP rails across hosts) listen on
  // place(rank).nic.ip (NearestNic(rank)->name is the interface); a UCX channel restricts its
  // context to UcxNetDevice(rank) (UCX_NET_DEVICES syntax, through its own ucp_config, unless
  // the user set UCX_NET_DEVICES); a channel reaching `peer` connects to place(peer).nic.ip.
  // Every rank's choice is made from that rank's own record (its view of its host, its
  // settings), the same way on every rank, so all agree without knowing each other's
  // settings. The choice depends on the other ranks of the host on the same NUMA node (they
  // take turns on equal NICs), so it exists only after the exchange: a channel that binds to
  // it is created after Topology::Exchange. Before, ChooseNic(DiscoverNics(...), numa, 0) gives
  // a rank's first choice alone.
  //
  // The network of host `host` (an index into hosts()), as its lowest rank saw it; empty when
  // the topology was built without NICs.
  const HostNics& nics(int host) const { return host_nics_[host]; }
  // The interface rank `rank` should use, or nullptr when none of its host's interfaces is up,
  // selected and has an IPv4 address (or the topology has no NIC information).
  const NicInfo* NearestNic(int rank) const;
  // Its RDMA device (port: place(rank).nic.rdma_port), or nullptr when it has none.
  const RdmaDevice* NearestRdma(int rank) const;
  // What UCX_NET_DEVICES would name for the rank: "mlx5_0:1" for an RDMA port, else the
  // interface ("eth0"), else empty.
  std::string UcxNetDevice(int rank) const;

 private:
  void DescribeNics(int host, std::string* text) const;

  std::vector<RankPlace> places_;
  std::vector<std::vector<int>> hosts_;
  std::vector<HostNics> host_nics_;  // per host; empty HostNics without NIC information
};

// This process's NUMA node (-1 when its CPU binding spans several nodes or is unknown) and CPU
// binding, from hwloc.
void DescribeBinding(int* numa_node, std::string* cpus);

}  // namespace cohort
