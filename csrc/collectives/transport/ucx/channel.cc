// The UCX channel's frame path: sends, arrivals, the reorder window, deferred payloads, lost
// peers, abort and close.
//
// Wire format. A frame is one UCX active message (id kFrameMessage) whose header is a
// WireHeader {number, from, flags, FrameHeader} and whose data is the payload. UCX chooses eager
// or rendezvous by size (UCX_RNDV_THRESH; UcxOptions::rendezvous_bytes forces rendezvous above a
// size). Every send asks for the reply endpoint (UCP_AM_SEND_FLAG_REPLY), so the receiver knows
// which endpoint a frame came on: only the endpoint a peer proved the secret on (connect.cc) is
// accepted, and `from` must name that peer.
//
// Order. UCX does not promise that active messages arrive in the order they were sent (several
// lanes, rendezvous beside eager). `number` counts frames per (sender, receiver) from 0; the
// receiver keeps a window per peer, indexed by number - next_deliver, and hands frames to the
// protocol strictly in that order. Payloads may land out of order (a rendezvous payload still
// moving while a later eager frame is delivered); each has its own OnPayload.
//
// Who owns what.
//  - UCX calls OnFrameMessage inside ucp_worker_progress. It only records the arrival: the
//    header is copied, an eager payload is kept by UCX (UCP_AM_FLAG_PERSISTENT_DATA; the
//    callback returns UCS_INPROGRESS) and a rendezvous descriptor likewise. The protocol is never
//    called from inside UCX; Poll delivers after progress returns.
//  - Delivering: OnFrame answers a buffer (eager: copied into it and UCX's copy released;
//    rendezvous: ucp_am_recv_data_nbx into it, OnPayload when UCX completes it) or defers. A
//    deferred arrival stays in deferred_ (UCX still holding its data) until Claim.
//  - A send: the header lives in a SendSlot until UCX completes the send; the payload is the
//    request's buffer, which UCX may read until then. request->complete is set only then.
//  - DropRequests / Abort: the protocol's buffers are going away. Slots forget their requests;
//    endpoints where UCX still holds one (a send not done, a rendezvous receive) are closed
//    with UCP_EP_CLOSE_FLAG_FORCE, which cancels their operations, and the channel progresses
//    until UCX has called back every one: only then is no buffer of a dropped request in use.
//
// Peer states: not served -> connecting (Connect) -> open -> failed (UCX called the endpoint's
// error handler: reported once through OnPeerClosed, after every frame that arrived before it,
// then force-closed) or closed (Close, DropRequests). A clean close from the peer is its goodbye
// frame, delivered like any frame; UCX reports the endpoint's end later, or never (shared
// memory with a live process), and the protocol judges it.
#include <sys/types.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "collectives/transport/ucx/channel_impl.h"
#include "common/logging.h"

namespace cohort::ucx {
namespace {

std::string EndpointErrorText(ucs_status_t status) {
  switch (status) {
    case UCS_ERR_CONNECTION_RESET:
      return "the connection was reset (UCX: Connection reset by remote peer)";
    case UCS_ERR_ENDPOINT_TIMEOUT:
      // What UCX's tcp transport also says when the peer's socket closes under it.
      return "UCX reported an endpoint timeout (the connection closed, or the peer stopped "
             "answering)";
    default:
      return absl::StrCat("UCX reported \"", UcxStatusText(status), "\" on the endpoint");
  }
}

// The largest gap the reorder window accepts: far beyond any reordering UCX does.
constexpr uint64_t kMaxWindow = 1 << 20;

}  // namespace

UcxChannelImpl::~UcxChannelImpl() {
  if (!closed_) Close(/*clean=*/false, Deadline::In(absl::Milliseconds(200)));
  ReleaseEverything();
  TearDownWindow();
  // The worker goes first, while the slots and peers its last callbacks touch still exist:
  // destroying it completes (cancels) every request UCX still holds, such as the rendezvous
  // operations to a failed peer that UCX 1.13 never completes otherwise.
  context_.reset();
}

// ---- Callbacks (inside ucp_worker_progress) ----

ucs_status_t UcxChannelImpl::OnFrameMessage(void* arg, const void* header, size_t header_length,
                                            void* data, size_t length,
                                            const ucp_am_recv_param_t* param) {
  return static_cast<UcxChannelImpl*>(arg)->Arrive(header, header_length, data, length, param);
}

ucs_status_t UcxChannelImpl::OnHelloMessage(void* arg, const void* header, size_t header_length,
                                            void* data, size_t length,
                                            const ucp_am_recv_param_t* param) {
  (void)data;
  auto* self = static_cast<UcxChannelImpl*>(arg);
  const bool rendezvous = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  if (header_length != sizeof(Hello) || length != 0 ||
      !(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)) {
    ++self->refused_;
    COHORT_LOG(WARN) << "refused a malformed UCX hello (" << header_length << " + " << length
                     << " bytes)";
    return rendezvous ? UCS_ERR_REJECTED : UCS_OK;
  }
  PendingHello pending;
  std::memcpy(&pending.hello, header, sizeof(Hello));
  pending.reply_ep = param->reply_ep;
  self->hellos_.push_back(pending);
  self->moved_ = true;
  return UCS_OK;
}

ucs_status_t UcxChannelImpl::Arrive(const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param) {
  const bool rendezvous = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  const ucs_status_t refuse = rendezvous ? UCS_ERR_REJECTED : UCS_OK;
  WireHeader wire;
  if (header_length != sizeof(WireHeader)) {
    if (refused_++ == 0) {
      COHORT_LOG(WARN) << "refused a UCX frame with a " << header_length
                       << "-byte header (not a cohort frame)";
    }
    return refuse;
  }
  std::memcpy(&wire, header, sizeof(wire));
  const ucp_ep_h reply =
      (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
  if (wire.from < 0 || wire.from >= size_ || !peers_[wire.from].hello_received ||
      reply == nullptr || reply != peers_[wire.from].reply_ep) {
    if (refused_++ == 0) {
      COHORT_LOG(WARN) << "refused a UCX frame claiming rank " << wire.from
                       << " from an endpoint that has not proven the communicator secret";
    }
    return refuse;
  }
  Peer& peer = peers_[wire.from];
  moved_ = true;
  if (peer.ep == nullptr) return refuse;  // closed here: nobody takes it any more
  if (wire.frame.length != length || wire.number < peer.next_deliver ||
      wire.number - peer.next_deliver >= kMaxWindow) {
    if (malformed_.ok()) {
      malformed_ = absl::DataLossError(absl::StrCat(
          "malformed UCX frame from ", Name(peer.rank), ": number ", wire.number, " (expected ",
          peer.next_deliver, " or later), ", length, " payload bytes for a header announcing ",
          wire.frame.length, ". Do all ranks run the same cohort version?"));
    }
    return refuse;
  }
  const size_t index = static_cast<size_t>(wire.number - peer.next_deliver);
  if (peer.window.size() <= index) peer.window.resize(index + 1);
  Arrival& arrival = peer.window[index];
  if (arrival.present) {
    if (malformed_.ok()) {
      malformed_ = absl::DataLossError(
          absl::StrCat("UCX frame number ", wire.number, " from ", Name(peer.rank), " twice"));
    }
    return refuse;
  }
  arrival.header = wire;
  arrival.present = true;
  arrival.rendezvous = rendezvous;
  if (!peer.ready_listed) {
    peer.ready_listed = true;
    ready_peers_.push_back(peer.rank);
  }
  if (length == 0) return UCS_OK;
  if (rendezvous || (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA)) {
    arrival.data = data;
    return UCS_INPROGRESS;
  }
  // UCX promised persistent data (UCP_AM_FLAG_PERSISTENT_DATA); should it not keep it, copy.
  arrival.copy.reset(new char[length]);
  std::memcpy(arrival.copy.get(), data, length);
  return UCS_OK;
}

void UcxChannelImpl::OnSendDone(void* request, ucs_status_t status, void* user_data) {
  auto* slot = static_cast<SendSlot*>(user_data);
  UcxChannelImpl* self = slot->channel;
  Peer& peer = self->peers_[slot->peer];
  --peer.sends_in_flight;
  if (slot->borrowed) --peer.borrowed_in_flight;
  if (slot->request != nullptr) {
    if (status == UCS_OK) {
      slot->request->transferred = slot->request->length;
      slot->request->complete = true;
    }
  }
  if (status != UCS_OK && status != UCS_ERR_CANCELED && !peer.failed && peer.ep != nullptr) {
    self->PeerFailed(peer, EndpointErrorText(status));
  }
  self->moved_ = true;
  self->FreeSendSlot(slot);
  Ucx().ucp_request_free(request);
}

void UcxChannelImpl::OnReceiveDone(void* request, ucs_status_t status, size_t length,
                                   void* user_data) {
  (void)length;
  auto* slot = static_cast<ReceiveSlot*>(user_data);
  UcxChannelImpl* self = slot->channel;
  --self->peers_[slot->peer].receives_in_flight;
  slot->status = status;
  self->finished_receives_.push_back(slot);
  self->moved_ = true;
  Ucx().ucp_request_free(request);
}

void UcxChannelImpl::OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  if (peer->ep != ep || peer->failed) return;
  peer->channel->PeerFailed(*peer, EndpointErrorText(status));
  peer->channel->moved_ = true;
}

void UcxChannelImpl::PeerFailed(Peer& peer, const std::string& why) {
  if (peer.failed) return;
  peer.failed = true;
  peer.why = why;
  failed_peers_.push_back(peer.rank);
}

// ---- Slots ----

UcxChannelImpl::SendSlot* UcxChannelImpl::AcquireSendSlot() {
  if (free_send_slots_.empty()) {
    SendSlot& slot = send_slots_.emplace_back();
    slot.channel = this;
    return &slot;
  }
  SendSlot* slot = free_send_slots_.back();
  free_send_slots_.pop_back();
  return slot;
}

void UcxChannelImpl::FreeSendSlot(SendSlot* slot) {
  slot->request = nullptr;
  slot->peer = -1;
  slot->signal = -1;
  slot->borrowed = false;
  free_send_slots_.push_back(slot);
}

UcxChannelImpl::ReceiveSlot* UcxChannelImpl::AcquireReceiveSlot() {
  if (free_receive_slots_.empty()) {
    ReceiveSlot& slot = receive_slots_.emplace_back();
    slot.channel = this;
    return &slot;
  }
  ReceiveSlot* slot = free_receive_slots_.back();
  free_receive_slots_.pop_back();
  return slot;
}

void UcxChannelImpl::FreeReceiveSlot(ReceiveSlot* slot) {
  slot->peer = -1;
  slot->token = nullptr;
  slot->forgotten = false;
  slot->status = UCS_OK;
  free_receive_slots_.push_back(slot);
}

// ---- Sending ----

bool UcxChannelImpl::Post(Peer& peer, SendSlot* slot, unsigned id, size_t header_length,
                          const void* payload, size_t length, uint32_t flags) {
  slot->peer = peer.rank;
  ucp_request_param_t param = {};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = &OnSendDone;
  param.user_data = slot;
  param.flags = flags | UCP_AM_SEND_FLAG_REPLY;
  ucs_status_ptr_t handle =
      Ucx().ucp_am_send_nbx(peer.ep, id, slot->header, header_length, payload, length, &param);
  if (handle == nullptr) {
    if (slot->request != nullptr) {
      slot->request->transferred = slot->request->length;
      slot->request->complete = true;
    }
    FreeSendSlot(slot);
    return true;
  }
  if (UCS_PTR_IS_ERR(handle)) {
    PeerFailed(peer, EndpointErrorText(UCS_PTR_STATUS(handle)));
    FreeSendSlot(slot);
    return false;
  }
  ++peer.sends_in_flight;
  if (slot->borrowed) ++peer.borrowed_in_flight;
  return true;
}

absl::Status UcxChannelImpl::Send(Request* request) {
  if (request->peer < 0 || request->peer >= size_ || !peers_[request->peer].served) {
    return absl::InternalError(
        absl::StrCat("the UCX channel does not serve rank ", request->peer));
  }
  Peer& peer = peers_[request->peer];
  request->header.length = request->length;
  request->transferred = 0;
  request->complete = false;
  if (peer.ep == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", rank_, " cannot send to ", Name(peer.rank), ": its UCX endpoint is closed",
        peer.why.empty() ? "" : absl::StrCat(" (", peer.why, ")")));
  }
  SendSlot* slot = AcquireSendSlot();
  WireHeader wire = {peer.next_send++, rank_, 0, request->header};
  std::memcpy(slot->header, &wire, sizeof(wire));
  slot->request = request;
  slot->borrowed = request->length > 0;
  uint32_t flags = 0;
  if (options_.rendezvous_bytes > 0 && request->length >= options_.rendezvous_bytes) {
    flags |= UCP_AM_SEND_FLAG_RNDV;
  }
  // A refusal marks the peer failed; OnPeerClosed reports it from the next Poll.
  (void)Post(peer, slot, kFrameMessage, sizeof(WireHeader), request->data, request->length,
             flags);
  return absl::OkStatus();
}

void UcxChannelImpl::SendOwnFrame(Peer& peer, FrameKind kind, const std::string* payload) {
  if (peer.ep == nullptr || peer.failed) return;
  FrameHeader header = {};
  header.kind = static_cast<uint8_t>(kind);
  header.length = payload == nullptr ? 0 : payload->size();
  WireHeader wire = {peer.next_send++, rank_, 0, header};
  SendSlot* slot = AcquireSendSlot();
  std::memcpy(slot->header, &wire, sizeof(wire));
  (void)Post(peer, slot, kFrameMessage, sizeof(WireHeader),
             payload == nullptr ? nullptr : payload->data(), header.length, 0);
}

bool UcxChannelImpl::HasPendingSends(int peer) const {
  // The protocol's sends and puts; the channel's own frames and window signals do not count.
  return peer >= 0 && peer < size_ && peers_[peer].borrowed_in_flight > 0;
}

// ---- Receiving ----

bool UcxChannelImpl::Progress() {
  bool moved = false;
  // Bounded: a peer streaming small frames must not keep this thread inside UCX forever.
  for (int round = 0; round < 64 && Ucx().ucp_worker_progress(context_->worker()) != 0; ++round) {
    moved = true;
  }
  return moved;
}

absl::Status UcxChannelImpl::Poll(bool* moved) {
  moved_ = false;
  bool progressed = Progress();
  if (!hellos_.empty()) ProcessHellos();
  absl::Status status = Deliver();
  *moved = progressed || moved_;
  return status;
}

absl::Status UcxChannelImpl::Deliver() {
  if (!malformed_.ok()) return malformed_;
  while (!finished_receives_.empty()) {
    ReceiveSlot* slot = finished_receives_.back();
    finished_receives_.pop_back();
    const int rank = slot->peer;
    void* token = slot->token;
    const bool forgotten = slot->forgotten;
    const ucs_status_t status = slot->status;
    FreeReceiveSlot(slot);
    if (forgotten) continue;
    if (status != UCS_OK) {
      Peer& peer = peers_[rank];
      if (!peer.failed && peer.ep != nullptr) {
        PeerFailed(peer, absl::StrCat("a rendezvous receive failed: ", EndpointErrorText(status)));
      }
      continue;
    }
    absl::Status landed = sink_->OnPayload(rank, token);
    if (!landed.ok()) return landed;
  }
  while (!ready_peers_.empty()) {
    Peer& peer = peers_[ready_peers_.back()];
    while (!peer.window.empty() && peer.window.front().present) {
      Arrival arrival = std::move(peer.window.front());
      peer.window.pop_front();
      ++peer.next_deliver;
      absl::Status status = DeliverOne(peer, arrival);
      if (!status.ok()) return status;  // the rest stays queued (the protocol has failed)
    }
    peer.ready_listed = false;
    ready_peers_.pop_back();
  }
  return ReportFailures();
}

absl::Status UcxChannelImpl::DeliverOne(Peer& peer, Arrival& arrival) {
  const uint64_t id = next_deferred_id_++;
  absl::StatusOr<Landing> landing = sink_->OnFrame(peer.rank, arrival.header.frame, id);
  if (!landing.ok()) {
    Release(arrival);
    return landing.status();
  }
  if (arrival.header.frame.length == 0) return sink_->OnPayload(peer.rank, landing->token);
  if (landing->discard) {
    Release(arrival);  // a revoked view's frame: UCX drops it (a rendezvous is never fetched)
    return absl::OkStatus();
  }
  if (landing->data == nullptr) {
    deferred_.emplace(id, Deferred{peer.rank, std::move(arrival)});
    return absl::OkStatus();
  }
  return Land(peer, arrival, landing->data, landing->token);
}

absl::Status UcxChannelImpl::Land(Peer& peer, Arrival& arrival, char* data, void* token) {
  const size_t length = arrival.header.frame.length;
  if (!arrival.rendezvous) {
    std::memcpy(data, arrival.copy != nullptr ? arrival.copy.get() : arrival.data, length);
    Release(arrival);
    return sink_->OnPayload(peer.rank, token);
  }
  ReceiveSlot* slot = AcquireReceiveSlot();
  slot->peer = peer.rank;
  slot->token = token;
  ucp_request_param_t param = {};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.recv_am = &OnReceiveDone;
  param.user_data = slot;
  void* descriptor = arrival.data;
  arrival.data = nullptr;  // UCX owns it from here, whatever the outcome
  ucs_status_ptr_t handle =
      Ucx().ucp_am_recv_data_nbx(context_->worker(), descriptor, data, length, &param);
  if (handle == nullptr) {
    FreeReceiveSlot(slot);
    return sink_->OnPayload(peer.rank, token);
  }
  if (UCS_PTR_IS_ERR(handle)) {
    FreeReceiveSlot(slot);
    if (!peer.failed && peer.ep != nullptr) {
      PeerFailed(peer, absl::StrCat("a rendezvous receive failed: ",
                                    EndpointErrorText(UCS_PTR_STATUS(handle))));
    }
    return absl::OkStatus();
  }
  ++peer.receives_in_flight;
  return absl::OkStatus();
}

absl::Status UcxChannelImpl::Claim(int peer, uint64_t deferred_id, char* data, void* token) {
  auto it = deferred_.find(deferred_id);
  if (it == deferred_.end() || it->second.peer != peer) {
    return absl::InternalError(absl::StrCat("UCX channel: no deferred frame ", deferred_id,
                                            " from rank ", peer));
  }
  Arrival arrival = std::move(it->second.arrival);
  deferred_.erase(it);
  return Land(peers_[peer], arrival, data, token);
}

void UcxChannelImpl::Release(Arrival& arrival) {
  if (arrival.data != nullptr) Ucx().ucp_am_data_release(context_->worker(), arrival.data);
  arrival.data = nullptr;
  arrival.copy.reset();
}

absl::Status UcxChannelImpl::ReportFailures() {
  while (!failed_peers_.empty()) {
    Peer& peer = peers_[failed_peers_.front()];
    failed_peers_.erase(failed_peers_.begin());
    if (peer.reported) continue;
    peer.reported = true;
    // UCX wants a failed endpoint closed by force; its pending operations end cancelled.
    ForceClose(peer);
    absl::Status verdict = sink_->OnPeerClosed(peer.rank, peer.why);
    if (!verdict.ok()) return verdict;
  }
  return absl::OkStatus();
}

bool UcxChannelImpl::PrepareToSleep() {
  if (!ready_peers_.empty() || !finished_receives_.empty() || !failed_peers_.empty() ||
      !hellos_.empty() || !malformed_.ok()) {
    return false;
  }
  return Ucx().ucp_worker_arm(context_->worker()) == UCS_OK;
}

// ---- Closing ----

void UcxChannelImpl::ForceClose(Peer& peer) {
  if (peer.ep == nullptr) return;
  ucp_request_param_t param = {};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t handle = Ucx().ucp_ep_close_nbx(peer.ep, &param);
  peer.ep = nullptr;
  if (handle != nullptr && !UCS_PTR_IS_ERR(handle)) closing_.push_back(handle);
}

void UcxChannelImpl::CloseFlushed(Peer& peer) {
  if (peer.ep == nullptr) return;
  ucp_request_param_t param = {};
  ucs_status_ptr_t handle = Ucx().ucp_ep_close_nbx(peer.ep, &param);
  peer.ep = nullptr;
  if (handle != nullptr && !UCS_PTR_IS_ERR(handle)) closing_.push_back(handle);
}

void UcxChannelImpl::WaitForCloses(Deadline deadline) {
  auto busy = [&] {
    for (void* handle : closing_) {
      if (Ucx().ucp_request_check_status(handle) == UCS_INPROGRESS) return true;
    }
    for (const Peer& peer : peers_) {
      if (peer.ep == nullptr && !peer.failed &&
          (peer.borrowed_in_flight > 0 || peer.receives_in_flight > 0)) {
        return true;
      }
    }
    return false;
  };
  while (busy() && !deadline.Expired()) {
    if (!Progress()) WaitForEvents(deadline.RemainingMillis(10));
  }
  for (void* handle : closing_) Ucx().ucp_request_free(handle);
  closing_.clear();
}

std::vector<bool> UcxChannelImpl::Flush(Deadline deadline) {
  std::vector<void*> flushes(size_, nullptr);
  std::vector<bool> flushed(size_, false);
  for (Peer& peer : peers_) {
    if (peer.ep == nullptr || peer.failed) continue;
    ucp_request_param_t param = {};
    ucs_status_ptr_t handle = Ucx().ucp_ep_flush_nbx(peer.ep, &param);
    if (handle == nullptr) {
      flushed[peer.rank] = true;
    } else if (!UCS_PTR_IS_ERR(handle)) {
      flushes[peer.rank] = handle;
    }
  }
  while (!deadline.Expired()) {
    bool waiting = false;
    for (int rank = 0; rank < size_; ++rank) {
      if (flushes[rank] == nullptr) continue;
      ucs_status_t status = Ucx().ucp_request_check_status(flushes[rank]);
      if (status == UCS_INPROGRESS) {
        waiting = true;
        continue;
      }
      flushed[rank] = status == UCS_OK;
      Ucx().ucp_request_free(flushes[rank]);
      flushes[rank] = nullptr;
    }
    if (!waiting) break;
    if (!Progress()) WaitForEvents(deadline.RemainingMillis(10));
  }
  for (void* handle : flushes) {
    if (handle != nullptr) Ucx().ucp_request_free(handle);  // UCX frees it when it finishes
  }
  return flushed;
}

void UcxChannelImpl::ForgetRequests() {
  for (SendSlot& slot : send_slots_) slot.request = nullptr;
  for (ReceiveSlot& slot : receive_slots_) slot.forgotten = true;
  // Endpoints where UCX still reads from or writes into a protocol buffer: cancel by force.
  // A force close completes the endpoint's operations (cancelled) from within progress, and
  // UCX does not touch their buffers afterwards. Not so for an endpoint UCX declared failed
  // (its peer is gone): UCX 1.13 leaves its rendezvous operations pending for good, so nothing
  // is waited for there; no data can come from a dead peer any more, and what it sent before
  // dying was taken by the progress that reported the failure.
  bool closed_any = false;
  for (Peer& peer : peers_) {
    if (peer.ep != nullptr && (peer.borrowed_in_flight > 0 || peer.receives_in_flight > 0)) {
      ForceClose(peer);
      closed_any = true;
    }
  }
  if (closed_any) {
    const absl::Duration limit = absl::Seconds(2);
    WaitForCloses(Deadline::In(limit));
    for (const Peer& peer : peers_) {
      if (peer.ep == nullptr && !peer.failed &&
          (peer.borrowed_in_flight > 0 || peer.receives_in_flight > 0)) {
        COHORT_LOG(ERROR) << "UCX has not cancelled " << peer.borrowed_in_flight << " sends and "
                          << peer.receives_in_flight << " receives to " << Name(peer.rank) << " "
                          << absl::FormatDuration(limit) << " after their endpoint was closed";
      }
    }
  }
}

void UcxChannelImpl::DropRequests() { ForgetRequests(); }

void UcxChannelImpl::Abort(const std::string& reason, Deadline deadline) {
  if (closed_) return;
  abort_text_ = reason.substr(0, 4096);
  for (Peer& peer : peers_) {
    if (peer.served) SendOwnFrame(peer, FrameKind::kAbort, &abort_text_);
  }
  // The abort frames reach the peers before anything is cancelled (a flush waits for remote
  // completion of everything sent on the endpoint), within the deadline.
  Flush(deadline);
  ForgetRequests();
}

void UcxChannelImpl::Close(bool clean, Deadline deadline) {
  if (closed_) return;
  closed_ = true;
  if (clean) {
    for (Peer& peer : peers_) {
      if (peer.served) SendOwnFrame(peer, FrameKind::kGoodbye, nullptr);
    }
    std::vector<bool> flushed = Flush(deadline);
    for (Peer& peer : peers_) {
      if (flushed[peer.rank]) {
        CloseFlushed(peer);
      } else {
        ForceClose(peer);
      }
    }
  } else {
    // After a failure: keep the endpoints a moment, until the peers have gone or a quarter
    // second, so that what is still in flight both ways (the abort frames) is taken rather
    // than cut off by a reset. Not the whole deadline: over shared memory UCX notices a peer's
    // close only when its process ends, and healthy peers keep running.
    auto any_open = [&] {
      for (const Peer& peer : peers_) {
        if (peer.ep != nullptr && !peer.failed) return true;
      }
      return false;
    };
    const Deadline linger = deadline.Earlier(Deadline::In(absl::Milliseconds(250)));
    while (any_open() && !linger.Expired()) {
      if (!Progress()) WaitForEvents(linger.RemainingMillis(10));
      // Nobody takes frames now; let UCX have their memory back.
      for (Peer& peer : peers_) {
        for (Arrival& arrival : peer.window) Release(arrival);
        peer.window.clear();
      }
    }
    for (Peer& peer : peers_) ForceClose(peer);
  }
  // Whatever the deadline left, UCX gets a moment to finish the closes it has begun.
  WaitForCloses(Deadline::In(absl::Milliseconds(std::max(100, deadline.RemainingMillis(1000)))));
  ReleaseEverything();
}

void UcxChannelImpl::ReleaseEverything() {
  for (Peer& peer : peers_) {
    for (Arrival& arrival : peer.window) Release(arrival);
    peer.window.clear();
  }
  for (auto& [id, deferred] : deferred_) Release(deferred.arrival);
  deferred_.clear();
  ready_peers_.clear();
  for (Peer& peer : peers_) peer.ready_listed = false;
}

}  // namespace cohort::ucx
