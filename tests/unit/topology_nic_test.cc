// NICs in the topology, on made-up hosts: a directory laid out like sysfs (read by the real
// sysfs code), made-up addresses, libibverbs devices and NUMA nodes, and an hwloc XML topology
// with two NUMA nodes. Checks what is read, which NIC each rank gets, and what `cohort-bench
// topo` prints.
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "collectives/nic.h"
#include "collectives/topology.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// A sysfs tree in a temporary directory, removed at the end of the test.
class FakeSysfs {
 public:
  FakeSysfs() {
    std::string pattern = ::testing::TempDir() + "/cohort-sysfs-XXXXXX";
    root_ = mkdtemp(pattern.data());
  }
  ~FakeSysfs() {
    std::error_code error;
    fs::remove_all(root_, error);
  }
  const std::string& root() const { return root_; }

  void NumaNodes(int count) {
    for (int node = 0; node < count; ++node) {
      fs::create_directories(root_ + "/devices/system/node/node" + std::to_string(node));
    }
  }

  struct Interface {
    std::string name;
    std::string state = "up";
    bool admin_up = true;
    std::string speed = "25000";  // Mb/s; "" to make it unreadable, as for a link that is down
    int mtu = 1500;
    std::string pci;              // empty: virtual
    std::string rdma;             // RDMA device on the same PCI function
    int dev_port = 0;
    bool loopback = false;
  };

  void Add(const Interface& nic) {
    fs::path dir = fs::path(root_) / "class/net" / nic.name;
    fs::create_directories(dir);
    Write(dir / "operstate", nic.state);
    int flags = (nic.admin_up ? 0x1 : 0) | (nic.loopback ? 0x8 : 0) | 0x1000;
    char hex[16];
    snprintf(hex, sizeof(hex), "0x%x", flags);
    Write(dir / "flags", hex);
    Write(dir / "type", nic.loopback ? "772" : "1");
    Write(dir / "mtu", std::to_string(nic.mtu));
    Write(dir / "carrier", nic.state == "up" || nic.loopback ? "1" : "0");
    Write(dir / "dev_port", std::to_string(nic.dev_port));
    if (!nic.speed.empty()) Write(dir / "speed", nic.speed);
    if (!nic.pci.empty()) {
      fs::path device = fs::path(root_) / "devices/pci0000:00" / nic.pci;
      fs::create_directories(device);
      if (!nic.rdma.empty()) fs::create_directories(device / "infiniband" / nic.rdma);
      fs::create_directory_symlink(device, dir / "device");
    }
  }

 private:
  static void Write(const fs::path& path, const std::string& text) {
    std::ofstream(path) << text << "\n";
  }
  std::string root_;
};

// This machine for sysfs, the rest made up.
class FakeSource : public NicSource {
 public:
  explicit FakeSource(const std::string& root) : NicSource(root) {}
  std::map<std::string, std::vector<std::string>> Addresses() const override { return addresses; }
  std::vector<RdmaDevice> RdmaDevices(bool* verbs_found) const override {
    *verbs_found = verbs;
    return rdma;
  }
  std::map<std::string, int> DeviceNumaNodes() const override {
    return numa.empty() ? NicSource::DeviceNumaNodes() : numa;
  }

  std::map<std::string, std::vector<std::string>> addresses;
  bool verbs = true;
  std::vector<RdmaDevice> rdma;
  std::map<std::string, int> numa;  // empty: the sysfs answer
};

RdmaDevice Hca(const std::string& name, bool active = true, std::string link = "Ethernet") {
  RdmaDevice device;
  device.name = name;
  RdmaPort port;
  port.port = 1;
  port.active = active;
  port.state = active ? "PORT_ACTIVE" : "PORT_DOWN";
  port.link_layer = std::move(link);
  port.active_speed = 64;  // HDR
  port.active_width = 2;   // 4X
  port.gbps = InfinibandGbps(port.active_speed, port.active_width);
  device.ports.push_back(port);
  return device;
}

NicOptions Options(const char* interfaces = "", const char* rdma = "") {
  NicOptions options;
  options.interfaces = *NameFilter::Parse(interfaces, false, "COHORT_SOCKET_IFNAME");
  options.rdma = *NameFilter::Parse(rdma, true, "COHORT_IB_HCA");
  return options;
}

TEST(Nic, ReadsSysfs) {
  FakeSysfs sysfs;
  sysfs.NumaNodes(1);
  sysfs.Add({.name = "eth0", .speed = "100000", .mtu = 9000, .pci = "0000:3b:00.0",
             .rdma = "mlx5_0", .dev_port = 0});
  sysfs.Add({.name = "eth1", .state = "down", .speed = "", .pci = "0000:3b:00.1"});
  sysfs.Add({.name = "lo", .state = "unknown", .speed = "", .mtu = 65536, .loopback = true});
  sysfs.Add({.name = "veth7", .speed = "10000"});
  sysfs.Add({.name = "dummy0", .state = "unknown", .admin_up = false});
  FakeSource source(sysfs.root());
  source.addresses = {{"eth0", {"10.0.0.5", "10.0.1.5"}}, {"lo", {"127.0.0.1"}}};
  HostNics nics = DiscoverNics(source, Options());
  ASSERT_EQ(nics.interfaces.size(), 5u);
  const NicInfo& eth0 = *nics.Interface("eth0");
  EXPECT_TRUE(eth0.up);
  EXPECT_EQ(eth0.speed_mbps, 100000);
  EXPECT_EQ(eth0.mtu, 9000);
  EXPECT_EQ(eth0.pci, "0000:3b:00.0");
  EXPECT_FALSE(eth0.virtual_device);
  EXPECT_EQ(eth0.rdma_device, "mlx5_0");
  EXPECT_EQ(eth0.rdma_port, 1);
  EXPECT_EQ(eth0.numa_node, 0);  // one NUMA node: every PCI device is on it
  EXPECT_THAT(eth0.ipv4, ::testing::ElementsAre("10.0.0.5", "10.0.1.5"));
  const NicInfo& eth1 = *nics.Interface("eth1");
  EXPECT_FALSE(eth1.up);
  EXPECT_EQ(eth1.state, "down");
  EXPECT_EQ(eth1.speed_mbps, -1);
  const NicInfo& lo = *nics.Interface("lo");
  EXPECT_TRUE(lo.up);  // operstate "unknown" with a carrier
  EXPECT_TRUE(lo.loopback);
  EXPECT_TRUE(lo.virtual_device);
  EXPECT_EQ(lo.numa_node, -1);
  EXPECT_TRUE(nics.Interface("veth7")->virtual_device);
  EXPECT_EQ(nics.Interface("veth7")->numa_node, -1);
  EXPECT_FALSE(nics.Interface("dummy0")->up);  // administratively down
}

TEST(Nic, NearestOnTwoNumaNodes) {
  // Node 0: ens1 25G with RoCE, ens2 100G without RDMA. Node 1: ens3 and ens4, 100G RoCE each.
  FakeSysfs sysfs;
  sysfs.NumaNodes(2);
  sysfs.Add({.name = "ens1", .speed = "25000", .pci = "0000:3b:00.0", .rdma = "mlx5_0"});
  sysfs.Add({.name = "ens2", .speed = "100000", .pci = "0000:3c:00.0"});
  sysfs.Add({.name = "ens3", .speed = "100000", .pci = "0000:af:00.0", .rdma = "mlx5_1"});
  sysfs.Add({.name = "ens4", .speed = "100000", .pci = "0000:b0:00.0", .rdma = "mlx5_2"});
  sysfs.Add({.name = "lo", .state = "unknown", .speed = "", .loopback = true});
  FakeSource source(sysfs.root());
  source.addresses = {{"ens1", {"10.0.1.1"}}, {"ens2", {"10.0.2.1"}}, {"ens3", {"10.0.3.1"}},
                      {"ens4", {"10.0.4.1"}}, {"lo", {"127.0.0.1"}}};
  source.rdma = {Hca("mlx5_0"), Hca("mlx5_1"), Hca("mlx5_2")};
  // hwloc would find these; several NUMA nodes in a made-up sysfs give no answer of their own.
  EXPECT_TRUE(NicSource(sysfs.root()).DeviceNumaNodes().empty());
  source.numa = {{"ens1", 0}, {"ens2", 0}, {"ens3", 1}, {"ens4", 1},
                 {"mlx5_0", 0}, {"mlx5_1", 1}, {"mlx5_2", 1}};
  HostNics nics = DiscoverNics(source, Options());
  EXPECT_EQ(nics.Interface("ens3")->numa_node, 1);
  EXPECT_EQ(nics.Rdma("mlx5_2")->numa_node, 1);

  // Node 0: RDMA-capable first, though slower.
  NicChoice node0 = ChooseNic(nics, 0, 0);
  EXPECT_EQ(node0.interface, "ens1");
  EXPECT_EQ(node0.ip, "10.0.1.1");
  EXPECT_EQ(node0.rdma_device, "mlx5_0");
  EXPECT_EQ(node0.rdma_port, 1);
  EXPECT_EQ(ChooseNic(nics, 0, 1).interface, "ens1");  // the only best one on its node
  // Node 1: two equal NICs, ranks take turns.
  EXPECT_EQ(ChooseNic(nics, 1, 0).interface, "ens3");
  EXPECT_EQ(ChooseNic(nics, 1, 0).rdma_device, "mlx5_1");
  EXPECT_EQ(ChooseNic(nics, 1, 1).interface, "ens4");
  EXPECT_EQ(ChooseNic(nics, 1, 1).rdma_device, "mlx5_2");
  EXPECT_EQ(ChooseNic(nics, 1, 2).interface, "ens3");
  // No node of its own: the fastest RDMA-capable anywhere.
  EXPECT_EQ(ChooseNic(nics, -1, 0).interface, "ens3");

  // Through the topology: 2 ranks on each node of one host, and what topo prints.
  std::vector<RankPlace> places(4);
  for (int rank = 0; rank < 4; ++rank) {
    places[rank].host_id = "h";
    places[rank].host_name = "h";
    places[rank].numa_node = rank < 2 ? 0 : 1;
  }
  Topology topology = Topology::FromPlaces(places, std::vector<HostNics>(4, nics));
  EXPECT_EQ(topology.NearestNic(0)->name, "ens1");
  EXPECT_EQ(topology.NearestNic(1)->name, "ens1");
  EXPECT_EQ(topology.NearestNic(2)->name, "ens3");
  EXPECT_EQ(topology.NearestNic(3)->name, "ens4");
  EXPECT_EQ(topology.NearestRdma(3)->name, "mlx5_2");
  EXPECT_EQ(topology.UcxNetDevice(3), "mlx5_2:1");
  EXPECT_EQ(topology.nics(0).interfaces.size(), 5u);
  std::string text = topology.Describe();
  EXPECT_THAT(text, HasSubstr("  rank 3  local 3  numa 1  cpus ?  nic ens4 10.0.4.1  rdma mlx5_2:1"));
  EXPECT_THAT(text, HasSubstr("nic  ens2       up   10.0.2.1        mtu 1500  100 Gb/s   numa 0  "
                              "pci 0000:3c:00.0"));
  EXPECT_THAT(text, HasSubstr("rdma mlx5_1:1   PORT_ACTIVE Ethernet   200 Gb/s (4X HDR)      "
                              "numa 1  netdev ens3"));
  EXPECT_THAT(text, Not(HasSubstr("nic  lo")));  // nobody uses it

  // COHORT_IB_HCA without mlx5_0: node 0 takes its faster plain NIC, RDMA from the other node.
  HostNics no_mlx5_0 = DiscoverNics(source, Options("", "^mlx5_0"));
  NicChoice choice = ChooseNic(no_mlx5_0, 0, 0);
  EXPECT_EQ(choice.interface, "ens2");
  EXPECT_EQ(choice.rdma_device, "mlx5_1");
  // COHORT_SOCKET_IFNAME picks among what is left.
  EXPECT_EQ(ChooseNic(DiscoverNics(source, Options("=ens2,ens4")), 1, 0).interface, "ens4");
  EXPECT_EQ(ChooseNic(DiscoverNics(source, Options("^ens3,ens4")), 1, 0).interface, "ens1");
}

TEST(Nic, NoRdmaAndAnInterfaceDown) {
  FakeSysfs sysfs;
  sysfs.NumaNodes(1);
  sysfs.Add({.name = "eth0", .speed = "10000", .pci = "0000:01:00.0"});
  sysfs.Add({.name = "eth1", .state = "down", .speed = "", .pci = "0000:02:00.0"});
  sysfs.Add({.name = "docker0", .speed = "", .mtu = 1500});
  sysfs.Add({.name = "lo", .state = "unknown", .speed = "", .loopback = true});
  FakeSource source(sysfs.root());
  // eth1 keeps its address while its cable is out; docker0 would be the fastest-looking.
  source.addresses = {{"eth0", {"10.0.0.1"}}, {"eth1", {"10.1.0.1"}},
                      {"docker0", {"172.17.0.1"}}, {"lo", {"127.0.0.1"}}};
  HostNics nics = DiscoverNics(source, Options());
  EXPECT_TRUE(nics.verbs);
  EXPECT_TRUE(nics.rdma.empty());
  EXPECT_FALSE(nics.Interface("docker0")->allowed);
  NicChoice choice = ChooseNic(nics, 0, 0);
  EXPECT_EQ(choice.interface, "eth0");
  EXPECT_TRUE(choice.rdma_device.empty());
  // eth1 is the only one asked for, and it is down: no NIC, not a silent other one.
  HostNics only_eth1 = DiscoverNics(source, Options("eth1"));
  EXPECT_TRUE(ChooseNic(only_eth1, 0, 0).interface.empty());
  // Everything else down: loopback rather than nothing (one host needs no network).
  sysfs.Add({.name = "eth9"});  // up, but no address
  source.addresses.erase("eth0");
  HostNics lonely = DiscoverNics(source, Options());
  EXPECT_EQ(ChooseNic(lonely, 0, 0).interface, "lo");
  EXPECT_EQ(ChooseNic(lonely, 0, 0).ip, "127.0.0.1");

  std::vector<RankPlace> places(1);
  places[0].host_id = places[0].host_name = "h";
  std::string text = Topology::FromPlaces(places, {nics}).Describe();
  EXPECT_THAT(text, HasSubstr("rdma none (libibverbs finds no device)"));
  EXPECT_THAT(text, HasSubstr("nic  eth1       down 10.1.0.1"));
  EXPECT_THAT(text, HasSubstr("docker0"));
  EXPECT_THAT(text, HasSubstr("not selected (see COHORT_SOCKET_IFNAME)"));
  EXPECT_THAT(text, HasSubstr("rank 0  local 0  numa ?  cpus ?  nic eth0 10.0.0.1  rdma -"));
  source.verbs = false;
  text = Topology::FromPlaces(places, {DiscoverNics(source, Options())}).Describe();
  EXPECT_THAT(text, HasSubstr("rdma none (libcohort was built without libibverbs)"));
}

TEST(Nic, RdmaWithoutNetdevAndInactivePorts) {
  FakeSysfs sysfs;
  sysfs.NumaNodes(1);
  sysfs.Add({.name = "eth0", .speed = "1000", .pci = "0000:01:00.0"});
  FakeSource source(sysfs.root());
  source.addresses = {{"eth0", {"10.0.0.1"}}};
  // InfiniBand without IPoIB: no interface of its own. mlx5_0's port is down.
  source.rdma = {Hca("mlx5_0", false, "InfiniBand"), Hca("mlx5_1", true, "InfiniBand")};
  source.numa = {{"eth0", 0}, {"mlx5_0", 0}, {"mlx5_1", 0}};
  NicChoice choice = ChooseNic(DiscoverNics(source, Options()), 0, 0);
  EXPECT_EQ(choice.interface, "eth0");
  EXPECT_EQ(choice.rdma_device, "mlx5_1");
  // Every port down or left out: none.
  EXPECT_TRUE(ChooseNic(DiscoverNics(source, Options("", "mlx5_0")), 0, 0).rdma_device.empty());
}

TEST(Nic, JsonRoundTrip) {
  HostNics nics;
  nics.verbs = true;
  NicInfo nic;
  nic.name = "ib0";
  nic.ipv4 = {"10.9.0.1"};
  nic.state = "up";
  nic.up = true;
  nic.speed_mbps = 200000;
  nic.mtu = 4092;
  nic.numa_node = 1;
  nic.pci = "0000:af:00.0";
  nic.rdma_device = "mlx5_3";
  nic.rdma_port = 1;
  nic.allowed = false;
  nics.interfaces.push_back(nic);
  nics.rdma.push_back(Hca("mlx5_3", true, "InfiniBand"));
  nics.rdma.back().numa_node = 1;
  nics.rdma.back().ports[0].allowed = false;
  RdmaDevice broken;
  broken.name = "mlx4_0";
  broken.error = "cannot open the device: Permission denied";
  nics.rdma.push_back(broken);
  auto back = NicsFromJson(NicsToJson(nics));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(NicsToJson(*back), NicsToJson(nics));
  EXPECT_EQ(back->interfaces[0].rdma_device, "mlx5_3");
  EXPECT_FALSE(back->interfaces[0].allowed);
  EXPECT_EQ(back->rdma[0].ports[0].gbps, 200);
  EXPECT_EQ(back->rdma[1].error, nics.rdma[1].error);
  auto bad = NicsFromJson(nlohmann::json{{"nics", 3}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
}

TEST(Nic, InfinibandRates) {
  EXPECT_EQ(InfinibandGbps(64, 2), 200);   // 4X HDR
  EXPECT_EQ(InfinibandGbps(128, 2), 400);  // 4X NDR
  EXPECT_EQ(InfinibandGbps(32, 1), 25.78125);
  EXPECT_EQ(InfinibandGbps(3, 2), 0);
  EXPECT_STREQ(InfinibandWidthName(2), "4X");
  EXPECT_STREQ(InfinibandSpeedName(32), "EDR");
  EXPECT_STREQ(InfinibandSpeedName(5), "?");
}

// Two packages, each with its NUMA node and a PCI bridge: eth0 on node 0, ib0 and mlx5_0 on
// node 1, and eth1 on a bridge of the whole machine (no single node).
constexpr char kTwoNodeXml[] = R"(<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE topology SYSTEM "hwloc2.dtd">
<topology version="2.0">
 <object type="Machine" os_index="0" cpuset="0x00000003" complete_cpuset="0x00000003" allowed_cpuset="0x00000003" nodeset="0x00000003" complete_nodeset="0x00000003" allowed_nodeset="0x00000003" gp_index="1">
  <object type="Package" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="2">
   <object type="NUMANode" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="3" local_memory="1073741824"/>
   <object type="Core" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="4">
    <object type="PU" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="5"/>
   </object>
   <object type="Bridge" gp_index="6" bridge_type="0-1" depth="0" bridge_pci="0000:[3b-3b]">
    <object type="PCIDev" gp_index="7" pci_busid="0000:3b:00.0" pci_type="0200 [8086:1572] [8086:0000] 01" pci_link_speed="0.000000">
     <object type="OSDev" gp_index="8" name="eth0" osdev_type="2"/>
    </object>
   </object>
  </object>
  <object type="Package" os_index="1" cpuset="0x00000002" complete_cpuset="0x00000002" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="9">
   <object type="NUMANode" os_index="1" cpuset="0x00000002" complete_cpuset="0x00000002" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="10" local_memory="1073741824"/>
   <object type="Core" os_index="1" cpuset="0x00000002" complete_cpuset="0x00000002" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="11">
    <object type="PU" os_index="1" cpuset="0x00000002" complete_cpuset="0x00000002" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="12"/>
   </object>
   <object type="Bridge" gp_index="13" bridge_type="0-1" depth="0" bridge_pci="0000:[af-af]">
    <object type="PCIDev" gp_index="14" pci_busid="0000:af:00.0" pci_type="0207 [15b3:101b] [15b3:0007] 00" pci_link_speed="0.000000">
     <object type="OSDev" gp_index="15" name="ib0" osdev_type="2"/>
     <object type="OSDev" gp_index="16" name="mlx5_0" osdev_type="3"/>
    </object>
   </object>
  </object>
  <object type="Bridge" gp_index="17" bridge_type="0-1" depth="0" bridge_pci="0000:[40-40]">
   <object type="PCIDev" gp_index="18" pci_busid="0000:40:00.0" pci_type="0200 [8086:1572] [8086:0000] 01" pci_link_speed="0.000000">
    <object type="OSDev" gp_index="19" name="eth1" osdev_type="2"/>
   </object>
  </object>
 </object>
</topology>
)";

TEST(Nic, HwlocLocalityFromOsDevices) {
  std::map<std::string, int> nodes = HwlocDeviceNumaNodes(kTwoNodeXml);
  EXPECT_EQ(nodes, (std::map<std::string, int>{{"eth0", 0}, {"eth1", -1}, {"ib0", 1},
                                               {"mlx5_0", 1}}));
  // This machine: whatever hwloc finds loads without error, and every node it names exists.
  for (const auto& [name, node] : HwlocDeviceNumaNodes()) EXPECT_GE(node, -1) << name;
}

TEST(Nic, ThisMachine) {
  // Whatever this host has: loopback is found, and the choice is one of the interfaces.
  HostNics nics = DiscoverNics(NicSource(), NicOptions());
  const NicInfo* lo = nics.Interface("lo");
  ASSERT_NE(lo, nullptr);
  EXPECT_TRUE(lo->loopback);
  NicChoice choice = ChooseNic(nics, -1, 0);
  ASSERT_FALSE(choice.interface.empty());
  const NicInfo* chosen = nics.Interface(choice.interface);
  ASSERT_NE(chosen, nullptr);
  EXPECT_TRUE(chosen->up);
  EXPECT_EQ(choice.ip, chosen->ipv4.front());
}

}  // namespace
}  // namespace cohort
