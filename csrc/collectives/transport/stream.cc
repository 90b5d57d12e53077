#include "collectives/transport/stream.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr size_t kStagingBytes = 64 << 10;
constexpr size_t kDirectReadMin = 4096;  // payload remainders at least this big skip staging
constexpr int kMaxIov = 64;
// Bytes handed to one write: small enough that reading the other direction is not starved.
constexpr size_t kMaxSendBytes = 1 << 20;

bool WouldBlock() { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

}  // namespace

StreamChannel::StreamChannel(int rank, int size, FrameSink* sink)
    : rank_(rank), size_(size), sink_(sink), peers_(size) {
  for (int peer = 0; peer < size; ++peer) peers_[peer].rank = peer;
}

std::string StreamChannel::Name(int rank) const { return absl::StrCat("rank ", rank); }

size_t StreamChannel::PayloadBytes(const Request& request) const {
  return (request.header.reserved & kFrameRemote) ? sizeof(request.channel_data) : request.length;
}

const char* StreamChannel::PayloadData(const Request& request) const {
  return (request.header.reserved & kFrameRemote)
             ? reinterpret_cast<const char*>(request.channel_data)
             : request.data;
}

bool StreamChannel::HasPendingSends(int peer) const {
  const Peer& state = peers_[peer];
  return !state.sends.empty() || !state.awaiting_ack.empty();
}

absl::Status StreamChannel::Lost(Peer& peer, const std::string& why) {
  if (peer.closed) return absl::OkStatus();
  peer.closed = true;
  Forget(peer);
  return sink_->OnPeerClosed(peer.rank, why);
}

absl::Status StreamChannel::Send(Request* request) {
  Peer& peer = peers_[request->peer];
  request->header.length = request->length;
  request->header.reserved &= ~kFrameRemote;
  request->transferred = 0;
  request->complete = false;
  if (SendsRemote(peer, *request)) {
    // The peer copies the payload straight out of this process: one copy instead of two.
    request->header.reserved |= kFrameRemote;
    request->channel_data[0] = reinterpret_cast<uint64_t>(request->data);
    request->channel_data[1] = ++peer.remote_ids;  // the acknowledgement names it
  }
  peer.sends.push_back(request);
  if (peer.sends.size() == 1 && !peer.closed) return FlushSends(peer, /*once=*/false);
  return absl::OkStatus();
}

void StreamChannel::QueueAck(Peer& peer, uint64_t id) { QueueOwn(peer, FrameKind::kAck, id); }

void StreamChannel::QueueOwn(Peer& peer, FrameKind kind, uint64_t sequence) {
  while (!peer.owned.empty() && peer.owned.front().complete) peer.owned.pop_front();
  Request& frame = peer.owned.emplace_back();
  frame.peer = peer.rank;
  frame.header.kind = static_cast<uint8_t>(kind);
  frame.header.sequence = sequence;
  peer.sends.push_back(&frame);
}

bool StreamChannel::Probe(int rank) {
  Peer& peer = peers_[rank];
  if (peer.closed || peer.send_mid_frame) return false;
  QueueOwn(peer, FrameKind::kProbe, 0);
  if (peer.sends.size() == 1) (void)FlushSends(peer, /*once=*/false);
  return true;
}

absl::Status StreamChannel::CopyRemote(Peer& peer, const FrameHeader& header,
                                       const uint64_t descriptor[2], char* data, void* token) {
  bool done = false;
  COHORT_RETURN_IF_ERROR(ReadRemote(peer, data, header.length, descriptor[0], &done));
  if (!done) return absl::OkStatus();  // the sender's abort (or the fault deadline) ends it
  QueueAck(peer, descriptor[1]);
  COHORT_RETURN_IF_ERROR(FlushSends(peer, /*once=*/false));
  return sink_->OnPayload(peer.rank, token);
}

absl::Status StreamChannel::Claim(int rank, uint64_t deferred_id, char* data, void* token) {
  Peer& peer = peers_[rank];
  auto remote = peer.remote_deferred.find(deferred_id);
  if (remote != peer.remote_deferred.end()) {
    FrameHeader header = remote->second.first;
    uint64_t descriptor[2] = {remote->second.second[0], remote->second.second[1]};
    peer.remote_deferred.erase(remote);
    return CopyRemote(peer, header, descriptor, data, token);
  }
  if (peer.state != ReadState::kStalled || peer.stalled_id != deferred_id) {
    return absl::InternalError(absl::StrCat("claimed frame ", deferred_id, " of ", Name(rank),
                                            " is not waiting in the stream"));
  }
  peer.state = ReadState::kPayload;
  peer.landing = {data, token};
  peer.target = data;
  peer.target_got = 0;
  peer.payload_length = peer.header.length;
  Arm(peer);
  return ReadPeer(peer);
}

absl::Status StreamChannel::Announce(Peer& peer, const FrameHeader& header) {
  uint64_t id = ++peer.frames;
  COHORT_ASSIGN_OR_RETURN(Landing landing, sink_->OnFrame(peer.rank, header, id));
  peer.state = ReadState::kHeader;
  if (header.length == 0) return sink_->OnPayload(peer.rank, landing.token);
  if (landing.discard) {
    Skip(peer, header.length, 0);
    return absl::OkStatus();
  }
  if (landing.data == nullptr) {
    peer.state = ReadState::kStalled;  // read it when its receive is posted
    peer.stalled_id = id;
    Arm(peer);
    return absl::OkStatus();
  }
  peer.landing = landing;
  peer.target = landing.data;
  peer.state = ReadState::kPayload;
  return absl::OkStatus();
}

absl::Status StreamChannel::OnHeader(Peer& peer) {
  const FrameHeader& header = peer.header;
  peer.target_got = 0;
  peer.payload_length = header.length;
  peer.reading_descriptor = false;
  peer.discarding = false;
  if (header.kind == static_cast<uint8_t>(FrameKind::kAck)) {
    for (size_t i = 0; i < peer.awaiting_ack.size(); ++i) {
      if (peer.awaiting_ack[i]->channel_data[1] == header.sequence) {
        peer.awaiting_ack[i]->complete = true;
        peer.awaiting_ack[i] = peer.awaiting_ack.back();
        peer.awaiting_ack.pop_back();
        break;
      }
    }
    peer.state = ReadState::kHeader;
    return absl::OkStatus();
  }
  if (header.kind == static_cast<uint8_t>(FrameKind::kProbe)) {
    peer.state = ReadState::kHeader;
    QueueOwn(peer, FrameKind::kProbeReply, 0);
    return FlushSends(peer, /*once=*/true);
  }
  if (header.kind == static_cast<uint8_t>(FrameKind::kProbeReply)) {
    ++peer.probe_answers;
    peer.state = ReadState::kHeader;
    return absl::OkStatus();
  }
  if (header.kind == static_cast<uint8_t>(FrameKind::kAbort)) peer.aborted_in = header.epoch() + 1;
  if (header.reserved & kFrameRemote) {
    // Read the {address, id} descriptor first; the frame is announced when it is complete.
    peer.reading_descriptor = true;
    peer.payload_length = sizeof(peer.descriptor);
    peer.target = reinterpret_cast<char*>(peer.descriptor);
    peer.state = ReadState::kPayload;
    return absl::OkStatus();
  }
  return Announce(peer, header);
}

absl::Status StreamChannel::OnPayloadComplete(Peer& peer) {
  peer.state = ReadState::kHeader;
  if (peer.discarding) {
    peer.discarding = false;
    return absl::OkStatus();
  }
  if (peer.reading_descriptor) {
    peer.reading_descriptor = false;
    // The kFrameRemote bit stays set: whoever defers it knows the stream is not held up.
    FrameHeader header = peer.header;
    uint64_t id = ++peer.frames;
    COHORT_ASSIGN_OR_RETURN(Landing landing, sink_->OnFrame(peer.rank, header, id));
    if (landing.discard) return absl::OkStatus();  // left unread in the sender's memory
    if (landing.data == nullptr && header.length > 0) {
      peer.remote_deferred[id] = {header, {peer.descriptor[0], peer.descriptor[1]}};
      return absl::OkStatus();
    }
    return CopyRemote(peer, header, peer.descriptor, landing.data, landing.token);
  }
  return sink_->OnPayload(peer.rank, peer.landing.token);
}

void StreamChannel::Skip(Peer& peer, size_t length, size_t got) {
  peer.state = ReadState::kPayload;
  peer.discarding = true;
  peer.target = nullptr;
  peer.target_got = got;
  peer.payload_length = length;
}

absl::Status StreamChannel::ReadPeer(Peer& peer) {
  if (peer.closed) return absl::OkStatus();
  if (peer.staging.empty()) peer.staging.resize(kStagingBytes);
  bool drained = false;  // a short read means the stream is empty for now
  while (true) {
    if (peer.state == ReadState::kStalled) return absl::OkStatus();
    size_t staged = peer.staged_end - peer.staged_begin;
    if (peer.state == ReadState::kPayload) {
      size_t remaining = peer.payload_length - peer.target_got;
      if (staged > 0 && remaining > 0) {
        size_t take = std::min(staged, remaining);
        if (!peer.discarding) {
          std::memcpy(peer.target + peer.target_got, peer.staging.data() + peer.staged_begin,
                      take);
        }
        peer.staged_begin += take;
        peer.target_got += take;
        remaining -= take;
      }
      if (remaining == 0) {
        COHORT_RETURN_IF_ERROR(OnPayloadComplete(peer));
        continue;
      }
      if (drained) return absl::OkStatus();
      if (remaining >= kDirectReadMin && !peer.discarding) {
        ssize_t got = StreamRead(peer, peer.target + peer.target_got, remaining);
        if (got > 0) {
          peer.target_got += static_cast<size_t>(got);
          if (static_cast<size_t>(got) < remaining) return absl::OkStatus();
          COHORT_RETURN_IF_ERROR(OnPayloadComplete(peer));
          continue;
        }
        if (got == 0) return Lost(peer, "the peer closed the connection");
        if (WouldBlock()) return absl::OkStatus();
        return Lost(peer, std::strerror(errno));
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
    if (got == 0) return Lost(peer, "the peer closed the connection");
    if (WouldBlock()) return absl::OkStatus();
    return Lost(peer, std::strerror(errno));
  }
}

absl::Status StreamChannel::FlushSends(Peer& peer, bool once) {
  while (!peer.sends.empty() && !peer.closed) {
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
        size_t take =
            std::min(payload - offset, kMaxSendBytes - std::min(requested, kMaxSendBytes));
        if (take == 0) break;
        iov[count++] = {const_cast<char*>(PayloadData(*request)) + offset, take};
        requested += take;
      }
      if (requested >= kMaxSendBytes) break;
    }
    ssize_t wrote = StreamWrite(peer, iov, count);
    if (wrote < 0) {
      if (WouldBlock()) break;
      return Lost(peer, std::strerror(errno));
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

absl::Status StreamChannel::WriteAllNow(Peer& peer, const iovec* iov, int count,
                                        Deadline deadline, bool read_meanwhile) {
  std::vector<iovec> rest(iov, iov + count);
  size_t index = 0;
  while (index < rest.size()) {
    ssize_t wrote = StreamWrite(peer, rest.data() + index, static_cast<int>(rest.size() - index));
    if (wrote < 0) {
      if (!WouldBlock()) {
        return absl::UnavailableError(
            absl::StrCat("writing to ", Name(peer.rank), ": ", std::strerror(errno)));
      }
      if (deadline.Expired()) {
        return absl::DeadlineExceededError(absl::StrCat(Name(peer.rank), " is not reading"));
      }
      if (read_meanwhile) {
        // The peer may be doing the same towards us: take what it sends, so that neither
        // waits for the other (errors change nothing here: this rank is failing already).
        (void)ReadPeer(peer);
        WaitWritable(peer, deadline.Earlier(Deadline::In(absl::Milliseconds(2))));
        continue;
      }
      WaitWritable(peer, deadline);
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

void StreamChannel::Abort(const std::string& reason, Deadline deadline) {
  // Finish half-written frames (their buffers are still alive) so the abort can follow in the
  // same stream; a peer that does not take them within the deadline learns from the close.
  for (int rank : served_) {
    Peer& peer = peers_[rank];
    if (peer.closed || peer.sends.empty()) continue;
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
    if (WriteAllNow(peer, iov, count, deadline, /*read_meanwhile=*/true).ok()) {
      front->transferred = total;
      peer.sends.pop_front();
      if (front->header.reserved & kFrameRemote) peer.awaiting_ack.push_back(front);
    }
  }
  // Nothing more goes out but the abort; remote frames already announced stay readable until
  // the peer has taken them (the subclass waits for that), so it does not read freed memory.
  std::vector<std::vector<Request*>> announced(peers_.size());
  for (Peer& peer : peers_) announced[peer.rank].swap(peer.awaiting_ack);
  DropRequests();
  for (Peer& peer : peers_) peer.awaiting_ack.swap(announced[peer.rank]);
  std::string text = reason.substr(0, 4096);
  FrameHeader header = ControlHeader(FrameKind::kAbort);
  header.length = text.size();
  for (int rank : served_) {
    Peer& peer = peers_[rank];
    if (peer.closed || peer.send_mid_frame) continue;
    iovec iov[2] = {{&header, sizeof(header)}, {text.data(), text.size()}};
    (void)WriteAllNow(peer, iov, 2, Deadline::In(absl::Milliseconds(100)).Earlier(deadline));
  }
}

void StreamChannel::DropRequests() {
  for (int rank : served_) {
    Peer& peer = peers_[rank];
    if (!peer.sends.empty() && peer.sends.front()->transferred > 0) peer.send_mid_frame = true;
    peer.sends.clear();
    peer.awaiting_ack.clear();
    peer.remote_deferred.clear();
    if (peer.state == ReadState::kPayload && !peer.discarding && !peer.reading_descriptor) {
      // Keep the stream in sync: the rest of this payload is read past.
      Skip(peer, peer.payload_length, peer.target_got);
    } else if (peer.state == ReadState::kStalled) {
      // A deferred frame nobody will claim now: read past it, so the stream moves on (a shrunk
      // communicator goes on using it).
      Skip(peer, peer.header.length, 0);
      Arm(peer);
    }
  }
}

void StreamChannel::SayGoodbye(Deadline deadline) {
  FrameHeader header = ControlHeader(FrameKind::kGoodbye);
  for (int rank : served_) {
    Peer& peer = peers_[rank];
    if (peer.closed || !peer.fd.valid() || peer.send_mid_frame) continue;
    iovec iov = {&header, sizeof(header)};
    (void)WriteAllNow(peer, &iov, 1, deadline);
  }
}

void StreamChannel::HalfCloseAndDrain(Deadline deadline) {
  std::vector<pollfd> open;
  for (int rank : served_) {
    Peer& peer = peers_[rank];
    if (peer.closed || !peer.fd.valid()) continue;
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

}  // namespace cohort
