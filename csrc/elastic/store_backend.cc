#include "elastic/store_backend.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort::elastic {

StoreCoordinatorBackend::StoreCoordinatorBackend(std::unique_ptr<store::StoreClient> client,
                                                 RendezvousSettings settings)
    : client_(std::move(client)), settings_(std::move(settings)) {}

absl::StatusOr<std::vector<AgentEvent>> StoreCoordinatorBackend::Poll(absl::Duration wait) {
  std::vector<AgentEvent> events;
  absl::Time now = absl::Now();
  // Wake for the next heartbeat check at the latest.
  if (!tracked_.empty()) wait = std::min(wait, next_heartbeat_check_ - now);
  wait = std::max(wait, absl::ZeroDuration());
  COHORT_ASSIGN_OR_RETURN(store::ChangeSet inbox,
                          client_->Changes(keys::kInbox, inbox_revision_, wait));
  inbox_revision_ = inbox.revision;
  now = absl::Now();
  for (const store::Change& change : inbox.changes) {
    auto event = DecodeInboxEntry(change.key, change.value, change.revision);
    if (!event.ok()) {
      COHORT_LOG(WARN) << "ignoring " << change.key << ": " << event.status().message();
      continue;
    }
    if (!event->has_value()) continue;
    if ((*event)->kind == AgentEvent::Kind::kJoined && !tracked_.contains((*event)->node_id)) {
      tracked_[(*event)->node_id] = Tracked{now, (*event)->info.host};
    }
    events.push_back(std::move(**event));
  }
  if (now >= next_heartbeat_check_) {
    COHORT_RETURN_IF_ERROR(CheckHeartbeats(now, &events));
    next_heartbeat_check_ = now + settings_.heartbeat_interval / 4;
  }
  return events;
}

absl::Status StoreCoordinatorBackend::CheckHeartbeats(absl::Time now,
                                                      std::vector<AgentEvent>* events) {
  // Only the heartbeats since the last check travel; a node is lost when it had none for the
  // heartbeat timeout.
  COHORT_ASSIGN_OR_RETURN(
      store::ChangeSet beats,
      client_->Changes(keys::kHeartbeatPrefix, heartbeat_revision_, absl::ZeroDuration()));
  heartbeat_revision_ = beats.revision;
  const size_t prefix = std::string(keys::kHeartbeatPrefix).size();
  for (const store::Change& change : beats.changes) {
    auto found = tracked_.find(change.key.substr(prefix));
    if (found != tracked_.end()) found->second.last_beat = now;
  }
  for (auto it = tracked_.begin(); it != tracked_.end();) {
    absl::Duration silent = now - it->second.last_beat;
    if (silent <= settings_.heartbeat_timeout) {
      ++it;
      continue;
    }
    AgentEvent lost;
    lost.kind = AgentEvent::Kind::kLost;
    lost.node_id = it->first;
    lost.reason = absl::StrCat("node ", it->second.host, " lost: no heartbeat for ",
                               absl::FormatDuration(absl::Trunc(silent, absl::Milliseconds(1))));
    // If the node comes back (a partition heals), its agent learns it was dropped.
    COHORT_RETURN_IF_ERROR(client_->Set(
        keys::Admit(it->first),
        absl::StrCat("error:the coordinator declared this node lost (", lost.reason,
                     "); check the network between this node and the rendezvous endpoint")));
    events->push_back(std::move(lost));
    it = tracked_.erase(it);
  }
  return absl::OkStatus();
}

absl::Status StoreCoordinatorBackend::PublishWorld(const World& world, const CoordinatorState&) {
  COHORT_RETURN_IF_ERROR(client_->Set(keys::World(world.generation), EncodeWorld(world)));
  // Every admission in one round trip.
  const std::string generation = absl::StrCat(world.generation);
  std::vector<std::pair<std::string, std::string>> admissions;
  admissions.reserve(world.nodes.size());
  for (const NodeInfo& node : world.nodes) admissions.emplace_back(keys::Admit(node.node_id), generation);
  return client_->SetMany(admissions);
}

absl::Status StoreCoordinatorBackend::PublishEnd(int64_t generation, const GenerationEnd& end,
                                                 const CoordinatorState&) {
  return client_->Set(keys::End(generation), EncodeEnd(end));
}

absl::Status StoreCoordinatorBackend::Refuse(const std::vector<std::string>& node_ids,
                                             const std::string& why) {
  if (node_ids.empty()) return absl::OkStatus();
  COHORT_RETURN_IF_ERROR(client_->Add(keys::kRefused, static_cast<int64_t>(node_ids.size())).status());
  std::vector<std::pair<std::string, std::string>> refusals;
  for (const std::string& node_id : node_ids) {
    refusals.emplace_back(keys::Admit(node_id), absl::StrCat("error:", why));
  }
  return client_->SetMany(refusals);
}

absl::StatusOr<std::unique_ptr<StoreAgentBackend>> StoreAgentBackend::Connect(
    const store::StoreClientOptions& options, const std::string& node_id,
    const RendezvousSettings& settings) {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<store::StoreClient> client,
                          store::StoreClient::Connect(options));
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<store::StoreClient> waiter,
                          store::StoreClient::Connect(options));
  return std::unique_ptr<StoreAgentBackend>(
      new StoreAgentBackend(std::move(client), std::move(waiter), node_id, settings));
}

StoreAgentBackend::StoreAgentBackend(std::unique_ptr<store::StoreClient> client,
                                     std::unique_ptr<store::StoreClient> waiter,
                                     std::string node_id, RendezvousSettings settings)
    : client_(std::move(client)),
      waiter_(std::move(waiter)),
      node_id_(std::move(node_id)),
      settings_(std::move(settings)) {}

std::string StoreAgentBackend::Describe() const {
  return absl::StrCat("the rendezvous store at ", client_->address());
}

absl::Status StoreAgentBackend::Beat() {
  return waiter_->Add(keys::Heartbeat(node_id_), 1).status();
}

absl::StatusOr<News> StoreAgentBackend::WaitForNews(const Interest& interest, Deadline deadline) {
  News news;
  absl::Duration wait = std::max(deadline.Remaining(), absl::ZeroDuration());
  if (interest.admission) {
    auto admitted = waiter_->Get(keys::Admit(node_id_), wait);
    if (!admitted.ok()) {
      if (admitted.status().code() == absl::StatusCode::kDeadlineExceeded) return news;
      return admitted.status();
    }
    COHORT_RETURN_IF_ERROR(waiter_->Delete(keys::Admit(node_id_)).status());
    if (absl::StartsWith(*admitted, "error:")) {
      news.refused = admitted->substr(6);
    } else {
      int64_t generation = 0;
      if (!absl::SimpleAtoi(*admitted, &generation)) {
        return absl::DataLossError(absl::StrCat("bad admission \"", *admitted, "\" from ",
                                                Describe()));
      }
      news.admitted = generation;
    }
  } else if (interest.end_of_generation > 0) {
    auto text = waiter_->Get(keys::End(interest.end_of_generation), wait);
    if (!text.ok()) {
      if (text.status().code() == absl::StatusCode::kDeadlineExceeded) return news;
      return text.status();
    }
    COHORT_ASSIGN_OR_RETURN(GenerationEnd end, DecodeEnd(*text));
    news.ends.emplace_back(interest.end_of_generation, std::move(end));
  }
  return news;
}

absl::Status StoreAgentBackend::Join(const NodeInfo& info) {
  return client_->Set(keys::Join(node_id_), EncodeNode(info));
}

absl::StatusOr<World> StoreAgentBackend::FetchWorld(int64_t generation) {
  COHORT_ASSIGN_OR_RETURN(std::string text,
                          client_->Get(keys::World(generation), settings_.read_timeout));
  return DecodeWorld(text);
}

absl::Status StoreAgentBackend::ReportFailures(int64_t generation,
                                               const std::vector<WorkerFailure>& failures) {
  return client_->Set(keys::Failure(generation, node_id_), EncodeFailures(failures));
}

absl::Status StoreAgentBackend::ReportDone(int64_t generation) {
  return client_->Set(keys::Done(generation, node_id_), "1");
}

absl::Status StoreAgentBackend::Leave(const std::string& reason) {
  return client_->Set(keys::Left(node_id_), reason);
}

absl::StatusOr<std::vector<WorkerFailure>> StoreAgentBackend::Failures(int64_t generation) {
  COHORT_ASSIGN_OR_RETURN(std::vector<std::string> failure_keys,
                          client_->List(keys::FailurePrefix(generation)));
  std::vector<WorkerFailure> all;
  for (const std::string& key : failure_keys) {
    COHORT_ASSIGN_OR_RETURN(std::string text, client_->Get(key, settings_.read_timeout));
    COHORT_ASSIGN_OR_RETURN(std::vector<WorkerFailure> failures, DecodeFailures(text));
    all.insert(all.end(), failures.begin(), failures.end());
  }
  return all;
}

absl::StatusOr<int64_t> StoreAgentBackend::AcknowledgeEnd() { return client_->Add(keys::kExited, 1); }

absl::StatusOr<int64_t> StoreAgentBackend::AcknowledgedCount() {
  return client_->Add(keys::kExited, 0);
}

absl::StatusOr<int64_t> StoreAgentBackend::RefusedCount() { return client_->Add(keys::kRefused, 0); }

}  // namespace cohort::elastic
