#include "collectives/topology.h"

#include <hwloc.h>

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "common/json_fields.h"

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
      // A rank allowed on several nodes has no node of its own: its NIC is chosen without one.
      hwloc_obj_t node = nullptr;
      while ((node = hwloc_get_next_obj_by_type(topology, HWLOC_OBJ_NUMANODE, node)) != nullptr) {
        if (!hwloc_bitmap_iszero(binding) && hwloc_bitmap_isincluded(binding, node->cpuset)) {
          *numa_node = static_cast<int>(node->os_index);
          break;
        }
      }
    }
    hwloc_bitmap_free(binding);
  }
  hwloc_topology_destroy(topology);
}

LocalFacts LocalFacts::Discover(const std::string& host_id, const std::string& host_name,
                                const NicSource& source, const NicOptions& options) {
  LocalFacts facts;
  facts.host_id = host_id;
  facts.host_name = host_name;
  DescribeBinding(&facts.numa_node, &facts.cpus);
  facts.nics = DiscoverNics(source, options);
  return facts;
}

Topology Topology::FromPlaces(std::vector<RankPlace> places, std::vector<HostNics> nics) {
  Topology topology;
  topology.places_ = std::move(places);
  std::map<std::string, int> index;
  // (host, NUMA node) -> ranks seen so far: each rank's turn among its node's NICs.
  std::map<std::pair<int, int>, int> turns;
  const bool with_nics = nics.size() == topology.places_.size();
  for (size_t rank = 0; rank < topology.places_.size(); ++rank) {
    RankPlace& place = topology.places_[rank];
    auto [it, inserted] = index.emplace(place.host_id, static_cast<int>(topology.hosts_.size()));
    if (inserted) {
      topology.hosts_.emplace_back();
      topology.host_nics_.push_back(with_nics ? nics[rank] : HostNics{});
    }
    place.host = it->second;
    place.local_rank = static_cast<int>(topology.hosts_[it->second].size());
    topology.hosts_[it->second].push_back(static_cast<int>(rank));
    if (with_nics) {
      int turn = turns[{place.host, place.numa_node}]++;
      place.nic = ChooseNic(nics[rank], place.numa_node, turn);
    }
  }
  return topology;
}

Topology Topology::Subset(const std::vector<int>& ranks) const {
  std::vector<RankPlace> places;
  for (int rank : ranks) places.push_back(places_[rank]);
  Topology subset = FromPlaces(std::move(places));
  for (size_t host = 0; host < subset.hosts_.size(); ++host) {
    subset.host_nics_[host] = host_nics_[places_[ranks[subset.hosts_[host][0]]].host];
  }
  return subset;
}

absl::StatusOr<Topology> Topology::Exchange(Bootstrap& bootstrap, const std::string& prefix,
                                            int rank, int size, absl::Duration timeout,
                                            const LocalFacts& mine) {
  // One record per rank: its place and its view of its host's network. Hosts with containers
  // have dozens of veths and bridges without addresses; every rank reads every record, so
  // those stay out (a virtual interface counts only when it could carry traffic).
  HostNics network = mine.nics;
  std::erase_if(network.interfaces, [](const NicInfo& nic) {
    return nic.virtual_device && (!nic.up || nic.ipv4.empty());
  });
  nlohmann::json record = {{"host_id", mine.host_id},
                           {"host_name", mine.host_name},
                           {"numa_node", mine.numa_node},
                           {"cpus", mine.cpus},
                           {"network", NicsToJson(network)}};
  COHORT_RETURN_IF_ERROR(bootstrap.Set(absl::StrCat(prefix, "/topo/", rank), record.dump()));
  std::vector<RankPlace> places(size);
  std::vector<HostNics> nics(size);
  for (int peer = 0; peer < size; ++peer) {
    COHORT_ASSIGN_OR_RETURN(std::string text,
                            bootstrap.Get(absl::StrCat(prefix, "/topo/", peer), timeout));
    auto malformed = [&](absl::string_view why) {
      return absl::DataLossError(absl::StrCat(
          "malformed topology record of rank ", peer, " under \"", prefix, "/topo/", peer,
          "\" (", why, "); is another job or an older cohort using the same store and name?"));
    };
    nlohmann::json theirs = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!theirs.is_object()) return malformed("not JSON");
    try {
      places[peer].host_id = theirs.at("host_id").get<std::string>();
      places[peer].host_name = theirs.at("host_name").get<std::string>();
      places[peer].numa_node = JsonInt(theirs, "numa_node");
      places[peer].cpus = theirs.at("cpus").get<std::string>();
    } catch (const std::exception& error) {  // nlohmann's, or JsonInt's range errors
      return malformed(error.what());
    }
    auto network = NicsFromJson(theirs.value("network", nlohmann::json::object()));
    if (!network.ok()) return malformed(network.status().message());
    nics[peer] = std::move(*network);
  }
  return FromPlaces(std::move(places), std::move(nics));
}

const NicInfo* Topology::NearestNic(int rank) const {
  const RankPlace& place = places_[rank];
  if (place.nic.interface.empty()) return nullptr;
  return host_nics_[place.host].Interface(place.nic.interface);
}

const RdmaDevice* Topology::NearestRdma(int rank) const {
  const RankPlace& place = places_[rank];
  if (place.nic.rdma_device.empty()) return nullptr;
  return host_nics_[place.host].Rdma(place.nic.rdma_device);
}

std::string Topology::UcxNetDevice(int rank) const {
  const NicChoice& nic = places_[rank].nic;
  if (!nic.rdma_device.empty()) return absl::StrCat(nic.rdma_device, ":", nic.rdma_port);
  return nic.interface;
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

namespace {

std::string Node(int numa_node) {
  return numa_node < 0 ? std::string("?") : std::to_string(numa_node);
}

}  // namespace

void Topology::DescribeNics(int host, std::string* text) const {
  const HostNics& nics = host_nics_[host];
  if (nics.interfaces.empty()) return;
  auto chosen = [&](const std::string& name, int port) {
    for (int rank : hosts_[host]) {
      const NicChoice& nic = places_[rank].nic;
      if (port == 0 ? nic.interface == name : nic.rdma_device == name && nic.rdma_port == port) {
        return true;
      }
    }
    return false;
  };
  for (const NicInfo& nic : nics.interfaces) {
    // lo is always there; it is worth a line only when a rank has nothing better.
    if (nic.loopback && !chosen(nic.name, 0)) continue;
    std::string speed = nic.speed_mbps > 0
                            ? (nic.speed_mbps % 1000 == 0
                                   ? absl::StrCat(nic.speed_mbps / 1000, " Gb/s")
                                   : absl::StrCat(nic.speed_mbps, " Mb/s"))
                            : std::string("speed ?");
    std::vector<std::string> notes;
    if (!nic.pci.empty()) notes.push_back(absl::StrCat("pci ", nic.pci));
    if (nic.virtual_device) notes.push_back("virtual");
    if (!nic.rdma_device.empty()) {
      notes.push_back(absl::StrCat("rdma ", nic.rdma_device, ":", nic.rdma_port));
    }
    if (!nic.allowed) notes.push_back("not selected (see COHORT_SOCKET_IFNAME)");
    std::string line = absl::StrFormat("  nic  %-10s %-4s %-15s mtu %-5d %-10s numa %-2s %s",
                                       nic.name, nic.up ? "up" : "down",
                                       nic.ipv4.empty() ? "-" : nic.ipv4.front(), nic.mtu, speed,
                                       Node(nic.numa_node), absl::StrJoin(notes, ", "));
    absl::StrAppend(text, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  if (nics.rdma.empty()) {
    absl::StrAppend(text, "  rdma none (", nics.verbs ? "libibverbs finds no device"
                                                      : "libcohort was built without libibverbs",
                    ")\n");
  }
  for (const RdmaDevice& device : nics.rdma) {
    if (!device.error.empty() || device.ports.empty()) {
      absl::StrAppend(text, "  rdma ", device.name, "  numa ", Node(device.numa_node), "  ",
                      device.error.empty() ? "no ports" : device.error, "\n");
    }
    for (const RdmaPort& port : device.ports) {
      std::string rate =
          port.gbps > 0 ? absl::StrFormat("%g Gb/s (%s %s)", port.gbps,
                                          InfinibandWidthName(port.active_width),
                                          InfinibandSpeedName(port.active_speed))
                        : std::string("rate ?");
      std::string netdev;
      for (const NicInfo& nic : nics.interfaces) {
        if (nic.rdma_device == device.name && nic.rdma_port == port.port) netdev = nic.name;
      }
      std::string line = absl::StrFormat(
          "  rdma %-10s %-11s %-10s %-22s numa %-2s %s%s", absl::StrCat(device.name, ":", port.port),
          port.state, port.link_layer, rate, Node(device.numa_node),
          netdev.empty() ? "" : absl::StrCat("netdev ", netdev),
          port.allowed ? "" : " not selected (see COHORT_IB_HCA)");
      absl::StrAppend(text, absl::StripTrailingAsciiWhitespace(line), "\n");
    }
  }
}

std::string Topology::Describe() const {
  std::string text = absl::StrCat("# ", size(), " ranks on ", hosts_.size(), " host",
                                  hosts_.size() == 1 ? "" : "s", "\n");
  for (size_t host = 0; host < hosts_.size(); ++host) {
    const RankPlace& first = places_[hosts_[host][0]];
    absl::StrAppend(&text, "host ", host, " ", first.host_name, " (", first.host_id, "): ",
                    hosts_[host].size(), " rank", hosts_[host].size() == 1 ? "" : "s", "\n");
    DescribeNics(host, &text);
    for (int rank : hosts_[host]) {
      const RankPlace& place = places_[rank];
      absl::StrAppend(&text, "  rank ", rank, "  local ", place.local_rank, "  numa ",
                      Node(place.numa_node), "  cpus ", place.cpus.empty() ? "?" : place.cpus);
      if (!host_nics_[host].interfaces.empty()) {
        absl::StrAppend(&text, "  nic ",
                        place.nic.interface.empty()
                            ? std::string("none")
                            : absl::StrCat(place.nic.interface, " ", place.nic.ip),
                        "  rdma ",
                        place.nic.rdma_device.empty()
                            ? std::string("-")
                            : absl::StrCat(place.nic.rdma_device, ":", place.nic.rdma_port));
      }
      absl::StrAppend(&text, "\n");
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
