#include "collectives/engine.h"

#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "collectives/failure.h"
#include "collectives/reduce.h"
#include "collectives/transport/shm/lane.h"
#include "common/logging.h"

namespace cohort {
namespace {

bool IsPointToPoint(OpType op) { return op == OpType::kSend || op == OpType::kRecv; }

// Collectives up to this size do not wake the progress thread when it is napping.
constexpr size_t kLazyStartBytes = 64 << 10;

size_t Sum(const std::vector<size_t>& values) {
  return std::accumulate(values.begin(), values.end(), size_t{0});
}

}  // namespace

Engine::Engine(std::unique_ptr<Protocol> transport, EngineConfig config)
    : transport_(std::move(transport)),
      config_(std::move(config)),
      rank_(transport_->rank()),
      size_(transport_->size()) {
  DeviceRuntimeOptions device;
  device.name = config_.name;
  device.rank = rank_;
  device.size = size_;
  device.timeout = config_.timeout;
  device.path = config_.device_path;
  device.label = absl::StrCat("communicator '", config_.name, "' ", Where());
  device.segment_bytes = config_.settings.segment_bytes;
  device_ = std::make_unique<DeviceRuntime>(config_.device_backend, config_.bootstrap,
                                            *config_.topology, std::move(device));
  config_.tuning.topology = config_.topology.get();
  config_.tuning.lane_bytes = LaneBytes();
  FlightRecorder::Identity identity;
  identity.communicator = config_.name;
  identity.rank = rank_;
  identity.size = size_;
  identity.host = transport_->PeerHost(rank_);
  identity.generation = config_.generation;
  identity.root_rank = transport_->ConnectionRank(rank_);
  recorder_ = std::make_unique<FlightRecorder>(config_.trace_buffer, std::move(identity),
                                               config_.trace_dir);
  config_.tuning.device = &device_->state();
}

size_t Engine::LaneBytes() const {
  shm::Lane* lane = transport_->MappedWindow();
  return lane != nullptr ? lane->capacity() : 0;
}

Engine::~Engine() { Shutdown(); }

void Engine::Start() {
  thread_ = std::thread([this] { ProgressThread(); });
}

std::string Engine::Where() const {
  return absl::StrCat("rank ", rank_, " (", transport_->PeerHost(rank_), ")");
}

const std::string& Engine::SelectName(const OpArgs& args) const {
  static const std::string none = "none";
  auto algorithm = SelectAlgorithm(args, config_.tuning, ForcedFor(args, ""));
  return algorithm.ok() ? (*algorithm)->name : none;
}

absl::Status Engine::Validate(const OpArgs& args) const {
  const char* name = OpTypeName(args.op);
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(name, " on ", Where(), ": ", what));
  };
  if (args.op == OpType::kAllreduce || args.op == OpType::kReduce ||
      args.op == OpType::kReduceScatter) {
    absl::Status supported = CheckReduceSupported(args.dtype, args.reduce_op);
    if (!supported.ok()) return bad(std::string(supported.message()));
  }
  if (args.op == OpType::kBroadcast || args.op == OpType::kReduce || args.op == OpType::kGather ||
      args.op == OpType::kScatter) {
    if (args.root < 0 || args.root >= size_) {
      return bad(absl::StrCat("root ", args.root, " is not a rank (world size ", size_, ")"));
    }
  }
  if (IsPointToPoint(args.op)) {
    bool any = args.op == OpType::kRecv && args.root == kAnySource;
    if (!any && (args.root < 0 || args.root >= size_)) {
      return bad(absl::StrCat("peer ", args.root, " is not a rank (world size ", size_, ")"));
    }
    if (args.root == rank_) return bad("sending to or receiving from oneself is not supported");
  }
  for (const auto* counts : {&args.counts, &args.recv_counts, &args.displacements,
                             &args.recv_displacements}) {
    if (!counts->empty() && counts->size() != static_cast<size_t>(size_)) {
      return bad(absl::StrCat("per-rank counts or offsets have ", counts->size(),
                              " entries; the world has ", size_, " ranks"));
    }
  }
  if (args.op == OpType::kAlltoall && args.counts.empty() != args.recv_counts.empty()) {
    return bad("give both send and receive splits, or neither");
  }
  return absl::OkStatus();
}

absl::StatusOr<const Algorithm*> Engine::Select(const OpArgs& args, const std::string& forced,
                                                Forcing forcing, double* predicted_seconds) {
  // The same call again (a training loop's): the tuner's last answer, without asking every
  // algorithm for its cost. Only calls described by their scalars are remembered.
  const bool plain = forced.empty() && args.memory == MemoryKind::kHost && args.counts.empty() &&
                     args.recv_counts.empty() && args.displacements.empty() &&
                     args.recv_displacements.empty();
  if (plain) {
    absl::MutexLock lock(&selection_mutex_);
    const Selection& last = last_selection_;
    if (last.algorithm != nullptr && last.op == args.op && last.dtype == args.dtype &&
        last.reduce_op == args.reduce_op && last.count == args.count && last.root == args.root) {
      *predicted_seconds = last.predicted_seconds;
      return last.algorithm;
    }
  }
  auto selected = SelectAlgorithm(args, config_.tuning, forced, predicted_seconds, forcing);
  if (plain && selected.ok()) {
    absl::MutexLock lock(&selection_mutex_);
    last_selection_ = {args.op,   args.dtype, args.reduce_op,     args.count,
                       args.root, *selected,  *predicted_seconds};
  }
  return selected;
}

absl::Status Engine::Prepare(Operation& operation, OpArgs args,
                             const std::string& algorithm_name, absl::Duration timeout) {
  operation.timeout = timeout == absl::ZeroDuration() ? config_.timeout : timeout;
  absl::Status valid = Validate(args);
  const Algorithm* algorithm = nullptr;
  if (valid.ok() && !IsPointToPoint(args.op)) {
    const bool per_call = !algorithm_name.empty();
    const std::string& forced = ForcedFor(args, algorithm_name);
    valid = ValidateAlgorithmName(forced);
    if (valid.ok()) {
      auto selected = Select(args, forced, per_call ? Forcing::kCall : Forcing::kCommunicator,
                             &operation.predicted_seconds);
      if (selected.ok()) {
        algorithm = *selected;
      } else {
        valid = absl::Status(selected.status().code(),
                             absl::StrCat(OpTypeName(args.op), " on ", Where(), ": ",
                                          selected.status().message()));
      }
    }
  }
  Fingerprint& fingerprint = operation.fingerprint;
  fingerprint.op = args.op;
  fingerprint.dtype = args.dtype;
  fingerprint.reduce_op = args.reduce_op;
  fingerprint.root = (args.op == OpType::kBroadcast || args.op == OpType::kReduce ||
                      args.op == OpType::kGather || args.op == OpType::kScatter)
                         ? args.root
                         : -1;
  switch (args.op) {
    case OpType::kAllgather:
    case OpType::kReduceScatter:
    case OpType::kGather:
    case OpType::kScatter:
      fingerprint.count = args.counts.empty() ? args.count * size_ : Sum(args.counts);
      break;
    case OpType::kAlltoall:
      fingerprint.count = args.counts.empty() ? args.count : 0;  // splits differ per rank
      break;
    case OpType::kBarrier:
      fingerprint.count = 0;
      break;
    default:
      fingerprint.count = args.count;
  }
  operation.algorithm = algorithm;
  operation.args = std::move(args);
  return valid;
}

absl::Status Engine::Failed(OpType op, uint64_t sequence, absl::Status status) const {
  FailureDetails details;
  details.op = OpTypeName(op);
  details.sequence = sequence;
  details.ranks.push_back(rank_);
  // The rank a failure blames (a lost, stopped or removed peer) comes first among the peers.
  std::vector<int> peers = FailedPeers(status);
  FailureBlame blame = BlameOf(status);
  if (blame.rank >= 0) peers.insert(peers.begin(), blame.rank);
  for (int peer : peers) {
    if (std::find(details.ranks.begin(), details.ranks.end(), peer) != details.ranks.end()) {
      continue;
    }
    if (peer != rank_ && peer >= 0 && peer < size_) details.ranks.push_back(peer);
  }
  for (int rank : details.ranks) details.hosts.push_back(transport_->PeerHost(rank));
  SetFailureDetails(status, details);
  return status;
}

absl::Status Engine::RefusalLocked(const Fingerprint& fingerprint) const {
  if (!broken_.ok()) {
    return Failed(fingerprint.op, fingerprint.sequence,
                  WithPayloadsOf(absl::StatusCode::kFailedPrecondition,
                                 absl::StrCat("this communicator failed earlier and cannot run ",
                                              fingerprint.Describe(), ": ", broken_.message(),
                                              ". Create a new communicator to continue"),
                                 broken_));
  }
  if (shut_down_) return absl::FailedPreconditionError("the communicator has been destroyed");
  return absl::OkStatus();
}

std::shared_ptr<Work> Engine::Submit(OpArgs args, const std::string& algorithm_name,
                                     absl::Duration timeout) {
  if (args.memory != MemoryKind::kHost) return SubmitDevice(std::move(args), algorithm_name, timeout);
  auto operation = std::make_shared<Operation>();
  absl::Status valid = Prepare(*operation, std::move(args), algorithm_name, timeout);
  Fingerprint& fingerprint = operation->fingerprint;
  std::shared_ptr<Work> work;
  {
    absl::MutexLock lock(&queue_mutex_);
    uint64_t sequence = 0;
    if (!IsPointToPoint(operation->args.op)) sequence = next_sequence_++;
    fingerprint.sequence = sequence;
    work = std::make_shared<Work>(shared_from_this(), operation->args.op, sequence);
    if (operation->algorithm != nullptr) work->set_algorithm(operation->algorithm->name);
    operation->work = work;
    operation->trace_id = recorder_->Queued(
        fingerprint, IsPointToPoint(operation->args.op) ? operation->args.root : -1,
        operation->algorithm != nullptr ? &operation->algorithm->name : nullptr);
    // A bad argument fails this call only; the communicator stays usable.
    if (valid.ok()) valid = RefusalLocked(fingerprint);
    if (valid.ok()) {
      queue_.push_back(operation);
      queued_.fetch_add(1, std::memory_order_relaxed);
      // Waking the progress thread costs a system call and a core. A small collective is
      // usually waited for at once and then runs on the waiting thread; while the progress
      // thread naps in short slices it picks up the rest within a millisecond anyway.
      bool small = OpBytes(operation->args, size_) <= kLazyStartBytes;
      if (!(small && napping_)) KickLocked();
    }
  }
  if (!valid.ok()) {
    recorder_->Finished(operation->trace_id, valid, 0);
    work->Complete(valid);
    return work;
  }
  if (in_flight_count_.load(std::memory_order_relaxed) > 0) transport_->Wake();
  return work;
}

std::shared_ptr<Work> Engine::RunNow(OpArgs args, const std::string& algorithm_name,
                                     absl::Duration timeout) {
  // Only a collective, and only when this thread can take the engine with nothing queued or in
  // flight ahead of it: then running it here keeps the issue order. Otherwise queue and wait.
  auto submit_and_wait = [&](OpArgs queued) {
    std::shared_ptr<Work> work = Submit(std::move(queued), algorithm_name, timeout);
    work->Wait().IgnoreError();
    return work;
  };
  if (IsPointToPoint(args.op) || args.memory != MemoryKind::kHost || !executing_.TryLock()) {
    return submit_and_wait(std::move(args));
  }
  // A repeated call (a training loop's, a benchmark's) reuses the operation prepared for the
  // last one (its validation, algorithm and fingerprint); only the buffers change.
  Operation& operation = express_;
  const bool plain = algorithm_name.empty() && args.counts.empty() && args.recv_counts.empty() &&
                     args.displacements.empty() && args.recv_displacements.empty();
  const uint64_t generation = tuning_generation_.load(std::memory_order_acquire);
  absl::Status status;
  if (plain && express_ready_ && express_generation_ == generation && timeout == express_timeout_ &&
      args.op == operation.args.op && args.dtype == operation.args.dtype &&
      args.reduce_op == operation.args.reduce_op && args.count == operation.args.count &&
      args.root == operation.args.root) {
    operation.args.input = args.input;
    operation.args.output = args.output;
  } else {
    operation = Operation();
    status = Prepare(operation, std::move(args), algorithm_name, timeout);
    express_ready_ = plain && status.ok();
    express_timeout_ = timeout;
    express_generation_ = generation;
  }
  bool queued = false;
  {
    absl::MutexLock lock(&queue_mutex_);
    queued = !queue_.empty() || !in_flight_.empty();
    if (!queued) {
      operation.fingerprint.sequence = next_sequence_++;
      if (status.ok()) status = RefusalLocked(operation.fingerprint);
    }
  }
  if (queued) {
    OpArgs queued_args = operation.args;
    executing_.Unlock();
    AfterRelease();
    return submit_and_wait(std::move(queued_args));
  }
  operation.trace_id = recorder_->StartedNow(
      operation.fingerprint, -1, operation.algorithm != nullptr ? &operation.algorithm->name : nullptr);
  if (status.ok()) {
    status = RunCollectiveLocked(operation);
  } else {
    recorder_->Finished(operation.trace_id, status, 0);
  }
  // The finished Work of the last call, when its caller let go of it, serves again.
  std::shared_ptr<Work> work;
  std::string_view algorithm =
      operation.algorithm != nullptr ? std::string_view(operation.algorithm->name) : "";
  if (finished_work_ != nullptr && finished_work_.use_count() == 1) {
    work = finished_work_;
    work->Reuse(operation.args.op, operation.fingerprint.sequence, algorithm, std::move(status));
  } else {
    work = std::make_shared<Work>(nullptr, operation.args.op, operation.fingerprint.sequence);
    work->set_algorithm(algorithm);
    work->Complete(std::move(status));
    finished_work_ = work;
  }
  executing_.Unlock();
  AfterRelease();
  return work;
}

void Engine::Kick() {
  absl::MutexLock lock(&queue_mutex_);
  KickLocked();
}

void Engine::KickLocked() {
  kick_ = true;
  wake_.Signal();
}

void Engine::Abort(const absl::Status& reason) {
  {
    absl::MutexLock lock(&queue_mutex_);
    if (abort_reason_.ok()) {
      abort_reason_ = reason.ok() ? absl::CancelledError("aborted by the user") : reason;
    }
    KickLocked();
  }
  aborted_.store(true);
  // The device group's kernels may be waiting for peers: they stop now, not when the progress
  // thread gets to it.
  device_->Fail(reason.ok() ? absl::CancelledError("aborted by the user") : reason);
  transport_->Wake();
}

std::shared_ptr<Engine::Operation> Engine::PopLocked() {
  absl::MutexLock lock(&queue_mutex_);
  if (queue_.empty()) return nullptr;
  std::shared_ptr<Operation> operation = std::move(queue_.front());
  queue_.pop_front();
  queued_.fetch_sub(1, std::memory_order_relaxed);
  return operation;
}

int Engine::LearnedSpin(int preferred) const {
  const int learned = spin_budget_us_.load(std::memory_order_relaxed);
  return learned < 0 ? preferred : std::min(learned, preferred);
}

int Engine::SpinMicros() const {
  if (config_.settings.spin_microseconds >= 0) return config_.settings.spin_microseconds;
  return LearnedSpin(transport_->PreferredSpinMicros());
}

void Engine::LearnSpin(int64_t waited_nanos) {
  if (config_.settings.spin_microseconds >= 0) return;  // set by the user: kept
  const int preferred = transport_->PreferredSpinMicros();  // once: it asks every channel
  const int current = LearnedSpin(preferred);
  const int next = waited_nanos <= int64_t{preferred} * 1000 ? std::min(preferred, current * 2 + 1)
                                                              : current / 2;
  spin_budget_us_.store(next, std::memory_order_relaxed);
}

bool Engine::HelpUntil(const Work* work) {
  if (!executing_.TryLock()) return false;
  RunLocked(work);
  executing_.Unlock();
  AfterRelease();
  return true;
}

void Engine::AfterRelease() {
  // Nothing left: nothing to kick. (A submission racing with this check kicks for itself, or is
  // small and found by the napping progress thread within a millisecond.)
  if (queued_.load(std::memory_order_relaxed) == 0 &&
      in_flight_count_.load(std::memory_order_relaxed) == 0 &&
      device_pending_count_.load(std::memory_order_relaxed) == 0) {
    return;
  }
  absl::MutexLock lock(&queue_mutex_);
  // Transfers in flight or small operations queued while the progress thread naps in short
  // slices: it finds them within a millisecond, and the caller usually waits for them next (a
  // send and a receive posted together, the receive waited for after the send) and then runs
  // them itself. Waking it costs a system call, and a core that the caller's peer may need.
  // Device steps are polled: they always wake it.
  if (device_pending_count_.load() > 0 ||
      (!napping_ && (!queue_.empty() || in_flight_count_.load() > 0))) {
    KickLocked();
  }
}

void Engine::ProgressThread() {
  pthread_setname_np(pthread_self(), "cohort-progress");
  int idle_naps = 0;
  while (true) {
    {
      absl::MutexLock lock(&queue_mutex_);
      // A condition variable, not Mutex::Await: a thread awaiting a condition on the queue's
      // mutex makes every unlock of it evaluate that condition (the submit path's cost).
      if (napping_) {
        if (!kick_ && !stop_) wake_.WaitWithTimeout(&queue_mutex_, absl::Milliseconds(1));
      } else {
        while (!kick_ && !stop_) wake_.Wait(&queue_mutex_);
      }
      if (stop_) return;
      bool work = kick_ || !queue_.empty() || in_flight_count_.load() > 0 ||
                  device_pending_count_.load() > 0;
      kick_ = false;
      if (!work) {
        // After a second without work, sleep until kicked: every submission kicks then.
        if (++idle_naps > 1000) napping_ = false;
        continue;
      }
      idle_naps = 0;
      napping_ = true;
    }
    // Whoever holds the engine now will kick us again if work remains when it lets go.
    if (!executing_.TryLock()) continue;
    RunLocked(nullptr);
    executing_.Unlock();
    AfterRelease();
  }
}

void Engine::RunLocked(const Work* until) {
  // A caller waiting for its transfer polls first, for the transport's spin budget (a peer on
  // this host, or behind RDMA, usually answers within it), then sleeps; the progress thread
  // (no caller) sleeps at once.
  int64_t spin_until = 0;
  int64_t waiting_since = 0;
  while (true) {
    if (until != nullptr && until->IsCompleted()) {
      if (waiting_since != 0) LearnSpin(NowNanos() - waiting_since);
      return;
    }
    if (aborted_.load()) {
      absl::Status reason;
      {
        absl::MutexLock lock(&queue_mutex_);
        reason = abort_reason_;
      }
      FailureBlame blame = BlameOf(reason);
      BreakLocked(WithBlame(absl::CancelledError(absl::StrCat("communicator aborted on ", Where(),
                                                              ": ", reason.message())),
                            blame.rank, blame.blame));
    }
    std::shared_ptr<Operation> operation = PopLocked();
    if (operation != nullptr) {
      ExecuteLocked(std::move(operation));
      CompleteFinishedTransfersLocked();
      continue;
    }
    if (in_flight_.empty() && device_pending_.empty()) return;
    {
      absl::MutexLock lock(&queue_mutex_);
      if (stop_) return;
    }
    // Only point-to-point transfers and device steps remain: drive them until something
    // happens (device work completes without waking a descriptor: polled).
    const bool device = !device_pending_.empty();
    int timeout_ms = device ? 0 : until != nullptr ? 1 : 50;
    if (until != nullptr && !device) {
      const int64_t now = NowNanos();
      if (spin_until == 0) {
        waiting_since = now;
        spin_until = now + int64_t{SpinMicros()} * 1000;
      }
      if (now < spin_until) timeout_ms = 0;
    }
    absl::Status status = transport_->Progress(timeout_ms);
    if (!status.ok()) {
      BreakLocked(status);
    }
    CompleteFinishedTransfersLocked();
    if (device && !PollDeviceLocked()) {
      // Nothing completed: nap a little longer each time (2 us to 100 us).
      device_nap_nanos_ = std::clamp<int64_t>(device_nap_nanos_ * 2, 2000, 100000);
      struct timespec nap = {0, static_cast<long>(device_nap_nanos_)};
      nanosleep(&nap, nullptr);
    } else {
      device_nap_nanos_ = 0;
    }
    ExpireTransfersLocked();
  }
}

void Engine::ExpireTransfersLocked() {
  for (size_t index = 0; index < in_flight_.size(); ++index) {
    Operation& operation = *in_flight_[index];
    if (operation.request.complete || !operation.deadline.Expired()) continue;
    const OpArgs& args = operation.args;
    const bool send = args.op == OpType::kSend;
    const int peer = operation.request.peer;
    std::string other = peer == kAnySource
                            ? std::string("any rank")
                            : absl::StrCat("rank ", peer, " (", transport_->PeerHost(peer), ")");
    absl::Status failure = absl::DeadlineExceededError(absl::StrCat(
        OpTypeName(args.op), " of ", operation.request.length, " bytes (tag ", args.tag, ") ",
        send ? "to " : "from ", other, " on ", Where(), " timed out after ",
        absl::FormatDuration(operation.timeout), ": ", send ? "the receiver" : "the sender",
        " did not take part. That rank may be stuck, slow or blocked in a call of its own (two "
        "ranks that both send first with blocking calls wait for each other); post the "
        "receive before the send, or raise COHORT_TIMEOUT if the work is legitimately slow"));
    if (peer != kAnySource) AddFailedPeer(failure, peer);
    failure = Failed(args.op, 0, std::move(failure));
    std::shared_ptr<Operation> expired = std::move(in_flight_[index]);
    in_flight_[index] = std::move(in_flight_.back());
    in_flight_.pop_back();
    in_flight_count_.fetch_sub(1);
    // The connection to that peer may be mid-frame: the communicator cannot go on. Break it
    // while the expired transfer's request is alive (the transport still points to it), and
    // let the transport forget the transfers first: finishing a half-sent frame to a peer that
    // does not read (the reason for the timeout) would only hold the caller up to the abort's
    // own deadline. Peers learn of the failure from the abort, or the close.
    transport_->DropRequests();
    BreakLocked(failure, expired.get());
    expired->work->Complete(failure);
    return;
  }
}

void Engine::CompleteFinishedTransfersLocked() {
  for (size_t index = 0; index < in_flight_.size();) {
    Operation& operation = *in_flight_[index];
    if (operation.request.complete) {
      const int peer = operation.request.peer;
      recorder_->Finished(operation.trace_id, absl::OkStatus(),
                          peer >= 0 && peer != rank_
                              ? uint8_t(1u << static_cast<int>(transport_->ChannelOf(peer)))
                              : 0);
      operation.work->set_source_rank(operation.request.peer);
      std::shared_ptr<Operation> done = std::move(in_flight_[index]);
      in_flight_[index] = std::move(in_flight_.back());
      in_flight_.pop_back();
      in_flight_count_.fetch_sub(1);
      if (done->plan != nullptr && done->args.op == OpType::kRecv) {
        AwaitDeviceLocked(std::move(done));  // the data go on to the device
      } else {
        if (done->plan != nullptr) done->plan->MarkFinished();  // a send's staging is free
        done->work->Complete(absl::OkStatus());
      }
    } else {
      ++index;
    }
  }
}

void Engine::ExecuteLocked(std::shared_ptr<Operation> owner) {
  Operation& operation = *owner;
  const OpArgs& args = operation.args;
  recorder_->Started(operation.trace_id);
  if (!IsPointToPoint(args.op)) {
    if (operation.plan != nullptr) {
      ExecuteDeviceLocked(std::move(owner));
      return;
    }
    operation.work->Complete(RunCollectiveLocked(operation));
    return;
  }
  if (aborted_.load()) {
    absl::Status aborted =
        Failed(args.op, 0, absl::CancelledError("the communicator was aborted"));
    recorder_->Finished(operation.trace_id, aborted, 0);
    operation.work->Complete(aborted);
    return;
  }
  if (broken_flag_.load(std::memory_order_acquire)) {
    absl::Status refused;
    {
      absl::MutexLock lock(&queue_mutex_);
      refused = Failed(
          args.op, 0,
          WithPayloadsOf(absl::StatusCode::kFailedPrecondition,
                         absl::StrCat("this communicator failed earlier: ", broken_.message()),
                         broken_));
    }
    recorder_->Finished(operation.trace_id, refused, 0);
    operation.work->Complete(refused);
    return;
  }
  Request& request = operation.request;
  request.peer = args.root;
  request.header.kind = static_cast<uint8_t>(FrameKind::kPointToPoint);
  request.header.tag = args.tag;
  request.length = args.count * args.element_size();
  if (args.op == OpType::kSend) {
    request.data = static_cast<char*>(const_cast<void*>(args.input));
    if (operation.plan != nullptr) {
      absl::Status staged = AwaitDeviceSendLocked(operation);
      if (!staged.ok()) {
        recorder_->Finished(operation.trace_id, staged, 0);
        operation.work->Complete(staged);
        return;
      }
    }
    transport_->PostSend(&request);
  } else {
    request.data = static_cast<char*>(args.output);
    transport_->PostRecv(&request);
  }
  operation.deadline = Deadline::In(operation.timeout);
  in_flight_.push_back(std::move(owner));
  in_flight_count_.fetch_add(1);
  CompleteFinishedTransfersLocked();
}

absl::Status Engine::RunCollectiveLocked(const Operation& operation) {
  (void)transport_->TakeKindsUsed();  // what this operation uses, from here on
  absl::Status status = RunCollectiveBodyLocked(operation);
  recorder_->Finished(operation.trace_id, status, transport_->TakeKindsUsed());
  return status;
}

absl::Status Engine::RunCollectiveBodyLocked(const Operation& operation) {
  const OpArgs& args = operation.args;
  const uint64_t sequence = operation.fingerprint.sequence;
  if (aborted_.load()) {
    return Failed(args.op, sequence, absl::CancelledError("the communicator was aborted"));
  }
  if (broken_flag_.load(std::memory_order_acquire)) {
    absl::MutexLock lock(&queue_mutex_);
    return Failed(
        args.op, sequence,
        WithPayloadsOf(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat("this communicator failed earlier: ", broken_.message()),
                       broken_));
  }
  bool nothing_to_move = operation.fingerprint.count == 0 && args.op != OpType::kBarrier &&
                         !(args.op == OpType::kAlltoall && !args.counts.empty());
  if (nothing_to_move) return absl::OkStatus();
  absl::Status status = transport_->BeginCollective(operation.fingerprint);
  if (status.ok()) {
    OpContext context(*transport_, *config_.topology, operation.fingerprint, args,
                      operation.timeout,
                      config_.settings, scratch_, aborted_);
    context.set_device_plan(operation.plan.get());
    if (operation.plan != nullptr) {
      context.set_device_poll([this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        CompleteFinishedTransfersLocked();
      });
    }
    int64_t started = config_.debug_tuning ? NowNanos() : 0;
    status = operation.algorithm->run(context);
    if (config_.debug_tuning) {
      // Asked for explicitly, so printed whatever COHORT_LOG_LEVEL says.
      logging::Message(logging::Level::INFO, __FILE__, __LINE__).stream()
          << "TUNING " << operation.fingerprint.Describe() << " #"
          << operation.fingerprint.sequence << ": " << operation.algorithm->name
          << " predicted " << operation.predicted_seconds * 1e6 << " us, measured "
          << (NowNanos() - started) / 1e3 << " us";
    }
    if (!status.ok()) {
      // Break while the context (which owns the requests the transport still points to) and
      // the operation's buffers are alive: half-written frames are finished before the abort.
      absl::Status failure = Describe(operation, status);
      BreakLocked(failure, &operation);
      return failure;
    }
    return absl::OkStatus();
  }
  absl::Status failure = Describe(operation, status);
  BreakLocked(failure, &operation);
  return failure;
}

absl::Status Engine::Describe(const Operation& operation, const absl::Status& status) const {
  std::string detail(status.message());
  if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    detail = absl::StrCat("timed out after ", absl::FormatDuration(operation.timeout), ": ", detail);
  }
  return Failed(operation.args.op, operation.fingerprint.sequence,
                WithPayloadsOf(status.code(),
                               absl::StrCat(operation.fingerprint.Describe(), " #",
                                            operation.fingerprint.sequence, " on ", Where(),
                                            " failed: ", detail),
                               status));
}

void Engine::BreakLocked(const absl::Status& status, const Operation* current) {
  std::deque<std::shared_ptr<Operation>> queued;
  bool first = false;
  {
    absl::MutexLock lock(&queue_mutex_);
    first = broken_.ok();
    if (first) broken_ = status;
    broken_flag_.store(true, std::memory_order_release);
    queued.swap(queue_);
    queued_.store(0, std::memory_order_relaxed);
  }
  if (current != nullptr) recorder_->Finished(current->trace_id, status, transport_->TakeKindsUsed());
  if (first) {
    COHORT_LOG(ERROR) << status.message();
    // Peers learn who is to blame from the abort frame's header, not only from its words.
    FailureBlame blame = BlameOf(status);
    transport_->NoteFailure(blame.rank, blame.blame);
    transport_->AbortPeers(std::string(status.message()), blame);
  } else {
    transport_->DropRequests();  // told them already; forget what the failed call posted
  }
  // WithPayloadsOf keeps the failure's details and whom it blames.
  absl::Status pending = WithPayloadsOf(
      status.code(), absl::StrCat("not run because the communicator failed: ", status.message()),
      status);
  auto fail = [&](const std::shared_ptr<Operation>& operation) {
    absl::Status failed = Failed(operation->args.op, operation->fingerprint.sequence, pending);
    recorder_->Finished(operation->trace_id, failed, 0);
    operation->work->Complete(failed);
  };
  for (const auto& operation : queued) fail(operation);
  for (const auto& operation : in_flight_) fail(operation);
  in_flight_.clear();
  in_flight_count_.store(0);
  FailDeviceLocked(pending);
  if (first && recorder_->enabled() && !config_.trace_dir.empty()) {
    auto path = recorder_->Dump(
        status.code() == absl::StatusCode::kDeadlineExceeded ? "timeout" : "error",
        std::string(status.message()), "", FailedRanksLocked());
    if (path.ok()) {
      COHORT_LOG(WARN) << "flight recorder of communicator \"" << config_.name << "\" dumped to "
                       << *path;
    } else {
      COHORT_LOG(WARN) << path.status().message();
    }
  }
}

void Engine::Revoke(const absl::Status& reason) {
  Abort(reason);
  {
    absl::MutexLock lock(&queue_mutex_);
    stop_ = true;
    wake_.Signal();
  }
  transport_->Wake();
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&executing_);
  FailureBlame blame = BlameOf(reason);
  BreakLocked(WithBlame(absl::CancelledError(absl::StrCat("communicator revoked on ", Where(),
                                                          ": ", reason.message())),
                        blame.rank, blame.blame));
}

absl::StatusOr<std::unique_ptr<Protocol>> Engine::ShrinkProtocol(
    const std::vector<int>& survivors, const std::string& prefix) {
  absl::MutexLock lock(&executing_);
  return Protocol::Shrink(*transport_, survivors, prefix);
}

void Engine::NoteRemoved(const std::vector<int>& ranks) {
  absl::MutexLock lock(&queue_mutex_);
  removed_.insert(removed_.end(), ranks.begin(), ranks.end());
}

std::vector<FailureBlame> Engine::FailedRanks() {
  std::vector<int> removed;
  {
    absl::MutexLock lock(&queue_mutex_);
    removed = removed_;
  }
  absl::MutexLock lock(&executing_);
  return FailedRanksLocked(removed);
}

std::vector<FlightRecorder::FailedRank> Engine::FailedRanksLocked() {
  std::vector<int> removed;
  {
    absl::MutexLock lock(&queue_mutex_);
    removed = removed_;
  }
  std::vector<FlightRecorder::FailedRank> failed;
  for (const FailureBlame& blame : FailedRanksLocked(removed)) {
    failed.push_back({blame.rank, BlameName(blame.blame)});
  }
  return failed;
}

std::vector<FailureBlame> Engine::FailedRanksLocked(const std::vector<int>& removed) {
  std::vector<FailureBlame> failed;
  for (int rank = 0; rank < size_; ++rank) {
    Blame blame = transport_->FailedBlame(rank);
    if (std::find(removed.begin(), removed.end(), rank) != removed.end()) blame = Blame::kRemoved;
    if (blame != Blame::kNone) failed.push_back({rank, blame});
  }
  return failed;
}

absl::StatusOr<std::string> Engine::DumpTrace(const std::string& reason,
                                              const std::string& directory) {
  if (!recorder_->enabled()) {
    return absl::FailedPreconditionError(
        "the flight recorder is off (COHORT_TRACE_BUFFER=0); set it to a number of operations");
  }
  std::string error;
  {
    absl::MutexLock lock(&queue_mutex_);
    error = std::string(broken_.message());
  }
  // The failed ranks when no operation holds the engine (a dump asked for while one waits must
  // not wait behind it).
  std::vector<FlightRecorder::FailedRank> failed;
  if (executing_.TryLock()) {
    failed = FailedRanksLocked();
    executing_.Unlock();
  }
  // Empty: the recorder's own folder (COHORT_TRACE_DIR), and where there is none, this one.
  const bool here = directory.empty() && config_.trace_dir.empty();
  return recorder_->Dump(reason, error, here ? std::string(".") : directory, failed);
}

void Engine::Shutdown() {
  {
    absl::MutexLock lock(&queue_mutex_);
    if (shut_down_) return;
    shut_down_ = true;
    stop_ = true;
    wake_.Signal();
  }
  transport_->Wake();
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&executing_);
  std::deque<std::shared_ptr<Operation>> queued;
  bool broken;
  {
    absl::MutexLock queue_lock(&queue_mutex_);
    queued.swap(queue_);
    queued_.store(0, std::memory_order_relaxed);
    broken = !broken_.ok();
  }
  absl::Status destroyed = absl::CancelledError(
      "the communicator was destroyed before this operation ran");
  auto fail = [&](const std::shared_ptr<Operation>& operation) {
    absl::Status failed = Failed(operation->args.op, operation->fingerprint.sequence, destroyed);
    recorder_->Finished(operation->trace_id, failed, 0);
    operation->work->Complete(failed);
  };
  for (const auto& operation : queued) fail(operation);
  for (const auto& operation : in_flight_) fail(operation);
  in_flight_.clear();
  in_flight_count_.store(0);
  for (auto& operation : device_pending_) operation->work->Complete(destroyed);
  device_pending_.clear();
  device_pending_count_.store(0);
  transport_->DropRequests();
  transport_->Close(/*clean=*/!broken, Deadline::In(absl::Seconds(broken ? 1 : 2)));
}

}  // namespace cohort
