// The coordinator and agent clients in one process (agents on threads), on both backends: the
// embedded store and etcd (started by the test; there an agent that never joins holds the
// coordinator role): rounds closing at max or after last call, failures restarting the job
// within the restart budget, a node whose heartbeats (lease) stop, a departing node, scale-up,
// and the join timeout. Then etcd alone: the coordinator's host dies and another agent takes
// the role, etcd's leader dies and the job does not notice, a finished job's id is refused.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "elastic/agent_client.h"
#include "elastic/coordinator.h"
#include "elastic/etcd_backend.h"
#include "common/membership.h"
#include "common/status.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/etcd_cluster.h"

namespace cohort::elastic {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

enum class Backend { kEmbedded, kEtcd };

EtcdAgentOptions EtcdOptions(const RendezvousSettings& settings, const std::string& host,
                             bool campaign) {
  EtcdAgentOptions options;
  options.settings = settings;
  options.job_id = "job";
  options.node_id = host + "-id";
  options.host = host;
  options.campaign = campaign;
  options.coordinator.job_id = "job";
  options.coordinator.token = "secret";
  options.coordinator.settings = settings;
  options.coordinator.worker_store_listen_host = "127.0.0.1";
  options.coordinator.host = host;
  return options;
}

// Waits until `agent` holds the coordinator role.
bool AwaitRole(AgentClient& agent, absl::Duration limit = absl::Seconds(10)) {
  absl::Time until = absl::Now() + limit;
  while (!agent.backend().RunsCoordinator()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

class CoordinatorTest : public ::testing::TestWithParam<Backend> {
 protected:
  void Start(RendezvousSettings settings) {
    settings_ = settings;
    if (GetParam() == Backend::kEtcd) {
      auto cluster = testing::EtcdCluster::Start({});
      ASSERT_TRUE(cluster.ok()) << cluster.status();
      cluster_ = std::move(*cluster);
      settings_.etcd.endpoints = cluster_->endpoints();
      // The coordinator runs in an agent that never joins, as the embedded one runs beside them.
      auto coordinator = ConnectEtcdAgent(EtcdOptions(settings_, "coord", /*campaign=*/true));
      ASSERT_TRUE(coordinator.ok()) << coordinator.status();
      coordinator_agent_ = std::move(*coordinator);
      ASSERT_TRUE(AwaitRole(*coordinator_agent_));
      return;
    }
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
    coordinator_agent_.reset();
    if (coordinator_) coordinator_->RequestStop();
    if (server_) server_->Stop();
    coordinator_.reset();
    cluster_.reset();
  }

  AgentClient* Agent(const std::string& host) {
    if (GetParam() == Backend::kEtcd) {
      auto agent = ConnectEtcdAgent(EtcdOptions(settings_, host, /*campaign=*/false));
      EXPECT_TRUE(agent.ok()) << agent.status();
      agents_[host] = std::move(*agent);
      return agents_[host].get();
    }
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

  // How long a node whose agent stopped takes to be declared lost: the heartbeat timeout
  // (600 ms) embedded; the lease (at least 2 s) plus etcd's expiry check (0.5 s) on etcd.
  absl::Duration LossBound() const {
    return GetParam() == Backend::kEtcd ? absl::Seconds(4) : absl::Seconds(2);
  }

  RendezvousSettings settings_;
  std::unique_ptr<testing::EtcdCluster> cluster_;
  std::unique_ptr<AgentClient> coordinator_agent_;
  std::unique_ptr<store::StoreServer> server_;
  std::unique_ptr<Coordinator> coordinator_;
  std::map<std::string, std::unique_ptr<AgentClient>> agents_;
};

TEST_P(CoordinatorTest, RoundClosesAtMaxAndJobSucceeds) {
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

TEST_P(CoordinatorTest, FailuresRestartUntilTheBudgetIsSpent) {
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

TEST_P(CoordinatorTest, LostNodeEndsTheGenerationAndSurvivorsContinue) {
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
  EXPECT_THAT(end.reason, HasSubstr(GetParam() == Backend::kEtcd
                                        ? "node b lost: its etcd lease expired"
                                        : "node b lost: no heartbeat"));
  EXPECT_LT(detection, LossBound());
  auto world = Join(a, "a").get();
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ(world->generation, 2);
  EXPECT_EQ(world->nodes.size(), 1u);
  EXPECT_EQ(world->world_size(), 2);
}

TEST_P(CoordinatorTest, LeavingNodeEndsTheGenerationAtOnce) {
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

TEST_P(CoordinatorTest, WaitingNodeScalesUpWithoutCountingARestart) {
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

TEST_P(CoordinatorTest, MinNodesNotReachedTimesOut) {
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

// --on-failure shrink: removal records in the generation's worker store.
class ShrinkTest : public CoordinatorTest {
 protected:
  RendezvousSettings ShrinkSettings(int min_nodes, int max_nodes, int max_restarts = 0) {
    RendezvousSettings settings = Settings(min_nodes, max_nodes, max_restarts);
    settings.shrink_on_failure = true;
    return settings;
  }

  // Removal `number` from the worker store of `world`, waiting for it.
  absl::StatusOr<membership::Removal> AwaitRemoval(const World& world, int number) {
    if (worker_store_ == nullptr) {
      size_t colon = world.worker_store.rfind(':');
      store::StoreClientOptions options;
      options.host = world.worker_store.substr(0, colon);
      options.port = std::stoi(world.worker_store.substr(colon + 1));
      options.job_id = "job";
      options.token = "secret";
      options.connect_timeout = absl::Seconds(5);
      options.timeout = absl::Seconds(5);
      COHORT_ASSIGN_OR_RETURN(worker_store_, store::StoreClient::Connect(options));
    }
    COHORT_ASSIGN_OR_RETURN(std::string text,
                            worker_store_->Get(membership::RemovalKey(number), absl::Seconds(5)));
    return membership::Decode(text);
  }

  void ExpectStillRunning(AgentClient* agent, int64_t generation) {
    auto end = agent->PollEnd(generation, absl::Milliseconds(300));
    ASSERT_TRUE(end.ok()) << end.status();
    EXPECT_FALSE(end->has_value()) << "generation " << generation << " ended: " << (*end)->reason;
  }

  void TearDown() override {
    worker_store_.reset();
    CoordinatorTest::TearDown();
  }

  std::unique_ptr<store::StoreClient> worker_store_;
};

TEST_P(ShrinkTest, FailedWorkersAreRemovedAndTheSurvivorsFinish) {
  Start(ShrinkSettings(1, 2));
  AgentClient* a = Agent("a");
  AgentClient* b = Agent("b");
  auto ja = Join(a, "a");
  auto jb = Join(b, "b");
  auto world = ja.get();
  ASSERT_TRUE(world.ok()) << world.status();
  ASSERT_TRUE(jb.get().ok());
  WorkerFailure killed;
  killed.host = "b";
  killed.rank = 3;
  killed.exit_code = -9;
  ASSERT_TRUE(b->ReportFailures(1, {killed}).ok());
  auto removal = AwaitRemoval(*world, 1);
  ASSERT_TRUE(removal.ok()) << removal.status();
  EXPECT_THAT(removal->ranks, ElementsAre(3));
  EXPECT_EQ(removal->reason, "worker rank 3 on b was killed by signal 9");
  ExpectStillRunning(a, 1);
  // The agent reports its failures so far: only the new one is removed. b keeps no rank, yet
  // one node (the minimum) is left: the job goes on.
  WorkerFailure exited = killed;
  exited.rank = 2;
  exited.exit_code = 3;
  ASSERT_TRUE(b->ReportFailures(1, {killed, exited}).ok());
  removal = AwaitRemoval(*world, 2);
  ASSERT_TRUE(removal.ok()) << removal.status();
  EXPECT_THAT(removal->ranks, ElementsAre(2));
  EXPECT_EQ(removal->reason, "worker rank 2 on b exited with code 3");
  ExpectStillRunning(a, 1);
  ASSERT_TRUE(b->ReportDone(1).ok());  // b's workers have all exited
  ExpectStillRunning(a, 1);
  ASSERT_TRUE(a->ReportDone(1).ok());
  GenerationEnd end = AwaitEnd(a, 1);
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kSucceeded);
  EXPECT_THAT(end.reason, HasSubstr("all 2 surviving workers exited with code 0; 2 ranks (2, 3) "
                                    "removed on the way (--on-failure shrink)"));
  EXPECT_EQ(end.readers, 2);  // b's agent is alive and reads it too
}

TEST_P(ShrinkTest, LostNodeIsRemovedAndTheOthersGoOn) {
  Start(ShrinkSettings(1, 2));
  AgentClient* a = Agent("a");
  AgentClient* b = Agent("b");
  auto ja = Join(a, "a");
  auto jb = Join(b, "b");
  auto world = ja.get();
  ASSERT_TRUE(world.ok()) << world.status();
  ASSERT_TRUE(jb.get().ok());
  absl::Time lost_at = absl::Now();
  agents_.erase("b");  // heartbeats stop, as when the node dies
  auto removal = AwaitRemoval(*world, 1);
  ASSERT_TRUE(removal.ok()) << removal.status();
  EXPECT_LT(absl::Now() - lost_at, LossBound());
  EXPECT_THAT(removal->ranks, ElementsAre(2, 3));
  EXPECT_THAT(removal->reason, HasSubstr(GetParam() == Backend::kEtcd
                                             ? "node b lost: its etcd lease expired"
                                             : "node b lost: no heartbeat"));
  ExpectStillRunning(a, 1);
  ASSERT_TRUE(a->ReportDone(1).ok());
  GenerationEnd end = AwaitEnd(a, 1);
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kSucceeded);
  EXPECT_THAT(end.reason, HasSubstr("all 2 surviving workers exited with code 0"));
  EXPECT_EQ(end.readers, 1);  // nobody waits for the lost node to read it
}

TEST_P(ShrinkTest, FewerNodesThanTheMinimumRestart) {
  Start(ShrinkSettings(2, 2, /*max_restarts=*/1));
  AgentClient* a = Agent("a");
  AgentClient* b = Agent("b");
  auto ja = Join(a, "a");
  auto jb = Join(b, "b");
  auto world = ja.get();
  ASSERT_TRUE(world.ok()) << world.status();
  ASSERT_TRUE(jb.get().ok());
  ASSERT_TRUE(b->Leave("its agent received SIGTERM").ok());
  auto removal = AwaitRemoval(*world, 1);  // the workers still hear of it
  ASSERT_TRUE(removal.ok()) << removal.status();
  EXPECT_THAT(removal->ranks, ElementsAre(2, 3));
  GenerationEnd end = AwaitEnd(a, 1);
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kRestart);
  EXPECT_TRUE(end.counted);
  EXPECT_THAT(end.reason, HasSubstr("node b left the job (its agent received SIGTERM); 1 node "
                                    "left, fewer than the minimum of --nnodes (2)"));
}

INSTANTIATE_TEST_SUITE_P(Backends, ShrinkTest,
                         ::testing::Values(Backend::kEmbedded, Backend::kEtcd),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kEtcd ? "etcd" : "embedded";
                         });

INSTANTIATE_TEST_SUITE_P(Backends, CoordinatorTest,
                         ::testing::Values(Backend::kEmbedded, Backend::kEtcd),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kEtcd ? "etcd" : "embedded";
                         });

// What only etcd can do: lose the coordinator's host and go on.
class EtcdRendezvousTest : public CoordinatorTest {
 protected:
  NodeInfo Info(const std::string& host) {
    NodeInfo info;
    info.node_id = host + "-id";
    info.host = host;
    info.address = "127.0.0.1";
    info.master_port = 1000;
    info.local_world_size = 2;
    return info;
  }
};

TEST_P(EtcdRendezvousTest, CoordinatorHostDiesAndAnotherAgentTakesTheRole) {
  auto cluster = testing::EtcdCluster::Start({});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  RendezvousSettings settings = Settings(2, 3, /*max_restarts=*/1);
  settings.heartbeat_timeout = absl::Seconds(2);  // the lease
  settings.etcd.endpoints = (*cluster)->endpoints();
  // Agent a takes the role first, in a process of its own that the test kills like its host.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    auto agent = ConnectEtcdAgent(EtcdOptions(settings, "a", /*campaign=*/true));
    if (!agent.ok() || !AwaitRole(**agent)) ::_exit(2);
    if (::write(ready[1], "r", 1) != 1) ::_exit(3);
    auto world = (*agent)->Join(Info("a"), absl::Seconds(20), nullptr);
    ::pause();
    ::_exit(world.ok() ? 0 : 4);
  }
  ::close(ready[1]);
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{child};
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "agent a did not take the coordinator role";
  ::close(ready[0]);
  auto b = ConnectEtcdAgent(EtcdOptions(settings, "b", /*campaign=*/true));
  auto c = ConnectEtcdAgent(EtcdOptions(settings, "c", /*campaign=*/true));
  ASSERT_TRUE(b.ok() && c.ok()) << b.status() << c.status();
  auto jb = std::async(std::launch::async, [&] { return (*b)->Join(Info("b"), absl::Seconds(20), nullptr); });
  auto jc = std::async(std::launch::async, [&] { return (*c)->Join(Info("c"), absl::Seconds(20), nullptr); });
  auto first = jb.get();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(jc.get().ok());
  EXPECT_EQ(first->nodes.size(), 3u);
  EXPECT_FALSE((*b)->backend().RunsCoordinator());

  ::kill(child, SIGKILL);  // a's host dies: its lease expires, the role is free
  absl::Time killed = absl::Now();
  GenerationEnd end = AwaitEnd(b->get(), 1);
  EXPECT_EQ(end.kind, GenerationEnd::Kind::kRestart);
  EXPECT_TRUE(end.counted);
  EXPECT_THAT(end.reason, HasSubstr("node a lost: its etcd lease expired"));
  jb = std::async(std::launch::async, [&] { return (*b)->Join(Info("b"), absl::Seconds(20), nullptr); });
  jc = std::async(std::launch::async, [&] { return (*c)->Join(Info("c"), absl::Seconds(20), nullptr); });
  auto second = jb.get();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(jc.get().ok());
  absl::Duration took = absl::Now() - killed;
  EXPECT_EQ(second->generation, 2);
  EXPECT_EQ(second->restart_count, 1);
  EXPECT_EQ(second->nodes.size(), 2u);
  EXPECT_TRUE((*b)->backend().RunsCoordinator() || (*c)->backend().RunsCoordinator());
  // The lease (2 s), etcd's expiry check, the election and a round.
  EXPECT_LT(took, absl::Seconds(5)) << "survivors took " << took;
  ASSERT_TRUE((*b)->ReportDone(2).ok());
  ASSERT_TRUE((*c)->ReportDone(2).ok());
  EXPECT_EQ(AwaitEnd(c->get(), 2).kind, GenerationEnd::Kind::kSucceeded);
}

TEST_P(EtcdRendezvousTest, EtcdLeaderDiesAndTheJobGoesOn) {
  auto cluster = testing::EtcdCluster::Start({.members = 3});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  RendezvousSettings settings = Settings(2, 2);
  settings.heartbeat_interval = absl::Milliseconds(200);
  settings.heartbeat_timeout = absl::Seconds(2);
  settings.etcd.endpoints = (*cluster)->endpoints();
  auto coordinator = ConnectEtcdAgent(EtcdOptions(settings, "coord", /*campaign=*/true));
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  ASSERT_TRUE(AwaitRole(**coordinator));
  auto a = ConnectEtcdAgent(EtcdOptions(settings, "a", false));
  auto b = ConnectEtcdAgent(EtcdOptions(settings, "b", false));
  ASSERT_TRUE(a.ok() && b.ok());
  auto ja = std::async(std::launch::async, [&] { return (*a)->Join(Info("a"), absl::Seconds(20), nullptr); });
  auto jb = std::async(std::launch::async, [&] { return (*b)->Join(Info("b"), absl::Seconds(20), nullptr); });
  ASSERT_TRUE(ja.get().ok());
  ASSERT_TRUE(jb.get().ok());
  auto leader = (*cluster)->Leader();
  ASSERT_TRUE(leader.ok()) << leader.status();
  (*cluster)->Kill(*leader);
  // Three lease lifetimes: leases outlive the election, and nothing ends the generation.
  auto end = (*a)->PollEnd(1, absl::Seconds(6));
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_FALSE(end->has_value()) << (*end)->reason;
  for (auto* agent : {coordinator->get(), a->get(), b->get()}) EXPECT_TRUE(agent->health().ok()) << agent->health();
  EXPECT_TRUE((*coordinator)->backend().RunsCoordinator());
  ASSERT_TRUE((*a)->ReportDone(1).ok());
  ASSERT_TRUE((*b)->ReportDone(1).ok());
  EXPECT_EQ(AwaitEnd(b->get(), 1).kind, GenerationEnd::Kind::kSucceeded);
}

TEST_P(EtcdRendezvousTest, AFinishedJobsIdIsRefusedUntilItsKeysAreRemoved) {
  Start(Settings(1, 1));
  AgentClient* a = Agent("a");
  ASSERT_TRUE(Join(a, "a").get().ok());
  ASSERT_TRUE(a->ReportDone(1).ok());
  EXPECT_EQ(AwaitEnd(a, 1).kind, GenerationEnd::Kind::kSucceeded);
  auto late = ConnectEtcdAgent(EtcdOptions(settings_, "late", false));
  ASSERT_FALSE(late.ok());
  EXPECT_THAT(late.status().message(), HasSubstr("job job already ended"));
  EXPECT_THAT(late.status().message(), HasSubstr("etcdctl del --prefix /cohort/job/"));
  ASSERT_TRUE(coordinator_agent_->backend().RemoveJobKeys().ok());
  auto fresh = ConnectEtcdAgent(EtcdOptions(settings_, "fresh", false));
  EXPECT_TRUE(fresh.ok()) << fresh.status();
}

INSTANTIATE_TEST_SUITE_P(Etcd, EtcdRendezvousTest, ::testing::Values(Backend::kEtcd),
                         [](const ::testing::TestParamInfo<Backend>&) { return "etcd"; });

}  // namespace
}  // namespace cohort::elastic
