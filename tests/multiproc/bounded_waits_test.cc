// Every public blocking entry point returns within its timeout (plus at most a second): a
// blocking libcohort call, Work::Wait, communicator creation, every store client operation
// against a store that stopped answering, and the rendezvous join. The peers here do not fail
// loudly (which other suites cover): they just never answer, which is what turns a missing
// timeout into a hang.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "common/clock.h"
#include "elastic/agent_client.h"
#include "elastic/coordinator.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// The promise under test: no blocking call outlives its timeout by more than this.
constexpr double kSlackSeconds = 1.0;

double SecondsSince(int64_t start_nanos) { return (NowNanos() - start_nanos) / 1e9; }

// Runs `call`, expects it to fail with DeadlineExceeded after about `timeout` seconds (not
// before a fraction of it, never more than kSlackSeconds after it), and returns its status.
absl::Status ExpectBounded(const std::string& what, double timeout,
                           const std::function<absl::Status()>& call,
                           absl::StatusCode code = absl::StatusCode::kDeadlineExceeded) {
  int64_t start = NowNanos();
  absl::Status status = call();
  double seconds = SecondsSince(start);
  EXPECT_EQ(status.code(), code) << what << ": " << status;
  EXPECT_GE(seconds, timeout * 0.9) << what << " gave up early: " << status;
  EXPECT_LE(seconds, timeout + kSlackSeconds) << what << " outlived its timeout: " << status;
  return status;
}

void SetLayout(const std::string& layout) {
  if (layout == "tcp") setenv("COHORT_SHM", "0", 1);
}

// -------------------------------------------------------------------------------------------
// libcohort

// The hang from the issue: two ranks both send 64 MiB first with blocking calls, over TCP
// (COHORT_SHM=0), so neither receives. The first to reach its timeout fails with an error that
// names the peer and says what to do; the other's send either times out too or completes,
// when the failed rank's transport drains the connection as it closes. Neither outlives the
// timeout, and at least one reports it.
TEST(BoundedWaits, BlockingSendsToEachOtherTimeOut) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    SetLayout("tcp");
    auto comm = Communicator::Create(bootstrap, rank, size,
                                     {.name = "sends", .timeout = absl::Seconds(2)});
    ASSERT_TRUE(comm.ok()) << comm.status();
    std::vector<char> buffer(64 << 20, 1);
    SendOptions send;
    send.data = buffer.data();
    send.count = buffer.size();
    send.peer = 1 - rank;
    send.blocking = true;
    int64_t start = NowNanos();
    absl::Status status = (*comm)->Send(send)->status();
    EXPECT_LE(SecondsSince(start), 2.0 + kSlackSeconds) << status;
    ASSERT_TRUE(bootstrap.Set(absl::StrCat("outcome/", rank), status.ok() ? "sent" : "timeout")
                    .ok());
    if (!status.ok()) {
      EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
      EXPECT_GE(SecondsSince(start), 1.8) << status;
      EXPECT_THAT(std::string(status.message()),
                  AllOf(HasSubstr("send of 67108864 bytes"),
                        HasSubstr(absl::StrCat("to rank ", 1 - rank)),
                        HasSubstr("timed out after 2s"),
                        HasSubstr("post the receive before the send")));
      // The communicator is broken (its connection to the peer is mid-frame): later calls
      // fail at once instead of waiting again.
      int64_t again = NowNanos();
      EXPECT_FALSE((*comm)->Barrier()->Wait().ok());
      EXPECT_LT(SecondsSince(again), 0.5);
    }
    if (rank == 0) {
      auto other = bootstrap.Get("outcome/1", absl::Seconds(10));
      ASSERT_TRUE(other.ok()) << other.status();
      EXPECT_TRUE(!status.ok() || *other == "timeout") << "neither send timed out";
    }
  });
}

// A receive nobody sends to, waited for without a timeout of the wait's own: the operation's
// timeout ends it. On shared memory and on TCP; from a specific rank and from any.
class ReceiveTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReceiveTest, UnmatchedReceiveTimesOut) {
  testing::RunRanks(2, [layout = GetParam()](int rank, int size, Bootstrap& bootstrap) {
    SetLayout(layout);
    auto comm = Communicator::Create(bootstrap, rank, size,
                                     {.name = "recv", .timeout = absl::Seconds(30)});
    ASSERT_TRUE(comm.ok()) << comm.status();
    if (rank == 1) {
      ASSERT_TRUE(bootstrap.Get("rank0-done", absl::Seconds(30)).ok());
      return;
    }
    std::vector<char> buffer(1024);
    RecvOptions receive;
    receive.data = buffer.data();
    receive.count = buffer.size();
    receive.peer = 1;
    receive.timeout = absl::Seconds(1);  // the call's own timeout beats the communicator's
    ExpectBounded("Work::Wait() of a receive", 1.0, [&] { return (*comm)->Recv(receive)->Wait(); })
        .IgnoreError();
    ASSERT_TRUE(bootstrap.Set("rank0-done", "1").ok());
  });
}

INSTANTIATE_TEST_SUITE_P(Layouts, ReceiveTest, ::testing::Values("shm", "tcp"));

// Work::Wait(timeout) returns at its own timeout while the operation goes on.
TEST(BoundedWaits, WaitWithTimeoutReturnsWhileTheOperationRuns) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = Communicator::Create(bootstrap, rank, size,
                                     {.name = "wait", .timeout = absl::Seconds(30)});
    ASSERT_TRUE(comm.ok()) << comm.status();
    if (rank == 1) {
      ASSERT_TRUE(bootstrap.Get("rank0-waited", absl::Seconds(30)).ok());
    }
    std::vector<float> data(16, 1.0f);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = data.size();
    auto work = (*comm)->Allreduce(options);
    if (rank == 0) {
      absl::Status status = ExpectBounded("Work::Wait(1s)", 1.0,
                                          [&] { return work->Wait(absl::Seconds(1)); });
      EXPECT_THAT(std::string(status.message()), HasSubstr("still running"));
      ASSERT_TRUE(bootstrap.Set("rank0-waited", "1").ok());
    }
    // Rank 1 joins late: the allreduce then completes on both.
    absl::Status status = work->Wait();
    EXPECT_TRUE(status.ok()) << status;
  });
}

// Every blocking collective with a peer that never calls it, on shared memory (the lane) and
// TCP: the call returns at the communicator's timeout.
using CollectiveParam = std::tuple<std::string, std::string>;
class BlockingCollectiveTest : public ::testing::TestWithParam<CollectiveParam> {};

TEST_P(BlockingCollectiveTest, AbsentPeerTimesOut) {
  auto [op, layout] = GetParam();
  testing::RunRanks(2, [op = op, layout = layout](int rank, int size, Bootstrap& bootstrap) {
    SetLayout(layout);
    auto comm = Communicator::Create(bootstrap, rank, size,
                                     {.name = "absent", .timeout = absl::Seconds(1)});
    ASSERT_TRUE(comm.ok()) << comm.status();
    if (rank == 1) {
      ASSERT_TRUE(bootstrap.Get("rank0-done", absl::Seconds(30)).ok());
      return;
    }
    std::vector<float> input(4096, 1.0f), output(2 * 4096, 0.0f);
    auto run = [&]() -> std::shared_ptr<Work> {
      if (op == "allreduce") {
        AllreduceOptions options;
        options.input = input.data();
        options.output = output.data();
        options.count = input.size();
        options.blocking = true;
        return (*comm)->Allreduce(options);
      }
      if (op == "broadcast") {
        BroadcastOptions options;
        options.input = input.data();
        options.output = output.data();
        options.count = input.size();
        options.root = 1;
        options.blocking = true;
        return (*comm)->Broadcast(options);
      }
      if (op == "allgather") {
        AllgatherOptions options;
        options.input = input.data();
        options.output = output.data();
        options.count = input.size();
        options.blocking = true;
        return (*comm)->Allgather(options);
      }
      BarrierOptions options;
      options.blocking = true;
      return (*comm)->Barrier(options);
    };
    absl::Status status = ExpectBounded(op, 1.0, [&] { return run()->status(); });
    EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("timed out"), HasSubstr("rank 1")));
    ASSERT_TRUE(bootstrap.Set("rank0-done", "1").ok());
  });
}

INSTANTIATE_TEST_SUITE_P(
    Ops, BlockingCollectiveTest,
    ::testing::Combine(::testing::Values("allreduce", "broadcast", "allgather", "barrier"),
                       ::testing::Values("shm", "tcp")),
    [](const ::testing::TestParamInfo<CollectiveParam>& info) {
      return std::get<0>(info.param) + "_" + std::get<1>(info.param);
    });

// Creation waits for every rank to publish its address: a rank that never comes fails it at
// the communicator's timeout.
TEST(BoundedWaits, CreateWithAMissingRankTimesOut) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    if (rank == 1) {
      ASSERT_TRUE(bootstrap.Get("rank0-done", absl::Seconds(30)).ok());
      return;
    }
    ExpectBounded("Communicator::Create", 1.0, [&] {
      return Communicator::Create(bootstrap, rank, size,
                                  {.name = "missing", .timeout = absl::Seconds(1)})
          .status();
    }).IgnoreError();
    ASSERT_TRUE(bootstrap.Set("rank0-done", "1").ok());
  });
}

// -------------------------------------------------------------------------------------------
// The store client, against a store server whose process is stopped (SIGSTOP): connected and
// authenticated, it never answers again.

class FrozenStore {
 public:
  FrozenStore() {
    int ports[2];
    if (pipe(ports) != 0) return;
    fflush(stdout);
    fflush(stderr);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      close(ports[0]);
      store::StoreServerOptions options;
      options.host = "127.0.0.1";
      options.job_id = "frozen";
      options.token = "secret";
      auto server = store::StoreServer::Start(options);
      int port = server.ok() ? (*server)->port() : -1;
      if (write(ports[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
      while (true) pause();
    }
    close(ports[1]);
    if (read(ports[0], &port_, sizeof(port_)) != sizeof(port_)) port_ = -1;
    close(ports[0]);
  }
  ~FrozenStore() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  // Stops the server's process, returning once it is stopped (a signal arrives when it may).
  void Freeze() {
    kill(pid_, SIGSTOP);
    int status = 0;
    waitpid(pid_, &status, WUNTRACED);
  }

  std::unique_ptr<store::StoreClient> Client(absl::Duration timeout) {
    store::StoreClientOptions options;
    options.host = "127.0.0.1";
    options.port = port_;
    options.job_id = "frozen";
    options.token = "secret";
    options.timeout = timeout;
    options.connect_timeout = timeout;
    auto client = store::StoreClient::Connect(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

 private:
  pid_t pid_ = -1;
  int port_ = -1;
};

TEST(BoundedWaits, EveryStoreOperationTimesOutOnAStoppedStore) {
  FrozenStore frozen;
  ASSERT_GT(frozen.port(), 0);
  auto client = frozen.Client(absl::Seconds(1));
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("present", "1").ok());
  frozen.Freeze();
  using Call = std::pair<std::string, std::function<absl::Status()>>;
  const std::vector<Call> calls = {
      {"set", [&] { return client->Set("k", "v"); }},
      {"get", [&] { return client->Get("k").status(); }},
      {"get with a timeout", [&] { return client->Get("k", absl::Seconds(1)).status(); }},
      {"wait", [&] { return client->Wait({"a", "b"}); }},
      {"wait with a timeout", [&] { return client->Wait({"a"}, absl::Seconds(1)); }},
      {"add", [&] { return client->Add("n", 1).status(); }},
      {"compare_set", [&] { return client->CompareSet("k", "", "v").status(); }},
      {"delete", [&] { return client->Delete("k").status(); }},
      {"list", [&] { return client->List("").status(); }},
      {"num_keys", [&] { return client->NumKeys().status(); }},
      {"ping", [&] { return client->Ping(); }},
  };
  for (const auto& [what, call] : calls) {
    absl::Status status = ExpectBounded(what, 1.0, call);
    EXPECT_THAT(std::string(status.message()), HasSubstr("did not answer")) << what;
  }
}

// Connecting to a store that accepts the connection (the kernel's backlog does) but never runs
// the handshake.
TEST(BoundedWaits, StoreConnectTimesOutOnASilentServer) {
  FrozenStore frozen;
  ASSERT_GT(frozen.port(), 0);
  frozen.Freeze();
  ExpectBounded("StoreClient::Connect", 1.0, [&] {
    store::StoreClientOptions options;
    options.host = "127.0.0.1";
    options.port = frozen.port();
    options.job_id = "frozen";
    options.token = "secret";
    options.connect_timeout = absl::Seconds(1);
    return store::StoreClient::Connect(options).status();
  }).IgnoreError();
}

// -------------------------------------------------------------------------------------------
// The rendezvous: a join that no round admits returns at its timeout; so does one whose store
// stops answering.

TEST(BoundedWaits, RendezvousJoinTimesOut) {
  store::StoreServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.job_id = "job";
  server_options.token = "secret";
  auto server = store::StoreServer::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();
  elastic::RendezvousSettings settings;
  settings.min_nodes = 2;  // never reached: only one agent joins
  settings.max_nodes = 2;
  settings.join_timeout = absl::Seconds(60);
  settings.read_timeout = absl::Seconds(1);
  settings.heartbeat_interval = absl::Milliseconds(100);
  elastic::CoordinatorOptions coordinator_options;
  coordinator_options.store_port = (*server)->port();
  coordinator_options.job_id = "job";
  coordinator_options.token = "secret";
  coordinator_options.settings = settings;
  coordinator_options.worker_store_listen_host = "127.0.0.1";
  auto coordinator = elastic::Coordinator::Start(coordinator_options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  elastic::AgentClientOptions options;
  options.store_host = "127.0.0.1";
  options.store_port = (*server)->port();
  options.job_id = "job";
  options.token = "secret";
  options.settings = settings;
  auto agent = elastic::AgentClient::Connect(options, "lonely-id");
  ASSERT_TRUE(agent.ok()) << agent.status();
  elastic::NodeInfo info;
  info.node_id = "lonely-id";
  info.host = "lonely";
  info.address = "127.0.0.1";
  info.master_port = 1000;
  absl::Status status = ExpectBounded("AgentClient::Join", 1.0, [&] {
    return (*agent)->Join(info, absl::Seconds(1), nullptr).status();
  });
  EXPECT_THAT(std::string(status.message()), HasSubstr("not admitted to the job within 1s"));
  agent->reset();
  (*coordinator)->RequestStop();
  (*server)->Stop();
}

TEST(BoundedWaits, RendezvousJoinTimesOutOnAStoppedStore) {
  FrozenStore frozen;
  ASSERT_GT(frozen.port(), 0);
  elastic::RendezvousSettings settings;
  settings.read_timeout = absl::Seconds(1);
  settings.heartbeat_interval = absl::Milliseconds(100);
  elastic::AgentClientOptions options;
  options.store_host = "127.0.0.1";
  options.store_port = frozen.port();
  options.job_id = "frozen";
  options.token = "secret";
  options.settings = settings;
  options.connect_timeout = absl::Seconds(1);
  auto agent = elastic::AgentClient::Connect(options, "frozen-id");
  ASSERT_TRUE(agent.ok()) << agent.status();
  frozen.Freeze();
  elastic::NodeInfo info;
  info.node_id = "frozen-id";
  info.host = "frozen";
  ExpectBounded("AgentClient::Join", 1.0,
                [&] { return (*agent)->Join(info, absl::Seconds(1), nullptr).status(); })
      .IgnoreError();
}

}  // namespace
}  // namespace cohort
