// The two sides of the rendezvous as a backend carries them: what the coordinator hears from
// the agents and publishes to them (CoordinatorBackend), and what one agent sends and learns
// (AgentBackend). The coordinator's decisions (coordinator.cc) and the agent's waiting
// (agent_client.cc) are written once over these; the embedded store (store_backend.h) and etcd
// (etcd_backend.h) implement them.
//
// Costs are per event, never per node and event: the coordinator follows what changed (the
// store's changes op, an etcd watch), agents learn of admission and of their generation's end
// from a wait that parks at the backend, not from polling.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "elastic/rendezvous.h"

namespace cohort::elastic {

class CoordinatorBackend {
 public:
  virtual ~CoordinatorBackend() = default;

  // The state a previous coordinator left (etcd, after the role moved) and, in `pending`, what
  // the agents said that it had not acted on; nullopt for a job that starts now.
  virtual absl::StatusOr<std::optional<CoordinatorState>> Recover(
      std::vector<AgentEvent>* pending) = 0;
  // What the agents said since the last call, waiting up to `wait` for the first of it.
  virtual absl::StatusOr<std::vector<AgentEvent>> Poll(absl::Duration wait) = 0;
  // A closed round: publishes `world`, admits its nodes and saves `state` (which describes it).
  virtual absl::Status PublishWorld(const World& world, const CoordinatorState& state) = 0;
  // The end of a generation (and, when the job is over, of the job), with the state after it.
  virtual absl::Status PublishEnd(int64_t generation, const GenerationEnd& end,
                                  const CoordinatorState& state) = 0;
  // Tells these nodes they cannot join, and why.
  virtual absl::Status Refuse(const std::vector<std::string>& node_ids, const std::string& why) = 0;
};

// What an agent waits for: admission after a join, or the end of its generation.
struct Interest {
  bool admission = false;
  int64_t end_of_generation = 0;  // 0: none
};

// What arrived for an agent.
struct News {
  // The generation this node was admitted to, with its world when the backend carries it along
  // (else AgentBackend::FetchWorld); or why it may not join.
  std::optional<int64_t> admitted;
  std::optional<World> world;
  std::optional<std::string> refused;
  // How generations ended (by generation).
  std::vector<std::pair<int64_t, GenerationEnd>> ends;
};

class AgentBackend {
 public:
  virtual ~AgentBackend() = default;

  // Liveness: a heartbeat (embedded store) or a lease keep-alive (etcd). Called by the agent's
  // heartbeat thread every heartbeat interval.
  virtual absl::Status Beat() = 0;
  // Waits until `deadline` for news about `interest` and returns what arrived (possibly
  // nothing). Called by the heartbeat thread only; Interrupt() makes it return early for good.
  virtual absl::StatusOr<News> WaitForNews(const Interest& interest, Deadline deadline) = 0;
  // Whether WaitForNews must be called even with no interest (etcd: the watch also carries the
  // coordinator election).
  virtual bool AlwaysWaitForNews() const { return false; }
  // Stops WaitForNews for good (the agent is stopping).
  virtual void Interrupt() = 0;

  // Asks to join the next round.
  virtual absl::Status Join(const NodeInfo& info) = 0;
  // The world of a generation this node was admitted to.
  virtual absl::StatusOr<World> FetchWorld(int64_t generation) = 0;
  virtual absl::Status ReportFailures(int64_t generation,
                                      const std::vector<WorkerFailure>& failures) = 0;
  virtual absl::Status ReportDone(int64_t generation) = 0;
  // Says goodbye: the coordinator ends the generation at once.
  virtual absl::Status Leave(const std::string& reason) = 0;
  // Every failure reported in `generation`, by any node.
  virtual absl::StatusOr<std::vector<WorkerFailure>> Failures(int64_t generation) = 0;
  // Counts this agent among those that saw the job end; returns how many did.
  virtual absl::StatusOr<int64_t> AcknowledgeEnd() = 0;
  virtual absl::StatusOr<int64_t> AcknowledgedCount() = 0;
  virtual absl::StatusOr<int64_t> RefusedCount() = 0;
  // An address of this host that the other nodes can reach, or empty.
  virtual std::string LocalAddressHint() = 0;
  // Where the rendezvous lives, as errors name it ("the rendezvous store at h:p").
  virtual std::string Describe() const = 0;
  // Leaves cleanly: etcd revokes the agent's lease, so its keys go now instead of when the
  // lease would expire. Without it (a crash) the backend finds out by itself.
  virtual void Close() {}
  // Whether this agent runs the coordinator (etcd: holds the role now).
  virtual bool RunsCoordinator() const { return false; }
  // Removes what the job left in the backend (etcd: its keys), by the last coordinator once
  // every agent saw the job's end.
  virtual absl::Status RemoveJobKeys() { return absl::OkStatus(); }
};

}  // namespace cohort::elastic
