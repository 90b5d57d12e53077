// Frames over byte streams: the framing shared by the tcp/ channel (one socket per peer) and the
// shm/ channel (a pair of rings per peer). A subclass supplies the byte stream (read, write,
// wait until writable); this class turns it into frames for the protocol.
//
// A frame on the stream is a FrameHeader followed by `length` payload bytes, except for a
// *remote* frame (FrameHeader::reserved has kFrameRemote, shm only): its stream payload is a
// 16-byte descriptor {address, id} and the receiver copies the real payload straight out of the
// sender's memory (ReadRemote), then sends an acknowledgement frame (kAck, id in `sequence`)
// that completes the sender's request. Acknowledgements never reach the protocol.
//
// Reading, per peer (states of ReadState):
//   kHeader   — filling `staging` until a whole header is there; then the protocol is told
//               (FrameSink::OnFrame) and answers where the payload goes.
//   kPayload  — copying payload bytes into the landing buffer (from staging first, then
//               straight from the stream for large remainders). At the end: OnPayload.
//   kStalled  — the protocol deferred a large frame: its bytes stay in the stream (and so does
//               everything behind it) until Claim names a buffer. Only one frame per peer can be
//               stalled; the socket is not read meanwhile.
//   A remote frame's descriptor is read like a payload into `descriptor`; it is then announced,
//   and copied at once or kept in `remote_deferred` until Claim — the stream is not blocked.
// Writing: requests queue in `sends` and go out in order; a request is complete when all of it
// was written (remote frames: when the peer acknowledged). `send_mid_frame` marks a stream left
// with a half-written frame when requests were dropped: nothing more may be written to it, not
// even an abort frame, as the peer would read it as payload.
//
// Invariant: a peer's stream position is always at a frame boundary of what was announced; when
// requests are dropped mid-payload, or a frame's payload is not wanted (Landing::discard), the
// rest is read past through the staging buffer, keeping it in sync.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "collectives/transport/channel.h"
#include "common/socket.h"

namespace cohort {

class StreamChannel : public Channel {
 public:
  absl::Status Send(Request* request) override;
  absl::Status Claim(int peer, uint64_t deferred_id, char* data, void* token) override;
  bool HasPendingSends(int peer) const override;
  bool Probe(int peer) override;
  uint64_t ProbeAnswers(int peer) const override { return peers_[peer].probe_answers; }
  void Abort(const std::string& reason, Deadline deadline) override;
  void DropRequests() override;

 protected:
  enum class ReadState { kHeader, kPayload, kStalled };
  struct Peer {
    int rank = -1;
    bool served = false;  // this channel carries the pair
    Fd fd;                // tcp: the stream; shm: a socket that only reports the peer's close
    bool closed = false;
    uint32_t aborted_in = 0;  // 1 + the epoch of its abort frame: it reads nothing more of ours
    bool send_mid_frame = false;
    std::deque<Request*> sends;
    std::deque<Request> owned;           // acknowledgements and probe frames this channel sends
    uint64_t probe_answers = 0;          // kProbeReply frames received
    std::vector<Request*> awaiting_ack;  // remote frames the peer has yet to read
    // Reading.
    ReadState state = ReadState::kHeader;
    FrameHeader header = {};
    bool reading_descriptor = false;  // the payload being read is a remote frame's descriptor
    bool discarding = false;  // the payload being read goes nowhere (read past, no buffer)
    Landing landing;
    char* target = nullptr;  // where the payload being read goes
    size_t target_got = 0;
    size_t payload_length = 0;  // stream bytes of the payload being read
    uint64_t descriptor[2] = {0, 0};
    uint64_t frames = 0;         // frames announced (numbers deferred ones)
    uint64_t remote_ids = 0;     // remote frames sent (their acknowledgements name them)
    uint64_t stalled_id = 0;     // the frame kStalled waits with
    std::map<uint64_t, std::pair<FrameHeader, std::array<uint64_t, 2>>> remote_deferred;
    std::vector<char> staging;
    size_t staged_begin = 0;
    size_t staged_end = 0;
    Deadline fault_deadline = Deadline::Never();  // a remote read failed; abort expected
  };

  StreamChannel(int rank, int size, FrameSink* sink);

  // The byte stream of a peer. Read returns bytes read, 0 at the peer's close, -1 with errno
  // EAGAIN when nothing is there; Write likewise for bytes written.
  virtual ssize_t StreamRead(Peer& peer, void* buffer, size_t length) = 0;
  virtual ssize_t StreamWrite(Peer& peer, const iovec* iov, int count) = 0;
  // Blocks briefly (at most ~100 ms, within `deadline`) until the stream may take more.
  virtual void WaitWritable(Peer& peer, Deadline deadline) = 0;
  // The stream's wish to be read or written changed (tcp re-arms its epoll entry).
  virtual void Arm(Peer& peer) { (void)peer; }
  // The peer's stream ended (tcp stops watching its socket).
  virtual void Forget(Peer& peer) { (void)peer; }
  // Remote frames (shm): whether this send goes as a descriptor, and reading one.
  virtual bool SendsRemote(const Peer& peer, const Request& request) const {
    (void)peer, (void)request;
    return false;
  }
  // Copies `length` bytes from the sender's `address` into `data`. *done false: not now (the
  // sender let go of its memory; its abort is on the way) — retried by the subclass's poll.
  virtual absl::Status ReadRemote(Peer& peer, char* data, size_t length, uint64_t address,
                                  bool* done) {
    (void)peer, (void)data, (void)length, (void)address, (void)done;
    return absl::InternalError("this channel has no remote frames");
  }

  // Reads and announces what the stream holds, without blocking.
  absl::Status ReadPeer(Peer& peer);
  // Writes queued sends until the stream is full (once: a fair share only).
  absl::Status FlushSends(Peer& peer, bool once);
  // Writes `iov` completely (control frames at abort or close), within `deadline`;
  // `read_meanwhile`: reads what the peer sends while the stream is full.
  absl::Status WriteAllNow(Peer& peer, const iovec* iov, int count, Deadline deadline,
                           bool read_meanwhile = false);
  // Tells the protocol the peer's stream ended (once).
  absl::Status Lost(Peer& peer, const std::string& why);
  // Sends a goodbye frame to every open peer, within `deadline` (a clean close).
  void SayGoodbye(Deadline deadline);
  // After a failure: half-closes every peer's socket and reads until the peers close theirs
  // (or the deadline), so the abort frames already sent are read rather than lost to a reset.
  void HalfCloseAndDrain(Deadline deadline);
  std::string Name(int rank) const;

  const int rank_;
  const int size_;
  FrameSink* const sink_;
  std::vector<Peer> peers_;  // indexed by rank; only served ones are used
  std::vector<int> served_;  // ranks this channel carries

 private:
  absl::Status OnHeader(Peer& peer);
  absl::Status Announce(Peer& peer, const FrameHeader& header);
  absl::Status OnPayloadComplete(Peer& peer);
  // Reads past a payload of `length` bytes of which `got` were read.
  void Skip(Peer& peer, size_t length, size_t got);
  absl::Status CopyRemote(Peer& peer, const FrameHeader& header, const uint64_t descriptor[2],
                          char* data, void* token);
  void QueueAck(Peer& peer, uint64_t id);
  // Queues a frame of this channel's own (an acknowledgement, a probe or its answer).
  void QueueOwn(Peer& peer, FrameKind kind, uint64_t sequence);
  size_t PayloadBytes(const Request& request) const;
  const char* PayloadData(const Request& request) const;
};

}  // namespace cohort
