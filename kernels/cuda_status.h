// CUDA runtime errors as absl::Status, worded once for every CUDA caller in libcohort.
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cohort::cuda {

// OK for cudaSuccess; otherwise an error naming `what` (the call and its subject), the CUDA error
// name and its description, e.g. "allreduce on cuda:1: cudaMemcpyAsync failed:
// cudaErrorInvalidValue (invalid argument)". Out-of-memory is ResourceExhausted, a missing
// device or driver FailedPrecondition, bad arguments InvalidArgument, the rest Internal.
absl::Status ToStatus(cudaError_t error, absl::string_view what);

// The CUDA device count, or a FailedPrecondition saying why none can be used (no driver, no
// device, a driver older than the runtime) and what to check.
absl::StatusOr<int> DeviceCount();

}  // namespace cohort::cuda
