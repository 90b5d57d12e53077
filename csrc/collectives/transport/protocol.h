// The protocol: what every channel shares, written once. It owns request matching (tags,
// sequence numbers, any-source receives), early frames (arrived before their receive was
// posted: small ones buffered, large ones left with their channel until claimed), the
// fingerprint check of every collective frame against the operation this rank runs, abort and
// goodbye frames, and the errors a lost peer causes (naming its rank and host). Below it, one
// channel per kind (channel.h) carries the frames of the peers it serves.
//
// Set-up (Create): every rank publishes one record (host, pid, its channel order and what each
// channel kind offers: the mesh address, the UCX worker address) and reads everyone's; each pair
// takes the first kind of the lower rank's order that can connect it (ChooseChannel), so both
// ends agree; then each channel connects to its peers. A kind that cannot serve a peer is never
// silently replaced: with no kind left in the order, creation fails naming the peer and why.
//
// Matching, per peer: receives posted for that peer wait in `posted` (in order); frames that
// arrive first wait in `early`. A frame matches the first posted receive of the same kind and
// tag (collectives: and sequence); point-to-point frames also match any-source receives. Every
// announced frame is in exactly one place: a matched receive (its payload landing in the
// receive's buffer), an early entry with its buffer, or an early entry marked deferred (payload
// still with the channel). `in_progress` counts announced frames whose payload has not landed,
// so a close can be judged: after a goodbye with nothing expected it is clean, else an error.
//
// Errors are sticky: the first one (lost peer, mismatch, a peer's abort) is returned by every
// later call. Who failed is also kept as a value (failure.h): each rank the protocol learned
// has failed, and how (its connection was lost; a peer's abort frame blamed it).
//
// Views: the channels report to a connection set (connection_set.h), which hands frames to the
// protocol view that is current. A communicator made by Create has epoch 0 and ranks equal to
// connection ranks; Shrink moves the channels into a child view of the survivors (epoch + 1,
// dense new ranks), which translates its ranks to connection ranks where it calls a channel.
// A child offers no windows and no lane: their signal words and stages count for the life of
// the channels and were left mid-operation by the failure; its operations run over messages.
#pragma once

#include <deque>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/transport/channel.h"
#include "collectives/transport/connection_set.h"
#include "collectives/transport/failure.h"
#include "collectives/transport/window.h"
#include "collectives/transport/shm/options.h"
#include "collectives/transport/tcp/options.h"
#include "collectives/transport/ucx/options.h"
#include "common/bootstrap.h"
#include "common/socket.h"

namespace cohort {

namespace shm {
class Lane;
class ShmChannel;
}  // namespace shm

struct ProtocolOptions {
  std::string prefix = "cohort";                // bootstrap keys; unique per communicator
  absl::Duration timeout = absl::Seconds(300);  // for the whole set-up
  std::vector<ChannelKind> transports = {ChannelKind::kSharedMemory, ChannelKind::kUcx,
                                         ChannelKind::kTcp};
  bool transports_forced = false;  // the user named the list: UCX serves pairs without RDMA too
  std::string listen_ip;           // the mesh listens here; empty: tcp::ChooseListenIp
  size_t eager_bytes = 256 << 10;  // early frames up to this size are buffered, larger deferred
  std::string host_id;             // ranks with equal host ids share memory
  std::string host_name;           // for messages
  tcp::TcpOptions tcp;
  shm::ShmOptions shm;
  ucx::UcxOptions ucx;
};

class Protocol final : public FrameSink {
 public:
  // Connects to every other rank through `bootstrap`; blocks until all are connected or the
  // timeout passes.
  static absl::StatusOr<std::unique_ptr<Protocol>> Create(Bootstrap& bootstrap, int rank,
                                                          int size,
                                                          const ProtocolOptions& options);
  ~Protocol() override;

  // A child view of `parent` for `survivors` (parent ranks, ascending, this rank among them)
  // under `prefix`: takes the parent's channels (the parent fails every later call), installs
  // the child in the connection set under the next epoch. The child may start failed (a
  // survivor's connection closed meanwhile): its first operation says so.
  static absl::StatusOr<std::unique_ptr<Protocol>> Shrink(Protocol& parent,
                                                          const std::vector<int>& survivors,
                                                          const std::string& prefix);

  int rank() const { return rank_; }
  int size() const { return size_; }
  uint32_t epoch() const { return epoch_; }
  // The rank of the communicator that made the channels (`rank` in Create's numbering).
  int ConnectionRank(int rank) const { return conn_of_[rank]; }
  const PeerRecord& Record(int rank) const { return records_[rank]; }
  // How the protocol learned that `rank` failed (kNone: it did not).
  Blame FailedBlame(int rank) const { return failed_[rank]; }
  // Notes a failure found above the protocol (a timeout blaming `rank`).
  void NoteFailure(int rank, Blame blame);
  // A peer on this host whose process is stopped (SIGSTOP, a debugger), or -1.
  int StoppedLocalPeer() const;
  // Asks `peer` whether it is there (its channel answers whenever it drives its transport);
  // false when its channel cannot. ProbeAnswers counts the answers so far.
  bool ProbePeer(int peer);
  uint64_t ProbeAnswers(int peer) const;
  // Channel kinds used since the last call, as a bit mask (1 << ChannelKind).
  uint8_t TakeKindsUsed() {
    uint8_t used = kinds_used_;
    kinds_used_ = 0;
    return used;
  }
  // Host name of a rank, for error messages.
  const std::string& PeerHost(int rank) const { return records_[rank].host_name; }
  // The channel kind serving `peer` (not for this rank itself).
  ChannelKind ChannelOf(int peer) const { return kinds_[peer]; }
  // The channel kind serving any pair of ranks, as those two choose it (every rank computes the
  // same from the records, e.g. for the tuner's link models).
  ChannelKind KindBetween(int a, int b) const;
  // Whether UCX found an RDMA device on `rank` (its record says so).
  bool HasRdma(int rank) const;

  // Queue a send / post a receive. The request completes during Progress (or right away).
  void PostSend(Request* request);
  void PostRecv(Request* request);

  // Moves data on every channel and completes requests. Waits up to `timeout_ms` for an event
  // if nothing is ready (0: does not block).
  absl::Status Progress(int timeout_ms);
  // The collective now executing; incoming frames of the same sequence must carry the same
  // fingerprint.
  absl::Status BeginCollective(const Fingerprint& fingerprint);
  // Makes a Progress blocked in another thread return soon. Thread-safe.
  void Wake();
  // How long a waiter should poll before sleeping when COHORT_SPIN_US is auto.
  int PreferredSpinMicros() const;
  // One-sided access to `peer`'s memory through its channel (window.h), or nullptr where that
  // channel offers none (tcp).
  Window* WindowTo(int peer) const;
  // The window whose memory every rank maps (the lane: every rank on this host, shared memory
  // between every pair), or nullptr.
  shm::Lane* MappedWindow() const;
  // Puts made through every window so far.
  uint64_t WindowPuts() const;
  // Looks at every connection now (closes, aborts, mismatching frames) and drives pending
  // transfers, without blocking.
  absl::Status CheckPeers();

  // Best effort: tells every peer this rank failed with `reason` (blaming `blame.rank`, when
  // set), then forgets every queued request (their owners are about to go away).
  void AbortPeers(const std::string& reason, FailureBlame blame = {});
  void DropRequests();
  // Clean: tells every peer this rank closes on purpose. After a failure: reads what the peers
  // still send (their abort frames) until they close or the deadline.
  void Close(bool clean, Deadline deadline);

  // FrameSink: what the channels report.
  absl::StatusOr<Landing> OnFrame(int peer, const FrameHeader& header,
                                  uint64_t deferred_id) override;
  absl::Status OnPayload(int peer, void* token) override;
  absl::Status OnPeerClosed(int peer, const std::string& why) override;

 private:
  struct Early {  // a frame that arrived before its receive was posted
    FrameHeader header;
    std::string data;
    bool arrived = false;   // its payload is all in `data`
    bool deferred = false;  // its payload is still with the channel (claim it by deferred_id)
    uint64_t deferred_id = 0;
    Request* claimed_by = nullptr;  // posted while the payload was still arriving
  };
  struct Peer {
    Channel* channel = nullptr;
    std::deque<Request*> posted;  // receives from this peer
    std::list<Early> early;       // a list: references stay valid while others are erased
    bool goodbye_received = false;
    bool closed = false;
    int in_progress = 0;   // announced frames whose payload has not landed
    std::string control;   // payload of an abort frame
    int abort_blamed = -1;  // whom that abort frame blames, and why
    Blame abort_blame = Blame::kNone;
  };

  Protocol(int rank, int size, ProtocolOptions options);
  absl::Status Connect(Bootstrap& bootstrap);
  absl::Status Fail(absl::Status status);
  absl::Status LostError(int peer, const std::string& why) const;
  std::string Name(int rank) const;
  bool Matches(const Request& request, const FrameHeader& header) const;
  Request* TakeMatch(Peer& peer, const FrameHeader& header);
  absl::Status CheckFingerprint(int peer, const FrameHeader& header) const;
  absl::Status SizeMismatch(int peer, uint64_t sent, size_t expected, bool collective) const;
  // Polls the channels that wake through descriptors, sleeping up to `timeout_ms` in epoll.
  absl::Status PollDescriptors(int timeout_ms);
  // Whether a peer served through descriptors has something in flight.
  bool DescriptorWorkPending() const;
  // Whether a descriptor channel's waiters must sleep in slices (Channel::SleepSliceMillis).
  bool SleepsInSlices() const;
  // Lands a deferred frame `id` of `rank` in `request` (from its channel, or the connection set).
  absl::Status ClaimFrame(int rank, uint64_t id, Request* request);
  // Lands a frame a channel deferred for rank `rank` (the connection set's replay uses it).
  ConnectionSet::ChannelClaim ChannelClaimer();
  void MarkUsed(int peer) const {
    if (peer >= 0 && peer != rank_) kinds_used_ |= uint8_t(1u << static_cast<int>(kinds_[peer]));
  }

  const int rank_;
  const int size_;
  ProtocolOptions options_;
  // Declared before the channels: it outlives them (they report to it).
  std::shared_ptr<ConnectionSet> connections_;
  uint32_t epoch_ = 0;
  std::vector<int> conn_of_;  // view rank -> connection rank
  std::vector<Blame> failed_;  // per rank
  mutable uint8_t kinds_used_ = 0;
  std::vector<PeerRecord> records_;
  std::vector<ChannelKind> kinds_;  // the channel of each peer
  std::vector<Peer> peers_;         // indexed by rank; peers_[rank_] unused
  std::deque<Request*> any_source_;  // point-to-point receives from any peer
  std::vector<std::unique_ptr<Channel>> channels_;
  shm::ShmChannel* shm_ = nullptr;           // the polled channel, when there is one
  std::vector<Channel*> descriptor_channels_;  // the others (tcp, ucx)
  Fd epoll_;  // the channels' event descriptors and wake_
  Fd wake_;   // eventfd
  Fingerprint current_;
  absl::Status failure_;
};

}  // namespace cohort
