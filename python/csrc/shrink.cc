// ProcessGroupCohort's failures in place: Shrink (a group of the survivors over the same
// connections), the launcher's removals, the flight recorder's dump (see process_group.h).
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "elastic/store/store_client.h"
#include "process_group.h"

namespace cohort::torch_ext {
namespace {

// cohortrun's worker store (COHORT_STORE_ADDR), which outlives every worker; nullptr when the
// job does not run under cohortrun.
std::unique_ptr<Bootstrap> WorkerStore() {
  auto address = config::GetString("COHORT_STORE_ADDR");
  if (!address.ok() || address->empty()) return nullptr;
  std::vector<std::string> parts = absl::StrSplit(*address, absl::MaxSplits(':', 1));
  int port = 0;
  TORCH_CHECK(parts.size() == 2 && absl::SimpleAtoi(parts[1], &port),
              "cohort: COHORT_STORE_ADDR=", *address, " is not host:port");
  store::StoreClientOptions options;
  options.host = parts[0];
  options.port = port;
  auto token = config::GetString("COHORT_JOB_TOKEN");
  if (token.ok() && !token->empty()) options.token = *token;
  auto job = config::GetString("COHORT_JOB_ID");
  if (job.ok()) options.job_id = *job;
  options.connect_timeout = absl::Seconds(30);
  auto client = store::StoreClient::Connect(options);
  TORCH_CHECK(client.ok(), "cohort: cannot reach cohortrun's worker store at ", *address, ": ",
              client.status().message());
  return std::move(*client);
}

}  // namespace

ProcessGroupCohort::ProcessGroupCohort(const c10::intrusive_ptr<c10d::Store>& store,
                                       std::unique_ptr<StoreBootstrap> bootstrap,
                                       std::unique_ptr<Communicator> comm,
                                       std::chrono::milliseconds timeout)
    : BackendBase(comm->rank(), comm->size()),
      store_(store),
      bootstrap_(std::move(bootstrap)),
      comm_(std::move(comm)),
      timeout_(timeout) {
  name_ = comm_->name();
  init();
}

c10::intrusive_ptr<ProcessGroupCohort> ProcessGroupCohort::Shrink(
    const std::vector<int>& exclude) {
  std::unique_ptr<Bootstrap> worker_store = WorkerStore();
  Bootstrap& arbiter = worker_store != nullptr ? *worker_store : *bootstrap_;
  // The new group owns the bootstrap its CUDA device groups agree through (the worker store
  // client above lives only for the agreement).
  auto bootstrap = std::make_unique<StoreBootstrap>(store_, bootstrap_->LocalAddressHint());
  ShrinkOptions options;
  options.exclude = exclude;
  options.device_bootstrap = bootstrap.get();
  absl::StatusOr<std::unique_ptr<Communicator>> shrunk = comm().Shrink(arbiter, options);
  // Without cohortrun the survivors agree through the group's store, which a job started by
  // hand (or by torchrun without its agent store) serves from rank 0's process.
  const bool store_gone = worker_store == nullptr &&
                          shrunk.status().code() == absl::StatusCode::kUnavailable;
  TORCH_CHECK(shrunk.ok(), "cohort: ", shrunk.status().message(),
              store_gone ? ". The survivors agree through the process group's store, which did "
                           "not answer: started without cohortrun it lives in rank 0's process "
                           "(MASTER_ADDR:MASTER_PORT), so a job that lost rank 0 cannot shrink; "
                           "run it under cohortrun (whose store outlives every worker) or restart "
                           "it"
                         : "");
  return c10::make_intrusive<ProcessGroupCohort>(store_, std::move(bootstrap),
                                                 std::move(*shrunk), timeout_);
}

void ProcessGroupCohort::RemoveRootRanks(const std::vector<int>& root_ranks,
                                         const std::string& reason) {
  if (comm_ == nullptr) return;
  std::vector<int> ranks;
  for (int rank = 0; rank < comm_->size(); ++rank) {
    for (int root : root_ranks) {
      if (comm_->root_rank(rank) == root) ranks.push_back(rank);
    }
  }
  if (!ranks.empty()) comm_->Remove(ranks, reason);
}

std::vector<int> ProcessGroupCohort::RootRanks() const {
  std::vector<int> roots;
  for (int rank = 0; rank < comm().size(); ++rank) roots.push_back(comm().root_rank(rank));
  return roots;
}

std::string ProcessGroupCohort::DumpTrace(const std::string& directory) const {
  absl::StatusOr<std::string> path = comm().DumpTrace(directory);
  TORCH_CHECK(path.ok(), "cohort: ", path.status().message());
  return *path;
}

std::vector<std::pair<int, std::string>> ProcessGroupCohort::FailedRanks() const {
  std::vector<std::pair<int, std::string>> failed;
  for (const FailureBlame& entry : comm().FailedRanks()) {
    failed.emplace_back(entry.rank, BlameName(entry.blame));
  }
  return failed;
}

}  // namespace cohort::torch_ext
