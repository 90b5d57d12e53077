#include "elastic/agent_client.h"

#include <pthread.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/status.h"
#include "elastic/store_backend.h"

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
  auto backend = StoreAgentBackend::Connect(client_options, node_id, options.settings);
  if (!backend.ok()) {
    return absl::Status(backend.status().code(),
                        absl::StrCat("cannot reach the rendezvous endpoint ", options.store_host,
                                     ":", options.store_port, ": ", backend.status().message()));
  }
  return Start(std::move(*backend), options.settings, node_id);
}

absl::StatusOr<std::unique_ptr<AgentClient>> AgentClient::Start(
    std::unique_ptr<AgentBackend> backend, const RendezvousSettings& settings,
    const std::string& node_id) {
  auto agent =
      std::unique_ptr<AgentClient>(new AgentClient(std::move(backend), settings, node_id));
  // The first beat before returning, so the coordinator sees this node alive from the start.
  COHORT_RETURN_IF_ERROR(agent->backend_->Beat());
  {
    absl::MutexLock lock(&agent->mutex_);
    agent->last_beat_ = absl::Now();
  }
  AgentClient* raw = agent.get();
  agent->heartbeat_thread_ = std::thread([raw] {
    pthread_setname_np(pthread_self(), "cohort-heartbeat");
    raw->HeartbeatLoop();
  });
  return agent;
}

AgentClient::AgentClient(std::unique_ptr<AgentBackend> backend, const RendezvousSettings& settings,
                         std::string node_id)
    : backend_(std::move(backend)), settings_(settings), node_id_(std::move(node_id)) {}

AgentClient::~AgentClient() { StopHeartbeats(); }

void AgentClient::StopHeartbeats() {
  {
    absl::MutexLock lock(&mutex_);
    if (stop_ && !heartbeat_thread_.joinable()) return;
    stop_ = true;
    changed_.SignalAll();
  }
  backend_->Interrupt();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

void AgentClient::HeartbeatLoop() {
  Deadline next_beat = Deadline::In(settings_.heartbeat_interval);
  absl::MutexLock lock(&mutex_);
  while (!stop_) {
    const Interest interest = interest_;
    if (interest.admission || interest.end_of_generation > 0 || backend_->AlwaysWaitForNews()) {
      mutex_.Unlock();
      auto news = backend_->WaitForNews(interest, next_beat);
      mutex_.Lock();
      if (stop_) break;
      if (!news.ok()) {
        health_ = absl::Status(news.status().code(),
                               absl::StrCat("lost ", backend_->Describe(), ": ", news.status().message()));
        changed_.SignalAll();
        break;
      }
      if (news->admitted && interest_.admission) {
        admitted_ = news->admitted;
        admitted_world_ = std::move(news->world);
        interest_.admission = false;
      } else if (news->refused && interest_.admission) {
        refused_ = std::move(news->refused);
        interest_.admission = false;
      }
      for (auto& [generation, end] : news->ends) {
        ends_[generation] = end;
        if (interest_.end_of_generation == generation) interest_.end_of_generation = 0;
      }
      changed_.SignalAll();
    } else if (!next_beat.Expired()) {
      // Nothing to wait for remotely: sleep until the beat, or until Join or PollEnd wants news.
      changed_.WaitWithTimeout(&mutex_, next_beat.Remaining());
    }
    if (stop_ || !next_beat.Expired()) continue;
    mutex_.Unlock();
    absl::Status beat = backend_->Beat();
    mutex_.Lock();
    if (stop_) break;
    if (!beat.ok()) {
      health_ = absl::Status(beat.code(), absl::StrCat("lost ", backend_->Describe(), ": ",
                                                       beat.message()));
      changed_.SignalAll();
      break;
    }
    last_beat_ = absl::Now();
    next_beat = Deadline::In(settings_.heartbeat_interval);
  }
}

absl::Status AgentClient::health() const {
  absl::MutexLock lock(&mutex_);
  return health_;
}

absl::Time AgentClient::last_beat() const {
  absl::MutexLock lock(&mutex_);
  return last_beat_;
}

absl::StatusOr<World> AgentClient::Join(const NodeInfo& info, absl::Duration timeout,
                                        const std::function<absl::Status()>& interrupted) {
  {
    absl::MutexLock lock(&mutex_);
    COHORT_RETURN_IF_ERROR(health_);
    admitted_.reset();
    admitted_world_.reset();
    refused_.reset();
    interest_.admission = true;
    interest_.end_of_generation = 0;
  }
  // Announced after the heartbeat thread knows to wait, so the admission cannot slip past.
  COHORT_RETURN_IF_ERROR(backend_->Join(info));
  {
    absl::MutexLock lock(&mutex_);
    changed_.SignalAll();
  }
  Deadline deadline = Deadline::In(timeout);
  std::optional<int64_t> generation;
  std::optional<World> world;
  while (true) {
    if (interrupted) COHORT_RETURN_IF_ERROR(interrupted());
    absl::MutexLock lock(&mutex_);
    // A few times a second, so `interrupted` (signals) is seen promptly.
    Deadline slice = deadline.Earlier(Deadline::In(absl::Milliseconds(100)));
    while (!admitted_ && !refused_ && health_.ok() && !slice.Expired()) {
      changed_.WaitWithTimeout(&mutex_, slice.Remaining());
    }
    COHORT_RETURN_IF_ERROR(health_);
    if (refused_) {
      interest_.admission = false;
      return absl::FailedPreconditionError(*refused_);
    }
    if (admitted_) {
      generation = admitted_;
      world = std::move(admitted_world_);
      interest_.end_of_generation = *generation;
      changed_.SignalAll();
      break;
    }
    if (deadline.Expired()) {
      interest_.admission = false;
      return absl::DeadlineExceededError(absl::StrCat(
          "not admitted to the job within ", absl::FormatDuration(timeout), " (the coordinator at ",
          backend_->Describe(), " did not close a round with this node)"));
    }
  }
  if (!world) {
    COHORT_ASSIGN_OR_RETURN(World fetched, backend_->FetchWorld(*generation));
    world = std::move(fetched);
  }
  return std::move(*world);
}

absl::Status AgentClient::ReportFailures(int64_t generation,
                                         const std::vector<WorkerFailure>& failures) {
  return backend_->ReportFailures(generation, failures);
}

absl::Status AgentClient::ReportDone(int64_t generation) { return backend_->ReportDone(generation); }

absl::StatusOr<std::optional<GenerationEnd>> AgentClient::PollEnd(int64_t generation,
                                                                  absl::Duration wait) {
  absl::MutexLock lock(&mutex_);
  if (interest_.end_of_generation != generation && !ends_.contains(generation)) {
    interest_.end_of_generation = generation;
    changed_.SignalAll();
  }
  Deadline deadline = Deadline::In(wait);
  while (!ends_.contains(generation) && health_.ok() && !deadline.Expired()) {
    changed_.WaitWithTimeout(&mutex_, deadline.Remaining());
  }
  auto found = ends_.find(generation);
  if (found != ends_.end()) return std::optional<GenerationEnd>(found->second);
  COHORT_RETURN_IF_ERROR(health_);
  return std::optional<GenerationEnd>();
}

absl::StatusOr<std::vector<WorkerFailure>> AgentClient::Failures(int64_t generation) {
  COHORT_ASSIGN_OR_RETURN(std::vector<WorkerFailure> all, backend_->Failures(generation));
  std::stable_sort(all.begin(), all.end(), [](const WorkerFailure& a, const WorkerFailure& b) {
    return a.time_ms < b.time_ms;
  });
  return all;
}

absl::Status AgentClient::Leave(const std::string& reason) {
  StopHeartbeats();
  return backend_->Leave(reason);
}

void AgentClient::Close() {
  StopHeartbeats();
  backend_->Close();
}

absl::StatusOr<int64_t> AgentClient::AcknowledgeEnd() { return backend_->AcknowledgeEnd(); }

absl::StatusOr<int64_t> AgentClient::AcknowledgedCount() { return backend_->AcknowledgedCount(); }

absl::StatusOr<int64_t> AgentClient::RefusedCount() { return backend_->RefusedCount(); }

}  // namespace cohort::elastic
