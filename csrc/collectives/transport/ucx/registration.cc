// The UCX channel's registration and window (window.h): buffers peers put into, registered
// with ucp_mem_map and described by their packed remote keys; puts by ucp_put_nbx; signals by
// a fenced atomic add on the peer's signal words.
//
// Registrations are cached by address range (RegistrationCache): a training loop's buffers are
// mapped once. A cached registration must not outlive its memory (over RDMA it pins the old
// pages: a put would land where nobody reads), so the channel listens to UCX's own memory
// events (UCM's VM_UNMAPPED, the hook UCX's registration cache uses) and drops every entry
// overlapping an unmapped range before the next lookup. Where UCX's memory events are off
// (UCX_MEM_EVENTS=n), nothing is cached: every Register maps anew.
//
// Remote keys a peer describes in-band are unpacked once per peer and key (a few kept, most
// recent first). Keys of a failed peer are never destroyed: UCX may still hold operations that
// use them until the worker goes, which frees them.
//
// Ordering: Signal flushes the endpoint (ucp_ep_flush_nbx: every operation issued on it before
// has completed at the peer) and only then adds one to the peer's word, so the peer sees the
// signal after every earlier put has landed. A fence would be cheaper, but UCX 1.13 lets an
// emulated atomic overtake the fragments of an emulated put (tcp, shared memory) despite it.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "collectives/transport/ucx/channel_impl.h"
#include "common/logging.h"

namespace cohort::ucx {
namespace {

constexpr size_t kRemoteKeysPerPeer = 16;
constexpr size_t kCachedRegistrations = 64;
constexpr uint64_t kOne = 1;  // the operand of every signal (UCX may read it after the call)

}  // namespace

absl::Status UcxChannelImpl::SetUpWindow() {
  ucp_mem_map_params_t params = {};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  params.length = sizeof(uint64_t) * Window::kSignalSlots;
  params.flags = UCP_MEM_MAP_ALLOCATE;  // from UCX, so that its own transports can reach it
  ucs_status_t status = Ucx().ucp_mem_map(context_->context(), &params, &signal_memh_);
  if (status != UCS_OK) {
    signal_memh_ = nullptr;
    return absl::UnavailableError(
        absl::StrCat("UCX could not allocate the window's signal words: ", UcxStatusText(status)));
  }
  ucp_mem_attr_t attributes = {};
  attributes.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
  status = Ucx().ucp_mem_query(signal_memh_, &attributes);
  if (status != UCS_OK) {
    return absl::UnavailableError(absl::StrCat("ucp_mem_query: ", UcxStatusText(status)));
  }
  signals_ = static_cast<uint64_t*>(attributes.address);
  std::memset(signals_, 0, sizeof(uint64_t) * Window::kSignalSlots);
  void* packed = nullptr;
  size_t packed_bytes = 0;
  status = Ucx().ucp_rkey_pack(context_->context(), signal_memh_, &packed, &packed_bytes);
  if (status != UCS_OK) {
    return absl::UnavailableError(absl::StrCat("ucp_rkey_pack: ", UcxStatusText(status)));
  }
  signal_key_.assign(static_cast<const char*>(packed), packed_bytes);
  Ucx().ucp_rkey_buffer_release(packed);

  const bool events = Ucx().ucm_set_event_handler != nullptr &&
                      Ucx().ucm_unset_event_handler != nullptr && Ucx().ucm_options != nullptr &&
                      Ucx().ucm_options->enable_events;
  if (events) {
    // NO_INSTALL: UCX installed its hooks for its own cache (or was told not to); add a listener.
    status = Ucx().ucm_set_event_handler(UCM_EVENT_VM_UNMAPPED | UCM_EVENT_FLAG_NO_INSTALL, 1000,
                                         &OnMemoryUnmapped, this);
    watching_unmaps_ = status == UCS_OK;
  }
  if (watching_unmaps_) {
    registrations_ = std::make_unique<RegistrationCache>(
        [this](uintptr_t base, size_t bytes, MemoryKind kind) {
          return MapMemory(base, bytes, kind);
        },
        kCachedRegistrations);
  } else {
    COHORT_LOG(INFO) << "UCX's memory events are off (UCX_MEM_EVENTS): the UCX window registers "
                        "every buffer anew";
  }
  return absl::OkStatus();
}

void UcxChannelImpl::TearDownWindow() {
  if (watching_unmaps_) {
    Ucx().ucm_unset_event_handler(UCM_EVENT_VM_UNMAPPED, &OnMemoryUnmapped, this);
    watching_unmaps_ = false;
  }
  registrations_.reset();  // unmaps what nobody else holds
  for (Peer& peer : peers_) {
    if (!peer.failed) DestroyRemoteKeys(peer);
  }
  if (signal_memh_ != nullptr) {
    Ucx().ucp_mem_unmap(context_->context(), signal_memh_);
    signal_memh_ = nullptr;
    signals_ = nullptr;
  }
}

Window* UcxChannelImpl::window(int rank) {
  if (rank < 0 || rank >= size_) return nullptr;
  const Peer& peer = peers_[rank];
  if (!peer.served || peer.signal_rkey == nullptr) return nullptr;
  windows_used_ = true;
  return this;
}

// ---- Registration ----

void UcxChannelImpl::OnMemoryUnmapped(ucm_event_type_t type, ucm_event_t* event, void* arg) {
  if (type != UCM_EVENT_VM_UNMAPPED) return;
  Unmapped& unmapped = static_cast<UcxChannelImpl*>(arg)->unmapped_;
  while (unmapped.busy.test_and_set(std::memory_order_acquire)) {
  }
  if (unmapped.count < Unmapped::kRanges) {
    unmapped.base[unmapped.count] = reinterpret_cast<uintptr_t>(event->vm_unmapped.address);
    unmapped.bytes[unmapped.count] = event->vm_unmapped.size;
    ++unmapped.count;
  } else {
    unmapped.overflow = true;
  }
  unmapped.busy.clear(std::memory_order_release);
}

void UcxChannelImpl::DrainUnmapped() {
  uintptr_t base[Unmapped::kRanges];
  size_t bytes[Unmapped::kRanges];
  int count;
  bool overflow;
  while (unmapped_.busy.test_and_set(std::memory_order_acquire)) {
  }
  count = unmapped_.count;
  overflow = unmapped_.overflow;
  std::memcpy(base, unmapped_.base, sizeof(uintptr_t) * count);
  std::memcpy(bytes, unmapped_.bytes, sizeof(size_t) * count);
  unmapped_.count = 0;
  unmapped_.overflow = false;
  unmapped_.busy.clear(std::memory_order_release);
  if (overflow) {
    registrations_->Invalidate(0, UINTPTR_MAX);
    return;
  }
  for (int i = 0; i < count; ++i) registrations_->Invalidate(base[i], bytes[i]);
}

absl::StatusOr<std::shared_ptr<const Registration>> UcxChannelImpl::MapMemory(uintptr_t base,
                                                                              size_t bytes,
                                                                              MemoryKind kind) {
  ucp_mem_map_params_t params = {};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = reinterpret_cast<void*>(base);
  params.length = bytes;
  ucp_mem_h memh = nullptr;
  ucs_status_t status = Ucx().ucp_mem_map(context_->context(), &params, &memh);
  if (status != UCS_OK) {
    return absl::UnavailableError(absl::StrCat("UCX could not register ", bytes,
                                               " bytes of ", MemoryKindName(kind),
                                               " memory for a window: ", UcxStatusText(status)));
  }
  ucp_context_h context = context_->context();
  auto registration = std::make_shared<Registration>();
  registration->base = base;
  registration->bytes = bytes;
  registration->kind = kind;
  registration->handle = std::shared_ptr<void>(
      memh, [context](void* handle) { Ucx().ucp_mem_unmap(context, static_cast<ucp_mem_h>(handle)); });
  void* packed = nullptr;
  size_t packed_bytes = 0;
  status = Ucx().ucp_rkey_pack(context, memh, &packed, &packed_bytes);
  if (status != UCS_OK) {
    return absl::UnavailableError(
        absl::StrCat("UCX could not pack the key of a window buffer: ", UcxStatusText(status)));
  }
  registration->key.assign(static_cast<const char*>(packed), packed_bytes);
  Ucx().ucp_rkey_buffer_release(packed);
  return std::shared_ptr<const Registration>(std::move(registration));
}

absl::StatusOr<std::shared_ptr<const Registration>> UcxChannelImpl::Register(const void* base,
                                                                             size_t bytes,
                                                                             MemoryKind kind) {
  if (kind != MemoryKind::kHost) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the UCX window serves host memory, not ", MemoryKindName(kind), " buffers"));
  }
  if (registrations_ == nullptr) return MapMemory(reinterpret_cast<uintptr_t>(base), bytes, kind);
  DrainUnmapped();
  return registrations_->Get(base, bytes, kind);
}

absl::StatusOr<ucp_rkey_h> UcxChannelImpl::RemoteKey(Peer& peer, const std::string& packed) {
  for (auto it = peer.remote_keys.begin(); it != peer.remote_keys.end(); ++it) {
    if (it->first == packed) {
      if (it != peer.remote_keys.begin()) {
        auto entry = *it;
        peer.remote_keys.erase(it);
        peer.remote_keys.push_front(entry);
      }
      return peer.remote_keys.front().second;
    }
  }
  ucp_rkey_h rkey = nullptr;
  ucs_status_t status = Ucx().ucp_ep_rkey_unpack(peer.ep, packed.data(), &rkey);
  if (status != UCS_OK) {
    return absl::DataLossError(absl::StrCat("the window key ", Name(peer.rank),
                                            " described does not unpack: ", UcxStatusText(status)));
  }
  peer.remote_keys.emplace_front(packed, rkey);
  // The oldest key goes only while nothing is in flight to the peer (a put may still use it).
  if (peer.remote_keys.size() > kRemoteKeysPerPeer && peer.sends_in_flight == 0) {
    Ucx().ucp_rkey_destroy(peer.remote_keys.back().second);
    peer.remote_keys.pop_back();
  }
  return rkey;
}

void UcxChannelImpl::DestroyRemoteKeys(Peer& peer) {
  for (auto& [packed, rkey] : peer.remote_keys) Ucx().ucp_rkey_destroy(rkey);
  peer.remote_keys.clear();
  if (peer.signal_rkey != nullptr) Ucx().ucp_rkey_destroy(peer.signal_rkey);
  peer.signal_rkey = nullptr;
}

// ---- Puts and signals ----

absl::Status UcxChannelImpl::Put(int rank, const RemoteBuffer& remote, size_t offset,
                                 const void* local, size_t bytes, Request* request) {
  if (offset + bytes > remote.bytes) {
    return absl::InternalError(absl::StrCat("a put of ", bytes, " bytes at offset ", offset,
                                            " overruns rank ", rank, "'s window of ",
                                            remote.bytes, " bytes"));
  }
  Peer& peer = peers_[rank];
  if (request != nullptr) {
    request->transferred = 0;
    request->complete = false;
  }
  if (peer.ep == nullptr || peer.failed) return absl::OkStatus();  // the loss is reported
  if (bytes == 0) {
    if (request != nullptr) request->complete = true;
    return absl::OkStatus();
  }
  absl::StatusOr<ucp_rkey_h> rkey = RemoteKey(peer, remote.key);
  if (!rkey.ok()) return rkey.status();
  SendSlot* slot = AcquireSendSlot();
  slot->peer = rank;
  slot->request = request;
  slot->borrowed = true;
  ucp_request_param_t param = {};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &OnSendDone;
  param.user_data = slot;
  ucs_status_ptr_t handle =
      Ucx().ucp_put_nbx(peer.ep, local, bytes, remote.address + offset, *rkey, &param);
  if (handle == nullptr) {
    if (request != nullptr) {
      request->transferred = bytes;
      request->complete = true;
    }
    FreeSendSlot(slot);
  } else if (UCS_PTR_IS_ERR(handle)) {
    FreeSendSlot(slot);
    PeerFailed(peer, absl::StrCat("a window put failed: ", UcxStatusText(UCS_PTR_STATUS(handle))));
  } else {
    ++peer.sends_in_flight;
    ++peer.borrowed_in_flight;
  }
  return absl::OkStatus();
}

absl::Status UcxChannelImpl::Signal(int rank, int slot_index) {
  if (slot_index < 0 || slot_index >= Window::kSignalSlots) {
    return absl::InternalError(absl::StrCat("no window signal word ", slot_index));
  }
  Peer& peer = peers_[rank];
  if (peer.ep == nullptr || peer.failed || peer.signal_rkey == nullptr) return absl::OkStatus();
  // Flush first: the signal goes once every earlier put to the peer has landed.
  SendSlot* slot = AcquireSendSlot();
  slot->peer = rank;
  slot->request = nullptr;
  slot->signal = slot_index;
  ucp_request_param_t param = {};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &OnFlushedForSignal;
  param.user_data = slot;
  ucs_status_ptr_t handle = Ucx().ucp_ep_flush_nbx(peer.ep, &param);
  if (handle == nullptr) {
    FreeSendSlot(slot);
    RaiseSignal(peer, slot_index);
  } else if (UCS_PTR_IS_ERR(handle)) {
    FreeSendSlot(slot);
    PeerFailed(peer, absl::StrCat("a window flush failed: ", UcxStatusText(UCS_PTR_STATUS(handle))));
  } else {
    ++peer.sends_in_flight;
  }
  return absl::OkStatus();
}

void UcxChannelImpl::OnFlushedForSignal(void* request, ucs_status_t status, void* user_data) {
  auto* slot = static_cast<SendSlot*>(user_data);
  UcxChannelImpl* self = slot->channel;
  Peer& peer = self->peers_[slot->peer];
  const int signal = slot->signal;
  --peer.sends_in_flight;
  self->FreeSendSlot(slot);
  Ucx().ucp_request_free(request);
  self->moved_ = true;
  if (status == UCS_OK) {
    self->RaiseSignal(peer, signal);  // posting from a callback is allowed; progress is not
  } else if (status != UCS_ERR_CANCELED && !peer.failed && peer.ep != nullptr) {
    self->PeerFailed(peer, absl::StrCat("a window flush failed: ", UcxStatusText(status)));
  }
}

void UcxChannelImpl::RaiseSignal(Peer& peer, int slot_index) {
  if (peer.ep == nullptr || peer.failed) return;
  SendSlot* slot = AcquireSendSlot();
  slot->peer = peer.rank;
  slot->request = nullptr;
  ucp_request_param_t param = {};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
  param.cb.send = &OnSendDone;
  param.user_data = slot;
  param.datatype = ucp_dt_make_contig(sizeof(uint64_t));
  ucs_status_ptr_t handle = Ucx().ucp_atomic_op_nbx(
      peer.ep, UCP_ATOMIC_OP_ADD, &kOne, 1, peer.signal_address + sizeof(uint64_t) * slot_index,
      peer.signal_rkey, &param);
  if (handle == nullptr) {
    FreeSendSlot(slot);
  } else if (UCS_PTR_IS_ERR(handle)) {
    FreeSendSlot(slot);
    PeerFailed(peer, absl::StrCat("a window signal failed: ",
                                  UcxStatusText(UCS_PTR_STATUS(handle))));
  } else {
    ++peer.sends_in_flight;
  }
}

uint64_t UcxChannelImpl::SignalValue(int slot) const {
  return __atomic_load_n(&signals_[slot], __ATOMIC_ACQUIRE);
}

}  // namespace cohort::ucx
