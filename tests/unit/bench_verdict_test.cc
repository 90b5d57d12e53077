// The judgement of `cohort-bench validate` on made-up measurements: a node with a slow link is
// named alone and explains its links; equal nodes pass; --expect minima override the median;
// stragglers, missing RDMA ports, slower NICs and a short GPU count are found; the report and
// its JSON say the same. Also the round-robin and random pairings, and the statistics.
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include "bench/stats.h"
#include "bench/validate.h"
#include "bench/verdict.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort::bench {
namespace {

using nlohmann::json;

json Inventory() {
  return {{"cores_usable", 32},
          {"numa_nodes", 2},
          {"memory_bytes", 1e12},
          {"nics",
           json::array(
               {{{"name", "eth0"}, {"state", "up"}, {"speed_mbps", 100000}, {"virtual", false}}})},
          {"rdma",
           {{"library", true},
            {"devices", json::array({{{"name", "mlx5_0"},
                                      {"ports", json::array({{{"port", 1},
                                                              {"state", "ACTIVE"},
                                                              {"active", true},
                                                              {"speed_gbps", 200.0}}})}}})}}},
          {"gpus", json::array({{{"bus", "0000:01:00.0"}}, {{"bus", "0000:02:00.0"}}})}};
}

// `count` nodes with one rank each; every pair measured once at `bandwidth(a, b)` both ways.
Measurements Cluster(int count, double (*bandwidth)(int, int)) {
  Measurements m;
  for (int node = 0; node < count; ++node) {
    m.nodes.push_back("node" + std::to_string(node));
    m.ranks_per_node.push_back(1);
    m.inventory.push_back(Inventory());
    m.memcpy_gbps.push_back(10);
    m.intra_busbw_gbps.push_back(-1);
    m.ranks.push_back({node, node, 50.0, 1000.0, 100.0});
  }
  int round = 0;
  for (const auto& pairs : RoundRobin(count)) {
    for (const auto& [a, b] : pairs) {
      PairSample sample;
      sample.a = a;
      sample.b = b;
      sample.round = round;
      sample.bandwidth_ab = bandwidth(a, b);
      sample.bandwidth_ba = bandwidth(b, a);
      sample.latency_us = 20;
      m.samples.push_back(sample);
    }
    ++round;
  }
  m.rounds = round;
  m.cluster_busbw_gbps = 10;
  m.cluster_bytes = 1 << 20;
  m.cluster_algorithm = "ring";
  return m;
}

double Equal(int, int) { return 12.0; }
double Node2Quarter(int a, int b) { return a == 2 || b == 2 ? 3.0 : 12.0; }

std::string Printed(const Measurements& m, const Report& report, const Expectations& e) {
  char* text = nullptr;
  size_t length = 0;
  FILE* out = open_memstream(&text, &length);
  PrintReport(out, m, report, e);
  std::fclose(out);
  std::string result(text, length);
  std::free(text);
  return result;
}

TEST(BenchVerdict, EqualClusterPasses) {
  Measurements m = Cluster(4, Equal);
  Report report = Judge(m, {});
  EXPECT_EQ(report.overall, Level::kPass);
  EXPECT_EQ(report.exit_code, 0);
  EXPECT_TRUE(report.culprits.empty());
  ASSERT_EQ(report.links.size(), 6u);
  for (const NodeVerdict& node : report.nodes) {
    EXPECT_EQ(node.level, Level::kPass) << node.name;
    EXPECT_DOUBLE_EQ(node.p2p_gbps, 12);
  }
  std::string text = Printed(m, report, {});
  EXPECT_NE(text.find("# Verdict: PASS\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# Culprits: none\n"), std::string::npos) << text;
}

TEST(BenchVerdict, SlowNodeIsNamedAloneAndExplainsItsLinks) {
  Measurements m = Cluster(4, Node2Quarter);
  Report report = Judge(m, {});
  EXPECT_EQ(report.overall, Level::kSlow);
  EXPECT_EQ(report.exit_code, 1);
  EXPECT_EQ(report.culprits, std::vector<std::string>{"node2"});
  for (const NodeVerdict& node : report.nodes) {
    EXPECT_EQ(node.level, node.name == "node2" ? Level::kSlow : Level::kPass) << node.name;
  }
  EXPECT_EQ(report.nodes[2].reasons.front(),
            "p2p bandwidth (best link) 3 GB/s is 25% of the cluster median 12 GB/s");
  int slow_links = 0;
  for (const LinkVerdict& link : report.links) {
    bool touches = link.a == 2 || link.b == 2;
    EXPECT_EQ(link.level, touches ? Level::kSlow : Level::kPass);
    if (touches) {
      EXPECT_EQ(link.explained_by, 2);
      ++slow_links;
    }
  }
  EXPECT_EQ(slow_links, 3);
  std::string text = Printed(m, report, {});
  EXPECT_NE(text.find("# Culprits: node2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# Summary: SLOW: node2 SLOW (p2p bandwidth (best link) 3 GB/s is 25%"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("(explained by node2)"), std::string::npos) << text;
  json document = json::parse(ReportJson(m, report, {}).dump());
  EXPECT_EQ(document["verdict"], "SLOW");
  EXPECT_EQ(document["culprits"], json::array({"node2"}));
  EXPECT_EQ(document["nodes"][2]["verdict"], "SLOW");
  EXPECT_EQ(document["nodes"][1]["verdict"], "PASS");
  EXPECT_EQ(document["links"].size(), 6u);
  EXPECT_EQ(document["p2p"]["samples"].size(), 6u);
}

TEST(BenchVerdict, ThreeNodesWithOneSlow) {
  Measurements m = Cluster(3, Node2Quarter);
  Report report = Judge(m, {});
  EXPECT_EQ(report.culprits, std::vector<std::string>{"node2"});
}

TEST(BenchVerdict, TwoNodesCannotBlameEitherWithoutExpectations) {
  Measurements m = Cluster(2, [](int, int) { return 1.0; });
  EXPECT_EQ(Judge(m, {}).overall, Level::kPass);
  Expectations expect;
  expect.link.min_bandwidth_gbps = 10;
  Report report = Judge(m, expect);
  EXPECT_EQ(report.overall, Level::kSlow);
  EXPECT_EQ(report.culprits, std::vector<std::string>{"node0-node1"});
  EXPECT_EQ(report.links[0].reasons.front(), "bandwidth 1 GB/s is below the expected 10 GB/s");
}

TEST(BenchVerdict, BestSampleOfALinkCounts) {
  Measurements m = Cluster(4, Equal);
  PairSample bad = m.samples.front();  // a slow moment of a good link
  bad.bandwidth_ab = 1;
  bad.repairing = true;
  m.samples.push_back(bad);
  EXPECT_EQ(Judge(m, {}).overall, Level::kPass);
}

TEST(BenchVerdict, ExpectationsFromAFile) {
  std::string path = ::testing::TempDir() + "/bench_expect.json";
  FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  std::fputs(R"({
    "threshold": 0.9,
    "link": {"min_bandwidth_gbps": 10, "max_latency_us": 50},
    "links": {"node3-node1": {"min_bandwidth_gbps": 20}},
    "node": {"min_memcpy_gbps": 5, "min_gpus": 2},
    "nodes": {"node0": {"min_memcpy_gbps": 11}},
    "cluster": {"min_allreduce_busbw_gbps": 11}
  })",
             file);
  std::fclose(file);
  auto expect = LoadExpectations(path);
  ASSERT_TRUE(expect.ok()) << expect.status();
  EXPECT_DOUBLE_EQ(expect->threshold, 0.9);
  Measurements m = Cluster(4, Equal);
  Report report = Judge(m, *expect);
  // node0's memcpy (10) is below its own minimum; link node1-node3 (12) below its 20; the
  // cluster allreduce (10) below 11 - but that is explained by the culprits already.
  EXPECT_EQ(report.nodes[0].level, Level::kSlow);
  EXPECT_EQ(report.nodes[0].reasons.front(), "memcpy 10 GB/s is below the expected 11 GB/s");
  EXPECT_EQ(report.nodes[1].level, Level::kPass);
  EXPECT_EQ(report.cluster_level, Level::kSlow);
  EXPECT_EQ(report.culprits, (std::vector<std::string>{"node0", "node1-node3"}));
  std::string text = Printed(m, report, *expect);
  EXPECT_NE(text.find("thresholds from " + path), std::string::npos) << text;
  std::remove(path.c_str());
}

TEST(BenchVerdict, BadExpectationsAreErrors) {
  EXPECT_NE(ParseExpectations(json::parse(R"({"links": {"a-b": {"min_bw": 3}}})"))
                .status()
                .message()
                .find("unknown key \"min_bw\" in \"links\".\"a-b\""),
            std::string::npos);
  EXPECT_NE(ParseExpectations(json::parse(R"({"threshold": 2})"))
                .status()
                .message()
                .find("\"threshold\" must be a fraction"),
            std::string::npos);
  EXPECT_NE(ParseExpectations(json::parse(R"({"node": {"min_memcpy_gbps": "fast"}})"))
                .status()
                .message()
                .find("\"min_memcpy_gbps\" must be a non-negative number"),
            std::string::npos);
  EXPECT_NE(LoadExpectations("/nonexistent/expect.json").status().message().find("cannot read"),
            std::string::npos);
}

TEST(BenchVerdict, StragglerRank) {
  Measurements m = Cluster(4, Equal);
  m.ranks[3].compute_best_us = 80;  // 62% of the median speed
  Report report = Judge(m, {});
  EXPECT_EQ(report.culprits, std::vector<std::string>{"node3"});
  EXPECT_EQ(report.nodes[3].slowest_rank, 3);
  EXPECT_NEAR(report.nodes[3].compute_ratio, 50.0 / 80.0, 1e-9);
  EXPECT_NE(report.nodes[3].reasons.front().find("rank 3 is a straggler"), std::string::npos);
  m.ranks[3].compute_best_us = 55;  // 91%: within the threshold
  EXPECT_EQ(Judge(m, {}).overall, Level::kPass);
}

TEST(BenchVerdict, InventoryDifferences) {
  Measurements m = Cluster(4, Equal);
  m.inventory[1]["rdma"]["devices"][0]["ports"][0]["active"] = false;
  m.inventory[1]["rdma"]["devices"][0]["ports"][0]["state"] = "DOWN";
  m.inventory[2]["nics"][0]["speed_mbps"] = 25000;
  m.inventory[3]["gpus"].erase(1);
  Report report = Judge(m, {});
  EXPECT_EQ(report.nodes[0].level, Level::kPass);
  EXPECT_EQ(report.nodes[1].level, Level::kFail);
  EXPECT_EQ(report.nodes[1].reasons.front(), "mlx5_0 port 1 not ACTIVE (3 of 4 nodes have it up)");
  EXPECT_EQ(report.nodes[2].level, Level::kSlow);
  EXPECT_EQ(report.nodes[2].reasons.front(), "eth0 runs at 25000 Mb/s, the others at 100000 Mb/s");
  EXPECT_EQ(report.nodes[3].level, Level::kFail);
  EXPECT_EQ(report.nodes[3].reasons.front(), "1 GPUs, the others have 2");
  EXPECT_EQ(report.overall, Level::kFail);
  EXPECT_EQ(report.culprits, (std::vector<std::string>{"node1", "node2", "node3"}));
}

TEST(BenchVerdict, FailedMeasurementFails) {
  Measurements m = Cluster(4, Equal);
  for (PairSample& sample : m.samples) {
    if (sample.a == 1 || sample.b == 1) sample.error = "recv timed out";
  }
  Report report = Judge(m, {});
  EXPECT_EQ(report.nodes[1].level, Level::kFail);
  EXPECT_EQ(report.culprits, std::vector<std::string>{"node1"});
  for (const LinkVerdict& link : report.links) {
    if (link.a == 1 || link.b == 1) {
      EXPECT_EQ(link.level, Level::kFail);
      EXPECT_EQ(link.explained_by, 1);
    }
  }
}

TEST(BenchVerdict, SlowClusterAllreduceAlone) {
  Measurements m = Cluster(4, Equal);
  m.cluster_busbw_gbps = 5;  // 42% of the slowest node's best link
  Report report = Judge(m, {});
  EXPECT_EQ(report.cluster_level, Level::kSlow);
  EXPECT_EQ(report.culprits, std::vector<std::string>{"cluster allreduce"});
}

TEST(BenchSchedule, RoundRobinPairsEveryNodeOnceInDisjointRounds) {
  for (int n = 1; n <= 9; ++n) {
    auto rounds = RoundRobin(n);
    EXPECT_EQ(static_cast<int>(rounds.size()), n < 2 ? 0 : (n % 2 == 0 ? n - 1 : n)) << n;
    std::set<std::pair<int, int>> seen;
    for (const auto& round : rounds) {
      std::set<int> busy;
      for (const auto& [a, b] : round) {
        EXPECT_LT(a, b);
        EXPECT_TRUE(busy.insert(a).second) << "node " << a << " twice in a round of " << n;
        EXPECT_TRUE(busy.insert(b).second) << "node " << b << " twice in a round of " << n;
        EXPECT_TRUE(seen.insert({a, b}).second) << "pair measured twice for " << n;
      }
      EXPECT_GE(static_cast<int>(busy.size()), n - 1);  // at most one node rests
    }
    EXPECT_EQ(static_cast<int>(seen.size()), n * (n - 1) / 2) << n;
  }
}

TEST(BenchSchedule, RandomPairingIsAMatching) {
  for (int n : {2, 5, 8}) {
    for (uint64_t seed : {1u, 2u, 99u}) {
      std::set<int> used;
      for (const auto& [a, b] : RandomPairing(n, seed)) {
        EXPECT_LT(a, b);
        EXPECT_TRUE(used.insert(a).second);
        EXPECT_TRUE(used.insert(b).second);
      }
      EXPECT_EQ(static_cast<int>(used.size()), n - n % 2);
    }
  }
  EXPECT_EQ(RandomPairing(8, 7), RandomPairing(8, 7));
}

TEST(BenchStats, Summary) {
  Stats stats = Summarize({4, 1, 3, 2});
  EXPECT_EQ(stats.samples, 4);
  EXPECT_EQ(stats.min, 1);
  EXPECT_EQ(stats.max, 4);
  EXPECT_DOUBLE_EQ(stats.p50, 2.5);
  EXPECT_EQ(stats.p99, 4);
  EXPECT_DOUBLE_EQ(stats.mean, 2.5);
  EXPECT_NEAR(stats.cv, std::sqrt(1.25) / 2.5, 1e-12);
  std::vector<double> hundred;
  for (int i = 1; i <= 200; ++i) hundred.push_back(i);
  EXPECT_EQ(Summarize(hundred).p99, 198);
  EXPECT_EQ(Summarize({}).samples, 0);
  EXPECT_EQ(Summarize({5}).cv, 0);
  json j = StatsJson(stats, "us");
  EXPECT_EQ(j["p50_us"], 2.5);
  EXPECT_TRUE(j.contains("cv"));
}

}  // namespace
}  // namespace cohort::bench
