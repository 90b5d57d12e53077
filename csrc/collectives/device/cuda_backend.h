// CudaBackend: backend.h for CUDA. Operations are ordered on CudaStreams (the caller's, e.g.
// torch's current stream), devices are named by their PCI bus id, groups are NcclDeviceGroups
// (NCCL loaded at run time, where libcohort was built with nccl.h), and host memory is pinned
// and mapped into every device (cudaHostAlloc), so copies from it run asynchronously and the
// gate kernel can read it. Built with the CUDA toolkit only (cohort_device_cuda).
#pragma once

#include <memory>

#include "collectives/device/backend.h"

namespace cohort::device {

std::shared_ptr<DeviceBackend> MakeCudaBackend();

}  // namespace cohort::device
