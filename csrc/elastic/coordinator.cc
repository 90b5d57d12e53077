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
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"

namespace cohort::elastic {

class Coordinator::Loop {
 public:
  Loop(const CoordinatorOptions& options, std::unique_ptr<store::StoreClient> client)
      : options_(options), settings_(options.settings), client_(std::move(client)) {}

  void Run() {
    absl::Status status = RunLoop();
    if (!status.ok() && !stopping_.load()) {
      COHORT_LOG(ERROR) << "elastic coordinator stopped: " << status.message();
    }
    absl::MutexLock lock(&mutex_);
    status_ = status;
  }

  void RequestStop() { stopping_.store(true); }
  absl::Status status() const {
    absl::MutexLock lock(&mutex_);
    return status_;
  }

 private:
  std::set<std::string> ignored_;  // join requests warned about (no or a bad node record)

  struct Tracked {
    std::string heartbeat;  // last value seen
    absl::Time last_change;
    std::string host;
  };

  absl::Status RunLoop() {
    round_opened_ = absl::Now();
    int64_t ring_seen = 0;
    while (!stopping_.load()) {
      // Short enough that heartbeat staleness is checked a few times per interval.
      absl::Duration wait = std::min(absl::Milliseconds(100), settings_.heartbeat_interval / 4);
      absl::Time now = absl::Now();
      if (!running_ && !finished_) {
        if (min_reached_at_) wait = std::min(wait, *min_reached_at_ + settings_.last_call_timeout - now);
        wait = std::min(wait, round_opened_ + settings_.join_timeout - now);
      }
      wait = std::max(wait, absl::Milliseconds(1));
      // Agents ring the doorbell after every action the coordinator must react to.
      auto rang = client_->Get(keys::Ring(ring_seen + 1), wait);
      if (!rang.ok() && rang.status().code() != absl::StatusCode::kDeadlineExceeded) {
        return rang.status();
      }
      if (rang.ok()) {
        COHORT_ASSIGN_OR_RETURN(int64_t latest, client_->Add(keys::kDoorbell, 0));
        for (int64_t n = ring_seen + 1; n <= latest; ++n) {
          COHORT_RETURN_IF_ERROR(client_->Delete(keys::Ring(n)).status());
        }
        ring_seen = latest;
      }
      COHORT_RETURN_IF_ERROR(Step());
    }
    return absl::OkStatus();
  }

  // Reads what agents wrote and moves the job along.
  absl::Status Step() {
    absl::Time now = absl::Now();
    COHORT_RETURN_IF_ERROR(RefreshWaiting(now));
    COHORT_RETURN_IF_ERROR(RefreshLeft());
    if (now >= next_heartbeat_check_) {
      COHORT_RETURN_IF_ERROR(CheckHeartbeats(now));
      next_heartbeat_check_ = now + settings_.heartbeat_interval / 4;
    }
    if (finished_) return RefuseWaiting("the job has already finished");
    if (running_) return StepRunning();
    return StepForming(now);
  }

  absl::Status RefreshWaiting(absl::Time now) {
    COHORT_ASSIGN_OR_RETURN(std::vector<std::string> waiting_keys,
                            client_->List(keys::kWaitingPrefix));
    std::map<std::string, int64_t> waiting;
    for (const std::string& key : waiting_keys) {
      std::string node_id = key.substr(std::string(keys::kWaitingPrefix).size());
      if (lost_.contains(node_id)) continue;
      auto sequence_text = client_->Get(key, absl::Milliseconds(1));
      if (!sequence_text.ok()) continue;  // taken back meanwhile
      int64_t sequence = 0;
      (void)absl::SimpleAtoi(*sequence_text, &sequence);
      if (!infos_.contains(node_id)) {
        // An agent writes its node record before its join request, so it is there; a join
        // request without one, or with one that does not parse, is ignored (warned about once)
        // rather than allowed to stall or stop the rendezvous of everyone else.
        auto text = client_->Get(keys::Node(node_id), absl::Milliseconds(100));
        if (!text.ok() && text.status().code() != absl::StatusCode::kDeadlineExceeded) {
          return text.status();
        }
        auto info = text.ok() ? DecodeNode(*text)
                              : absl::StatusOr<NodeInfo>(absl::NotFoundError("no node record"));
        if (!info.ok()) {
          if (ignored_.insert(node_id).second) {
            COHORT_LOG(WARN) << "ignoring the join request of node " << node_id << ": "
                             << info.status().message();
          }
          continue;
        }
        infos_[node_id] = *info;
        COHORT_LOG(INFO) << "node " << info->host << " (" << node_id << ") is waiting to join";
      }
      // Only a join request with a node record waits for a round (else the round would take
      // an empty node).
      waiting[node_id] = sequence;
      if (!tracked_.contains(node_id)) {
        tracked_[node_id] = Tracked{"", now, infos_[node_id].host};
      }
    }
    waiting_ = std::move(waiting);
    return absl::OkStatus();
  }

  absl::Status RefreshLeft() {
    COHORT_ASSIGN_OR_RETURN(std::vector<std::string> left_keys, client_->List(keys::kLeftPrefix));
    for (const std::string& key : left_keys) {
      std::string node_id = key.substr(std::string(keys::kLeftPrefix).size());
      if (lost_.contains(node_id)) continue;
      auto reason = client_->Get(key, absl::Milliseconds(1));
      MarkLost(node_id, absl::StrCat("node ", HostOf(node_id), " left the job (",
                                     reason.ok() ? *reason : std::string("no reason given"), ")"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckHeartbeats(absl::Time now) {
    std::vector<std::pair<std::string, std::string>> newly_lost;
    for (auto& [node_id, tracked] : tracked_) {
      if (lost_.contains(node_id)) continue;
      auto value = client_->Get(keys::Heartbeat(node_id), absl::Milliseconds(1));
      if (value.ok() && *value != tracked.heartbeat) {
        tracked.heartbeat = *value;
        tracked.last_change = now;
      } else if (now - tracked.last_change > settings_.heartbeat_timeout) {
        newly_lost.emplace_back(node_id,
                                absl::StrCat("node ", tracked.host, " lost: no heartbeat for ",
                                             absl::FormatDuration(absl::Trunc(
                                                 now - tracked.last_change, absl::Milliseconds(1)))));
      }
    }
    for (const auto& [node_id, reason] : newly_lost) {
      MarkLost(node_id, reason);
      // If the node comes back (a partition heals), its agent learns it was dropped.
      COHORT_RETURN_IF_ERROR(client_->Set(
          keys::Admit(node_id),
          absl::StrCat("error:the coordinator declared this node lost (", reason,
                       "); check the network between this node and the rendezvous endpoint")));
      if (waiting_.erase(node_id) > 0) {
        COHORT_RETURN_IF_ERROR(client_->Delete(keys::Waiting(node_id)).status());
      }
    }
    return absl::OkStatus();
  }

  void MarkLost(const std::string& node_id, const std::string& reason) {
    if (lost_.insert(node_id).second) {
      COHORT_LOG(WARN) << reason;
      lost_reasons_.push_back(reason);
    }
  }

  std::string HostOf(const std::string& node_id) const {
    auto it = infos_.find(node_id);
    return it == infos_.end() ? node_id : it->second.host;
  }

  absl::Status RefuseWaiting(const std::string& why) {
    if (!waiting_.empty()) {
      COHORT_RETURN_IF_ERROR(
          client_->Add(keys::kRefused, static_cast<int64_t>(waiting_.size())).status());
    }
    for (const auto& [node_id, sequence] : waiting_) {
      COHORT_RETURN_IF_ERROR(client_->Delete(keys::Waiting(node_id)).status());
      COHORT_RETURN_IF_ERROR(client_->Set(keys::Admit(node_id), absl::StrCat("error:", why)));
    }
    waiting_.clear();
    return absl::OkStatus();
  }

  absl::Status StepRunning() {
    std::optional<GenerationEnd> end;
    // A worker failure, reported by its agent.
    COHORT_ASSIGN_OR_RETURN(std::vector<std::string> failure_keys,
                            client_->List(keys::FailurePrefix(generation_)));
    if (!failure_keys.empty()) {
      std::string reason = "a worker failed";
      auto text = client_->Get(failure_keys.front(), settings_.read_timeout);
      if (text.ok()) {
        auto failures = DecodeFailures(*text);
        if (failures.ok() && !failures->empty()) {
          const WorkerFailure& first = failures->front();
          reason = absl::StrCat("worker rank ", first.rank, " on ", first.host,
                                first.exit_code < 0 ? " was killed by signal " : " exited with code ",
                                first.exit_code < 0 ? -first.exit_code : first.exit_code);
        }
      }
      end = GenerationEnd{GenerationEnd::Kind::kRestart, reason, true};
    }
    // A member lost or gone.
    if (!end) {
      for (const NodeInfo& member : members_) {
        if (!lost_.contains(member.node_id)) continue;
        std::string reason = absl::StrCat("node ", member.host, " lost");
        for (const std::string& why : lost_reasons_) {
          if (why.find(absl::StrCat("node ", member.host, " ")) == 0) reason = why;
        }
        end = GenerationEnd{GenerationEnd::Kind::kRestart, reason, true};
        break;
      }
    }
    // Every member's workers finished.
    if (!end) {
      COHORT_ASSIGN_OR_RETURN(std::vector<std::string> done_keys,
                              client_->List(keys::DonePrefix(generation_)));
      if (done_keys.size() == members_.size()) {
        end = GenerationEnd{GenerationEnd::Kind::kSucceeded, "all workers exited with code 0",
                            false};
      } else if (!waiting_.empty() && static_cast<int>(members_.size()) < settings_.max_nodes &&
                 !settings_.static_ranks && done_keys.empty()) {
        // A node waits and the job may grow: a new round admits it (no restart counted).
        std::vector<std::string> hosts;
        for (const auto& [node_id, sequence] : waiting_) hosts.push_back(HostOf(node_id));
        end = GenerationEnd{GenerationEnd::Kind::kRestart,
                            absl::StrCat("scale-up: ", absl::StrJoin(hosts, ", "), " waiting"),
                            false};
      }
    }
    if (!end) return absl::OkStatus();
    if (end->kind == GenerationEnd::Kind::kRestart && end->counted &&
        restarts_ >= settings_.max_restarts) {
      end = GenerationEnd{GenerationEnd::Kind::kFailed,
                          absl::StrCat(end->reason, "; no restarts left (--max-restarts ",
                                       settings_.max_restarts, ")"),
                          false};
    }
    if (end->kind == GenerationEnd::Kind::kRestart && end->counted) ++restarts_;
    COHORT_LOG(INFO) << "generation " << generation_ << " ends: " << end->reason;
    COHORT_RETURN_IF_ERROR(client_->Set(keys::End(generation_), EncodeEnd(*end)));
    running_ = false;
    if (end->kind != GenerationEnd::Kind::kRestart) {
      finished_ = true;
      return absl::OkStatus();
    }
    expected_.clear();
    for (const NodeInfo& member : members_) {
      if (!lost_.contains(member.node_id)) expected_.insert(member.node_id);
    }
    ++generation_;
    round_opened_ = absl::Now();
    min_reached_at_.reset();
    return absl::OkStatus();
  }

  absl::Status StepForming(absl::Time now) {
    std::vector<std::pair<int64_t, std::string>> candidates;
    for (const auto& [node_id, sequence] : waiting_) candidates.emplace_back(sequence, node_id);
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
        for (const auto& [sequence, node_id] : candidates) hosts.push_back(HostOf(node_id));
        std::string why = absl::StrCat(
            "rendezvous timed out: ", count, " of at least ", settings_.min_nodes,
            " nodes joined generation ", generation_, " within the join timeout of ",
            absl::FormatDuration(settings_.join_timeout), " (joined: ",
            hosts.empty() ? std::string("none") : absl::StrJoin(hosts, ", "),
            lost_reasons_.empty() ? "" : absl::StrCat("; ", lost_reasons_.back()),
            "); start more nodes, lower the minimum of --nnodes, or raise "
            "--rdzv-conf join_timeout");
        COHORT_LOG(ERROR) << why;
        COHORT_RETURN_IF_ERROR(RefuseWaiting(why));
        COHORT_RETURN_IF_ERROR(client_->Set(
            keys::End(generation_),
            EncodeEnd(GenerationEnd{GenerationEnd::Kind::kFailed, why, false})));
        finished_ = true;
      }
      return absl::OkStatus();
    }
    if (count > settings_.max_nodes) candidates.resize(settings_.max_nodes);
    std::vector<NodeInfo> nodes;
    for (const auto& [sequence, node_id] : candidates) nodes.push_back(infos_[node_id]);
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
    COHORT_RETURN_IF_ERROR(client_->Set(keys::World(generation_), EncodeWorld(world)));
    std::vector<std::string> hosts;
    for (const NodeInfo& node : world.nodes) {
      hosts.push_back(node.host);
      COHORT_RETURN_IF_ERROR(client_->Delete(keys::Waiting(node.node_id)).status());
      COHORT_RETURN_IF_ERROR(client_->Set(keys::Admit(node.node_id), absl::StrCat(generation_)));
      waiting_.erase(node.node_id);
    }
    COHORT_LOG(INFO) << "generation " << generation_ << " formed: " << world.nodes.size()
                     << " nodes (" << absl::StrJoin(hosts, ", ") << "), world size "
                     << world.world_size();
    members_ = world.nodes;
    running_ = true;
    expected_.clear();
    min_reached_at_.reset();
    return absl::OkStatus();
  }

  const CoordinatorOptions options_;
  const RendezvousSettings settings_;
  std::unique_ptr<store::StoreClient> client_;
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex mutex_;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);

  // Only the coordinator thread touches what follows.
  int64_t generation_ = 1;
  int64_t restarts_ = 0;
  bool running_ = false;
  bool finished_ = false;
  std::vector<NodeInfo> members_;
  std::set<std::string> expected_;  // last generation's members, expected back
  std::map<std::string, int64_t> waiting_;  // node id -> join sequence
  std::map<std::string, NodeInfo> infos_;
  std::map<std::string, Tracked> tracked_;
  std::set<std::string> lost_;
  std::vector<std::string> lost_reasons_;
  absl::Time round_opened_;
  std::optional<absl::Time> min_reached_at_;
  absl::Time next_heartbeat_check_ = absl::InfinitePast();
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
  auto coordinator = std::unique_ptr<Coordinator>(
      new Coordinator(std::make_unique<Loop>(options, std::move(client))));
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

}  // namespace cohort::elastic
