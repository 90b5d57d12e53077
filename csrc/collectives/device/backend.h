// A device backend: what libcohort needs from a kind of device to run collectives on its memory,
// in one place so the engine's device path is the same code for CUDA and for its stand-in. It
// says which device a rank uses (two ranks on one device cannot be in one NCCL group), whether
// device groups can be made here, makes them from cohort's Bootstrap, and allocates the host
// memory the device reads and writes directly (staging buffers, gate words).
//
// Implementations: CudaBackend (cuda_backend.h: CUDA streams, NCCL groups, pinned memory) and
// FakeDeviceBackend (fake_backend.h: FakeStreams, FakeDeviceGroups, plain memory) for make test.
// A communicator takes one through CommOptions::device_backend (default: CUDA where built).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/device/device_group.h"
#include "collectives/device/stream.h"
#include "common/bootstrap.h"

namespace cohort::device {

// Host memory the device reaches without a copy (CUDA: pinned and mapped), freed with the object.
class HostMemory {
 public:
  virtual ~HostMemory() = default;
  virtual void* data() const = 0;
  virtual size_t bytes() const = 0;
};

struct GroupOptions {
  int device = 0;                           // this rank's device
  absl::Duration timeout = absl::Minutes(5);  // set-up, and each call's enqueue
  std::string label;                        // prefixes errors ("communicator 'x' rank 3 (host)")
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual const char* name() const = 0;        // "cuda", "fake"
  virtual StreamKind stream_kind() const = 0;  // the streams its operations are ordered on
  // What names `device` among the devices of this host (CUDA: its PCI bus id): ranks of a host
  // whose ids are equal share a device.
  virtual absl::StatusOr<std::string> DeviceId(int device) = 0;
  // OK when device groups can be made here; otherwise why not (no NCCL library, ...). Every rank
  // asks before the first group is made, so that all take the same path.
  virtual absl::Status GroupSupport() = 0;
  // Collective among the `size` ranks of a host: every one calls it with the same `key`.
  virtual absl::StatusOr<std::unique_ptr<DeviceGroup>> CreateGroup(Bootstrap& bootstrap,
                                                                  const std::string& key,
                                                                  int rank, int size,
                                                                  const GroupOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<HostMemory>> AllocateHost(size_t bytes) = 0;
};

// The CUDA backend (streams, NCCL, pinned memory) where libcohort was built with the CUDA
// toolkit; nullptr otherwise. Nothing is loaded or initialised until a CUDA operation needs it.
std::shared_ptr<DeviceBackend> DefaultDeviceBackend();

// A Stream over the caller's `cudaStream_t` on `device` (borrowed: the caller keeps it alive),
// for front ends that must not include CUDA's headers; FailedPrecondition where libcohort was
// built without the CUDA toolkit.
absl::StatusOr<std::shared_ptr<Stream>> WrapCudaStream(void* cuda_stream, int device);

}  // namespace cohort::device
