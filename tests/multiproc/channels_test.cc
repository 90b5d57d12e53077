// Channels as the communicator chooses them: which kind serves each pair (asserted, not
// assumed), a forced kind that cannot connect a pair failing at creation with the pair named,
// and two communicators of one process running with different options side by side.
#include <chrono>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Allreduce of `count` floats (rank + i) in place; true when every element is the exact sum.
void ExpectAllreduce(Communicator& comm, size_t count) {
  std::vector<float> data(count);
  for (size_t i = 0; i < count; ++i) data[i] = static_cast<float>(comm.rank() + i % 7);
  AllreduceOptions options;
  options.input = data.data();
  options.output = data.data();
  options.count = count;
  ASSERT_TRUE(comm.Allreduce(options)->Wait().ok());
  const int n = comm.size();
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(data[i], static_cast<float>(n * (n - 1) / 2 + n * (i % 7))) << "at " << i;
  }
}

TEST(Channels, SharedMemoryInsideHostsTcpAcross) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    CommOptions options{.name = "layout"};
    options.host_id = rank < 2 ? "hostA" : "hostB";
    auto comm = Communicator::Create(bootstrap, rank, size, options);
    ASSERT_TRUE(comm.ok()) << comm.status();
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      ChannelKind expected =
          (peer < 2) == (rank < 2) ? ChannelKind::kSharedMemory : ChannelKind::kTcp;
      EXPECT_EQ((*comm)->channel_kind(peer), expected) << "rank " << rank << " peer " << peer;
    }
    ExpectAllreduce(**comm, 100000);
  });
}

TEST(Channels, DefaultOnOneHostIsSharedMemoryWithTheLane) {
  testing::RunRanks(3, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "onehost"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    for (int peer = 0; peer < size; ++peer) {
      if (peer != rank) {
        EXPECT_EQ((*comm)->channel_kind(peer), ChannelKind::kSharedMemory);
      }
    }
    OpArgs args;
    args.op = OpType::kAllreduce;
    args.count = 16;
    EXPECT_THAT((*comm)->ChosenAlgorithm(args), HasSubstr("lane"));
    ExpectAllreduce(**comm, 16);
  });
}

TEST(Channels, ForcedTcpOnOneHostHasNoLane) {
  testing::RunRanks(3, [](int rank, int size, Bootstrap& bootstrap) {
    CommOptions options{.name = "forcedtcp"};
    options.transports = {ChannelKind::kTcp};
    auto comm = Communicator::Create(bootstrap, rank, size, options);
    ASSERT_TRUE(comm.ok()) << comm.status();
    for (int peer = 0; peer < size; ++peer) {
      if (peer != rank) {
        EXPECT_EQ((*comm)->channel_kind(peer), ChannelKind::kTcp);
      }
    }
    OpArgs args;
    args.op = OpType::kAllreduce;
    args.count = 16;
    EXPECT_THAT((*comm)->ChosenAlgorithm(args), ::testing::Not(HasSubstr("lane")));
    ExpectAllreduce(**comm, 70000);
  });
}

TEST(Channels, ForcedKindThatCannotConnectAPairFailsNamingIt) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    CommOptions options{.name = "cannot"};
    options.host_id = rank == 0 ? "hostA" : "hostB";
    options.transports = {ChannelKind::kSharedMemory};
    auto start = std::chrono::steady_clock::now();
    auto comm = Communicator::Create(bootstrap, rank, size, options);
    ASSERT_FALSE(comm.ok());
    EXPECT_THAT(std::string(comm.status().message()),
                AllOf(HasSubstr("no channel can connect rank 0"), HasSubstr("rank 1"),
                      HasSubstr("different hosts"), HasSubstr("COHORT_TRANSPORTS")));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  });
}

TEST(Channels, EnvironmentFillsOnlyWhatOptionsLeaveUnset) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    setenv("COHORT_TRANSPORTS", "tcp", 1);
    CommOptions named{.name = "named"};
    named.transports = {ChannelKind::kSharedMemory};
    auto shm = Communicator::Create(bootstrap, rank, size, named);
    auto tcp = Communicator::Create(bootstrap, rank, size, {.name = "unset"});
    unsetenv("COHORT_TRANSPORTS");
    ASSERT_TRUE(shm.ok()) << shm.status();
    ASSERT_TRUE(tcp.ok()) << tcp.status();
    EXPECT_EQ((*shm)->channel_kind(1 - rank), ChannelKind::kSharedMemory);
    EXPECT_EQ((*tcp)->channel_kind(1 - rank), ChannelKind::kTcp);
  });
}

// Two communicators of one process with different channels, chunk sizes and timeouts: both
// give exact results interleaved, and a timeout on one fails it at its own timeout while the
// other goes on.
TEST(Channels, TwoCommunicatorsWithDifferentOptions) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    CommOptions fast{.name = "fast"};
    fast.transports = {ChannelKind::kSharedMemory};
    fast.chunk_bytes = 4096;
    fast.timeout = absl::Seconds(1);
    CommOptions slow{.name = "slow"};
    slow.transports = {ChannelKind::kTcp};
    slow.chunk_bytes = 1 << 20;
    slow.timeout = absl::Seconds(60);
    auto a = Communicator::Create(bootstrap, rank, size, fast);
    auto b = Communicator::Create(bootstrap, rank, size, slow);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*a)->channel_kind(1 - rank), ChannelKind::kSharedMemory);
    EXPECT_EQ((*b)->channel_kind(1 - rank), ChannelKind::kTcp);
    for (int round = 0; round < 3; ++round) {
      ExpectAllreduce(**a, 300000);
      ExpectAllreduce(**b, 300000);
    }
    // Rank 1 enters a barrier on `fast` that rank 0 never joins: it fails after about a second.
    if (rank == 1) {
      auto start = std::chrono::steady_clock::now();
      absl::Status status = (*a)->Barrier()->Wait();
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
      EXPECT_GT(seconds, 0.9);
      EXPECT_LT(seconds, 3.0);
    }
    // `slow` is untouched by that.
    ExpectAllreduce(**b, 1000);
  });
}

}  // namespace
}  // namespace cohort
