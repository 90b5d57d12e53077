#include "work.h"

#include <ATen/record_function.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "errors.h"

namespace cohort::torch_ext {

namespace {

// torch's Work starts a profiler range when given a title: only worth it while profiling (it
// allocates on every operation otherwise).
bool Profiling() { return at::hasCallbacks(); }

}  // namespace

CohortWork::CohortWork(int rank, c10d::OpType type, const char* profiling_title,
                       c10::ArrayRef<at::Tensor> profiling_inputs,
                       c10::ArrayRef<at::Tensor> outputs)
    : c10d::Work(rank, type, Profiling() ? profiling_title : nullptr,
                 Profiling() ? OptionalTensors(profiling_inputs.vec()) : OptionalTensors()),
      type_(type),
      outputs_(outputs.begin(), outputs.end()) {}

CohortWork::~CohortWork() {
  if (finishing_.load(std::memory_order_acquire)) return;
  // Not finished, so nothing registered a callback (a callback holds a reference to this Work):
  // no epilogue to run, but the operation may still be reading or writing the buffers.
  std::shared_ptr<std::pair<Tensors, Tensors>> buffers;
  for (const auto& part : parts_) {
    if (part->IsCompleted()) continue;
    if (buffers == nullptr) {
      buffers = std::make_shared<std::pair<Tensors, Tensors>>(std::move(outputs_),
                                                              std::move(keep_alive_));
    }
    part->OnCompletion([buffers](const absl::Status&) {});
  }
}

void CohortWork::AddMember(c10::intrusive_ptr<CohortWork> member) {
  if (member->device_stream_.has_value()) {
    if (!device_stream_.has_value()) device_stream_ = member->device_stream_;
    end_events_.insert(end_events_.end(), member->end_events_.begin(), member->end_events_.end());
  }
  members_.push_back(std::move(member));
}

void CohortWork::Attach(Parts parts) {
  parts_ = std::move(parts);
  if (device_stream_.has_value()) {
    // On the call's stream (current now), after libcohort's device steps: the copies out of
    // staging buffers, then the end everything that uses the results waits for. Skipped when
    // libcohort refused the call at once (its error is the Work's).
    bool refused = false;
    for (const auto& part : parts_) refused |= part->IsCompleted() && !part->status().ok();
    if (!refused && !epilogues_.empty()) {
      at::NoGradGuard no_grad;
      for (auto& epilogue : epilogues_) epilogue();
    }
    epilogues_.clear();
    auto end = std::make_shared<c10::Event>(device_stream_->device_type());
    end->record(*device_stream_);
    end_events_.push_back(std::move(end));
    if (parts_.empty()) FinishIfDone();
    return;
  }
  if (parts_.empty()) {
    FinishIfDone();  // nothing to move (e.g. a zero-rank split): done now
    return;
  }
  // Epilogues (copies out of staging buffers) must run when the operation completes, whether
  // or not anybody waits for this Work.
  if (!epilogues_.empty()) FinishOnCompletion();
}

void CohortWork::FinishOnCompletion() {
  if (callbacks_registered_.exchange(true, std::memory_order_acq_rel)) return;
  // Each callback holds a reference, so the buffers outlive the operation even when the
  // caller drops this Work right away (async_op=True without wait()).
  for (const auto& part : parts_) {
    c10::intrusive_ptr<CohortWork> self = c10::intrusive_ptr<CohortWork>::reclaim_copy(this);
    part->OnCompletion([self = std::move(self)](const absl::Status&) { self->OnPartDone(); });
  }
}

void CohortWork::OnPartDone() {
  // Every part's callback tries; the one that finds them all done (or the waiting thread, if
  // it got there first) finishes.
  FinishIfDone();
}

bool CohortWork::FinishIfDone() {
  if (finishing_.load(std::memory_order_acquire)) return true;
  for (const auto& part : parts_) {
    if (!part->IsCompleted()) return false;
  }
  if (finishing_.exchange(true, std::memory_order_acq_rel)) return true;
  Finish();
  return true;
}

void CohortWork::Finish() {
  absl::Status failure;
  for (const auto& part : parts_) {
    failure = part->status();
    if (!failure.ok()) break;
  }
  std::exception_ptr error;
  if (failure.ok()) {
    if (!epilogues_.empty()) {
      try {
        // Results are written into the caller's tensors as raw data, as gloo does: no autograd
        // (this thread's grad mode is on by default, and a leaf that requires grad would
        // refuse an in-place copy).
        at::NoGradGuard no_grad;
        for (auto& epilogue : epilogues_) epilogue();
      } catch (...) {
        error = std::current_exception();
      }
    }
  } else {
    error = ToException(failure);
  }
  for (const auto& member : members_) {
    // Every part of a member is one of ours, so all are done: the member finishes now, here or
    // on the thread that claimed it first.
    member->FinishIfDone();
    std::unique_lock<std::mutex> lock(member->mutex_);
    member->cv_.wait(lock, [&member] { return member->completed_; });
    if (!error && member->exception_) error = member->exception_;
  }
  // The buffers are no longer needed; the outputs stay (result() and the Future hold them).
  epilogues_.clear();
  keep_alive_.clear();
  c10::intrusive_ptr<c10::ivalue::Future> future;
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    done_ = true;
    error_ = error;
    future = future_;
  }
  finish(error);
  // A CUDA Work's Future completed when it was made (the CUDA way).
  if (future && !device_stream_.has_value()) MarkFuture(*future);
}

void CohortWork::BlockCurrentStreams() const {
  for (const auto& end : end_events_) {
    c10::impl::VirtualGuardImpl impl(end->device_type());
    end->block(impl.getStream(end->device()));
  }
}

void CohortWork::synchronize() { BlockCurrentStreams(); }

void CohortWork::MarkFuture(c10::ivalue::Future& future) const {
  if (error_) {
    future.setError(error_);
  } else {
    future.markCompleted(c10::IValue(std::vector<at::Tensor>(outputs_.begin(), outputs_.end())));
  }
}

bool CohortWork::wait(std::chrono::milliseconds timeout) {
  if (device_stream_.has_value()) {
    // The caller's streams wait; the host waits only when given a timeout (torch's blocking
    // wait), and raises what is known to have failed already.
    BlockCurrentStreams();
    if (timeout != kNoTimeout) {
      absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
      for (const auto& part : parts_) {
        absl::Status status = part->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration()));
        TORCH_CHECK(part->IsCompleted(), "cohort: rank ", rank_, ": ", c10d::opTypeToString(type_),
                    " did not finish on the device within the wait timeout of ", timeout.count(),
                    " ms; it is still running (", status.message(), ")");
      }
    }
    if (FinishIfDone()) {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return completed_; });
      if (exception_) std::rethrow_exception(exception_);
    }
    return true;
  }
  if (timeout == kNoTimeout) {
    // An untimed wait runs the operation on this thread when the progress thread is idle (no
    // hand-off on the latency path). Every operation has its own timeout, so this ends.
    // A failed part's status becomes this Work's exception in Finish().
    for (const auto& part : parts_) part->Wait().IgnoreError();
  } else {
    absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
    for (const auto& part : parts_) {
      absl::Status status = part->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration()));
      if (!part->IsCompleted()) {
        // The operation goes on; the caller hears that its peers have not finished it in time.
        FailureDetails details;
        details.op = OpTypeName(part->op());
        details.sequence = part->sequence();
        details.ranks = {rank_};
        throw CollectiveFailure(
            absl::StrCat("cohort: rank ", rank_, ": ", c10d::opTypeToString(type_),
                         " did not finish within the wait timeout of ", timeout.count(),
                         " ms; it is still running (", status.message(), ")"),
            std::move(details));
      }
    }
  }
  FinishIfDone();
  // Another thread (a part's callback) may still be copying results out.
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return completed_; });
  if (exception_) std::rethrow_exception(exception_);
  return true;
}

bool CohortWork::isCompleted() {
  FinishIfDone();
  std::lock_guard<std::mutex> lock(mutex_);
  return completed_;
}

bool CohortWork::isSuccess() const {
  // Finishing a Work whose operations are done is not a change a caller can tell apart from
  // it having finished on its own: allowed from these const queries.
  const_cast<CohortWork*>(this)->FinishIfDone();
  std::lock_guard<std::mutex> lock(mutex_);
  return !exception_;
}

std::exception_ptr CohortWork::exception() const {
  const_cast<CohortWork*>(this)->FinishIfDone();
  std::lock_guard<std::mutex> lock(mutex_);
  return exception_;
}

int CohortWork::sourceRank() const {
  if (type_ == c10d::OpType::RECVANYSOURCE && !parts_.empty()) return parts_[0]->source_rank();
  TORCH_CHECK(type_ == c10d::OpType::RECV || type_ == c10d::OpType::RECVANYSOURCE,
              "cohort: sourceRank() is only defined for the Work of a recv");
  return fixed_source_rank_;
}

std::vector<at::Tensor> CohortWork::result() {
  return std::vector<at::Tensor>(outputs_.begin(), outputs_.end());
}

c10::intrusive_ptr<c10::ivalue::Future> CohortWork::getFuture() {
  c10::intrusive_ptr<c10::ivalue::Future> future;
  if (device_stream_.has_value()) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (!future_) {
      // Completed now, the CUDA way: the Future records its events on the call's stream (made
      // current for this), and whoever uses its value orders its streams after them.
      future_ = c10::make_intrusive<c10::ivalue::Future>(
          c10::ListType::create(c10::TensorType::get()),
          std::vector<c10::Device>{device_stream_->device()});
      c10::StreamGuard guard(*device_stream_);
      if (done_ && error_) {
        future_->setError(error_);
      } else {
        future_->markCompleted(
            c10::IValue(std::vector<at::Tensor>(outputs_.begin(), outputs_.end())));
      }
    }
    return future_;
  }
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (!future_) {
      future_ =
          c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()));
      if (done_) MarkFuture(*future_);
    }
    future = future_;
  }
  // The Future completes when the operation does, whoever waits (then() callbacks, DDP hooks).
  FinishOnCompletion();
  return future;
}

}  // namespace cohort::torch_ext
