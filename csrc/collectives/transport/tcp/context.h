// The TCP transport: a full mesh of non-blocking sockets (one per peer) built from addresses
// exchanged through the bootstrap, with an authenticated handshake, driven by one epoll set.
// Matching lives here: frames go straight into posted receive buffers; early small frames are
// buffered, early large ones wait in the socket until their receive is posted.
#pragma once

#include <deque>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/transport/transport.h"
#include "common/bootstrap.h"
#include "common/socket.h"

namespace cohort::tcp {

struct TcpOptions {
  std::string prefix;            // bootstrap key prefix, unique per communicator
  absl::Duration timeout = absl::Seconds(300);  // for connecting the mesh
  size_t eager_bytes = 256 << 10;
  int64_t socket_buffer_bytes = 0;  // 0: kernel autotuning
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
  Fd epoll_;
  Fd wake_;  // eventfd
  Fingerprint current_;
  absl::Status failure_;
};

}  // namespace cohort::tcp
