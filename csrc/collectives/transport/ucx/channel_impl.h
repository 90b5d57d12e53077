// The UCX channel's state, shared by its set-up (connect.cc) and its frame path (channel.cc).
// Internal to transport/ucx/; the protocol sees only ucx/channel.h. channel.cc opens with the
// description of the wire format, the states and who owns which buffer when.
#pragma once

#include <ucp/api/ucp.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <atomic>

#include "absl/container/flat_hash_map.h"
#include "collectives/transport/ucx/channel.h"
#include "collectives/transport/ucx/context.h"
#include "collectives/transport/window.h"

namespace cohort::ucx {

// Active-message ids on the channel's worker (the worker is the channel's alone).
inline constexpr unsigned kFrameMessage = 1;
inline constexpr unsigned kHelloMessage = 2;

#pragma pack(push, 1)
// The active-message header of every frame.
struct WireHeader {
  uint64_t number;  // frames from this sender to this receiver, counted from 0
  int32_t from;     // the sender's rank
  uint32_t flags;   // none yet (0)
  FrameHeader frame;
};
// The first message each way on an endpoint (a header-only active message).
struct Hello {
  uint32_t magic;    // kWireMagic
  uint32_t version;  // kWireVersion
  uint32_t kind;     // HelloKind
  int32_t from;
  int32_t to;
  int32_t size;
  char proof[32];  // HMAC-SHA256(secret, "cohort-ucx|prefix|kind|from|to")
};
#pragma pack(pop)
static_assert(sizeof(WireHeader) == 56);

enum class HelloKind : uint32_t { kHello = 1, kAck = 2 };

// Also the UCX Window (registration.cc): registered buffers (ucp_mem_map, keys packed in-band),
// puts (ucp_put_nbx) and signals (a fenced atomic add on the peer's signal words, which every
// rank registers at creation and publishes in its offer). Over RDMA these are one-sided; over
// UCX's tcp and shared memory UCX emulates them with active messages.
class UcxChannelImpl final : public UcxChannel, public Window {
 public:
  UcxChannelImpl(const ChannelSetup& setup, const UcxOptions& options,
                 std::unique_ptr<Context> context);
  ~UcxChannelImpl() override;

  // Registers the active-message handlers (once, right after construction).
  absl::Status InstallHandlers();

  std::string Offer() const override;
  absl::Status Connect(const ChannelSetup& setup, const std::vector<int>& peers) override;

  absl::Status Send(Request* request) override;
  absl::Status Claim(int peer, uint64_t deferred_id, char* data, void* token) override;
  absl::Status Poll(bool* moved) override;
  int event_fd() const override { return context_->event_fd(); }
  bool PrepareToSleep() override;
  // Once a window was handed out, its peers' puts and signals land without an event.
  int SleepSliceMillis() const override { return windows_used_ ? 1 : -1; }
  void Wake() override { Ucx().ucp_worker_signal(context_->worker()); }
  bool HasPendingSends(int peer) const override;
  void Abort(const std::string& reason, Deadline deadline) override;
  void DropRequests() override;
  void Close(bool clean, Deadline deadline) override;
  int PreferredSpinMicros() const override { return preferred_spin_micros_; }
  Window* window(int peer) override;

  // Window (registration.cc).
  absl::StatusOr<std::shared_ptr<const Registration>> Register(const void* base, size_t bytes,
                                                               MemoryKind kind) override;
  absl::Status Put(int peer, const RemoteBuffer& remote, size_t offset, const void* local,
                   size_t bytes, Request* request) override;
  absl::Status Signal(int peer, int slot) override;
  uint64_t SignalValue(int slot) const override;
  // Allocates and registers this rank's signal words (once, at creation; part of the offer).
  absl::Status SetUpWindow();
  // Registrations made and kept (tests).
  const RegistrationCache* registrations() const { return registrations_.get(); }

 private:
  // An inbound frame UCX has handed over and the protocol has not yet taken in full.
  struct Arrival {
    WireHeader header = {};
    // Eager: UCX's persistent copy of the payload (released with ucp_am_data_release), or
    // `copy` where UCX could not keep it. Rendezvous: UCX's descriptor for
    // ucp_am_recv_data_nbx (or ucp_am_data_release, which tells the sender it is done).
    void* data = nullptr;
    std::unique_ptr<char[]> copy;
    bool rendezvous = false;
    bool present = false;  // a slot of the reorder window that holds a frame
  };
  // A send in flight: UCX reads the header from here until it completes (UCX 1.13 does not copy
  // active-message headers of pending sends).
  struct SendSlot {
    alignas(8) char header[sizeof(WireHeader) > sizeof(Hello) ? sizeof(WireHeader)
                                                               : sizeof(Hello)];
    UcxChannelImpl* channel = nullptr;
    Request* request = nullptr;  // null: the channel's own frame, or forgotten (DropRequests)
    int peer = -1;
    int signal = -1;  // a flush before a window signal: the signal word to raise when done
    bool borrowed = false;  // UCX reads a buffer of the protocol's (a frame's payload, a put)
  };
  // A rendezvous receive in flight into a buffer the protocol named.
  struct ReceiveSlot {
    UcxChannelImpl* channel = nullptr;
    int peer = -1;
    void* token = nullptr;
    bool forgotten = false;  // DropRequests: its buffer is going away; no OnPayload
    ucs_status_t status = UCS_OK;
  };
  struct Peer {
    UcxChannelImpl* channel = nullptr;
    int rank = -1;
    std::string host;             // for messages
    bool served = false;          // Connect gave it to this channel
    ucp_ep_h ep = nullptr;        // null once closed
    ucp_ep_h reply_ep = nullptr;  // the endpoint its proven hello came on: frames must too
    bool hello_received = false;  // it proved the secret
    bool ack_received = false;    // it took our proof: frames we send now are accepted
    Hello hello_out = {};         // our hello and acknowledgement (UCX reads them until sent)
    Hello ack_out = {};
    uint64_t next_send = 0;     // number of the next frame to it
    uint64_t next_deliver = 0;  // number of the frame window.front() holds
    std::deque<Arrival> window;  // arrivals from next_deliver on, in frame order
    bool ready_listed = false;   // in ready_peers_
    int sends_in_flight = 0;     // SendSlots of this peer that UCX holds
    int borrowed_in_flight = 0;  // ... of them reading a protocol buffer (sends, puts)
    int receives_in_flight = 0;  // ReceiveSlots of this peer that UCX holds
    bool failed = false;         // UCX reported an error on its endpoint
    bool reported = false;       // ... and the sink has been told
    std::string why;
    // Its window: where its signal words are, and the remote keys unpacked for its buffers
    // (most recently used first).
    uint64_t signal_address = 0;
    std::string signal_key;  // packed, from its offer
    ucp_rkey_h signal_rkey = nullptr;
    std::deque<std::pair<std::string, ucp_rkey_h>> remote_keys;
  };
  // Ranges unmapped (UCM's event, from any thread, inside UCX's memory hook): a fixed array
  // under a spin flag, since the hook must not allocate; drained by Register.
  struct Unmapped {
    static constexpr int kRanges = 64;
    std::atomic_flag busy = ATOMIC_FLAG_INIT;
    int count = 0;
    bool overflow = false;  // more than kRanges: every registration goes
    uintptr_t base[kRanges] = {};
    size_t bytes[kRanges] = {};
  };
  struct PendingHello {
    Hello hello;
    ucp_ep_h reply_ep;
  };
  struct Deferred {
    int peer;
    Arrival arrival;
  };

  static ucs_status_t OnFrameMessage(void* arg, const void* header, size_t header_length,
                                     void* data, size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnHelloMessage(void* arg, const void* header, size_t header_length,
                                     void* data, size_t length, const ucp_am_recv_param_t* param);
  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnReceiveDone(void* request, ucs_status_t status, size_t length, void* user_data);
  static void OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static void OnFlushedForSignal(void* request, ucs_status_t status, void* user_data);
  // The atomic add of a signal, once the puts before it have landed.
  void RaiseSignal(Peer& peer, int slot);

  ucs_status_t Arrive(const void* header, size_t header_length, void* data, size_t length,
                      const ucp_am_recv_param_t* param);
  // Hellos queued by OnHelloMessage: verified, answered, or refused with a log line.
  void ProcessHellos();
  void SendHello(Peer& peer, HelloKind kind);
  std::string Proof(HelloKind kind, int from, int to) const;

  // ucp_worker_progress until it has nothing more (bounded); true when anything moved.
  bool Progress();
  // Hands ready arrivals and finished receives to the sink, then reports lost peers.
  absl::Status Deliver();
  absl::Status DeliverOne(Peer& peer, Arrival& arrival);
  absl::Status Land(Peer& peer, Arrival& arrival, char* data, void* token);
  void Release(Arrival& arrival);
  absl::Status ReportFailures();
  void PeerFailed(Peer& peer, const std::string& why);

  // A frame of the channel's own (abort, goodbye) to `peer`, payload owned by the channel.
  void SendOwnFrame(Peer& peer, FrameKind kind, const std::string* payload);
  // ucp_am_send_nbx of `slot`; false (and the slot freed) when UCX refused it at once.
  bool Post(Peer& peer, SendSlot* slot, unsigned id, size_t header_length, const void* payload,
            size_t length, uint32_t flags);
  SendSlot* AcquireSendSlot();
  void FreeSendSlot(SendSlot* slot);
  ReceiveSlot* AcquireReceiveSlot();
  void FreeReceiveSlot(ReceiveSlot* slot);

  // Waits (progressing) until every open endpoint has flushed or the deadline; returns the
  // peers whose flush finished.
  std::vector<bool> Flush(Deadline deadline);
  void ForceClose(Peer& peer);
  void CloseFlushed(Peer& peer);
  // Progresses until every close request is done and no send or receive is in flight on a
  // closed endpoint, or the deadline.
  void WaitForCloses(Deadline deadline);
  // Forgets every request the protocol posted; force-closes the endpoints where UCX still
  // holds one, and waits for UCX to let go of them.
  void ForgetRequests();
  void ReleaseEverything();
  // registration.cc
  absl::StatusOr<std::shared_ptr<const Registration>> MapMemory(uintptr_t base, size_t bytes,
                                                                MemoryKind kind);
  absl::StatusOr<ucp_rkey_h> RemoteKey(Peer& peer, const std::string& packed);
  static void OnMemoryUnmapped(ucm_event_type_t type, ucm_event_t* event, void* arg);
  void DrainUnmapped();
  // Before the worker goes (not for failed peers: UCX may still hold operations using them).
  void DestroyRemoteKeys(Peer& peer);
  void TearDownWindow();
  // Sleeps on the event fd up to `timeout_ms` unless events are pending.
  void WaitForEvents(int timeout_ms);
  std::string Name(int rank) const;

  const int rank_;
  const int size_;
  const std::string prefix_;
  const std::string secret_;
  FrameSink* const sink_;
  const UcxOptions options_;
  std::unique_ptr<Context> context_;
  std::vector<Peer> peers_;  // by rank; never resized (endpoints hold pointers into it)
  std::vector<int> ready_peers_;
  std::vector<PendingHello> hellos_;
  std::vector<ReceiveSlot*> finished_receives_;
  std::vector<int> failed_peers_;
  absl::flat_hash_map<uint64_t, Deferred> deferred_;
  uint64_t next_deferred_id_ = 1;
  std::deque<SendSlot> send_slots_;
  std::vector<SendSlot*> free_send_slots_;
  std::deque<ReceiveSlot> receive_slots_;
  std::vector<ReceiveSlot*> free_receive_slots_;
  std::vector<void*> closing_;  // ucp_ep_close_nbx requests not yet done
  absl::Status malformed_;      // a frame that broke the wire format (sticky)
  bool moved_ = false;          // a callback ran since the last look
  bool windows_used_ = false;   // window() handed one out
  bool closed_ = false;
  int preferred_spin_micros_ = 0;
  std::string abort_text_;  // payload of the abort frames (UCX reads it until they are sent)
  // The window's: this rank's signal words (Window::kSignalSlots, registered), the packed key
  // peers use to reach them, the registration cache (null where UCX's memory events are off:
  // then every Register maps anew), and what UCM reported unmapped.
  ucp_mem_h signal_memh_ = nullptr;
  uint64_t* signals_ = nullptr;
  std::string signal_key_;
  std::unique_ptr<RegistrationCache> registrations_;
  bool watching_unmaps_ = false;
  Unmapped unmapped_;
  uint64_t refused_ = 0;    // frames and hellos refused (logged once per kind)
};

}  // namespace cohort::ucx
