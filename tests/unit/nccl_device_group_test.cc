// NcclDeviceGroup's logic with a fake NCCL behind its function table (nccl_api.h), so it runs
// without NCCL or a GPU: the unique id from rank 0 through the Bootstrap, non-blocking set-up
// with its timeout and abort, the mapping of cohort's types and reductions to NCCL's, NCCL's
// errors as Status naming the call, the rank and NCCL's reason, ncclInProgress handling,
// asynchronous errors, Abort and destruction. tests/gpu/cuda_device_test.cc runs real NCCL.
#include "collectives/device/nccl_device_group.h"

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/device/fake_stream.h"
#include "collectives/in_memory_bootstrap.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::device {
namespace {

using ::testing::HasSubstr;

// What the fake NCCL was asked, and how it answers.
struct FakeNccl {
  std::mutex mutex;
  int unique_ids = 0;
  std::vector<std::string> init_ids;
  std::vector<int> init_ranks;
  int init_size = 0;
  int init_blocking = -2;
  ncclResult_t init_result = ncclInProgress;
  int polls_in_progress = 2;  // ncclCommGetAsyncError answers ncclInProgress this many times
  bool never_ready = false;
  ncclResult_t async_state = ncclSuccess;
  ncclResult_t collective_result = ncclSuccess;
  int aborts = 0;
  int destroys = 0;
  int finalizes = 0;
  std::string last_error;
  struct Call {
    std::string name;
    size_t count;
    ncclDataType_t type;
    int op;  // -1 for data movement
    int root;
    cudaStream_t stream;
  };
  std::vector<Call> calls;
  int scales = 0;
  int64_t scale_divisor = 0;
  std::vector<int> devices_set;
  int current_device = 0;
};

FakeNccl* fake = nullptr;

ncclResult_t FakeGetVersion(int* version) {
  *version = 22809;
  return ncclSuccess;
}
ncclResult_t FakeGetUniqueId(ncclUniqueId* id) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  std::memset(id->internal, 'A' + fake->unique_ids++, sizeof(id->internal));
  id->internal[0] = '\0';  // binary: must survive the bootstrap
  return ncclSuccess;
}
ncclResult_t FakeInit(ncclComm_t* comm, int size, ncclUniqueId id, int rank, ncclConfig_t* config) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  fake->init_ids.emplace_back(id.internal, sizeof(id.internal));
  fake->init_ranks.push_back(rank);
  fake->init_size = size;
  fake->init_blocking = config->blocking;
  *comm = reinterpret_cast<ncclComm_t>(static_cast<uintptr_t>(rank + 1) * 64);
  return fake->init_result;
}
ncclResult_t FakeGetAsyncError(ncclComm_t, ncclResult_t* state) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  if (fake->never_ready || fake->polls_in_progress > 0) {
    if (fake->polls_in_progress > 0) --fake->polls_in_progress;
    *state = ncclInProgress;
  } else {
    *state = fake->async_state;
  }
  return ncclSuccess;
}
ncclResult_t FakeFinalize(ncclComm_t) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  ++fake->finalizes;
  return ncclSuccess;
}
ncclResult_t FakeDestroy(ncclComm_t) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  ++fake->destroys;
  return ncclSuccess;
}
ncclResult_t FakeAbort(ncclComm_t) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  ++fake->aborts;
  return ncclSuccess;
}
const char* FakeErrorString(ncclResult_t) { return "fake NCCL error text"; }
const char* FakeLastError(ncclComm_t) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  return fake->last_error.c_str();
}
ncclResult_t Record(const char* name, size_t count, ncclDataType_t type, int op, int root,
                    cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  fake->calls.push_back({name, count, type, op, root, stream});
  return fake->collective_result;
}
ncclResult_t FakeAllReduce(const void*, void*, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t, cudaStream_t stream) {
  return Record("allreduce", count, type, op, -1, stream);
}
ncclResult_t FakeReduceScatter(const void*, void*, size_t count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t, cudaStream_t stream) {
  return Record("reduce_scatter", count, type, op, -1, stream);
}
ncclResult_t FakeAllGather(const void*, void*, size_t count, ncclDataType_t type, ncclComm_t,
                           cudaStream_t stream) {
  return Record("allgather", count, type, -1, -1, stream);
}
ncclResult_t FakeBroadcast(const void*, void*, size_t count, ncclDataType_t type, int root,
                           ncclComm_t, cudaStream_t stream) {
  return Record("broadcast", count, type, -1, root, stream);
}
ncclResult_t FakeReduce(const void*, void*, size_t count, ncclDataType_t type, ncclRedOp_t op,
                        int root, ncclComm_t, cudaStream_t stream) {
  return Record("reduce", count, type, op, root, stream);
}
cudaError_t FakeGetDevice(int* device) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  *device = fake->current_device;
  return cudaSuccess;
}
cudaError_t FakeSetDevice(int device) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  fake->devices_set.push_back(device);
  fake->current_device = device;
  return cudaSuccess;
}
cudaError_t FakeScale(void*, DataType, size_t, int64_t divisor, cudaStream_t) {
  std::lock_guard<std::mutex> lock(fake->mutex);
  ++fake->scales;
  fake->scale_divisor = divisor;
  return cudaSuccess;
}

const NcclApi kFakeApi = {FakeGetVersion, FakeGetUniqueId, FakeInit,          FakeGetAsyncError,
                          FakeFinalize,   FakeDestroy,     FakeAbort,         FakeErrorString,
                          FakeLastError,  FakeAllReduce,   FakeReduceScatter, FakeAllGather,
                          FakeBroadcast,  FakeReduce,      FakeGetDevice,     FakeSetDevice,
                          FakeScale,      "fake NCCL"};

// A stream that says it is CUDA (the group only reads its handle and records on it); its events
// come from a FakeStream and are complete at once.
class PretendCudaStream final : public Stream {
 public:
  StreamKind kind() const override { return StreamKind::kCuda; }
  int device() const override { return 1; }
  void* native_handle() const override { return reinterpret_cast<void*>(0x5151); }
  absl::StatusOr<std::unique_ptr<Event>> Record() override { return events_.Record(); }
  absl::Status WaitFor(Event&) override { return absl::UnimplementedError("not in this test"); }
  absl::Status CopyAsync(void*, const void*, size_t) override {
    return absl::UnimplementedError("not in this test");
  }
  absl::Status WaitValue(const std::atomic<uint64_t>*, uint64_t) override {
    return absl::UnimplementedError("not in this test");
  }

 private:
  FakeStream events_;
};

class NcclDeviceGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = std::make_unique<FakeNccl>();
    fake = state_.get();
  }
  void TearDown() override { fake = nullptr; }

  NcclDeviceGroupOptions Options(int device = 1) {
    NcclDeviceGroupOptions options;
    options.api = &kFakeApi;
    options.device = device;
    options.timeout = absl::Seconds(10);
    options.label = "comm 'test'";
    return options;
  }

  std::unique_ptr<NcclDeviceGroup> CreateOne(NcclDeviceGroupOptions options) {
    auto bootstrap_state = std::make_shared<InMemoryBootstrap::State>();
    InMemoryBootstrap bootstrap(bootstrap_state);
    auto group = NcclDeviceGroup::Create(bootstrap, "nccl/0", 0, 1, std::move(options));
    EXPECT_TRUE(group.ok()) << group.status();
    return group.ok() ? std::move(*group) : nullptr;
  }

  std::unique_ptr<FakeNccl> state_;
};

TEST_F(NcclDeviceGroupTest, EveryRankInitialisesWithRankZerosId) {
  auto bootstrap_state = std::make_shared<InMemoryBootstrap::State>();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 3; ++rank) {
    threads.emplace_back([&, rank] {
      InMemoryBootstrap bootstrap(bootstrap_state);
      auto group = NcclDeviceGroup::Create(bootstrap, "nccl/0", rank, 3, Options(rank));
      ASSERT_TRUE(group.ok()) << group.status();
      EXPECT_EQ((*group)->rank(), rank);
      EXPECT_STREQ((*group)->backend(), "nccl");
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(fake->unique_ids, 1);
  ASSERT_EQ(fake->init_ids.size(), 3u);
  EXPECT_EQ(fake->init_ids[0], fake->init_ids[1]);
  EXPECT_EQ(fake->init_ids[0], fake->init_ids[2]);
  EXPECT_EQ(fake->init_ids[0][0], '\0');
  EXPECT_EQ(fake->init_ids[0][5], 'A');
  EXPECT_EQ(fake->init_size, 3);
  EXPECT_EQ(fake->init_blocking, 0);  // non-blocking, so set-up can time out
  // Healthy groups are finalized and destroyed, not aborted.
  EXPECT_EQ(fake->finalizes, 3);
  EXPECT_EQ(fake->destroys, 3);
  EXPECT_EQ(fake->aborts, 0);
}

TEST_F(NcclDeviceGroupTest, SetUpThatNeverFinishesTimesOutAndAborts) {
  fake->never_ready = true;
  NcclDeviceGroupOptions options = Options();
  options.timeout = absl::Milliseconds(100);
  auto bootstrap_state = std::make_shared<InMemoryBootstrap::State>();
  InMemoryBootstrap bootstrap(bootstrap_state);
  auto group = NcclDeviceGroup::Create(bootstrap, "nccl/0", 0, 1, options);
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(group.status().message()), HasSubstr("did not finish within 100ms"));
  EXPECT_THAT(std::string(group.status().message()),
              HasSubstr("comm 'test': nccl device group rank 0/1 (cuda:1)"));
  EXPECT_EQ(fake->aborts, 1);
}

TEST_F(NcclDeviceGroupTest, SetUpFailureNamesNcclsReason) {
  fake->init_result = ncclSystemError;
  fake->last_error = "socket: connection refused";
  auto bootstrap_state = std::make_shared<InMemoryBootstrap::State>();
  InMemoryBootstrap bootstrap(bootstrap_state);
  auto group = NcclDeviceGroup::Create(bootstrap, "nccl/0", 0, 1, Options());
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.status().code(), absl::StatusCode::kUnavailable);
  const std::string message(group.status().message());
  EXPECT_THAT(message, HasSubstr("ncclCommInitRankConfig failed: ncclSystemError"));
  EXPECT_THAT(message, HasSubstr("socket: connection refused"));
  EXPECT_EQ(fake->aborts, 1);
}

TEST_F(NcclDeviceGroupTest, MapsTypesAndReductions) {
  auto group = CreateOne(Options());
  ASSERT_NE(group, nullptr);
  PretendCudaStream stream;
  float data[8] = {};
  ASSERT_TRUE(group->Allreduce(data, data, 8, DataType::kFloat32, ReduceOp::kAvg, stream).ok());
  ASSERT_TRUE(group->Allreduce(data, data, 8, DataType::kInt32, ReduceOp::kAvg, stream).ok());
  ASSERT_TRUE(group->Allreduce(data, data, 8, DataType::kBool, ReduceOp::kBand, stream).ok());
  ASSERT_TRUE(
      group->ReduceScatter(data, data, 4, DataType::kBFloat16, ReduceOp::kMax, stream).ok());
  ASSERT_TRUE(group->Allgather(data, data, 2, DataType::kFloat16, stream).ok());
  ASSERT_TRUE(group->Broadcast(data, data, 8, DataType::kInt64, 0, stream).ok());
  ASSERT_TRUE(group->Reduce(data, data, 8, DataType::kUInt8, ReduceOp::kProd, 0, stream).ok());
  ASSERT_EQ(fake->calls.size(), 7u);
  EXPECT_EQ(fake->calls[0].op, ncclAvg);
  EXPECT_EQ(fake->calls[0].type, ncclFloat32);
  EXPECT_EQ(fake->calls[1].op, ncclSum);  // integer avg: sum, then cohort's division kernel
  EXPECT_EQ(fake->scales, 1);
  EXPECT_EQ(fake->scale_divisor, 1);
  EXPECT_EQ(fake->calls[2].op, ncclMin);
  EXPECT_EQ(fake->calls[2].type, ncclUint8);
  EXPECT_EQ(fake->calls[3].name, "reduce_scatter");
  EXPECT_EQ(fake->calls[3].type, ncclBfloat16);
  EXPECT_EQ(fake->calls[3].count, 4u);
  EXPECT_EQ(fake->calls[4].type, ncclFloat16);
  EXPECT_EQ(fake->calls[5].name, "broadcast");
  EXPECT_EQ(fake->calls[6].op, ncclProd);
  EXPECT_EQ(fake->calls[6].root, 0);
  EXPECT_EQ(fake->calls[0].stream, reinterpret_cast<cudaStream_t>(0x5151));
  // Every call ran with the group's device current, and the caller's device came back.
  EXPECT_EQ(fake->current_device, 0);
  EXPECT_THAT(fake->devices_set, ::testing::Contains(1));
}

TEST_F(NcclDeviceGroupTest, RefusesWhatNcclCannotDoWithoutCallingIt) {
  auto group = CreateOne(Options());
  ASSERT_NE(group, nullptr);
  PretendCudaStream stream;
  int32_t data[4] = {};
  auto event = group->Allreduce(data, data, 4, DataType::kInt32, ReduceOp::kBxor, stream);
  EXPECT_EQ(event.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(event.status().message()), HasSubstr("allreduce of 4 int32 (bxor)"));
  FakeStream host_stream;
  event = group->Allreduce(data, data, 4, DataType::kInt32, ReduceOp::kSum, host_stream);
  EXPECT_EQ(event.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(event.status().message()), HasSubstr("not on a fake stream"));
  EXPECT_TRUE(fake->calls.empty());
}

TEST_F(NcclDeviceGroupTest, ACollectiveErrorNamesTheCallRankAndReason) {
  auto group = CreateOne(Options());
  ASSERT_NE(group, nullptr);
  PretendCudaStream stream;
  fake->collective_result = ncclRemoteError;
  fake->last_error = "peer 10.0.0.2 closed the connection";
  float data[8] = {};
  auto event = group->Allreduce(data, data, 8, DataType::kFloat32, ReduceOp::kSum, stream);
  ASSERT_FALSE(event.ok());
  EXPECT_EQ(event.status().code(), absl::StatusCode::kUnavailable);
  const std::string message(event.status().message());
  EXPECT_THAT(message, HasSubstr("nccl device group rank 0/1 (cuda:1)"));
  EXPECT_THAT(message, HasSubstr("allreduce of 8 float32 (sum): ncclAllReduce failed"));
  EXPECT_THAT(message, HasSubstr("ncclRemoteError (fake NCCL error text)"));
  EXPECT_THAT(message, HasSubstr("peer 10.0.0.2 closed the connection"));
  // The group failed: later calls return the same error without calling NCCL.
  fake->collective_result = ncclSuccess;
  EXPECT_EQ(
      group->Allreduce(data, data, 8, DataType::kFloat32, ReduceOp::kSum, stream).status().code(),
      absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake->calls.size(), 1u);
  EXPECT_EQ(group->AsyncError().code(), absl::StatusCode::kUnavailable);
}

TEST_F(NcclDeviceGroupTest, ABadArgumentLeavesTheGroupUsable) {
  auto group = CreateOne(Options());
  ASSERT_NE(group, nullptr);
  PretendCudaStream stream;
  fake->collective_result = ncclInvalidArgument;
  float data[8] = {};
  EXPECT_EQ(
      group->Allreduce(data, data, 8, DataType::kFloat32, ReduceOp::kSum, stream).status().code(),
      absl::StatusCode::kInvalidArgument);
  fake->collective_result = ncclSuccess;
  EXPECT_TRUE(group->Allreduce(data, data, 8, DataType::kFloat32, ReduceOp::kSum, stream).ok());
}

TEST_F(NcclDeviceGroupTest, InProgressIsWaitedOutBeforeTheEvent) {
  auto group = CreateOne(Options());
  ASSERT_NE(group, nullptr);
  PretendCudaStream stream;
  fake->collective_result = ncclInProgress;
  fake->polls_in_progress = 3;
  float data[8] = {};
  auto event = group->Allreduce(data, data, 8, DataType::kFloat32, ReduceOp::kSum, stream);
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(fake->polls_in_progress, 0);
  // Never leaving ncclInProgress is an error after the timeout, and Abort ends the wait early.
  fake->never_ready = true;
  std::thread aborter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    group->Abort(absl::AbortedError("test abort"));
  });
  event = group->Allreduce(data, data, 8, DataType::kFloat32, ReduceOp::kSum, stream);
  aborter.join();
  EXPECT_EQ(event.status().code(), absl::StatusCode::kAborted) << event.status();
  EXPECT_EQ(fake->aborts, 1);
}

TEST_F(NcclDeviceGroupTest, AsyncErrorsAndAbort) {
  auto group = CreateOne(Options());
  ASSERT_NE(group, nullptr);
  EXPECT_TRUE(group->AsyncError().ok());
  fake->async_state = ncclRemoteError;
  fake->last_error = "rank 3 is gone";
  absl::Status status = group->AsyncError();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("NCCL reported an asynchronous error"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("rank 3 is gone"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("rank 0/1"));
  group->Abort(absl::AbortedError("engine abort"));
  group->Abort(absl::AbortedError("second abort"));
  EXPECT_EQ(fake->aborts, 1);
  // The first failure stays.
  EXPECT_EQ(group->AsyncError().code(), absl::StatusCode::kUnavailable);
  group.reset();
  EXPECT_EQ(fake->destroys, 0);  // aborted: freed by ncclCommAbort
  EXPECT_EQ(fake->aborts, 1);
}

}  // namespace
}  // namespace cohort::device
