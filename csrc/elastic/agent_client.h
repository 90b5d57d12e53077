// The agent's side of the rendezvous: joins rounds and waits to be admitted, heartbeats the
// coordinator from its own thread, reports worker failures and completions, watches for the end
// of its generation, and says goodbye when it leaves. Used by cohortrun's agent loop.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
  // Connects and starts heartbeating as `node_id` on the "cohort-heartbeat" thread.
  static absl::StatusOr<std::unique_ptr<AgentClient>> Connect(const AgentClientOptions& options,
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
  // Counts this agent among those that saw the job end; returns how many did.
  absl::StatusOr<int64_t> AcknowledgeEnd();
  absl::StatusOr<int64_t> AcknowledgedCount();
  // How many agents the coordinator turned away (they acknowledge too before leaving).
  absl::StatusOr<int64_t> RefusedCount();
  // Why heartbeats stopped (the store went away), or OK.
  absl::Status health() const;

  store::StoreClient& store() { return *client_; }
  const std::string& node_id() const { return node_id_; }

 private:
  AgentClient(const AgentClientOptions& options, std::unique_ptr<store::StoreClient> client,
              std::string node_id);
  absl::Status Ring();
  void HeartbeatLoop();
  void StopHeartbeats();

  const AgentClientOptions options_;
  std::unique_ptr<store::StoreClient> client_;
  const std::string node_id_;
  mutable absl::Mutex mutex_;
  absl::CondVar wake_;
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status health_ ABSL_GUARDED_BY(mutex_);
  std::thread heartbeat_thread_;
};

}  // namespace cohort::elastic
