// How a failed collective reaches Python: one exception type, cohort.CollectiveError, with the
// op, its sequence number, the ranks involved (this rank first) and their hosts as attributes,
// so a training loop can tell a peer's failure (catch CollectiveError) from a programming error
// (RuntimeError, ValueError). Its base is chosen when the extension is compiled: torch's
// DistBackendError where torch has one (2.1 and later), else RuntimeError (torch 1.13).
#pragma once

#include <exception>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <pybind11/pybind11.h>
#include <torch/version.h>

#include "absl/status/status.h"
#include "collectives/failure.h"

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define COHORT_TORCH_DIST_BACKEND_ERROR 1
#else
#define COHORT_TORCH_DIST_BACKEND_ERROR 0
#endif

namespace cohort::torch_ext {

#if COHORT_TORCH_DIST_BACKEND_ERROR
using CollectiveFailureBase = c10::DistBackendError;
#else
using CollectiveFailureBase = c10::Error;
#endif

// The C++ side of cohort.CollectiveError: thrown (through a Work's exception_ptr) for a failed
// operation, turned into the Python exception by the translator RegisterErrors installs. Were
// the translator not reached, torch's own translation of the base applies (DistBackendError or
// RuntimeError, same message).
class CollectiveFailure : public CollectiveFailureBase {
 public:
  CollectiveFailure(std::string message, FailureDetails details)
      : CollectiveFailureBase(message, /*backtrace=*/""), details_(std::move(details)) {}
  const FailureDetails& details() const { return details_; }

 private:
  FailureDetails details_;
};

// The exception a failed libcohort Status becomes: a CollectiveFailure when the status carries
// failure details (every operation that failed for a reason other than its arguments), else a
// RuntimeError. `message` replaces the status's message when not empty.
std::exception_ptr ToException(const absl::Status& status, const std::string& message = "");

// Adds CollectiveError to the module and installs the translator.
void RegisterErrors(pybind11::module_& module);

// The Python exception object for `error` (a CollectiveError or a RuntimeError), for
// cohort.work_exception().
pybind11::object ExceptionObject(std::exception_ptr error);

}  // namespace cohort::torch_ext
