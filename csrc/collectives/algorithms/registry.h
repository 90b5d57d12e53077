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
  // The memory kinds it serves (host algorithms: host memory only). Selection skips an algorithm
  // that does not serve an operation's kind; forcing one for it is an error naming both.
  std::vector<MemoryKind> memory = {MemoryKind::kHost};
  // Device algorithms: enqueues the operation's device steps on the caller's stream when it is
  // submitted (device_runtime.h); `run` is then its host part, run in issue order.
  std::function<absl::Status(DevicePlan& plan)> enqueue;

  bool Serves(OpType op) const;
  bool ServesMemory(MemoryKind kind) const;
};

// Every registered algorithm.
const std::vector<Algorithm>& Algorithms();

// The names, for messages and `cohort-bench algos`.
std::vector<std::string> AlgorithmNames();

// OK when `forced` is empty or names a registered algorithm; else an error naming COHORT_ALGO's
// value and the names accepted.
absl::Status ValidateAlgorithmName(const std::string& forced);

// OK unless `forced` names an algorithm that does not serve `args.memory`; that error names the
// op, the memory kind and the algorithms that do serve it.
absl::Status CheckMemoryServed(const OpArgs& args, const std::string& forced);

// The algorithm to run: `forced` when it serves the op and supports it, else the cheapest.
absl::StatusOr<const Algorithm*> SelectAlgorithm(const OpArgs& args, const Tuning& tuning,
                                                 const std::string& forced,
                                                 double* predicted_seconds = nullptr);

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
