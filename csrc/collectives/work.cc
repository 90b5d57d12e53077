#include "collectives/work.h"

#include "absl/strings/str_cat.h"
#include "collectives/engine.h"
#include "common/clock.h"
#include "common/cpu.h"

namespace cohort {

Work::Work(std::shared_ptr<Engine> engine, OpType op, uint64_t sequence)
    : engine_(std::move(engine)), op_(op), sequence_(sequence) {}

absl::Status Work::Wait(absl::Duration timeout) {
  if (!IsCompleted() && timeout == absl::InfiniteDuration() && engine_ != nullptr &&
      !engine_->HelpUntil(this)) {
    // Another thread drives the engine (the progress thread, usually): poll for the spin
    // budget before sleeping on the mutex; a sleeper costs its completer a wake-up call.
    const int64_t spin_until = NowNanos() + int64_t{engine_->SpinMicros()} * 1000;
    while (!IsCompleted() && NowNanos() < spin_until) CpuRelax();
  }
  if (IsCompleted()) return status();  // no condition to evaluate on the way out
  absl::MutexLock lock(&mutex_);
  auto done = [this] { return done_.load(std::memory_order_acquire); };
  if (timeout == absl::InfiniteDuration()) {
    mutex_.Await(absl::Condition(&done));
  } else if (!mutex_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat(OpTypeName(op_), " #", sequence_, " did not finish within ",
                     absl::FormatDuration(timeout), " of waiting; it is still running"));
  }
  return status_;
}

absl::Status Work::status() const {
  // Once done, the status no longer changes (Reuse only touches a Work nobody else holds).
  if (IsCompleted()) return status_;
  absl::MutexLock lock(&mutex_);
  return status_;
}

void Work::OnCompletion(std::function<void(const absl::Status&)> callback) {
  absl::Status status;
  bool pending = false;
  {
    absl::MutexLock lock(&mutex_);
    if (!done_.load(std::memory_order_acquire)) {
      callbacks_.push_back(std::move(callback));
      pending = true;
    } else {
      status = status_;
    }
  }
  if (pending) {
    // Someone waits for it without a thread blocked in Wait (a future, a hook): the progress
    // thread must run it now rather than at its next nap's end.
    if (engine_ != nullptr) engine_->Kick();
    return;
  }
  callback(status);
}

void Work::Complete(absl::Status status) {
  std::vector<std::function<void(const absl::Status&)>> callbacks;
  {
    absl::MutexLock lock(&mutex_);
    if (done_.load(std::memory_order_relaxed)) return;
    status_ = std::move(status);
    done_.store(true, std::memory_order_release);
    callbacks.swap(callbacks_);
  }
  for (auto& callback : callbacks) callback(status_);
}

}  // namespace cohort

namespace cohort {

void Work::Reuse(OpType op, uint64_t sequence, std::string_view algorithm, absl::Status status) {
  // Only the engine holds this Work now: nobody reads it while it changes.
  op_ = op;
  sequence_ = sequence;
  algorithm_ = algorithm;
  status_ = std::move(status);
  source_rank_.store(-1);
  callbacks_.clear();
  done_.store(true, std::memory_order_release);
}

}  // namespace cohort
