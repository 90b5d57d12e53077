// Rendezvous data: what an agent says about its node when it joins a round, the settings of a
// round (min:max nodes, timeouts, heartbeats), the world a closed round publishes, and the rank
// assignment. Shared by the coordinator (which closes rounds) and the agents (which join them).
// Everything travels through the store as JSON under the keys named in RendezvousKeys.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort::elastic {

// One agent's node as it joins a round.
struct NodeInfo {
  std::string node_id;   // unique per agent process (host, pid, random suffix)
  std::string host;      // host name shown to users
  std::string address;   // address other nodes reach this node at (MASTER_ADDR if rank 0)
  int master_port = 0;   // a port this agent reserved for MASTER_PORT (see ReservedPort)
  int local_world_size = 1;
  std::string role = "default";
  int node_rank = -1;    // static rendezvous only: the node's fixed group rank
  std::map<std::string, std::string> labels;  // topology labels, e.g. rack=r1
};

// A closed round: the generation, the nodes in group-rank order, and where workers meet.
struct World {
  int64_t generation = 0;
  int64_t restart_count = 0;       // restarts of the job (failures) before this generation
  std::vector<NodeInfo> nodes;     // index = group rank
  std::string master_addr;
  int master_port = 0;
  std::string worker_store;        // host:port of this generation's store for the workers

  int world_size() const;
  // Index of the node in `nodes`, or -1.
  int GroupRank(const std::string& node_id) const;
  // The first global rank of a node (ranks are contiguous per node).
  int RankOffset(int group_rank) const;
  // Rank of the first worker of this node among the workers of its role, and the role's size.
  int RoleRankOffset(int group_rank) const;
  int RoleWorldSize(const std::string& role) const;
};

// The settings of every round of a job (from --nnodes, --rdzv-conf and --max-restarts).
struct RendezvousSettings {
  int min_nodes = 1;
  int max_nodes = 1;
  // Nodes are ordered by node_rank instead of labels and host names (--rdzv-backend static).
  bool static_ranks = false;
  // A round that has not reached min nodes by then fails the job.
  absl::Duration join_timeout = absl::Seconds(600);
  // Once min nodes joined, how long the round waits for more before it closes.
  absl::Duration last_call_timeout = absl::Seconds(30);
  // How long agents wait for the job's end to be acknowledged before the store host leaves.
  absl::Duration close_timeout = absl::Seconds(30);
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // A node whose heartbeats stopped this long ago is lost.
  absl::Duration heartbeat_timeout = absl::Seconds(5);
  // Timeout of single store calls.
  absl::Duration read_timeout = absl::Seconds(60);
  int max_restarts = 0;
};

// Parses torchrun's --rdzv-conf "k=v,k=v" into `settings`. Accepted keys: join_timeout (alias
// timeout), last_call_timeout, close_timeout, heartbeat_interval (alias keep_alive_interval),
// heartbeat_timeout, keep_alive_max_attempt (timeout = interval x attempts), read_timeout,
// is_host (returned through `is_host`: -1 unset, 0 false, 1 true).
absl::Status ParseRendezvousConf(const std::string& text, RendezvousSettings* settings,
                                 int* is_host);

// Orders the nodes of a closing round and returns them in group-rank order: static rounds by
// node_rank; otherwise nodes sharing label values stay adjacent (labels compared by key name,
// so rack before switch), then by host name, then by node id.
std::vector<NodeInfo> OrderNodes(std::vector<NodeInfo> nodes, bool static_ranks);

std::string EncodeNode(const NodeInfo& node);
absl::StatusOr<NodeInfo> DecodeNode(const std::string& text);
std::string EncodeWorld(const World& world);
absl::StatusOr<World> DecodeWorld(const std::string& text);

// How a generation ended, as the coordinator publishes it.
struct GenerationEnd {
  enum class Kind { kRestart, kSucceeded, kFailed };
  Kind kind = Kind::kRestart;
  std::string reason;
  bool counted = false;  // the restart counts against --max-restarts
};
std::string EncodeEnd(const GenerationEnd& end);
absl::StatusOr<GenerationEnd> DecodeEnd(const std::string& text);

// One worker's failure as an agent reports it (the summary's raw material).
struct WorkerFailure {
  std::string host;
  std::string node_id;
  int rank = -1;
  int local_rank = -1;
  int pid = 0;
  int exit_code = 0;        // torchrun's convention: -signal for a signal
  int64_t time_ms = 0;      // wall clock of the exit, ms since the epoch
  std::string error_file;   // path on that host, or "<N/A>"
  std::string message;      // the error file's message, or what happened
  std::string traceback;    // the error file's traceback, if any
};
std::string EncodeFailures(const std::vector<WorkerFailure>& failures);
absl::StatusOr<std::vector<WorkerFailure>> DecodeFailures(const std::string& text);

// The store keys of the rendezvous protocol, in one place.
namespace keys {
std::string Node(const std::string& node_id);          // NodeInfo of a joined agent
std::string Waiting(const std::string& node_id);       // a join request: its join sequence
inline constexpr char kWaitingPrefix[] = "waiting/";
std::string Admit(const std::string& node_id);         // generation the node was admitted to, or
                                                       // "error:<message>"
std::string Heartbeat(const std::string& node_id);     // counter the agent bumps
std::string Left(const std::string& node_id);          // the agent left, with its reason
inline constexpr char kLeftPrefix[] = "left/";
std::string World(int64_t generation);
std::string End(int64_t generation);
std::string Failure(int64_t generation, const std::string& node_id);
std::string FailurePrefix(int64_t generation);
std::string Done(int64_t generation, const std::string& node_id);
std::string DonePrefix(int64_t generation);
inline constexpr char kJoinSequence[] = "join_seq";
inline constexpr char kDoorbell[] = "doorbell";   // counter; each ring also sets Ring(n)
std::string Ring(int64_t number);
inline constexpr char kExited[] = "exited";       // agents that saw the job's end
inline constexpr char kRefused[] = "refused";     // agents told they cannot join
}  // namespace keys

}  // namespace cohort::elastic
