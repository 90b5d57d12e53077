// Rendezvous data: node order (labels keep groups adjacent, then host names; static rounds by
// node rank), contiguous rank blocks, role ranks, and the store records' round trip.
#include "elastic/rendezvous.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::elastic {
namespace {

NodeInfo Node(std::string id, std::string host, int workers = 2,
              std::map<std::string, std::string> labels = {}, int node_rank = -1) {
  NodeInfo node;
  node.node_id = std::move(id);
  node.host = std::move(host);
  node.local_world_size = workers;
  node.labels = std::move(labels);
  node.node_rank = node_rank;
  return node;
}

std::vector<std::string> Hosts(const std::vector<NodeInfo>& nodes) {
  std::vector<std::string> hosts;
  for (const NodeInfo& node : nodes) hosts.push_back(node.host);
  return hosts;
}

TEST(Rendezvous, OrdersByHostName) {
  auto ordered = OrderNodes({Node("1", "c"), Node("2", "a"), Node("3", "b")}, false);
  EXPECT_THAT(Hosts(ordered), ::testing::ElementsAre("a", "b", "c"));
}

TEST(Rendezvous, LabelledGroupsStayAdjacent) {
  auto ordered = OrderNodes({Node("1", "a", 2, {{"rack", "r2"}}), Node("2", "b", 2, {{"rack", "r1"}}),
                             Node("3", "c", 2, {{"rack", "r2"}}), Node("4", "d", 2, {{"rack", "r1"}})},
                            false);
  EXPECT_THAT(Hosts(ordered), ::testing::ElementsAre("b", "d", "a", "c"));
  // rack before switch (label keys in name order).
  ordered = OrderNodes({Node("1", "a", 2, {{"rack", "r1"}, {"switch", "s2"}}),
                        Node("2", "b", 2, {{"rack", "r1"}, {"switch", "s1"}}),
                        Node("3", "c", 2, {{"rack", "r0"}, {"switch", "s9"}})},
                       false);
  EXPECT_THAT(Hosts(ordered), ::testing::ElementsAre("c", "b", "a"));
}

TEST(Rendezvous, StaticOrdersByNodeRank) {
  auto ordered = OrderNodes({Node("1", "a", 2, {}, 2), Node("2", "b", 2, {}, 0), Node("3", "c", 2, {}, 1)},
                            true);
  EXPECT_THAT(Hosts(ordered), ::testing::ElementsAre("b", "c", "a"));
}

TEST(Rendezvous, ContiguousRankBlocksAndRoles) {
  World world;
  world.nodes = {Node("1", "a", 2), Node("2", "b", 3), Node("3", "c", 1)};
  world.nodes[1].role = "trainer";
  world.nodes[0].role = world.nodes[2].role = "default";
  EXPECT_EQ(world.world_size(), 6);
  EXPECT_EQ(world.RankOffset(0), 0);
  EXPECT_EQ(world.RankOffset(1), 2);
  EXPECT_EQ(world.RankOffset(2), 5);
  EXPECT_EQ(world.GroupRank("3"), 2);
  EXPECT_EQ(world.GroupRank("9"), -1);
  EXPECT_EQ(world.RoleRankOffset(2), 2);  // after node a's two "default" workers
  EXPECT_EQ(world.RoleWorldSize("default"), 3);
  EXPECT_EQ(world.RoleWorldSize("trainer"), 3);
}

TEST(Rendezvous, RecordsRoundTrip) {
  World world;
  world.generation = 4;
  world.restart_count = 2;
  world.nodes = {Node("x", "h1", 3, {{"rack", "r"}}, 1)};
  world.master_addr = "10.0.0.1";
  world.master_port = 1234;
  world.worker_store = "10.0.0.1:999";
  auto decoded = DecodeWorld(EncodeWorld(world));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->generation, 4);
  EXPECT_EQ(decoded->restart_count, 2);
  EXPECT_EQ(decoded->nodes[0].labels.at("rack"), "r");
  EXPECT_EQ(decoded->nodes[0].node_rank, 1);
  EXPECT_EQ(decoded->worker_store, "10.0.0.1:999");
  GenerationEnd end{GenerationEnd::Kind::kFailed, "why", true};
  auto end_decoded = DecodeEnd(EncodeEnd(end));
  ASSERT_TRUE(end_decoded.ok());
  EXPECT_EQ(end_decoded->kind, GenerationEnd::Kind::kFailed);
  EXPECT_EQ(end_decoded->reason, "why");
  EXPECT_FALSE(DecodeWorld("{not json").ok());
}

}  // namespace
}  // namespace cohort::elastic
