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
  EXPECT_EQ(end_decoded->readers, 0);
  end.readers = 3;
  end_decoded = DecodeEnd(EncodeEnd(end));
  ASSERT_TRUE(end_decoded.ok());
  EXPECT_EQ(end_decoded->readers, 3);
  // An end without "readers" (an older coordinator) still decodes; a bad count does not.
  end_decoded = DecodeEnd(R"({"kind":"succeeded","reason":"r","counted":false})");
  ASSERT_TRUE(end_decoded.ok()) << end_decoded.status();
  EXPECT_EQ(end_decoded->readers, 0);
  EXPECT_FALSE(DecodeEnd(R"({"kind":"succeeded","reason":"r","counted":false,"readers":-1})").ok());
  EXPECT_FALSE(DecodeWorld("{not json").ok());
}

TEST(Rendezvous, WorldFieldsWithSeparatorsRoundTrip) {
  World world;
  world.generation = 1;
  world.master_addr = "fe80::1%eth0";
  world.worker_store = "h:1";
  world.nodes = {Node("a\tb", "host with space", 1, {{"rack", "r=1;x"}, {"z%", "\n"}}),
                 Node("c", "", 2)};
  world.nodes[0].role = "";
  auto decoded = DecodeWorld(EncodeWorld(world));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->master_addr, "fe80::1%eth0");
  ASSERT_EQ(decoded->nodes.size(), 2u);
  EXPECT_EQ(decoded->nodes[0].node_id, "a\tb");
  EXPECT_EQ(decoded->nodes[0].host, "host with space");
  EXPECT_EQ(decoded->nodes[0].role, "");
  EXPECT_EQ(decoded->nodes[0].labels.at("rack"), "r=1;x");
  EXPECT_EQ(decoded->nodes[0].labels.at("z%"), "\n");
  EXPECT_TRUE(decoded->nodes[1].labels.empty());
  EXPECT_EQ(decoded->world_size(), 3);
}

TEST(Rendezvous, MalformedWorldsAreRejectedWithTheLine) {
  World world;
  world.nodes = {Node("a", "h"), Node("b", "h")};
  std::string text = EncodeWorld(world);
  EXPECT_TRUE(DecodeWorld(text).ok());
  EXPECT_FALSE(DecodeWorld(text.substr(0, text.size() - 3)).ok());  // a node cut short
  EXPECT_FALSE(DecodeWorld(text + "extra\n").ok());
  std::string bad_escape = text;
  bad_escape.replace(bad_escape.find("\na\t") + 1, 1, "%Z");
  auto decoded = DecodeWorld(bad_escape);
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(decoded.status().message(), ::testing::HasSubstr("line 3"));
  std::string huge_count = text;
  huge_count.replace(huge_count.find("\t2\n"), 3, "\t99999999\n");
  EXPECT_FALSE(DecodeWorld(huge_count).ok());
  EXPECT_FALSE(DecodeWorld("").ok());
}

TEST(Rendezvous, InboxEntriesDecodeToEvents) {
  NodeInfo node = Node("n1", "h1");
  auto joined = DecodeInboxEntry(keys::Join("n1"), EncodeNode(node), 7);
  ASSERT_TRUE(joined.ok() && joined->has_value());
  EXPECT_EQ((*joined)->kind, AgentEvent::Kind::kJoined);
  EXPECT_EQ((*joined)->order, 7);
  EXPECT_EQ((*joined)->info.host, "h1");
  EXPECT_FALSE(DecodeInboxEntry(keys::Join("other"), EncodeNode(node), 1).ok());
  WorkerFailure failure;
  failure.rank = 3;
  auto failed = DecodeInboxEntry(keys::Failure(2, "n1"), EncodeFailures({failure}), 8);
  ASSERT_TRUE(failed.ok() && failed->has_value());
  EXPECT_EQ((*failed)->kind, AgentEvent::Kind::kFailed);
  EXPECT_EQ((*failed)->generation, 2);
  EXPECT_EQ((*failed)->failures.at(0).rank, 3);
  auto done = DecodeInboxEntry(keys::Done(2, "n1"), "1", 9);
  ASSERT_TRUE(done.ok() && done->has_value());
  EXPECT_EQ((*done)->kind, AgentEvent::Kind::kDone);
  auto left = DecodeInboxEntry(keys::Left("n1"), "bye", 10);
  ASSERT_TRUE(left.ok() && left->has_value());
  EXPECT_EQ((*left)->reason, "bye");
  auto other = DecodeInboxEntry("in/unknown/x", "", 11);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());
  EXPECT_FALSE(DecodeInboxEntry(keys::Done(2, "n1").replace(8, 1, "x"), "1", 12).ok());
}

TEST(Rendezvous, EtcdConfKeys) {
  RendezvousSettings settings;
  int is_host = -1;
  ASSERT_TRUE(ParseRendezvousConf("protocol=HTTPS,cacert=/ca.pem,cert=/c.pem,key=/k.pem,"
                                  "username=cohort,password=pw,etcd_prefix=/jobs",
                                  &settings, &is_host)
                  .ok());
  EXPECT_EQ(settings.etcd.protocol, "https");
  EXPECT_EQ(settings.etcd.ca_file, "/ca.pem");
  EXPECT_EQ(settings.etcd.cert_file, "/c.pem");
  EXPECT_EQ(settings.etcd.key_file, "/k.pem");
  EXPECT_EQ(settings.etcd.user, "cohort");
  EXPECT_EQ(settings.etcd.password, "pw");
  EXPECT_EQ(settings.etcd.prefix, "/jobs");
  absl::Status bad = ParseRendezvousConf("protocol=udp", &settings, &is_host);
  EXPECT_THAT(bad.message(), ::testing::HasSubstr("protocol takes http or https"));
  EXPECT_FALSE(ParseRendezvousConf("user=", &settings, &is_host).ok());
}

}  // namespace
}  // namespace cohort::elastic
