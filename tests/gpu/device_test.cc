// csrc/collectives/device/ on a GPU: CudaStream's events, waits, copies and gates, the CUDA
// backend's pinned memory, the NCCL device group with real NCCL, and a communicator's collectives
// on CUDA buffers (the engine's device path, NCCL or staged). NCCL needs one GPU per rank, so on one GPU the group runs with 1 rank
// (every collective, which still goes through NCCL's kernels) and the 2-rank case (ranks as
// threads, one GPU each) runs only with two or more GPUs; a skipped case says why. Without a
// usable GPU it prints SKIP and exits 77 (ctest: skipped).
#include <cuda_runtime_api.h>

#include <cstdio>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "collectives/device/backend.h"
#include "collectives/device/cuda_stream.h"
#include "collectives/in_memory_bootstrap.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda_kernels.h"
#include "kernels/cuda_status.h"
#if COHORT_HAVE_NCCL
#include "collectives/device/nccl_device_group.h"
#endif

namespace cohort::device {
namespace {

constexpr absl::Duration kWait = absl::Seconds(60);
int device_count = 0;

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t count) : count_(count) { cudaMalloc(&data_, count * sizeof(T) + 1); }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return data_; }
  void Set(const std::vector<T>& values) {
    cudaMemcpy(data_, values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  std::vector<T> Get() const {
    std::vector<T> values(count_);
    cudaMemcpy(values.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost);
    return values;
  }

 private:
  T* data_ = nullptr;
  size_t count_;
};

TEST(CudaStreamTest, EventsCopiesAndWaits) {
  auto first = CudaStream::Create(0);
  auto second = CudaStream::Create(0);
  ASSERT_TRUE(first.ok() && second.ok()) << first.status() << second.status();
  const size_t count = size_t{1} << 24;  // 64 MiB: the copy takes long enough to be pending
  std::vector<float> host(count, 2.5f);
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, count * sizeof(float)), cudaSuccess);
  std::memcpy(pinned, host.data(), count * sizeof(float));
  DeviceArray<float> device(count);
  DeviceArray<float> copy(count);
  ASSERT_TRUE((*first)->CopyAsync(device.get(), pinned, count * sizeof(float)).ok());
  auto copied = (*first)->Record();
  ASSERT_TRUE(copied.ok()) << copied.status();
  // The second stream waits on the device for the first's copy, then copies on.
  ASSERT_TRUE((*second)->WaitFor(**copied).ok());
  ASSERT_TRUE((*second)->CopyAsync(copy.get(), device.get(), count * sizeof(float)).ok());
  auto done = (*second)->Record();
  ASSERT_TRUE(done.ok());
  ASSERT_TRUE((*done)->Wait(kWait).ok());
  EXPECT_TRUE(*(*copied)->Query());
  EXPECT_EQ(copy.Get(), host);
  cudaFreeHost(pinned);
  // A borrowed stream (torch's current stream, here the legacy default) records too.
  auto wrapped = CudaStream::Wrap(nullptr, 0);
  auto event = wrapped->Record();
  ASSERT_TRUE(event.ok());
  EXPECT_TRUE((*event)->Wait(kWait).ok());
  EXPECT_EQ(CudaStream::Create(device_count).status().code(), absl::StatusCode::kInvalidArgument);
}

// The gate: work behind WaitValue starts only once the host raised the word in pinned memory.
TEST(CudaStreamTest, GateHoldsTheStreamUntilTheHostOpensIt) {
  auto stream = CudaStream::Create(0);
  ASSERT_TRUE(stream.ok()) << stream.status();
  std::shared_ptr<DeviceBackend> backend = DefaultDeviceBackend();
  ASSERT_NE(backend, nullptr);
  auto memory = backend->AllocateHost(64);
  ASSERT_TRUE(memory.ok()) << memory.status();
  auto* word = new (memory->get()->data()) std::atomic<uint64_t>(0);
  DeviceArray<float> data(1024);
  data.Set(std::vector<float>(1024, 1.0f));
  // The copy's source is pinned too: a copy from pageable memory would wait on the host for the
  // stream, which waits for the host.
  float* pinned = static_cast<float*>(memory->get()->data()) + 2;  // after the word
  pinned[0] = pinned[1] = 7.0f;
  ASSERT_TRUE((*stream)->WaitValue(word, 1).ok());
  ASSERT_TRUE((*stream)->CopyAsync(data.get(), pinned, 2 * sizeof(float)).ok());
  auto passed = (*stream)->Record();
  ASSERT_TRUE(passed.ok());
  EXPECT_EQ((*passed)->Wait(absl::Milliseconds(200)).code(), absl::StatusCode::kDeadlineExceeded);
  word->store(1, std::memory_order_release);
  ASSERT_TRUE((*passed)->Wait(kWait).ok());
  EXPECT_EQ(data.Get()[0], 7.0f);
  EXPECT_EQ(data.Get()[2], 1.0f);
}

// A communicator's allreduce on CUDA buffers, one rank: the engine's device path on a real
// stream (NCCL's one-rank group where libnccl.so.2 loads, else staged).
TEST(CommunicatorGpuTest, AllreduceOnCudaBuffers) {
  auto state = std::make_shared<InMemoryBootstrap::State>();
  InMemoryBootstrap bootstrap(state);
  CommOptions options{.name = "gpu-engine"};
  options.timeout = kWait;
  auto comm = Communicator::Create(bootstrap, 0, 1, options);
  ASSERT_TRUE(comm.ok()) << comm.status();
  auto owned = CudaStream::Create(0);
  ASSERT_TRUE(owned.ok()) << owned.status();
  std::shared_ptr<Stream> stream(std::move(*owned));
  const size_t count = 1 << 20;
  DeviceArray<float> data(count);
  data.Set(std::vector<float>(count, 3.0f));
  for (const char* algorithm : {"", "device_staged"}) {
    AllreduceOptions call;
    call.input = data.get();
    call.output = data.get();
    call.count = count;
    call.dtype = DataType::kFloat32;
    call.memory = MemoryKind::kCuda;
    call.stream = stream;
    call.algorithm = algorithm;
    std::shared_ptr<Work> work = (*comm)->Allreduce(call);
    ASSERT_NE(work->device_event(), nullptr);
    ASSERT_TRUE(work->Wait(kWait).ok()) << work->status();
    EXPECT_EQ(data.Get()[count - 1], 3.0f) << algorithm;
  }
  OpArgs args;
  args.op = OpType::kAllreduce;
  args.count = count;
  args.memory = MemoryKind::kCuda;
  std::printf("allreduce on CUDA memory, 1 rank: %s (device group: %s)\n",
              (*comm)->ChosenAlgorithm(args).c_str(),
              (*comm)->device_group() != nullptr ? (*comm)->device_group()->backend() : "none");
}

#if COHORT_HAVE_NCCL

// The group's collectives on one rank, each checked: NCCL's kernels run even with one rank.
void RunEveryCollective(NcclDeviceGroup& group, CudaStream& stream, int rank, int size) {
  const size_t count = 1 << 20;
  std::vector<float> values(count * size);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>((i % 97) + rank);
  DeviceArray<float> send(count * size);
  DeviceArray<float> recv(count * size);
  send.Set(values);
  auto expect_sum = [&](size_t i) {  // sum over ranks of (i % 97) + r
    return static_cast<float>(size * (i % 97) + size * (size - 1) / 2);
  };

  auto event =
      group.Allreduce(send.get(), recv.get(), count, DataType::kFloat32, ReduceOp::kSum, stream);
  ASSERT_TRUE(event.ok()) << event.status();
  ASSERT_TRUE((*event)->Wait(kWait).ok());
  std::vector<float> got = recv.Get();
  for (size_t i = 0; i < count; i += 4099) ASSERT_EQ(got[i], expect_sum(i)) << "allreduce " << i;

  event = group.ReduceScatter(send.get(), recv.get(), count, DataType::kFloat32, ReduceOp::kSum,
                              stream);
  ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
  got = recv.Get();
  for (size_t i = 0; i < count; i += 4099) {
    ASSERT_EQ(got[i], expect_sum(rank * count + i)) << "reduce_scatter " << i;
  }

  event = group.Allgather(send.get(), recv.get(), count, DataType::kFloat32, stream);
  ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
  got = recv.Get();
  for (int r = 0; r < size; ++r) {
    ASSERT_EQ(got[r * count + 5], static_cast<float>((5 % 97) + r)) << "allgather block " << r;
  }

  event = group.Broadcast(send.get(), recv.get(), count, DataType::kFloat32, 0, stream);
  ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
  EXPECT_EQ(recv.Get()[1000], static_cast<float>(1000 % 97)) << "broadcast";

  // Integer average: NCCL's sum, then cohort's division kernel (truncating toward zero).
  DeviceArray<int32_t> ints(8);
  ints.Set({-7, 7, 9, -9, 1, 2, 3, 4});
  event = group.Allreduce(ints.get(), ints.get(), 8, DataType::kInt32, ReduceOp::kAvg, stream);
  ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
  EXPECT_EQ(ints.Get(), (std::vector<int32_t>{-7, 7, 9, -9, 1, 2, 3, 4})) << "int avg";

  event =
      group.Reduce(send.get(), recv.get(), count, DataType::kFloat32, ReduceOp::kMax, 0, stream);
  ASSERT_TRUE(event.ok() && (*event)->Wait(kWait).ok());
  if (rank == 0) {
    EXPECT_EQ(recv.Get()[96], static_cast<float>(96 + size - 1)) << "reduce max";
  }
  EXPECT_TRUE(group.AsyncError().ok());
}

TEST(NcclDeviceGroupGpuTest, OneRankRunsEveryCollective) {
  auto api = LoadNcclApi();
  if (!api.ok()) GTEST_SKIP() << api.status();
  std::printf("NCCL: %s\n", (*api)->library.c_str());
  auto state = std::make_shared<InMemoryBootstrap::State>();
  InMemoryBootstrap bootstrap(state);
  NcclDeviceGroupOptions options;
  options.device = 0;
  options.timeout = kWait;
  auto group = NcclDeviceGroup::Create(bootstrap, "nccl/gpu1", 0, 1, options);
  ASSERT_TRUE(group.ok()) << group.status();
  auto stream = CudaStream::Create(0);
  ASSERT_TRUE(stream.ok());
  RunEveryCollective(**group, **stream, 0, 1);
  // What NCCL cannot do is refused before NCCL is called.
  DeviceArray<int32_t> ints(4);
  EXPECT_EQ((*group)
                ->Allreduce(ints.get(), ints.get(), 4, DataType::kInt32, ReduceOp::kBxor, **stream)
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  (*group)->Abort(absl::AbortedError("test abort"));
  EXPECT_EQ((*group)
                ->Allreduce(ints.get(), ints.get(), 4, DataType::kInt32, ReduceOp::kSum, **stream)
                .status()
                .code(),
            absl::StatusCode::kAborted);
}

TEST(NcclDeviceGroupGpuTest, TwoRanksOnTwoGpus) {
  if (device_count < 2) {
    GTEST_SKIP() << "NCCL needs one GPU per rank and this machine has " << device_count;
  }
  auto api = LoadNcclApi();
  if (!api.ok()) GTEST_SKIP() << api.status();
  auto state = std::make_shared<InMemoryBootstrap::State>();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      cudaSetDevice(rank);
      InMemoryBootstrap bootstrap(state);
      NcclDeviceGroupOptions options;
      options.device = rank;
      options.timeout = kWait;
      auto group = NcclDeviceGroup::Create(bootstrap, "nccl/gpu2", rank, 2, options);
      ASSERT_TRUE(group.ok()) << group.status();
      auto stream = CudaStream::Create(rank);
      ASSERT_TRUE(stream.ok());
      RunEveryCollective(**group, **stream, rank, 2);
    });
  }
  for (auto& thread : threads) thread.join();
}

#endif  // COHORT_HAVE_NCCL

}  // namespace
}  // namespace cohort::device

int main(int argc, char** argv) {
  absl::StatusOr<int> devices = cohort::cuda::DeviceCount();
  if (!devices.ok()) {
    std::printf("SKIP: %s\n", std::string(devices.status().message()).c_str());
    return 77;
  }
  cohort::device::device_count = *devices;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
