// cohort._C's calls for failures in place (python/cohort/failures.py uses them): shrink a group,
// remove the ranks the launcher removed, wait for the launcher's next removal, the flight
// recorder's dump.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "common/membership.h"
#include "elastic/store/store_client.h"
#include "process_group.h"

namespace py = pybind11;

namespace cohort::torch_ext {

ProcessGroupCohort& Ours(const c10::intrusive_ptr<BackendBase>& backend);

namespace {

// One connection to cohortrun's worker store for the removal watch (COHORT_STORE_ADDR). Never
// destroyed (static destruction would pull it from under a watch parked in a get), and shut
// down by stop_watch at interpreter exit: a daemon thread that comes back from the get while
// the interpreter finalizes is ended inside gil_scoped_release's destructor, and that forced
// unwinding through a noexcept frame aborted workers at their exit ("terminate called without
// an active exception").
struct WatchConnection {
  std::mutex mutex;
  store::StoreClient* client = nullptr;  // leaked on purpose
  bool stopped = false;
};

WatchConnection& Watch() {
  static WatchConnection* watch = new WatchConnection;
  return *watch;
}

store::StoreClient* WatchStore() {
  WatchConnection& watch = Watch();
  std::lock_guard<std::mutex> lock(watch.mutex);
  if (watch.stopped) return nullptr;
  if (watch.client != nullptr) return watch.client;
  auto address = config::GetString("COHORT_STORE_ADDR");
  if (!address.ok() || address->empty()) return nullptr;
  std::vector<std::string> parts = absl::StrSplit(*address, absl::MaxSplits(':', 1));
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) return nullptr;
  store::StoreClientOptions options;
  options.host = parts[0];
  options.port = port;
  auto token = config::GetString("COHORT_JOB_TOKEN");
  if (token.ok() && !token->empty()) options.token = *token;
  auto job = config::GetString("COHORT_JOB_ID");
  if (job.ok()) options.job_id = *job;
  auto connected = store::StoreClient::Connect(options);
  if (!connected.ok()) return nullptr;
  watch.client = connected->release();
  return watch.client;
}

}  // namespace

void DefineFailureCalls(py::module& module) {
  module.def(
      "shrink",
      [](const c10::intrusive_ptr<BackendBase>& backend, const std::vector<int>& exclude) {
        c10::intrusive_ptr<ProcessGroupCohort> shrunk;
        std::vector<int> roots;
        {
          py::gil_scoped_release release;
          shrunk = Ours(backend).Shrink(exclude);
          roots = shrunk->RootRanks();
        }
        return std::make_pair(c10::intrusive_ptr<BackendBase>(shrunk), roots);
      },
      py::arg("backend"), py::arg("exclude") = std::vector<int>(),
      "A group of the survivors (and the rank each had before any shrink); this one is revoked.");
  module.def(
      "root_ranks",
      [](const c10::intrusive_ptr<BackendBase>& backend) { return Ours(backend).RootRanks(); },
      "The rank each rank of the group had before any shrink.");
  module.def(
      "remove_root_ranks",
      [](const c10::intrusive_ptr<BackendBase>& backend, const std::vector<int>& ranks,
         const std::string& reason) { Ours(backend).RemoveRootRanks(ranks, reason); },
      py::call_guard<py::gil_scoped_release>(),
      "Fails the group's pending operations: the launcher removed these ranks.");
  module.def(
      "failed_ranks",
      [](const c10::intrusive_ptr<BackendBase>& backend) { return Ours(backend).FailedRanks(); },
      py::call_guard<py::gil_scoped_release>(), "(rank, how) for each rank known to have failed.");
  module.def(
      "dump_trace",
      [](const c10::intrusive_ptr<BackendBase>& backend, const std::string& directory) {
        return Ours(backend).DumpTrace(directory);
      },
      py::arg("backend"), py::arg("directory") = "", py::call_guard<py::gil_scoped_release>(),
      "Writes the group's flight-recorder dump; returns its path.");
  module.def(
      "wait_removal",
      [](int number, double timeout_seconds) -> py::object {
        membership::Removal removal;
        bool found = false;
        {
          py::gil_scoped_release release;
          store::StoreClient* store = WatchStore();
          if (store != nullptr) {
            auto text = store->Get(membership::RemovalKey(number),
                                   absl::Milliseconds(timeout_seconds * 1000));
            if (text.ok()) {
              auto decoded = membership::Decode(*text);
              if (decoded.ok()) {
                removal = std::move(*decoded);
                found = true;
              }
            }
          }
        }
        if (!found) return py::none();
        return py::make_tuple(removal.ranks, removal.reason);
      },
      py::arg("number"), py::arg("timeout_seconds"),
      "cohortrun's removal `number` (ranks, reason), or None when it did not come in time.");
  module.def(
      "stop_watch",
      [] {
        WatchConnection& watch = Watch();
        std::lock_guard<std::mutex> lock(watch.mutex);
        watch.stopped = true;
        if (watch.client != nullptr) watch.client->Shutdown();  // a parked get returns now
      },
      py::call_guard<py::gil_scoped_release>(),
      "Ends the removal watch's waits for good (at interpreter exit).");
}

}  // namespace cohort::torch_ext
