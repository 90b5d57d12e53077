#include "work.h"

#include <stdexcept>

#include <ATen/record_function.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace cohort::torch_ext {

std::exception_ptr ToException(const absl::Status& status) {
  std::string message(status.message());
  // libcohort's advice names its own variable; through torch, the timeout is the one given to
  // init_process_group / new_group (COHORT_TIMEOUT does not apply).
  static const std::string kAdvice = "raise COHORT_TIMEOUT";
  if (auto at = message.find(kAdvice); at != std::string::npos) {
    message.replace(at, kAdvice.size(), "raise the timeout given to init_process_group");
  }
  return std::make_exception_ptr(std::runtime_error(message));
}

namespace {

// torch's Work starts a profiler range when given a title: only worth it while profiling (it
// allocates on every operation otherwise).
bool Profiling() { return at::hasCallbacks(); }

}  // namespace

CohortWork::CohortWork(int rank, c10d::OpType type, const char* profiling_title,
                       const std::vector<at::Tensor>& profiling_inputs,
                       std::vector<at::Tensor> outputs)
    : c10d::Work(rank, type, Profiling() ? profiling_title : nullptr,
                 Profiling() ? OptionalTensors(profiling_inputs) : OptionalTensors()),
      type_(type),
      outputs_(std::move(outputs)) {}

CohortWork::~CohortWork() = default;

void CohortWork::Attach(std::vector<std::shared_ptr<cohort::Work>> parts) {
  parts_ = std::move(parts);
  remaining_.store(static_cast<int>(parts_.size()));
  if (parts_.empty()) {
    OnPartDone(absl::OkStatus());  // nothing to move (e.g. a zero-rank split): done now
    return;
  }
  // Each callback holds a reference, so the buffers outlive the operation even when the
  // caller drops this Work right away (async_op=True without wait()).
  for (const auto& part : parts_) {
    c10::intrusive_ptr<CohortWork> self = c10::intrusive_ptr<CohortWork>::reclaim_copy(this);
    part->OnCompletion([self](const absl::Status& status) { self->OnPartDone(status); });
  }
}

void CohortWork::OnPartDone(const absl::Status& status) {
  if (!status.ok()) {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (first_error_.ok()) first_error_ = status;
  }
  if (!parts_.empty() && remaining_.fetch_sub(1) != 1) return;
  absl::Status failure;
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    failure = first_error_;
  }
  std::exception_ptr error;
  if (failure.ok()) {
    try {
      // Results are written into the caller's tensors as raw data, as gloo does: no autograd
      // (this thread's grad mode is on by default, and a leaf that requires grad would refuse
      // an in-place copy).
      at::NoGradGuard no_grad;
      for (auto& epilogue : epilogues_) epilogue();
    } catch (...) {
      error = std::current_exception();
    }
  } else {
    error = ToException(failure);
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
  if (future) MarkFuture(*future);
}

void CohortWork::MarkFuture(c10::ivalue::Future& future) const {
  if (error_) {
    future.setError(error_);
  } else {
    future.markCompleted(c10::IValue(outputs_));
  }
}

bool CohortWork::wait(std::chrono::milliseconds timeout) {
  if (timeout == kNoTimeout && wait_limit_.count() > 0) {
    absl::Time deadline = absl::Now() + absl::FromChrono(wait_limit_);
    for (const auto& part : parts_) {
      part->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration())).IgnoreError();
      if (!part->IsCompleted()) {
        TORCH_CHECK(false, "cohort: ", c10d::opTypeToString(type_), " on rank ", rank_,
                    " timed out after ", wait_limit_.count(),
                    " ms (the timeout given to init_process_group): the peer never sent or "
                    "received the matching message");
      }
    }
  } else if (timeout == kNoTimeout) {
    // An untimed wait runs the operation on this thread when the progress thread is idle (no
    // hand-off on the latency path). Every operation has its own timeout, so this ends.
    // Its status also reaches OnPartDone, which turns it into this Work's exception.
    for (const auto& part : parts_) part->Wait().IgnoreError();
  } else {
    absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
    for (const auto& part : parts_) {
      absl::Status status = part->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration()));
      if (!part->IsCompleted()) {
        TORCH_CHECK(false, "cohort: rank ", rank_, ": ", c10d::opTypeToString(type_),
                    " did not finish within the wait timeout of ", timeout.count(),
                    " ms; it is still running (", status.message(), ")");
      }
    }
  }
  // The last part's callback may still be copying results out on another thread.
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return completed_; });
  if (exception_) std::rethrow_exception(exception_);
  return true;
}

int CohortWork::sourceRank() const {
  if (type_ == c10d::OpType::RECVANYSOURCE && !parts_.empty()) return parts_[0]->source_rank();
  TORCH_CHECK(type_ == c10d::OpType::RECV || type_ == c10d::OpType::RECVANYSOURCE,
              "cohort: sourceRank() is only defined for the Work of a recv");
  return fixed_source_rank_;
}

std::vector<at::Tensor> CohortWork::result() { return outputs_; }

c10::intrusive_ptr<c10::ivalue::Future> CohortWork::getFuture() {
  std::lock_guard<std::mutex> lock(state_mutex_);
  if (!future_) {
    future_ = c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()));
    if (done_) MarkFuture(*future_);
  }
  return future_;
}

}  // namespace cohort::torch_ext
