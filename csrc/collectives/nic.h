// What a host's network looks like to libcohort: its interfaces (sysfs and getifaddrs), its
// RDMA devices and their ports (libibverbs), the NUMA node each is attached to (hwloc's OS
// devices), and which of them a rank should use (ChooseNic). The topology (topology.h)
// exchanges every rank's view at communicator creation; `cohort-bench topo` and cohort-bench
// validate's inventory print it. Where the facts come from is a class (NicSource) that tests
// replace, so that hosts this machine is not (two NUMA nodes, InfiniBand) can be described.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/name_filter.h"
#include "nlohmann/json.hpp"

namespace cohort {

struct RdmaPort {
  int port = 1;              // 1-based, as libibverbs counts
  std::string state;         // ibv_port_state_str: "PORT_ACTIVE", "PORT_DOWN", ...
  bool active = false;       // state is PORT_ACTIVE
  std::string link_layer;    // "InfiniBand", or "Ethernet" (RoCE)
  int active_speed = 0;      // ibv_port_attr's codes (1 SDR ... 128 NDR)
  int active_width = 0;      // (1 1X, 2 4X, 4 8X, 8 12X, 16 2X)
  double gbps = 0;           // speed x width; 0 when a code is unknown
  bool allowed = true;       // selected by COHORT_IB_HCA
};

struct RdmaDevice {
  std::string name;          // "mlx5_0"
  int numa_node = -1;        // -1: unknown
  std::string error;         // set when the device could not be opened or queried
  std::vector<RdmaPort> ports;

  const RdmaPort* Port(int port) const;
};

struct NicInfo {
  std::string name;                // "eth0"
  std::vector<std::string> ipv4;   // dotted quads, in getifaddrs order
  std::string state;               // sysfs operstate: "up", "down", "unknown", ...
  bool up = false;                 // administratively up and with a carrier
  int64_t speed_mbps = -1;         // -1: unknown (virtual devices, links that are down)
  int mtu = 0;
  bool loopback = false;
  bool virtual_device = false;     // no device behind it (veth, bridge, tunnel, lo)
  int numa_node = -1;              // -1: unknown or not below one NUMA node
  std::string pci;                 // the PCI function ("0000:3b:00.0"), empty when none
  std::string rdma_device;         // RDMA device on the same function (RoCE, IPoIB), or empty
  int rdma_port = 0;               // its port that this interface is (dev_port + 1)
  bool allowed = true;             // selected by COHORT_SOCKET_IFNAME (default: not docker*)
};

// One host's network, as one rank saw it (the `allowed` flags follow that rank's settings).
struct HostNics {
  std::vector<NicInfo> interfaces;  // by name
  bool verbs = false;               // libcohort was built with libibverbs
  std::vector<RdmaDevice> rdma;     // by name

  const NicInfo* Interface(const std::string& name) const;
  const RdmaDevice* Rdma(const std::string& name) const;
};

// Which interfaces and RDMA ports a rank may use.
struct NicOptions {
  NameFilter interfaces;  // COHORT_SOCKET_IFNAME
  NameFilter rdma;        // COHORT_IB_HCA
  // From the two settings' texts (NameFilter syntax); errors name the variable.
  static absl::StatusOr<NicOptions> Parse(const std::string& interfaces, const std::string& rdma);
  // From COHORT_SOCKET_IFNAME and COHORT_IB_HCA (tools; a communicator takes CommOptions).
  static absl::StatusOr<NicOptions> FromEnvironment();
};

// Where the facts come from: this machine by default; tests override what they fake (a
// directory laid out like sysfs, made-up addresses, verbs devices and NUMA nodes).
class NicSource {
 public:
  explicit NicSource(std::string sysfs_root = "/sys");
  virtual ~NicSource() = default;

  // Interfaces under <sysfs>/class/net with their state, speed, MTU, PCI function and RDMA
  // device, and their addresses (Addresses()). NUMA nodes are filled in by DiscoverNics.
  virtual std::vector<NicInfo> Interfaces() const;
  // IPv4 addresses by interface name (getifaddrs; aliases such as eth0:1 count as eth0).
  virtual std::map<std::string, std::vector<std::string>> Addresses() const;
  // RDMA devices and their ports from libibverbs; *verbs says whether libcohort has it.
  virtual std::vector<RdmaDevice> RdmaDevices(bool* verbs) const;
  // NUMA node of each network interface and RDMA device, by name. One NUMA node (most
  // machines): every device that has a PCI function is on it, read from sysfs. Several: hwloc's
  // OS devices (HwlocDeviceNumaNodes), loaded once per process.
  virtual std::map<std::string, int> DeviceNumaNodes() const;

  const std::string& sysfs_root() const { return sysfs_root_; }

 private:
  std::string sysfs_root_;
};

// Everything `source` finds, with NUMA nodes and the `allowed` flags of `options`.
HostNics DiscoverNics(const NicSource& source, const NicOptions& options);

// NUMA node of every network and OpenFabrics (RDMA) OS device hwloc finds, by OS name: the node
// whose memory the device's PCI bridge hangs off, -1 where that is not exactly one node. `xml`:
// an hwloc XML topology to read instead of this machine (tests).
std::map<std::string, int> HwlocDeviceNumaNodes(const std::string& xml = "");

// What one rank uses: its nearest interface (and the IP on it) and its nearest RDMA port.
struct NicChoice {
  std::string interface;    // empty: no interface is up, selected and has an IPv4 address
  std::string ip;           // the interface's first IPv4 address
  std::string rdma_device;  // empty: no active, selected RDMA port
  int rdma_port = 0;
};

// The NIC for a rank bound to `numa_node` (-1: unknown or spanning nodes). Interfaces that are
// up, selected and have an IPv4 address compete, best first: not loopback (lo only when nothing
// else is up), on the rank's NUMA node, RDMA-capable (an active selected port on the same PCI
// function), fastest; interfaces equal on all of these take turns by `spread` (the rank's
// index among the ranks of its host on its NUMA node), so that ranks share NICs evenly. The RDMA
// port is the chosen interface's when it has one, else the best active selected port by the
// same rules (NUMA node, then Gb/s, then taking turns).
NicChoice ChooseNic(const HostNics& nics, int numa_node, int spread);

// Gb/s of an InfiniBand port from ibv_port_attr's active_speed and active_width codes (0 when a
// code is unknown), and the codes in words ("4X", "HDR"; "?" when unknown).
double InfinibandGbps(int active_speed, int active_width);
const char* InfinibandWidthName(int active_width);
const char* InfinibandSpeedName(int active_speed);

// JSON, as the topology exchange and cohort-bench validate's inventory carry it. `nics` and
// `rdma` keep the inventory's schema (docs/bench.md): nics [{name, state, speed_mbps, mtu,
// virtual, ipv4, up, loopback, numa_node, pci, rdma_device, rdma_port, allowed}], rdma {library,
// devices [{name, numa_node, error, ports [{port, state, active, link_layer, speed_gbps,
// active_speed, active_width, allowed}]}]}.
nlohmann::json NicsToJson(const HostNics& nics);
absl::StatusOr<HostNics> NicsFromJson(const nlohmann::json& json);

}  // namespace cohort
