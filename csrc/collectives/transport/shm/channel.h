// The shm/ channel, for peers on this host: frames as byte streams through a pair of
// shared-memory rings per peer (ring.h, in each receiver's segment, segment.h), payloads from
// COHORT_SHM_SINGLE_COPY_BYTES up copied once, straight out of the sender's memory
// (process_vm_readv; a remote frame, see stream.h). Each peer's mesh socket stays open and only
// reports a crash at once. A rank sleeps on its doorbell, which peers ring when they give it data
// or ring space. When every rank of the communicator is on this host and served here, each
// segment also holds the lane (lane.h), the shared staging memory of one-host collectives.
#pragma once

#include <sys/types.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "collectives/transport/shm/lane.h"
#include "collectives/transport/shm/options.h"
#include "collectives/transport/shm/ring.h"
#include "collectives/transport/shm/segment.h"
#include "collectives/transport/stream.h"
#include "collectives/transport/window.h"

namespace cohort::shm {

// Also the shared-memory Window: puts are cross-memory writes into the peer's process, signals
// are words next to each rank's doorbell, and the lane is its mapped view.
class ShmChannel final : public StreamChannel, public Window {
 public:
  // Serves `peers` (on this host), taking their mesh sockets out of `sockets`. `lane`: every
  // pair of the communicator is served by shared memory (all ranks agree), so the segments
  // hold a lane.
  static absl::StatusOr<std::unique_ptr<ShmChannel>> Create(const ChannelSetup& setup,
                                                            const std::vector<int>& peers,
                                                            std::vector<Fd>& sockets, bool lane,
                                                            const ShmOptions& options);
  ~ShmChannel() override;

  ChannelKind kind() const override { return ChannelKind::kSharedMemory; }
  absl::Status Poll(bool* moved) override;
  bool polled() const override { return true; }
  int event_fd() const override { return epoll_.get(); }
  absl::Status SleepOnMemory(int timeout_ms) override;
  void Wake() override;
  int PreferredSpinMicros() const override { return preferred_spin_micros_; }
  void Abort(const std::string& reason, Deadline deadline) override;
  void Close(bool clean, Deadline deadline) override;

  Window* window(int peer) override {
    return locals_[peer].single_copy ? static_cast<Window*>(this) : nullptr;
  }
  // Window.
  absl::StatusOr<std::shared_ptr<const Registration>> Register(const void* base, size_t bytes,
                                                               MemoryKind kind) override;
  absl::Status Put(int peer, const RemoteBuffer& remote, size_t offset, const void* local,
                   size_t bytes, Request* request) override;
  absl::Status Signal(int peer, int slot) override;
  uint64_t SignalValue(int slot) const override;
  // The lane, when the segments hold one; else nullptr.
  Lane* mapped() const override { return lane_.get(); }
  // Looks at the peers' sockets now (closes) besides the rings.
  absl::Status CheckSockets();

 protected:
  ssize_t StreamRead(Peer& peer, void* buffer, size_t length) override;
  ssize_t StreamWrite(Peer& peer, const iovec* iov, int count) override;
  void WaitWritable(Peer& peer, Deadline deadline) override;
  void Forget(Peer& peer) override;
  bool SendsRemote(const Peer& peer, const Request& request) const override;
  absl::Status ReadRemote(Peer& peer, char* data, size_t length, uint64_t address,
                          bool* done) override;

 private:
  struct Local {  // what only local peers have
    pid_t pid = 0;
    bool single_copy = false;  // reading this peer's memory (process_vm_readv) works
    RingView out;              // our ring in the peer's segment
    RingView in;               // the peer's ring in our segment
    Doorbell* doorbell = nullptr;
  };

  ShmChannel(int rank, int size, FrameSink* sink, const ShmOptions& options)
      : StreamChannel(rank, size, sink), options_(options), locals_(size) {}
  absl::Status SetUp(const ChannelSetup& setup, bool lane);
  absl::Status PollRings(bool* moved);

  ShmOptions options_;
  std::vector<Local> locals_;  // indexed by rank
  Segment segment_;            // our doorbell and inbound rings (and lane)
  std::vector<Segment> peer_segments_;  // indexed by rank; mapped for served peers
  std::unique_ptr<Lane> lane_;
  Fd epoll_;  // the peers' sockets: readable only when they close
  int preferred_spin_micros_ = 0;
  uint64_t polls_ = 0;
};

}  // namespace cohort::shm
