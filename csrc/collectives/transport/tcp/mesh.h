// The socket mesh: one authenticated TCP connection per pair of ranks, for the peers served by
// the tcp/ channel (their stream) and by the shm/ channel (a socket that only reports a crash).
// Lower ranks are connected to, higher ranks connect: each pair exactly once. The handshake
// (Hello) carries the protocol's magic and version, both ranks, the world size and an HMAC of
// the communicator's secret, so a stray or stale connection is refused before it is used.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "collectives/transport/channel.h"
#include "common/socket.h"

namespace cohort::tcp {

class Mesh {
 public:
  // Listens on `ip` (an ephemeral port).
  static absl::StatusOr<Mesh> Listen(const std::string& ip);
  // What peers connect to ("ip port"): the tcp and shm offers of this rank's record.
  std::string Offer() const;
  // A record's mesh address (its tcp offer, else its shm offer); an error names the rank.
  static absl::StatusOr<std::pair<std::string, int>> AddressOf(const PeerRecord& record);

  // Connects to every rank of `peers` within the set-up's deadline. Returns the sockets indexed
  // by rank (invalid for ranks not in `peers`), blocking, with TCP_NODELAY.
  absl::StatusOr<std::vector<Fd>> Connect(const ChannelSetup& setup, const std::vector<int>& peers);

 private:
  Fd listener_;
  std::string ip_;
  int port_ = 0;
};

}  // namespace cohort::tcp
