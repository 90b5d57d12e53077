#include "errors.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

namespace cohort::torch_ext {
namespace {

// The Python class, made once at import (owned by the module from then on).
PyObject* collective_error_type = nullptr;

py::object MakeCollectiveError(const CollectiveFailure& failure) {
  const FailureDetails& details = failure.details();
  py::object error = py::reinterpret_borrow<py::object>(collective_error_type)(
      std::string(failure.what_without_backtrace()));
  error.attr("op") = details.op;
  error.attr("sequence") = details.sequence == 0 ? py::object(py::none())
                                                 : py::object(py::int_(details.sequence));
  error.attr("rank") = details.ranks.empty() ? py::object(py::none())
                                             : py::object(py::int_(details.ranks[0]));
  error.attr("ranks") = details.ranks;
  error.attr("hosts") = details.hosts;
  return error;
}

std::string MessageOf(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& caught) {
    return caught.what_without_backtrace();
  } catch (const std::exception& caught) {
    return caught.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace

std::exception_ptr ToException(const absl::Status& status, const std::string& message) {
  std::string text = message.empty() ? std::string(status.message()) : message;
  // libcohort's advice names its own variable; through torch, the timeout is the one given to
  // init_process_group / new_group (COHORT_TIMEOUT does not apply).
  static const std::string kAdvice = "raise COHORT_TIMEOUT";
  if (auto at = text.find(kAdvice); at != std::string::npos) {
    text.replace(at, kAdvice.size(), "raise the timeout given to init_process_group");
  }
  if (auto details = GetFailureDetails(status)) {
    return std::make_exception_ptr(CollectiveFailure(std::move(text), std::move(*details)));
  }
  return std::make_exception_ptr(std::runtime_error(text));
}

void RegisterErrors(py::module_& module) {
#if COHORT_TORCH_DIST_BACKEND_ERROR
  py::object base = py::module_::import("torch.distributed").attr("DistBackendError");
#else
  py::object base = py::reinterpret_borrow<py::object>(PyExc_RuntimeError);
#endif
  collective_error_type = PyErr_NewExceptionWithDoc(
      "cohort.CollectiveError",
      "A collective or point-to-point operation failed because of its peers or the "
      "communicator (a lost or silent rank, ranks that disagree, an abort), not because of its "
      "arguments. Attributes: op (str), sequence (int, None for send/recv), rank (this rank), "
      "ranks (this rank first, then the peers involved) and hosts (the host of each).",
      base.ptr(), nullptr);
  if (collective_error_type == nullptr) throw py::error_already_set();
  module.add_object("CollectiveError", py::reinterpret_borrow<py::object>(collective_error_type));
  module.attr("collective_error_base") = base.attr("__name__");
  // Tried before torch's translators (registered earlier): a CollectiveFailure thrown from any
  // binding (Work.wait, Future.wait, the collectives' synchronous path) becomes a
  // CollectiveError with its attributes.
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const CollectiveFailure& failure) {
      py::object instance = MakeCollectiveError(failure);
      PyErr_SetObject(collective_error_type, instance.ptr());
    }
  });
}

py::object ExceptionObject(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const CollectiveFailure& failure) {
    return MakeCollectiveError(failure);
  } catch (...) {
  }
  return py::module_::import("builtins").attr("RuntimeError")(MessageOf(error));
}

}  // namespace cohort::torch_ext
