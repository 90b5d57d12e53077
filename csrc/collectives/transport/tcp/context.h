// The mesh transport: a full mesh of non-blocking TCP sockets (one per peer) built from
// addresses exchanged through the bootstrap, with an authenticated handshake, driven by one
// epoll set. Peers on the same host move their frames through shared-memory rings instead
// (transport/shm), large payloads by a single copy from the sender's memory; their socket stays
// open so that a crash is still seen at once. Matching lives here: frames go straight into
// posted receive buffers; early small frames are buffered, early large ones wait in the stream
// until their receive is posted.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <deque>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/transport/shm/lane.h"
#include "collectives/transport/shm/ring.h"
#include "collectives/transport/shm/segment.h"
#include "collectives/transport/tcp/address.h"
#include "collectives/transport/transport.h"
#include "common/bootstrap.h"
#include "common/socket.h"

namespace cohort::tcp {

struct TcpOptions {
  std::string prefix;            // bootstrap key prefix, unique per communicator
  absl::Duration timeout = absl::Seconds(300);  // for connecting the mesh
  size_t eager_bytes = 256 << 10;
  int64_t socket_buffer_bytes = 0;  // 0: kernel autotuning
  bool shared_memory = true;        // peers on this host talk through shared memory
  size_t ring_bytes = 1 << 20;      // per ordered pair; a power of two
  size_t single_copy_bytes = 64 << 10;  // 0: never read from the peer's memory directly
  size_t lane_bytes = 1 << 20;  // lane slot size when every rank is on this host; 0: no lane
};

class TcpTransport final : public Transport {
 public:
  static absl::StatusOr<std::unique_ptr<TcpTransport>> Create(Bootstrap& bootstrap, int rank,
                                                              int size, const TcpOptions& options);
  ~TcpTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& PeerHost(int rank) const override { return hosts_[rank]; }

  void PostSend(Request* request) override;
  void PostRecv(Request* request) override;
  absl::Status Progress(int timeout_ms) override;
  absl::Status BeginCollective(const Fingerprint& fingerprint) override;
  void Wake() override;
  void AbortPeers(const std::string& reason) override;
  void DropRequests() override;
  void Close(bool clean, Deadline deadline) override;
  int PreferredSpinMicros() const override;
  shm::Lane* lane() override { return lane_.get(); }
  absl::Status CheckPeers() override;

  // Ranks reached through shared memory (for tests and topology output).
  const std::vector<int>& local_peers() const { return local_ranks_; }

 private:
  struct Early {  // a frame that arrived before its receive was posted
    FrameHeader header;
    std::string data;
    size_t received = 0;
    Request* claimed_by = nullptr;  // posted while the payload was still arriving
  };
  enum class ReadState { kHeader, kPayload, kStalled };
  struct Peer {
    int rank = 0;
    Fd fd;
    bool closed = false;
    bool goodbye_received = false;
    bool writable_armed = false;
    bool send_mid_frame = false;  // requests were dropped while a frame was half written
    // Same host: frames go through shared memory; the socket only reports the close.
    bool local = false;
    pid_t pid = 0;
    bool single_copy = false;  // reading this peer's memory (process_vm_readv) works
    shm::RingView out;         // our ring in the peer's segment
    shm::RingView in;          // the peer's ring in our segment
    shm::Doorbell* peer_doorbell = nullptr;
    std::deque<Request> owned;            // acknowledgements this transport sends
    std::vector<Request*> awaiting_ack;   // single-copy sends the peer has yet to read
    uint64_t descriptor[2] = {0, 0};      // payload of a single-copy frame being read
    size_t payload_length = 0;            // stream bytes of the frame being read
    Deadline fault_deadline = Deadline::Never();  // a single-copy read failed; abort expected
    bool readable_armed = true;
    std::deque<Request*> sends;
    std::deque<Request*> posted;  // receives from this peer
    std::list<Early> early;  // a list: references stay valid while others are erased
    // Reading.
    ReadState state = ReadState::kHeader;
    FrameHeader header = {};
    char* target = nullptr;  // where the current payload goes
    size_t target_got = 0;
    Request* target_request = nullptr;
    Early* target_early = nullptr;
    std::string control;  // payload of an abort frame
    std::vector<char> staging;
    size_t staged_begin = 0;
    size_t staged_end = 0;
  };

  TcpTransport(int rank, int size, TcpOptions options);
  absl::Status Connect(Bootstrap& bootstrap);
  absl::Status ReadPeer(Peer& peer);
  absl::Status OnHeader(Peer& peer);
  absl::Status OnPayloadComplete(Peer& peer);
  absl::Status FlushSends(Peer& peer, bool once);
  absl::Status PeerLost(Peer& peer, const std::string& why);
  absl::Status CheckFingerprint(const Peer& peer, const FrameHeader& header) const;
  absl::Status SetUpSharedMemory(Bootstrap& bootstrap, const std::vector<Address>& addresses,
                                 Deadline deadline);
  // Byte streams: the socket, or the shared-memory rings for local peers. Read returns bytes
  // read, 0 at the peer's close, -1 with errno EAGAIN when nothing is there.
  ssize_t StreamRead(Peer& peer, void* buffer, size_t length);
  ssize_t StreamWrite(Peer& peer, const iovec* iov, int count);
  absl::Status WriteAllNow(Peer& peer, const iovec* iov, int count, Deadline deadline);
  bool PollSharedMemory(absl::Status* status);
  absl::Status PollSockets(int timeout_ms);
  bool RemoteWorkPending() const;
  Request* TakeMatch(Peer& peer, const FrameHeader& header);
  absl::Status ReadRemote(Peer& peer, Request* request, const uint64_t descriptor[2]);
  void QueueAck(Peer& peer, uint64_t id);
  size_t PayloadBytes(const Request& request) const;
  const char* PayloadData(const Request& request) const;
  bool Matches(const Request& request, const FrameHeader& header) const;
  void Arm(Peer& peer);
  std::string Name(int rank) const;
  absl::Status Fail(absl::Status status);

  int rank_;
  int size_;
  TcpOptions options_;
  std::vector<std::string> hosts_;
  std::vector<Peer> peers_;  // indexed by rank; peers_[rank_] unused
  std::deque<Request*> any_source_;  // point-to-point receives from any peer
  std::vector<int> local_ranks_;     // peers on this host, through shared memory
  int remote_peers_ = 0;
  shm::Segment segment_;             // our doorbell and inbound rings
  std::vector<shm::Segment> peer_segments_;  // indexed by rank; mapped for local peers
  std::unique_ptr<shm::Lane> lane_;          // when every rank is on this host
  int preferred_spin_micros_ = 0;
  uint64_t next_remote_id_ = 1;
  uint64_t polls_ = 0;
  Fd epoll_;
  Fd wake_;  // eventfd
  Fingerprint current_;
  absl::Status failure_;
};

}  // namespace cohort::tcp
