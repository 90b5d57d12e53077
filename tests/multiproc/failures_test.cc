// Failure paths: ranks that issue different collectives, a rank killed mid-allreduce, a rank
// that never shows up, abort from another thread, bad arguments. Each must end in an error
// that names what happened and where, within seconds, never a hang.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "collectives/transport/channel.h"
#include "collectives/transport/ucx/options.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::unique_ptr<Communicator> MustCreate(Bootstrap& bootstrap, int rank, int size,
                                         absl::Duration timeout = absl::Seconds(30),
                                         const std::string& transports = "") {
  CommOptions options{.name = "f", .timeout = timeout};
  if (!transports.empty()) options.transports = *ParseChannelKinds(transports);
  auto comm = Communicator::Create(bootstrap, rank, size, options);
  if (!comm.ok()) {
    ADD_FAILURE() << comm.status();
    return nullptr;
  }
  for (int peer = 0; peer < size && !transports.empty(); ++peer) {
    if (peer == rank) continue;
    EXPECT_EQ(ChannelKindName((*comm)->channel_kind(peer)), transports) << "peer " << peer;
  }
  return std::move(*comm);
}

// The failures every channel must report alike (the protocol's errors): run on the default
// channels of one host (shared memory), on TCP and on UCX.
class ChannelFailures : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "ucx" && !ucx::Built()) {
      GTEST_SKIP() << "this build has no UCX (libucx-dev was not found at configure time)";
    }
  }
  // "" for the default list.
  std::string transports() const { return GetParam() == "default" ? "" : GetParam(); }
};

absl::Status RunAllreduce(Communicator& comm, std::vector<float>& data, size_t count) {
  AllreduceOptions options;
  options.input = data.data();
  options.output = data.data();
  options.count = count;
  return comm.Allreduce(options)->Wait();
}

TEST_P(ChannelFailures, DifferentCollectivesNameBothSides) {
  testing::RunRanks(3, [transports = transports()](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(30), transports);
    ASSERT_NE(comm, nullptr);
    std::vector<float> data(1000, 1.0f);
    absl::Status status;
    if (rank == 1) {
      BroadcastOptions options;
      options.output = data.data();
      options.count = 1000;
      options.root = 0;
      status = comm->Broadcast(options)->Wait();
    } else {
      status = RunAllreduce(*comm, data, 1000);
    }
    ASSERT_FALSE(status.ok());
    // Every rank learns of the mismatch, and the message names both calls.
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("collective mismatch"), HasSubstr("allreduce(float32 x 1000, sum)"),
                      HasSubstr("broadcast(float32 x 1000, root 0)")));
    // The communicator is unusable afterwards, and says why.
    absl::Status next = comm->Barrier()->Wait();
    EXPECT_THAT(std::string(next.message()), HasSubstr("collective mismatch"));
  });
}

TEST_P(ChannelFailures, DifferentCountsNameBothSides) {
  testing::RunRanks(2, [transports = transports()](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(30), transports);
    ASSERT_NE(comm, nullptr);
    std::vector<float> data(2000, 1.0f);
    absl::Status status = RunAllreduce(*comm, data, rank == 0 ? 1000 : 1001);
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("allreduce(float32 x 1000, sum)"),
                      HasSubstr("allreduce(float32 x 1001, sum)"), HasSubstr("rank 0"),
                      HasSubstr("rank 1")));
  });
}

TEST(Mismatch, DifferentRootsAndTypes) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    std::vector<double> data(64, 1.0);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = 64;
    options.dtype = rank == 0 ? DataType::kFloat64 : DataType::kInt64;
    absl::Status status = comm->Allreduce(options)->Wait();
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("float64"), HasSubstr("int64"), HasSubstr("mismatch")));
  });
}

// Ranks 0, 1 and 3 keep running allreduces; the test kills rank 2 in the middle of one and
// every survivor must fail within 5 s with an error naming rank 2.
TEST_P(ChannelFailures, KilledRankFailsEveryOtherRankQuickly) {
  const int size = 4;
  testing::RankGroup group;
  group.Start(size, [transports = transports()](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(30), transports);
    ASSERT_NE(comm, nullptr);
    std::vector<float> data(4 << 20, 1.0f);  // 16 MiB: each allreduce takes a while
    ASSERT_TRUE(RunAllreduce(*comm, data, data.size()).ok());
    ASSERT_TRUE(bootstrap.Set(absl::StrCat("started/", rank), "1").ok());
    absl::Status status;
    for (int iteration = 0; iteration < 100000 && status.ok(); ++iteration) {
      status = RunAllreduce(*comm, data, data.size());
    }
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()), HasSubstr("rank 2"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("lost connection"));
  });
  Bootstrap& store = group.store();
  for (int rank = 0; rank < size; ++rank) {
    ASSERT_TRUE(store.Get(absl::StrCat("started/", rank), absl::Seconds(60)).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // land inside an allreduce
  ASSERT_EQ(kill(group.pid(2), SIGKILL), 0);
  auto killed_at = std::chrono::steady_clock::now();
  std::vector<testing::RankExit> exits = group.Join(absl::Seconds(5));
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_LT(seconds, 5.0);
  EXPECT_EQ(exits[2].signal, SIGKILL);
  for (int rank : {0, 1, 3}) {
    EXPECT_TRUE(exits[rank].ok()) << "rank " << rank << " exit " << exits[rank].exit_code
                                  << " signal " << exits[rank].signal;
  }
}

TEST_P(ChannelFailures, AbsentPeerTimesOutNamingIt) {
  testing::RunRanks(2, [transports = transports()](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(1), transports);
    ASSERT_NE(comm, nullptr);
    std::vector<float> data(16, 1.0f);
    if (rank == 0) {
      auto start = std::chrono::steady_clock::now();
      absl::Status status = RunAllreduce(*comm, data, 16);
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
      EXPECT_THAT(std::string(status.message()),
                  AllOf(HasSubstr("timed out after 1s"), HasSubstr("rank 1")));
      EXPECT_GE(seconds, 0.9);
      EXPECT_LT(seconds, 3.0);
      ASSERT_TRUE(bootstrap.Set("rank0-done", "1").ok());
    } else {
      // Stays alive without calling the collective until rank 0 has timed out.
      ASSERT_TRUE(bootstrap.Get("rank0-done", absl::Seconds(30)).ok());
    }
  });
}

TEST_P(ChannelFailures, AbortFromAnotherThreadFailsPendingWork) {
  testing::RunRanks(2, [transports = transports()](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(30), transports);
    ASSERT_NE(comm, nullptr);
    if (rank == 1) {
      // Never sends: rank 0's receive stays pending until aborted.
      ASSERT_TRUE(bootstrap.Get("rank0-done", absl::Seconds(30)).ok());
      return;
    }
    std::vector<char> buffer(16);
    RecvOptions options;
    options.data = buffer.data();
    options.count = buffer.size();
    options.peer = 1;
    auto work = comm->Recv(options);
    std::thread aborter([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      comm->Abort(absl::CancelledError("test aborts"));
    });
    absl::Status status = work->Wait(absl::Seconds(10));
    aborter.join();
    EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("test aborts"));
    EXPECT_FALSE(comm->Barrier()->Wait().ok());
    ASSERT_TRUE(bootstrap.Set("rank0-done", "1").ok());
  });
}

TEST(Arguments, BadArgumentsFailTheCallOnly) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    std::vector<float> data(8, 1.0f);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = 8;
    options.op = ReduceOp::kBxor;  // not defined for float32
    absl::Status status = comm->Allreduce(options)->Wait();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("bxor"), HasSubstr("float32")));
    BroadcastOptions broadcast;
    broadcast.output = data.data();
    broadcast.count = 8;
    broadcast.root = 5;
    status = comm->Broadcast(broadcast)->Wait();
    EXPECT_THAT(std::string(status.message()), HasSubstr("root 5 is not a rank"));
    options.op = ReduceOp::kSum;
    options.algorithm = "no_such_algorithm";
    status = comm->Allreduce(options)->Wait();
    EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("no_such_algorithm"), HasSubstr("ring")));
    // The communicator still works.
    options.algorithm = "";
    EXPECT_TRUE(comm->Allreduce(options)->Wait().ok());
    EXPECT_EQ(data[0], 2.0f);
  });
}

TEST(Config, BadEnvironmentValueStopsCreation) {
  testing::RunRanks(1, [](int rank, int size, Bootstrap& bootstrap) {
    setenv("COHORT_TIMEOUT", "soon", 1);
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "bad"});
    ASSERT_FALSE(comm.ok());
    EXPECT_THAT(std::string(comm.status().message()),
                AllOf(HasSubstr("COHORT_TIMEOUT"), HasSubstr("soon"), HasSubstr("duration")));
    unsetenv("COHORT_TIMEOUT");
    setenv("COHORT_ALGO", "fastest", 1);
    comm = Communicator::Create(bootstrap, rank, size, {.name = "bad2"});
    ASSERT_FALSE(comm.ok());
    EXPECT_THAT(std::string(comm.status().message()),
                AllOf(HasSubstr("COHORT_ALGO"), HasSubstr("fastest"), HasSubstr("ring")));
  });
}

TEST_P(ChannelFailures, CleanShutdownIsNotALostPeer) {
  // Rank 0 leaves as soon as its part of the barrier is done; the others must not mistake its
  // close for a crash.
  testing::RunRanks(4, [transports = transports()](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(30), transports);
    ASSERT_NE(comm, nullptr);
    for (int i = 0; i < 20; ++i) {
      absl::Status status = comm->Barrier()->Wait();
      ASSERT_TRUE(status.ok()) << status;
    }
    if (rank != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20 * rank));
    comm.reset();
  });
}

INSTANTIATE_TEST_SUITE_P(Channels, ChannelFailures,
                         ::testing::Values("default", "tcp", "ucx"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace cohort

namespace cohort {
namespace {

// Shared-memory segments leave /dev/shm as soon as every local rank has mapped them, so a crash
// (here: SIGKILL of a rank right after creation) leaves nothing behind.
TEST(SharedMemory, SegmentsAreUnlinkedOnceMapped) {
  // Segments are named /cohort-<pid>-<random>: look only at this group's (other tests running
  // alongside make and unlink their own).
  auto named = [](const testing::RankGroup& group, int size) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
      std::string name = entry.path().filename();
      for (int rank = 0; rank < size; ++rank) {
        if (name.rfind(absl::StrCat("cohort-", group.pid(rank), "-"), 0) == 0) {
          names.push_back(name);
        }
      }
    }
    return names;
  };
  testing::RankGroup group;
  group.Start(3, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "shm"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    ASSERT_TRUE((*comm)->Barrier()->Wait().ok());
    ASSERT_TRUE(bootstrap.Set(absl::StrCat("ready/", rank), "1").ok());
    ASSERT_TRUE(bootstrap.Get("checked", absl::Seconds(60)).ok());
  });
  Bootstrap& store = group.store();
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(store.Get(absl::StrCat("ready/", rank), absl::Seconds(60)).ok());
  }
  EXPECT_THAT(named(group, 3), ::testing::IsEmpty())
      << "segments still named in /dev/shm while the ranks run";
  kill(group.pid(1), SIGKILL);
  ASSERT_TRUE(store.Set("checked", "1").ok());
  group.Join(absl::Seconds(30));
  EXPECT_THAT(named(group, 3), ::testing::IsEmpty())
      << "segments left in /dev/shm after the ranks ended";
}

}  // namespace
}  // namespace cohort

