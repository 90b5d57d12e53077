// libcohort's public API: a Communicator made from (bootstrap, rank, size, options) runs
// collectives and point-to-point messages asynchronously, in issue order, each returning a
// Work. Options objects name inputs, outputs, counts, type, reduce op, root, algorithm and
// timeout (in place when input == output). abort() from any thread fails everything pending.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/op_args.h"
#include "collectives/topology.h"
#include "collectives/types.h"
#include "collectives/work.h"
#include "common/bootstrap.h"

namespace cohort {

struct CommOptions {
  // Prefix of this communicator's keys in the bootstrap; unique per communicator.
  std::string name = "cohort";
  // Default per-operation timeout and connection timeout (COHORT_TIMEOUT when unset).
  absl::Duration timeout = absl::ZeroDuration();
  // Forced algorithm (COHORT_ALGO when empty).
  std::string algorithm;
};

// Fields common to every collective.
struct CommonOptions {
  std::string algorithm;                           // empty: the communicator's choice
  absl::Duration timeout = absl::ZeroDuration();   // zero: the communicator's timeout
  // Return only once the operation finished (like MPI's blocking calls): the Work comes back
  // completed. Nothing queued ahead: the calling thread runs it at once, without the queue.
  bool blocking = false;
};

struct AllreduceOptions : CommonOptions {
  const void* input = nullptr;
  void* output = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
};

struct BroadcastOptions : CommonOptions {
  const void* input = nullptr;  // read at the root only
  void* output = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
  int root = 0;
};

struct ReduceOptions : CommonOptions {
  const void* input = nullptr;
  void* output = nullptr;  // written at the root only
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
};

struct AllgatherOptions : CommonOptions {
  const void* input = nullptr;  // this rank's block
  void* output = nullptr;       // every rank's block, in rank order
  size_t count = 0;             // elements per rank, when counts is empty
  std::vector<size_t> counts;   // per-rank elements (allgatherv)
  DataType dtype = DataType::kFloat32;
};

struct ReduceScatterOptions : CommonOptions {
  const void* input = nullptr;  // every rank's block, in rank order
  void* output = nullptr;       // this rank's reduced block
  size_t count = 0;             // elements per rank, when counts is empty
  std::vector<size_t> counts;
  DataType dtype = DataType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
};

struct AlltoallOptions : CommonOptions {
  const void* input = nullptr;
  void* output = nullptr;
  size_t count = 0;                  // elements to and from each peer, when splits are empty
  std::vector<size_t> send_counts;   // elements sent to each rank
  std::vector<size_t> recv_counts;   // elements received from each rank
  std::vector<size_t> send_offsets;  // optional element offsets (default: packed)
  std::vector<size_t> recv_offsets;
  DataType dtype = DataType::kFloat32;
};

struct GatherOptions : CommonOptions {
  const void* input = nullptr;
  void* output = nullptr;  // at the root: every rank's block in rank order
  size_t count = 0;
  std::vector<size_t> counts;
  DataType dtype = DataType::kFloat32;
  int root = 0;
};

struct ScatterOptions : CommonOptions {
  const void* input = nullptr;  // at the root: every rank's block in rank order
  void* output = nullptr;
  size_t count = 0;
  std::vector<size_t> counts;
  DataType dtype = DataType::kFloat32;
  int root = 0;
};

struct BarrierOptions : CommonOptions {};

struct SendOptions : CommonOptions {
  const void* data = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kUInt8;
  int peer = 0;
  uint32_t tag = 0;
};

struct RecvOptions : CommonOptions {
  void* data = nullptr;
  size_t count = 0;
  DataType dtype = DataType::kUInt8;
  int peer = 0;  // kAnySource (-1) for any
  uint32_t tag = 0;
};

class Engine;

class Communicator {
 public:
  // Connects to every other rank through `bootstrap`; blocks until all are connected or the
  // timeout passes. Every rank must call it with the same size and options.name.
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(Bootstrap& bootstrap, int rank,
                                                              int size,
                                                              CommOptions options = {});
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int size() const;
  const std::string& host(int rank) const;

  std::shared_ptr<Work> Allreduce(const AllreduceOptions& options);
  std::shared_ptr<Work> Broadcast(const BroadcastOptions& options);
  std::shared_ptr<Work> Reduce(const ReduceOptions& options);
  std::shared_ptr<Work> Allgather(const AllgatherOptions& options);
  std::shared_ptr<Work> ReduceScatter(const ReduceScatterOptions& options);
  std::shared_ptr<Work> Alltoall(const AlltoallOptions& options);
  std::shared_ptr<Work> Gather(const GatherOptions& options);
  std::shared_ptr<Work> Scatter(const ScatterOptions& options);
  std::shared_ptr<Work> Barrier(const BarrierOptions& options = {});
  std::shared_ptr<Work> Send(const SendOptions& options);
  std::shared_ptr<Work> Recv(const RecvOptions& options);

  // Fails every pending and future operation with `reason` (thread-safe, returns at once).
  void Abort(const absl::Status& reason);

  // The algorithm the tuner would pick (for tools and tests).
  std::string ChosenAlgorithm(const OpArgs& args) const;
  // The hosts, local ranks and links every rank agreed on at creation.
  const Topology& topology() const;

 private:
  explicit Communicator(std::shared_ptr<Engine> engine);
  // COHORT_TUNER_PROBE: measures the link models at creation (rank 0 decides for all).
  absl::Status ProbeLinks();
  std::shared_ptr<Work> Submit(OpArgs args, const CommonOptions& common);
  std::shared_ptr<Engine> engine_;
};

}  // namespace cohort
