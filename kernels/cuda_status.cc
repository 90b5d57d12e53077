#include "kernels/cuda_status.h"

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace cohort::cuda {

absl::Status ToStatus(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message = absl::StrCat(what, " failed: ", cudaGetErrorName(error), " (",
                                           cudaGetErrorString(error), ")");
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
      return absl::FailedPreconditionError(message);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidResourceHandle:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<int> DeviceCount() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device can be used: cudaGetDeviceCount returned ",
                     cudaGetErrorName(error), " (", cudaGetErrorString(error),
                     "); check the NVIDIA driver (nvidia-smi) and "
                     "CUDA_VISIBLE_DEVICES"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError(
        "no CUDA device is visible (cudaGetDeviceCount is 0); check CUDA_VISIBLE_DEVICES");
  }
  return count;
}

}  // namespace cohort::cuda
