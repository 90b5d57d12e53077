// The coordinator and agent clients over a real store, in one process (agents on threads):
// rounds closing at max or after last call, failures restarting the job within the restart
// budget, a node whose heartbeats stop, a departing node, scale-up, and the join timeout.
#include <future>

#include "absl/time/clock.h"
#include "elastic/agent_client.h"
#include "elastic/coordinator.h"
#include "elastic/store/store_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::elastic {
namespace {

using ::testing::HasSubstr;

class CoordinatorTest : public ::testing::Test {
 protected:
  void Start(RendezvousSettings settings) {
    settings_ = settings;
    store::StoreServerOptions server_options;
    server_options.host = "127.0.0.1";
    server_options.job_id = "job";
    server_options.token = "secret";
    auto server = store::StoreServer::Start(server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    CoordinatorOptions options;
    options.store_port = server_->port();
    options.job_id = "job";
    options.token = "secret";
    options.settings = settings;
    options.worker_store_listen_host = "127.0.0.1";
    auto coordinator = Coordinator::Start(options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = std::move(*coordinator);
  }

  void TearDown() override {
    agents_.clear();
    if (coordinator_) coordinator_->RequestStop();
    if (server_) server_->Stop();
    coordinator_.reset();
  }

  AgentClient* Agent(const std::string& host) {
    AgentClientOptions options;
    options.store_host = "127.0.0.1";
    options.store_port = server_->port();
    options.job_id = "job";
    options.token = "secret";
    options.settings = settings_;
    auto agent = AgentClient::Connect(options, host + "-id");
    EXPECT_TRUE(agent.ok()) << agent.status();
    agents_[host] = std::move(*agent);
    return agents_[host].get();
  }

  std::future<absl::StatusOr<World>> Join(AgentClient* agent, const std::string& host, int workers = 2) {
    return std::async(std::launch::async, [agent, host, workers] {
      NodeInfo info;
      info.node_id = agent->node_id();
      info.host = host;
      info.address = "127.0.0.1";
      info.master_port = 1000;
      info.local_world_size = workers;
      return agent->Join(info, absl::Seconds(20), nullptr);
    });
  }

  GenerationEnd AwaitEnd(AgentClient* agent, int64_t generation) {
    for (int i = 0; i < 200; ++i) {
      auto end = agent->PollEnd(generation, absl::Milliseconds(50));
      EXPECT_TRUE(end.ok()) << end.status();
      if (end.ok() && end->has_value()) return **end;
    }
    ADD_FAILURE() << "generation " << generation << " did not end";
    return {};
  }

  RendezvousSettings Settings(int min_nodes, int max_nodes, int max_restarts = 0) {
    RendezvousSettings settings;
    settings.min_nodes = min_nodes;
    settings.max_nodes = max_nodes;
    settings.max_restarts = max_restarts;
    settings.last_call_timeout = absl::Milliseconds(200);
    settings.join_timeout = absl::Seconds(10);
    settings.heartbeat_interval = absl::Milliseconds(100);
    settings.heartbeat_timeout = absl::Milliseconds(600);
    settings.read_timeout = absl::Seconds(5);
    return settings;
  }

  RendezvousSettings settings_;
  std::unique_ptr<store::StoreServer> server_;
  std::unique_ptr<Coordinator> coordinator_;
  std::map<std::string, std::unique_ptr<AgentClient>> agents_;
};

TEST_F(CoordinatorTest, RoundClosesAtMaxAndJobSucceeds) {
  Start(Settings(2, 2));
  AgentClient* b = Agent("b");
  AgentClient* a = Agent("a");
  auto joined_b = Join(b, "b", 3);
  auto joined_a = Join(a, "a", 2);
  auto world_a = joined_a.get();
  auto world_b = joined_b.get();
  ASSERT_TRUE(world_a.ok()) << world_a.status();
  ASSERT_TRUE(world_b.ok()) << world_b.status();
  EXPECT_EQ(world_a->generation, 1);
  EXPECT_EQ(world_a->world_size(), 5);
  EXPECT_EQ(world_a->GroupRank("a-id"), 0);  // ordered by host name, not by arrival
  EXPECT_EQ(world_a->GroupRank("b-id"), 1);
  EXPECT_EQ(world_a->RankOffset(1), 2);
  EXPECT_THAT(world_a->worker_store, HasSubstr("127.0.0.1:"));
  ASSERT_TRUE(a->ReportDone(1).ok());
  auto running = a->PollEnd(1, absl::Milliseconds(100));
  ASSERT_TRUE(running.ok());
  EXPECT_FALSE(running->has_value());  // b still works
  ASSERT_TRUE(b->ReportDone(1).ok());
  EXPECT_EQ(AwaitEnd(a, 1).kind, GenerationEnd::Kind::kSucceeded);
}

TEST_F(CoordinatorTest, FailuresRestartUntilTheBudgetIsSpent) {
  Start(Settings(2, 2, /*max_restarts=*/1));
  AgentClient* a = Agent("a");
  AgentClient* b = Agent("b");
  auto ja = Join(a, "a");
  auto jb = Join(b, "b");
  ASSERT_TRUE(ja.get().ok());
  ASSERT_TRUE(jb.get().ok());
  WorkerFailure failure;
  failure.host = "b";
  failure.rank = 3;
  failure.exit_code = -9;
  ASSERT_TRUE(b->ReportFailures(1, {failure}).ok());
  GenerationEnd end = AwaitEnd(a, 1);
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kRestart);
  EXPECT_TRUE(end.counted);
  EXPECT_THAT(end.reason, HasSubstr("rank 3 on b was killed by signal 9"));
  ja = Join(a, "a");
  jb = Join(b, "b");
  auto world = ja.get();
  ASSERT_TRUE(world.ok()) << world.status();
  ASSERT_TRUE(jb.get().ok());
  EXPECT_EQ(world->generation, 2);
  EXPECT_EQ(world->restart_count, 1);
  failure.exit_code = 1;
  ASSERT_TRUE(a->ReportFailures(2, {failure}).ok());
  end = AwaitEnd(b, 2);
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kFailed);
  EXPECT_THAT(end.reason, HasSubstr("no restarts left (--max-restarts 1)"));
  auto failures = b->Failures(2);
  ASSERT_TRUE(failures.ok());
  ASSERT_EQ(failures->size(), 1u);
  EXPECT_EQ((*failures)[0].exit_code, 1);
}

TEST_F(CoordinatorTest, LostNodeEndsTheGenerationAndSurvivorsContinue) {
  Start(Settings(1, 2, /*max_restarts=*/3));
  AgentClient* a = Agent("a");
  AgentClient* b = Agent("b");
  auto ja = Join(a, "a");
  auto jb = Join(b, "b");
  ASSERT_TRUE(ja.get().ok());
  ASSERT_TRUE(jb.get().ok());
  absl::Time lost_at = absl::Now();
  agents_.erase("b");  // heartbeats stop, as when the node dies
  GenerationEnd end = AwaitEnd(a, 1);
  absl::Duration detection = absl::Now() - lost_at;
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kRestart);
  EXPECT_THAT(end.reason, HasSubstr("node b lost: no heartbeat"));
  EXPECT_LT(detection, absl::Seconds(2)) << "heartbeat timeout is 600ms";
  auto world = Join(a, "a").get();
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->generation, 2);
  EXPECT_EQ(world->nodes.size(), 1u);
  EXPECT_EQ(world->world_size(), 2);
}

TEST_F(CoordinatorTest, LeavingNodeEndsTheGenerationAtOnce) {
  Start(Settings(1, 2, /*max_restarts=*/3));
  AgentClient* a = Agent("a");
  AgentClient* b = Agent("b");
  auto ja = Join(a, "a");
  auto jb = Join(b, "b");
  ASSERT_TRUE(ja.get().ok());
  ASSERT_TRUE(jb.get().ok());
  absl::Time left_at = absl::Now();
  ASSERT_TRUE(b->Leave("its agent received SIGTERM").ok());
  GenerationEnd end = AwaitEnd(a, 1);
  EXPECT_LT(absl::Now() - left_at, absl::Milliseconds(500));
  EXPECT_THAT(end.reason, HasSubstr("node b left the job (its agent received SIGTERM)"));
}

TEST_F(CoordinatorTest, WaitingNodeScalesUpWithoutCountingARestart) {
  Start(Settings(1, 2, /*max_restarts=*/0));
  AgentClient* a = Agent("a");
  auto first = Join(a, "a").get();  // closes after last call with one node
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->nodes.size(), 1u);
  AgentClient* b = Agent("b");
  auto jb = Join(b, "b");
  GenerationEnd end = AwaitEnd(a, 1);
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kRestart);
  EXPECT_FALSE(end.counted);
  EXPECT_THAT(end.reason, HasSubstr("scale-up"));
  auto second = Join(a, "a").get();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(jb.get().ok());
  EXPECT_EQ(second->generation, 2);
  EXPECT_EQ(second->nodes.size(), 2u);
  EXPECT_EQ(second->restart_count, 0);
}

TEST_F(CoordinatorTest, MinNodesNotReachedTimesOut) {
  RendezvousSettings settings = Settings(3, 3);
  settings.join_timeout = absl::Milliseconds(500);
  Start(settings);
  AgentClient* a = Agent("a");
  AgentClient* b = Agent("b");
  auto ja = Join(a, "a");
  auto jb = Join(b, "b");
  auto world = ja.get();
  ASSERT_FALSE(world.ok());
  EXPECT_THAT(world.status().message(), HasSubstr("rendezvous timed out: 2 of at least 3 nodes"));
  EXPECT_THAT(world.status().message(), HasSubstr("join_timeout"));
  EXPECT_FALSE(jb.get().ok());
}

}  // namespace
}  // namespace cohort::elastic
