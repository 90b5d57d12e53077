// Streams and events as libcohort sees them: "a stream" orders device work, "an event recorded on
// it" marks a point the host can poll. The engine completes a Work on CUDA memory when the event
// recorded after its last step completes; the device groups (device_group.h) enqueue on a Stream.
// Two implementations: CudaStream (cuda_stream.h, a cudaStream_t) and FakeStream (fake_stream.h,
// host work on a thread, whose progress tests control), so the same schedule runs in make test.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort::device {

enum class StreamKind {
  kCuda,  // a CUDA stream: native_handle() is its cudaStream_t
  kFake,  // a FakeStream: host memory, host work
};

const char* StreamKindName(StreamKind kind);  // "cuda", "fake"

// A point in a stream's work. Owned by whoever recorded it; may outlive nothing but its stream.
class Event {
 public:
  virtual ~Event() = default;
  virtual StreamKind kind() const = 0;
  // true once everything enqueued on the stream before the event finished, false while some of it
  // is pending; an error when that work failed (a CUDA error, a failed fake task), which is then
  // what every later query returns too.
  virtual absl::StatusOr<bool> Query() = 0;
  // Blocks the calling thread until Query() is true (OK) or an error, for at most `timeout`
  // (DeadlineExceeded, the work still running). For tests and blocking fallbacks: the engine polls.
  virtual absl::Status Wait(absl::Duration timeout) = 0;
};

class Stream {
 public:
  virtual ~Stream() = default;
  virtual StreamKind kind() const = 0;
  // The CUDA device ordinal (a fake stream's is whatever it was made with).
  virtual int device() const = 0;
  // cudaStream_t for kCuda (nullptr may be the legacy default stream); nullptr for kFake.
  virtual void* native_handle() const = 0;

  // An event that completes when the work enqueued so far completes.
  virtual absl::StatusOr<std::unique_ptr<Event>> Record() = 0;
  // Work enqueued from now on starts after `event` (of the same kind, possibly another stream's)
  // completes; the host does not wait.
  virtual absl::Status WaitFor(Event& event) = 0;
  // Enqueues a copy of `bytes` between any two buffers the stream's device can address (device
  // memory, pinned host memory; host memory for a fake stream).
  virtual absl::Status CopyAsync(void* destination, const void* source, size_t bytes) = 0;
  // Work enqueued from now on starts once the 64-bit word at `word` holds `value` or more: the
  // host raises it (a collective's host part opening the gate before its device part, as in
  // collectives/device_runtime.h). `word` must lie in memory the device reads directly
  // (DeviceBackend::AllocateHost) and outlive the wait; the host does not block.
  virtual absl::Status WaitValue(const std::atomic<uint64_t>* word, uint64_t value) = 0;
};

}  // namespace cohort::device
