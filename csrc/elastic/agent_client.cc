#include "elastic/agent_client.h"

#include <pthread.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort::elastic {

absl::StatusOr<std::unique_ptr<AgentClient>> AgentClient::Connect(
    const AgentClientOptions& options, const std::string& node_id) {
  store::StoreClientOptions client_options;
  client_options.host = options.store_host;
  client_options.port = options.store_port;
  client_options.job_id = options.job_id;
  client_options.token = options.token;
  client_options.connect_timeout = options.connect_timeout;
  client_options.timeout = options.settings.read_timeout;
  auto client = store::StoreClient::Connect(client_options);
  if (!client.ok()) {
    return absl::Status(client.status().code(),
                        absl::StrCat("cannot reach the rendezvous endpoint ", options.store_host,
                                     ":", options.store_port, ": ", client.status().message()));
  }
  auto agent = std::unique_ptr<AgentClient>(new AgentClient(options, std::move(*client), node_id));
  // The first beat before returning, so the coordinator sees this node alive from the start.
  COHORT_RETURN_IF_ERROR(agent->client_->Add(keys::Heartbeat(node_id), 1).status());
  AgentClient* raw = agent.get();
  agent->heartbeat_thread_ = std::thread([raw] {
    pthread_setname_np(pthread_self(), "cohort-heartbeat");
    raw->HeartbeatLoop();
  });
  return agent;
}

AgentClient::AgentClient(const AgentClientOptions& options,
                         std::unique_ptr<store::StoreClient> client, std::string node_id)
    : options_(options), client_(std::move(client)), node_id_(std::move(node_id)) {}

AgentClient::~AgentClient() { StopHeartbeats(); }

void AgentClient::StopHeartbeats() {
  {
    absl::MutexLock lock(&mutex_);
    stop_ = true;
    wake_.SignalAll();
  }
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

void AgentClient::HeartbeatLoop() {
  absl::MutexLock lock(&mutex_);
  while (!stop_) {
    wake_.WaitWithTimeout(&mutex_, options_.settings.heartbeat_interval);
    if (stop_) break;
    mutex_.Unlock();
    absl::Status beat = client_->Add(keys::Heartbeat(node_id_), 1).status();
    mutex_.Lock();
    if (!beat.ok()) {
      health_ = absl::UnavailableError(absl::StrCat(
          "lost the rendezvous store at ", client_->address(), " (the endpoint host's agent is "
          "gone or unreachable): ", beat.message()));
      break;
    }
  }
}

absl::Status AgentClient::health() const {
  absl::MutexLock lock(&mutex_);
  return health_;
}

absl::Status AgentClient::Ring() {
  COHORT_ASSIGN_OR_RETURN(int64_t number, client_->Add(keys::kDoorbell, 1));
  return client_->Set(keys::Ring(number), "");
}

absl::StatusOr<World> AgentClient::Join(const NodeInfo& info, absl::Duration timeout,
                                        const std::function<absl::Status()>& interrupted) {
  COHORT_RETURN_IF_ERROR(client_->Set(keys::Node(node_id_), EncodeNode(info)));
  COHORT_ASSIGN_OR_RETURN(int64_t sequence, client_->Add(keys::kJoinSequence, 1));
  COHORT_RETURN_IF_ERROR(client_->Set(keys::Waiting(node_id_), absl::StrCat(sequence)));
  COHORT_RETURN_IF_ERROR(Ring());
  Deadline deadline = Deadline::In(timeout);
  while (true) {
    COHORT_RETURN_IF_ERROR(health());
    if (interrupted) COHORT_RETURN_IF_ERROR(interrupted());
    auto admitted = client_->Get(keys::Admit(node_id_), absl::Milliseconds(100));
    if (admitted.ok()) {
      COHORT_RETURN_IF_ERROR(client_->Delete(keys::Admit(node_id_)).status());
      if (absl::StartsWith(*admitted, "error:")) {
        return absl::FailedPreconditionError(admitted->substr(6));
      }
      int64_t generation = 0;
      if (!absl::SimpleAtoi(*admitted, &generation)) {
        return absl::DataLossError(absl::StrCat("bad admission \"", *admitted, "\""));
      }
      COHORT_ASSIGN_OR_RETURN(std::string text,
                              client_->Get(keys::World(generation), options_.settings.read_timeout));
      return DecodeWorld(text);
    }
    if (admitted.status().code() != absl::StatusCode::kDeadlineExceeded) return admitted.status();
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "not admitted to the job within ", absl::FormatDuration(timeout),
          " (the coordinator at ", client_->address(), " did not close a round with this node)"));
    }
  }
}

absl::Status AgentClient::ReportFailures(int64_t generation,
                                         const std::vector<WorkerFailure>& failures) {
  COHORT_RETURN_IF_ERROR(client_->Set(keys::Failure(generation, node_id_), EncodeFailures(failures)));
  return Ring();
}

absl::Status AgentClient::ReportDone(int64_t generation) {
  COHORT_RETURN_IF_ERROR(client_->Set(keys::Done(generation, node_id_), "1"));
  return Ring();
}

absl::StatusOr<std::optional<GenerationEnd>> AgentClient::PollEnd(int64_t generation,
                                                                  absl::Duration wait) {
  auto text = client_->Get(keys::End(generation), std::max(wait, absl::Milliseconds(1)));
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kDeadlineExceeded) {
      return std::optional<GenerationEnd>();
    }
    return text.status();
  }
  COHORT_ASSIGN_OR_RETURN(GenerationEnd end, DecodeEnd(*text));
  return std::optional<GenerationEnd>(end);
}

absl::StatusOr<std::vector<WorkerFailure>> AgentClient::Failures(int64_t generation) {
  COHORT_ASSIGN_OR_RETURN(std::vector<std::string> failure_keys,
                          client_->List(keys::FailurePrefix(generation)));
  std::vector<WorkerFailure> all;
  for (const std::string& key : failure_keys) {
    COHORT_ASSIGN_OR_RETURN(std::string text, client_->Get(key, options_.settings.read_timeout));
    COHORT_ASSIGN_OR_RETURN(std::vector<WorkerFailure> failures, DecodeFailures(text));
    all.insert(all.end(), failures.begin(), failures.end());
  }
  std::stable_sort(all.begin(), all.end(), [](const WorkerFailure& a, const WorkerFailure& b) {
    return a.time_ms < b.time_ms;
  });
  return all;
}

absl::Status AgentClient::Leave(const std::string& reason) {
  StopHeartbeats();
  COHORT_RETURN_IF_ERROR(client_->Set(keys::Left(node_id_), reason));
  return Ring();
}

absl::StatusOr<int64_t> AgentClient::AcknowledgeEnd() { return client_->Add(keys::kExited, 1); }

absl::StatusOr<int64_t> AgentClient::AcknowledgedCount() { return client_->Add(keys::kExited, 0); }

absl::StatusOr<int64_t> AgentClient::RefusedCount() { return client_->Add(keys::kRefused, 0); }

}  // namespace cohort::elastic
