// The host-memory stand-ins for GPU collectives inside a host (csrc/collectives/device/):
// FakeStream's ordering and test control, the unique-id sharing through the Bootstrap that both
// NCCL and the fake use, and FakeDeviceGroup's collectives on ranks as threads (in-memory
// bootstrap) and as forked processes (store bootstrap), against reduce.cc-based references.
#include <dirent.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collectives/device/fake_device_group.h"
#include "collectives/device/fake_stream.h"
#include "collectives/device/nccl_support.h"
#include "collectives/device/unique_id.h"
#include "collectives/in_memory_bootstrap.h"
#include "collectives/reduce.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort::device {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(20);

// ---------------------------------------------------------------------------------------------
// FakeStream

TEST(FakeStreamTest, EventsCompleteInOrderWhenTheStreamRuns) {
  FakeStream stream;
  std::vector<int> order;
  stream.Pause();
  ASSERT_TRUE(stream
                  .Enqueue([&] {
                    order.push_back(1);
                    return absl::OkStatus();
                  })
                  .ok());
  auto first = stream.Record();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(stream
                  .Enqueue([&] {
                    order.push_back(2);
                    return absl::OkStatus();
                  })
                  .ok());
  auto second = stream.Record();
  ASSERT_TRUE(second.ok());
  // Paused: nothing ran, both events pending.
  EXPECT_EQ(*(*first)->Query(), false);
  EXPECT_EQ(*(*second)->Query(), false);
  EXPECT_EQ(stream.tasks_waiting(), 2u);
  // One task: the first event completes, the second does not.
  stream.Allow(1);
  ASSERT_TRUE((*first)->Wait(kWait).ok());
  EXPECT_EQ(*(*second)->Query(), false);
  EXPECT_EQ(stream.tasks_finished(), 1u);
  stream.Resume();
  ASSERT_TRUE((*second)->Wait(kWait).ok());
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  // An event recorded on an idle stream is complete at once.
  auto idle = stream.Record();
  ASSERT_TRUE(idle.ok());
  EXPECT_EQ(*(*idle)->Query(), true);
}

TEST(FakeStreamTest, WaitTimesOutWhilePaused) {
  FakeStream stream;
  stream.Pause();
  ASSERT_TRUE(stream.Enqueue([] { return absl::OkStatus(); }).ok());
  auto event = stream.Record();
  ASSERT_TRUE(event.ok());
  absl::Status status = (*event)->Wait(absl::Milliseconds(20));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
}

// A failing task fails the stream like a CUDA error: later tasks are skipped, events after the
// failure report it, events before it stay complete, and Enqueue returns it.
TEST(FakeStreamTest, AFailedTaskIsSticky) {
  FakeStream stream;
  ASSERT_TRUE(stream.Enqueue([] { return absl::OkStatus(); }).ok());
  auto before = stream.Record();
  ASSERT_TRUE(stream.Enqueue([] { return absl::InternalError("kernel fault"); }).ok());
  bool ran_after = false;
  stream.Pause();
  ASSERT_TRUE(stream
                  .Enqueue([&] {
                    ran_after = true;
                    return absl::OkStatus();
                  })
                  .ok());
  auto after = stream.Record();
  stream.Resume();
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_TRUE((*before)->Wait(kWait).ok());
  absl::Status status = (*after)->Wait(kWait);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()), HasSubstr("kernel fault"));
  EXPECT_FALSE((*after)->Query().ok());
  EXPECT_FALSE(ran_after);
  EXPECT_EQ(stream.Enqueue([] { return absl::OkStatus(); }).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(stream.Synchronize(kWait).code(), absl::StatusCode::kInternal);
}

TEST(FakeStreamTest, FailFromTheTestFailsPendingEvents) {
  FakeStream stream;
  stream.Pause();
  ASSERT_TRUE(stream.Enqueue([] { return absl::OkStatus(); }).ok());
  auto event = stream.Record();
  ASSERT_TRUE(event.ok());
  stream.Fail(absl::UnavailableError("device lost"));
  EXPECT_EQ((*event)->Query().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(stream.tasks_waiting(), 0u);
}

// WaitFor orders one stream after another's event without blocking the host; the waiting
// stream's later work runs only once the event completed.
TEST(FakeStreamTest, WaitForOrdersStreams) {
  FakeStream producer;
  FakeStream consumer;
  std::atomic<int> value{0};
  producer.Pause();
  ASSERT_TRUE(producer
                  .Enqueue([&] {
                    value = 42;
                    return absl::OkStatus();
                  })
                  .ok());
  auto produced = producer.Record();
  ASSERT_TRUE(produced.ok());
  ASSERT_TRUE(consumer.WaitFor(**produced).ok());
  produced->reset();  // the wait holds what it needs; the event may go
  int seen = -1;
  ASSERT_TRUE(consumer
                  .Enqueue([&] {
                    seen = value.load();
                    return absl::OkStatus();
                  })
                  .ok());
  auto consumed = consumer.Record();
  ASSERT_TRUE(consumed.ok());
  EXPECT_EQ((*consumed)->Wait(absl::Milliseconds(30)).code(), absl::StatusCode::kDeadlineExceeded);
  producer.Resume();
  ASSERT_TRUE((*consumed)->Wait(kWait).ok());
  EXPECT_EQ(seen, 42);
}

TEST(FakeStreamTest, CopyAsyncCopiesInOrder) {
  FakeStream stream;
  std::vector<int> source = {1, 2, 3, 4};
  std::vector<int> middle(4, 0);
  std::vector<int> destination(4, 0);
  ASSERT_TRUE(stream.CopyAsync(middle.data(), source.data(), 4 * sizeof(int)).ok());
  ASSERT_TRUE(stream.CopyAsync(destination.data(), middle.data(), 4 * sizeof(int)).ok());
  ASSERT_TRUE(stream.Synchronize(kWait).ok());
  EXPECT_EQ(destination, source);
}

TEST(FakeStreamTest, DestroyingWithPendingWorkCancelsItsEvents) {
  std::unique_ptr<Event> event;
  {
    FakeStream stream;
    stream.Pause();
    ASSERT_TRUE(stream.Enqueue([] { return absl::OkStatus(); }).ok());
    event = *stream.Record();
  }
  EXPECT_EQ(event->Query().status().code(), absl::StatusCode::kCancelled);
}

// ---------------------------------------------------------------------------------------------
// ShareUniqueId

// Runs `body(rank)` on `size` threads sharing one in-memory bootstrap.
void RunThreads(int size, const std::function<void(int, Bootstrap&)>& body) {
  auto state = std::make_shared<InMemoryBootstrap::State>();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      InMemoryBootstrap bootstrap(state);
      body(rank, bootstrap);
    });
  }
  for (auto& thread : threads) thread.join();
}

TEST(UniqueIdTest, EveryRankGetsRankZerosId) {
  std::vector<std::string> ids(4);
  std::atomic<int> made{0};
  RunThreads(4, [&](int rank, Bootstrap& bootstrap) {
    auto id = ShareUniqueId(bootstrap, "g0", rank, 4, kWait, 5, "test group", [&] {
      ++made;
      return absl::StatusOr<std::string>(
          std::string("a\0b\xff"
                      "c",
                      5));
    });
    ASSERT_TRUE(id.ok()) << id.status();
    ids[rank] = *id;
  });
  EXPECT_EQ(made.load(), 1);
  for (const std::string& id : ids)
    EXPECT_EQ(id, std::string("a\0b\xff"
                              "c",
                              5));
}

TEST(UniqueIdTest, RankZerosFailureReachesEveryRankAtOnce) {
  std::vector<absl::Status> results(3);
  const absl::Time start = absl::Now();
  RunThreads(3, [&](int rank, Bootstrap& bootstrap) {
    results[rank] =
        ShareUniqueId(bootstrap, "g1", rank, 3, absl::Seconds(30), 0, "test group", [] {
          return absl::StatusOr<std::string>(absl::UnavailableError("no network interface"));
        }).status();
  });
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));  // not the 30 s timeout
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_FALSE(results[rank].ok());
    EXPECT_THAT(std::string(results[rank].message()), HasSubstr("no network interface"));
    EXPECT_THAT(std::string(results[rank].message()), HasSubstr(absl::StrCat("rank ", rank, "/3")));
  }
  EXPECT_THAT(std::string(results[1].message()), HasSubstr("rank 0 could not make"));
}

TEST(UniqueIdTest, AMissingRankIsNamed) {
  std::vector<absl::Status> results(3);
  RunThreads(3, [&](int rank, Bootstrap& bootstrap) {
    if (rank == 2) return;  // never comes
    results[rank] =
        ShareUniqueId(bootstrap, "g2", rank, 3, absl::Milliseconds(200), 0, "test group", [] {
          return absl::StatusOr<std::string>("id");
        }).status();
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(results[rank].code(), absl::StatusCode::kDeadlineExceeded) << results[rank];
    EXPECT_THAT(std::string(results[rank].message()), HasSubstr("for rank(s) 2 "));
  }
}

TEST(UniqueIdTest, AMalformedIdIsAnError) {
  auto state = std::make_shared<InMemoryBootstrap::State>();
  InMemoryBootstrap bootstrap(state);
  ASSERT_TRUE(bootstrap.Set("g3/arrived/0", "1").ok());
  ASSERT_TRUE(bootstrap.Set("g3/id", "Inot-hex").ok());
  auto id = ShareUniqueId(bootstrap, "g3", 1, 2, kWait, 4, "test group",
                          [] { return absl::StatusOr<std::string>("x"); });
  EXPECT_EQ(id.status().code(), absl::StatusCode::kDataLoss) << id.status();
}

// ---------------------------------------------------------------------------------------------
// FakeDeviceGroup on threads

struct Rank {
  std::unique_ptr<FakeDeviceGroup> group;
  std::unique_ptr<FakeStream> stream;
};

// Creates a group of `size` ranks on threads and runs `body` on each.
void RunGroup(int size, const FakeDeviceGroupOptions& options,
              const std::function<void(int, Rank&)>& body, const std::string& key = "fake") {
  RunThreads(size, [&](int rank, Bootstrap& bootstrap) {
    auto group = FakeDeviceGroup::Create(bootstrap, key, rank, size, options);
    ASSERT_TRUE(group.ok()) << group.status();
    Rank r{std::move(*group), std::make_unique<FakeStream>(rank)};
    body(rank, r);
  });
}

// Input of `rank` at `index`: small integers, different per rank and with a period (23) that
// none of the tested counts is a multiple of, so a block taken from the wrong offset shows.
double Input(int rank, size_t index) {
  return static_cast<double>((index * 7 + static_cast<size_t>(rank) * 13 + 1) % 23);
}

std::vector<uint8_t> MakeBuffer(DataType type, size_t count, int rank, size_t offset = 0) {
  std::vector<uint8_t> buffer(count * DataTypeSize(type));
  for (size_t i = 0; i < count; ++i) StoreElement(buffer.data(), type, i, Input(rank, offset + i));
  return buffer;
}

// The reduction of every rank's Input at `index`, through reduce.cc (rank order, then average).
std::vector<uint8_t> Expected(DataType type, ReduceOp op, int size, size_t count,
                              size_t offset = 0) {
  std::vector<std::vector<uint8_t>> inputs;
  std::vector<const void*> pointers;
  for (int r = 0; r < size; ++r) inputs.push_back(MakeBuffer(type, count, r, offset));
  for (auto& input : inputs) pointers.push_back(input.data());
  std::vector<uint8_t> out(count * DataTypeSize(type));
  GetReduceManyFn(type, op)(out.data(), pointers.data(), size, count);
  if (op == ReduceOp::kAvg) ScaleForAverage(out.data(), type, count, size);
  return out;
}

struct GroupCase {
  int size;
  DataType type;
  ReduceOp op;
  size_t count;
  size_t slot_bytes;  // small slots: several steps per call
};

void PrintTo(const GroupCase& c, std::ostream* os) {
  *os << c.size << " ranks, " << DataTypeName(c.type) << " " << ReduceOpName(c.op) << ", "
      << c.count << " elements, " << c.slot_bytes << "-byte slots";
}

class FakeDeviceGroupTest : public ::testing::TestWithParam<GroupCase> {};

TEST_P(FakeDeviceGroupTest, EveryCollectiveMatchesTheReference) {
  const GroupCase c = GetParam();
  FakeDeviceGroupOptions options;
  options.slot_bytes = c.slot_bytes;
  options.timeout = kWait;
  const size_t element = DataTypeSize(c.type);
  RunGroup(c.size, options, [&](int rank, Rank& r) {
    // allreduce, out of place and in place
    std::vector<uint8_t> send = MakeBuffer(c.type, c.count, rank);
    std::vector<uint8_t> recv(send.size(), 0xEE);
    auto event = r.group->Allreduce(send.data(), recv.data(), c.count, c.type, c.op, *r.stream);
    ASSERT_TRUE(event.ok()) << event.status();
    ASSERT_TRUE((*event)->Wait(kWait).ok());
    EXPECT_EQ(recv, Expected(c.type, c.op, c.size, c.count)) << "allreduce";
    event = r.group->Allreduce(send.data(), send.data(), c.count, c.type, c.op, *r.stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    EXPECT_EQ(send, Expected(c.type, c.op, c.size, c.count)) << "allreduce in place";

    // reduce_scatter: rank r ends with block r of the reduction of count * size elements.
    std::vector<uint8_t> big = MakeBuffer(c.type, c.count * c.size, rank);
    std::vector<uint8_t> block(c.count * element, 0xEE);
    event = r.group->ReduceScatter(big.data(), block.data(), c.count, c.type, c.op, *r.stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    EXPECT_EQ(block, Expected(c.type, c.op, c.size, c.count, rank * c.count)) << "reduce_scatter";

    // allgather, out of place and in place
    std::vector<uint8_t> mine = MakeBuffer(c.type, c.count, rank);
    std::vector<uint8_t> all(c.count * c.size * element, 0xEE);
    event = r.group->Allgather(mine.data(), all.data(), c.count, c.type, *r.stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    std::vector<uint8_t> gathered;
    for (int p = 0; p < c.size; ++p) {
      const std::vector<uint8_t> piece = MakeBuffer(c.type, c.count, p);
      gathered.insert(gathered.end(), piece.begin(), piece.end());
    }
    EXPECT_EQ(all, gathered) << "allgather";
    std::vector<uint8_t> in_place(c.count * c.size * element, 0xEE);
    if (!mine.empty()) {  // 0 elements: both vectors' data() may be null
      std::memcpy(in_place.data() + rank * c.count * element, mine.data(), mine.size());
    }
    event = r.group->Allgather(in_place.data() + rank * c.count * element, in_place.data(), c.count,
                               c.type, *r.stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    EXPECT_EQ(in_place, gathered) << "allgather in place";

    // broadcast from the last rank; non-roots pass no send buffer
    const int root = c.size - 1;
    std::vector<uint8_t> data = rank == root ? MakeBuffer(c.type, c.count, root)
                                             : std::vector<uint8_t>(c.count * element, 0xEE);
    event = r.group->Broadcast(rank == root ? data.data() : nullptr, data.data(), c.count, c.type,
                               root, *r.stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    EXPECT_EQ(data, MakeBuffer(c.type, c.count, root)) << "broadcast";

    // reduce to rank 0; others' recv untouched
    std::vector<uint8_t> reduced(c.count * element, 0xEE);
    event = r.group->Reduce(send.data(), reduced.data(), c.count, c.type, c.op, 0, *r.stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    // (send now holds the allreduce result; reduce it again)
    if (rank == 0) {
      std::vector<std::vector<uint8_t>> inputs(c.size, Expected(c.type, c.op, c.size, c.count));
      std::vector<const void*> pointers;
      for (auto& input : inputs) pointers.push_back(input.data());
      std::vector<uint8_t> want(c.count * element);
      GetReduceManyFn(c.type, c.op)(want.data(), pointers.data(), c.size, c.count);
      if (c.op == ReduceOp::kAvg) ScaleForAverage(want.data(), c.type, c.count, c.size);
      EXPECT_EQ(reduced, want) << "reduce";
    } else {
      EXPECT_EQ(reduced, std::vector<uint8_t>(c.count * element, 0xEE)) << "reduce off root";
    }
    EXPECT_TRUE(r.group->AsyncError().ok());
    EXPECT_EQ(r.group->calls().size(), 7u);
  });
}

std::string CaseName(const ::testing::TestParamInfo<GroupCase>& info) {
  const GroupCase& c = info.param;
  return absl::StrCat(c.size, "ranks_", DataTypeName(c.type), "_", ReduceOpName(c.op), "_", c.count,
                      "_slot", c.slot_bytes);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, FakeDeviceGroupTest,
    ::testing::Values(GroupCase{1, DataType::kFloat32, ReduceOp::kSum, 100, 4096},
                      GroupCase{2, DataType::kFloat32, ReduceOp::kSum, 1000, 1 << 20},
                      GroupCase{3, DataType::kBFloat16, ReduceOp::kAvg, 2051, 4096},  // steps
                      GroupCase{4, DataType::kInt64, ReduceOp::kMax, 3000, 4096},
                      GroupCase{4, DataType::kFloat16, ReduceOp::kProd, 0, 4096},
                      GroupCase{2, DataType::kInt32, ReduceOp::kAvg, 777, 4096},
                      GroupCase{3, DataType::kBool, ReduceOp::kBor, 5000, 4096}),
    CaseName);

// The stream controls the group: a paused rank holds its peers' events pending (as a GPU that
// has not reached the kernel would), and resuming it completes everyone.
TEST(FakeDeviceGroupTest, APausedStreamHoldsThePeers) {
  FakeDeviceGroupOptions options;
  options.timeout = kWait;
  std::atomic<int> pending_seen{0};
  std::atomic<bool> resume{false};
  RunGroup(2, options, [&](int rank, Rank& r) {
    float value = 1.0f + rank;
    if (rank == 1) r.stream->Pause();
    auto event =
        r.group->Allreduce(&value, &value, 1, DataType::kFloat32, ReduceOp::kSum, *r.stream);
    ASSERT_TRUE(event.ok());
    if (rank == 0) {
      EXPECT_EQ((*event)->Wait(absl::Milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
      ++pending_seen;
      resume = true;
    } else {
      while (!resume.load()) std::this_thread::yield();
      EXPECT_EQ(*(*event)->Query(), false);
      r.stream->Resume();
    }
    ASSERT_TRUE((*event)->Wait(kWait).ok());
    EXPECT_EQ(value, 3.0f);
  });
  EXPECT_EQ(pending_seen.load(), 1);
}

TEST(FakeDeviceGroupTest, MismatchedCallsFailEveryRank) {
  FakeDeviceGroupOptions options;
  options.timeout = kWait;
  RunGroup(3, options, [&](int rank, Rank& r) {
    std::vector<float> data(rank == 2 ? 8 : 16, 1.0f);  // rank 2 disagrees on the count
    auto event = r.group->Allreduce(data.data(), data.data(), data.size(), DataType::kFloat32,
                                    ReduceOp::kSum, *r.stream);
    ASSERT_TRUE(event.ok());
    absl::Status status = (*event)->Wait(kWait);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("mismatched collectives"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("fake device group"));
    EXPECT_EQ(r.group->AsyncError().code(), absl::StatusCode::kFailedPrecondition);
    // The group is unusable now.
    EXPECT_FALSE(
        r.group
            ->Allreduce(data.data(), data.data(), 1, DataType::kFloat32, ReduceOp::kSum, *r.stream)
            .ok());
  });
}

TEST(FakeDeviceGroupTest, AMissingPeerTimesOutNamingIt) {
  FakeDeviceGroupOptions options;
  options.timeout = absl::Seconds(1);  // set-up too: keep it clear of a loaded machine's delays
  RunGroup(3, options, [&](int rank, Rank& r) {
    if (rank == 1) return;  // created the group, never calls
    float value = 1.0f;
    auto event =
        r.group->Allreduce(&value, &value, 1, DataType::kFloat32, ReduceOp::kSum, *r.stream);
    ASSERT_TRUE(event.ok());
    absl::Status status = (*event)->Wait(kWait);
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("for rank(s) 1 to join"));
    EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat("rank ", rank, "/3")));
  });
}

// Abort on one rank fails its own pending call and releases the peers waiting for it at once.
TEST(FakeDeviceGroupTest, AbortReleasesThePeers) {
  FakeDeviceGroupOptions options;
  options.timeout = absl::Seconds(30);
  const absl::Time start = absl::Now();
  RunGroup(3, options, [&](int rank, Rank& r) {
    float value = 1.0f;
    if (rank == 2) {
      r.stream->Pause();  // its call will not start before the abort
      auto event =
          r.group->Allreduce(&value, &value, 1, DataType::kFloat32, ReduceOp::kSum, *r.stream);
      ASSERT_TRUE(event.ok());
      r.group->Abort(absl::AbortedError("operator abort"));
      r.stream->Resume();
      EXPECT_EQ((*event)->Wait(kWait).code(), absl::StatusCode::kAborted);
      EXPECT_EQ(r.group->Allreduce(&value, &value, 1, DataType::kFloat32, ReduceOp::kSum, *r.stream)
                    .status()
                    .code(),
                absl::StatusCode::kAborted);
      return;
    }
    auto event =
        r.group->Allreduce(&value, &value, 1, DataType::kFloat32, ReduceOp::kSum, *r.stream);
    ASSERT_TRUE(event.ok());
    absl::Status status = (*event)->Wait(kWait);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("rank 2 aborted the group: operator abort"));
    EXPECT_EQ(r.group->AsyncError().code(), absl::StatusCode::kUnavailable);
  });
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

TEST(FakeDeviceGroupTest, RefusesWhatNcclCannotDo) {
  FakeDeviceGroupOptions options;
  RunGroup(1, options, [&](int, Rank& r) {
    int32_t value = 5;
    auto event =
        r.group->Allreduce(&value, &value, 1, DataType::kInt32, ReduceOp::kBxor, *r.stream);
    EXPECT_EQ(event.status().code(), absl::StatusCode::kUnimplemented) << event.status();
    EXPECT_THAT(std::string(event.status().message()), HasSubstr("NCCL has no bxor"));
    event = r.group->Broadcast(&value, &value, 1, DataType::kInt32, 1, *r.stream);
    EXPECT_EQ(event.status().code(), absl::StatusCode::kInvalidArgument) << event.status();
    EXPECT_TRUE(r.group->calls().empty());
  });
  options.nccl_support_only = false;
  RunGroup(
      1, options,
      [&](int, Rank& r) {
        int32_t value = 5;
        auto event =
            r.group->Allreduce(&value, &value, 1, DataType::kInt32, ReduceOp::kBxor, *r.stream);
        ASSERT_TRUE(event.ok()) << event.status();
        EXPECT_TRUE((*event)->Wait(kWait).ok());
      },
      "fake-all-ops");
}

// The shape of the GPU hierarchical schedule, as the engine will compose it: reduce-scatter
// inside each host, the rail step between hosts on this rank's block (here a second fake group
// standing in for cohort's rails), allgather inside the host, all ordered by one stream and
// finished by one event. 2 hosts x 2 local ranks as threads.
TEST(FakeDeviceGroupTest, AHierarchicalAllreduceComposesFromGroupsAndEvents) {
  constexpr int kHosts = 2;
  constexpr int kLocal = 2;
  constexpr size_t kCount = 1002;
  FakeDeviceGroupOptions options;
  options.timeout = kWait;
  options.slot_bytes = 4096;
  RunThreads(kHosts * kLocal, [&](int global, Bootstrap& bootstrap) {
    const int host = global / kLocal;
    const int local = global % kLocal;
    auto host_group =
        FakeDeviceGroup::Create(bootstrap, absl::StrCat("host", host), local, kLocal, options);
    ASSERT_TRUE(host_group.ok()) << host_group.status();
    auto rail = FakeDeviceGroup::Create(bootstrap, absl::StrCat("rail", local), host, kHosts,
                                        options);
    ASSERT_TRUE(rail.ok()) << rail.status();
    FakeStream stream(local);
    std::vector<uint8_t> data = MakeBuffer(DataType::kFloat32, kCount, global);
    std::vector<uint8_t> block(kCount / kLocal * sizeof(float));
    const size_t block_count = kCount / kLocal;
    stream.Pause();  // everything is enqueued before any of it runs
    ASSERT_TRUE((*host_group)
                    ->ReduceScatter(data.data(), block.data(), block_count, DataType::kFloat32,
                                    ReduceOp::kSum, stream)
                    .ok());
    ASSERT_TRUE((*rail)
                    ->Allreduce(block.data(), block.data(), block_count, DataType::kFloat32,
                                ReduceOp::kSum, stream)
                    .ok());
    auto done = (*host_group)
                    ->Allgather(block.data(), data.data(), block_count, DataType::kFloat32, stream);
    ASSERT_TRUE(done.ok());
    EXPECT_EQ(*(*done)->Query(), false);
    stream.Resume();
    ASSERT_TRUE((*done)->Wait(kWait).ok());
    EXPECT_EQ(data, Expected(DataType::kFloat32, ReduceOp::kSum, kHosts * kLocal, kCount));
    const std::vector<DeviceCall> calls = (*host_group)->calls();
    ASSERT_EQ(calls.size(), 2u);
    EXPECT_EQ(calls[0].op, OpType::kReduceScatter);
    EXPECT_EQ(calls[1].op, OpType::kAllgather);
  });
}

TEST(NcclSupportTest, MapsCohortPairsToNcclReductions) {
  EXPECT_EQ(*NcclReductionFor(DataType::kFloat32, ReduceOp::kAvg, ""), NcclReduction::kAvg);
  EXPECT_EQ(*NcclReductionFor(DataType::kInt64, ReduceOp::kAvg, ""), NcclReduction::kSumThenDivide);
  EXPECT_EQ(*NcclReductionFor(DataType::kBool, ReduceOp::kBand, ""), NcclReduction::kMin);
  EXPECT_EQ(*NcclReductionFor(DataType::kBool, ReduceOp::kMax, ""), NcclReduction::kMax);
  EXPECT_EQ(NcclReductionFor(DataType::kBool, ReduceOp::kBxor, "").status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(NcclReductionFor(DataType::kFloat32, ReduceOp::kBand, "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// FakeDeviceGroup across forked processes (the store's bootstrap): the shared-memory exchange
// works between address spaces, and no segment is left in /dev/shm.

int CountFakeSegments() {
  int count = 0;
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return 0;
  while (dirent* entry = readdir(dir)) {
    if (absl::StartsWith(entry->d_name, absl::StrCat("cohort-fakedev-"))) ++count;
  }
  closedir(dir);
  return count;
}

TEST(FakeDeviceGroupProcessTest, RanksInProcessesExchange) {
  testing::RunRanks(3, [](int rank, int size, Bootstrap& bootstrap) {
    FakeDeviceGroupOptions options;
    options.timeout = kWait;
    options.slot_bytes = 4096;
    auto group = FakeDeviceGroup::Create(bootstrap, "fake-processes", rank, size, options);
    ASSERT_TRUE(group.ok()) << group.status();
    FakeStream stream;
    const size_t count = 3000;  // several steps
    std::vector<uint8_t> data = MakeBuffer(DataType::kFloat32, count, rank);
    auto event = (*group)->Allreduce(data.data(), data.data(), count, DataType::kFloat32,
                                     ReduceOp::kSum, stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    EXPECT_EQ(data, Expected(DataType::kFloat32, ReduceOp::kSum, size, count));
    std::vector<uint8_t> all(count * size * 4);
    std::vector<uint8_t> mine = MakeBuffer(DataType::kFloat32, count, rank);
    event = (*group)->Allgather(mine.data(), all.data(), count, DataType::kFloat32, stream);
    ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
    for (int p = 0; p < size; ++p) {
      EXPECT_EQ(std::memcmp(all.data() + p * count * 4,
                            MakeBuffer(DataType::kFloat32, count, p).data(), count * 4),
                0)
          << "block " << p;
    }
  });
  EXPECT_EQ(CountFakeSegments(), 0);
}

}  // namespace
}  // namespace cohort::device
