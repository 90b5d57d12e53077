#include "collectives/transport/shm/channel.h"

#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort::shm {

absl::StatusOr<std::unique_ptr<ShmChannel>> ShmChannel::Create(const ChannelSetup& setup,
                                                               const std::vector<int>& peers,
                                                               std::vector<Fd>& sockets,
                                                               bool lane,
                                                               const ShmOptions& options) {
  std::unique_ptr<ShmChannel> channel(
      new ShmChannel(setup.rank, setup.size, setup.sink, options));
  channel->epoll_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!channel->epoll_.valid()) {
    return absl::InternalError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  }
  for (int rank : peers) {
    Peer& peer = channel->peers_[rank];
    peer.served = true;
    peer.fd = std::move(sockets[rank]);
    channel->served_.push_back(rank);
    COHORT_RETURN_IF_ERROR(SetNonBlocking(peer.fd.get(), true));
    epoll_event event = {};
    event.events = EPOLLRDHUP;  // the socket only reports the close; frames come by memory
    event.data.u32 = static_cast<uint32_t>(rank);
    if (epoll_ctl(channel->epoll_.get(), EPOLL_CTL_ADD, peer.fd.get(), &event) != 0) {
      return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(errno)));
    }
  }
  COHORT_RETURN_IF_ERROR(channel->SetUp(setup, lane));
  return channel;
}

ShmChannel::~ShmChannel() = default;

absl::Status ShmChannel::SetUp(const ChannelSetup& setup, bool lane) {
  const std::vector<PeerRecord>& records = *setup.records;
  const PeerRecord& self = records[rank_];
  // The ranks of this host that offer shared memory, ours included, in rank order: every one of
  // them computes the same group, so ring slots agree even where some pairs use another channel.
  std::vector<int> group;
  for (const PeerRecord& record : records) {
    if (record.host_id == self.host_id && !record.offer(ChannelKind::kSharedMemory).empty()) {
      group.push_back(record.rank);
    }
  }
  const int slots = static_cast<int>(group.size()) - 1;
  // The slot of `sender` among the inbound rings of `receiver`.
  auto slot = [&](int sender, int receiver) {
    int s = static_cast<int>(std::find(group.begin(), group.end(), sender) - group.begin());
    int r = static_cast<int>(std::find(group.begin(), group.end(), receiver) - group.begin());
    return s - (s > r ? 1 : 0);
  };
  std::string name = absl::StrCat("/cohort-", getpid(), "-", crypto::RandomHex(6));
  const size_t lane_bytes = lane ? Lane::BytesFor(options_.lane_bytes) : 0;
  COHORT_ASSIGN_OR_RETURN(segment_,
                          Segment::Create(name, slots, options_.ring_bytes, lane_bytes));
  // A cookie peers read from our memory to learn whether single-copy reads work here.
  static const uint64_t cookie = 0x636f686f7274ULL ^ static_cast<uint64_t>(getpid());
  Bootstrap& bootstrap = *setup.bootstrap;
  const std::string& prefix = setup.prefix;
  COHORT_RETURN_IF_ERROR(bootstrap.Set(
      absl::StrCat(prefix, "/shm/", rank_),
      absl::StrCat(name, " ", reinterpret_cast<uint64_t>(&cookie), " ", cookie)));
  peer_segments_.resize(size_);
  for (int rank : served_) {
    COHORT_ASSIGN_OR_RETURN(
        std::string text,
        bootstrap.Get(absl::StrCat(prefix, "/shm/", rank), setup.deadline.Remaining()));
    std::vector<std::string> parts = absl::StrSplit(text, ' ');
    uint64_t cookie_address = 0, cookie_value = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &cookie_address) ||
        !absl::SimpleAtoi(parts[2], &cookie_value)) {
      return absl::DataLossError(absl::StrCat("malformed shared-memory record of rank ", rank));
    }
    COHORT_ASSIGN_OR_RETURN(peer_segments_[rank],
                            Segment::Open(parts[0], slots, options_.ring_bytes, lane_bytes));
    Local& local = locals_[rank];
    local.pid = records[rank].pid;
    local.out = peer_segments_[rank].ring(slot(rank_, rank));
    local.in = segment_.ring(slot(rank, rank_));
    local.doorbell = &peer_segments_[rank].doorbell();
    uint64_t seen = 0;
    iovec mine = {&seen, sizeof(seen)};
    iovec theirs = {reinterpret_cast<void*>(cookie_address), sizeof(seen)};
    local.single_copy = process_vm_readv(local.pid, &mine, 1, &theirs, 1, 0) ==
                            static_cast<ssize_t>(sizeof(seen)) &&
                        seen == cookie_value;
    if (!local.single_copy) {
      COHORT_LOG(INFO) << "single-copy reads from rank " << rank << " are not permitted ("
                       << std::strerror(errno) << "); large messages go through the ring";
    }
    COHORT_RETURN_IF_ERROR(bootstrap.Add(absl::StrCat(prefix, "/shm/mapped/", rank), 1).status());
  }
  // Cross-memory access is allowed per direction (ptrace rules; Yama's scope 1 lets a parent
  // read its child, not the reverse). Single-copy frames and window puts are used between two
  // ranks only when each can reach the other, so that both ends of a pair agree on them.
  std::string reachable;
  for (int rank : served_) {
    if (locals_[rank].single_copy) absl::StrAppend(&reachable, reachable.empty() ? "" : ",", rank);
  }
  COHORT_RETURN_IF_ERROR(bootstrap.Set(absl::StrCat(prefix, "/shm/reach/", rank_), reachable));
  for (int rank : served_) {
    COHORT_ASSIGN_OR_RETURN(
        std::string theirs,
        bootstrap.Get(absl::StrCat(prefix, "/shm/reach/", rank), setup.deadline.Remaining()));
    bool reaches_us = false;
    for (absl::string_view item : absl::StrSplit(theirs, ',', absl::SkipEmpty())) {
      int peer = -1;
      reaches_us |= absl::SimpleAtoi(item, &peer) && peer == rank_;
    }
    locals_[rank].single_copy = locals_[rank].single_copy && reaches_us;
  }
  // Unlink as soon as every peer served here has mapped our segment: a crash leaves nothing.
  const std::string mapped_key = absl::StrCat(prefix, "/shm/mapped/", rank_);
  const int64_t mappers = static_cast<int64_t>(served_.size());
  while (mappers > 0) {
    COHORT_ASSIGN_OR_RETURN(int64_t mapped, bootstrap.Add(mapped_key, 0));
    if (mapped >= mappers) break;
    if (setup.deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", rank_, " timed out waiting for the ranks on its host to map its shared memory"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  segment_.Unlink();
  // Polling pays only when every rank on this host has a core to itself. (Decided once:
  // sysconf reads a sysfs file each time.)
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  preferred_spin_micros_ = static_cast<long>(served_.size()) + 1 <= cores ? 200 : 0;
  if (lane) {
    std::vector<char*> memory(size_);
    std::vector<Doorbell*> doorbells(size_);
    for (int rank = 0; rank < size_; ++rank) {
      const Segment& owner = rank == rank_ ? segment_ : peer_segments_[rank];
      memory[rank] = owner.lane();
      doorbells[rank] = &owner.doorbell();
    }
    lane_ = std::make_unique<Lane>(rank_, std::move(memory), std::move(doorbells),
                                   options_.lane_bytes);
  }
  COHORT_LOG(DEBUG) << "shared memory with ranks on this host: " << served_.size();
  return absl::OkStatus();
}

ssize_t ShmChannel::StreamRead(Peer& peer, void* buffer, size_t length) {
  Local& local = locals_[peer.rank];
  size_t got = local.in.Read(buffer, length);
  if (got == 0) {
    errno = EAGAIN;
    return -1;
  }
  Ring(*local.doorbell);  // room for a writer that may be waiting
  return static_cast<ssize_t>(got);
}

ssize_t ShmChannel::StreamWrite(Peer& peer, const iovec* iov, int count) {
  Local& local = locals_[peer.rank];
  size_t wrote = local.out.Write(iov, count);
  if (wrote == 0) {
    errno = EAGAIN;
    return -1;
  }
  Ring(*local.doorbell);  // data for a reader that may be asleep
  return static_cast<ssize_t>(wrote);
}

void ShmChannel::WaitWritable(Peer& peer, Deadline deadline) {
  (void)peer, (void)deadline;
  std::this_thread::yield();
}

void ShmChannel::Forget(Peer& peer) {
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, peer.fd.get(), nullptr);
}

bool ShmChannel::SendsRemote(const Peer& peer, const Request& request) const {
  return locals_[peer.rank].single_copy && options_.single_copy_bytes > 0 &&
         request.length >= options_.single_copy_bytes;
}

absl::Status ShmChannel::ReadRemote(Peer& peer, char* data, size_t length, uint64_t address,
                                    bool* done) {
  *done = false;
  const pid_t pid = locals_[peer.rank].pid;
  size_t copied = 0;
  while (copied < length) {
    iovec mine = {data + copied, length - copied};
    iovec theirs = {reinterpret_cast<void*>(address + copied), length - copied};
    ssize_t got = process_vm_readv(pid, &mine, 1, &theirs, 1, 0);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && errno == ESRCH) return Lost(peer, "its process has exited");
      if (got < 0 && errno == EFAULT) {
        // The sender is failing and has let go of its buffer; its abort frame, which names the
        // cause, is on its way. Wait for it a little before calling the peer lost.
        if (peer.fault_deadline.IsNever()) peer.fault_deadline = Deadline::In(absl::Seconds(1));
        return absl::OkStatus();
      }
      return absl::UnavailableError(absl::StrCat(
          "cannot read a message from rank ", peer.rank, " (process ", pid,
          ") in shared memory: ", got == 0 ? "nothing read" : std::strerror(errno),
          ". The process may have died; set COHORT_SHM_SINGLE_COPY_BYTES=0 if this persists"));
    }
    copied += static_cast<size_t>(got);
  }
  *done = true;
  return absl::OkStatus();
}

absl::Status ShmChannel::PollRings(bool* moved) {
  for (int rank : served_) {
    Peer& peer = peers_[rank];
    if (peer.closed) continue;
    if (!peer.fault_deadline.IsNever() && peer.fault_deadline.Expired()) {
      return Lost(peer, "a message it announced vanished from its memory");
    }
    if (!peer.sends.empty()) {
      size_t before = peer.sends.size();
      size_t front = peer.sends.front()->transferred;
      COHORT_RETURN_IF_ERROR(FlushSends(peer, /*once=*/false));
      *moved |= peer.sends.size() != before ||
                (!peer.sends.empty() && peer.sends.front()->transferred != front);
    }
    if (peer.state != ReadState::kStalled &&
        (locals_[rank].in.AvailableBytes() > 0 || peer.staged_end > peer.staged_begin)) {
      COHORT_RETURN_IF_ERROR(ReadPeer(peer));
      *moved = true;
    }
  }
  return absl::OkStatus();
}

absl::Status ShmChannel::CheckSockets() {
  epoll_event events[64];
  int ready = epoll_wait(epoll_.get(), events, 64, 0);
  if (ready < 0) {
    if (errno == EINTR) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("epoll_wait: ", std::strerror(errno)));
  }
  for (int i = 0; i < ready; ++i) {
    Peer& peer = peers_[events[i].data.u32];
    if (peer.closed) continue;
    // The socket only reports the close. Take what the peer left in the ring first (its goodbye
    // or abort), then judge the close.
    COHORT_RETURN_IF_ERROR(ReadPeer(peer));
    COHORT_RETURN_IF_ERROR(Lost(peer, "the peer closed the connection"));
  }
  return absl::OkStatus();
}

absl::Status ShmChannel::Poll(bool* moved) {
  COHORT_RETURN_IF_ERROR(PollRings(moved));
  // Closes are rare: the sockets are looked at every so often, not every time.
  if ((++polls_ & 255) == 0) return CheckSockets();
  return absl::OkStatus();
}

absl::Status ShmChannel::SleepOnMemory(int timeout_ms) {
  Doorbell& doorbell = segment_.doorbell();
  doorbell.sleeping.store(1, std::memory_order_seq_cst);
  uint32_t seen = doorbell.value.load(std::memory_order_seq_cst);
  bool moved = false;
  absl::Status status = PollRings(&moved);
  if (!status.ok()) {
    doorbell.sleeping.store(0);
    return status;
  }
  if (!moved) Sleep(doorbell, seen, std::min(timeout_ms < 0 ? 10 : timeout_ms, 10));
  doorbell.sleeping.store(0, std::memory_order_relaxed);
  COHORT_RETURN_IF_ERROR(PollRings(&moved));
  return CheckSockets();
}

void ShmChannel::Wake() {
  Doorbell& doorbell = segment_.doorbell();
  doorbell.value.fetch_add(1);
  Ring(doorbell);
}

void ShmChannel::Abort(const std::string& reason, Deadline deadline) {
  StreamChannel::Abort(reason, deadline);
  // Remote frames already announced stay readable until the peer has taken them (or a short
  // deadline), so it does not read freed memory. A peer that has died, or aborted itself, takes
  // nothing more: not waited for (the failing rank's own error waits on this).
  Deadline reads = Deadline::In(absl::Milliseconds(200)).Earlier(deadline);
  for (int rank : served_) {
    Peer& peer = peers_[rank];
    uint32_t looks = 0;
    while (!peer.awaiting_ack.empty() && !peer.closed && peer.aborted_in != control_epoch() + 1 &&
           !reads.Expired() &&
           peer.state != ReadState::kStalled) {
      if (locals_[rank].in.AvailableBytes() == 0 && peer.staged_end == peer.staged_begin) {
        if ((++looks & 63) == 0) (void)CheckSockets();  // notices a peer that died
        std::this_thread::yield();
        continue;
      }
      // Errors here (other peers' aborts) change nothing: this rank has failed already.
      (void)ReadPeer(peer);
    }
    peer.awaiting_ack.clear();
  }
}

absl::StatusOr<std::shared_ptr<const Registration>> ShmChannel::Register(const void* base,
                                                                         size_t bytes,
                                                                         MemoryKind kind) {
  if (kind != MemoryKind::kHost) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the shared-memory window serves host memory, not ", MemoryKindName(kind), " buffers"));
  }
  // Cross-memory writes reach any mapped address of the peer: nothing to register.
  auto registration = std::make_shared<Registration>();
  registration->base = reinterpret_cast<uintptr_t>(base);
  registration->bytes = bytes;
  registration->kind = kind;
  return registration;
}

absl::Status ShmChannel::Put(int rank, const RemoteBuffer& remote, size_t offset,
                             const void* local, size_t bytes, Request* request) {
  if (offset + bytes > remote.bytes) {
    return absl::InternalError(absl::StrCat("a put of ", bytes, " bytes at offset ", offset,
                                            " overruns rank ", rank, "'s window of ",
                                            remote.bytes, " bytes"));
  }
  Peer& peer = peers_[rank];
  const pid_t pid = locals_[rank].pid;
  size_t copied = 0;
  while (copied < bytes) {
    iovec mine = {const_cast<char*>(static_cast<const char*>(local)) + copied, bytes - copied};
    iovec theirs = {reinterpret_cast<void*>(remote.address + offset + copied), bytes - copied};
    ssize_t wrote = process_vm_writev(pid, &mine, 1, &theirs, 1, 0);
    if (wrote <= 0) {
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote < 0 && errno == ESRCH) return Lost(peer, "its process has exited");
      return absl::UnavailableError(absl::StrCat(
          "cannot write into the memory of rank ", rank, " (process ", pid, "): ",
          wrote == 0 ? "nothing written" : std::strerror(errno),
          ". Its process may be failing; set COHORT_SHM_SINGLE_COPY_BYTES=0 if this persists"));
    }
    copied += static_cast<size_t>(wrote);
  }
  if (request != nullptr) {
    request->transferred = bytes;
    request->complete = true;
  }
  return absl::OkStatus();
}

absl::Status ShmChannel::Signal(int rank, int slot) {
  if (peers_[rank].closed) return absl::OkStatus();  // the loss is reported already
  Doorbell& doorbell = *locals_[rank].doorbell;
  // The writes of earlier puts are complete (the system call returned); order them before it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  doorbell.signals[slot].fetch_add(1, std::memory_order_release);
  Ring(doorbell);
  return absl::OkStatus();
}

uint64_t ShmChannel::SignalValue(int slot) const {
  return segment_.doorbell().signals[slot].load(std::memory_order_acquire);
}

void ShmChannel::Close(bool clean, Deadline deadline) {
  if (clean) {
    SayGoodbye(deadline);
    return;
  }
  HalfCloseAndDrain(deadline);
}

}  // namespace cohort::shm
