// Collectives on "CUDA" buffers through the engine's device path, without a GPU: the fake
// device backend (FakeStreams, FakeDeviceGroups over shared memory, plain memory for pinned
// staging) stands in for CUDA and NCCL, on the same code path (device_runtime.h). Ranks are
// forked processes; hosts are simulated with COHORT_HOST_ID-style host ids (shared memory inside,
// TCP between). Checked: results against references, which algorithm ran (device_group,
// device_hierarchical, device_staged) and which device-group calls it made, completion that
// follows the stream (a paused stream holds the Work), selection by memory kind, a mismatched
// collective failing with cohort's error before the device group runs it, abort, and a stream
// failure.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "collectives/device/device_group.h"
#include "collectives/device/fake_backend.h"
#include "collectives/device/fake_device_group.h"
#include "collectives/device/fake_stream.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/data.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::InputValue;
using testing::Load;
using testing::MakeInput;
using testing::Reference;
using testing::Tolerance;

constexpr absl::Duration kWait = absl::Seconds(30);

// One rank's communicator on the fake backend and the stream its "device buffers" are ordered
// on (the fake device number decides which ranks share a device).
struct DeviceRank {
  std::unique_ptr<Communicator> comm;
  std::shared_ptr<device::FakeStream> stream;

  template <typename Options>
  Options On(Options options) const {
    options.memory = MemoryKind::kCuda;
    options.stream = stream;
    return options;
  }
};

struct RankSetup {
  std::string host_id = "one";
  int fake_device = 0;
  bool groups = true;
  std::string algorithm;   // CommOptions::algorithm
  size_t chunk_bytes = 0;  // CommOptions::chunk_bytes when > 0
  std::string cuda_path;   // CommOptions::cuda_path when set
};

DeviceRank MakeRank(Bootstrap& bootstrap, int rank, int size, const RankSetup& setup) {
  CommOptions options{.name = "device"};
  options.host_id = setup.host_id;
  options.timeout = kWait;
  if (!setup.algorithm.empty()) options.algorithm = setup.algorithm;
  if (setup.chunk_bytes > 0) options.chunk_bytes = setup.chunk_bytes;
  if (!setup.cuda_path.empty()) options.cuda_path = setup.cuda_path;
  device::FakeDeviceBackendOptions fake;
  fake.groups = setup.groups;
  fake.slot_bytes = 4096;  // several steps per device-group call
  options.device_backend = std::make_shared<device::FakeDeviceBackend>(fake);
  auto comm = Communicator::Create(bootstrap, rank, size, options);
  EXPECT_TRUE(comm.ok()) << comm.status();
  DeviceRank result;
  if (comm.ok()) result.comm = std::move(*comm);
  result.stream = std::make_shared<device::FakeStream>(setup.fake_device);
  return result;
}

template <typename Expected>
void ExpectElements(const char* what, const void* buffer, DataType type, ReduceOp op,
                    size_t count, Expected expected) {
  for (size_t index = 0; index < count; ++index) {
    const double want = expected(index);
    const double got = Load(buffer, type, index);
    if (std::fabs(got - want) > Tolerance(type, op, want)) {
      ADD_FAILURE() << what << ": element " << index << " of " << count << " is " << got
                    << ", expected " << want;
      return;
    }
  }
}

// The ops the fake device group was given, in order.
std::vector<OpType> GroupCalls(const Communicator& comm) {
  std::vector<OpType> ops;
  const auto* group = dynamic_cast<const device::FakeDeviceGroup*>(comm.device_group());
  if (group == nullptr) return ops;
  for (const device::DeviceCall& call : group->calls()) ops.push_back(call.op);
  return ops;
}

std::string Chosen(const Communicator& comm, OpType op, size_t count, DataType type,
                   ReduceOp reduce, MemoryKind memory, int root = -1) {
  OpArgs args;
  args.op = op;
  args.count = count;
  args.dtype = type;
  args.reduce_op = reduce;
  args.root = root;
  args.memory = memory;
  return comm.ChosenAlgorithm(args);
}

// Every collective a rank runs on device memory, checked against references. `expected_group`
// says whether the device group serves the reductions (device_group / device_hierarchical) or
// everything is staged.
void RunEveryCollective(DeviceRank& r, size_t count) {
  Communicator& comm = *r.comm;
  const int rank = comm.rank();
  const int n = comm.size();
  const std::string where = absl::StrCat("count ", count);
  for (DataType type : {DataType::kFloat32, DataType::kInt64, DataType::kBFloat16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      for (bool in_place : {false, true}) {
        std::vector<char> input = MakeInput(type, op, rank, count);
        std::vector<char> output(input.size(), 0x5a);
        AllreduceOptions options;
        options.input = input.data();
        options.output = in_place ? input.data() : output.data();
        options.count = count;
        options.dtype = type;
        options.op = op;
        absl::Status status = comm.Allreduce(r.On(options))->Wait(kWait);
        ASSERT_TRUE(status.ok()) << where << ": " << status;
        ExpectElements("allreduce", options.output, type, op, count,
                       [&](size_t i) { return Reference(type, op, n, i); });
      }
    }
  }
  {  // broadcast from the last rank, in place
    std::vector<char> data = MakeInput(DataType::kInt32, ReduceOp::kSum, rank, count);
    BroadcastOptions options;
    options.output = data.data();
    options.count = count;
    options.dtype = DataType::kInt32;
    options.root = n - 1;
    ASSERT_TRUE(comm.Broadcast(r.On(options))->Wait(kWait).ok()) << where;
    ExpectElements("broadcast", data.data(), DataType::kInt32, ReduceOp::kSum, count,
                   [&](size_t i) { return InputValue(DataType::kInt32, ReduceOp::kSum, n - 1, i); });
  }
  {  // reduce to rank 0
    std::vector<char> input = MakeInput(DataType::kFloat32, ReduceOp::kSum, rank, count);
    std::vector<char> output(input.size(), 0);
    ReduceOptions options;
    options.input = input.data();
    options.output = output.data();
    options.count = count;
    options.dtype = DataType::kFloat32;
    options.root = 0;
    ASSERT_TRUE(comm.Reduce(r.On(options))->Wait(kWait).ok()) << where;
    if (rank == 0) {
      ExpectElements("reduce", output.data(), DataType::kFloat32, ReduceOp::kSum, count,
                     [&](size_t i) { return Reference(DataType::kFloat32, ReduceOp::kSum, n, i); });
    }
  }
  {  // allgather, out of place and in place (own block inside the output)
    for (bool in_place : {false, true}) {
      std::vector<int32_t> mine(count);
      for (size_t i = 0; i < count; ++i) mine[i] = static_cast<int32_t>(rank * 1000 + i % 997);
      std::vector<int32_t> all(count * n, -1);
      if (in_place) std::copy(mine.begin(), mine.end(), all.begin() + rank * count);
      AllgatherOptions options;
      options.input = in_place ? all.data() + rank * count : mine.data();
      options.output = all.data();
      options.count = count;
      options.dtype = DataType::kInt32;
      ASSERT_TRUE(comm.Allgather(r.On(options))->Wait(kWait).ok()) << where;
      for (int from = 0; from < n; ++from) {
        for (size_t i = 0; i < count; ++i) {
          ASSERT_EQ(all[from * count + i], static_cast<int32_t>(from * 1000 + i % 997))
              << "allgather block " << from << " element " << i << " (" << where << ")";
        }
      }
    }
  }
  {  // reduce_scatter
    std::vector<char> input = MakeInput(DataType::kFloat64, ReduceOp::kSum, rank, count * n);
    std::vector<char> output(count * sizeof(double) + 1, 0);
    ReduceScatterOptions options;
    options.input = input.data();
    options.output = output.data();
    options.count = count;
    options.dtype = DataType::kFloat64;
    ASSERT_TRUE(comm.ReduceScatter(r.On(options))->Wait(kWait).ok()) << where;
    ExpectElements("reduce_scatter", output.data(), DataType::kFloat64, ReduceOp::kSum, count,
                   [&](size_t i) {
                     return Reference(DataType::kFloat64, ReduceOp::kSum, n, rank * count + i);
                   });
  }
}

// ---------------------------------------------------------------------------------------------

TEST(DeviceCollectivesTest, OneHostRunsEveryReductionInTheDeviceGroup) {
  testing::RunRanks(3, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = rank;  // a device per rank: NCCL's condition
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    for (size_t count : {size_t{1}, size_t{1031}, size_t{9000}}) RunEveryCollective(r, count);
    EXPECT_EQ(Chosen(*r.comm, OpType::kAllreduce, 1031, DataType::kFloat32, ReduceOp::kSum,
                     MemoryKind::kCuda),
              "device_group");
    EXPECT_EQ(Chosen(*r.comm, OpType::kAllreduce, 1031, DataType::kFloat32, ReduceOp::kSum,
                     MemoryKind::kHost) == "device_group",
              false);
    // Every collective above went to the group: 18 allreduces, then broadcast, reduce, two
    // allgathers and a reduce_scatter, per count.
    const std::vector<OpType> calls = GroupCalls(*r.comm);
    ASSERT_EQ(calls.size(), 3u * 23u);
    EXPECT_EQ(calls[0], OpType::kAllreduce);
    EXPECT_EQ(calls[18], OpType::kBroadcast);
    EXPECT_EQ(calls[19], OpType::kReduce);
    EXPECT_EQ(calls[20], OpType::kAllgather);
    EXPECT_EQ(calls[22], OpType::kReduceScatter);
  });
}

TEST(DeviceCollectivesTest, TwoHostsComposeTheDeviceGroupWithRails) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.host_id = rank < 2 ? "hostA" : "hostB";
    setup.fake_device = rank % 2;
    setup.chunk_bytes = 8 << 10;  // 64 KiB device chunks: several per operation below
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    // 7: one element of tail (7 = 2 x 3 + 1); 100003: several chunks and a tail.
    for (size_t count : {size_t{1}, size_t{7}, size_t{100003}}) {
      for (auto [type_, op_] : {std::pair{DataType::kFloat32, ReduceOp::kSum},
                                std::pair{DataType::kInt64, ReduceOp::kAvg},
                                std::pair{DataType::kInt32, ReduceOp::kMin}}) {
        // Copies: clang 14 cannot capture structured bindings in the lambda below.
        const DataType type = type_;
        const ReduceOp op = op_;
        std::vector<char> input = MakeInput(type, op, rank, count);
        std::vector<char> output(input.size(), 0x5a);
        AllreduceOptions options;
        options.input = input.data();
        options.output = output.data();
        options.count = count;
        options.dtype = type;
        options.op = op;
        absl::Status status = r.comm->Allreduce(r.On(options))->Wait(kWait);
        ASSERT_TRUE(status.ok()) << status;
        ExpectElements("hierarchical allreduce", output.data(), type, op, count,
                       [&](size_t i) { return Reference(type, op, size, i); });
      }
    }
    EXPECT_EQ(Chosen(*r.comm, OpType::kAllreduce, 100003, DataType::kFloat32, ReduceOp::kSum,
                     MemoryKind::kCuda),
              "device_hierarchical");
    // count 1: tail only (allreduce inside the host); 7 and 100003: reduce-scatter, tail
    // allreduce, allgather.
    const std::vector<OpType> calls = GroupCalls(*r.comm);
    const std::vector<OpType> tail_only(3, OpType::kAllreduce);
    ASSERT_EQ(calls.size(), 3u + 2 * 3 * 3u);
    EXPECT_EQ(std::vector<OpType>(calls.begin(), calls.begin() + 3), tail_only);
    EXPECT_EQ(calls[3], OpType::kReduceScatter);
    EXPECT_EQ(calls[4], OpType::kAllreduce);
    EXPECT_EQ(calls[5], OpType::kAllgather);
    // What the hierarchy does not serve across hosts is staged, correctly.
    EXPECT_EQ(Chosen(*r.comm, OpType::kAllgather, 64, DataType::kInt32, ReduceOp::kSum,
                     MemoryKind::kCuda),
              "device_staged");
    RunEveryCollective(r, 333);
  });
}

TEST(DeviceCollectivesTest, RanksSharingADeviceAreStaged) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = 0;  // both ranks on one device: no NCCL group
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    RunEveryCollective(r, 2049);
    EXPECT_EQ(r.comm->device_group(), nullptr);
    EXPECT_EQ(Chosen(*r.comm, OpType::kAllreduce, 2049, DataType::kFloat32, ReduceOp::kSum,
                     MemoryKind::kCuda),
              "device_staged");
    Communicator& comm = *r.comm;
    {  // alltoall with splits: rank 0 keeps 3 and sends 5; rank 1 sends 5 and keeps 2
      const std::vector<size_t> counts =
          rank == 0 ? std::vector<size_t>{3, 5} : std::vector<size_t>{5, 2};
      std::vector<int32_t> in(8), out(8, -1);
      for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int32_t>(rank * 100 + i);
      AlltoallOptions options;
      options.input = in.data();
      options.output = out.data();
      options.send_counts = counts;
      options.recv_counts = counts;
      options.dtype = DataType::kInt32;
      ASSERT_TRUE(comm.Alltoall(r.On(options))->Wait(kWait).ok());
      if (rank == 0) {
        EXPECT_EQ(out, (std::vector<int32_t>{0, 1, 2, 100, 101, 102, 103, 104}));
      } else {
        EXPECT_EQ(std::vector<int32_t>(out.begin(), out.begin() + 7),
                  (std::vector<int32_t>{3, 4, 5, 6, 7, 105, 106}));
      }
    }
    {  // gather and scatter at root 1
      std::vector<int64_t> mine = {rank * 10, rank * 10 + 1};
      std::vector<int64_t> all(4, -1);
      GatherOptions gather;
      gather.input = mine.data();
      gather.output = all.data();
      gather.count = 2;
      gather.dtype = DataType::kInt64;
      gather.root = 1;
      ASSERT_TRUE(comm.Gather(r.On(gather))->Wait(kWait).ok());
      if (rank == 1) {
        EXPECT_EQ(all, (std::vector<int64_t>{0, 1, 10, 11}));
      }
      std::vector<int64_t> pieces = {7, 8, 9, 10}, piece(2, -1);
      ScatterOptions scatter;
      scatter.input = pieces.data();
      scatter.output = piece.data();
      scatter.count = 2;
      scatter.dtype = DataType::kInt64;
      scatter.root = 1;
      ASSERT_TRUE(comm.Scatter(r.On(scatter))->Wait(kWait).ok());
      EXPECT_EQ(piece, rank == 0 ? (std::vector<int64_t>{7, 8}) : (std::vector<int64_t>{9, 10}));
    }
    {  // send / recv, both ways, staged through pinned memory. A receive holds its stream
       // until its message is there (as NCCL's does): receive on a stream of its own.
      auto receive_stream = std::make_shared<device::FakeStream>(setup.fake_device);
      std::vector<float> message(5000), received(5000, -1);
      for (size_t i = 0; i < message.size(); ++i) message[i] = static_cast<float>(rank + i);
      SendOptions send;
      send.data = message.data();
      send.count = message.size();
      send.dtype = DataType::kFloat32;
      send.peer = 1 - rank;
      send.tag = 9;
      RecvOptions recv;
      recv.data = received.data();
      recv.count = received.size();
      recv.dtype = DataType::kFloat32;
      recv.peer = 1 - rank;
      recv.tag = 9;
      recv.memory = MemoryKind::kCuda;
      recv.stream = receive_stream;
      auto receiving = comm.Recv(recv);
      auto sending = comm.Send(r.On(send));
      ASSERT_TRUE(sending->Wait(kWait).ok());
      ASSERT_TRUE(receiving->Wait(kWait).ok());
      for (size_t i = 0; i < received.size(); ++i) {
        ASSERT_EQ(received[i], static_cast<float>(1 - rank + i)) << "element " << i;
      }
    }
  });
}

// A Work on device memory completes when its stream has passed the operation, not when the host
// part has: a paused stream holds it after a host collective issued behind it has finished.
TEST(DeviceCollectivesTest, TheWorkCompletesWithTheStream) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = rank;
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    std::vector<float> data(4096, static_cast<float>(rank + 1));
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = data.size();
    options.dtype = DataType::kFloat32;
    ASSERT_TRUE(r.comm->Allreduce(r.On(options))->Wait(kWait).ok());  // warm: group made
    std::fill(data.begin(), data.end(), static_cast<float>(rank + 1));
    r.stream->Pause();
    std::shared_ptr<Work> work = r.comm->Allreduce(r.On(options));
    ASSERT_NE(work->device_event(), nullptr);
    EXPECT_FALSE(work->IsCompleted());
    // Issue order: the barrier runs after the allreduce's host part.
    ASSERT_TRUE(r.comm->Barrier()->Wait(kWait).ok());
    EXPECT_FALSE(work->IsCompleted());
    EXPECT_EQ(*work->device_event()->Query(), false);
    EXPECT_EQ(work->Wait(absl::Milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_EQ(data[0], static_cast<float>(rank + 1));  // the device has not run it
    r.stream->Resume();
    ASSERT_TRUE(work->Wait(kWait).ok());
    EXPECT_EQ(*work->device_event()->Query(), true);
    EXPECT_EQ(data[0], 3.0f);
    EXPECT_EQ(data[4095], 3.0f);
  });
}

TEST(DeviceCollectivesTest, SelectionChecksTheMemoryKind) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = rank;
    setup.algorithm = "ring";  // the communicator's: not for CUDA buffers' device steps
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    std::vector<float> data(100, 1.0f);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = data.size();
    options.dtype = DataType::kFloat32;
    ASSERT_TRUE(r.comm->Allreduce(r.On(options))->Wait(kWait).ok());
    EXPECT_EQ(data[0], 2.0f);
    EXPECT_EQ(GroupCalls(*r.comm).size(), 1u);
    // A host algorithm forced for this call cannot serve CUDA memory: the error names both.
    AllreduceOptions forced = r.On(options);
    forced.algorithm = "ring";
    absl::Status status = r.comm->Allreduce(forced)->Wait(kWait);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("\"ring\" cannot run allreduce on cuda"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("device_group"));
    // Nor a device algorithm host memory.
    AllreduceOptions host = options;
    host.algorithm = "device_group";
    status = r.comm->Allreduce(host)->Wait(kWait);
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("\"device_group\" cannot run allreduce on host memory"));
    // Device memory needs its stream, of the backend's kind.
    AllreduceOptions no_stream = options;
    no_stream.memory = MemoryKind::kCuda;
    status = r.comm->Allreduce(no_stream)->Wait(kWait);
    EXPECT_THAT(std::string(status.message()), HasSubstr("needs the stream"));
    // The communicator is still usable, and forcing a device algorithm per call works.
    AllreduceOptions staged = r.On(options);
    staged.algorithm = "device_staged";
    ASSERT_TRUE(r.comm->Allreduce(staged)->Wait(kWait).ok());
    EXPECT_EQ(data[0], 4.0f);
    EXPECT_EQ(GroupCalls(*r.comm).size(), 1u);  // staged: no device-group call
  });
}

// Ranks that call different collectives on device memory get cohort's mismatch error from the
// host part; the device group is aborted, never left waiting.
TEST(DeviceCollectivesTest, AMismatchIsCohortsErrorAndAbortsTheGroup) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = rank;
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    std::vector<float> data(64, 1.0f);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = rank == 0 ? 8 : 16;
    options.dtype = DataType::kFloat32;
    absl::Status status = r.comm->Allreduce(r.On(options))->Wait(kWait);
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()), HasSubstr("mismatch"));
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("stand-in")));
    // The device group never combined the mismatched buffers.
    EXPECT_EQ(data[0], 1.0f);
    EXPECT_EQ(data[7], 1.0f);
    ASSERT_NE(r.comm->device_group(), nullptr);
    EXPECT_FALSE(const_cast<device::DeviceGroup*>(r.comm->device_group())->AsyncError().ok());
    // The stream drains (its gate was opened on the failure; the aborted group's step fails).
    EXPECT_NE(r.stream->Synchronize(kWait).code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_FALSE(r.comm->Allreduce(r.On(options))->Wait(kWait).ok());
  });
}

TEST(DeviceCollectivesTest, AbortFailsPendingDeviceWork) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = rank;
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    std::vector<float> data(256, 1.0f);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = data.size();
    options.dtype = DataType::kFloat32;
    ASSERT_TRUE(r.comm->Allreduce(r.On(options))->Wait(kWait).ok());
    r.stream->Pause();
    std::shared_ptr<Work> work = r.comm->Allreduce(r.On(options));
    ASSERT_TRUE(r.comm->Barrier()->Wait(kWait).ok());  // the host part is done on both ranks
    if (rank == 0) r.comm->Abort(absl::CancelledError("test abort"));
    absl::Status status = work->Wait(kWait);
    EXPECT_FALSE(status.ok());
    if (rank == 0) {
      EXPECT_THAT(std::string(status.message()), HasSubstr("test abort"));
    }
    EXPECT_FALSE(const_cast<device::DeviceGroup*>(r.comm->device_group())->AsyncError().ok());
    r.stream->Resume();
    // The stream drains: gates open, the aborted group's steps fail instead of waiting.
    absl::Status drained = r.stream->Synchronize(kWait);
    EXPECT_NE(drained.code(), absl::StatusCode::kDeadlineExceeded) << drained;
  });
}

// An asynchronous error of the device group (NCCL's ncclCommGetAsyncError; here the fake group
// aborted behind the engine's back, as NCCL reports a failed peer) fails the pending operation
// with it and breaks the communicator.
TEST(DeviceCollectivesTest, TheGroupsAsyncErrorFailsPendingWork) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = rank;
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    std::vector<float> data(256, 1.0f);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = data.size();
    options.dtype = DataType::kFloat32;
    ASSERT_TRUE(r.comm->Allreduce(r.On(options))->Wait(kWait).ok());
    r.stream->Pause();
    std::shared_ptr<Work> work = r.comm->Allreduce(r.On(options));
    ASSERT_TRUE(r.comm->Barrier()->Wait(kWait).ok());  // the host part is done on both ranks
    if (rank == 0) {
      const_cast<device::DeviceGroup*>(r.comm->device_group())
          ->Abort(absl::InternalError("NCCL error: remote process exited (test)"));
    }
    absl::Status status = work->Wait(kWait);
    EXPECT_FALSE(status.ok());
    if (rank == 0) {
      EXPECT_THAT(std::string(status.message()), HasSubstr("remote process exited (test)"));
      EXPECT_THAT(std::string(status.message()), HasSubstr("allreduce(float32 x 256, sum) #"));
    }
    r.stream->Resume();
    EXPECT_NE(r.stream->Synchronize(kWait).code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_FALSE(r.comm->Barrier()->Wait(kWait).ok());  // broken
  });
}

// COHORT_CUDA_PATH=nccl where no group can be made: at creation when this process cannot make
// any (no NCCL), at the first CUDA operation when the ranks of a host share a device.
TEST(DeviceCollectivesTest, RequiredGroupsThatCannotBeMadeAreAnError) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    CommOptions options{.name = "no-groups"};
    options.timeout = kWait;
    options.cuda_path = "nccl";
    device::FakeDeviceBackendOptions fake;
    fake.groups = false;
    options.device_backend = std::make_shared<device::FakeDeviceBackend>(fake);
    auto refused = Communicator::Create(bootstrap, rank, size, options);
    ASSERT_FALSE(refused.ok());
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("COHORT_CUDA_PATH=nccl"));
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("use auto or staged"));

    RankSetup setup;
    setup.fake_device = 0;  // both ranks on one device
    setup.cuda_path = "nccl";
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    std::vector<float> data(16, 1.0f);
    AllreduceOptions call;
    call.input = data.data();
    call.output = data.data();
    call.count = data.size();
    call.dtype = DataType::kFloat32;
    absl::Status status = r.comm->Allreduce(r.On(call))->Wait(kWait);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("share device fake:0"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("COHORT_CUDA_PATH=auto"));
    // Host buffers are not concerned.
    call.memory = MemoryKind::kHost;
    call.stream = nullptr;
    ASSERT_TRUE(r.comm->Allreduce(call)->Wait(kWait).ok());
    EXPECT_EQ(data[0], 2.0f);
  });
}

// A device error (a failed kernel, here a failed fake stream) fails the operation with it and
// breaks the communicator on that rank; the peer hears of it.
TEST(DeviceCollectivesTest, AStreamFailureFailsTheOperation) {
  testing::RunRanks(2, [](int rank, int size, Bootstrap& bootstrap) {
    RankSetup setup;
    setup.fake_device = rank;
    DeviceRank r = MakeRank(bootstrap, rank, size, setup);
    ASSERT_NE(r.comm, nullptr);
    std::vector<float> data(256, 1.0f);
    AllreduceOptions options;
    options.input = data.data();
    options.output = data.data();
    options.count = data.size();
    options.dtype = DataType::kFloat32;
    ASSERT_TRUE(r.comm->Allreduce(r.On(options))->Wait(kWait).ok());
    if (rank == 0) r.stream->Pause();
    std::shared_ptr<Work> work = r.comm->Allreduce(r.On(options));
    if (rank == 0) r.stream->Fail(absl::InternalError("illegal memory access (test)"));
    absl::Status status = work->Wait(kWait);
    EXPECT_FALSE(status.ok());
    if (rank == 0) {
      EXPECT_THAT(std::string(status.message()), HasSubstr("illegal memory access (test)"));
      EXPECT_THAT(std::string(status.message()), HasSubstr("allreduce"));
    }
  });
}

}  // namespace
}  // namespace cohort
