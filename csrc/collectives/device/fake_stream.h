// FakeStream: a Stream whose "device work" is host functions run in order on one thread, and
// whose progress a test controls (pause, allow n more tasks, fail). Stands in for a CUDA stream
// in make test: the fake device group (fake_device_group.h) enqueues its collectives here, and the
// engine's event-driven completion can be checked without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "collectives/device/stream.h"

namespace cohort::device {

class FakeStream final : public Stream {
 public:
  // `device` is what device() reports. Starts the stream's thread.
  explicit FakeStream(int device = 0);
  // Stops the thread after the task it is running; tasks not started are dropped and their
  // events report Cancelled.
  ~FakeStream() override;
  FakeStream(const FakeStream&) = delete;
  FakeStream& operator=(const FakeStream&) = delete;

  StreamKind kind() const override { return StreamKind::kFake; }
  int device() const override { return device_; }
  void* native_handle() const override { return nullptr; }
  absl::StatusOr<std::unique_ptr<Event>> Record() override;
  absl::Status WaitFor(Event& event) override;
  absl::Status CopyAsync(void* destination, const void* source, size_t bytes) override;
  // A task that polls the word (the fake's kernel spinning on mapped host memory).
  absl::Status WaitValue(const std::atomic<uint64_t>* word, uint64_t value) override;

  // Host work run on the stream's thread after everything enqueued before it: the fake's kernel.
  // A task that returns an error fails the stream like a CUDA error does (sticky): tasks not yet
  // started are dropped, every event not yet complete reports the error, and Enqueue returns it.
  using Task = std::function<absl::Status()>;
  absl::Status Enqueue(Task task);

  // Test control. Pause: no further task starts (the running one finishes). Resume: run freely.
  // Allow(n): start n more tasks, then pause. Fail: fail the stream now, as a device error would.
  void Pause();
  void Resume();
  void Allow(size_t tasks);
  void Fail(absl::Status error);

  uint64_t tasks_finished() const;  // tasks that ran to completion
  uint64_t tasks_waiting() const;   // enqueued, not started
  // Blocks until every task enqueued so far finished (OK), the stream failed (its error), or
  // `timeout` passed (DeadlineExceeded).
  absl::Status Synchronize(absl::Duration timeout);

  struct State;  // shared with this stream's events

 private:
  void Run();

  const int device_;
  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace cohort::device
