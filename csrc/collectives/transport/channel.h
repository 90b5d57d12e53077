// The channel boundary. Below the protocol (protocol.h), one channel per kind moves frames to
// the peers assigned to it: tcp/ (a socket per peer), shm/ (rings and single-copy reads inside
// a host), ucx/ (a UCP endpoint per peer: RDMA on clusters, UCX's tcp/sm elsewhere). Every peer
// pair is served by exactly one channel, chosen at creation by both ends alike (ChooseChannel).
//
// What a channel promises the protocol:
//  - Frames to one peer arrive in the order they were sent (a channel that can reorder, e.g.
//    UCX active messages over several lanes, puts them back in order before delivering).
//  - An inbound frame is announced once, through FrameSink::OnFrame, with its header. The
//    protocol answers where the payload goes: a buffer of header.length bytes, or nowhere yet
//    ("deferred"): then the channel keeps the payload (in its socket, in the sender's memory,
//    in UCX's unexpected queue) until Claim names a buffer. OnPayload says it has landed.
//  - A send request completes (request->complete) only once its buffer may be reused.
//  - The loss of a peer is reported once, through FrameSink::OnPeerClosed; the protocol decides
//    whether it was a clean close (after a goodbye) or a failure.
// What it does not do: matching, fingerprints, abort and goodbye semantics, error wording about
// operations. Those are the protocol's, written once for every channel.
//
// Ranks: a channel knows its peers by their rank in the communicator that created it (the
// "connection rank"). A shrunk communicator reuses its parent's channels under new ranks
// (connection_set.h): the protocol translates, and a channel reads request->peer only inside
// Send.
//
// All calls come from the one thread that executes the communicator's operations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "collectives/transport/wire.h"
#include "common/bootstrap.h"
#include "common/clock.h"

namespace cohort {

class Window;

inline constexpr int kAnySource = -1;

// Channel kinds, in no particular order (the order of preference is CommOptions::transports).
enum class ChannelKind : uint8_t { kSharedMemory = 0, kUcx = 1, kTcp = 2 };
inline constexpr int kChannelKinds = 3;
// "shm", "ucx", "tcp".
const char* ChannelKindName(ChannelKind kind);
// "shm,ucx,tcp" (any order, no repeats, at least one) -> kinds; an error names what is accepted.
absl::StatusOr<std::vector<ChannelKind>> ParseChannelKinds(absl::string_view text);
std::string ChannelKindsText(const std::vector<ChannelKind>& kinds);

// One send or receive. The poster owns it and keeps it (and its buffer) alive until it is
// complete or the protocol's requests are dropped.
struct Request {
  enum class Direction : uint8_t { kSend, kRecv };
  Direction direction = Direction::kSend;
  int peer = 0;             // kAnySource for a point-to-point receive from anyone
  FrameHeader header = {};  // send: sent as is; receive: kind, sequence and tag to match
  char* data = nullptr;
  size_t length = 0;        // bytes to send, or the exact number of bytes expected
  size_t transferred = 0;   // the channel's progress on it (bytes written or read)
  bool complete = false;
  // Room for the channel that carries it (a single-copy descriptor, a UCX request handle).
  uint64_t channel_data[2] = {0, 0};
};

// Where an announced frame's payload goes, as the protocol answers OnFrame.
struct Landing {
  char* data = nullptr;   // header.length bytes; nullptr (with length > 0): deferred
  void* token = nullptr;  // handed back with OnPayload
  // The sink wants none of the payload (a frame of a revoked view): the channel reads past it
  // without a buffer of its length (a stream) or releases it (UCX), and no OnPayload follows.
  bool discard = false;
};

// The protocol, as a channel sees it.
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  // A frame from `peer` begins. `deferred_id` identifies it for Claim if the answer defers it.
  // An error (a mismatching collective, a malformed frame) fails the protocol; the channel
  // returns it from the call that delivered the frame.
  virtual absl::StatusOr<Landing> OnFrame(int peer, const FrameHeader& header,
                                          uint64_t deferred_id) = 0;
  // Every payload byte of the frame whose landing carried `token` is in place (for a frame
  // with no payload, right after OnFrame).
  virtual absl::Status OnPayload(int peer, void* token) = 0;
  // The connection to `peer` is gone (closed by it, reset, or its process died); `why` says
  // how, for the error message. Returns the protocol's verdict (OK for a clean close).
  virtual absl::Status OnPeerClosed(int peer, const std::string& why) = 0;
};

// What every rank publishes about itself at creation, one record per rank, so that both ends
// of each pair choose the same channel and know how to reach each other.
struct PeerRecord {
  int rank = 0;
  std::string host_id;    // ranks with equal host ids share memory
  std::string host_name;  // for messages
  int pid = 0;
  std::vector<ChannelKind> order;  // this rank's preference (CommOptions::transports)
  bool order_forced = false;       // the user named the order (COHORT_TRANSPORTS or options)
  // Per kind, what its channel published (empty: not offered by this rank), e.g. tcp: "ip port",
  // ucx: the worker address. Indexed by ChannelKind.
  std::string offers[kChannelKinds];

  std::string Serialize() const;
  static absl::StatusOr<PeerRecord> Parse(const std::string& text);
  const std::string& offer(ChannelKind kind) const { return offers[static_cast<int>(kind)]; }
};

// The kind that serves the pair (a, b): the first kind of the lower rank's order that both
// offer and that can connect them (shm: same host; ucx: an RDMA device on both, unless the
// order was forced; tcp: always). An error names the peer and why each kind of the order
// cannot serve it, and what to set.
absl::StatusOr<ChannelKind> ChooseChannel(const PeerRecord& a, const PeerRecord& b);

// Set-up is per kind (each channel folder has its own Create/Connect), driven by the protocol:
// channels whose offer needs no peers (UCX's worker address, the TCP listener's address) are
// made before the records are exchanged; every channel then connects to the peers it serves.
// What all of them are given:
struct ChannelSetup {
  Bootstrap* bootstrap = nullptr;
  std::string prefix;        // the communicator's bootstrap key prefix
  int rank = 0;
  int size = 0;
  std::string secret;        // the communicator's secret: handshakes prove they know it
  FrameSink* sink = nullptr;
  const std::vector<PeerRecord>* records = nullptr;  // every rank's, indexed by rank
  Deadline deadline = Deadline::Never();             // for the whole set-up
};

class Channel {
 public:
  virtual ~Channel() = default;
  virtual ChannelKind kind() const = 0;

  // What this channel's control frames (abort, goodbye) carry besides their kind: the epoch of
  // the communicator view now using it and, in an abort frame, the rank it blames and why
  // (wire.h). Set by the protocol before it calls Abort or Close.
  void set_control(uint32_t epoch, int blamed, Blame blame) {
    control_epoch_ = epoch;
    control_blamed_ = blamed;
    control_blame_ = blame;
  }

  // Queues a frame to `request->peer`: the header, then `length` payload bytes from `data`.
  // It completes (request->complete) once the buffer may be reused.
  virtual absl::Status Send(Request* request) = 0;
  // Moves a deferred payload (OnFrame landed it nowhere) into `data`, which holds the whole
  // payload; OnPayload(`token`) follows when it is there, possibly before this returns.
  virtual absl::Status Claim(int peer, uint64_t deferred_id, char* data, void* token) = 0;

  // Moves whatever can move without blocking; sets *moved when anything progressed.
  virtual absl::Status Poll(bool* moved) = 0;
  // Data arrives in memory rather than on a descriptor (shared memory): the protocol polls it
  // and, when it sleeps, sleeps on the doorbell (SleepOnMemory) instead of epoll.
  virtual bool polled() const { return false; }
  // A descriptor that becomes readable when this channel has something to do (its own epoll
  // set, UCX's event fd); -1 when it has none.
  virtual int event_fd() const { return -1; }
  // Called before the protocol sleeps on event_fd(): false when events are already pending (UCX
  // could not arm its worker) and the protocol must poll again instead of sleeping.
  virtual bool PrepareToSleep() { return true; }
  // polled() channels: sleeps until a peer writes to this rank's memory or Wake, at most
  // `timeout_ms`, and moves what came.
  virtual absl::Status SleepOnMemory(int timeout_ms) {
    (void)timeout_ms;
    return absl::OkStatus();
  }
  // Makes a sleep in another thread return soon (thread-safe).
  virtual void Wake() {}
  // The longest a waiter may sleep on this channel's event fd, in milliseconds (-1: as long as
  // it likes). Where peers write into this rank's memory one-sidedly (a window's puts and
  // signals over shared memory or RDMA) nothing wakes the fd, so waiters sleep in slices.
  virtual int SleepSliceMillis() const { return -1; }
  // Whether the channel holds sends to `peer` not yet handed to the wire or not yet complete.
  virtual bool HasPendingSends(int peer) const = 0;

  // Liveness, for a timeout's verdict: asks `peer` to answer (its channel does, whenever that
  // rank drives its transport, whatever it is waiting for) and counts the answers. A channel
  // without probes returns false: the caller cannot tell.
  virtual bool Probe(int peer) {
    (void)peer;
    return false;
  }
  virtual uint64_t ProbeAnswers(int peer) const {
    (void)peer;
    return 0;
  }

  // Best effort within `deadline`: finishes or abandons half-sent frames, then sends every
  // peer an abort frame carrying `reason`, and forgets every queued request.
  virtual void Abort(const std::string& reason, Deadline deadline) = 0;
  // Forgets every queued send and in-flight receive (their owners are about to go away): from
  // now on no byte is written into or read from a dropped request's buffer.
  virtual void DropRequests() = 0;
  // Clean: sends every peer a goodbye frame and flushes. After a failure: forces the close,
  // reading what the peers still send (their abort frames) until they close or the deadline.
  virtual void Close(bool clean, Deadline deadline) = 0;

  // How long a waiter should poll before sleeping when COHORT_SPIN_US is auto (0: sleep at
  // once). Worth it only where peers answer through memory and every local rank has a core.
  virtual int PreferredSpinMicros() const { return 0; }

  // One-sided access to `peer`'s memory (window.h), where this channel offers it; else nullptr.
  virtual Window* window(int peer) {
    (void)peer;
    return nullptr;
  }

 protected:
  // The header of a control frame of `kind`, stamped as set_control says.
  FrameHeader ControlHeader(FrameKind kind) const {
    FrameHeader header = {};
    header.kind = static_cast<uint8_t>(kind);
    header.set_epoch(control_epoch_);
    header.root = kind == FrameKind::kAbort ? control_blamed_ : -1;
    header.tag = kind == FrameKind::kAbort ? static_cast<uint32_t>(control_blame_) : 0;
    return header;
  }
  uint32_t control_epoch() const { return control_epoch_; }

 private:
  uint32_t control_epoch_ = 0;
  int control_blamed_ = -1;
  Blame control_blame_ = Blame::kNone;
};

}  // namespace cohort
