// CudaStream: stream.h's Stream over a cudaStream_t, either the caller's (torch's current stream,
// borrowed) or one it creates (non-blocking, owned). Its events are cudaEvents without timing,
// queried with cudaEventQuery, so the engine's progress thread completes Works without blocking
// a CUDA stream on the host. Built only with the CUDA toolkit (cohort_device_cuda).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/statusor.h"
#include "collectives/device/stream.h"

namespace cohort::device {

class CudaStream final : public Stream {
 public:
  // Borrows `stream` (of `device`); the caller keeps it alive while this object is used.
  static std::unique_ptr<CudaStream> Wrap(cudaStream_t stream, int device);
  // Creates a non-blocking stream on `device`; FailedPrecondition when no device can be used.
  static absl::StatusOr<std::unique_ptr<CudaStream>> Create(int device);
  ~CudaStream() override;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  StreamKind kind() const override { return StreamKind::kCuda; }
  int device() const override { return device_; }
  void* native_handle() const override { return stream_; }
  cudaStream_t stream() const { return stream_; }
  absl::StatusOr<std::unique_ptr<Event>> Record() override;
  absl::Status WaitFor(Event& event) override;
  absl::Status CopyAsync(void* destination, const void* source, size_t bytes) override;
  // A one-thread kernel polling the word (cuda::WaitForValue); `word` must be pinned host memory
  // mapped into the device's address space (cudaHostAlloc with cudaHostAllocMapped).
  absl::Status WaitValue(const std::atomic<uint64_t>* word, uint64_t value) override;

 private:
  CudaStream(cudaStream_t stream, int device, bool owned)
      : stream_(stream), device_(device), owned_(owned) {}

  cudaStream_t stream_;
  int device_;
  bool owned_;
};

// Makes `device` current for the guard's scope and restores the previous device after (CUDA's
// current device is per thread; the engine's threads serve several devices).
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = -1;
  absl::Status status_;
};

}  // namespace cohort::device
