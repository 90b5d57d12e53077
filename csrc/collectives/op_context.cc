#include "collectives/op_context.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "collectives/failure.h"
#include "collectives/transport/shm/lane.h"
#include "common/cpu.h"
#include "common/status.h"

namespace cohort {

OpContext::OpContext(Protocol& transport, const Topology& topology,
                     const Fingerprint& fingerprint, const OpArgs& args, absl::Duration timeout,
                     const EngineSettings& settings, std::vector<char>& scratch,
                     const std::atomic<bool>& aborted)
    : transport_(transport),
      topology_(topology),
      fingerprint_(fingerprint),
      args_(args),
      timeout_(timeout),
      settings_(settings),
      scratch_(scratch),
      aborted_(aborted),
      rank_(transport.rank()),
      size_(transport.size()) {
  if (args.op == OpType::kAllreduce || args.op == OpType::kReduce ||
      args.op == OpType::kReduceScatter) {
    reduce_ = GetReduceFn(args.dtype, args.reduce_op);
  }
}

size_t OpContext::segment_elements() const {
  return std::max<size_t>(1, settings_.segment_bytes / std::max<size_t>(1, args_.element_size()));
}

Request* OpContext::Send(int peer, uint32_t tag, const void* data, size_t bytes) {
  if (!requests_) requests_.emplace();
  Request& request = requests_->emplace_back();
  request.peer = peer;
  request.header.kind = static_cast<uint8_t>(FrameKind::kCollective);
  request.header.SetFingerprint(fingerprint_);
  request.header.tag = tag;
  request.data = static_cast<char*>(const_cast<void*>(data));
  request.length = bytes;
  transport_.PostSend(&request);
  return &request;
}

Request* OpContext::Recv(int peer, uint32_t tag, void* data, size_t bytes) {
  if (!requests_) requests_.emplace();
  Request& request = requests_->emplace_back();
  request.peer = peer;
  request.header.kind = static_cast<uint8_t>(FrameKind::kCollective);
  request.header.SetFingerprint(fingerprint_);
  request.header.tag = tag;
  request.data = static_cast<char*>(data);
  request.length = bytes;
  transport_.PostRecv(&request);
  return &request;
}

absl::Status OpContext::TimeoutError(const Request* request) const {
  std::string waiting =
      request == nullptr
          ? std::string("its peers")
          : absl::StrCat(request->direction == Request::Direction::kRecv ? "data from "
                                                                         : "sending to ",
                         "rank ", request->peer, " (", transport_.PeerHost(request->peer), ")");
  return Blamed(absl::DeadlineExceededError(
                    absl::StrCat("timed out waiting for ", waiting,
                                 ". That rank may be stuck, slow or in a different operation; "
                                 "raise COHORT_TIMEOUT if the work is legitimately slow")),
                request == nullptr ? -1 : request->peer);
}

int OpContext::WaitMillis() {
  return deadline().Expired() ? 1 : deadline().RemainingMillis(100);
}

bool OpContext::StillWaiting(int peer) {
  if (peer < 0 || peer == rank_ || transport_.StoppedLocalPeer() >= 0) return false;
  const int64_t now = NowNanos();
  if (probed_peer_ != peer) {
    probed_peer_ = peer;
    answers_before_ = transport_.ProbeAnswers(peer);
    alive_until_ = 0;
    if (!transport_.ProbePeer(peer)) return false;
    probe_until_ = now + 300'000'000;
    return true;
  }
  if (alive_until_ == 0 && transport_.ProbeAnswers(peer) > answers_before_) {
    alive_until_ = now + 1'000'000'000;
  }
  return now < (alive_until_ != 0 ? alive_until_ : probe_until_);
}

absl::Status OpContext::Blamed(absl::Status timeout, int peer) const {
  // The rank waited for may itself be waiting for a stopped one: a stopped process on this host
  // is the better answer (every rank that times out, or hears of it, names the same one).
  int stopped = transport_.StoppedLocalPeer();
  if (stopped >= 0) {
    // It leads: the rank waited for (perhaps another) comes after, as what this rank saw.
    absl::Status blamed = WithBlame(
        absl::Status(timeout.code(),
                     absl::StrCat("rank ", stopped, " (", transport_.PeerHost(stopped),
                                  ") is stopped: its process ", transport_.Record(stopped).pid,
                                  " is in state T (SIGSTOP or a debugger); resume it (SIGCONT) "
                                  "or end it. Rank ", rank_, " ", timeout.message())),
        stopped, Blame::kStopped);
    AddFailedPeer(blamed, stopped);
    return blamed;
  }
  if (peer < 0) return timeout;
  AddFailedPeer(timeout, peer);
  return WithBlame(std::move(timeout), peer, Blame::kTimeout);
}

const Deadline& OpContext::deadline() {
  if (!deadline_set_) {
    deadline_ = Deadline::In(timeout_);
    deadline_set_ = true;
  }
  return deadline_;
}

int OpContext::SpinMicros() const {
  return settings_.spin_microseconds >= 0 ? settings_.spin_microseconds
                                          : transport_.PreferredSpinMicros();
}

absl::Status OpContext::LaneWait(uint32_t stage) {
  shm::Lane& lane = *transport_.MappedWindow();
  if (lane.Reached(stage)) return absl::OkStatus();
  // Poll while the peers are likely to be a moment away: the whole spin budget when every rank
  // has a core, else a few rounds. A rank that has not arrived and last ran on this very CPU
  // cannot arrive while we poll (ranks outnumber cores, or the scheduler put two on one core):
  // hand the CPU to it at once, round after round, for up to a millisecond. Otherwise look
  // without pausing first (the peer is usually a few hundred nanoseconds away; a pause costs
  // over a hundred cycles on recent cores), then with pauses. A few looks come before the CPU
  // check, which costs more than a look and is rarely needed.
  for (int poll = 0; poll < 32; ++poll) {
    if (lane.Reached(stage)) return absl::OkStatus();
  }
  bool here = lane.LaggardSharesCpu(stage);
  if (!here) {
    for (int poll = 0; poll < 224; ++poll) {
      if (lane.Reached(stage)) return absl::OkStatus();
    }
  }
  const int spin = SpinMicros();
  int64_t spin_until = 0;
  int64_t yield_until = 0;
  for (uint32_t round = 0;; ++round) {
    if (!here) {
      for (int poll = 0; poll < 64; ++poll) {
        if (lane.Reached(stage)) return absl::OkStatus();
        CpuRelax();
      }
    }
    if (round == 0) {
      const int64_t now = NowNanos();
      spin_until = now + int64_t{spin} * 1000;
      yield_until = now + 1'000'000;
    }
    if (aborted_.load(std::memory_order_relaxed)) {
      return absl::CancelledError("the communicator was aborted");
    }
    if (lane.Reached(stage)) return absl::OkStatus();
    here = lane.LaggardSharesCpu(stage);
    if (here ? NowNanos() >= yield_until : spin == 0 ? round >= 8 : NowNanos() >= spin_until) {
      break;
    }
    if (here || spin == 0 || (round & 31) == 31) sched_yield();
  }
  while (!lane.Reached(stage)) {
    if (aborted_.load(std::memory_order_relaxed)) {
      return absl::CancelledError("the communicator was aborted");
    }
    COHORT_RETURN_IF_ERROR(transport_.CheckPeers());
    if (lane.Reached(stage)) break;
    if (deadline().Expired() && !StillWaiting(lane.Laggard(stage))) {
      int laggard = lane.Laggard(stage);
      return Blamed(absl::DeadlineExceededError(absl::StrCat(
                        "timed out waiting for rank ", laggard, " (", transport_.PeerHost(laggard),
                        ") to join through shared memory. That rank may be stuck, slow or in a "
                        "different operation; raise COHORT_TIMEOUT if the work is legitimately "
                        "slow")),
                    laggard);
    }
    lane.Sleep(stage, std::max(1, std::min(5, deadline().RemainingMillis(5))));
  }
  return absl::OkStatus();
}

absl::Status OpContext::Wait(Request* request) {
  if (request == nullptr || request->complete) return absl::OkStatus();
  int spin = SpinMicros();
  int64_t spin_until = NowNanos() + int64_t{spin} * 1000;
  while (!request->complete) {
    if (aborted_.load(std::memory_order_relaxed)) {
      return absl::CancelledError("the communicator was aborted");
    }
    // Polling never yields the core: the budget is non-zero only when every rank on this host
    // has a core of its own, and a sched_yield with any other runnable thread on this core (a
    // data loader, a compiler) hands it that thread's whole slice: an 8 B allreduce over TCP
    // took 1.3 ms instead of 25 us next to a niced build.
    bool spinning = NowNanos() < spin_until;
    absl::Status status = transport_.Progress(spinning ? 0 : WaitMillis());
    if (!status.ok()) return status;
    if (!request->complete && deadline().Expired() && !StillWaiting(request->peer)) {
      return TimeoutError(request);
    }
  }
  return absl::OkStatus();
}

Window* OpContext::window(int peer) const {
  return settings_.windows ? transport_.WindowTo(peer) : nullptr;
}

namespace {

// A RemoteBuffer as one fixed-size frame (UCX's packed keys are a few hundred bytes).
struct ExposedBuffer {
  uint64_t address;
  uint64_t bytes;
  uint32_t key_bytes;
  char key[492];
};
static_assert(sizeof(ExposedBuffer) == 512);

}  // namespace

absl::Status OpContext::Expose(Window& window, int peer, uint32_t tag, const void* base,
                               size_t bytes) {
  COHORT_ASSIGN_OR_RETURN(std::shared_ptr<const Registration> registration,
                          window.Register(base, bytes, MemoryKind::kHost));
  if (registration->key.size() > sizeof(ExposedBuffer::key)) {
    return absl::InternalError(absl::StrCat("a window's remote key has ", registration->key.size(),
                                            " bytes; at most ", sizeof(ExposedBuffer::key),
                                            " fit its frame"));
  }
  registrations_.push_back(registration);
  if (!requests_) requests_.emplace();
  // Kept with the requests: the frame's buffer must outlive the send.
  Request& request = requests_->emplace_back();
  frames_.push_back(std::make_unique<char[]>(sizeof(ExposedBuffer)));
  auto* frame = reinterpret_cast<ExposedBuffer*>(frames_.back().get());
  frame->address = reinterpret_cast<uint64_t>(base);
  frame->bytes = bytes;
  frame->key_bytes = static_cast<uint32_t>(registration->key.size());
  std::memcpy(frame->key, registration->key.data(), registration->key.size());
  request.peer = peer;
  request.header.kind = static_cast<uint8_t>(FrameKind::kCollective);
  request.header.SetFingerprint(fingerprint_);
  request.header.tag = tag;
  request.data = reinterpret_cast<char*>(frame);
  request.length = sizeof(ExposedBuffer);
  transport_.PostSend(&request);
  return absl::OkStatus();
}

OpContext::PendingLearn OpContext::PostLearn(int peer, uint32_t tag) {
  PendingLearn pending;
  pending.frame = std::make_unique<char[]>(sizeof(ExposedBuffer));
  pending.request = Recv(peer, tag, pending.frame.get(), sizeof(ExposedBuffer));
  return pending;
}

absl::StatusOr<RemoteBuffer> OpContext::Learned(const PendingLearn& pending) const {
  ExposedBuffer frame;
  std::memcpy(&frame, pending.frame.get(), sizeof(frame));
  if (frame.key_bytes > sizeof(frame.key)) {
    return absl::DataLossError(absl::StrCat("rank ", pending.request->peer,
                                            " described its window with a ", frame.key_bytes,
                                            "-byte key; the frame holds ", sizeof(frame.key)));
  }
  RemoteBuffer remote;
  remote.address = frame.address;
  remote.bytes = frame.bytes;
  remote.key.assign(frame.key, frame.key_bytes);
  return remote;
}

absl::StatusOr<RemoteBuffer> OpContext::Learn(int peer, uint32_t tag) {
  PendingLearn pending = PostLearn(peer, tag);
  COHORT_RETURN_IF_ERROR(Wait(pending.request));
  return Learned(pending);
}

absl::Status OpContext::Put(Window& window, int peer, const RemoteBuffer& remote, size_t offset,
                            const void* local, size_t bytes) {
  if (!requests_) requests_.emplace();
  Request& request = requests_->emplace_back();
  request.peer = peer;
  request.direction = Request::Direction::kSend;
  request.length = bytes;
  ++window.puts_made;
  return window.Put(peer, remote, offset, local, bytes, &request);
}

absl::Status OpContext::TimeoutWaitingFor(int peer, const std::string& what) const {
  return Blamed(absl::DeadlineExceededError(absl::StrCat(
                    "timed out waiting for ", what, " from rank ", peer, " (",
                    transport_.PeerHost(peer),
                    "). That rank may be stuck, slow or in a different operation; raise "
                    "COHORT_TIMEOUT if the work is legitimately slow")),
                peer);
}

absl::Status OpContext::WaitSignal(Window& window, int slot, uint64_t value, int peer) {
  return WaitUntil([&]() -> absl::StatusOr<bool> { return window.SignalValue(slot) >= value; },
                   peer, "a signal through its window");
}

absl::Status OpContext::WaitUntil(absl::FunctionRef<absl::StatusOr<bool>()> ready, int peer,
                                  const char* what) {
  COHORT_ASSIGN_OR_RETURN(bool done, ready());
  if (done) return absl::OkStatus();
  int spin = SpinMicros();
  int64_t spin_until = NowNanos() + int64_t{spin} * 1000;
  while (true) {
    if (aborted_.load(std::memory_order_relaxed)) {
      return absl::CancelledError("the communicator was aborted");
    }
    bool spinning = NowNanos() < spin_until;  // without yielding, as Wait
    COHORT_RETURN_IF_ERROR(transport_.Progress(spinning ? 0 : WaitMillis()));
    COHORT_ASSIGN_OR_RETURN(done, ready());
    if (done) return absl::OkStatus();
    if (deadline().Expired() && !StillWaiting(peer)) return TimeoutWaitingFor(peer, what);
  }
}

absl::Status OpContext::WaitAll() {
  if (!requests_) return absl::OkStatus();
  for (Request& request : *requests_) {
    absl::Status status = Wait(&request);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status OpContext::ProgressOnce() {
  if (aborted_.load(std::memory_order_relaxed)) {
    return absl::CancelledError("the communicator was aborted");
  }
  COHORT_RETURN_IF_ERROR(transport_.Progress(std::min(1, deadline().RemainingMillis(1))));
  if (deadline().Expired()) return TimeoutError(nullptr);
  return absl::OkStatus();
}

char* OpContext::Scratch(size_t bytes) {
  size_t needed = bytes + 64;
  if (scratch_.size() < needed) scratch_.resize(needed);
  uintptr_t base = reinterpret_cast<uintptr_t>(scratch_.data());
  return reinterpret_cast<char*>((base + 63) & ~uintptr_t{63});
}

absl::Status OpContext::WaitDevice(absl::FunctionRef<absl::StatusOr<bool>()> ready,
                                   const char* what) {
  COHORT_ASSIGN_OR_RETURN(bool done, ready());
  if (done) return absl::OkStatus();
  const int64_t spin_until = NowNanos() + int64_t{std::max(SpinMicros(), 20)} * 1000;
  int64_t nap_nanos = 2000;
  while (true) {
    if (aborted_.load(std::memory_order_relaxed)) {
      return absl::CancelledError("the communicator was aborted");
    }
    COHORT_RETURN_IF_ERROR(transport_.Progress(0));
    if (device_poll_) device_poll_();
    COHORT_ASSIGN_OR_RETURN(done, ready());
    if (done) return absl::OkStatus();
    if (deadline().Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "timed out waiting for ", what,
          ": the device work ahead of it on the stream has not finished (a kernel of this "
          "rank's may be stuck, or its GPU busy); raise COHORT_TIMEOUT if the work is "
          "legitimately slow"));
    }
    if (NowNanos() < spin_until) {
      sched_yield();
    } else {
      struct timespec nap = {0, static_cast<long>(nap_nanos)};
      nanosleep(&nap, nullptr);
      nap_nanos = std::min<int64_t>(nap_nanos * 2, 100000);
    }
  }
}

absl::Status OpContext::RunNested(const OpArgs& args,
                                  absl::FunctionRef<absl::Status(OpContext&)> body) {
  OpContext nested(transport_, topology_, fingerprint_, args, timeout_, settings_, scratch_,
                   aborted_);
  if (deadline_set_) {
    nested.deadline_ = deadline_;
    nested.deadline_set_ = true;
  }
  COHORT_RETURN_IF_ERROR(body(nested));
  return nested.WaitAll();
}

void OpContext::FinishAverage(void* data, size_t elements) const {
  if (args_.reduce_op == ReduceOp::kAvg && elements > 0) {
    ScaleForAverage(data, args_.dtype, elements, size_);
  }
}

}  // namespace cohort
