// cohort._C: the creator torch calls for init_process_group("cohort") / new_group(backend=
// "cohort"), and a few helpers for the Python package and its tests. The backend object is
// returned as torch's own base type (ProcessGroup in 1.x, Backend in 2.x), so torch's Python
// bindings serve it; cohort-specific calls take it back and check that it is ours.
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include "collectives/communicator.h"
#include "errors.h"
#include "process_group.h"

namespace py = pybind11;

namespace cohort::torch_ext {

ProcessGroupCohort& Ours(const c10::intrusive_ptr<BackendBase>& backend) {
  auto* ours = dynamic_cast<ProcessGroupCohort*>(backend.get());
  TORCH_CHECK(ours != nullptr, "cohort: not a cohort process group (backend ",
              backend->getBackendName(), ")");
  return *ours;
}

// failure_bindings.cc: cohort.shrink, the launcher's removals, the flight recorder.
void DefineFailureCalls(py::module& module);

}  // namespace cohort::torch_ext

PYBIND11_MODULE(_C, module) {
  using cohort::torch_ext::BackendBase;
  using cohort::torch_ext::ProcessGroupCohort;
  module.doc() = "cohort's torch.distributed backend (C++ part); use `import cohort`";
  // Registers torch's c10d types (Store, ProcessGroup/Backend) with pybind11 before we use them.
  py::module::import("torch.distributed");
  // Process-wide settings libcohort leaves to programs (Abseil's deadlock detection off).
  cohort::ConfigureProcess();

  module.def(
      "create_backend",
      [](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
         std::chrono::milliseconds timeout, const std::string& store_host,
         const std::string& group_name) {
        c10::intrusive_ptr<BackendBase> backend;
        {
          // Connecting waits for every rank; Python stores need the GIL meanwhile.
          py::gil_scoped_release release;
          backend = c10::make_intrusive<ProcessGroupCohort>(
              store, rank, size, timeout, cohort::torch_ext::LocalAddressToward(store_host),
              group_name);
        }
        return backend;
      },
      py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("timeout"),
      py::arg("store_host") = "", py::arg("group_name") = "cohort",
      "Creates the backend for one group: connects to every rank through `store`.");
  module.def(
      "communicator_name",
      [](const c10::intrusive_ptr<BackendBase>& backend) {
        return cohort::torch_ext::Ours(backend).communicator_name();
      },
      "The libcohort communicator behind a cohort process group (unique within its store).");
  module.def(
      "abort",
      [](const c10::intrusive_ptr<BackendBase>& backend, const std::string& reason) {
        cohort::torch_ext::Ours(backend).Abort(reason);
      },
      py::arg("backend"), py::arg("reason") = "aborted by the user",
      py::call_guard<py::gil_scoped_release>(),
      "Fails every pending and later operation of the group with `reason`.");
  module.def(
      "work_exception",
      [](const c10::intrusive_ptr<c10d::Work>& work) -> py::object {
        // torch 1.13's Work.exception() cannot convert its std::exception_ptr to Python (for
        // every backend): this returns it as a RuntimeError, or None.
        std::exception_ptr error = work->exception();
        if (!error) return py::none();
        return cohort::torch_ext::ExceptionObject(error);
      },
      "The exception a failed Work holds: a CollectiveError (or a RuntimeError), None when it "
      "has none.");
  module.def("local_address_toward", &cohort::torch_ext::LocalAddressToward);
  cohort::torch_ext::RegisterErrors(module);
  cohort::torch_ext::DefineFailureCalls(module);
  module.attr("torch_version_built") = TORCH_VERSION;
#ifdef COHORT_HAVE_NCCL
  constexpr bool kWithNccl = COHORT_TORCH_CUDA;  // libcohort's NCCL device groups, on CUDA tensors
#else
  constexpr bool kWithNccl = false;
#endif
  module.attr("with_nccl") = py::bool_(kWithNccl);
  module.attr("with_cuda") = py::bool_(COHORT_TORCH_CUDA);
}
