#include "bench/device_buffers.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "collectives/device/fake_stream.h"
#include "common/status.h"

#if COHORT_BENCH_CUDA
#include <cuda_runtime_api.h>

#include "collectives/device/cuda_stream.h"
#include "kernels/cuda_status.h"
#endif

namespace cohort::bench {

std::unique_ptr<DeviceMirror> DeviceMirror::OpenFake(int local_rank) {
  return std::unique_ptr<DeviceMirror>(new DeviceMirror(
      local_rank, std::make_shared<device::FakeStream>(local_rank), /*fake=*/true));
}

absl::StatusOr<std::unique_ptr<DeviceMirror>> DeviceMirror::Open(int local_rank) {
#if COHORT_BENCH_CUDA
  absl::StatusOr<int> count = cuda::DeviceCount();
  if (!count.ok()) return count.status();
  const int device = local_rank % *count;
  absl::StatusOr<std::unique_ptr<device::CudaStream>> stream = device::CudaStream::Create(device);
  if (!stream.ok()) return stream.status();
  return std::unique_ptr<DeviceMirror>(new DeviceMirror(
      device, std::shared_ptr<device::Stream>(std::move(*stream)), /*fake=*/false));
#else
  (void)local_rank;
  return absl::FailedPreconditionError(
      "this cohort-bench was built without the CUDA toolkit (no device buffers)");
#endif
}

DeviceMirror::~DeviceMirror() {
#if COHORT_BENCH_CUDA
  if (fake_) return;
  device::CudaDeviceGuard guard(device_);
  for (Region* region : {&input_, &output_, &scratch_}) {
    if (region->data != nullptr) cudaFree(region->data);
  }
#endif
}

absl::Status DeviceMirror::Reserve(Region& region, size_t bytes) {
  const size_t wanted = std::max<size_t>(bytes, 256);
  if (fake_) {
    if (region.fake.size() < wanted) region.fake.resize(wanted);
    region.data = region.fake.data();
    region.bytes = region.fake.size();
    return absl::OkStatus();
  }
#if COHORT_BENCH_CUDA
  if (region.bytes >= bytes && region.data != nullptr) return absl::OkStatus();
  if (region.data != nullptr) cudaFree(region.data);
  region.data = nullptr;
  region.bytes = 0;
  COHORT_RETURN_IF_ERROR(cuda::ToStatus(
      cudaMalloc(&region.data, wanted),
      absl::StrCat("cohort-bench: cudaMalloc of ", wanted, " bytes on cuda:", device_)));
  region.bytes = wanted;
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError("no CUDA in this build");
#endif
}

// Copies between host and "device" memory, after everything enqueued on the stream so far.
absl::Status DeviceMirror::Copy(void* destination, const void* source, size_t bytes,
                                bool to_device) {
  if (bytes == 0) return absl::OkStatus();
  if (fake_) {
    COHORT_RETURN_IF_ERROR(static_cast<device::FakeStream&>(*stream_).Synchronize(absl::Minutes(1)));
    std::memcpy(destination, source, bytes);
    return absl::OkStatus();
  }
#if COHORT_BENCH_CUDA
  device::CudaDeviceGuard guard(device_);
  COHORT_RETURN_IF_ERROR(guard.status());
  auto stream = static_cast<cudaStream_t>(stream_->native_handle());
  COHORT_RETURN_IF_ERROR(cuda::ToStatus(
      cudaMemcpyAsync(destination, source, bytes,
                      to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, stream),
      to_device ? "cohort-bench: copying buffers to the device"
                : "cohort-bench: copying results from the device"));
  return cuda::ToStatus(cudaStreamSynchronize(stream), "cohort-bench: waiting for the stream");
#else
  (void)destination, (void)source, (void)to_device;
  return absl::FailedPreconditionError("no CUDA in this build");
#endif
}

absl::Status DeviceMirror::Upload(Buffers& buffers) {
  COHORT_RETURN_IF_ERROR(Reserve(input_, buffers.input.size()));
  COHORT_RETURN_IF_ERROR(Reserve(output_, buffers.output.size()));
  COHORT_RETURN_IF_ERROR(Reserve(scratch_, buffers.input.size()));
  COHORT_RETURN_IF_ERROR(Copy(input_.data, buffers.input.data(), buffers.input.size(), true));
  COHORT_RETURN_IF_ERROR(Copy(output_.data, buffers.output.data(), buffers.output.size(), true));
  buffers.device_input = static_cast<char*>(input_.data);
  buffers.device_output = static_cast<char*>(output_.data);
  buffers.device_scratch = static_cast<char*>(scratch_.data);
  buffers.stream = stream_.get();
  return absl::OkStatus();
}

absl::Status DeviceMirror::Download(Buffers& buffers) {
  COHORT_RETURN_IF_ERROR(Copy(buffers.input.data(), input_.data, buffers.input.size(), false));
  return Copy(buffers.output.data(), output_.data, buffers.output.size(), false);
}

}  // namespace cohort::bench
