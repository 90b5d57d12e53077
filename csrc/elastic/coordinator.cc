#include "elastic/coordinator.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status.h"
#include "elastic/backend.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"
#include "elastic/store_backend.h"

namespace cohort::elastic {

// The coordinator's states:
//   forming   waiting_ collects joins; the round closes at max nodes, at min nodes once the
//             last call passed, or (after a restart) once every surviving member is back. The
//             join timeout fails the job.
//   running   members_ run generation_; a failure report, a lost or departed member, every
//             member done, or a waiting node that can scale the job up ends it. A restart goes
//             back to forming with generation_ + 1 (if the budget allows), the others finish.
//   finished  every join is refused.
// Events are applied as they come (Apply), then Step moves the state along. Nothing here reads
// the backend beyond Poll, so the cost of a round is proportional to the events in it.
class Coordinator::Loop {
 public:
  Loop(const CoordinatorOptions& options, std::unique_ptr<CoordinatorBackend> backend)
      : options_(options), settings_(options.settings), backend_(std::move(backend)) {}

  void Run() {
    absl::Status status = RunLoop();
    if (!status.ok() && !stopping_.load()) {
      COHORT_LOG(ERROR) << "elastic coordinator stopped: " << status.message();
    }
    absl::MutexLock lock(&mutex_);
    status_ = status;
    stopped_ = true;
  }

  void RequestStop() { stopping_.store(true); }
  absl::Status status() const {
    absl::MutexLock lock(&mutex_);
    return status_;
  }
  bool stopped() const {
    absl::MutexLock lock(&mutex_);
    return stopped_;
  }

 private:
  absl::Status RunLoop() {
    std::vector<AgentEvent> pending;
    COHORT_ASSIGN_OR_RETURN(std::optional<CoordinatorState> recovered, backend_->Recover(&pending));
    round_opened_ = absl::Now();
    if (recovered.has_value()) Restore(*recovered);
    for (const AgentEvent& event : pending) Apply(event);
    while (!stopping_.load()) {
      COHORT_RETURN_IF_ERROR(Step(absl::Now()));
      // Short enough that a stop request is seen quickly; the backend returns at the first event.
      absl::Duration wait = absl::Milliseconds(200);
      absl::Time now = absl::Now();
      if (!running_ && !finished_) {
        if (min_reached_at_) wait = std::min(wait, *min_reached_at_ + settings_.last_call_timeout - now);
        wait = std::min(wait, round_opened_ + settings_.join_timeout - now);
      }
      wait = std::max(wait, absl::Milliseconds(1));
      COHORT_ASSIGN_OR_RETURN(std::vector<AgentEvent> events, backend_->Poll(wait));
      for (const AgentEvent& event : events) Apply(event);
    }
    return absl::OkStatus();
  }

  void Restore(const CoordinatorState& state) {
    generation_ = state.generation;
    restarts_ = state.restarts;
    running_ = state.running;
    finished_ = state.finished;
    members_ = state.members;
    for (const NodeInfo& member : members_) infos_[member.node_id] = member;
    expected_ = std::set<std::string>(state.expected.begin(), state.expected.end());
    for (const std::string& node_id : state.lost) lost_.insert(node_id);
    // The workers' store of a running generation was on the last coordinator's host.
    moved_from_ = running_ ? state.host : "";
    COHORT_LOG(WARN) << "coordinator role taken over on " << options_.host << " from "
                     << (state.host.empty() ? std::string("an unknown host") : state.host)
                     << ": generation " << generation_ << (running_ ? " running" : " forming")
                     << ", " << restarts_ << " restarts so far";
  }

  CoordinatorState Snapshot() const {
    CoordinatorState state;
    state.generation = generation_;
    state.restarts = restarts_;
    state.running = running_;
    state.finished = finished_;
    state.members = members_;
    state.expected.assign(expected_.begin(), expected_.end());
    std::vector<std::pair<int64_t, std::string>> waiting;
    for (const auto& [node_id, order] : waiting_) waiting.emplace_back(order, node_id);
    std::sort(waiting.begin(), waiting.end());
    for (const auto& [order, node_id] : waiting) state.waiting.push_back(node_id);
    state.lost.assign(lost_.begin(), lost_.end());
    state.host = options_.host;
    return state;
  }

  void Apply(const AgentEvent& event) {
    const std::string& node_id = event.node_id;
    switch (event.kind) {
      case AgentEvent::Kind::kJoined:
        if (lost_.contains(node_id)) {
          refuse_now_.emplace_back(node_id, absl::StrCat(
              "the coordinator declared this node lost earlier (", LostReason(node_id),
              "); start a new cohortrun on it to join again"));
          return;
        }
        if (!waiting_.contains(node_id)) {
          COHORT_LOG(INFO) << "node " << event.info.host << " (" << node_id << ") is waiting to join";
        }
        infos_[node_id] = event.info;
        waiting_[node_id] = event.order;
        return;
      case AgentEvent::Kind::kLost:
        MarkLost(node_id, event.reason);
        return;
      case AgentEvent::Kind::kLeft:
        MarkLost(node_id, absl::StrCat("node ", HostOf(node_id), " left the job (",
                                       event.reason.empty() ? "no reason given" : event.reason,
                                       ")"));
        return;
      case AgentEvent::Kind::kFailed:
        if (!running_ || event.generation != generation_ || failure_reason_) return;
        failure_reason_ = "a worker failed";
        if (!event.failures.empty()) {
          const WorkerFailure& first = event.failures.front();
          failure_reason_ = absl::StrCat(
              "worker rank ", first.rank, " on ", first.host,
              first.exit_code < 0 ? " was killed by signal " : " exited with code ",
              first.exit_code < 0 ? -first.exit_code : first.exit_code);
        }
        return;
      case AgentEvent::Kind::kDone:
        if (event.generation == generation_) done_.insert(node_id);
        return;
    }
  }

  void MarkLost(const std::string& node_id, const std::string& reason) {
    waiting_.erase(node_id);
    if (lost_.insert(node_id).second) {
      // Only nodes this coordinator knows of are worth a line; agents that never joined (or
      // that exited after the job's end) are not news.
      if (infos_.contains(node_id) && !finished_) {
        COHORT_LOG(WARN) << reason;
      }
      lost_reasons_[node_id] = reason;
      last_lost_reason_ = reason;
    }
  }

  std::string LostReason(const std::string& node_id) const {
    auto found = lost_reasons_.find(node_id);
    return found == lost_reasons_.end() ? absl::StrCat("node ", HostOf(node_id), " lost")
                                        : found->second;
  }

  std::string HostOf(const std::string& node_id) const {
    auto it = infos_.find(node_id);
    return it == infos_.end() ? node_id : it->second.host;
  }

  absl::Status Step(absl::Time now) {
    if (!refuse_now_.empty()) {
      for (const auto& [node_id, why] : refuse_now_) {
        COHORT_RETURN_IF_ERROR(backend_->Refuse({node_id}, why));
      }
      refuse_now_.clear();
    }
    if (finished_) return RefuseWaiting("the job has already finished");
    if (running_) return StepRunning();
    return StepForming(now);
  }

  absl::Status RefuseWaiting(const std::string& why) {
    if (waiting_.empty()) return absl::OkStatus();
    std::vector<std::string> node_ids;
    for (const auto& [node_id, order] : waiting_) node_ids.push_back(node_id);
    waiting_.clear();
    return backend_->Refuse(node_ids, why);
  }

  absl::Status StepRunning() {
    std::optional<GenerationEnd> end;
    if (failure_reason_) end = GenerationEnd{GenerationEnd::Kind::kRestart, *failure_reason_, true};
    if (!end) {
      for (const NodeInfo& member : members_) {
        if (lost_.contains(member.node_id)) {
          end = GenerationEnd{GenerationEnd::Kind::kRestart, LostReason(member.node_id), true};
          break;
        }
      }
    }
    if (!end && !moved_from_.empty()) {
      // The last coordinator left, and with it this generation's store for the workers: a new
      // generation gets a store here. Nobody failed, so it does not count as a restart.
      end = GenerationEnd{GenerationEnd::Kind::kRestart,
                          absl::StrCat("the coordinator moved from ", moved_from_, " to ",
                                       options_.host, " (the workers' store moves with it)"),
                          false};
    }
    if (!end) {
      size_t done = 0;
      for (const NodeInfo& member : members_) done += done_.contains(member.node_id) ? 1 : 0;
      if (done == members_.size()) {
        end = GenerationEnd{GenerationEnd::Kind::kSucceeded, "all workers exited with code 0",
                            false};
      } else if (!waiting_.empty() && static_cast<int>(members_.size()) < settings_.max_nodes &&
                 !settings_.static_ranks && done_.empty()) {
        // A node waits and the job may grow: a new round admits it (no restart counted).
        std::vector<std::string> hosts;
        for (const auto& [node_id, order] : waiting_) hosts.push_back(HostOf(node_id));
        end = GenerationEnd{GenerationEnd::Kind::kRestart,
                            absl::StrCat("scale-up: ", absl::StrJoin(hosts, ", "), " waiting"),
                            false};
      }
    }
    if (!end) return absl::OkStatus();
    return EndGeneration(*end);
  }

  absl::Status EndGeneration(GenerationEnd end) {
    if (end.kind == GenerationEnd::Kind::kRestart && end.counted &&
        restarts_ >= settings_.max_restarts) {
      end = GenerationEnd{GenerationEnd::Kind::kFailed,
                          absl::StrCat(end.reason, "; no restarts left (--max-restarts ",
                                       settings_.max_restarts, ")"),
                          false};
    }
    const int64_t ended = generation_;
    COHORT_LOG(INFO) << "generation " << ended << " ends: " << end.reason;
    running_ = false;
    moved_from_.clear();
    failure_reason_.reset();
    done_.clear();
    if (end.kind != GenerationEnd::Kind::kRestart) {
      finished_ = true;
    } else {
      if (end.counted) ++restarts_;
      expected_.clear();
      for (const NodeInfo& member : members_) {
        if (!lost_.contains(member.node_id)) expected_.insert(member.node_id);
      }
      ++generation_;
      round_opened_ = absl::Now();
      min_reached_at_.reset();
    }
    return backend_->PublishEnd(ended, end, Snapshot());
  }

  absl::Status StepForming(absl::Time now) {
    std::vector<std::pair<int64_t, std::string>> candidates;
    for (const auto& [node_id, order] : waiting_) candidates.emplace_back(order, node_id);
    std::sort(candidates.begin(), candidates.end());
    int count = static_cast<int>(candidates.size());
    if (count >= settings_.min_nodes) {
      if (!min_reached_at_) min_reached_at_ = now;
    } else {
      min_reached_at_.reset();
    }
    // After a restart the round closes as soon as every surviving member is back.
    bool all_expected = false;
    for (const std::string& node_id : expected_) {
      if (lost_.contains(node_id)) continue;
      if (!waiting_.contains(node_id)) {
        all_expected = false;
        break;
      }
      all_expected = true;
    }
    bool close = count >= settings_.max_nodes ||
                 (count >= settings_.min_nodes && all_expected) ||
                 (min_reached_at_ && now - *min_reached_at_ >= settings_.last_call_timeout);
    if (!close) {
      if (now - round_opened_ >= settings_.join_timeout) {
        std::vector<std::string> hosts;
        for (const auto& [order, node_id] : candidates) hosts.push_back(HostOf(node_id));
        std::string why = absl::StrCat(
            "rendezvous timed out: ", count, " of at least ", settings_.min_nodes,
            " nodes joined generation ", generation_, " within the join timeout of ",
            absl::FormatDuration(settings_.join_timeout), " (joined: ",
            hosts.empty() ? std::string("none") : absl::StrJoin(hosts, ", "),
            last_lost_reason_.empty() ? "" : absl::StrCat("; ", last_lost_reason_),
            "); start more nodes, lower the minimum of --nnodes, or raise "
            "--rdzv-conf join_timeout");
        COHORT_LOG(ERROR) << why;
        COHORT_RETURN_IF_ERROR(RefuseWaiting(why));
        finished_ = true;
        COHORT_RETURN_IF_ERROR(backend_->PublishEnd(
            generation_, GenerationEnd{GenerationEnd::Kind::kFailed, why, false}, Snapshot()));
      }
      return absl::OkStatus();
    }
    if (count > settings_.max_nodes) candidates.resize(settings_.max_nodes);
    std::vector<NodeInfo> nodes;
    for (const auto& [order, node_id] : candidates) nodes.push_back(infos_[node_id]);
    World world;
    world.generation = generation_;
    world.restart_count = restarts_;
    world.nodes = OrderNodes(std::move(nodes), settings_.static_ranks);
    world.master_addr = world.nodes.front().address;
    world.master_port = world.nodes.front().master_port;
    // A fresh store for this generation's workers; the last one's workers lose theirs.
    worker_store_.reset();
    store::StoreServerOptions store_options;
    store_options.host = options_.worker_store_listen_host;
    store_options.port = 0;
    store_options.job_id = options_.job_id;
    store_options.token = options_.token;
    COHORT_ASSIGN_OR_RETURN(worker_store_, store::StoreServer::Start(store_options));
    world.worker_store = absl::StrCat(options_.worker_store_public_host, ":", worker_store_->port());
    for (const NodeInfo& node : world.nodes) waiting_.erase(node.node_id);
    members_ = world.nodes;
    running_ = true;
    expected_.clear();
    min_reached_at_.reset();
    COHORT_RETURN_IF_ERROR(backend_->PublishWorld(world, Snapshot()));
    if (logging::Enabled(logging::Level::INFO)) {
      std::vector<std::string> hosts;
      for (const NodeInfo& node : world.nodes) hosts.push_back(node.host);
      COHORT_LOG(INFO) << "generation " << generation_ << " formed: " << world.nodes.size()
                       << " nodes (" << absl::StrJoin(hosts, ", ") << "), world size "
                       << world.world_size();
    }
    return absl::OkStatus();
  }

  const CoordinatorOptions options_;
  const RendezvousSettings settings_;
  std::unique_ptr<CoordinatorBackend> backend_;
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex mutex_;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
  bool stopped_ ABSL_GUARDED_BY(mutex_) = false;

  // Only the coordinator thread touches what follows.
  int64_t generation_ = 1;
  int64_t restarts_ = 0;
  bool running_ = false;
  bool finished_ = false;
  std::vector<NodeInfo> members_;
  std::set<std::string> expected_;          // last generation's members, expected back
  std::map<std::string, int64_t> waiting_;  // node id -> arrival order
  std::map<std::string, NodeInfo> infos_;
  std::set<std::string> lost_;
  std::map<std::string, std::string> lost_reasons_;
  std::string last_lost_reason_;
  std::optional<std::string> failure_reason_;  // the running generation's first failure
  std::set<std::string> done_;                 // members whose workers all exited with 0
  std::vector<std::pair<std::string, std::string>> refuse_now_;  // node id, why
  std::string moved_from_;  // set when this coordinator took over a running generation
  absl::Time round_opened_;
  std::optional<absl::Time> min_reached_at_;
  std::unique_ptr<store::StoreServer> worker_store_;
};

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Start(const CoordinatorOptions& options) {
  store::StoreClientOptions client_options;
  client_options.host = options.store_host;
  client_options.port = options.store_port;
  client_options.job_id = options.job_id;
  client_options.token = options.token;
  client_options.connect_timeout = options.settings.read_timeout;
  client_options.timeout = options.settings.read_timeout;
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<store::StoreClient> client,
                          store::StoreClient::Connect(client_options));
  return Start(options,
               std::make_unique<StoreCoordinatorBackend>(std::move(client), options.settings));
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Start(
    const CoordinatorOptions& options, std::unique_ptr<CoordinatorBackend> backend) {
  auto coordinator = std::unique_ptr<Coordinator>(
      new Coordinator(std::make_unique<Loop>(options, std::move(backend))));
  Loop* loop = coordinator->loop_.get();
  coordinator->thread_ = std::thread([loop] {
    pthread_setname_np(pthread_self(), "cohort-coord");
    loop->Run();
  });
  return coordinator;
}

Coordinator::Coordinator(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::RequestStop() { loop_->RequestStop(); }

void Coordinator::Stop() {
  loop_->RequestStop();
  if (thread_.joinable()) thread_.join();
}

absl::Status Coordinator::status() const { return loop_->status(); }

bool Coordinator::stopped() const { return loop_->stopped(); }

}  // namespace cohort::elastic
