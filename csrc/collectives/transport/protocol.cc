#include "collectives/transport/protocol.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collectives/transport/shm/channel.h"
#include "collectives/transport/shm/lane.h"
#include "collectives/transport/tcp/address.h"
#include "collectives/transport/tcp/channel.h"
#include "collectives/transport/tcp/mesh.h"
#include "common/cpu.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"
#ifdef COHORT_HAVE_UCX
#include "collectives/transport/ucx/channel.h"
#endif

namespace cohort {
namespace {

constexpr size_t kMaxAbortBytes = 1 << 20;

// A landing's token says what the payload belongs to: a receive (tag 0), an early frame (1) or
// a peer's abort text (2). Both kinds of object are at least 8-byte aligned.
enum TokenTag : uintptr_t { kRequestToken = 0, kEarlyToken = 1, kAbortToken = 2 };
void* Tagged(const void* pointer, TokenTag tag) {
  return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(pointer) | tag);
}
TokenTag TagOf(void* token) { return static_cast<TokenTag>(reinterpret_cast<uintptr_t>(token) & 3); }
template <typename T>
T* Untagged(void* token) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(token) & ~uintptr_t{3});
}

bool Has(const std::vector<ChannelKind>& kinds, ChannelKind kind) {
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

}  // namespace

Protocol::Protocol(int rank, int size, ProtocolOptions options)
    : rank_(rank),
      size_(size),
      options_(std::move(options)),
      conn_of_(size),
      failed_(size, Blame::kNone),
      records_(size),
      kinds_(size, ChannelKind::kTcp),
      peers_(size) {
  for (int r = 0; r < size; ++r) conn_of_[r] = r;
}

Protocol::~Protocol() = default;

absl::StatusOr<std::unique_ptr<Protocol>> Protocol::Create(Bootstrap& bootstrap, int rank,
                                                           int size,
                                                           const ProtocolOptions& options) {
  std::unique_ptr<Protocol> protocol(new Protocol(rank, size, options));
  COHORT_RETURN_IF_ERROR(protocol->Connect(bootstrap));
  return protocol;
}

std::string Protocol::Name(int rank) const {
  const std::string& host = records_[rank].host_name;
  return absl::StrCat("rank ", rank, " (", host.empty() ? "?" : host, ")");
}

absl::Status Protocol::Connect(Bootstrap& bootstrap) {
  const Deadline deadline = Deadline::In(options_.timeout);
  const std::string& prefix = options_.prefix;
  ChannelSetup setup;
  setup.bootstrap = &bootstrap;
  setup.prefix = prefix;
  setup.rank = rank_;
  setup.size = size_;
  // The channels report to the connection set, which hands their frames to this view (and, after
  // a Shrink, to its child). Installed first: a channel may deliver frames while it connects.
  connections_ = std::make_shared<ConnectionSet>(size_);
  COHORT_RETURN_IF_ERROR(connections_->Install(this, 0, conn_of_, ChannelClaimer()));
  setup.sink = connections_.get();
  setup.deadline = deadline;

  const std::string secret_key = absl::StrCat(prefix, "/secret");
  if (rank_ == 0) {
    setup.secret = crypto::RandomHex(16);
    COHORT_RETURN_IF_ERROR(bootstrap.Set(secret_key, setup.secret));
  } else {
    COHORT_ASSIGN_OR_RETURN(setup.secret, bootstrap.Get(secret_key, deadline.Remaining()));
  }

  // What this rank offers, before anyone is known: the mesh's address (tcp, and shm's crash
  // reports), the UCX worker's address.
  PeerRecord& self = records_[rank_];
  self.rank = rank_;
  self.host_id = options_.host_id;
  self.host_name = options_.host_name;
  self.pid = static_cast<int>(getpid());
  self.order = options_.transports;
  self.order_forced = options_.transports_forced;
  std::optional<tcp::Mesh> mesh;
  if (Has(self.order, ChannelKind::kTcp) || Has(self.order, ChannelKind::kSharedMemory)) {
    std::string ip = options_.listen_ip;
    if (ip.empty()) {
      COHORT_ASSIGN_OR_RETURN(ip, tcp::ChooseListenIp(bootstrap, options_.tcp.interface_name));
    }
    COHORT_ASSIGN_OR_RETURN(mesh, tcp::Mesh::Listen(ip));
    COHORT_LOG(DEBUG) << "rank " << rank_ << " listens for its mesh on " << mesh->Offer();
    if (Has(self.order, ChannelKind::kTcp)) self.offers[int(ChannelKind::kTcp)] = mesh->Offer();
    if (Has(self.order, ChannelKind::kSharedMemory)) {
      self.offers[int(ChannelKind::kSharedMemory)] = mesh->Offer();
    }
  }
#ifdef COHORT_HAVE_UCX
  std::unique_ptr<ucx::UcxChannel> ucx_channel;
  if (Has(self.order, ChannelKind::kUcx)) {
    auto created = ucx::UcxChannel::Create(setup, options_.ucx);
    if (created.ok()) {
      ucx_channel = std::move(*created);
      self.offers[int(ChannelKind::kUcx)] = ucx_channel->Offer();
    } else {
      COHORT_LOG(INFO) << "UCX is not offered by rank " << rank_ << ": "
                       << created.status().message();
    }
  }
#endif
  COHORT_RETURN_IF_ERROR(
      bootstrap.Set(absl::StrCat(prefix, "/peer/", rank_), self.Serialize()));
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    auto text = bootstrap.Get(absl::StrCat(prefix, "/peer/", peer), deadline.Remaining());
    if (!text.ok()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", rank_, " waited for rank ", peer, " to publish its address in the bootstrap: ",
          text.status().message(), ". Is rank ", peer, " running with the same world size?"));
    }
    COHORT_ASSIGN_OR_RETURN(records_[peer], PeerRecord::Parse(*text));
    if (records_[peer].rank != peer) {
      return absl::DataLossError(absl::StrCat("the bootstrap's record of rank ", peer,
                                              " names rank ", records_[peer].rank,
                                              "; is another job using the same store prefix?"));
    }
  }
  setup.records = &records_;

  // Every pair's channel, as both of its ends choose it.
  std::vector<int> served[kChannelKinds];
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    COHORT_ASSIGN_OR_RETURN(kinds_[peer], ChooseChannel(self, records_[peer]));
    served[static_cast<int>(kinds_[peer])].push_back(peer);
  }
  // The lane needs every pair of the communicator on shared memory, as every rank sees it.
  bool lane = options_.shm.lane_bytes > 0 &&
              static_cast<int>(served[int(ChannelKind::kSharedMemory)].size()) == size_ - 1 &&
              size_ > 1;
  for (int a = 0; lane && a < size_; ++a) {
    for (int b = a + 1; lane && b < size_; ++b) {
      auto kind = ChooseChannel(records_[a], records_[b]);
      lane = kind.ok() && *kind == ChannelKind::kSharedMemory;
    }
  }

  const std::vector<int>& tcp_peers = served[int(ChannelKind::kTcp)];
  const std::vector<int>& shm_peers = served[int(ChannelKind::kSharedMemory)];
  if (!tcp_peers.empty() || !shm_peers.empty()) {
    std::vector<int> mesh_peers = tcp_peers;
    mesh_peers.insert(mesh_peers.end(), shm_peers.begin(), shm_peers.end());
    COHORT_ASSIGN_OR_RETURN(std::vector<Fd> sockets, mesh->Connect(setup, mesh_peers));
    if (!tcp_peers.empty()) {
      COHORT_ASSIGN_OR_RETURN(auto channel,
                              tcp::TcpChannel::Create(setup, tcp_peers, sockets, options_.tcp));
      channels_.push_back(std::move(channel));
    }
    if (!shm_peers.empty()) {
      COHORT_ASSIGN_OR_RETURN(auto channel, shm::ShmChannel::Create(setup, shm_peers, sockets,
                                                                    lane, options_.shm));
      shm_ = channel.get();
      channels_.push_back(std::move(channel));
    }
  }
#ifdef COHORT_HAVE_UCX
  const std::vector<int>& ucx_peers = served[int(ChannelKind::kUcx)];
  if (!ucx_peers.empty()) {
    COHORT_RETURN_IF_ERROR(ucx_channel->Connect(setup, ucx_peers));
    channels_.push_back(std::move(ucx_channel));
  }
#endif
  for (auto& channel : channels_) {
    for (int peer = 0; peer < size_; ++peer) {
      if (peer != rank_ && kinds_[peer] == channel->kind()) peers_[peer].channel = channel.get();
    }
    if (!channel->polled()) descriptor_channels_.push_back(channel.get());
  }

  epoll_.Reset(epoll_create1(EPOLL_CLOEXEC));
  wake_.Reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!epoll_.valid() || !wake_.valid()) {
    return absl::InternalError(absl::StrCat("epoll/eventfd: ", std::strerror(errno)));
  }
  auto watch = [&](int fd, uint32_t index) -> absl::Status {
    epoll_event event = {};
    event.events = EPOLLIN;
    event.data.u32 = index;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  };
  COHORT_RETURN_IF_ERROR(watch(wake_.get(), 0));
  for (size_t index = 0; index < channels_.size(); ++index) {
    if (channels_[index]->event_fd() >= 0) {
      COHORT_RETURN_IF_ERROR(watch(channels_[index]->event_fd(), static_cast<uint32_t>(index + 1)));
    }
  }
  COHORT_LOG(DEBUG) << "transport connected: rank " << rank_ << " of " << size_ << ", "
                    << tcp_peers.size() << " peers on tcp, " << shm_peers.size()
                    << " on shm, " << served[int(ChannelKind::kUcx)].size() << " on ucx";
  return absl::OkStatus();
}

absl::Status Protocol::Fail(absl::Status status) {
  if (failure_.ok()) failure_ = status;
  return failure_;
}

absl::Status Protocol::LostError(int peer, const std::string& why) const {
  return WithBlame(
      absl::UnavailableError(absl::StrCat("lost connection to ", Name(peer), ": ", why,
                                          ". The process of rank ", peer,
                                          " probably died or was killed; check its log and exit "
                                          "status")),
      peer, Blame::kLost);
}

void Protocol::NoteFailure(int rank, Blame blame) {
  if (rank >= 0 && rank < size_ && rank != rank_ && blame != Blame::kNone &&
      failed_[rank] == Blame::kNone) {
    failed_[rank] = blame;
  }
}

int Protocol::StoppedLocalPeer() const {
  for (int rank = 0; rank < size_; ++rank) {
    if (rank == rank_ || records_[rank].host_id != records_[rank_].host_id) continue;
    if (ProcessStopped(records_[rank].pid)) return rank;
  }
  return -1;
}

bool Protocol::ProbePeer(int peer) {
  if (peer < 0 || peer >= size_ || peer == rank_ || peers_[peer].channel == nullptr) return false;
  return peers_[peer].channel->Probe(conn_of_[peer]);
}

uint64_t Protocol::ProbeAnswers(int peer) const {
  if (peer < 0 || peer >= size_ || peer == rank_ || peers_[peer].channel == nullptr) return 0;
  return peers_[peer].channel->ProbeAnswers(conn_of_[peer]);
}

ConnectionSet::ChannelClaim Protocol::ChannelClaimer() {
  return [this](int rank, uint64_t id, char* data, void* token) -> absl::Status {
    if (peers_[rank].channel == nullptr) {
      return absl::InternalError(absl::StrCat("no channel to claim a frame of rank ", rank));
    }
    return peers_[rank].channel->Claim(conn_of_[rank], id, data, token);
  };
}

absl::Status Protocol::ClaimFrame(int rank, uint64_t id, Request* request) {
  if (ConnectionSet::Holds(id)) {
    return connections_->Claim(conn_of_[rank], id, request->data, Tagged(request, kRequestToken));
  }
  return peers_[rank].channel->Claim(conn_of_[rank], id, request->data,
                                     Tagged(request, kRequestToken));
}

absl::Status Protocol::OnPeerClosed(int rank, const std::string& why) {
  Peer& peer = peers_[rank];
  peer.closed = true;
  bool expected_more = !peer.posted.empty() || peer.in_progress > 0 || !any_source_.empty() ||
                       (peer.channel != nullptr && peer.channel->HasPendingSends(conn_of_[rank]));
  if (peer.goodbye_received && !expected_more) return absl::OkStatus();  // a clean close
  if (peer.goodbye_received) {
    return Fail(absl::FailedPreconditionError(
        absl::StrCat(Name(rank), " closed its communicator while rank ", rank_,
                     " still expected data from it; every rank must issue the same operations "
                     "before destroying the communicator")));
  }
  NoteFailure(rank, Blame::kLost);
  return Fail(LostError(rank, why));
}

bool Protocol::Matches(const Request& request, const FrameHeader& header) const {
  if (request.header.kind != header.kind || request.header.tag != header.tag) return false;
  if (header.kind == static_cast<uint8_t>(FrameKind::kCollective)) {
    return request.header.sequence == header.sequence;
  }
  return true;
}

absl::Status Protocol::CheckFingerprint(int peer, const FrameHeader& header) const {
  if (header.kind != static_cast<uint8_t>(FrameKind::kCollective)) return absl::OkStatus();
  if (header.sequence != current_.sequence) return absl::OkStatus();
  Fingerprint theirs = header.fingerprint();
  if (theirs.SameCall(current_)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "collective mismatch at operation #", current_.sequence, ": ", Name(peer), " called ",
      theirs.Describe(), " but rank ", rank_, " (", PeerHost(rank_), ") called ",
      current_.Describe(), ". Every rank must issue the same collectives in the same order "
      "with the same sizes, types and roots"));
}

absl::Status Protocol::SizeMismatch(int peer, uint64_t sent, size_t expected,
                                    bool collective) const {
  return absl::FailedPreconditionError(absl::StrCat(
      Name(peer), " sent ", sent, " bytes but rank ", rank_, " expected ", expected,
      collective ? " for " : "", collective ? current_.Describe() : " for a point-to-point message",
      "; sizes must agree on every rank"));
}

absl::Status Protocol::BeginCollective(const Fingerprint& fingerprint) {
  current_ = fingerprint;
  if (!failure_.ok()) return failure_;
  for (int rank = 0; rank < size_; ++rank) {
    for (const Early& early : peers_[rank].early) {
      absl::Status status = CheckFingerprint(rank, early.header);
      if (!status.ok()) return Fail(status);
    }
  }
  return absl::OkStatus();
}

Request* Protocol::TakeMatch(Peer& peer, const FrameHeader& header) {
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

absl::StatusOr<Landing> Protocol::OnFrame(int rank, const FrameHeader& header,
                                          uint64_t deferred_id) {
  Peer& peer = peers_[rank];
  FrameKind kind = static_cast<FrameKind>(header.kind);
  if (kind == FrameKind::kAbort) {
    if (header.length > kMaxAbortBytes) return Fail(LostError(rank, "malformed abort frame"));
    peer.control.assign(header.length, '\0');
    peer.abort_blamed = header.root;
    peer.abort_blame = header.tag <= static_cast<uint32_t>(Blame::kRemoved)
                           ? static_cast<Blame>(header.tag)
                           : Blame::kNone;
    ++peer.in_progress;
    return Landing{peer.control.data(), Tagged(&peer, kAbortToken)};
  }
  if (kind == FrameKind::kGoodbye) {
    peer.goodbye_received = true;
    return Landing{};
  }
  if (kind != FrameKind::kCollective && kind != FrameKind::kPointToPoint) {
    return Fail(
        LostError(rank, absl::StrCat("unknown frame kind ", header.kind, " (corrupt stream)")));
  }
  if (kind == FrameKind::kCollective) {
    if (header.sequence < current_.sequence) {
      return Fail(absl::InternalError(absl::StrCat(Name(rank), " sent data for finished operation #",
                                                   header.sequence, " while rank ", rank_, " runs #",
                                                   current_.sequence)));
    }
    absl::Status status = CheckFingerprint(rank, header);
    if (!status.ok()) return Fail(status);
  }
  Request* request = TakeMatch(peer, header);
  if (request != nullptr) {
    if (header.length != request->length) {
      return Fail(SizeMismatch(rank, header.length, request->length,
                               kind == FrameKind::kCollective));
    }
    request->peer = rank;
    ++peer.in_progress;
    return Landing{request->data, Tagged(request, kRequestToken)};
  }
  Early& early = peer.early.emplace_back();
  early.header = header;
  ++peer.in_progress;
  if (header.length <= options_.eager_bytes) {
    early.data.assign(header.length, '\0');
    return Landing{early.data.data(), Tagged(&early, kEarlyToken)};
  }
  early.deferred = true;  // claimed when its receive is posted
  early.deferred_id = deferred_id;
  return Landing{};
}

absl::Status Protocol::OnPayload(int rank, void* token) {
  if (token == nullptr) return absl::OkStatus();
  Peer& peer = peers_[rank];
  --peer.in_progress;
  switch (TagOf(token)) {
    case kRequestToken: {
      Request* request = Untagged<Request>(token);
      request->transferred = request->length;
      request->complete = true;
      return absl::OkStatus();
    }
    case kEarlyToken: {
      Early* early = Untagged<Early>(token);
      early->arrived = true;
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
      return absl::OkStatus();
    }
    case kAbortToken: {
      absl::Status aborted = absl::AbortedError(absl::StrCat(Name(rank), " failed: ", peer.control));
      if (peer.abort_blame != Blame::kNone && peer.abort_blamed >= 0 &&
          peer.abort_blamed < size_) {
        NoteFailure(peer.abort_blamed, peer.abort_blame);
        aborted = WithBlame(std::move(aborted), peer.abort_blamed, peer.abort_blame);
      }
      return Fail(std::move(aborted));
    }
  }
  return absl::InternalError("bad landing token");
}

void Protocol::PostSend(Request* request) {
  request->direction = Request::Direction::kSend;
  if (!failure_.ok()) return;
  request->header.set_epoch(epoch_);
  const int peer = request->peer;
  MarkUsed(peer);
  request->peer = conn_of_[peer];  // channels know connection ranks, and read it only here
  absl::Status status = peers_[peer].channel->Send(request);
  request->peer = peer;
  if (!status.ok()) (void)Fail(status);
}

void Protocol::PostRecv(Request* request) {
  request->direction = Request::Direction::kRecv;
  request->transferred = 0;
  request->complete = false;
  MarkUsed(request->peer);
  int first = request->peer == kAnySource ? 0 : request->peer;
  int last = request->peer == kAnySource ? size_ - 1 : request->peer;
  for (int rank = first; rank <= last; ++rank) {
    if (rank == rank_) continue;
    Peer& peer = peers_[rank];
    for (auto it = peer.early.begin(); it != peer.early.end(); ++it) {
      if (it->claimed_by != nullptr || !Matches(*request, it->header)) continue;
      if (it->header.length != request->length) {
        (void)Fail(SizeMismatch(rank, it->header.length, request->length,
                                it->header.kind == static_cast<uint8_t>(FrameKind::kCollective)));
        return;
      }
      request->peer = rank;
      if (it->deferred) {
        uint64_t id = it->deferred_id;
        peer.early.erase(it);  // still in progress: the claim lands it in the request
        if (!failure_.ok()) return;
        absl::Status status = ClaimFrame(rank, id, request);
        if (!status.ok()) (void)Fail(status);
        return;
      }
      if (it->arrived) {
        if (request->length > 0) std::memcpy(request->data, it->data.data(), request->length);
        request->transferred = request->length;
        request->complete = true;
        peer.early.erase(it);
      } else {
        it->claimed_by = request;
      }
      return;
    }
  }
  if (request->peer == kAnySource) {
    any_source_.push_back(request);
  } else {
    peers_[request->peer].posted.push_back(request);
  }
}

bool Protocol::SleepsInSlices() const {
  for (const Channel* channel : descriptor_channels_) {
    if (channel->SleepSliceMillis() >= 0) return true;
  }
  return false;
}

bool Protocol::DescriptorWorkPending() const {
  if (descriptor_channels_.empty()) return false;
  for (int rank = 0; rank < size_; ++rank) {
    const Peer& peer = peers_[rank];
    if (rank == rank_ || peer.channel == nullptr || peer.channel->polled() || peer.closed) {
      continue;
    }
    if (!any_source_.empty() || !peer.posted.empty() || peer.in_progress > 0 ||
        peer.channel->HasPendingSends(conn_of_[rank])) {
      return true;
    }
  }
  return false;
}

absl::Status Protocol::PollDescriptors(int timeout_ms) {
  bool moved = false;
  if (timeout_ms != 0) {
    for (Channel* channel : descriptor_channels_) {
      if (!channel->PrepareToSleep()) timeout_ms = 0;  // events already pending
      const int slice = channel->SleepSliceMillis();
      if (slice >= 0 && (timeout_ms < 0 || timeout_ms > slice)) timeout_ms = slice;
    }
    epoll_event events[8];
    int ready = timeout_ms == 0 ? 0 : epoll_wait(epoll_.get(), events, 8, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      return Fail(absl::InternalError(absl::StrCat("epoll_wait: ", std::strerror(errno))));
    }
    for (int i = 0; i < ready; ++i) {
      if (events[i].data.u32 == 0) {
        uint64_t value;
        ssize_t ignored = ::read(wake_.get(), &value, sizeof(value));
        (void)ignored;
      } else if (shm_ != nullptr && channels_[events[i].data.u32 - 1].get() == shm_) {
        absl::Status status = shm_->CheckSockets();
        if (!status.ok()) return Fail(status);
      }
    }
  }
  for (Channel* channel : descriptor_channels_) {
    absl::Status status = channel->Poll(&moved);
    if (!status.ok()) return Fail(status);
  }
  return failure_;
}

absl::Status Protocol::Progress(int timeout_ms) {
  if (!failure_.ok()) return failure_;
  if (shm_ == nullptr) return PollDescriptors(timeout_ms);
  bool moved = false;
  absl::Status status = shm_->Poll(&moved);
  if (!status.ok()) return Fail(status);
  if (moved || timeout_ms == 0) {
    if (!descriptor_channels_.empty()) return PollDescriptors(0);
    return failure_;
  }
  if (DescriptorWorkPending() || SleepsInSlices()) {
    // Both kinds of peers matter: short epoll slices between looks at shared memory.
    return PollDescriptors(timeout_ms < 0 ? 1 : std::min(timeout_ms, 1));
  }
  // Only peers on shared memory have work: sleep on our doorbell until someone gives us data
  // or room.
  status = shm_->SleepOnMemory(timeout_ms);
  if (!status.ok()) return Fail(status);
  return PollDescriptors(0);
}

absl::Status Protocol::CheckPeers() {
  if (!failure_.ok()) return failure_;
  if (shm_ != nullptr) {
    bool moved = false;
    absl::Status status = shm_->Poll(&moved);
    if (status.ok()) status = shm_->CheckSockets();
    if (!status.ok()) return Fail(status);
  }
  return PollDescriptors(0);
}

void Protocol::Wake() {
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_.get(), &one, sizeof(one));
  (void)ignored;
  for (auto& channel : channels_) channel->Wake();
}

int Protocol::PreferredSpinMicros() const {
  int spin = 0;
  for (const auto& channel : channels_) spin = std::max(spin, channel->PreferredSpinMicros());
  // The channels judge by this host's ranks and cores; other hosts' ranks may share the
  // machine's cores (namespaces, containers), and a busy machine has none to spin on.
  return spin > 0 && !CoresToSpare() ? 0 : spin;
}

ChannelKind Protocol::KindBetween(int a, int b) const {
  if (a == b) return ChannelKind::kSharedMemory;
  if (a == rank_ || b == rank_) return kinds_[a == rank_ ? b : a];
  auto kind = ChooseChannel(records_[a], records_[b]);
  return kind.ok() ? *kind : ChannelKind::kTcp;  // those two failed their creation already
}

bool Protocol::HasRdma(int rank) const {
  return absl::StrContains(records_[rank].offer(ChannelKind::kUcx), "rdma=1");
}

Window* Protocol::WindowTo(int peer) const {
  if (epoch_ > 0) return nullptr;  // a shrunk view: see the top of protocol.h
  Channel* channel = peers_[peer].channel;
  Window* window = channel != nullptr ? channel->window(conn_of_[peer]) : nullptr;
  if (window != nullptr) MarkUsed(peer);
  return window;
}

uint64_t Protocol::WindowPuts() const {
  std::vector<const Window*> counted;
  uint64_t puts = 0;
  for (int peer = 0; peer < size_; ++peer) {
    const Window* window = peer == rank_ ? nullptr : WindowTo(peer);
    if (window == nullptr || std::find(counted.begin(), counted.end(), window) != counted.end()) {
      continue;
    }
    counted.push_back(window);
    puts += window->puts_made;
  }
  return puts;
}

shm::Lane* Protocol::MappedWindow() const {
  // Its mapped view needs no cross-memory access, so it exists even where puts are not allowed.
  if (epoch_ > 0 || shm_ == nullptr) return nullptr;
  shm::Lane* lane = shm_->mapped();
  if (lane != nullptr) kinds_used_ |= uint8_t(1u << static_cast<int>(ChannelKind::kSharedMemory));
  return lane;
}

void Protocol::AbortPeers(const std::string& reason, FailureBlame blame) {
  Deadline deadline = Deadline::In(absl::Seconds(1));
  for (auto& channel : channels_) {
    // The blamed rank is in this view's numbering: the abort frame goes to this view's peers.
    channel->set_control(epoch_, blame.rank, blame.rank >= 0 ? blame.blame : Blame::kNone);
    channel->Abort(reason, deadline);
  }
  DropRequests();
}

void Protocol::DropRequests() {
  for (auto& channel : channels_) channel->DropRequests();
  for (Peer& peer : peers_) {
    peer.posted.clear();
    // Payloads still arriving are discarded by their channels; what has arrived stays.
    for (auto it = peer.early.begin(); it != peer.early.end();) {
      if (it->arrived) {
        it->claimed_by = nullptr;
        ++it;
      } else {
        it = peer.early.erase(it);
      }
    }
    peer.in_progress = 0;
  }
  any_source_.clear();
}

void Protocol::Close(bool clean, Deadline deadline) {
  for (auto& channel : channels_) {
    channel->set_control(epoch_, -1, Blame::kNone);
    channel->Close(clean, deadline);
  }
}

}  // namespace cohort
