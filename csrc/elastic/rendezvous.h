// Rendezvous data: what an agent says about its node when it joins a round, the settings of a
// round (min:max nodes, timeouts, heartbeats, the etcd connection), the world a closed round
// publishes, and the rank assignment. Shared by the coordinator (which closes rounds) and the
// agents (which join them), whichever backend carries them (backend.h). Records travel as JSON,
// except the world, which every agent reads and so has a compact line format (EncodeWorld).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// How to reach etcd (--rdzv-backend etcd): from --rdzv-endpoint and --rdzv-conf.
struct EtcdSettings {
  std::vector<std::string> endpoints;  // client URLs, e.g. http://10.0.0.5:2379
  std::string protocol = "http";       // for endpoints given as host:port
  std::string ca_file;                 // cacert: CA bundle that signed etcd's certificate
  std::string cert_file;               // cert, key: this client's certificate (client auth)
  std::string key_file;
  std::string user;                    // etcd's role-based access control
  std::string password;                // --rdzv-conf password or COHORT_ETCD_PASSWORD
  std::string prefix = "/cohort";      // keys live under <prefix>/<rdzv id>/
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
  // --on-failure shrink: a failed worker or a lost node is removed from the running generation
  // (a removal record in its worker store, common/membership.h) and the survivors go on; the
  // generation ends as with restart only when fewer than min_nodes nodes keep a rank.
  bool shrink_on_failure = false;
  EtcdSettings etcd;
};

// Parses torchrun's --rdzv-conf "k=v,k=v" into `settings`. Accepted keys: join_timeout (alias
// timeout), last_call_timeout, close_timeout, heartbeat_interval (alias keep_alive_interval),
// heartbeat_timeout, keep_alive_max_attempt (timeout = interval x attempts), read_timeout,
// is_host (returned through `is_host`: -1 unset, 0 false, 1 true), and for etcd protocol
// (http/https), cacert, cert, key, user (alias username), password, etcd_prefix.
absl::Status ParseRendezvousConf(const std::string& text, RendezvousSettings* settings,
                                 int* is_host);

// Orders the nodes of a closing round and returns them in group-rank order: static rounds by
// node_rank; otherwise nodes sharing label values stay adjacent (labels compared by key name,
// so rack before switch), then by host name, then by node id.
std::vector<NodeInfo> OrderNodes(std::vector<NodeInfo> nodes, bool static_ranks);

std::string EncodeNode(const NodeInfo& node);
absl::StatusOr<NodeInfo> DecodeNode(const std::string& text);
// The world as every agent reads it: a header line "cohort-world 1", a line with generation,
// restart count, master address, master port, worker store and node count, then one line per
// node (id, host, address, master port, local world size, role, node rank, labels as
// k=v;k=v), fields separated by tabs, '%', tab, newline, '=', ';' and control bytes written as
// %XX. 1,024 nodes decode in well under a millisecond, where the JSON form took 5 ms: with
// every agent reading it, that was seconds of CPU per round.
std::string EncodeWorld(const World& world);
absl::StatusOr<World> DecodeWorld(absl::string_view text);

// How a generation ended, as the coordinator publishes it.
struct GenerationEnd {
  enum class Kind { kRestart, kSucceeded, kFailed };
  Kind kind = Kind::kRestart;
  std::string reason;
  bool counted = false;  // the restart counts against --max-restarts
  // How many agents will read this end (the generation's nodes that were not lost), for the
  // coordinator's host to wait for; 0: every node of the generation.
  int64_t readers = 0;
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

// What the coordinator hears from the agents, whichever backend carries it.
struct AgentEvent {
  enum class Kind {
    kJoined,  // asks to join the next round (`info`; `order` ranks arrivals)
    kLost,    // its heartbeats or its lease stopped (`reason`)
    kLeft,    // its agent said goodbye (`reason`)
    kFailed,  // workers failed in `generation` (`failures`)
    kDone,    // all its workers in `generation` exited with 0
  };
  Kind kind = Kind::kJoined;
  std::string node_id;
  NodeInfo info;
  int64_t order = 0;
  int64_t generation = 0;
  std::string reason;
  std::vector<WorkerFailure> failures;
};

// Decodes what an agent wrote under the embedded store's "in/" prefix (keys::kInbox) into an
// event; nullopt for keys that are not events.
absl::StatusOr<std::optional<AgentEvent>> DecodeInboxEntry(absl::string_view key,
                                                           const std::string& value,
                                                           int64_t revision);

// What a coordinator must know to take over a running job (etcd keeps it, so that another
// agent can take the role when the coordinator's host dies).
struct CoordinatorState {
  int64_t generation = 1;
  int64_t restarts = 0;
  bool running = false;   // `members` run generation `generation`
  bool finished = false;  // the job ended for good
  std::vector<NodeInfo> members;       // the running (or last) generation, in group-rank order
  std::vector<std::string> expected;   // after a restart: the survivors, expected back
  std::vector<std::string> waiting;    // joined and not admitted, in arrival order
  std::vector<std::string> lost;       // declared lost (told so if they come back)
  std::string host;                    // the coordinator's host
};

// The embedded store's keys of the rendezvous protocol, in one place. Agents write under "in/"
// (one key per message; the store's revision orders them, and the coordinator follows the
// prefix with StoreClient::Changes) and "hb/"; the coordinator writes the rest.
namespace keys {
inline constexpr char kInbox[] = "in/";
std::string Join(const std::string& node_id);          // NodeInfo: asks to join the next round
std::string Left(const std::string& node_id);          // the agent left, with its reason
std::string Failure(int64_t generation, const std::string& node_id);  // WorkerFailure list
std::string FailurePrefix(int64_t generation);
std::string Done(int64_t generation, const std::string& node_id);     // workers exited with 0
inline constexpr char kHeartbeatPrefix[] = "hb/";
std::string Heartbeat(const std::string& node_id);     // counter the agent bumps
std::string Admit(const std::string& node_id);         // generation the node was admitted to, or
                                                       // "error:<message>"
std::string World(int64_t generation);
std::string End(int64_t generation);
inline constexpr char kExited[] = "exited";       // agents that saw the job's end
inline constexpr char kRefused[] = "refused";     // agents told they cannot join
}  // namespace keys

}  // namespace cohort::elastic
