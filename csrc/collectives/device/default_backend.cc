// DefaultDeviceBackend (backend.h): compiled into cohort_device_cuda with the CUDA toolkit
// (COHORT_DEVICE_CUDA), else into cohort_device.
#include "collectives/device/backend.h"

#if COHORT_DEVICE_CUDA
#include "collectives/device/cuda_backend.h"
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

}  // namespace cohort::device
