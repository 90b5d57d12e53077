#include "collectives/transport/tcp/context.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <thread>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "collectives/transport/tcp/address.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort::tcp {
namespace {

constexpr size_t kStagingBytes = 64 << 10;
constexpr size_t kDirectReadMin = 4096;  // payload remainders at least this big skip staging
constexpr int kMaxIov = 64;
// Bytes handed to one sendmsg: small enough that reading the other direction is not starved.
constexpr size_t kMaxSendBytes = 1 << 20;

#pragma pack(push, 1)
struct Hello {
  uint32_t magic;
  uint32_t version;
  int32_t from;
  int32_t to;
  int32_t size;
  char proof[32];
};
struct HelloReply {
  uint32_t magic;
  uint32_t status;  // 0 accepted, 1 bad proof, 2 bad rank or size
};
#pragma pack(pop)

std::string Proof(const std::string& secret, const std::string& prefix, int from, int to) {
  return crypto::HmacSha256(secret, absl::StrCat("cohort-tcp|", prefix, "|", from, "|", to));
}

}  // namespace

TcpTransport::TcpTransport(int rank, int size, TcpOptions options)
    : rank_(rank), size_(size), options_(std::move(options)), hosts_(size), peers_(size) {}

TcpTransport::~TcpTransport() = default;

absl::StatusOr<std::unique_ptr<TcpTransport>> TcpTransport::Create(Bootstrap& bootstrap, int rank,
                                                                   int size,
                                                                   const TcpOptions& options) {
  std::unique_ptr<TcpTransport> transport(new TcpTransport(rank, size, options));
  COHORT_RETURN_IF_ERROR(transport->Connect(bootstrap));
  return transport;
}

std::string TcpTransport::Name(int rank) const {
  return absl::StrCat("rank ", rank, " (", hosts_[rank].empty() ? "?" : hosts_[rank], ")");
}

absl::Status TcpTransport::Connect(Bootstrap& bootstrap) {
  Deadline deadline = Deadline::In(options_.timeout);
  const std::string& prefix = options_.prefix;
  hosts_[rank_] = logging::HostName();

  COHORT_ASSIGN_OR_RETURN(std::string listen_ip, ChooseListenIp(bootstrap));
  COHORT_ASSIGN_OR_RETURN(Fd listener, ListenTcp(listen_ip, 0));
  COHORT_ASSIGN_OR_RETURN(int port, LocalPort(listener.get()));

  std::string secret;
  const std::string secret_key = absl::StrCat(prefix, "/tcp/secret");
  if (rank_ == 0) {
    secret = crypto::RandomHex(16);
    COHORT_RETURN_IF_ERROR(bootstrap.Set(secret_key, secret));
  } else {
    COHORT_ASSIGN_OR_RETURN(secret, bootstrap.Get(secret_key, deadline.Remaining()));
  }
  Address self{hosts_[rank_], listen_ip, port, static_cast<int>(getpid()), HostIdentity()};
  COHORT_RETURN_IF_ERROR(bootstrap.Set(absl::StrCat(prefix, "/tcp/addr/", rank_), self.Serialize()));

  std::vector<Address> addresses(size_);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    auto text = bootstrap.Get(absl::StrCat(prefix, "/tcp/addr/", peer), deadline.Remaining());
    if (!text.ok()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", rank_, " waited for rank ", peer, " to publish its address in the bootstrap: ",
          text.status().message(), ". Is rank ", peer, " running with the same world size?"));
    }
    COHORT_ASSIGN_OR_RETURN(addresses[peer], Address::Parse(*text));
    hosts_[peer] = addresses[peer].host_name;
  }

  // Lower ranks are connected to, higher ranks connect to us: every pair exactly once.
  for (int peer = 0; peer < rank_; ++peer) {
    auto fd = ConnectTcp(addresses[peer].ip, addresses[peer].port, deadline);
    if (!fd.ok()) {
      return absl::UnavailableError(absl::StrCat("rank ", rank_, " could not connect to ",
                                                 Name(peer), " at ", addresses[peer].ip, ":",
                                                 addresses[peer].port, ": ", fd.status().message()));
    }
    Hello hello = {kWireMagic, kWireVersion, rank_, peer, size_, {}};
    std::string proof = Proof(secret, prefix, rank_, peer);
    std::memcpy(hello.proof, proof.data(), sizeof(hello.proof));
    COHORT_RETURN_IF_ERROR(WriteFully(fd->get(), &hello, sizeof(hello), deadline, Name(peer)));
    peers_[peer].fd = std::move(*fd);
  }
  int expected = size_ - rank_ - 1;
  while (expected > 0) {
    auto fd = AcceptTcp(listener.get(), deadline);
    if (!fd.ok()) {
      std::string missing;
      for (int peer = rank_ + 1; peer < size_; ++peer) {
        if (!peers_[peer].fd.valid()) absl::StrAppend(&missing, missing.empty() ? "" : ", ", peer);
      }
      return absl::DeadlineExceededError(absl::StrCat("rank ", rank_,
                                                      " timed out waiting for connections from "
                                                      "ranks ", missing, ": ", fd.status().message()));
    }
    Hello hello;
    Deadline hello_deadline = deadline.Earlier(Deadline::In(absl::Seconds(10)));
    if (!ReadFully(fd->get(), &hello, sizeof(hello), hello_deadline, "a connecting peer").ok()) {
      COHORT_LOG(WARN) << "dropped a connection that sent no valid cohort handshake";
      continue;
    }
    HelloReply reply = {kWireMagic, 0};
    if (hello.magic != kWireMagic || hello.version != kWireVersion) {
      COHORT_LOG(WARN) << "dropped a connection with wrong magic or protocol version "
                       << hello.version << " (this rank speaks " << kWireVersion << ")";
      continue;
    }
    if (hello.to != rank_ || hello.size != size_ || hello.from <= rank_ || hello.from >= size_ ||
        peers_[hello.from].fd.valid()) {
      reply.status = 2;
    } else if (!crypto::ConstantTimeEquals(std::string(hello.proof, sizeof(hello.proof)),
                                           Proof(secret, prefix, hello.from, rank_))) {
      reply.status = 1;
    }
    (void)WriteFully(fd->get(), &reply, sizeof(reply), hello_deadline, "a connecting peer");
    if (reply.status != 0) {
      COHORT_LOG(WARN) << "refused a transport connection claiming rank " << hello.from
                       << " of " << hello.size << ": "
                       << (reply.status == 1 ? "wrong communicator secret" : "wrong rank or size");
      continue;
    }
    peers_[hello.from].fd = std::move(*fd);
    --expected;
  }
  for (int peer = 0; peer < rank_; ++peer) {
    HelloReply reply;
    COHORT_RETURN_IF_ERROR(
        ReadFully(peers_[peer].fd.get(), &reply, sizeof(reply), deadline, Name(peer)));
    if (reply.magic != kWireMagic || reply.status != 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          Name(peer), " refused the transport handshake from rank ", rank_, " (",
          reply.status == 1 ? "wrong communicator secret" : "wrong rank or world size",
          "); another job may be using the same store prefix"));
    }
  }

  COHORT_RETURN_IF_ERROR(SetUpSharedMemory(bootstrap, addresses, deadline));

  epoll_.Reset(epoll_create1(EPOLL_CLOEXEC));
  wake_.Reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!epoll_.valid() || !wake_.valid()) {
    return absl::InternalError(absl::StrCat("epoll/eventfd: ", std::strerror(errno)));
  }
  epoll_event wake_event = {};
  wake_event.events = EPOLLIN;
  wake_event.data.u32 = static_cast<uint32_t>(size_);
  epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &wake_event);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    Peer& state = peers_[peer];
    state.rank = peer;
    state.staging.resize(kStagingBytes);
    COHORT_RETURN_IF_ERROR(SetNonBlocking(state.fd.get(), true));
    COHORT_RETURN_IF_ERROR(SetNoDelay(state.fd.get()));
    COHORT_RETURN_IF_ERROR(SetBufferSizes(state.fd.get(), options_.socket_buffer_bytes));
    epoll_event event = {};
    // A local peer's frames come through shared memory; its socket only reports the close.
    event.events = state.local ? EPOLLRDHUP : (EPOLLIN | EPOLLRDHUP);
    state.readable_armed = !state.local;
    event.data.u32 = static_cast<uint32_t>(peer);
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, state.fd.get(), &event) != 0) {
      return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(errno)));
    }
  }
  COHORT_LOG(DEBUG) << "tcp transport connected: rank " << rank_ << " of " << size_ << " on "
                    << listen_ip << ":" << port;
  return absl::OkStatus();
}

void TcpTransport::Arm(Peer& peer) {
  if (peer.closed || peer.local) return;
  bool want_read = peer.state != ReadState::kStalled;
  bool want_write = !peer.sends.empty();
  if (want_read == peer.readable_armed && want_write == peer.writable_armed) return;
  epoll_event event = {};
  event.events = EPOLLRDHUP | (want_read ? EPOLLIN : 0u) | (want_write ? EPOLLOUT : 0u);
  event.data.u32 = static_cast<uint32_t>(peer.rank);
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, peer.fd.get(), &event);
  peer.readable_armed = want_read;
  peer.writable_armed = want_write;
}

absl::Status TcpTransport::Fail(absl::Status status) {
  if (failure_.ok()) failure_ = status;
  return failure_;
}

absl::Status TcpTransport::PeerLost(Peer& peer, const std::string& why) {
  bool expected_more = !peer.sends.empty() || !peer.posted.empty() ||
                       peer.state != ReadState::kHeader || !any_source_.empty();
  if (peer.goodbye_received && !expected_more) {
    // A clean close after the peer's last operation: not an error.
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, peer.fd.get(), nullptr);
    peer.closed = true;
    return absl::OkStatus();
  }
  if (peer.goodbye_received) {
    return Fail(absl::FailedPreconditionError(
        absl::StrCat(Name(peer.rank), " closed its communicator while rank ", rank_,
                     " still expected data from it; every rank must issue the same operations "
                     "before destroying the communicator")));
  }
  return Fail(absl::UnavailableError(
      absl::StrCat("lost connection to ", Name(peer.rank), ": ", why,
                   ". The process of rank ", peer.rank,
                   " probably died or was killed; check its log and exit status")));
}

bool TcpTransport::Matches(const Request& request, const FrameHeader& header) const {
  if (request.header.kind != header.kind || request.header.tag != header.tag) return false;
  if (header.kind == static_cast<uint8_t>(FrameKind::kCollective)) {
    return request.header.sequence == header.sequence;
  }
  return true;
}

absl::Status TcpTransport::CheckFingerprint(const Peer& peer, const FrameHeader& header) const {
  if (header.kind != static_cast<uint8_t>(FrameKind::kCollective)) return absl::OkStatus();
  if (header.sequence != current_.sequence) return absl::OkStatus();
  Fingerprint theirs = header.fingerprint();
  if (theirs.SameCall(current_)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "collective mismatch at operation #", current_.sequence, ": ", Name(peer.rank), " called ",
      theirs.Describe(), " but rank ", rank_, " (", hosts_[rank_], ") called ",
      current_.Describe(), ". Every rank must issue the same collectives in the same order "
      "with the same sizes, types and roots"));
}

absl::Status TcpTransport::BeginCollective(const Fingerprint& fingerprint) {
  current_ = fingerprint;
  if (!failure_.ok()) return failure_;
  for (const Peer& peer : peers_) {
    if (peer.rank == rank_ || !peer.fd.valid()) continue;
    for (const Early& early : peer.early) {
      absl::Status status = CheckFingerprint(peer, early.header);
      if (!status.ok()) return Fail(status);
    }
    if (peer.state != ReadState::kHeader) {
      absl::Status status = CheckFingerprint(peer, peer.header);
      if (!status.ok()) return Fail(status);
    }
  }
  return absl::OkStatus();
}

size_t TcpTransport::PayloadBytes(const Request& request) const {
  return (request.header.reserved & kFrameRemote) ? sizeof(request.remote) : request.length;
}

const char* TcpTransport::PayloadData(const Request& request) const {
  return (request.header.reserved & kFrameRemote) ? reinterpret_cast<const char*>(request.remote)
                                                  : request.data;
}

void TcpTransport::PostSend(Request* request) {
  request->direction = Request::Direction::kSend;
  request->header.length = request->length;
  request->transferred = 0;
  request->complete = false;
  Peer& peer = peers_[request->peer];
  if (peer.single_copy && options_.single_copy_bytes > 0 &&
      request->length >= options_.single_copy_bytes) {
    // The peer copies the payload straight out of this process: one copy instead of two.
    request->header.reserved |= kFrameRemote;
    request->remote[0] = reinterpret_cast<uint64_t>(request->data);
    request->remote[1] = next_remote_id_++;
  }
  peer.sends.push_back(request);
  if (!failure_.ok()) return;
  if (peer.sends.size() == 1) {
    absl::Status status = FlushSends(peer, /*once=*/false);
    if (!status.ok()) (void)Fail(status);
  }
}

absl::Status TcpTransport::ReadRemote(Peer& peer, Request* request, const uint64_t descriptor[2]) {
  size_t done = 0;
  while (done < request->length) {
    iovec local = {request->data + done, request->length - done};
    iovec remote = {reinterpret_cast<void*>(descriptor[0] + done), request->length - done};
    ssize_t got = process_vm_readv(peer.pid, &local, 1, &remote, 1, 0);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && errno == ESRCH) return PeerLost(peer, "its process has exited");
      if (got < 0 && errno == EFAULT) {
        // The sender is failing and has let go of its buffer; its abort frame, which names the
        // cause, is on its way. Wait for it a little before calling the peer lost.
        if (peer.fault_deadline.IsNever()) peer.fault_deadline = Deadline::In(absl::Seconds(1));
        return absl::OkStatus();
      }
      return Fail(absl::UnavailableError(absl::StrCat(
          "cannot read a message from ", Name(peer.rank), " (process ", peer.pid,
          ") in shared memory: ", got == 0 ? "nothing read" : std::strerror(errno),
          ". The process may have died; set COHORT_SHM_SINGLE_COPY_BYTES=0 if this persists")));
    }
    done += static_cast<size_t>(got);
  }
  request->transferred = request->length;
  request->complete = true;
  QueueAck(peer, descriptor[1]);
  return absl::OkStatus();
}

void TcpTransport::QueueAck(Peer& peer, uint64_t id) {
  while (!peer.owned.empty() && peer.owned.front().complete) peer.owned.pop_front();
  Request& ack = peer.owned.emplace_back();
  ack.peer = peer.rank;
  ack.header.kind = static_cast<uint8_t>(FrameKind::kAck);
  ack.header.sequence = id;
  ack.direction = Request::Direction::kSend;
  peer.sends.push_back(&ack);
  absl::Status status = FlushSends(peer, /*once=*/false);
  if (!status.ok()) (void)Fail(status);
}

void TcpTransport::PostRecv(Request* request) {
  request->direction = Request::Direction::kRecv;
  request->transferred = 0;
  request->complete = false;
  int first = request->peer == kAnySource ? 0 : request->peer;
  int last = request->peer == kAnySource ? size_ - 1 : request->peer;
  for (int rank = first; rank <= last; ++rank) {
    if (rank == rank_) continue;
    Peer& peer = peers_[rank];
    // An early frame, complete or still arriving.
    for (auto it = peer.early.begin(); it != peer.early.end(); ++it) {
      if (it->claimed_by != nullptr || !Matches(*request, it->header)) continue;
      if (it->header.length != request->length) {
        (void)Fail(absl::FailedPreconditionError(absl::StrCat(
            Name(rank), " sent ", it->header.length, " bytes but rank ", rank_, " expected ",
            request->length, " for ", current_.Describe(), "; sizes must agree on every rank")));
        return;
      }
      request->peer = rank;
      if (it->header.reserved & kFrameRemote) {
        uint64_t descriptor[2];
        std::memcpy(descriptor, it->data.data(), sizeof(descriptor));
        peer.early.erase(it);
        (void)ReadRemote(peer, request, descriptor);
        return;
      }
      if (it->received == it->header.length) {
        if (request->length > 0) std::memcpy(request->data, it->data.data(), request->length);
        request->transferred = request->length;
        request->complete = true;
        peer.early.erase(it);
      } else {
        it->claimed_by = request;
      }
      return;
    }
    // A large frame waiting in the stream for exactly this receive.
    if (peer.state == ReadState::kStalled && Matches(*request, peer.header)) {
      if (peer.header.length != request->length) {
        (void)Fail(absl::FailedPreconditionError(absl::StrCat(
            Name(rank), " sent ", peer.header.length, " bytes but rank ", rank_, " expected ",
            request->length, " for ", current_.Describe(), "; sizes must agree on every rank")));
        return;
      }
      request->peer = rank;
      peer.state = ReadState::kPayload;
      peer.target = request->data;
      peer.target_got = 0;
      peer.target_request = request;
      peer.target_early = nullptr;
      Arm(peer);
      absl::Status status = ReadPeer(peer);
      if (!status.ok()) (void)Fail(status);
      return;
    }
  }
  if (request->peer == kAnySource) {
    any_source_.push_back(request);
  } else {
    peers_[request->peer].posted.push_back(request);
  }
}

Request* TcpTransport::TakeMatch(Peer& peer, const FrameHeader& header) {
  auto take = [&](std::deque<Request*>& queue) -> Request* {
    for (auto it = queue.begin(); it != queue.end(); ++it) {
      if (Matches(**it, header)) {
        Request* request = *it;
        queue.erase(it);
        return request;
      }
    }
    return nullptr;
  };
  Request* request = take(peer.posted);
  if (request == nullptr && header.kind == static_cast<uint8_t>(FrameKind::kPointToPoint)) {
    request = take(any_source_);
  }
  return request;
}

absl::Status TcpTransport::OnHeader(Peer& peer) {
  const FrameHeader& header = peer.header;
  peer.target_request = nullptr;
  peer.target_early = nullptr;
  peer.target_got = 0;
  peer.payload_length = header.length;
  FrameKind kind = static_cast<FrameKind>(header.kind);
  if (kind == FrameKind::kAbort) {
    if (header.length > (1 << 20)) return PeerLost(peer, "malformed abort frame");
    peer.control.assign(header.length, '\0');
    peer.target = peer.control.data();
    peer.state = ReadState::kPayload;
    return absl::OkStatus();
  }
  if (kind == FrameKind::kGoodbye) {
    peer.goodbye_received = true;
    peer.state = ReadState::kHeader;
    return absl::OkStatus();
  }
  if (kind == FrameKind::kAck) {
    for (size_t i = 0; i < peer.awaiting_ack.size(); ++i) {
      if (peer.awaiting_ack[i]->remote[1] == header.sequence) {
        peer.awaiting_ack[i]->complete = true;
        peer.awaiting_ack[i] = peer.awaiting_ack.back();
        peer.awaiting_ack.pop_back();
        break;
      }
    }
    peer.state = ReadState::kHeader;
    return absl::OkStatus();
  }
  if (kind != FrameKind::kCollective && kind != FrameKind::kPointToPoint) {
    return PeerLost(peer, absl::StrCat("unknown frame kind ", header.kind, " (corrupt stream)"));
  }
  if (kind == FrameKind::kCollective) {
    if (header.sequence < current_.sequence) {
      return Fail(absl::InternalError(absl::StrCat(
          Name(peer.rank), " sent data for finished operation #", header.sequence,
          " while rank ", rank_, " runs #", current_.sequence)));
    }
    COHORT_RETURN_IF_ERROR(CheckFingerprint(peer, header));
  }
  if (header.reserved & kFrameRemote) {
    // Read the {address, id} descriptor first; matching happens when it is complete.
    peer.payload_length = sizeof(peer.descriptor);
    peer.target = reinterpret_cast<char*>(peer.descriptor);
    peer.state = ReadState::kPayload;
    return absl::OkStatus();
  }
  Request* request = TakeMatch(peer, header);
  if (request != nullptr) {
    if (header.length != request->length) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          Name(peer.rank), " sent ", header.length, " bytes but rank ", rank_, " expected ",
          request->length, kind == FrameKind::kCollective ? " for " : "",
          kind == FrameKind::kCollective ? current_.Describe() : " for a point-to-point message",
          "; sizes must agree on every rank")));
    }
    request->peer = peer.rank;
    peer.target_request = request;
    peer.target = request->data;
    peer.state = ReadState::kPayload;
    return absl::OkStatus();
  }
  if (header.length <= options_.eager_bytes) {
    peer.early.push_back(Early{header, std::string(header.length, '\0'), 0, nullptr});
    peer.target_early = &peer.early.back();
    peer.target = peer.target_early->data.data();
    peer.state = ReadState::kPayload;
    return absl::OkStatus();
  }
  peer.state = ReadState::kStalled;  // read it when its receive is posted
  Arm(peer);
  return absl::OkStatus();
}

absl::Status TcpTransport::OnPayloadComplete(Peer& peer) {
  peer.state = ReadState::kHeader;
  FrameKind kind = static_cast<FrameKind>(peer.header.kind);
  if (kind == FrameKind::kAbort) {
    return Fail(absl::AbortedError(absl::StrCat(Name(peer.rank), " failed: ", peer.control)));
  }
  if (peer.header.reserved & kFrameRemote) {
    Request* request = TakeMatch(peer, peer.header);
    if (request == nullptr) {
      std::string descriptor(reinterpret_cast<const char*>(peer.descriptor),
                             sizeof(peer.descriptor));
      peer.early.push_back(Early{peer.header, descriptor, descriptor.size(), nullptr});
      return absl::OkStatus();
    }
    if (peer.header.length != request->length) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          Name(peer.rank), " sent ", peer.header.length, " bytes but rank ", rank_, " expected ",
          request->length, " for ", current_.Describe(), "; sizes must agree on every rank")));
    }
    request->peer = peer.rank;
    return ReadRemote(peer, request, peer.descriptor);
  }
  if (peer.target_request != nullptr) {
    peer.target_request->transferred = peer.header.length;
    peer.target_request->complete = true;
    peer.target_request = nullptr;
  } else if (peer.target_early != nullptr) {
    Early* early = peer.target_early;
    early->received = early->header.length;
    if (early->claimed_by != nullptr) {
      Request* request = early->claimed_by;
      if (request->length > 0) std::memcpy(request->data, early->data.data(), request->length);
      request->transferred = request->length;
      request->complete = true;
      for (auto it = peer.early.begin(); it != peer.early.end(); ++it) {
        if (&*it == early) {
          peer.early.erase(it);
          break;
        }
      }
    }
    peer.target_early = nullptr;
  }
  return absl::OkStatus();
}

ssize_t TcpTransport::StreamRead(Peer& peer, void* buffer, size_t length) {
  if (!peer.local) return ::recv(peer.fd.get(), buffer, length, 0);
  size_t got = peer.in.Read(buffer, length);
  if (got == 0) {
    errno = EAGAIN;
    return -1;
  }
  shm::Ring(*peer.peer_doorbell);  // room for a writer that may be waiting
  return static_cast<ssize_t>(got);
}

ssize_t TcpTransport::StreamWrite(Peer& peer, const iovec* iov, int count) {
  if (!peer.local) {
    msghdr message = {};
    message.msg_iov = const_cast<iovec*>(iov);
    message.msg_iovlen = static_cast<size_t>(count);
    return ::sendmsg(peer.fd.get(), &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  size_t wrote = peer.out.Write(iov, count);
  if (wrote == 0) {
    errno = EAGAIN;
    return -1;
  }
  shm::Ring(*peer.peer_doorbell);  // data for a reader that may be asleep
  return static_cast<ssize_t>(wrote);
}

absl::Status TcpTransport::WriteAllNow(Peer& peer, const iovec* iov, int count,
                                       Deadline deadline) {
  std::vector<iovec> rest(iov, iov + count);
  size_t index = 0;
  while (index < rest.size()) {
    ssize_t wrote = StreamWrite(peer, rest.data() + index, static_cast<int>(rest.size() - index));
    if (wrote < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return absl::UnavailableError(absl::StrCat("writing to ", Name(peer.rank), ": ",
                                                   std::strerror(errno)));
      }
      if (deadline.Expired()) {
        return absl::DeadlineExceededError(absl::StrCat(Name(peer.rank), " is not reading"));
      }
      if (peer.local) {
        std::this_thread::yield();
      } else {
        pollfd entry = {peer.fd.get(), POLLOUT, 0};
        ::poll(&entry, 1, deadline.RemainingMillis(100));
      }
      continue;
    }
    size_t left = static_cast<size_t>(wrote);
    while (index < rest.size() && left >= rest[index].iov_len) {
      left -= rest[index].iov_len;
      ++index;
    }
    if (index < rest.size()) {
      rest[index].iov_base = static_cast<char*>(rest[index].iov_base) + left;
      rest[index].iov_len -= left;
    }
  }
  return absl::OkStatus();
}

absl::Status TcpTransport::ReadPeer(Peer& peer) {
  if (peer.closed) return absl::OkStatus();
  bool drained = false;  // a short read means the stream is empty for now
  while (true) {
    if (peer.state == ReadState::kStalled) return absl::OkStatus();
    size_t staged = peer.staged_end - peer.staged_begin;
    if (peer.state == ReadState::kPayload) {
      size_t remaining = peer.payload_length - peer.target_got;
      if (staged > 0 && remaining > 0) {
        size_t take = std::min(staged, remaining);
        std::memcpy(peer.target + peer.target_got, peer.staging.data() + peer.staged_begin, take);
        peer.staged_begin += take;
        peer.target_got += take;
        remaining -= take;
      }
      if (remaining == 0) {
        COHORT_RETURN_IF_ERROR(OnPayloadComplete(peer));
        continue;
      }
      if (drained) return absl::OkStatus();
      if (remaining >= kDirectReadMin) {
        ssize_t got = StreamRead(peer, peer.target + peer.target_got, remaining);
        if (got > 0) {
          peer.target_got += static_cast<size_t>(got);
          if (static_cast<size_t>(got) < remaining) return absl::OkStatus();
          COHORT_RETURN_IF_ERROR(OnPayloadComplete(peer));
          continue;
        }
        if (got == 0) return PeerLost(peer, "the peer closed the connection");
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return absl::OkStatus();
        return PeerLost(peer, std::strerror(errno));
      }
    } else if (staged >= sizeof(FrameHeader)) {
      std::memcpy(&peer.header, peer.staging.data() + peer.staged_begin, sizeof(FrameHeader));
      peer.staged_begin += sizeof(FrameHeader);
      COHORT_RETURN_IF_ERROR(OnHeader(peer));
      continue;
    }
    if (drained) return absl::OkStatus();
    // Refill the staging buffer, keeping a partial header at its front.
    if (peer.staged_begin == peer.staged_end) {
      peer.staged_begin = peer.staged_end = 0;
    } else if (peer.staged_begin > 0) {
      std::memmove(peer.staging.data(), peer.staging.data() + peer.staged_begin, staged);
      peer.staged_begin = 0;
      peer.staged_end = staged;
    }
    size_t room = peer.staging.size() - peer.staged_end;
    ssize_t got = StreamRead(peer, peer.staging.data() + peer.staged_end, room);
    if (got > 0) {
      peer.staged_end += static_cast<size_t>(got);
      drained = static_cast<size_t>(got) < room;
      continue;
    }
    if (got == 0) return PeerLost(peer, "the peer closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return absl::OkStatus();
    return PeerLost(peer, std::strerror(errno));
  }
}

absl::Status TcpTransport::FlushSends(Peer& peer, bool once) {
  while (!peer.sends.empty()) {
    iovec iov[kMaxIov];
    int count = 0;
    size_t requested = 0;
    for (Request* request : peer.sends) {
      if (count + 2 > kMaxIov) break;
      size_t offset = request->transferred;
      if (offset < sizeof(FrameHeader)) {
        iov[count++] = {reinterpret_cast<char*>(&request->header) + offset,
                        sizeof(FrameHeader) - offset};
        requested += sizeof(FrameHeader) - offset;
        offset = 0;
      } else {
        offset -= sizeof(FrameHeader);
      }
      size_t payload = PayloadBytes(*request);
      if (payload > offset) {
        size_t take = std::min(payload - offset, kMaxSendBytes - std::min(requested, kMaxSendBytes));
        if (take == 0) break;
        iov[count++] = {const_cast<char*>(PayloadData(*request)) + offset, take};
        requested += take;
      }
      if (requested >= kMaxSendBytes) break;
    }
    ssize_t wrote = StreamWrite(peer, iov, count);
    if (wrote < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
      return PeerLost(peer, std::strerror(errno));
    }
    size_t left = static_cast<size_t>(wrote);
    while (left > 0) {
      Request* request = peer.sends.front();
      size_t total = sizeof(FrameHeader) + PayloadBytes(*request);
      size_t take = std::min(left, total - request->transferred);
      request->transferred += take;
      left -= take;
      if (request->transferred == total) {
        peer.sends.pop_front();
        if (request->header.reserved & kFrameRemote) {
          peer.awaiting_ack.push_back(request);  // complete when the peer has read it
        } else {
          request->complete = true;
        }
      }
    }
    // A full stream, or a fair share written: let the caller read before writing more, so
    // both directions of a connection keep moving.
    if (static_cast<size_t>(wrote) < requested || once) break;
  }
  Arm(peer);
  return absl::OkStatus();
}

bool TcpTransport::PollSharedMemory(absl::Status* status) {
  bool moved = false;
  for (int rank : local_ranks_) {
    Peer& peer = peers_[rank];
    if (peer.closed) continue;
    if (!peer.fault_deadline.IsNever() && peer.fault_deadline.Expired()) {
      *status = PeerLost(peer, "a message it announced vanished from its memory");
      return true;
    }
    if (!peer.sends.empty()) {
      size_t before = peer.sends.size();
      size_t front = peer.sends.front()->transferred;
      *status = FlushSends(peer, /*once=*/false);
      if (!status->ok()) return true;
      moved |= peer.sends.size() != before ||
               (!peer.sends.empty() && peer.sends.front()->transferred != front);
    }
    if (peer.state != ReadState::kStalled &&
        (peer.in.AvailableBytes() > 0 || peer.staged_end > peer.staged_begin)) {
      *status = ReadPeer(peer);
      if (!status->ok()) return true;
      moved = true;
    }
  }
  return moved;
}

bool TcpTransport::RemoteWorkPending() const {
  if (remote_peers_ == 0) return false;
  if (!any_source_.empty()) return true;
  for (const Peer& peer : peers_) {
    if (peer.rank == rank_ || peer.local || peer.closed || !peer.fd.valid()) continue;
    if (!peer.sends.empty() || !peer.posted.empty() || peer.state != ReadState::kHeader ||
        !peer.awaiting_ack.empty()) {
      return true;
    }
  }
  return false;
}

absl::Status TcpTransport::Progress(int timeout_ms) {
  if (!failure_.ok()) return failure_;
  if (local_ranks_.empty()) return PollSockets(timeout_ms);
  absl::Status status;
  bool moved = PollSharedMemory(&status);
  if (!status.ok()) return Fail(status);
  if (moved || timeout_ms == 0) {
    // Polling: sockets (closes, remote peers) are looked at every so often, not every time.
    if (remote_peers_ > 0 || (++polls_ & 255) == 0) return PollSockets(0);
    return failure_;
  }
  if (RemoteWorkPending()) {
    // Both kinds of peers matter: short epoll slices between looks at shared memory.
    return PollSockets(std::min(timeout_ms, 1));
  }
  // Only local peers: sleep on our doorbell until someone gives us data or room.
  shm::Doorbell& doorbell = segment_.doorbell();
  doorbell.sleeping.store(1, std::memory_order_seq_cst);
  uint32_t seen = doorbell.value.load(std::memory_order_seq_cst);
  moved = PollSharedMemory(&status);
  if (!status.ok()) {
    doorbell.sleeping.store(0);
    return Fail(status);
  }
  if (!moved) shm::Sleep(doorbell, seen, std::min(timeout_ms < 0 ? 10 : timeout_ms, 10));
  doorbell.sleeping.store(0, std::memory_order_relaxed);
  (void)PollSharedMemory(&status);
  if (!status.ok()) return Fail(status);
  return PollSockets(0);
}

absl::Status TcpTransport::PollSockets(int timeout_ms) {
  if (!failure_.ok()) return failure_;
  epoll_event events[64];
  int ready = epoll_wait(epoll_.get(), events, 64, timeout_ms);
  if (ready < 0) {
    if (errno == EINTR) return absl::OkStatus();
    return Fail(absl::InternalError(absl::StrCat("epoll_wait: ", std::strerror(errno))));
  }
  for (int i = 0; i < ready; ++i) {
    uint32_t index = events[i].data.u32;
    if (index == static_cast<uint32_t>(size_)) {
      uint64_t value;
      ssize_t ignored = ::read(wake_.get(), &value, sizeof(value));
      (void)ignored;
      continue;
    }
    Peer& peer = peers_[index];
    if (peer.closed) continue;
    if (peer.local) {
      // The socket of a local peer only reports its close. Take what it left in the ring
      // first (its goodbye or abort), then judge the close.
      absl::Status status = ReadPeer(peer);
      if (!status.ok()) return Fail(status);
      status = PeerLost(peer, "the peer closed the connection");
      if (!status.ok()) return status;
      continue;
    }
    if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      if (peer.state == ReadState::kStalled) {
        // Only a hang-up can wake a stalled peer; the data stays in the socket.
        if (events[i].events & (EPOLLHUP | EPOLLERR)) {
          absl::Status status = PeerLost(peer, "the connection was reset");
          if (!status.ok()) return status;
        } else if (events[i].events & EPOLLRDHUP) {
          // The stalled frame is still readable; a close is noticed when it is consumed.
          // Disarm RDHUP to avoid a busy loop: the hang-up is sticky in the socket.
          epoll_event event = {};
          event.data.u32 = index;
          epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, peer.fd.get(), &event);
          peer.readable_armed = false;
          peer.writable_armed = false;
        }
      } else {
        absl::Status status = ReadPeer(peer);
        if (!status.ok()) return Fail(status);
      }
    }
    if ((events[i].events & EPOLLOUT) && !peer.closed) {
      absl::Status status = FlushSends(peer, /*once=*/true);
      if (!status.ok()) return Fail(status);
    }
  }
  return failure_;
}

int TcpTransport::PreferredSpinMicros() const { return preferred_spin_micros_; }

absl::Status TcpTransport::CheckPeers() {
  if (!failure_.ok()) return failure_;
  absl::Status status;
  (void)PollSharedMemory(&status);
  if (!status.ok()) return Fail(status);
  return PollSockets(0);
}

void TcpTransport::Wake() {
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_.get(), &one, sizeof(one));
  (void)ignored;
  if (!local_ranks_.empty()) {
    shm::Doorbell& doorbell = segment_.doorbell();
    doorbell.value.fetch_add(1);
    shm::Ring(doorbell);
  }
}

void TcpTransport::AbortPeers(const std::string& reason) {
  // Finish half-written frames (their buffers are still alive) so the abort can follow in the
  // same stream; a peer that does not take them within the deadline learns from the close.
  Deadline deadline = Deadline::In(absl::Seconds(1));
  for (Peer& peer : peers_) {
    if (peer.rank == rank_ || peer.closed || peer.sends.empty()) continue;
    Request* front = peer.sends.front();
    size_t total = sizeof(FrameHeader) + PayloadBytes(*front);
    if (front->transferred == 0 || front->transferred == total) continue;
    size_t offset = front->transferred;
    iovec iov[2];
    int count = 0;
    if (offset < sizeof(FrameHeader)) {
      iov[count++] = {reinterpret_cast<char*>(&front->header) + offset,
                      sizeof(FrameHeader) - offset};
      offset = sizeof(FrameHeader);
    }
    iov[count++] = {const_cast<char*>(PayloadData(*front)) + (offset - sizeof(FrameHeader)),
                    total - offset};
    if (WriteAllNow(peer, iov, count, deadline).ok()) {
      front->transferred = total;
      peer.sends.pop_front();
      if (front->header.reserved & kFrameRemote) peer.awaiting_ack.push_back(front);
    }
  }
  // Nothing more goes out but the abort; single-copy sends already announced stay readable
  // until the peer has taken them (or a short deadline), so it does not read freed memory.
  std::vector<std::vector<Request*>> announced(peers_.size());
  for (Peer& peer : peers_) announced[peer.rank].swap(peer.awaiting_ack);
  DropRequests();
  for (Peer& peer : peers_) peer.awaiting_ack.swap(announced[peer.rank]);
  std::string text = reason.substr(0, 4096);
  FrameHeader header = {};
  header.kind = static_cast<uint8_t>(FrameKind::kAbort);
  header.length = text.size();
  for (Peer& peer : peers_) {
    if (peer.rank == rank_ || peer.closed || !peer.fd.valid()) continue;
    if (peer.send_mid_frame) continue;
    iovec iov[2] = {{&header, sizeof(header)}, {text.data(), text.size()}};
    (void)WriteAllNow(peer, iov, 2, Deadline::In(absl::Milliseconds(100)));
  }
  Deadline reads = Deadline::In(absl::Milliseconds(500));
  for (int rank : local_ranks_) {
    Peer& peer = peers_[rank];
    while (!peer.awaiting_ack.empty() && !peer.closed && !reads.Expired() &&
           peer.state != ReadState::kStalled) {
      if (peer.in.AvailableBytes() == 0 && peer.staged_end == peer.staged_begin) {
        std::this_thread::yield();
        continue;
      }
      // Errors here (other peers' aborts) change nothing: this rank has failed already.
      (void)ReadPeer(peer);
    }
    peer.awaiting_ack.clear();
  }
}

void TcpTransport::DropRequests() {
  for (Peer& peer : peers_) {
    if (!peer.sends.empty() && peer.sends.front()->transferred > 0) peer.send_mid_frame = true;
    peer.sends.clear();
    peer.posted.clear();
    peer.awaiting_ack.clear();
    for (Early& early : peer.early) early.claimed_by = nullptr;
    if (peer.target_request != nullptr) {
      // Keep the stream in sync: the rest of this payload is read and discarded.
      peer.control.assign(peer.payload_length, '\0');
      std::memcpy(peer.control.data(), peer.target, peer.target_got);
      peer.target = peer.control.data();
      peer.target_request = nullptr;
    }
  }
  any_source_.clear();
}

void TcpTransport::Close(bool clean, Deadline deadline) {
  if (clean) {
    FrameHeader header = {};
    header.kind = static_cast<uint8_t>(FrameKind::kGoodbye);
    for (Peer& peer : peers_) {
      if (peer.rank == rank_ || peer.closed || !peer.fd.valid() || peer.send_mid_frame) continue;
      iovec iov = {&header, sizeof(header)};
      (void)WriteAllNow(peer, &iov, 1, deadline);
    }
    return;
  }
  std::vector<pollfd> open;
  for (Peer& peer : peers_) {
    if (peer.rank == rank_ || peer.closed || !peer.fd.valid()) continue;
    ::shutdown(peer.fd.get(), SHUT_WR);
    open.push_back({peer.fd.get(), POLLIN, 0});
  }
  std::vector<char> sink(1 << 16);
  while (!open.empty() && !deadline.Expired()) {
    if (::poll(open.data(), open.size(), deadline.RemainingMillis(100)) < 0 && errno != EINTR) {
      break;
    }
    for (size_t index = 0; index < open.size();) {
      bool finished = false;
      if (open[index].revents != 0) {
        ssize_t got = ::recv(open[index].fd, sink.data(), sink.size(), MSG_DONTWAIT);
        finished = got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR);
      }
      if (finished) {
        open[index] = open.back();
        open.pop_back();
      } else {
        open[index].revents = 0;
        ++index;
      }
    }
  }
}

absl::Status TcpTransport::SetUpSharedMemory(Bootstrap& bootstrap,
                                            const std::vector<Address>& addresses,
                                            Deadline deadline) {
  if (!options_.shared_memory) {
    remote_peers_ = size_ - 1;
    return absl::OkStatus();
  }
  std::string self_id = HostIdentity();
  std::vector<int> group;  // every rank on this host, ours included, in rank order
  for (int rank = 0; rank < size_; ++rank) {
    if (rank == rank_ || addresses[rank].host_id == self_id) group.push_back(rank);
  }
  remote_peers_ = size_ - static_cast<int>(group.size());
  if (group.size() == 1) return absl::OkStatus();
  const int slots = static_cast<int>(group.size()) - 1;
  // The slot of `sender` among the inbound rings of `receiver`.
  auto slot = [&](int sender, int receiver) {
    int s = static_cast<int>(std::find(group.begin(), group.end(), sender) - group.begin());
    int r = static_cast<int>(std::find(group.begin(), group.end(), receiver) - group.begin());
    return s - (s > r ? 1 : 0);
  };
  const std::string& prefix = options_.prefix;
  std::string name = absl::StrCat("/cohort-", getpid(), "-", crypto::RandomHex(6));
  // Every rank on this host: a lane in each segment for one-host collectives.
  const bool lane = static_cast<int>(group.size()) == size_ && options_.lane_bytes > 0;
  const size_t lane_bytes = lane ? shm::Lane::BytesFor(options_.lane_bytes) : 0;
  COHORT_ASSIGN_OR_RETURN(segment_,
                          shm::Segment::Create(name, slots, options_.ring_bytes, lane_bytes));
  // A cookie peers read from our memory to learn whether single-copy reads work here.
  static const uint64_t cookie = 0x636f686f7274ULL ^ static_cast<uint64_t>(getpid());
  COHORT_RETURN_IF_ERROR(bootstrap.Set(
      absl::StrCat(prefix, "/shm/", rank_),
      absl::StrCat(name, " ", reinterpret_cast<uint64_t>(&cookie), " ", cookie)));
  peer_segments_.resize(size_);
  for (int rank : group) {
    if (rank == rank_) continue;
    COHORT_ASSIGN_OR_RETURN(std::string text,
                            bootstrap.Get(absl::StrCat(prefix, "/shm/", rank), deadline.Remaining()));
    std::vector<std::string> parts = absl::StrSplit(text, ' ');
    uint64_t cookie_address = 0, cookie_value = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &cookie_address) ||
        !absl::SimpleAtoi(parts[2], &cookie_value)) {
      return absl::DataLossError(absl::StrCat("malformed shared-memory record of rank ", rank));
    }
    COHORT_ASSIGN_OR_RETURN(peer_segments_[rank],
                            shm::Segment::Open(parts[0], slots, options_.ring_bytes, lane_bytes));
    Peer& peer = peers_[rank];
    peer.local = true;
    peer.pid = addresses[rank].pid;
    peer.out = peer_segments_[rank].ring(slot(rank_, rank));
    peer.in = segment_.ring(slot(rank, rank_));
    peer.peer_doorbell = &peer_segments_[rank].doorbell();
    uint64_t seen = 0;
    iovec local = {&seen, sizeof(seen)};
    iovec remote = {reinterpret_cast<void*>(cookie_address), sizeof(seen)};
    peer.single_copy = process_vm_readv(peer.pid, &local, 1, &remote, 1, 0) ==
                           static_cast<ssize_t>(sizeof(seen)) &&
                       seen == cookie_value;
    if (!peer.single_copy) {
      COHORT_LOG(INFO) << "single-copy reads from rank " << rank << " are not permitted ("
                       << std::strerror(errno) << "); large messages go through the ring";
    }
    local_ranks_.push_back(rank);
    COHORT_RETURN_IF_ERROR(bootstrap.Add(absl::StrCat(prefix, "/shm/mapped/", rank), 1).status());
  }
  // Unlink as soon as every local peer has mapped our segment: a crash leaves nothing behind.
  const std::string mapped_key = absl::StrCat(prefix, "/shm/mapped/", rank_);
  while (true) {
    COHORT_ASSIGN_OR_RETURN(int64_t mapped, bootstrap.Add(mapped_key, 0));
    if (mapped >= slots) break;
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", rank_, " timed out waiting for the ranks on its host to map its shared memory"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  segment_.Unlink();
  // Polling pays only when every rank on this host has a core to itself. (Decided once:
  // sysconf reads a sysfs file each time.)
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  preferred_spin_micros_ = static_cast<long>(local_ranks_.size()) + 1 <= cores ? 200 : 0;
  if (lane) {
    std::vector<char*> memory(size_);
    std::vector<shm::Doorbell*> doorbells(size_);
    for (int rank = 0; rank < size_; ++rank) {
      const shm::Segment& owner = rank == rank_ ? segment_ : peer_segments_[rank];
      memory[rank] = owner.lane();
      doorbells[rank] = &owner.doorbell();
    }
    lane_ = std::make_unique<shm::Lane>(rank_, std::move(memory), std::move(doorbells),
                                        options_.lane_bytes);
  }
  COHORT_LOG(DEBUG) << "shared memory with ranks on this host: " << local_ranks_.size();
  return absl::OkStatus();
}

}  // namespace cohort::tcp
