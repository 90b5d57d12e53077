// The tcp/ channel: a non-blocking socket per peer from the mesh (mesh.h), frames over it as
// byte streams (stream.h), one epoll set for all of them.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "collectives/transport/stream.h"
#include "collectives/transport/tcp/options.h"

namespace cohort::tcp {

class TcpChannel final : public StreamChannel {
 public:
  // Serves `peers`, whose connected sockets it takes out of `sockets` (indexed by rank).
  static absl::StatusOr<std::unique_ptr<TcpChannel>> Create(const ChannelSetup& setup,
                                                            const std::vector<int>& peers,
                                                            std::vector<Fd>& sockets,
                                                            const TcpOptions& options);

  ChannelKind kind() const override { return ChannelKind::kTcp; }
  absl::Status Poll(bool* moved) override;
  int event_fd() const override { return epoll_.get(); }
  int PreferredSpinMicros() const override { return preferred_spin_micros_; }
  void Close(bool clean, Deadline deadline) override;

 protected:
  ssize_t StreamRead(Peer& peer, void* buffer, size_t length) override;
  ssize_t StreamWrite(Peer& peer, const iovec* iov, int count) override;
  void WaitWritable(Peer& peer, Deadline deadline) override;
  void Arm(Peer& peer) override;
  void Forget(Peer& peer) override;

 private:
  TcpChannel(int rank, int size, FrameSink* sink) : StreamChannel(rank, size, sink) {}

  Fd epoll_;
  int preferred_spin_micros_ = 0;
  std::vector<bool> readable_armed_;
  std::vector<bool> writable_armed_;
};

}  // namespace cohort::tcp
