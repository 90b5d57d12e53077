#include "collectives/device_runtime.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "collectives/algorithms/registry.h"
#include "collectives/op_context.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr size_t kMinStagingBytes = 64 << 10;
constexpr absl::Duration kDrainWait = absl::Seconds(5);

size_t Sum(const std::vector<size_t>& values) {
  return std::accumulate(values.begin(), values.end(), size_t{0});
}

size_t RoundUpPowerOfTwo(size_t bytes) {
  size_t rounded = kMinStagingBytes;
  while (rounded < bytes) rounded <<= 1;
  return rounded;
}

// One rank's record in the device exchange: "<groups ok 0|1>|<device id>|<why not>".
struct DeviceRecord {
  bool groups = false;
  std::string id;
  std::string why_not;
};

std::string Encode(const DeviceRecord& record) {
  return absl::StrCat(record.groups ? "1" : "0", "|", record.id, "|", record.why_not);
}

absl::StatusOr<DeviceRecord> Decode(const std::string& text, int rank) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits('|', 2));
  if (parts.size() != 3 || (parts[0] != "0" && parts[0] != "1")) {
    return absl::DataLossError(
        absl::StrCat("rank ", rank, "'s device record \"", text, "\" is malformed"));
  }
  return DeviceRecord{parts[0] == "1", parts[1], parts[2]};
}

}  // namespace

absl::StatusOr<DevicePath> ParseDevicePath(const std::string& text) {
  if (text.empty() || text == "auto") return DevicePath::kAuto;
  if (text == "nccl") return DevicePath::kGroups;
  if (text == "staged") return DevicePath::kStaged;
  return absl::InvalidArgumentError(absl::StrCat("COHORT_CUDA_PATH=\"", text,
                                                 "\" is not one of auto, nccl, staged"));
}

// ---------------------------------------------------------------------------------------------
// Sizes

size_t InputBytes(const OpArgs& args, int rank, int size) {
  const size_t element = args.element_size();
  auto total = [&] { return args.counts.empty() ? args.count * size : Sum(args.counts); };
  auto own = [&] { return args.counts.empty() ? args.count : args.counts[rank]; };
  switch (args.op) {
    case OpType::kAllreduce:
    case OpType::kReduce:
    case OpType::kSend:
      return args.count * element;
    case OpType::kBroadcast:
      return rank == args.root ? args.count * element : 0;
    case OpType::kAllgather:
    case OpType::kGather:
      return own() * element;
    case OpType::kReduceScatter:
      return total() * element;
    case OpType::kScatter:
      return rank == args.root ? total() * element : 0;
    case OpType::kAlltoall: {
      if (args.counts.empty()) return args.count * size * element;
      std::vector<size_t> offsets =
          args.displacements.empty() ? BlockOffsets(args.counts) : args.displacements;
      size_t extent = 0;
      for (int peer = 0; peer < size; ++peer) {
        extent = std::max(extent, offsets[peer] + args.counts[peer]);
      }
      return extent * element;
    }
    case OpType::kBarrier:
    case OpType::kRecv:
      return 0;
  }
  return 0;
}

size_t OutputBytes(const OpArgs& args, int rank, int size) {
  const size_t element = args.element_size();
  auto total = [&] { return args.counts.empty() ? args.count * size : Sum(args.counts); };
  auto own = [&] { return args.counts.empty() ? args.count : args.counts[rank]; };
  switch (args.op) {
    case OpType::kAllreduce:
    case OpType::kBroadcast:
    case OpType::kRecv:
      return args.count * element;
    case OpType::kReduce:
      return rank == args.root ? args.count * element : 0;
    case OpType::kAllgather:
      return total() * element;
    case OpType::kGather:
      return rank == args.root ? total() * element : 0;
    case OpType::kReduceScatter:
    case OpType::kScatter:
      return own() * element;
    case OpType::kAlltoall: {
      if (args.recv_counts.empty()) return args.count * size * element;
      std::vector<size_t> offsets = args.recv_displacements.empty()
                                        ? BlockOffsets(args.recv_counts)
                                        : args.recv_displacements;
      size_t extent = 0;
      for (int peer = 0; peer < size; ++peer) {
        extent = std::max(extent, offsets[peer] + args.recv_counts[peer]);
      }
      return extent * element;
    }
    case OpType::kBarrier:
    case OpType::kSend:
      return 0;
  }
  return 0;
}

absl::Status CheckFingerprintsOnHost(OpContext& context) {
  constexpr uint32_t kTagFingerprint = 0x0DE71CE0u;
  const int n = context.size();
  if (n == 1) return absl::OkStatus();
  const int rank = context.rank();
  Request* from_left = context.Recv((rank + n - 1) % n, kTagFingerprint, nullptr, 0);
  context.Send((rank + 1) % n, kTagFingerprint, nullptr, 0);
  return context.Wait(from_left);
}

// ---------------------------------------------------------------------------------------------
// DevicePlan

DevicePlan::DevicePlan(DeviceRuntime& runtime, const OpArgs& args, const Tuning& tuning,
                       std::string host_algorithm)
    : runtime_(runtime), args_(args), tuning_(tuning), host_algorithm_(std::move(host_algorithm)) {}

DevicePlan::~DevicePlan() {
  OpenAll();
  runtime_.ReleaseGates(gates_, finished_);
  events_.clear();
  runtime_.ReturnStaging(std::move(staging_), finished_, done_);
}

const DeviceState& DevicePlan::state() const { return runtime_.state(); }
device::DeviceGroup& DevicePlan::group() const { return *runtime_.state().group; }
int DevicePlan::rank() const { return runtime_.options().rank; }
int DevicePlan::size() const { return runtime_.options().size; }
size_t DevicePlan::segment_bytes() const { return runtime_.options().segment_bytes; }

absl::StatusOr<int> DevicePlan::AddGate() {
  COHORT_ASSIGN_OR_RETURN(int gate, runtime_.AcquireGate());
  gates_.push_back(gate);
  COHORT_RETURN_IF_ERROR(stream().WaitValue(runtime_.gate_word(gate), 1));
  return static_cast<int>(gates_.size()) - 1;
}

absl::StatusOr<int> DevicePlan::AddEvent() {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<device::Event> event, stream().Record());
  events_.push_back(std::move(event));
  return static_cast<int>(events_.size()) - 1;
}

absl::StatusOr<char*> DevicePlan::Staging(size_t bytes) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<device::HostMemory> memory, runtime_.Stage(bytes));
  staging_.push_back(memory);
  return static_cast<char*>(memory->data());
}

absl::Status DevicePlan::Call(const device::DeviceCall& call) {
  return group().Enqueue(call, stream()).status();
}

absl::Status DevicePlan::Finish() {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<device::Event> event, stream().Record());
  done_ = std::move(event);
  return absl::OkStatus();
}

void DevicePlan::SetHostRun(const Algorithm* algorithm, OpArgs args) {
  host_run_ = algorithm;
  host_args_ = std::move(args);
}

void DevicePlan::Open(int gate) {
  for (; opened_ <= static_cast<size_t>(gate) && opened_ < gates_.size(); ++opened_) {
    runtime_.OpenGate(gates_[opened_]);
  }
}

void DevicePlan::OpenAll() {
  if (!gates_.empty()) Open(static_cast<int>(gates_.size()) - 1);
}

absl::Status DevicePlan::WaitEvent(OpContext& context, int event, const char* what) {
  device::Event& waited = *events_[event];
  return context.WaitDevice([&waited] { return waited.Query(); }, what);
}

absl::StatusOr<bool> DevicePlan::QueryDone() {
  if (done_ == nullptr) return true;
  return done_->Query();
}

// ---------------------------------------------------------------------------------------------
// DeviceRuntime

DeviceRuntime::DeviceRuntime(std::shared_ptr<device::DeviceBackend> backend,
                             Bootstrap* bootstrap, const Topology& topology,
                             DeviceRuntimeOptions options)
    : backend_(std::move(backend)),
      bootstrap_(bootstrap),
      topology_(topology),
      options_(std::move(options)) {}

DeviceRuntime::~DeviceRuntime() {
  // Nothing may still wait at a gate once the memory goes.
  if (std::atomic<uint64_t>* words = words_.load()) {
    for (int gate = 0; gate < kGates; ++gate) words[gate].store(1, std::memory_order_release);
  }
  std::vector<Kept> kept;
  {
    absl::MutexLock lock(&staging_mutex_);
    kept.swap(kept_);
  }
  const absl::Time deadline = absl::Now() + kDrainWait;
  bool drained = true;
  for (const Kept& entry : kept) {
    if (entry.done == nullptr) continue;
    // A stream whose work failed has stopped; one still pending has not.
    absl::Status passed = entry.done->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (passed.code() == absl::StatusCode::kDeadlineExceeded) {
      drained = false;
      break;
    }
  }
  if (!drained) {
    COHORT_LOG(WARN) << options_.label << ": a stream still holds device steps of a failed "
                        << "operation after " << absl::FormatDuration(kDrainWait)
                        << "; its staging and gate memory is left allocated";
    new std::vector<Kept>(std::move(kept));                    // leaked on purpose
    new std::unique_ptr<device::HostMemory>(std::move(gates_));  // likewise
  }
}

absl::Status DeviceRuntime::Check(const OpArgs& args) const {
  const char* op = OpTypeName(args.op);
  if (backend_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        op, " on cuda memory: libcohort was built without the CUDA toolkit, so it has no device "
            "backend; pass host buffers, or build libcohort where nvcc is found"));
  }
  if (args.stream == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, " on cuda memory needs the stream its buffers are ordered on (CommonOptions::stream, "
            "e.g. device::CudaStream::Wrap of the caller's current stream)"));
  }
  if (args.stream->kind() != backend_->stream_kind()) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, " on cuda memory: the communicator's device backend (", backend_->name(), ") runs on ",
        device::StreamKindName(backend_->stream_kind()), " streams, not on a ",
        device::StreamKindName(args.stream->kind()), " stream"));
  }
  if (state_.prepared.load(std::memory_order_acquire) && args.stream->device() != state_.device) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, " on cuda:", args.stream->device(), ": this communicator runs on cuda:",
        state_.device,
        " (the device of its first CUDA operation); use one device per rank and communicator"));
  }
  return absl::OkStatus();
}

absl::Status DeviceRuntime::Prepare(int device) {
  if (state_.prepared.load(std::memory_order_acquire)) return absl::OkStatus();
  absl::MutexLock lock(&mutex_);
  if (prepare_started_) return prepared_;
  prepare_started_ = true;
  prepared_ = PrepareLocked(device);
  if (!prepared_.ok()) {
    prepared_ = absl::Status(prepared_.code(),
                             absl::StrCat("preparing ", options_.label,
                                          " for CUDA buffers failed: ", prepared_.message()));
  }
  return prepared_;
}

absl::Status DeviceRuntime::PrepareLocked(int device) {
  if (bootstrap_ == nullptr) {
    return absl::FailedPreconditionError("the communicator has no bootstrap to agree through");
  }
  const RankPlace& place = topology_.place(options_.rank);
  const std::vector<int>& local = topology_.hosts()[place.host];
  state_.device = device;
  state_.host = place.host;
  state_.local_rank = place.local_rank;
  state_.local_size = static_cast<int>(local.size());
  const absl::Duration timeout = options_.timeout;
  const std::string prefix = absl::StrCat(options_.name, "/device/");

  // 1. This rank's facts: its device, and whether it could join a device group.
  DeviceRecord mine;
  absl::StatusOr<std::string> id = backend_->DeviceId(device);
  absl::Status support = options_.path == DevicePath::kStaged
                             ? absl::UnavailableError("COHORT_CUDA_PATH=staged")
                             : backend_->GroupSupport();
  mine.groups = id.ok() && support.ok();
  mine.id = id.ok() ? *id : std::string("?");
  if (!id.ok()) {
    mine.why_not = std::string(id.status().message());
  } else if (!support.ok()) {
    mine.why_not = std::string(support.message());
  }
  std::replace(mine.why_not.begin(), mine.why_not.end(), '|', '/');
  COHORT_RETURN_IF_ERROR(bootstrap_->Set(absl::StrCat(prefix, options_.rank), Encode(mine)));

  // 2. This host: every rank able, each on its own device.
  bool host_ok = true;
  std::string why_not;
  std::vector<std::pair<std::string, int>> ids;
  for (int peer : local) {
    COHORT_ASSIGN_OR_RETURN(std::string text,
                            bootstrap_->Get(absl::StrCat(prefix, peer), timeout));
    COHORT_ASSIGN_OR_RETURN(DeviceRecord record, Decode(text, peer));
    if (!record.groups && host_ok) {
      host_ok = false;
      why_not = absl::StrCat("rank ", peer, " (", place.host_name, ") cannot join one: ",
                             record.why_not);
    }
    for (const auto& [seen, other] : ids) {
      if (seen == record.id && host_ok) {
        host_ok = false;
        why_not = absl::StrCat("ranks ", other, " and ", peer, " of host ", place.host_name,
                               " share device ", record.id, " (NCCL needs one device per rank)");
      }
    }
    ids.emplace_back(record.id, peer);
  }

  // 3. Every host: ranks of hosts that cannot are counted; groups only if none.
  COHORT_RETURN_IF_ERROR(bootstrap_->Add(absl::StrCat(prefix, "unable"), host_ok ? 0 : 1).status());
  COHORT_RETURN_IF_ERROR(bootstrap_->Set(absl::StrCat(prefix, "counted/", options_.rank), "1"));
  std::vector<std::string> counted;
  for (int rank = 0; rank < options_.size; ++rank) {
    counted.push_back(absl::StrCat(prefix, "counted/", rank));
  }
  COHORT_RETURN_IF_ERROR(bootstrap_->Wait(counted, timeout));
  COHORT_ASSIGN_OR_RETURN(int64_t unable, bootstrap_->Add(absl::StrCat(prefix, "unable"), 0));
  state_.groups = unable == 0;
  if (!state_.groups) {
    state_.no_groups =
        host_ok ? absl::StrCat(unable, " rank(s) on other hosts cannot form device groups "
                                       "(their logs say why)")
                : why_not;
    if (options_.path == DevicePath::kGroups) {
      return absl::FailedPreconditionError(absl::StrCat(
          "COHORT_CUDA_PATH=nccl, but there can be no device groups: ", state_.no_groups,
          ". Give each rank its own GPU, make libnccl.so.2 loadable, or set "
          "COHORT_CUDA_PATH=auto to stage through host memory"));
    }
  }

  // 4. This host's group.
  if (state_.groups) {
    device::GroupOptions group_options;
    group_options.device = device;
    group_options.timeout = timeout;
    group_options.label = options_.label;
    COHORT_ASSIGN_OR_RETURN(
        group_, backend_->CreateGroup(*bootstrap_, absl::StrCat(options_.name, "/device-group/",
                                                                place.host),
                                      place.local_rank, state_.local_size, group_options));
    state_.group = group_.get();
    group_ptr_.store(group_.get());
  }
  COHORT_RETURN_IF_ERROR(AllocateGatesLocked());
  if (state_.groups) {
    COHORT_LOG(INFO) << options_.label << ": CUDA buffers on cuda:" << device << " use a "
                     << backend_->name() << " device group of " << state_.local_size
                     << " rank(s) inside the host";
  } else if (options_.rank == 0 || !host_ok) {
    const logging::Level level =
        options_.path == DevicePath::kStaged ? logging::Level::INFO : logging::Level::WARN;
    if (logging::Enabled(level)) {
      logging::Message(level, __FILE__, __LINE__).stream()
          << options_.label << ": CUDA buffers are staged through host memory: "
          << state_.no_groups;
    }
  }
  state_.prepared.store(true, std::memory_order_release);
  return absl::OkStatus();
}

absl::Status DeviceRuntime::AllocateGatesLocked() {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<device::HostMemory> memory,
                          backend_->AllocateHost(kGates * sizeof(uint64_t)));
  auto* words = static_cast<std::atomic<uint64_t>*>(memory->data());
  for (int gate = 0; gate < kGates; ++gate) {
    new (&words[gate]) std::atomic<uint64_t>(failed_.load() ? 1 : 0);
  }
  absl::MutexLock lock(&gate_mutex_);
  gates_ = std::move(memory);
  free_gates_.clear();
  for (int gate = kGates - 1; gate >= 0; --gate) free_gates_.push_back(gate);
  words_.store(words, std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<int> DeviceRuntime::AcquireGate() {
  absl::MutexLock lock(&gate_mutex_);
  if (words_.load() == nullptr) {
    return absl::FailedPreconditionError("the device runtime was not prepared");
  }
  if (free_gates_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "more than ", kGates, " gates of CUDA operations are in flight (or were held by failed "
        "ones); wait for earlier operations before issuing more"));
  }
  const int gate = free_gates_.back();
  free_gates_.pop_back();
  return gate;
}

void DeviceRuntime::OpenGate(int gate) {
  words_.load()[gate].store(1, std::memory_order_release);
}

const std::atomic<uint64_t>* DeviceRuntime::gate_word(int gate) const {
  return &words_.load()[gate];
}

void DeviceRuntime::ReleaseGates(const std::vector<int>& gates, bool reuse) {
  if (gates.empty() || !reuse || failed_.load()) return;  // kept open for good
  absl::MutexLock lock(&gate_mutex_);
  std::atomic<uint64_t>* words = words_.load();
  for (int gate : gates) {
    words[gate].store(0, std::memory_order_relaxed);
    free_gates_.push_back(gate);
  }
}

absl::StatusOr<std::shared_ptr<device::HostMemory>> DeviceRuntime::Stage(size_t bytes) {
  {
    absl::MutexLock lock(&staging_mutex_);
    auto best = pool_.end();
    for (auto it = pool_.begin(); it != pool_.end(); ++it) {
      if ((*it)->bytes() >= bytes && (best == pool_.end() || (*it)->bytes() < (*best)->bytes())) {
        best = it;
      }
    }
    if (best != pool_.end()) {
      std::shared_ptr<device::HostMemory> memory = std::move(*best);
      pool_.erase(best);
      return memory;
    }
  }
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<device::HostMemory> memory,
                          backend_->AllocateHost(RoundUpPowerOfTwo(bytes)));
  return std::shared_ptr<device::HostMemory>(std::move(memory));
}

void DeviceRuntime::ReturnStaging(std::vector<std::shared_ptr<device::HostMemory>> staging,
                                  bool reuse, std::shared_ptr<device::Event> done) {
  if (staging.empty()) return;
  absl::MutexLock lock(&staging_mutex_);
  if (!reuse || failed_.load()) {
    kept_.push_back({std::move(staging), std::move(done)});
    return;
  }
  for (auto& memory : staging) {
    if (pool_.size() < kPooled) pool_.push_back(std::move(memory));
  }
}

void DeviceRuntime::Fail(const absl::Status& reason) {
  failed_.store(true);
  // Streams first: a stream held at a gate must be able to drain before NCCL's abort, which may
  // wait for the work it enqueued.
  if (std::atomic<uint64_t>* words = words_.load()) {
    for (int gate = 0; gate < kGates; ++gate) words[gate].store(1, std::memory_order_release);
  }
  if (device::DeviceGroup* group = group_ptr_.load()) group->Abort(reason);
}

absl::Status DeviceRuntime::AsyncError() {
  device::DeviceGroup* group = group_ptr_.load();
  return group == nullptr ? absl::OkStatus() : group->AsyncError();
}

}  // namespace cohort
