// The topology exchange across processes: every rank of a communicator sees the same map,
// including each host's NICs and each rank's nearest one chosen by that rank's own settings;
// made-up NICs travel whole through the store (IP, RDMA device and port, NUMA nodes); a record
// that is not a topology record is an error naming the rank.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "collectives/in_memory_bootstrap.h"
#include "collectives/topology.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(TopologyExchange, CommunicatorRanksAgreeOnNics) {
  // Two "hosts" of two ranks; host1's ranks may only use lo (COHORT_SOCKET_IFNAME), a setting
  // host0's ranks do not have.
  testing::RankGroup group;
  group.Start(4, [](int rank, int size, Bootstrap& bootstrap) {
    const int host = rank / 2;
    setenv("COHORT_HOST_ID", absl::StrCat("host", host).c_str(), 1);
    if (host == 1) setenv("COHORT_SOCKET_IFNAME", "=lo", 1);
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "topo"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    const Topology& topology = (*comm)->topology();
    ASSERT_EQ(topology.hosts().size(), 2u);
    for (int peer = 2; peer < 4; ++peer) {
      ASSERT_NE(topology.NearestNic(peer), nullptr) << peer;
      EXPECT_EQ(topology.NearestNic(peer)->name, "lo");
      EXPECT_EQ(topology.place(peer).nic.ip, "127.0.0.1");
      EXPECT_EQ(topology.UcxNetDevice(peer), "lo");
    }
    for (int peer = 0; peer < 2; ++peer) {
      const NicInfo* nic = topology.NearestNic(peer);
      ASSERT_NE(nic, nullptr) << peer;
      EXPECT_TRUE(nic->up);
      EXPECT_EQ(topology.place(peer).nic.ip, nic->ipv4.front());
    }
    ASSERT_TRUE(bootstrap.Set(absl::StrCat("describe/", rank), topology.Describe()).ok());
    ASSERT_TRUE((*comm)->Barrier()->Wait().ok());
  });
  std::vector<testing::RankExit> exits = group.Join(absl::Seconds(60));
  for (size_t rank = 0; rank < exits.size(); ++rank) EXPECT_TRUE(exits[rank].ok()) << rank;
  std::string first = *group.store().Get("describe/0", absl::Seconds(5));
  for (int rank = 1; rank < 4; ++rank) {
    EXPECT_EQ(*group.store().Get(absl::StrCat("describe/", rank), absl::Seconds(5)), first)
        << "rank " << rank << " sees another map";
  }
  EXPECT_THAT(first, HasSubstr("rank 2  local 0"));
  EXPECT_THAT(first, HasSubstr("nic lo 127.0.0.1"));
  // host0 uses this machine's best interface, which is lo only where there is nothing else.
  NicChoice expected = ChooseNic(DiscoverNics(NicSource(), NicOptions()), -1, 0);
  if (expected.interface != "lo") {
    EXPECT_THAT(first.substr(0, first.find("host 1 ")), Not(HasSubstr("nic lo")));
  }
}

TEST(TopologyExchange, EachCommunicatorChoosesByItsOwnOptions) {
  // This machine's best interface, as a communicator without settings picks it.
  NicChoice best = ChooseNic(DiscoverNics(NicSource(), NicOptions()), 0, 0);
  testing::RunRanks(2, [best](int rank, int size, Bootstrap& bootstrap) {
    auto loopback = Communicator::Create(bootstrap, rank, size,
                                         {.name = "only-lo", .socket_interface = "=lo"});
    ASSERT_TRUE(loopback.ok()) << loopback.status();
    auto plain = Communicator::Create(bootstrap, rank, size, {.name = "plain"});
    ASSERT_TRUE(plain.ok()) << plain.status();
    for (int peer = 0; peer < size; ++peer) {
      EXPECT_EQ((*loopback)->topology().place(peer).nic.interface, "lo");
      EXPECT_EQ((*plain)->topology().place(peer).nic.interface, best.interface);
    }
    // A malformed list is an error at creation that names the setting.
    auto bad = Communicator::Create(bootstrap, rank, size,
                                    {.name = "bad", .rdma_devices = "mlx5_0:zero"});
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("COHORT_IB_HCA=\"mlx5_0:zero\""));
  });
}

// A host with a RoCE NIC on each of two NUMA nodes, and one with InfiniBand but no IPoIB.
LocalFacts Facts(int rank) {
  LocalFacts facts;
  facts.host_id = rank < 2 ? "roce" : "ib";
  facts.host_name = facts.host_id + "-host";
  facts.numa_node = rank % 2;
  facts.cpus = absl::StrCat(rank % 2);
  auto port = [](bool active) {
    RdmaPort entry;
    entry.active = active;
    entry.state = active ? "PORT_ACTIVE" : "PORT_DOWN";
    entry.link_layer = "Ethernet";
    entry.active_speed = 64;
    entry.active_width = 2;
    entry.gbps = 200;
    return entry;
  };
  facts.nics.verbs = true;
  if (rank < 2) {
    for (int node = 0; node < 2; ++node) {
      NicInfo nic;
      nic.name = absl::StrCat("ens", node);
      nic.ipv4 = {absl::StrCat("10.0.", node, ".1")};
      nic.state = "up";
      nic.up = true;
      nic.speed_mbps = 200000;
      nic.numa_node = node;
      nic.rdma_device = absl::StrCat("mlx5_", node);
      nic.rdma_port = 1;
      facts.nics.interfaces.push_back(nic);
      RdmaDevice device;
      device.name = nic.rdma_device;
      device.numa_node = node;
      device.ports = {port(true)};
      facts.nics.rdma.push_back(device);
    }
  } else {
    NicInfo eth;
    eth.name = "eth0";
    eth.ipv4 = {"192.168.0.7"};
    eth.state = "up";
    eth.up = true;
    eth.speed_mbps = 1000;
    eth.numa_node = 0;
    facts.nics.interfaces.push_back(eth);
    NicInfo veth;  // a container's leftover: virtual, down, no address
    veth.name = "veth9";
    veth.state = "down";
    veth.virtual_device = true;
    facts.nics.interfaces.push_back(veth);
    RdmaDevice device;
    device.name = "mlx5_0";
    device.numa_node = 1;
    device.ports = {port(false), port(true)};
    device.ports[1].port = 2;
    device.ports[0].link_layer = device.ports[1].link_layer = "InfiniBand";
    facts.nics.rdma.push_back(device);
  }
  return facts;
}

TEST(TopologyExchange, MadeUpNicsTravelWhole) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    auto topology =
        Topology::Exchange(bootstrap, "fake", rank, size, absl::Seconds(30), Facts(rank));
    ASSERT_TRUE(topology.ok()) << topology.status();
    ASSERT_EQ(topology->hosts().size(), 2u);
    // Each rank of the RoCE host has the NIC on its own node.
    EXPECT_EQ(topology->NearestNic(0)->name, "ens0");
    EXPECT_EQ(topology->NearestNic(1)->name, "ens1");
    EXPECT_EQ(topology->place(1).nic.ip, "10.0.1.1");
    EXPECT_EQ(topology->UcxNetDevice(1), "mlx5_1:1");
    EXPECT_EQ(topology->NearestRdma(1)->numa_node, 1);
    // The InfiniBand host: sockets over eth0, verbs on the active port.
    for (int peer = 2; peer < 4; ++peer) {
      EXPECT_EQ(topology->NearestNic(peer)->name, "eth0");
      EXPECT_EQ(topology->place(peer).nic.rdma_device, "mlx5_0");
      EXPECT_EQ(topology->place(peer).nic.rdma_port, 2);
      EXPECT_EQ(topology->UcxNetDevice(peer), "mlx5_0:2");
    }
    EXPECT_EQ(topology->place(3).host_name, "ib-host");
    EXPECT_EQ(topology->place(3).cpus, "1");
    EXPECT_EQ(topology->nics(1).rdma[0].ports.size(), 2u);
    EXPECT_EQ(topology->nics(1).Interface("veth9"), nullptr);  // left out of the record
    EXPECT_EQ(topology->nics(1).interfaces.size(), 1u);
    std::string text = topology->Describe();
    EXPECT_THAT(text, HasSubstr("rdma mlx5_0:1   PORT_DOWN   InfiniBand 200 Gb/s (4X HDR)"));
    EXPECT_THAT(text, HasSubstr("rank 3  local 1  numa 1  cpus 1  nic eth0 192.168.0.7  "
                                "rdma mlx5_0:2"));
  });
}

TEST(TopologyExchange, ForeignRecordIsAnErrorNamingTheRank) {
  auto state = std::make_shared<InMemoryBootstrap::State>();
  InMemoryBootstrap bootstrap(state);
  // What an older cohort wrote: "host_id numa cpus host_name".
  ASSERT_TRUE(bootstrap.Set("old/topo/1", "h/boot 0 0-3 h").ok());
  auto topology = Topology::Exchange(bootstrap, "old", 0, 2, absl::Seconds(5), Facts(0));
  ASSERT_FALSE(topology.ok());
  EXPECT_EQ(topology.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(topology.status().message()),
              AllOf(HasSubstr("rank 1"), HasSubstr("old/topo/1"), HasSubstr("same store")));
}

}  // namespace
}  // namespace cohort
