// DefaultDeviceBackend (backend.h): compiled into cohort_device_cuda with the CUDA toolkit
// (COHORT_DEVICE_CUDA), else into cohort_device.
#include "collectives/device/backend.h"

#if COHORT_DEVICE_CUDA
#include "collectives/device/cuda_backend.h"
#include "collectives/device/cuda_stream.h"
#endif

namespace cohort::device {

std::shared_ptr<DeviceBackend> DefaultDeviceBackend() {
#if COHORT_DEVICE_CUDA
  static const std::shared_ptr<DeviceBackend> backend = MakeCudaBackend();
  return backend;
#else
  return nullptr;
#endif
}

absl::StatusOr<std::shared_ptr<Stream>> WrapCudaStream(void* cuda_stream, int device) {
#if COHORT_DEVICE_CUDA
  return std::shared_ptr<Stream>(CudaStream::Wrap(static_cast<cudaStream_t>(cuda_stream), device));
#else
  (void)cuda_stream, (void)device;
  return absl::FailedPreconditionError(
      "libcohort was built without the CUDA toolkit: it cannot run on CUDA streams");
#endif
}

}  // namespace cohort::device
