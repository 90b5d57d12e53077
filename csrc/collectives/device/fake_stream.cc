// FakeStream's state machine. Tasks carry sequence numbers 1, 2, ... in enqueue order; `finished`
// is the number of the last task that completed. An event recorded after task s completes when
// finished >= s. A failure (a task's error, Fail(), destruction with work pending) sets `error`
// once and drops the queue; `finished` never advances after it, so every event past the failure
// point reports the error and every event before it stays complete. `budget` is how many more
// tasks may start (-1: unlimited); Pause is 0, Allow(n) is n.
#include "collectives/device/fake_stream.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace cohort::device {

const char* StreamKindName(StreamKind kind) {
  switch (kind) {
    case StreamKind::kCuda:
      return "cuda";
    case StreamKind::kFake:
      return "fake";
  }
  return "unknown";
}

struct FakeStream::State {
  absl::Mutex mutex;
  std::deque<std::pair<uint64_t, Task>> queue ABSL_GUARDED_BY(mutex);
  uint64_t enqueued ABSL_GUARDED_BY(mutex) = 0;
  uint64_t finished ABSL_GUARDED_BY(mutex) = 0;
  int64_t budget ABSL_GUARDED_BY(mutex) = -1;
  bool stopping ABSL_GUARDED_BY(mutex) = false;
  absl::Status error ABSL_GUARDED_BY(mutex);

  void FailLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    if (error.ok()) error = std::move(status);
    queue.clear();
  }
  bool DoneOrFailed(uint64_t sequence) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    return finished >= sequence || !error.ok();
  }
};

namespace {

class FakeEvent final : public Event {
 public:
  FakeEvent(std::shared_ptr<FakeStream::State> state, uint64_t sequence)
      : state_(std::move(state)), sequence_(sequence) {}

  StreamKind kind() const override { return StreamKind::kFake; }

  absl::StatusOr<bool> Query() override {
    absl::MutexLock lock(&state_->mutex);
    if (state_->finished >= sequence_) return true;
    if (!state_->error.ok()) return state_->error;
    return false;
  }

  absl::Status Wait(absl::Duration timeout) override {
    absl::MutexLock lock(&state_->mutex);
    auto done = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return state_->DoneOrFailed(sequence_); };
    if (!state_->mutex.AwaitWithTimeout(absl::Condition(&done), timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat("fake stream event (after task ", sequence_, ") still pending after ",
                       absl::FormatDuration(timeout), "; ", state_->finished, " tasks finished"));
    }
    if (state_->finished >= sequence_) return absl::OkStatus();
    return state_->error;
  }

  const std::shared_ptr<FakeStream::State>& state() const { return state_; }
  uint64_t sequence() const { return sequence_; }

 private:
  std::shared_ptr<FakeStream::State> state_;
  const uint64_t sequence_;
};

// Waits, on another stream's thread, for task `sequence` of `state` (what an event marked when
// it was recorded: the event itself may be gone by then), giving up when `stopping` says so.
absl::Status WaitFromStream(FakeStream::State& state, uint64_t sequence,
                            const std::function<bool()>& stopping) {
  auto done = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return state.DoneOrFailed(sequence); };
  while (true) {
    {
      absl::MutexLock lock(&state.mutex);
      if (state.mutex.AwaitWithTimeout(absl::Condition(&done), absl::Milliseconds(20))) {
        if (state.finished >= sequence) return absl::OkStatus();
        return state.error;
      }
    }
    // Outside the lock: `state` may be the waiting stream's own.
    if (stopping()) return absl::CancelledError("fake stream stopped while waiting for an event");
  }
}

}  // namespace

FakeStream::FakeStream(int device) : device_(device), state_(std::make_shared<State>()) {
  thread_ = std::thread([this] { Run(); });
}

FakeStream::~FakeStream() {
  {
    absl::MutexLock lock(&state_->mutex);
    state_->stopping = true;
    if (!state_->queue.empty()) {
      state_->FailLocked(absl::CancelledError(
          absl::StrCat("fake stream destroyed with ", state_->queue.size(), " tasks not started")));
    }
  }
  thread_.join();
}

void FakeStream::Run() {
  pthread_setname_np(pthread_self(), "cohort-fakestrm");
  State& state = *state_;
  while (true) {
    uint64_t sequence = 0;
    Task task;
    {
      absl::MutexLock lock(&state.mutex);
      auto ready = [&state]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return state.stopping || (!state.queue.empty() && state.budget != 0);
      };
      state.mutex.Await(absl::Condition(&ready));
      if (state.stopping) return;
      sequence = state.queue.front().first;
      task = std::move(state.queue.front().second);
      state.queue.pop_front();
      if (state.budget > 0) --state.budget;
    }
    absl::Status status = task();
    absl::MutexLock lock(&state.mutex);
    if (!status.ok()) {
      state.FailLocked(std::move(status));
    } else if (state.error.ok()) {
      state.finished = sequence;
    }
  }
}

absl::Status FakeStream::Enqueue(Task task) {
  absl::MutexLock lock(&state_->mutex);
  if (!state_->error.ok()) return state_->error;
  state_->queue.emplace_back(++state_->enqueued, std::move(task));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Event>> FakeStream::Record() {
  absl::MutexLock lock(&state_->mutex);
  if (!state_->error.ok()) return state_->error;
  return std::unique_ptr<Event>(new FakeEvent(state_, state_->enqueued));
}

absl::Status FakeStream::WaitFor(Event& event) {
  auto* fake = dynamic_cast<FakeEvent*>(&event);
  if (fake == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("a fake stream cannot wait for a ", StreamKindName(event.kind()), " event"));
  }
  std::shared_ptr<State> other = fake->state();
  const uint64_t sequence = fake->sequence();
  std::weak_ptr<State> self = state_;
  return Enqueue([other, sequence, self] {
    return WaitFromStream(*other, sequence, [&self] {
      std::shared_ptr<State> state = self.lock();
      if (state == nullptr) return true;
      absl::MutexLock lock(&state->mutex);
      return state->stopping || !state->error.ok();
    });
  });
}

absl::Status FakeStream::CopyAsync(void* destination, const void* source, size_t bytes) {
  return Enqueue([destination, source, bytes] {
    if (bytes > 0) std::memmove(destination, source, bytes);
    return absl::OkStatus();
  });
}

absl::Status FakeStream::WaitValue(const std::atomic<uint64_t>* word, uint64_t value) {
  std::weak_ptr<State> self = state_;
  return Enqueue([word, value, self] {
    // Polls like a spinning kernel, napping a little longer each round (up to 200 us); gives up
    // only when the stream stops or fails (a gate is opened by its host part, also on failure).
    absl::Duration nap = absl::Microseconds(5);
    while (word->load(std::memory_order_acquire) < value) {
      std::shared_ptr<State> state = self.lock();
      if (state == nullptr) return absl::CancelledError("fake stream gone while waiting");
      {
        absl::MutexLock lock(&state->mutex);
        if (state->stopping) {
          return absl::CancelledError("fake stream stopped while waiting for a host value");
        }
      }
      absl::SleepFor(nap);
      nap = std::min(nap * 2, absl::Microseconds(200));
    }
    return absl::OkStatus();
  });
}

void FakeStream::Pause() {
  absl::MutexLock lock(&state_->mutex);
  state_->budget = 0;
}

void FakeStream::Resume() {
  absl::MutexLock lock(&state_->mutex);
  state_->budget = -1;
}

void FakeStream::Allow(size_t tasks) {
  absl::MutexLock lock(&state_->mutex);
  state_->budget = static_cast<int64_t>(tasks);
}

void FakeStream::Fail(absl::Status error) {
  absl::MutexLock lock(&state_->mutex);
  state_->FailLocked(std::move(error));
}

uint64_t FakeStream::tasks_finished() const {
  absl::MutexLock lock(&state_->mutex);
  return state_->finished;
}

uint64_t FakeStream::tasks_waiting() const {
  absl::MutexLock lock(&state_->mutex);
  return state_->queue.size();
}

absl::Status FakeStream::Synchronize(absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Event>> event = Record();
  if (!event.ok()) return event.status();
  return (*event)->Wait(timeout);
}

}  // namespace cohort::device
