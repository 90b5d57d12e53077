// Communicator::Shrink and Split (declared in communicator.h). Shrink: revoke this
// communicator, agree with the other survivors on who goes on (agreement.h), then make the child
// over the same channels (Protocol::Shrink; the states are in connection_set.h). Split: a
// collective on this communicator tells every rank the others' colors, then each color makes a
// new communicator of its own.
#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "collectives/agreement.h"
#include "collectives/communicator.h"
#include "collectives/engine.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort {

const std::string& Communicator::name() const { return engine_->config().name; }

std::vector<FailureBlame> Communicator::FailedRanks() const { return engine_->FailedRanks(); }

int Communicator::root_rank(int rank) const { return engine_->transport().ConnectionRank(rank); }

void Communicator::Remove(const std::vector<int>& ranks, const std::string& reason) {
  std::vector<int> valid;
  for (int rank : ranks) {
    if (rank >= 0 && rank < size() && rank != this->rank()) valid.push_back(rank);
  }
  if (valid.empty()) return;
  engine_->NoteRemoved(valid);
  Abort(WithBlame(absl::CancelledError(reason), valid.front(), Blame::kRemoved));
}

absl::StatusOr<std::string> Communicator::DumpTrace(const std::string& directory) const {
  return engine_->DumpTrace("request", directory);
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Shrink(Bootstrap& bootstrap,
                                                                   const ShrinkOptions& options) {
  const EngineConfig& config = engine_->config();
  const Protocol& protocol = engine_->transport();
  const uint32_t epoch = protocol.epoch() + 1;
  const std::string child_name =
      options.name.empty() ? absl::StrCat(name(), "/shrink", epoch) : options.name;
  const std::string where = absl::StrCat("rank ", rank(), " (", host(rank()), ")");
  auto failed = [&](const absl::Status& status) {
    return absl::Status(status.code(), absl::StrCat("shrinking communicator \"", name(), "\" on ",
                                                    where, " failed: ", status.message()));
  };
  for (int rank : options.exclude) {
    if (rank < 0 || rank >= size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Shrink: rank ", rank, " in exclude is not a rank (world size ", size(), ")"));
    }
  }
  absl::Duration wait;
  if (options.wait.has_value()) {
    wait = *options.wait;
  } else {
    auto value = config::GetDuration("COHORT_SHRINK_WAIT");
    if (!value.ok()) return value.status();
    wait = *value;
  }

  engine_->Revoke(absl::CancelledError(absl::StrCat("it is shrinking into \"", child_name, "\"")));
  AgreementOptions agreement;
  agreement.prefix = absl::StrCat(name(), "/shrink/", epoch);
  agreement.rank = rank();
  agreement.size = size();
  agreement.failed = engine_->FailedRanks();
  agreement.exclude = options.exclude;
  agreement.leave_out_failed = options.failed;
  agreement.wait = wait;
  agreement.store_timeout = config.timeout;
  auto agreed = AgreeOnSurvivors(bootstrap, agreement);
  if (!agreed.ok()) return failed(agreed.status());
  const std::vector<int>& survivors = agreed->survivors;

  auto child_protocol = engine_->ShrinkProtocol(survivors, child_name);
  if (!child_protocol.ok()) return failed(child_protocol.status());
  EngineConfig child_config = config;
  child_config.name = child_name;
  // Not the parent's bootstrap: the caller may drop it with the parent.
  child_config.bootstrap =
      options.device_bootstrap != nullptr ? options.device_bootstrap : &bootstrap;
  child_config.topology = std::make_shared<const Topology>(topology().Subset(survivors));
  auto engine = std::make_shared<Engine>(std::move(*child_protocol), std::move(child_config));
  engine->Start();
  std::unique_ptr<Communicator> child(new Communicator(std::move(engine)));
  child->options_ = options_;
  child->options_.name = child_name;

  std::vector<std::string> left;
  for (int rank = 0, next = 0; rank < size(); ++rank) {
    if (next < static_cast<int>(survivors.size()) && survivors[next] == rank) {
      ++next;
      continue;
    }
    std::string how = "left out";
    for (const FailureBlame& entry : agreed->failed) {
      if (entry.rank == rank) how = BlameName(entry.blame);
    }
    left.push_back(absl::StrCat(rank, " (", host(rank), ", ", how, ")"));
  }
  COHORT_LOG(WARN) << "communicator \"" << name() << "\" shrank into \"" << child_name
                   << "\" without rank" << (left.size() == 1 ? " " : "s ")
                   << absl::StrJoin(left, ", ") << ": " << where << " is now rank "
                   << child->rank() << " of " << child->size();
  return child;
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Split(Bootstrap& bootstrap, int color,
                                                                  int key) {
  const int n = size();
  std::vector<int64_t> mine = {color, key};
  std::vector<int64_t> table(2 * static_cast<size_t>(n));
  AllgatherOptions gather;
  gather.input = mine.data();
  gather.output = table.data();
  gather.count = 2;
  gather.dtype = DataType::kInt64;
  absl::Status status = Allgather(gather)->Wait();
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("splitting communicator \"", name(),
                                                    "\" failed: ", status.message()));
  }
  const int split = ++splits_;  // every rank splits in the same order: the same number
  if (color < 0) return std::unique_ptr<Communicator>();
  std::vector<int> members;
  for (int rank = 0; rank < n; ++rank) {
    if (table[2 * rank] == color) members.push_back(rank);
  }
  std::stable_sort(members.begin(), members.end(),
                   [&](int a, int b) { return table[2 * a + 1] < table[2 * b + 1]; });
  const int new_rank = static_cast<int>(std::find(members.begin(), members.end(), rank()) -
                                        members.begin());
  CommOptions child = options_;
  child.name = absl::StrCat(name(), "/split", split, "/", color);
  return Create(bootstrap, new_rank, static_cast<int>(members.size()), std::move(child));
}

}  // namespace cohort
