// cohort-bench -d cuda: the sweep's buffers in CUDA device memory. The descriptors fill and
// check host buffers (descriptors.h); a DeviceMirror keeps device copies of them at the same
// offsets, uploads what was filled before the runs, downloads for the checks, and owns the stream
// the operations are ordered on. Without the CUDA toolkit in the build, or without a usable GPU,
// Open says why and the sweep is skipped.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/descriptors.h"

namespace cohort::bench {

class DeviceMirror {
 public:
  // The device of this rank (its local rank modulo the devices there are) and a stream on it.
  static absl::StatusOr<std::unique_ptr<DeviceMirror>> Open(int local_rank);
  // For tests: "device memory" in host memory and a FakeStream on fake device `local_rank`, for
  // a communicator on the fake device backend (collectives/device/fake_backend.h).
  static std::unique_ptr<DeviceMirror> OpenFake(int local_rank);
  ~DeviceMirror();
  DeviceMirror(const DeviceMirror&) = delete;
  DeviceMirror& operator=(const DeviceMirror&) = delete;

  int device() const { return device_; }
  const std::shared_ptr<device::Stream>& stream() const { return stream_; }

  // Points `buffers`' device copies at device memory as large as its vectors (growing it when
  // needed) and copies the vectors' contents there; waits until they are.
  absl::Status Upload(Buffers& buffers);
  // Copies the device copies back into the vectors (the results, for the checks).
  absl::Status Download(Buffers& buffers);

 private:
  DeviceMirror(int device, std::shared_ptr<device::Stream> stream, bool fake)
      : device_(device), stream_(std::move(stream)), fake_(fake) {}
  struct Region {
    void* data = nullptr;
    size_t bytes = 0;
    std::vector<char> fake;  // the fake's memory
  };
  absl::Status Reserve(Region& region, size_t bytes);
  absl::Status Copy(void* destination, const void* source, size_t bytes, bool to_device);

  int device_;
  std::shared_ptr<device::Stream> stream_;
  const bool fake_;
  Region input_, output_, scratch_;
};

}  // namespace cohort::bench
