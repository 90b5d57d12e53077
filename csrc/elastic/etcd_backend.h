// The rendezvous on etcd (--rdzv-backend etcd): no agent hosts the job's coordination; etcd
// keeps it under <prefix>/<rdzv id>/ (P below), and the coordinator role is held by whichever
// agent holds the leader key, so the job survives the death of any one host.
//
// Keys (values are JSON unless said otherwise):
//   P/agent/<node>        the agent's host name, on the agent's lease: liveness. A lost agent's
//                         lease expires (heartbeat_timeout after its last keep-alive) and
//                         etcd deletes its keys; the coordinator sees the deletion.
//   P/join/<node>         NodeInfo, on the agent's lease: asks to join the next round. Written
//                         by a transaction that checks the job has not ended and the lease
//                         lives; its revision orders the arrivals.
//   P/left/<node>         why the agent left (text).
//   P/gen/<g>/failure/<node>, P/gen/<g>/done/<node>: reports from the agents.
//   P/exited/<node>       the agent saw the job's end.
//   P/pub/leader          the coordinator's node id, on its lease: the election. A candidate
//                         puts it if it does not exist (create revision 0).
//   P/pub/world           the latest world (rendezvous.h's line format). An agent is admitted
//                         when a world newer than its join lists it.
//   P/pub/end             {"generation", "end"}: how the latest generation ended.
//   P/pub/refused/<node>  why this node may not join (text).
//   P/pub/closed          the job ended for good (text); joins fail from then on.
//   P/token               the job's token for the workers' stores, when COHORT_JOB_TOKEN is
//                         not set (the first agent creates it).
//   P/state               the coordinator's state (CoordinatorState, with the revision of the
//                         last event it acted on), written with every world and every end.
// Every write of the coordinator is a transaction that first compares P/pub/leader with its
// own node id, so a coordinator that lost the role cannot overwrite its successor.
//
// Agents watch P/pub/ (one stream each; the heartbeat thread pumps it between keep-alives): a
// round costs each agent its own join and one read of the world, and the leader's death
// reaches every agent as one event. The coordinator watches P/ from the revision it
// recovered at.
//
// Failover: when the leader's host dies its lease expires, the leader key goes, and every
// agent tries to take it; the winner's coordinator reads P/ (Recover), finds the dead members
// (no P/agent key), and ends the running generation: its workers' store died with the old
// coordinator's host (the store is re-elected with the coordinator: the next generation's
// workers bootstrap from a fresh store on the new coordinator's host).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "elastic/agent_client.h"
#include "elastic/backend.h"
#include "elastic/coordinator.h"
#include "elastic/etcd/etcd_client.h"

namespace cohort::elastic {

struct EtcdAgentOptions {
  RendezvousSettings settings;  // settings.etcd says how to reach etcd
  std::string job_id;           // the rdzv id: keys live under <etcd prefix>/<job id>/
  std::string node_id;
  std::string host;
  // Whether this agent stands for the coordinator role, and the coordinator it then runs (its
  // store for the workers listens and is published as said there).
  bool campaign = true;
  CoordinatorOptions coordinator;
};

// The etcd client options from the rendezvous settings (endpoints, TLS, user).
etcd::ClientOptions EtcdClientOptions(const RendezvousSettings& settings);
// "<prefix>/<job id>/".
std::string EtcdJobPrefix(const RendezvousSettings& settings, const std::string& job_id);

class EtcdAgentBackend final : public AgentBackend {
 public:
  // Connects (an unreachable etcd or refused credentials fail here, naming the endpoint or
  // the user), takes a lease and announces the agent.
  static absl::StatusOr<std::unique_ptr<EtcdAgentBackend>> Connect(const EtcdAgentOptions& options);
  // Stops the coordinator if this agent runs it. The lease is left to expire (as after a
  // crash) unless Close() revoked it.
  ~EtcdAgentBackend() override;

  absl::Status Beat() override;
  absl::StatusOr<News> WaitForNews(const Interest& interest, Deadline deadline) override;
  bool AlwaysWaitForNews() const override { return true; }
  void Interrupt() override;
  absl::Status Join(const NodeInfo& info) override;
  absl::StatusOr<World> FetchWorld(int64_t generation) override;
  absl::Status ReportFailures(int64_t generation,
                              const std::vector<WorkerFailure>& failures) override;
  absl::Status ReportDone(int64_t generation) override;
  absl::Status Leave(const std::string& reason) override;
  absl::StatusOr<std::vector<WorkerFailure>> Failures(int64_t generation) override;
  absl::StatusOr<int64_t> AcknowledgeEnd() override;
  absl::StatusOr<int64_t> AcknowledgedCount() override;
  absl::StatusOr<int64_t> RefusedCount() override;
  std::string LocalAddressHint() override { return client_->LocalAddress(); }
  std::string Describe() const override;

  void Close() override;
  bool RunsCoordinator() const override;
  absl::Status RemoveJobKeys() override;
  // The node id of the coordinator, as last seen (empty while nobody holds the role).
  std::string leader() const;
  // The job's token: the one given (coordinator.token), else one that the first agent put in
  // P/token and every other read back, so the nodes need not share one beforehand.
  const std::string& job_token() const { return job_token_; }

 private:
  EtcdAgentBackend(EtcdAgentOptions options, std::unique_ptr<etcd::Client> client);
  absl::Status Start();
  // Applies one event of P/pub/ to what this agent knows.
  void Apply(const etcd::WatchEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Tries to take the role when nobody holds it, and starts or stops the coordinator.
  absl::Status TendRole();

  const EtcdAgentOptions options_;
  const std::string prefix_;
  std::unique_ptr<etcd::Client> client_;
  // P/pub/, pumped by the heartbeat thread, which alone replaces it (after a compaction);
  // watch_mutex_ keeps it alive for Interrupt() and Wake() from other threads.
  absl::Mutex watch_mutex_;
  std::unique_ptr<etcd::Watch> watch_;
  bool interrupted_ ABSL_GUARDED_BY(watch_mutex_) = false;
  int64_t lease_ = 0;
  std::string job_token_;

  mutable absl::Mutex mutex_;
  std::string leader_ ABSL_GUARDED_BY(mutex_);
  std::optional<World> world_ ABSL_GUARDED_BY(mutex_);  // the latest, and its revision
  int64_t world_revision_ ABSL_GUARDED_BY(mutex_) = 0;
  std::optional<std::string> refused_ ABSL_GUARDED_BY(mutex_);
  int64_t refused_revision_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<std::pair<int64_t, GenerationEnd>> ends_ ABSL_GUARDED_BY(mutex_);
  // The revision of this agent's latest join; 0 while a join is on its way.
  int64_t join_revision_ ABSL_GUARDED_BY(mutex_) = 0;
  bool joined_ ABSL_GUARDED_BY(mutex_) = false;

  // Touched by the heartbeat thread only (TendRole), read under role_mutex_ elsewhere.
  mutable absl::Mutex role_mutex_;
  std::unique_ptr<Coordinator> coordinator_ ABSL_GUARDED_BY(role_mutex_);
};

// An AgentClient over etcd (EtcdAgentBackend::Connect, then AgentClient::Start).
absl::StatusOr<std::unique_ptr<AgentClient>> ConnectEtcdAgent(const EtcdAgentOptions& options);

}  // namespace cohort::elastic
