// The lane (shared staging slots for one-host collectives): when the tuner takes it, that every
// op it serves gives exact results in both halves, in and out of place, with forced one-shot and
// two-shot allreduce, and that a lost, absent or aborted peer or a mismatching call ends a lane
// wait with an error naming it.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/algorithms/registry.h"
#include "collectives/communicator.h"
#include "collectives/reduce.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::unique_ptr<Communicator> MustCreate(Bootstrap& bootstrap, int rank, int size,
                                         absl::Duration timeout = absl::Seconds(60),
                                         const std::string& algorithm = "") {
  auto comm = Communicator::Create(bootstrap, rank, size,
                                   {.name = "lane", .timeout = timeout, .algorithm = algorithm});
  if (!comm.ok()) {
    ADD_FAILURE() << comm.status();
    return nullptr;
  }
  return std::move(*comm);
}

OpArgs Args(OpType op, size_t count, DataType dtype = DataType::kFloat32) {
  OpArgs args;
  args.op = op;
  args.count = count;
  args.dtype = dtype;
  args.root = 0;
  return args;
}

TEST(LaneChoice, TunerTakesTheLaneOnOneHostForWhatFits) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    setenv("COHORT_SHM_LANE_BYTES", "1M", 1);
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    EXPECT_EQ(comm->ChosenAlgorithm(Args(OpType::kAllreduce, 2)), "lane_one_shot");
    EXPECT_EQ(comm->ChosenAlgorithm(Args(OpType::kBroadcast, 1000)), "lane");
    EXPECT_EQ(comm->ChosenAlgorithm(Args(OpType::kBarrier, 0)), "lane");
    EXPECT_EQ(comm->ChosenAlgorithm(Args(OpType::kAllgather, 1000)), "lane");
    // 1 MiB per rank fits exactly; 8 MiB does not, but the two-shot allreduce streams it
    // through the slot in pieces; a broadcast that big takes another algorithm.
    EXPECT_THAT(comm->ChosenAlgorithm(Args(OpType::kAllreduce, 1 << 18)), HasSubstr("lane"));
    EXPECT_EQ(comm->ChosenAlgorithm(Args(OpType::kAllreduce, 2 << 20)), "lane_two_shot");
    EXPECT_THAT(comm->ChosenAlgorithm(Args(OpType::kBroadcast, 2 << 20)),
                ::testing::Not(HasSubstr("lane")));
    // Per-peer alltoall splits differ between ranks: never decided through the lane.
    OpArgs split = Args(OpType::kAlltoall, 0);
    split.counts = {1, 2};
    split.recv_counts = {1, 2};
    EXPECT_THAT(comm->ChosenAlgorithm(split), ::testing::Not(HasSubstr("lane")));
  });
}

// More ranks than CPUs: every stage waits for each rank of a CPU to run, so stages weigh more.
TEST(LaneChoice, StagesWeighMoreWhenRanksOutnumberCpus) {
  EXPECT_EQ(OversubscriptionFactor(1, 1), 1.0);
  EXPECT_EQ(OversubscriptionFactor(2, 2), 1.0);
  EXPECT_EQ(OversubscriptionFactor(2, 16), 1.0);
  EXPECT_EQ(OversubscriptionFactor(3, 2), 4.0);
  EXPECT_EQ(OversubscriptionFactor(4, 2), 4.0);
  EXPECT_EQ(OversubscriptionFactor(16, 4), 8.0);
  EXPECT_EQ(OversubscriptionFactor(4, 0), 8.0);  // an unknown CPU count counts as one
}

TEST(LaneChoice, NoLaneWhenTurnedOffOrAcrossHosts) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    setenv("COHORT_SHM_LANE_BYTES", "0", 1);
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    EXPECT_THAT(comm->ChosenAlgorithm(Args(OpType::kAllreduce, 2)),
                ::testing::Not(HasSubstr("lane")));
  });
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    setenv("COHORT_HOST_ID", rank < 2 ? "hostA" : "hostB", 1);
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    EXPECT_THAT(comm->ChosenAlgorithm(Args(OpType::kAllreduce, 2)),
                ::testing::Not(HasSubstr("lane")));
    // The collectives still work without it.
    std::vector<float> data(5, static_cast<float>(rank));
    AllreduceOptions options;
    options.input = options.output = data.data();
    options.count = data.size();
    ASSERT_TRUE(comm->Allreduce(options)->Wait().ok());
    EXPECT_EQ(data[4], 6.0f);
  });
}

// Exactly representable inputs: rank r, element i.
float Value(int rank, size_t i) { return static_cast<float>((rank * 7 + i) % 13); }

// world, forced algorithm ("" = tuner), elements per rank.
using LaneParam = std::tuple<int, std::string, size_t>;

class LaneOps : public ::testing::TestWithParam<LaneParam> {};

TEST_P(LaneOps, EveryOpIsExactInBothHalves) {
  // Not a structured binding: the lambda captures these (clang 14 cannot capture bindings).
  const int world = std::get<0>(GetParam());
  const auto algorithm = std::get<1>(GetParam());
  const auto count = std::get<2>(GetParam());
  testing::RunRanks(world, [&](int rank, int n, Bootstrap& bootstrap) {
    setenv("COHORT_SHM_LANE_BYTES", "64K", 1);
    auto comm = MustCreate(bootstrap, rank, n, absl::Seconds(60), algorithm);
    ASSERT_NE(comm, nullptr);
    for (int round = 0; round < 3; ++round) {  // both halves, then the first again
      SCOPED_TRACE(absl::StrCat("round ", round));
      const bool in_place = round == 1;
      // allreduce: sum and avg (float), max (int32).
      {
        std::vector<float> input(count), output(count, -1);
        for (size_t i = 0; i < count; ++i) input[i] = Value(rank, i) + round;
        AllreduceOptions options;
        options.input = input.data();
        options.output = in_place ? input.data() : output.data();
        options.count = count;
        ASSERT_TRUE(comm->Allreduce(options)->Wait().ok());
        const std::vector<float>& got = in_place ? input : output;
        for (size_t i = 0; i < count; ++i) {
          float expected = 0;
          for (int r = 0; r < n; ++r) expected += Value(r, i) + round;
          ASSERT_EQ(got[i], expected) << "allreduce element " << i;
        }
        std::vector<int32_t> ints(count);
        for (size_t i = 0; i < count; ++i) ints[i] = static_cast<int32_t>(Value(rank, i)) - rank;
        AllreduceOptions maximum;
        maximum.input = maximum.output = ints.data();
        maximum.count = count;
        maximum.dtype = DataType::kInt32;
        maximum.op = ReduceOp::kMax;
        ASSERT_TRUE(comm->Allreduce(maximum)->Wait().ok());
        for (size_t i = 0; i < count; ++i) {
          int32_t expected = INT32_MIN;
          for (int r = 0; r < n; ++r) {
            expected = std::max(expected, static_cast<int32_t>(Value(r, i)) - r);
          }
          ASSERT_EQ(ints[i], expected) << "max element " << i;
        }
        std::vector<float> mean(count, static_cast<float>(rank * 2));
        AllreduceOptions average;
        average.input = average.output = mean.data();
        average.count = count;
        average.op = ReduceOp::kAvg;
        ASSERT_TRUE(comm->Allreduce(average)->Wait().ok());
        ASSERT_EQ(mean[count - 1], static_cast<float>(n - 1));
      }
      // broadcast from the last rank.
      {
        std::vector<float> data(count, -1);
        if (rank == n - 1) {
          for (size_t i = 0; i < count; ++i) data[i] = Value(n - 1, i) + round;
        }
        BroadcastOptions options;
        options.input = options.output = data.data();
        options.count = count;
        options.root = n - 1;
        ASSERT_TRUE(comm->Broadcast(options)->Wait().ok());
        for (size_t i = 0; i < count; ++i) ASSERT_EQ(data[i], Value(n - 1, i) + round);
      }
      // reduce to rank 0.
      {
        std::vector<float> input(count), output(count, -1);
        for (size_t i = 0; i < count; ++i) input[i] = Value(rank, i);
        ReduceOptions options;
        options.input = input.data();
        options.output = output.data();
        options.count = count;
        options.root = 0;
        ASSERT_TRUE(comm->Reduce(options)->Wait().ok());
        if (rank == 0) {
          for (size_t i = 0; i < count; ++i) {
            float expected = 0;
            for (int r = 0; r < n; ++r) expected += Value(r, i);
            ASSERT_EQ(output[i], expected) << "reduce element " << i;
          }
        }
      }
      // allgather, gather, reduce_scatter, scatter, alltoall: blocks of `block` elements.
      const size_t block = std::max<size_t>(1, count / n);
      {
        std::vector<float> all(block * n, -1), mine(block);
        for (size_t i = 0; i < block; ++i) mine[i] = Value(rank, i);
        AllgatherOptions options;
        options.input = in_place ? all.data() + rank * block : mine.data();
        if (in_place) std::copy(mine.begin(), mine.end(), all.begin() + rank * block);
        options.output = all.data();
        options.count = block;
        ASSERT_TRUE(comm->Allgather(options)->Wait().ok());
        for (int r = 0; r < n; ++r) {
          for (size_t i = 0; i < block; ++i) ASSERT_EQ(all[r * block + i], Value(r, i));
        }
        std::vector<float> gathered(block * n, -1);
        GatherOptions gather;
        gather.input = mine.data();
        gather.output = gathered.data();
        gather.count = block;
        gather.root = n - 1;
        ASSERT_TRUE(comm->Gather(gather)->Wait().ok());
        if (rank == n - 1) {
          EXPECT_EQ(gathered, all);
        }
      }
      {
        std::vector<float> input(block * n), output(block, -1);
        for (size_t i = 0; i < input.size(); ++i) input[i] = Value(rank, i);
        ReduceScatterOptions options;
        options.input = input.data();
        options.output = output.data();
        options.count = block;
        ASSERT_TRUE(comm->ReduceScatter(options)->Wait().ok());
        for (size_t i = 0; i < block; ++i) {
          float expected = 0;
          for (int r = 0; r < n; ++r) expected += Value(r, rank * block + i);
          ASSERT_EQ(output[i], expected) << "reduce_scatter element " << i;
        }
        std::vector<float> piece(block, -1);
        ScatterOptions scatter;
        scatter.input = input.data();  // read at the root (rank 0) only
        scatter.output = piece.data();
        scatter.count = block;
        scatter.root = 0;
        ASSERT_TRUE(comm->Scatter(scatter)->Wait().ok());
        for (size_t i = 0; i < block; ++i) ASSERT_EQ(piece[i], Value(0, rank * block + i));
      }
      {
        // Rank r sends value 100 r + peer to each peer.
        std::vector<float> input(block * n), output(block * n, -1);
        for (int peer = 0; peer < n; ++peer) {
          for (size_t i = 0; i < block; ++i) input[peer * block + i] = 100.0f * rank + peer + i;
        }
        AlltoallOptions options;
        options.input = input.data();
        options.output = in_place ? input.data() : output.data();
        options.count = block;
        ASSERT_TRUE(comm->Alltoall(options)->Wait().ok());
        const std::vector<float>& got = in_place ? input : output;
        for (int peer = 0; peer < n; ++peer) {
          for (size_t i = 0; i < block; ++i) {
            ASSERT_EQ(got[peer * block + i], 100.0f * peer + rank + i) << "alltoall from " << peer;
          }
        }
      }
      ASSERT_TRUE(comm->Barrier()->Wait().ok());
    }
  });
}

INSTANTIATE_TEST_SUITE_P(
    Worlds, LaneOps,
    ::testing::Combine(::testing::Values(2, 3, 4),
                       ::testing::Values(std::string(""), std::string("lane_one_shot"),
                                         std::string("lane_two_shot"), std::string("lane")),
                       // 64 KiB slots: 1031 floats fit every op; 16384 floats (64 KiB) fit the
                       // allreduce but not the alltoall/reduce_scatter input (other algorithms).
                       ::testing::Values(size_t{1}, size_t{1031}, size_t{16384})),
    [](const ::testing::TestParamInfo<LaneParam>& info) {
      const std::string& algorithm = std::get<1>(info.param);
      return absl::StrCat(std::get<0>(info.param), "ranks_",
                          algorithm.empty() ? "auto" : algorithm, "_", std::get<2>(info.param));
    });

// Out of place, a result larger than each rank's share of the last-level cache is streamed out
// of the slots (non-temporal stores): still exact, in every piece, with an odd length whose
// blocks end mid-line, and the output around it untouched.
TEST(LaneTwoShot, StreamedResultIsExact) {
  const int n = 2;
  const size_t threshold = LastLevelCacheBytes() / (2 * n);
  if (threshold > (size_t{256} << 20)) GTEST_SKIP() << "last-level cache too large to exceed here";
  const size_t count = threshold / sizeof(float) + 4097;
  testing::RunRanks(n, [&](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(60), "lane_two_shot");
    ASSERT_NE(comm, nullptr);
    std::vector<float> input(count), output(count + 16, -1.0f);
    for (size_t i = 0; i < count; ++i) input[i] = Value(rank, i);
    for (int round = 0; round < 2; ++round) {
      AllreduceOptions options;
      options.input = input.data();
      options.output = output.data() + 8;
      options.count = count;
      ASSERT_TRUE(comm->Allreduce(options)->Wait().ok());
      for (size_t i = 0; i < count; ++i) {
        ASSERT_EQ(output[i + 8], Value(0, i) + Value(1, i)) << "element " << i;
      }
      for (size_t i = 0; i < 8; ++i) {
        ASSERT_EQ(output[i], -1.0f);
        ASSERT_EQ(output[count + 8 + i], -1.0f);
      }
    }
  });
}

TEST(LaneFailures, KilledPeerEndsTheWaitNamingIt) {
  testing::RankGroup group;
  group.Start(3, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    ASSERT_TRUE(comm->Barrier()->Wait().ok());
    if (rank == 2) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the others are waiting
      raise(SIGKILL);
    }
    std::vector<float> data(4, 1.0f);
    AllreduceOptions options;
    options.input = options.output = data.data();
    options.count = data.size();
    auto started = std::chrono::steady_clock::now();
    absl::Status status = comm->Allreduce(options)->Wait();
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("rank 2"), HasSubstr("allreduce")));
    EXPECT_LT(seconds, 1.3);  // 0.3 s until the kill, then well under a second
  });
  std::vector<testing::RankExit> exits = group.Join(absl::Seconds(30));
  EXPECT_EQ(exits[2].signal, SIGKILL);
  EXPECT_TRUE(exits[0].ok());
  EXPECT_TRUE(exits[1].ok());
}

TEST(LaneFailures, AbsentPeerTimesOutNamingIt) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, absl::Seconds(1));
    ASSERT_NE(comm, nullptr);
    if (rank == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      return;
    }
    absl::Status status = comm->Barrier()->Wait();
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("barrier"), HasSubstr("rank 1"), HasSubstr("COHORT_TIMEOUT")));
  });
}

TEST(LaneFailures, AbortEndsTheWait) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    if (rank == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
      return;
    }
    std::thread aborter([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      comm->Abort(absl::CancelledError("test abort"));
    });
    absl::Status status = comm->Barrier()->Wait();
    aborter.join();
    EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  });
}

TEST(LaneFailures, MismatchedRootsNameBothSides) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size);
    ASSERT_NE(comm, nullptr);
    std::vector<float> data(8, 1.0f);
    BroadcastOptions options;
    options.input = options.output = data.data();
    options.count = data.size();
    options.root = rank;  // each thinks it is the root
    absl::Status status = comm->Broadcast(options)->Wait();
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("mismatch"), HasSubstr("root 0"), HasSubstr("root 1")));
  });
}

}  // namespace
}  // namespace cohort
