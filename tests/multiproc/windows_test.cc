// Ring collectives over windows: pieces put straight into the neighbour's memory where the
// channel of an edge offers a window (shm here), messages elsewhere (tcp), both in one ring when
// the layout mixes them. Results must be exact either way, and the path is asserted (puts were
// made, or none).
#include <chrono>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "collectives/transport/ucx/options.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

// 0: every rank on one host; 1: ranks {0,1,2} and {3,4} on two hosts (tcp edges between);
// 2: the same two hosts with UCX between them (COHORT_TRANSPORTS=shm,ucx: its window, emulated
// by UCX over its tcp and shared memory here, serves the edges across hosts).
using Param = std::tuple<std::string, int, bool>;  // op, layout, windows

class WindowTest : public ::testing::TestWithParam<Param> {};

int HostOf(int layout, int rank) { return layout == 0 ? 0 : (rank < 3 ? 0 : 1); }
const char* LayoutName(int layout) {
  return layout == 0 ? "_onehost" : layout == 1 ? "_twohosts" : "_twohosts_ucx";
}

TEST_P(WindowTest, RingIsExact) {
  auto [op, layout, windows] = GetParam();
  if (layout == 2 && !ucx::Built()) {
    GTEST_SKIP() << "this build has no UCX (libucx-dev was not found at configure time)";
  }
  const int world = layout == 0 ? 3 : 5;
  testing::RunRanks(world, [op = op, layout = layout, windows = windows](
                               int rank, int size, Bootstrap& bootstrap) {
    CommOptions options{.name = "windows"};
    options.host_id = absl::StrCat("host", HostOf(layout, rank));
    options.algorithm = "ring";
    options.windows = windows;
    options.chunk_bytes = 64 << 10;
    if (layout == 2) options.transports = {ChannelKind::kSharedMemory, ChannelKind::kUcx};
    auto comm = Communicator::Create(bootstrap, rank, size, options);
    ASSERT_TRUE(comm.ok()) << comm.status();
    // An uneven count: blocks differ by one element, pieces by their tails.
    for (size_t per_rank : {size_t{300001}, size_t{65536}}) {
      const size_t count = op == "allreduce" ? per_rank * size : per_rank;
      std::vector<int32_t> input(op == "reduce_scatter" ? count * size : count);
      for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<int32_t>(rank * 7 + i % 1001);
      std::vector<int32_t> output(op == "allgather" ? count * size : count, -1);
      absl::Status status;
      if (op == "allreduce") {
        AllreduceOptions call;
        call.input = input.data();
        call.output = output.data();
        call.count = count;
        call.dtype = DataType::kInt32;
        status = (*comm)->Allreduce(call)->Wait();
        for (size_t i = 0; i < count && status.ok(); ++i) {
          int64_t expected = 7 * size * (size - 1) / 2 + size * static_cast<int64_t>(i % 1001);
          ASSERT_EQ(output[i], expected) << "at " << i;
        }
      } else if (op == "allgather") {
        AllgatherOptions call;
        call.input = input.data();
        call.output = output.data();
        call.count = count;
        call.dtype = DataType::kInt32;
        status = (*comm)->Allgather(call)->Wait();
        for (int from = 0; from < size && status.ok(); ++from) {
          for (size_t i = 0; i < count; ++i) {
            ASSERT_EQ(output[from * count + i], static_cast<int32_t>(from * 7 + i % 1001))
                << "block " << from << " at " << i;
          }
        }
      } else {
        ReduceScatterOptions call;
        call.input = input.data();
        call.output = output.data();
        call.count = count;
        call.dtype = DataType::kInt32;
        status = (*comm)->ReduceScatter(call)->Wait();
        for (size_t i = 0; i < count && status.ok(); ++i) {
          size_t at = rank * count + i;
          int64_t expected = 7 * size * (size - 1) / 2 + size * static_cast<int64_t>(at % 1001);
          ASSERT_EQ(output[i], expected) << "at " << i;
        }
      }
      ASSERT_TRUE(status.ok()) << status;
    }
    // A rank puts where its right neighbour in the ring (hosts' ranks next to each other, so
    // rank + 1) is on its host.
    if (windows && (layout == 2 || HostOf(layout, (rank + 1) % size) == HostOf(layout, rank))) {
      EXPECT_GT((*comm)->window_puts(), 0u) << "rank " << rank;
    } else {
      EXPECT_EQ((*comm)->window_puts(), 0u) << "rank " << rank;
    }
  });
}

// UCX puts and signals into a window raise no event at the target (shared memory here, RDMA on
// a NIC): a waiter that slept on the event fd until its 100 ms slice ended made every step of a
// ring wait that long. Without spinning, 30 reduce-scatters of 256 KiB per rank over UCX windows on one host
// took over 3 s that way; they take a few milliseconds each now.
TEST(WindowWaits, UcxSignalsReachAWaiterThatDoesNotSpin) {
  if (!ucx::Built()) GTEST_SKIP() << "this build has no UCX";
  testing::RunRanks(3, [](int rank, int size, Bootstrap& bootstrap) {
    CommOptions options{.name = "window-waits"};
    options.algorithm = "ring";
    options.windows = true;
    options.spin_microseconds = 0;
    options.transports = {ChannelKind::kUcx};
    options.chunk_bytes = 64 << 10;
    auto comm = Communicator::Create(bootstrap, rank, size, options);
    ASSERT_TRUE(comm.ok()) << comm.status();
    std::vector<float> input(65536 * size, 1.0f), output(65536);
    auto run = [&] {
      ReduceScatterOptions call;
      call.input = input.data();
      call.output = output.data();
      call.count = output.size();
      absl::Status status = (*comm)->ReduceScatter(call)->Wait();
      ASSERT_TRUE(status.ok()) << status;
      ASSERT_EQ(output[0], static_cast<float>(size));
    };
    run();  // connects and registers
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 30; ++i) run();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GT((*comm)->window_puts(), 0u);
    EXPECT_LT(seconds, 1.5) << "30 reduce-scatters over UCX windows on rank " << rank;
  });
}

INSTANTIATE_TEST_SUITE_P(Rings, WindowTest,
                         ::testing::Combine(::testing::Values("allreduce", "allgather",
                                                              "reduce_scatter"),
                                            ::testing::Values(0, 1, 2), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return absl::StrCat(std::get<0>(info.param),
                                               LayoutName(std::get<1>(info.param)),
                                               std::get<2>(info.param) ? "_windows"
                                                                       : "_messages");
                         });

}  // namespace
}  // namespace cohort
