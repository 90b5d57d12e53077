// The agent's side of the rendezvous: joins rounds and waits to be admitted, heartbeats the
// coordinator from its own thread, reports worker failures and completions, watches for the end
// of its generation, and says goodbye when it leaves. Used by cohortrun's agent loop, over
// either backend (backend.h).
//
// One thread ("cohort-heartbeat") does the backend's waiting: between beats it parks on what
// the agent waits for (its admission, its generation's end) and keeps what arrives; Join and
// PollEnd read that and never call the backend in a loop, so an idle agent costs the
// coordinator one beat per interval and nothing else.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "elastic/backend.h"
#include "elastic/rendezvous.h"
#include "elastic/store/store_client.h"

namespace cohort::elastic {

struct AgentClientOptions {
  std::string store_host;
  int store_port = 0;
  std::string job_id;
  std::string token;
  RendezvousSettings settings;
  // How long to keep retrying the store at start (the endpoint host may start later).
  absl::Duration connect_timeout = absl::Seconds(60);
};

class AgentClient {
 public:
  // Connects to the embedded store and starts heartbeating as `node_id` on the
  // "cohort-heartbeat" thread.
  static absl::StatusOr<std::unique_ptr<AgentClient>> Connect(const AgentClientOptions& options,
                                                              const std::string& node_id);
  // The same over any backend (etcd_backend.h makes etcd's).
  static absl::StatusOr<std::unique_ptr<AgentClient>> Start(std::unique_ptr<AgentBackend> backend,
                                                            const RendezvousSettings& settings,
                                                            const std::string& node_id);
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  // Joins the next round and waits until the coordinator admits this node; returns the world.
  // `interrupted` is polled a few times a second; a non-OK status from it abandons the wait.
  absl::StatusOr<World> Join(const NodeInfo& info, absl::Duration timeout,
                             const std::function<absl::Status()>& interrupted);
  // Reports this node's failed workers in `generation` (the coordinator ends it).
  absl::Status ReportFailures(int64_t generation, const std::vector<WorkerFailure>& failures);
  // Reports that all of this node's workers in `generation` exited with code 0.
  absl::Status ReportDone(int64_t generation);
  // How `generation` ended, waiting up to `wait`; nullopt while it runs.
  absl::StatusOr<std::optional<GenerationEnd>> PollEnd(int64_t generation, absl::Duration wait);
  // Every failure reported in `generation`, by any node, earliest first.
  absl::StatusOr<std::vector<WorkerFailure>> Failures(int64_t generation);
  // Tells the coordinator this node leaves (it ends the generation at once, without waiting
  // for missed heartbeats), and stops heartbeating.
  absl::Status Leave(const std::string& reason);
  // Stops heartbeating and leaves the backend cleanly (etcd: revokes the lease). The agent
  // cannot be used afterwards but for reading what it learned.
  void Close();
  // Counts this agent among those that saw the job end; returns how many did.
  absl::StatusOr<int64_t> AcknowledgeEnd();
  absl::StatusOr<int64_t> AcknowledgedCount();
  // How many agents the coordinator turned away (they acknowledge too before leaving).
  absl::StatusOr<int64_t> RefusedCount();
  // Why heartbeats stopped (the store went away, the lease expired), or OK.
  absl::Status health() const;
  // When the backend last acknowledged a heartbeat. A node cut off from the coordinator learns
  // from it that it has been declared lost: its beats hang (no FIN, no RST) instead of failing.
  absl::Time last_beat() const;
  // An address of this host that the other nodes can reach (from the connection), or empty.
  std::string LocalAddressHint() { return backend_->LocalAddressHint(); }

  AgentBackend& backend() { return *backend_; }
  const std::string& node_id() const { return node_id_; }

 private:
  AgentClient(std::unique_ptr<AgentBackend> backend, const RendezvousSettings& settings,
              std::string node_id);
  void HeartbeatLoop();
  void StopHeartbeats();

  std::unique_ptr<AgentBackend> backend_;
  const RendezvousSettings settings_;
  const std::string node_id_;
  mutable absl::Mutex mutex_;
  absl::CondVar changed_;  // news arrived, or the interest changed, or stop
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status health_ ABSL_GUARDED_BY(mutex_);
  Interest interest_ ABSL_GUARDED_BY(mutex_);
  // Admission (or refusal) after the latest join, and generation ends seen.
  std::optional<int64_t> admitted_ ABSL_GUARDED_BY(mutex_);
  std::optional<World> admitted_world_ ABSL_GUARDED_BY(mutex_);
  std::optional<std::string> refused_ ABSL_GUARDED_BY(mutex_);
  std::map<int64_t, GenerationEnd> ends_ ABSL_GUARDED_BY(mutex_);
  absl::Time last_beat_ ABSL_GUARDED_BY(mutex_);
  std::thread heartbeat_thread_;
};

}  // namespace cohort::elastic
