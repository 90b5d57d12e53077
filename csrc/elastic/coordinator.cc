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
#include "common/membership.h"
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
// With --on-failure shrink (settings_.shrink_on_failure) a running generation does not end on a
// failure: a failed worker's rank, or every rank of a lost or departed node, is removed from it
// (removed_ranks_, removed_nodes_: a node is removed once none of its ranks is left), each
// removal written as a numbered record to the generation's worker store for the workers
// (common/membership.h), and the survivors go on. It ends as with restart once fewer than
// min_nodes nodes keep a rank, and succeeds once every node that keeps one reported done. A
// node waiting to join is not admitted into a running shrink generation (no scale-up restart):
// it waits for the next one.
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
        if (!running_ || event.generation != generation_) return;
        if (settings_.shrink_on_failure) {
          RemoveFailedWorkers(event);
          return;
        }
        if (failure_reason_) return;
        failure_reason_ = "a worker failed";
        if (!event.failures.empty()) failure_reason_ = DescribeFailure(event.failures.front());
        return;
      case AgentEvent::Kind::kDone:
        if (event.generation == generation_) done_.insert(node_id);
        return;
    }
  }

  static std::string DescribeFailure(const WorkerFailure& failure) {
    return absl::StrCat("worker rank ", failure.rank, " on ", failure.host,
                        failure.exit_code < 0 ? " was killed by signal " : " exited with code ",
                        failure.exit_code < 0 ? -failure.exit_code : failure.exit_code);
  }

  // The ranks of `members_[group_rank]`, in the running generation.
  std::vector<int> RanksOf(size_t group_rank) const {
    int first = 0;
    for (size_t i = 0; i < group_rank; ++i) first += members_[i].local_world_size;
    std::vector<int> ranks;
    for (int i = 0; i < members_[group_rank].local_world_size; ++i) ranks.push_back(first + i);
    return ranks;
  }

  int GroupRankOf(const std::string& node_id) const {
    for (size_t i = 0; i < members_.size(); ++i) {
      if (members_[i].node_id == node_id) return static_cast<int>(i);
    }
    return -1;
  }

  // Queues the removal of `ranks` (those not removed yet) of member `group_rank`.
  void QueueRemoval(size_t group_rank, const std::vector<int>& ranks, const std::string& reason) {
    membership::Removal removal;
    for (int rank : ranks) {
      if (removed_ranks_.insert(rank).second) removal.ranks.push_back(rank);
    }
    if (removal.ranks.empty()) return;
    std::sort(removal.ranks.begin(), removal.ranks.end());
    removal.reason = reason;
    bool any_left = false;
    for (int rank : RanksOf(group_rank)) any_left |= !removed_ranks_.contains(rank);
    if (!any_left) removed_nodes_.insert(members_[group_rank].node_id);
    pending_removals_.push_back(std::move(removal));
  }

  // --on-failure shrink: a node reported failed workers (its list so far, so some may be old).
  void RemoveFailedWorkers(const AgentEvent& event) {
    int group_rank = GroupRankOf(event.node_id);
    if (group_rank < 0 || removed_nodes_.contains(event.node_id)) return;
    const std::vector<int> own = RanksOf(group_rank);
    std::vector<int> ranks;
    std::string reason;
    for (const WorkerFailure& failure : event.failures) {
      if (std::find(own.begin(), own.end(), failure.rank) == own.end()) continue;
      if (removed_ranks_.contains(failure.rank)) continue;
      ranks.push_back(failure.rank);
      if (reason.empty()) reason = DescribeFailure(failure);
    }
    if (ranks.size() > 1) absl::StrAppend(&reason, " (and ", ranks.size() - 1, " more there)");
    QueueRemoval(group_rank, ranks, reason);
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

  // Writes the queued removals to the generation's worker store, numbered from 1.
  absl::Status WriteRemovals() {
    if (pending_removals_.empty()) return absl::OkStatus();
    if (worker_client_ == nullptr) {
      store::StoreClientOptions client_options;
      client_options.host = options_.worker_store_listen_host.empty()
                                ? "127.0.0.1"
                                : options_.worker_store_listen_host;
      client_options.port = worker_store_->port();
      client_options.job_id = options_.job_id;
      client_options.token = options_.token;
      client_options.connect_timeout = settings_.read_timeout;
      client_options.timeout = settings_.read_timeout;
      COHORT_ASSIGN_OR_RETURN(worker_client_, store::StoreClient::Connect(client_options));
    }
    const int left = TotalRanks() - static_cast<int>(removed_ranks_.size());
    const size_t nodes_left = members_.size() - removed_nodes_.size();
    for (const membership::Removal& removal : pending_removals_) {
      COHORT_RETURN_IF_ERROR(worker_client_->Set(membership::RemovalKey(++removals_),
                                                 membership::Encode(removal)));
      COHORT_LOG(WARN) << "generation " << generation_ << " goes on without rank"
                       << (removal.ranks.size() > 1 ? "s " : " ")
                       << absl::StrJoin(removal.ranks, ", ") << " (--on-failure shrink): "
                       << removal.reason << "; " << left << " rank" << (left == 1 ? "" : "s")
                       << " on " << nodes_left << " node" << (nodes_left == 1 ? "" : "s")
                       << (left == 1 && nodes_left == 1 ? " is" : " are") << " left";
      removal_reasons_.push_back(removal.reason);
    }
    pending_removals_.clear();
    return absl::OkStatus();
  }

  // --on-failure shrink: removes lost members, and ends the generation only when too few nodes
  // are left or every node left is done.
  absl::Status StepShrinking() {
    for (size_t i = 0; i < members_.size(); ++i) {
      const std::string& node_id = members_[i].node_id;
      if (lost_.contains(node_id) && !removed_nodes_.contains(node_id)) {
        QueueRemoval(i, RanksOf(i), LostReason(node_id));
        removed_nodes_.insert(node_id);  // even when its ranks had all failed before
      }
    }
    COHORT_RETURN_IF_ERROR(WriteRemovals());
    std::optional<GenerationEnd> end;
    const int left = static_cast<int>(members_.size() - removed_nodes_.size());
    if (!removed_nodes_.empty() && left < settings_.min_nodes) {
      end = GenerationEnd{
          GenerationEnd::Kind::kRestart,
          absl::StrCat(removal_reasons_.back(), "; ", left, " node", left == 1 ? "" : "s",
                       " left, fewer than the minimum of --nnodes (", settings_.min_nodes, ")"),
          true};
    } else if (!moved_from_.empty()) {
      end = GenerationEnd{GenerationEnd::Kind::kRestart,
                          absl::StrCat("the coordinator moved from ", moved_from_, " to ",
                                       options_.host, " (the workers' store moves with it)"),
                          false};
    } else {
      size_t done = 0;
      for (const NodeInfo& member : members_) {
        done += done_.contains(member.node_id) && !removed_nodes_.contains(member.node_id) ? 1 : 0;
      }
      if (done == members_.size() - removed_nodes_.size()) {
        std::string reason = "all workers exited with code 0";
        if (!removed_ranks_.empty()) {
          reason = absl::StrCat("all ", TotalRanks() - static_cast<int>(removed_ranks_.size()),
                                " surviving workers exited with code 0; ",
                                removed_ranks_.size(), " rank",
                                removed_ranks_.size() > 1 ? "s" : "",
                                " (", absl::StrJoin(removed_ranks_, ", "),
                                ") removed on the way (--on-failure shrink): ",
                                absl::StrJoin(removal_reasons_, "; "));
        }
        end = GenerationEnd{GenerationEnd::Kind::kSucceeded, reason, false};
      }
    }
    if (!end) return absl::OkStatus();
    return EndGeneration(*end);
  }

  int TotalRanks() const {
    int total = 0;
    for (const NodeInfo& member : members_) total += member.local_world_size;
    return total;
  }

  absl::Status StepRunning() {
    if (settings_.shrink_on_failure) return StepShrinking();
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
    end.readers = 0;
    for (const NodeInfo& member : members_) end.readers += lost_.contains(member.node_id) ? 0 : 1;
    running_ = false;
    moved_from_.clear();
    failure_reason_.reset();
    done_.clear();
    removed_ranks_.clear();
    removed_nodes_.clear();
    pending_removals_.clear();
    removal_reasons_.clear();
    removals_ = 0;
    worker_client_.reset();
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
    worker_client_.reset();
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
  // --on-failure shrink, in the running generation: what was removed, the removals still to
  // write, the records written so far, and a connection to the worker store to write them.
  std::set<int> removed_ranks_;
  std::set<std::string> removed_nodes_;
  std::vector<membership::Removal> pending_removals_;
  std::vector<std::string> removal_reasons_;
  int removals_ = 0;
  std::unique_ptr<store::StoreClient> worker_client_;
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
