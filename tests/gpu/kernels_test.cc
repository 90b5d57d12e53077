// The CUDA kernels (kernels/cuda_kernels.h) on a GPU: every (data type, reduce op) pair bit-exact
// against the CPU kernels of csrc/collectives/reduce.cc (any NaN matching any NaN), in and out of
// place, aligned and not; ReduceMany, average, cast and strided copy; then, with --bandwidth, the
// fp32 sum kernel's bandwidth on 256 MiB against cudaMemcpy device-to-device, measured
// alternately in this run. Without a usable GPU it prints SKIP and exits 77 (ctest: skipped).
//
//   kernels_gpu_test [gtest flags] [--bandwidth] [--bandwidth-only]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/reduce.h"
#include "gtest/gtest.h"
#include "kernels/cuda_kernels.h"
#include "kernels/cuda_status.h"
#include "support/kernel_data.h"

namespace cohort {
void PrintTo(DataType type, std::ostream* os) { *os << DataTypeName(type); }
void PrintTo(ReduceOp op, std::ostream* os) { *os << ReduceOpName(op); }
}  // namespace cohort

namespace cohort::cuda {
namespace {

using ::cohort::testing::CompareKernelElements;
using ::cohort::testing::KernelBytes;
using ::cohort::testing::kKernelOps;
using ::cohort::testing::kKernelTypes;
using ::cohort::testing::RandomKernelData;

#define ASSERT_CUDA(call)                                                                      \
  do {                                                                                         \
    const cudaError_t cuda_result_ = (call);                                                   \
    ASSERT_EQ(cuda_result_, cudaSuccess) << #call << ": " << cudaGetErrorString(cuda_result_); \
  } while (0)

// Device memory with room for a misaligning offset; freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&data_, bytes + 64) != cudaSuccess) data_ = nullptr;
  }
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  uint8_t* at(size_t offset) const { return static_cast<uint8_t*>(data_) + offset; }
  bool ok() const { return data_ != nullptr; }

 private:
  void* data_ = nullptr;
  size_t bytes_;
};

KernelBytes ToHost(const void* device, size_t bytes) {
  KernelBytes host(bytes);
  if (bytes > 0) cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost);
  return host;
}

void ToDevice(void* device, const KernelBytes& host) {
  if (!host.empty()) cudaMemcpy(device, host.data(), host.size(), cudaMemcpyHostToDevice);
}

class GpuReduceTest : public ::testing::TestWithParam<std::tuple<DataType, ReduceOp>> {};

TEST_P(GpuReduceTest, MatchesCpuKernels) {
  const auto [type, op] = GetParam();
  const bool supported = CheckReduceSupported(type, op).ok();
  ASSERT_EQ(GetReduceKernel(type, op) != nullptr, supported);
  ASSERT_EQ(GetReduceManyKernel(type, op) != nullptr, supported);
  if (!supported) GTEST_SKIP() << "not a supported pair";
  const ReduceKernel kernel = GetReduceKernel(type, op);
  const ReduceFn cpu = GetReduceFn(type, op);
  const size_t size = DataTypeSize(type);
  std::mt19937_64 rng(static_cast<uint64_t>(type) * 131 + static_cast<uint64_t>(op));
  for (size_t count : {size_t{1}, size_t{7}, size_t{1000}, size_t{65537}, (size_t{1} << 21) + 3}) {
    const KernelBytes a = RandomKernelData(type, count, rng);
    const KernelBytes b = RandomKernelData(type, count, rng);
    KernelBytes expected(count * size);
    cpu(expected.data(), a.data(), b.data(), count);
    DeviceBuffer out(count * size);
    DeviceBuffer in_a(count * size);
    DeviceBuffer in_b(count * size);
    ASSERT_TRUE(out.ok() && in_a.ok() && in_b.ok());
    struct Offsets {
      size_t out, a, b;
    };
    for (const Offsets o : {Offsets{0, 0, 0}, Offsets{1, 1, 1}, Offsets{0, 1, 0}}) {
      const std::string where =
          absl::StrCat("count ", count, ", offsets ", o.out, "/", o.a, "/", o.b);
      uint8_t* pa = in_a.at(o.a * size);
      uint8_t* pb = in_b.at(o.b * size);
      uint8_t* po = out.at(o.out * size);
      ToDevice(pa, a);
      ToDevice(pb, b);
      ASSERT_CUDA(kernel(po, pa, pb, count, nullptr));
      ASSERT_CUDA(cudaDeviceSynchronize());
      EXPECT_EQ(CompareKernelElements(type, expected.data(), ToHost(po, a.size()).data(), count),
                "")
          << where << ", out of place";
      ASSERT_CUDA(kernel(pa, pa, pb, count, nullptr));
      ASSERT_CUDA(cudaDeviceSynchronize());
      EXPECT_EQ(CompareKernelElements(type, expected.data(), ToHost(pa, a.size()).data(), count),
                "")
          << where << ", out == a";
      ToDevice(pa, a);
      ASSERT_CUDA(kernel(pb, pa, pb, count, nullptr));
      ASSERT_CUDA(cudaDeviceSynchronize());
      EXPECT_EQ(CompareKernelElements(type, expected.data(), ToHost(pb, b.size()).data(), count),
                "")
          << where << ", out == b";
    }
    // Average: the sum, then the division, as on the CPU.
    if (op == ReduceOp::kAvg) {
      KernelBytes averaged = expected;
      ScaleForAverage(averaged.data(), type, count, 3);
      ToDevice(in_a.at(0), a);
      ToDevice(in_b.at(0), b);
      ASSERT_CUDA(kernel(out.at(0), in_a.at(0), in_b.at(0), count, nullptr));
      ASSERT_CUDA(ScaleForAverage(out.at(0), type, count, 3, nullptr));
      ASSERT_CUDA(cudaDeviceSynchronize());
      EXPECT_EQ(
          CompareKernelElements(type, averaged.data(), ToHost(out.at(0), a.size()).data(), count),
          "")
          << "average of count " << count;
    }
  }
}

TEST_P(GpuReduceTest, ReduceManyMatchesCpuKernels) {
  const auto [type, op] = GetParam();
  if (!CheckReduceSupported(type, op).ok()) GTEST_SKIP() << "not a supported pair";
  const size_t size = DataTypeSize(type);
  std::mt19937_64 rng(static_cast<uint64_t>(type) * 7 + static_cast<uint64_t>(op));
  for (int num_inputs : {1, 3, 8}) {
    const size_t count = 100003;
    std::vector<KernelBytes> data;
    std::vector<const void*> host_inputs;
    for (int k = 0; k < num_inputs; ++k) data.push_back(RandomKernelData(type, count, rng));
    for (const KernelBytes& input : data) host_inputs.push_back(input.data());
    KernelBytes expected(count * size);
    GetReduceManyFn(type, op)(expected.data(), host_inputs.data(), num_inputs, count);
    std::vector<std::unique_ptr<DeviceBuffer>> buffers;
    std::vector<const void*> inputs;
    for (int k = 0; k < num_inputs; ++k) {
      buffers.push_back(std::make_unique<DeviceBuffer>(count * size));
      ASSERT_TRUE(buffers.back()->ok());
      ToDevice(buffers.back()->at(0), data[k]);
      inputs.push_back(buffers.back()->at(0));
    }
    DeviceBuffer out(count * size);
    ASSERT_CUDA(
        GetReduceManyKernel(type, op)(out.at(0), inputs.data(), num_inputs, count, nullptr));
    ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(
        CompareKernelElements(type, expected.data(), ToHost(out.at(0), count * size).data(), count),
        "")
        << num_inputs << " inputs";
    // In place into the first input.
    ASSERT_CUDA(GetReduceManyKernel(type, op)(buffers[0]->at(0), inputs.data(), num_inputs, count,
                                              nullptr));
    ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(CompareKernelElements(type, expected.data(),
                                    ToHost(buffers[0]->at(0), count * size).data(), count),
              "")
        << num_inputs << " inputs, out == inputs[0]";
  }
}

std::string PairName(const ::testing::TestParamInfo<std::tuple<DataType, ReduceOp>>& info) {
  return absl::StrCat(DataTypeName(std::get<0>(info.param)), "_",
                      ReduceOpName(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(AllPairs, GpuReduceTest,
                         ::testing::Combine(::testing::ValuesIn(kKernelTypes),
                                            ::testing::ValuesIn(kKernelOps)),
                         PairName);

TEST(GpuKernelsTest, ScaleMatchesCpuAverage) {
  std::mt19937_64 rng(5);
  for (DataType type : kKernelTypes) {
    for (int64_t divisor : {int64_t{3}, int64_t{-1}, int64_t{0}, int64_t{8}}) {
      const size_t count = 70001;
      const KernelBytes data = RandomKernelData(type, count, rng);
      KernelBytes expected = data;
      ScaleForAverage(expected.data(), type, count, divisor);
      DeviceBuffer buffer(data.size());
      ToDevice(buffer.at(0), data);
      ASSERT_CUDA(ScaleForAverage(buffer.at(0), type, count, divisor, nullptr));
      ASSERT_CUDA(cudaDeviceSynchronize());
      EXPECT_EQ(CompareKernelElements(type, expected.data(),
                                      ToHost(buffer.at(0), data.size()).data(), count),
                "")
          << DataTypeName(type) << " / " << divisor;
    }
  }
}

TEST(GpuKernelsTest, CastMatchesElementConversions) {
  auto is_signed = [](DataType type) {
    return type != DataType::kUInt8 && type != DataType::kBool;
  };
  for (DataType from : kKernelTypes) {
    for (DataType to : kKernelTypes) {
      const size_t count = 10007;
      KernelBytes in(count * DataTypeSize(from));
      for (size_t i = 0; i < count; ++i) {
        double value = static_cast<double>(i % 100);
        if (from == DataType::kBool) value = i % 3 == 0 ? 0 : 1;
        if (IsFloatingPoint(from) && i % 4 == 1) value += 0.5;
        if (IsFloatingPoint(from) && i % 4 == 2) value += 0.25;
        if (is_signed(from) && is_signed(to) && i % 2 == 1) value = -value;
        StoreElement(in.data(), from, i, value);
      }
      KernelBytes expected(count * DataTypeSize(to));
      for (size_t i = 0; i < count; ++i) {
        StoreElement(expected.data(), to, i, LoadElement(in.data(), from, i));
      }
      DeviceBuffer device_in(in.size());
      DeviceBuffer device_out(expected.size());
      ToDevice(device_in.at(0), in);
      ASSERT_CUDA(Cast(device_out.at(0), to, device_in.at(0), from, count, nullptr));
      ASSERT_CUDA(cudaDeviceSynchronize());
      EXPECT_EQ(CompareKernelElements(to, expected.data(),
                                      ToHost(device_out.at(0), expected.size()).data(), count),
                "")
          << DataTypeName(from) << " -> " << DataTypeName(to);
    }
  }
}

TEST(GpuKernelsTest, StridedCopyTransposes) {
  for (size_t element : {size_t{1}, size_t{2}, size_t{4}, size_t{8}, size_t{12}, size_t{16}}) {
    const int64_t rows = 517;
    const int64_t columns = 263;
    KernelBytes in(static_cast<size_t>(rows * columns) * element);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 13 + 5);
    KernelBytes expected(in.size());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < columns; ++c) {
        std::memcpy(expected.data() + (r * columns + c) * element,
                    in.data() + (c * rows + r) * element, element);
      }
    }
    DeviceBuffer device_in(in.size());
    DeviceBuffer device_out(in.size());
    ToDevice(device_in.at(0), in);
    const int64_t sizes[] = {rows, columns};
    const int64_t out_strides[] = {columns, 1};
    const int64_t in_strides[] = {1, rows};
    ASSERT_CUDA(StridedCopy(device_out.at(0), out_strides, device_in.at(0), in_strides, sizes, 2,
                            element, nullptr));
    ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(ToHost(device_out.at(0), in.size()), expected) << element << "-byte elements";
  }
}

TEST(GpuKernelsTest, RejectsPartlyOverlappingBuffers) {
  DeviceBuffer buffer(4096);
  const ReduceKernel kernel = GetReduceKernel(DataType::kFloat32, ReduceOp::kSum);
  EXPECT_EQ(kernel(buffer.at(4), buffer.at(0), buffer.at(0), 100, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(GetReduceKernel(DataType::kFloat32, ReduceOp::kBxor), nullptr);
  EXPECT_EQ(LaunchReduce(DataType::kBool, ReduceOp::kSum, buffer.at(0), buffer.at(0), buffer.at(0),
                         1, nullptr, {}),
            cudaErrorInvalidValue);
}

// ---------------------------------------------------------------------------------------------
// Bandwidth: bytes each call moves through device memory per second. The reduce kernel reads two
// buffers and writes one (3 x 256 MiB per call); cudaMemcpy device-to-device reads one and writes
// one (2 x 256 MiB). Runs alternate, after a warm-up; the median of each is reported.

double MedianMs(std::vector<float>& times) {
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

template <class Run>
float TimeMs(const Run& run, cudaEvent_t start, cudaEvent_t stop) {
  cudaEventRecord(start);
  run();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  return ms;
}

int RunBandwidth() {
  constexpr size_t kBytes = size_t{256} << 20;
  constexpr int kRepeats = 15;
  cudaDeviceProp properties{};
  cudaGetDeviceProperties(&properties, 0);
  std::printf(
      "bandwidth on %s (%d multiprocessors), 256 MiB buffers, median of %d alternating "
      "runs\n",
      properties.name, properties.multiProcessorCount, kRepeats);
  DeviceBuffer a(kBytes);
  DeviceBuffer b(kBytes);
  DeviceBuffer out(kBytes);
  if (!a.ok() || !b.ok() || !out.ok()) {
    std::printf("FAIL  cannot allocate 3 x 256 MiB\n");
    return 1;
  }
  cudaMemset(a.at(0), 0, kBytes);
  cudaMemset(b.at(0), 0, kBytes);
  cudaEvent_t start;
  cudaEvent_t stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  auto memcpy_run = [&] { cudaMemcpyAsync(out.at(0), a.at(0), kBytes, cudaMemcpyDeviceToDevice); };
  struct Variant {
    const char* name;
    DataType type;
    LaunchShape shape;
    bool in_place;
  };
  std::vector<Variant> variants = {{"fp32 sum (default grid)", DataType::kFloat32, {}, false},
                                   {"fp32 sum in place", DataType::kFloat32, {}, true},
                                   {"bf16 sum", DataType::kBFloat16, {}, false},
                                   {"fp16 sum", DataType::kFloat16, {}, false}};
  for (int threads : {128, 256, 512}) {  // 512: the kernels' launch bound
    for (int blocks : {2, 4, 8, 16}) {
      variants.push_back({nullptr, DataType::kFloat32, {threads, blocks}, false});
    }
  }
  double best_ratio = 0;
  std::string best_shape;
  double default_ratio = 0;
  for (const Variant& variant : variants) {
    const size_t count = kBytes / DataTypeSize(variant.type);
    auto reduce_run = [&] {
      return LaunchReduce(variant.type, ReduceOp::kSum, variant.in_place ? a.at(0) : out.at(0),
                          a.at(0), b.at(0), count, nullptr, variant.shape);
    };
    cudaError_t warm_up = reduce_run();
    memcpy_run();
    if (warm_up == cudaSuccess) warm_up = cudaDeviceSynchronize();
    if (warm_up != cudaSuccess) {
      std::printf("FAIL  %s: %s\n", variant.name ? variant.name : "a launch shape",
                  cudaGetErrorString(warm_up));
      return 1;
    }
    std::vector<float> reduce_ms;
    std::vector<float> memcpy_ms;
    for (int i = 0; i < kRepeats; ++i) {
      reduce_ms.push_back(TimeMs(reduce_run, start, stop));
      memcpy_ms.push_back(TimeMs(memcpy_run, start, stop));
    }
    const double reduce_gbps = 3.0 * kBytes / (MedianMs(reduce_ms) * 1e-3) / 1e9;
    const double memcpy_gbps = 2.0 * kBytes / (MedianMs(memcpy_ms) * 1e-3) / 1e9;
    const double ratio = reduce_gbps / memcpy_gbps;
    const std::string name =
        variant.name != nullptr
            ? variant.name
            : absl::StrCat("fp32 sum, ", variant.shape.threads_per_block, " threads x ",
                           variant.shape.blocks_per_multiprocessor, " blocks/SM");
    std::printf("  %-36s %8.1f GB/s   memcpy D2D %8.1f GB/s   ratio %5.1f%%\n", name.c_str(),
                reduce_gbps, memcpy_gbps, 100 * ratio);
    if (variant.name != nullptr && std::string(variant.name) == "fp32 sum (default grid)") {
      default_ratio = ratio;
    }
    if (variant.name == nullptr && ratio > best_ratio) {
      best_ratio = ratio;
      best_shape = name;
    }
  }
  std::printf(
      "fp32 sum, 256 MiB, default grid: %.1f%% of cudaMemcpy D2D (goal >= 85%%: %s); "
      "best grid: %s at %.1f%%\n",
      100 * default_ratio, default_ratio >= 0.85 ? "met" : "NOT met", best_shape.c_str(),
      100 * best_ratio);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return 0;
}

}  // namespace
}  // namespace cohort::cuda

int main(int argc, char** argv) {
  absl::StatusOr<int> devices = cohort::cuda::DeviceCount();
  if (!devices.ok()) {
    std::printf("SKIP: %s\n", std::string(devices.status().message()).c_str());
    return 77;
  }
  bool bandwidth = false;
  bool bandwidth_only = false;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bandwidth") == 0) {
      bandwidth = true;
    } else if (std::strcmp(argv[i], "--bandwidth-only") == 0) {
      bandwidth = bandwidth_only = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  int status = 0;
  if (!bandwidth_only) {
    int rest_count = static_cast<int>(rest.size());
    ::testing::InitGoogleTest(&rest_count, rest.data());
    status = RUN_ALL_TESTS();
  }
  if (bandwidth && cohort::cuda::RunBandwidth() != 0) status = 1;
  return status;
}
