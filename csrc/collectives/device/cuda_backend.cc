#include "collectives/device/cuda_backend.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "collectives/device/cuda_stream.h"
#include "kernels/cuda_status.h"
#if COHORT_HAVE_NCCL
#include "collectives/device/nccl_device_group.h"
#endif

namespace cohort::device {
namespace {

class PinnedMemory final : public HostMemory {
 public:
  PinnedMemory(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  ~PinnedMemory() override { cudaFreeHost(data_); }
  void* data() const override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  void* data_;
  size_t bytes_;
};

class CudaBackend final : public DeviceBackend {
 public:
  const char* name() const override { return "cuda"; }
  StreamKind stream_kind() const override { return StreamKind::kCuda; }

  absl::StatusOr<std::string> DeviceId(int device) override {
    char bus_id[64] = {};
    absl::Status status = cuda::ToStatus(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device),
                                         absl::StrCat("cudaDeviceGetPCIBusId of cuda:", device));
    if (!status.ok()) return status;
    return std::string(bus_id);
  }

  absl::Status GroupSupport() override {
#if COHORT_HAVE_NCCL
    return LoadNcclApi().status();
#else
    return absl::UnimplementedError(
        "libcohort was built without nccl.h (install NCCL's headers where it is built)");
#endif
  }

  absl::StatusOr<std::unique_ptr<DeviceGroup>> CreateGroup(Bootstrap& bootstrap,
                                                          const std::string& key, int rank,
                                                          int size,
                                                          const GroupOptions& options) override {
#if COHORT_HAVE_NCCL
    NcclDeviceGroupOptions nccl;
    nccl.device = options.device;
    nccl.timeout = options.timeout;
    nccl.label = options.label;
    auto group = NcclDeviceGroup::Create(bootstrap, key, rank, size, nccl);
    if (!group.ok()) return group.status();
    return std::unique_ptr<DeviceGroup>(std::move(*group));
#else
    (void)bootstrap, (void)key, (void)rank, (void)size, (void)options;
    return GroupSupport();
#endif
  }

  absl::StatusOr<std::unique_ptr<HostMemory>> AllocateHost(size_t bytes) override {
    void* data = nullptr;
    absl::Status status = cuda::ToStatus(
        cudaHostAlloc(&data, std::max<size_t>(bytes, 1), cudaHostAllocPortable | cudaHostAllocMapped),
        absl::StrCat("cudaHostAlloc of ", bytes, " bytes (pinned staging memory)"));
    if (!status.ok()) return status;
    return std::unique_ptr<HostMemory>(new PinnedMemory(data, bytes));
  }
};

}  // namespace

std::shared_ptr<DeviceBackend> MakeCudaBackend() { return std::make_shared<CudaBackend>(); }

}  // namespace cohort::device
