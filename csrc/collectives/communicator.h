// libcohort's public API: a Communicator made from (bootstrap, rank, size, options) runs
// collectives and point-to-point messages asynchronously, in issue order, each returning a
// Work. Options objects name inputs, outputs, counts, type, reduce op, root, algorithm and
// timeout (in place when input == output). abort() from any thread fails everything pending.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/op_args.h"
#include "collectives/topology.h"
#include "collectives/transport/channel.h"
#include "collectives/transport/failure.h"
#include "collectives/types.h"
#include "collectives/work.h"
#include "common/bootstrap.h"

namespace cohort {

namespace device {
class DeviceBackend;
class DeviceGroup;
}  // namespace device

struct CommOptions {
  // Prefix of this communicator's keys in the bootstrap; unique per communicator.
  std::string name = "cohort";
  // Every setting below that is left unset takes its COHORT_* variable's value (or that
  // variable's default) when the communicator is created: the environment fills defaults there
  // and nowhere else, so two communicators of one process can differ in any of them.
  std::optional<absl::Duration> timeout;  // per operation and for connecting (COHORT_TIMEOUT)
  std::optional<std::string> algorithm;   // forced algorithm; "" or "auto": the tuner (COHORT_ALGO)
  // Channel kinds in order of preference (COHORT_TRANSPORTS). Unset: shm inside a host, UCX
  // across hosts where UCX finds an RDMA device, else TCP. Set: exactly these, in this order
  // (UCX then also serves pairs without RDMA, over UCX_TLS); a pair none of them can connect is
  // an error at creation.
  std::optional<std::vector<ChannelKind>> transports;
  std::optional<size_t> chunk_bytes;            // pipeline segment (COHORT_CHUNK_BYTES)
  std::optional<bool> windows;                  // puts into peers' memory (COHORT_WINDOWS)
  std::optional<int> spin_microseconds;         // -1: the channels' choice (COHORT_SPIN_US)
  std::optional<size_t> eager_bytes;            // COHORT_EAGER_BYTES
  std::optional<int64_t> socket_buffer_bytes;   // COHORT_SOCKET_BUFFER
  std::optional<std::string> socket_interface;  // COHORT_SOCKET_IFNAME (interfaces to use)
  std::optional<std::string> rdma_devices;      // COHORT_IB_HCA (RDMA devices / ports to use)
  std::optional<size_t> shm_ring_bytes;         // COHORT_SHM_RING_BYTES (a power of two)
  std::optional<size_t> shm_single_copy_bytes;  // COHORT_SHM_SINGLE_COPY_BYTES
  std::optional<size_t> shm_lane_bytes;         // COHORT_SHM_LANE_BYTES
  std::optional<std::string> host_id;           // COHORT_HOST_ID (else hostname + boot id)
  std::optional<bool> tuner_probe;              // COHORT_TUNER_PROBE
  std::optional<std::string> topology_file;     // COHORT_TOPO_FILE
  std::optional<std::string> debug;             // COHORT_DEBUG
  std::optional<size_t> trace_buffer;           // the flight recorder's size (COHORT_TRACE_BUFFER)
  std::optional<std::string> trace_dir;         // where it dumps (COHORT_TRACE_DIR)
  // CUDA buffers (CommonOptions::memory): how their collectives run (COHORT_CUDA_PATH: "auto",
  // "nccl" or "staged"; docs/backend.md), and the backend that runs them. Unset backend: CUDA
  // where libcohort was built with the CUDA toolkit (device::DefaultDeviceBackend); tests pass
  // a device::FakeDeviceBackend.
  std::optional<std::string> cuda_path;
  std::shared_ptr<device::DeviceBackend> device_backend;
};

// How Communicator::Shrink chooses the survivors.
struct ShrinkOptions {
  // Ranks to leave out (e.g. ones the caller knows are gone), besides the failed ones.
  std::vector<int> exclude;
  // Also leave out the ranks the survivors learned have failed (connection lost, removed by the
  // launcher, stopped, timed out and not joining). False: only `exclude`.
  bool failed = true;
  // Longest wait for a rank nobody reported as failed (COHORT_SHRINK_WAIT).
  std::optional<absl::Duration> wait;
  // The new communicator's name; empty: "<name>/shrink<epoch>".
  std::string name;
  // Where the new communicator's CUDA device groups agree (must outlive it); null: the
  // bootstrap given to Shrink (which then must outlive it where it runs CUDA buffers).
  Bootstrap* device_bootstrap = nullptr;
};

// Once, at program start, before the first communicator: process-wide settings a library
// should not change behind a program's back. Today: Abseil's mutex deadlock detection off
// (Debian builds it on; it costs several microseconds per small collective). cohort-bench and
// the torch backend call it; a program that does not only runs slower.
void ConfigureProcess();

// Fields common to every collective.
struct CommonOptions {
  std::string algorithm;                           // empty: the communicator's choice
  absl::Duration timeout = absl::ZeroDuration();   // zero: the communicator's timeout
  // Return only once the operation finished (like MPI's blocking calls): the Work comes back
  // completed. Nothing queued ahead: the calling thread runs it at once, without the queue.
  bool blocking = false;
  // Where the buffers live. kCuda: device memory of stream->device(), ordered on `stream` (the
  // caller's, e.g. device::CudaStream::Wrap of torch's current stream). The call enqueues the
  // operation's device steps on the stream and returns; the Work completes once the stream has
  // passed them (Work::device_event() is the point to wait for on another stream).
  MemoryKind memory = MemoryKind::kHost;
  std::shared_ptr<device::Stream> stream;
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

  // Fails every pending and future operation with `reason` (thread-safe, returns at once). The
  // peers' pending operations fail too, with this rank's reason in their error.
  void Abort(const absl::Status& reason);

  // A communicator of the survivors, with dense new ranks in the old order, over this one's
  // channels (no new connections). Every surviving rank calls it (typically after an operation
  // failed); they agree through `bootstrap` (the store every rank reaches; with cohortrun its
  // worker store) on who is left out: the failed ranks and `options.exclude`. This
  // communicator is revoked: whatever is pending fails, and every later call fails. A rank that
  // is left out gets an error. The new one runs over messages only (no windows, no lane).
  absl::StatusOr<std::unique_ptr<Communicator>> Shrink(Bootstrap& bootstrap,
                                                       const ShrinkOptions& options = {});
  // Like MPI_Comm_split / ncclCommSplit: every rank calls it (a collective on this
  // communicator); ranks with the same `color` form a new communicator, ranked by `key` (ties:
  // by their rank here). A negative color joins none (returns nullptr). The new communicators
  // have connections of their own (through `bootstrap`); this one stays usable.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(Bootstrap& bootstrap, int color, int key);
  // The ranks this rank learned have failed, and how (lost, stopped, timed out, removed).
  std::vector<FailureBlame> FailedRanks() const;
  // Like Abort, for ranks a launcher removed from the job (cohortrun --on-failure shrink): they
  // count as failed (Blame::kRemoved), so Shrink leaves them out without waiting for them.
  void Remove(const std::vector<int>& ranks, const std::string& reason);
  // The rank that `rank` had in the communicator Create made, before any Shrink (what a
  // launcher's job ranks map to).
  int root_rank(int rank) const;
  // Writes the flight recorder's dump to `directory` (empty: COHORT_TRACE_DIR, else the
  // working folder) and returns its path.
  absl::StatusOr<std::string> DumpTrace(const std::string& directory = "") const;
  const std::string& name() const;

  // The channel kind that carries this rank's traffic with `peer` (for tools and tests).
  ChannelKind channel_kind(int peer) const;
  // The link models the tuner uses and the channel kinds they stand for (cohort-bench topo).
  std::string DescribeLinks() const;
  // Puts this rank made into peers' memory through windows so far (tests assert the path ran).
  uint64_t window_puts() const;
  // The algorithm the tuner would pick (for tools and tests).
  std::string ChosenAlgorithm(const OpArgs& args) const;
  // The hosts, local ranks and links every rank agreed on at creation.
  const Topology& topology() const;
  // The device group of this rank's host (NCCL inside the host), once a CUDA operation made it;
  // nullptr before, or where CUDA buffers are staged (for tools and tests).
  const device::DeviceGroup* device_group() const;

 private:
  explicit Communicator(std::shared_ptr<Engine> engine);
  // COHORT_TUNER_PROBE: measures the link models at creation (rank 0 decides for all).
  absl::Status ProbeLinks();
  std::shared_ptr<Work> Submit(OpArgs args, const CommonOptions& common);
  std::shared_ptr<Engine> engine_;
  CommOptions options_;  // as given to Create (Split's children get them too)
  int splits_ = 0;       // Split calls so far (each gets its own keys)
};

}  // namespace cohort
