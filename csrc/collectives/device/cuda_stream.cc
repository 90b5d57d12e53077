#include "collectives/device/cuda_stream.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_kernels.h"
#include "kernels/cuda_status.h"

namespace cohort::device {
namespace {

std::string OnDevice(const char* call, int device) {
  return absl::StrCat(call, " on cuda:", device);
}

class CudaEvent final : public Event {
 public:
  CudaEvent(cudaEvent_t event, int device) : event_(event), device_(device) {}
  ~CudaEvent() override {
    CudaDeviceGuard guard(device_);
    cudaEventDestroy(event_);
  }

  StreamKind kind() const override { return StreamKind::kCuda; }
  cudaEvent_t event() const { return event_; }

  absl::StatusOr<bool> Query() override {
    const cudaError_t result = cudaEventQuery(event_);
    if (result == cudaSuccess) return true;
    if (result == cudaErrorNotReady) {
      (void)cudaGetLastError();  // not an error: keep it out of the next launch check
      return false;
    }
    return cuda::ToStatus(
        result, absl::StrCat("work on cuda:", device_, " before this event (cudaEventQuery)"));
  }

  absl::Status Wait(absl::Duration timeout) override {
    // cudaEventSynchronize has no timeout: poll, sleeping a little longer each time.
    const absl::Time deadline = absl::Now() + timeout;
    absl::Duration nap = absl::Microseconds(2);
    while (true) {
      absl::StatusOr<bool> done = Query();
      if (!done.ok()) return done.status();
      if (*done) return absl::OkStatus();
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "work on cuda:", device_, " still running after ", absl::FormatDuration(timeout)));
      }
      absl::SleepFor(nap);
      nap = std::min(nap * 2, absl::Milliseconds(1));
    }
  }

 private:
  cudaEvent_t event_;
  int device_;
};

}  // namespace

CudaDeviceGuard::CudaDeviceGuard(int device) {
  status_ = cuda::ToStatus(cudaGetDevice(&previous_), "cudaGetDevice");
  if (status_.ok() && previous_ != device) {
    status_ = cuda::ToStatus(cudaSetDevice(device), OnDevice("cudaSetDevice", device));
    if (!status_.ok()) previous_ = -1;
  } else {
    previous_ = -1;  // nothing to restore
  }
}

CudaDeviceGuard::~CudaDeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

std::unique_ptr<CudaStream> CudaStream::Wrap(cudaStream_t stream, int device) {
  return std::unique_ptr<CudaStream>(new CudaStream(stream, device, false));
}

absl::StatusOr<std::unique_ptr<CudaStream>> CudaStream::Create(int device) {
  absl::StatusOr<int> count = cuda::DeviceCount();
  if (!count.ok()) return count.status();
  if (device < 0 || device >= *count) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda:", device, " does not exist; ", *count, " device(s) are visible"));
  }
  CudaDeviceGuard guard(device);
  if (!guard.status().ok()) return guard.status();
  cudaStream_t stream = nullptr;
  absl::Status status = cuda::ToStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                       OnDevice("cudaStreamCreateWithFlags", device));
  if (!status.ok()) return status;
  return std::unique_ptr<CudaStream>(new CudaStream(stream, device, true));
}

CudaStream::~CudaStream() {
  if (!owned_) return;
  CudaDeviceGuard guard(device_);
  cudaStreamDestroy(stream_);
}

absl::StatusOr<std::unique_ptr<Event>> CudaStream::Record() {
  CudaDeviceGuard guard(device_);
  if (!guard.status().ok()) return guard.status();
  cudaEvent_t event = nullptr;
  absl::Status status = cuda::ToStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                                       OnDevice("cudaEventCreateWithFlags", device_));
  if (!status.ok()) return status;
  auto owned = std::make_unique<CudaEvent>(event, device_);
  status = cuda::ToStatus(cudaEventRecord(event, stream_), OnDevice("cudaEventRecord", device_));
  if (!status.ok()) return status;
  return std::unique_ptr<Event>(std::move(owned));
}

absl::Status CudaStream::WaitFor(Event& event) {
  auto* cuda_event = dynamic_cast<CudaEvent*>(&event);
  if (cuda_event == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("a CUDA stream cannot wait for a ", StreamKindName(event.kind()), " event"));
  }
  CudaDeviceGuard guard(device_);
  if (!guard.status().ok()) return guard.status();
  return cuda::ToStatus(cudaStreamWaitEvent(stream_, cuda_event->event(), 0),
                        OnDevice("cudaStreamWaitEvent", device_));
}

absl::Status CudaStream::CopyAsync(void* destination, const void* source, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  CudaDeviceGuard guard(device_);
  if (!guard.status().ok()) return guard.status();
  return cuda::ToStatus(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDefault, stream_),
                        OnDevice("cudaMemcpyAsync", device_));
}

}  // namespace cohort::device

namespace cohort::device {

absl::Status CudaStream::WaitValue(const std::atomic<uint64_t>* word, uint64_t value) {
  CudaDeviceGuard guard(device_);
  if (!guard.status().ok()) return guard.status();
  return cuda::ToStatus(cuda::WaitForValue(word, value, stream_),
                        OnDevice("the gate kernel (cuda::WaitForValue)", device_));
}

}  // namespace cohort::device
