#include "collectives/communicator.h"

#include <chrono>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "collectives/transport/tcp/address.h"
#include "collectives/algorithms/registry.h"
#include "collectives/device/backend.h"
#include "collectives/engine.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort {

namespace {

// The tuner's built-in model of a link: by the channel kind that carries it and whether it
// stays inside a host.
LinkModel DefaultLink(ChannelKind kind, bool same_host, bool rdma) {
  switch (kind) {
    case ChannelKind::kSharedMemory:
      return {2e-6, 4e9, 6e9};
    case ChannelKind::kUcx:
      if (same_host) return {3e-6, 4e9, 6e9};  // UCX's sm / cma transports
      if (rdma) return {5e-6, 10e9, 6e9};      // a 100 Gbit/s-class fabric
      return {50e-6, 1.25e9, 6e9};             // UCX over TCP
    case ChannelKind::kTcp:
      if (same_host) return {25e-6, 1e9, 6e9};  // TCP loopback
      return {50e-6, 1.25e9, 6e9};              // 10 Gbit/s Ethernet
  }
  return {};
}

// The tuner's link models: from the channels the communicator uses inside and across hosts
// (every rank computes the same from the records), or COHORT_TOPO_FILE.
absl::StatusOr<Tuning> DefaultTuning(const Protocol& protocol, const Topology& topology,
                                     const std::string& path) {
  Tuning tuning;
  const auto& hosts = topology.hosts();
  tuning.intra = DefaultLink(ChannelKind::kSharedMemory, true, false);
  for (const std::vector<int>& host : hosts) {
    if (host.size() < 2) continue;
    tuning.intra_kind = protocol.KindBetween(host[0], host[1]);
    tuning.intra = DefaultLink(tuning.intra_kind, true, false);
    break;
  }
  tuning.inter = DefaultLink(ChannelKind::kTcp, false, false);
  if (hosts.size() > 1) {
    const int a = hosts[0][0], b = hosts[1][0];
    tuning.inter_kind = protocol.KindBetween(a, b);
    tuning.inter = DefaultLink(tuning.inter_kind, false, protocol.HasRdma(a) && protocol.HasRdma(b));
  }
  if (path.empty()) return tuning;
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("COHORT_TOPO_FILE=", path,
                                            " cannot be read; give a readable file or unset it"));
  }
  std::string line;
  int number = 0;
  while (std::getline(file, line)) {
    ++number;
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (words.empty() || words[0][0] == '#') continue;
    double latency_us, bandwidth, reduce;
    if (words.size() != 4 || (words[0] != "intra" && words[0] != "inter") ||
        !absl::SimpleAtod(words[1], &latency_us) || !absl::SimpleAtod(words[2], &bandwidth) ||
        !absl::SimpleAtod(words[3], &reduce) || bandwidth <= 0 || reduce <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number, ": \"", line, "\" is not `intra|inter <latency us> <GB/s> <reduce GB/s>`"));
    }
    LinkModel& model = words[0] == "intra" ? tuning.intra : tuning.inter;
    model = {latency_us * 1e-6, bandwidth * 1e9, reduce * 1e9};
  }
  return tuning;
}

}  // namespace

void ConfigureProcess() {
  // Debian builds Abseil with its debug-mode mutex deadlock detection on: a global graph update
  // on every lock and on every mutex's destruction (one per Work), several microseconds per
  // small collective. Our lock order is fixed (executing, then queue; a Work's alone).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

namespace {

// Everything a communicator runs with, every setting resolved.
struct Settings {
  ProtocolOptions protocol;
  EngineConfig engine;
  bool tuner_probe = false;
  std::string topology_file;
  NicOptions nics;  // which NICs the topology may choose for this rank
};

template <typename T, typename Read>
absl::Status Fill(const std::optional<T>& given, T& out, Read read) {
  if (given.has_value()) {
    out = *given;
    return absl::OkStatus();
  }
  auto value = read();
  if (!value.ok()) return value.status();
  out = static_cast<T>(*value);
  return absl::OkStatus();
}

absl::StatusOr<size_t> Bytes(const char* name) {
  COHORT_ASSIGN_OR_RETURN(int64_t bytes, config::GetBytes(name));
  return static_cast<size_t>(bytes);
}

// The one place where the environment fills what the options leave unset.
absl::StatusOr<Settings> Resolve(const CommOptions& options) {
  Settings settings;
  ProtocolOptions& protocol = settings.protocol;
  EngineConfig& engine = settings.engine;
  protocol.prefix = options.name;
  COHORT_RETURN_IF_ERROR(
      Fill(options.timeout, engine.timeout, [] { return config::GetDuration("COHORT_TIMEOUT"); }));
  protocol.timeout = engine.timeout;
  std::string algorithm;
  COHORT_RETURN_IF_ERROR(
      Fill(options.algorithm, algorithm, [] { return config::GetString("COHORT_ALGO"); }));
  COHORT_RETURN_IF_ERROR(ValidateAlgorithmName(algorithm == "auto" ? "" : algorithm));
  engine.algorithm = algorithm == "auto" ? "" : algorithm;

  if (options.transports.has_value()) {
    if (options.transports->empty()) {
      return absl::InvalidArgumentError("CommOptions::transports is empty; name at least one");
    }
    protocol.transports = *options.transports;
    protocol.transports_forced = true;
  } else {
    COHORT_ASSIGN_OR_RETURN(std::string text, config::GetString("COHORT_TRANSPORTS"));
    if (!text.empty() && text != "auto") {
      auto kinds = ParseChannelKinds(text);
      if (!kinds.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("COHORT_TRANSPORTS: ", kinds.status().message()));
      }
      protocol.transports = std::move(*kinds);
      protocol.transports_forced = true;
    }
    COHORT_ASSIGN_OR_RETURN(bool shared_memory, config::GetBool("COHORT_SHM"));
    if (!shared_memory) {
      std::erase(protocol.transports, ChannelKind::kSharedMemory);
      if (protocol.transports.empty()) {
        return absl::InvalidArgumentError(
            "COHORT_SHM=0 leaves COHORT_TRANSPORTS with no channel kind; name tcp or ucx too");
      }
    }
  }
  COHORT_RETURN_IF_ERROR(Fill(options.chunk_bytes, engine.settings.segment_bytes,
                              [] { return Bytes("COHORT_CHUNK_BYTES"); }));
  COHORT_RETURN_IF_ERROR(Fill(options.windows, engine.settings.windows,
                              [] { return config::GetBool("COHORT_WINDOWS"); }));
  COHORT_RETURN_IF_ERROR(Fill(options.spin_microseconds, engine.settings.spin_microseconds,
                              [] { return config::GetInt("COHORT_SPIN_US"); }));
  COHORT_RETURN_IF_ERROR(
      Fill(options.eager_bytes, protocol.eager_bytes, [] { return Bytes("COHORT_EAGER_BYTES"); }));
  COHORT_RETURN_IF_ERROR(Fill(options.socket_buffer_bytes, protocol.tcp.socket_buffer_bytes,
                              [] { return config::GetBytes("COHORT_SOCKET_BUFFER"); }));
  COHORT_RETURN_IF_ERROR(Fill(options.socket_interface, protocol.tcp.interface_name,
                              [] { return config::GetString("COHORT_SOCKET_IFNAME"); }));
  std::string rdma_devices;
  COHORT_RETURN_IF_ERROR(Fill(options.rdma_devices, rdma_devices,
                              [] { return config::GetString("COHORT_IB_HCA"); }));
  COHORT_ASSIGN_OR_RETURN(settings.nics,
                          NicOptions::Parse(protocol.tcp.interface_name, rdma_devices));
  COHORT_RETURN_IF_ERROR(Fill(options.shm_ring_bytes, protocol.shm.ring_bytes,
                              [] { return Bytes("COHORT_SHM_RING_BYTES"); }));
  const size_t ring = protocol.shm.ring_bytes;
  if (ring == 0 || (ring & (ring - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "COHORT_SHM_RING_BYTES=", ring, " is not a power of two; use e.g. 256K, 1M or 4M"));
  }
  COHORT_RETURN_IF_ERROR(Fill(options.shm_single_copy_bytes, protocol.shm.single_copy_bytes,
                              [] { return Bytes("COHORT_SHM_SINGLE_COPY_BYTES"); }));
  COHORT_RETURN_IF_ERROR(Fill(options.shm_lane_bytes, protocol.shm.lane_bytes,
                              [] { return Bytes("COHORT_SHM_LANE_BYTES"); }));
  protocol.shm.lane_bytes = (protocol.shm.lane_bytes + 63) / 64 * 64;
  protocol.host_id = options.host_id.has_value() ? *options.host_id : tcp::HostIdentity();
  protocol.host_name = logging::HostName();
  COHORT_RETURN_IF_ERROR(Fill(options.tuner_probe, settings.tuner_probe,
                              [] { return config::GetBool("COHORT_TUNER_PROBE"); }));
  COHORT_RETURN_IF_ERROR(Fill(options.topology_file, settings.topology_file,
                              [] { return config::GetString("COHORT_TOPO_FILE"); }));
  engine.name = options.name;
  COHORT_RETURN_IF_ERROR(Fill(options.trace_buffer, engine.trace_buffer,
                              [] { return config::GetInt("COHORT_TRACE_BUFFER"); }));
  COHORT_RETURN_IF_ERROR(Fill(options.trace_dir, engine.trace_dir,
                              [] { return config::GetString("COHORT_TRACE_DIR"); }));
  COHORT_ASSIGN_OR_RETURN(int64_t generation, config::GetInt("COHORT_GENERATION"));
  engine.generation = static_cast<int>(generation);
  std::string cuda_path;
  COHORT_RETURN_IF_ERROR(
      Fill(options.cuda_path, cuda_path, [] { return config::GetString("COHORT_CUDA_PATH"); }));
  COHORT_ASSIGN_OR_RETURN(engine.device_path, ParseDevicePath(cuda_path));
  engine.device_backend =
      options.device_backend != nullptr ? options.device_backend : device::DefaultDeviceBackend();
  if (engine.device_path == DevicePath::kGroups) {
    if (engine.device_backend == nullptr) {
      return absl::FailedPreconditionError(
          "COHORT_CUDA_PATH=nccl, but libcohort was built without the CUDA toolkit (no NCCL "
          "path); use auto or staged, or build libcohort where nvcc is found");
    }
    absl::Status support = engine.device_backend->GroupSupport();
    if (!support.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "COHORT_CUDA_PATH=nccl, but this process cannot make NCCL groups: ", support.message(),
          "; use auto or staged"));
    }
  }
  std::string debug;
  COHORT_RETURN_IF_ERROR(
      Fill(options.debug, debug, [] { return config::GetString("COHORT_DEBUG"); }));
  for (absl::string_view item : absl::StrSplit(debug, ',', absl::SkipEmpty())) {
    if (absl::EqualsIgnoreCase(item, "TUNING")) {
      engine.debug_tuning = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "COHORT_DEBUG=\"", debug, "\" names \"", item, "\", which is not known; accepted: TUNING"));
    }
  }
  return settings;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Create(Bootstrap& bootstrap, int rank,
                                                                   int size, CommOptions options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot create a communicator with rank ", rank, " and size ", size,
        "; the rank must be from 0 to size - 1"));
  }
  COHORT_RETURN_IF_ERROR(config::ValidateEnvironment());
  COHORT_ASSIGN_OR_RETURN(Settings settings, Resolve(options));
  auto topology = Topology::Exchange(
      bootstrap, options.name, rank, size, settings.engine.timeout,
      LocalFacts::Discover(settings.protocol.host_id, settings.protocol.host_name, NicSource(),
                           settings.nics));
  if (!topology.ok()) return topology.status();
  // Where a host has several NICs, each rank's sockets use its own (the topology's choice:
  // nearest, fastest, ranks taking turns), so rails spread over them; with one NIC, the address
  // that reaches the bootstrap, which is known to work.
  if (settings.protocol.tcp.interface_name.empty()) {
    int candidates = 0;
    for (const NicInfo& nic : topology->nics(topology->place(rank).host).interfaces) {
      candidates += nic.up && nic.allowed && !nic.loopback && !nic.ipv4.empty() ? 1 : 0;
    }
    if (candidates > 1) settings.protocol.listen_ip = topology->place(rank).nic.ip;
  }
  auto transport = Protocol::Create(bootstrap, rank, size, settings.protocol);
  if (!transport.ok()) {
    return absl::Status(transport.status().code(),
                        absl::StrCat("creating communicator \"", options.name, "\" (rank ", rank,
                                     " of ", size, ") failed: ", transport.status().message()));
  }
  EngineConfig config = std::move(settings.engine);
  config.topology = std::make_shared<const Topology>(std::move(*topology));
  config.bootstrap = &bootstrap;
  config.name = options.name;
  COHORT_ASSIGN_OR_RETURN(config.tuning,
                          DefaultTuning(**transport, *config.topology, settings.topology_file));
  logging::SetRank(rank);
  auto engine = std::make_shared<Engine>(std::move(*transport), std::move(config));
  engine->Start();
  std::unique_ptr<Communicator> comm(new Communicator(std::move(engine)));
  comm->options_ = std::move(options);
  if (settings.tuner_probe) COHORT_RETURN_IF_ERROR(comm->ProbeLinks());
  return comm;
}

namespace {

// Seconds per round trip of `bytes` between this rank and `peer` (this rank starts).
absl::StatusOr<double> PingPong(Communicator& comm, int peer, bool first, size_t bytes,
                                int rounds) {
  std::vector<char> buffer(std::max<size_t>(bytes, 1));
  SendOptions send;
  send.data = buffer.data();
  send.count = bytes;
  send.peer = peer;
  send.tag = 0x7072;
  RecvOptions receive;
  receive.data = buffer.data();
  receive.count = bytes;
  receive.peer = peer;
  receive.tag = 0x7072;
  auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < rounds; ++round) {
    if (first) {
      COHORT_RETURN_IF_ERROR(comm.Send(send)->Wait());
      COHORT_RETURN_IF_ERROR(comm.Recv(receive)->Wait());
    } else {
      COHORT_RETURN_IF_ERROR(comm.Recv(receive)->Wait());
      COHORT_RETURN_IF_ERROR(comm.Send(send)->Wait());
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / rounds;
}

}  // namespace

absl::Status Communicator::ProbeLinks() {
  // Rank 0 measures one local and one remote link; every rank adopts the result, so that all
  // make the same choices.
  const Topology& topology = engine_->topology();
  double model[6] = {0, 0, 0, 0, 0, 0};  // intra latency, bandwidth, valid; inter ...
  const std::vector<int>& first_host = topology.hosts()[0];
  int local_peer = first_host.size() > 1 ? first_host[1] : -1;
  int remote_peer = topology.hosts().size() > 1 ? topology.hosts()[1][0] : -1;
  for (int which = 0; which < 2; ++which) {
    int peer = which == 0 ? local_peer : remote_peer;
    if (peer < 0 || (rank() != 0 && rank() != peer)) continue;
    int other = rank() == 0 ? peer : 0;
    COHORT_ASSIGN_OR_RETURN(double small, PingPong(*this, other, rank() == 0, 8, 20));
    COHORT_ASSIGN_OR_RETURN(double large, PingPong(*this, other, rank() == 0, 4 << 20, 3));
    model[which * 3] = small / 2;
    model[which * 3 + 1] = (4 << 20) / std::max(1e-9, large / 2 - small / 2);
    model[which * 3 + 2] = 1;
  }
  BroadcastOptions broadcast;
  broadcast.output = model;
  broadcast.count = 6;
  broadcast.dtype = DataType::kFloat64;
  broadcast.root = 0;
  COHORT_RETURN_IF_ERROR(Broadcast(broadcast)->Wait());
  Tuning tuning = engine_->tuning();
  if (model[2] != 0) tuning.intra = {model[0], model[1], tuning.intra.reduce_bytes_per_second};
  if (model[5] != 0) tuning.inter = {model[3], model[4], tuning.inter.reduce_bytes_per_second};
  engine_->SetTuning(tuning);
  COHORT_LOG(INFO) << "tuner probe: intra " << tuning.intra.latency_seconds * 1e6 << " us, "
                   << tuning.intra.bytes_per_second / 1e9 << " GB/s; inter "
                   << tuning.inter.latency_seconds * 1e6 << " us, "
                   << tuning.inter.bytes_per_second / 1e9 << " GB/s";
  return absl::OkStatus();
}

Communicator::Communicator(std::shared_ptr<Engine> engine) : engine_(std::move(engine)) {}

Communicator::~Communicator() { engine_->Shutdown(); }

int Communicator::rank() const { return engine_->transport().rank(); }
int Communicator::size() const { return engine_->transport().size(); }
std::string Communicator::DescribeLinks() const {
  const Tuning& tuning = engine_->tuning();
  auto link = [](ChannelKind kind, const LinkModel& model) {
    return absl::StrCat(ChannelKindName(kind), " (", absl::SixDigits(model.latency_seconds * 1e6),
                        " us, ", absl::SixDigits(model.bytes_per_second / 1e9), " GB/s)");
  };
  std::string text = absl::StrCat("links the tuner assumes: inside hosts ",
                                  link(tuning.intra_kind, tuning.intra));
  if (tuning.multi_host()) {
    absl::StrAppend(&text, ", across hosts ", link(tuning.inter_kind, tuning.inter));
  }
  return text;
}

uint64_t Communicator::window_puts() const { return engine_->transport().WindowPuts(); }

ChannelKind Communicator::channel_kind(int peer) const {
  return engine_->transport().ChannelOf(peer);
}

const std::string& Communicator::host(int rank) const {
  return engine_->transport().PeerHost(rank);
}

void Communicator::Abort(const absl::Status& reason) { engine_->Abort(reason); }

const Topology& Communicator::topology() const { return engine_->topology(); }

const device::DeviceGroup* Communicator::device_group() const {
  const DeviceState& state = engine_->device().state();
  return state.prepared.load(std::memory_order_acquire) ? state.group : nullptr;
}

std::string Communicator::ChosenAlgorithm(const OpArgs& args) const {
  return engine_->SelectName(args);
}

std::shared_ptr<Work> Communicator::Submit(OpArgs args, const CommonOptions& common) {
  args.memory = common.memory;
  args.stream = common.stream;
  if (common.blocking) return engine_->RunNow(std::move(args), common.algorithm, common.timeout);
  return engine_->Submit(std::move(args), common.algorithm, common.timeout);
}

std::shared_ptr<Work> Communicator::Allreduce(const AllreduceOptions& options) {
  OpArgs args;
  args.op = OpType::kAllreduce;
  args.input = options.input;
  args.output = options.output;
  args.count = options.count;
  args.dtype = options.dtype;
  args.reduce_op = options.op;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Broadcast(const BroadcastOptions& options) {
  OpArgs args;
  args.op = OpType::kBroadcast;
  args.input = options.input != nullptr ? options.input : options.output;
  args.output = options.output;
  args.count = options.count;
  args.dtype = options.dtype;
  args.root = options.root;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Reduce(const ReduceOptions& options) {
  OpArgs args;
  args.op = OpType::kReduce;
  args.input = options.input;
  args.output = options.output;
  args.count = options.count;
  args.dtype = options.dtype;
  args.reduce_op = options.op;
  args.root = options.root;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Allgather(const AllgatherOptions& options) {
  OpArgs args;
  args.op = OpType::kAllgather;
  args.input = options.input;
  args.output = options.output;
  args.count = options.count;
  args.counts = options.counts;
  args.dtype = options.dtype;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::ReduceScatter(const ReduceScatterOptions& options) {
  OpArgs args;
  args.op = OpType::kReduceScatter;
  args.input = options.input;
  args.output = options.output;
  args.count = options.count;
  args.counts = options.counts;
  args.dtype = options.dtype;
  args.reduce_op = options.op;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Alltoall(const AlltoallOptions& options) {
  OpArgs args;
  args.op = OpType::kAlltoall;
  args.input = options.input;
  args.output = options.output;
  args.count = options.count;
  args.counts = options.send_counts;
  args.recv_counts = options.recv_counts;
  args.displacements = options.send_offsets;
  args.recv_displacements = options.recv_offsets;
  args.dtype = options.dtype;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Gather(const GatherOptions& options) {
  OpArgs args;
  args.op = OpType::kGather;
  args.input = options.input;
  args.output = options.output;
  args.count = options.count;
  args.counts = options.counts;
  args.dtype = options.dtype;
  args.root = options.root;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Scatter(const ScatterOptions& options) {
  OpArgs args;
  args.op = OpType::kScatter;
  args.input = options.input;
  args.output = options.output;
  args.count = options.count;
  args.counts = options.counts;
  args.dtype = options.dtype;
  args.root = options.root;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Barrier(const BarrierOptions& options) {
  OpArgs args;
  args.op = OpType::kBarrier;
  args.dtype = DataType::kUInt8;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Send(const SendOptions& options) {
  OpArgs args;
  args.op = OpType::kSend;
  args.input = options.data;
  args.count = options.count;
  args.dtype = options.dtype;
  args.root = options.peer;
  args.tag = options.tag;
  return Submit(std::move(args), options);
}

std::shared_ptr<Work> Communicator::Recv(const RecvOptions& options) {
  OpArgs args;
  args.op = OpType::kRecv;
  args.output = options.data;
  args.count = options.count;
  args.dtype = options.dtype;
  args.root = options.peer;
  args.tag = options.tag;
  return Submit(std::move(args), options);
}

}  // namespace cohort
