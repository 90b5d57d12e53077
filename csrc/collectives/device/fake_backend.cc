#include "collectives/device/fake_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cohort::device {
namespace {

class PlainMemory final : public HostMemory {
 public:
  PlainMemory(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  ~PlainMemory() override { std::free(data_); }
  void* data() const override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  void* data_;
  size_t bytes_;
};

}  // namespace

absl::StatusOr<std::string> FakeDeviceBackend::DeviceId(int device) {
  return absl::StrCat("fake:", device);
}

absl::Status FakeDeviceBackend::GroupSupport() {
  if (options_.groups) return absl::OkStatus();
  return absl::UnavailableError("the fake backend was made without groups (groups = false)");
}

absl::StatusOr<std::unique_ptr<DeviceGroup>> FakeDeviceBackend::CreateGroup(
    Bootstrap& bootstrap, const std::string& key, int rank, int size,
    const GroupOptions& options) {
  FakeDeviceGroupOptions fake;
  fake.timeout = options.timeout;
  fake.slot_bytes = options_.slot_bytes;
  fake.label = options.label;
  auto group = FakeDeviceGroup::Create(bootstrap, key, rank, size, fake);
  if (!group.ok()) return group.status();
  return std::unique_ptr<DeviceGroup>(std::move(*group));
}

absl::StatusOr<std::unique_ptr<HostMemory>> FakeDeviceBackend::AllocateHost(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* data = std::aligned_alloc(64, rounded);
  if (data == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes of (fake) pinned memory"));
  }
  std::memset(data, 0, rounded);
  return std::unique_ptr<HostMemory>(new PlainMemory(data, bytes));
}

}  // namespace cohort::device
