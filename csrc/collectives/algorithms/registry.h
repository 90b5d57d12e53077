// The algorithm registry: each entry has a name, the ops it serves, its constraints, an
// alpha-beta cost function and a run function. The tuner takes the cheapest entry that
// supports an operation; COHORT_ALGO (or an op's options) forces one by name.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "collectives/op_args.h"
#include "collectives/op_context.h"
#include "collectives/topology.h"
#include "collectives/transport/channel.h"

namespace cohort {

class DevicePlan;
struct DeviceState;

// Alpha-beta model of one link class: time = latency + bytes / bandwidth, and the local
// reduction's throughput.
struct LinkModel {
  double latency_seconds = 25e-6;
  double bytes_per_second = 2e9;
  double reduce_bytes_per_second = 6e9;
};

// What the tuner knows: the topology and one model per link class.
struct Tuning {
  const Topology* topology = nullptr;
  LinkModel intra;  // ranks of one host (shared memory, or TCP loopback with COHORT_SHM=0)
  LinkModel inter;  // ranks on different hosts
  // The channel kinds those links are (the defaults of each model come from its kind).
  ChannelKind intra_kind = ChannelKind::kSharedMemory;
  ChannelKind inter_kind = ChannelKind::kTcp;
  size_t lane_bytes = 0;  // the lane's slot size when every rank shares a host (0: no lane)
  // What the ranks agreed on for CUDA buffers (device groups or not; device_runtime.h), once the
  // first CUDA operation was submitted; nullptr without a device backend.
  const DeviceState* device = nullptr;
  int size() const { return topology->size(); }
  bool multi_host() const { return topology->hosts().size() > 1; }
  // The link that bounds a flat algorithm (ring, tree, ...): the network when ranks span hosts.
  const LinkModel& flat() const { return multi_host() ? inter : intra; }
};

struct Algorithm {
  std::string name;
  std::vector<OpType> ops;
  // Whether it can run this op on this world size (e.g. some need a power of two).
  std::function<bool(const OpArgs& args, const Tuning& tuning)> supports;
  // Predicted seconds for this op.
  std::function<double(const OpArgs& args, const Tuning& tuning)> cost;
  std::function<absl::Status(OpContext& context)> run;
  // What `supports` asks of the communicator and the call, in words, for the error a forced
  // algorithm that cannot serve a call gives ("every rank on one host"); empty: nothing.
  std::string needs;
  // The memory kinds it serves (host algorithms: host memory only). Selection skips an algorithm
  // that does not serve an operation's kind; forcing one for it is an error naming both.
  std::vector<MemoryKind> memory = {MemoryKind::kHost};
  // Device algorithms: enqueues the operation's device steps on the caller's stream when it is
  // submitted (device_runtime.h); `run` is then its host part, run in issue order.
  std::function<absl::Status(DevicePlan& plan)> enqueue;

  bool Serves(OpType op) const;
  bool ServesMemory(MemoryKind kind) const;
};

// For the `default:` of a run function's switch over the ops its entry lists: reaching it means
// the entry lists an op the function does not implement (a bug), never a silent reroute.
absl::Status UnservedOp(const char* algorithm, OpType op);

// Every registered algorithm.
const std::vector<Algorithm>& Algorithms();

// The names, for messages and `cohort-bench algos`.
std::vector<std::string> AlgorithmNames();

// OK when `forced` is empty or names a registered algorithm; else an error naming COHORT_ALGO's
// value and the names accepted.
absl::Status ValidateAlgorithmName(const std::string& forced);

// Where a forced algorithm comes from. A call's own option forces it for that call: an
// algorithm that does not implement the op, or cannot serve this call, is an error. The
// communicator's (COHORT_ALGO, CommOptions::algorithm) forces it for the ops it implements, as
// strictly; the other ops are the tuner's.
enum class Forcing { kCall, kCommunicator };

// OK unless `forced` names an algorithm that does not serve `args.memory`; that error names the
// op, the memory kind and the algorithms that do serve it.
absl::Status CheckMemoryServed(const OpArgs& args, const std::string& forced);

// The algorithm to run: `forced` (empty or "auto": none) when it can serve the call, else an
// InvalidArgument error naming it, the call, what it needs and which algorithms could serve;
// without forcing, the cheapest that serves the call (and the memory kind of its buffers).
absl::StatusOr<const Algorithm*> SelectAlgorithm(const OpArgs& args, const Tuning& tuning,
                                                 const std::string& forced,
                                                 double* predicted_seconds = nullptr,
                                                 Forcing forcing = Forcing::kCommunicator);

// How many times longer a step that needs every rank of a host to run takes when they outnumber
// its CPUs: each waits until the others on its CPU had their turn (a switch each). 1 when every
// rank has a CPU; else twice the ranks per CPU (4 ranks on 2 cores: a lane stage took 6-8 us
// against 0.2-0.5 us, and message steps more). For one-host algorithms; the same on every rank
// of a host.
double OversubscriptionFactor(const Tuning& tuning);
double OversubscriptionFactor(int ranks, long cpus);  // the rule, for `ranks` on `cpus`

// Payload bytes of an op's per-rank buffer, for cost functions.
size_t OpBytes(const OpArgs& args, int world_size);

// The algorithm families register themselves here (one function per file).
void RegisterRingAlgorithms(std::vector<Algorithm>& registry);
void RegisterRecursiveDoublingAlgorithms(std::vector<Algorithm>& registry);
void RegisterTreeAlgorithms(std::vector<Algorithm>& registry);
void RegisterDirectAlgorithms(std::vector<Algorithm>& registry);
void RegisterHierarchicalAlgorithms(std::vector<Algorithm>& registry);
void RegisterShotAlgorithms(std::vector<Algorithm>& registry);
void RegisterLaneAlgorithms(std::vector<Algorithm>& registry);
void RegisterDeviceAlgorithms(std::vector<Algorithm>& registry);
void RegisterDeviceHierarchicalAlgorithms(std::vector<Algorithm>& registry);

// Element offsets of per-rank blocks: args.displacements when given, else prefix sums of
// `counts` (or of the equal count).
std::vector<size_t> BlockCounts(const OpArgs& args, int world_size);
std::vector<size_t> BlockOffsets(const std::vector<size_t>& counts);

}  // namespace cohort
