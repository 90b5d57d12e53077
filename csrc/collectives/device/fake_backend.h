// FakeDeviceBackend: the device backend of make test. Operations are ordered on FakeStreams,
// "device memory" is host memory, groups are FakeDeviceGroups (made through the Bootstrap like
// NCCL's), and devices are named "fake:<n>" by the number a FakeStream was made with: ranks of a
// host whose streams carry the same number share a "device", as two ranks on one GPU would.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "collectives/device/backend.h"
#include "collectives/device/fake_device_group.h"

namespace cohort::device {

struct FakeDeviceBackendOptions {
  // false: GroupSupport fails (as with no NCCL library), so CUDA buffers take the staged path.
  bool groups = true;
  size_t slot_bytes = size_t{1} << 20;  // FakeDeviceGroupOptions::slot_bytes
};

class FakeDeviceBackend final : public DeviceBackend {
 public:
  explicit FakeDeviceBackend(FakeDeviceBackendOptions options = {}) : options_(options) {}

  const char* name() const override { return "fake"; }
  StreamKind stream_kind() const override { return StreamKind::kFake; }
  absl::StatusOr<std::string> DeviceId(int device) override;
  absl::Status GroupSupport() override;
  absl::StatusOr<std::unique_ptr<DeviceGroup>> CreateGroup(Bootstrap& bootstrap,
                                                          const std::string& key, int rank,
                                                          int size,
                                                          const GroupOptions& options) override;
  absl::StatusOr<std::unique_ptr<HostMemory>> AllocateHost(size_t bytes) override;

 private:
  FakeDeviceBackendOptions options_;
};

}  // namespace cohort::device
