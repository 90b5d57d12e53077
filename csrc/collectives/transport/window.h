// Registered memory and one-sided windows, the channel boundary's second half. A channel that
// can write into a peer's memory without the peer's help offers a Window (Protocol::WindowTo):
// shm/ through the kernel's cross-memory writes (process_vm_writev) and the segments both ends
// map, ucx/ through RDMA puts (emulated over TCP where no RDMA device exists). tcp/ offers none:
// algorithms run over messages there.
//
// How an algorithm uses one (ring.cc's window paths):
//   1. The receiver registers the buffer peers put into (Register, cached by address range, so a
//      training loop's buffers are registered once) and tells them where it is: a RemoteBuffer
//      sent in-band as an ordinary message of the operation.
//   2. The sender Puts pieces into it at offsets both ends compute alike, then Signals: the
//      signal lands after every earlier put to that peer.
//   3. The receiver waits until its signal word (SignalValue) reaches the count it expects.
// Signal words count up for the life of the communicator; an operation remembers where they
// stood when it began (operations run in the same order on every rank).
//
// The lane (shm/lane.h) is the shared-memory window's mapped view: when every rank of the
// communicator shares this host, each rank's staging memory is also mapped by every other rank
// for plain loads and stores (Window::mapped()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "collectives/memory_kind.h"
#include "collectives/transport/channel.h"

namespace cohort {

namespace shm {
class Lane;
}


// A buffer registered with a channel, so that peers may put into it.
struct Registration {
  uintptr_t base = 0;
  size_t bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
  std::string key;                // what a peer needs to reach it (UCX: the packed rkey)
  std::shared_ptr<void> handle;   // the channel's (UCX: the memory handle), released with it
};

// Registrations by address range (after UCX's and NCCL's registration caches): a buffer inside a
// registered range reuses it; beyond `capacity` entries the least recently used goes; Invalidate
// drops every entry overlapping a range that was freed or unmapped, so a new buffer at the same
// address is registered anew.
class RegistrationCache {
 public:
  using Registrar = std::function<absl::StatusOr<std::shared_ptr<const Registration>>(
      uintptr_t base, size_t bytes, MemoryKind kind)>;
  explicit RegistrationCache(Registrar registrar, size_t capacity = 64);

  absl::StatusOr<std::shared_ptr<const Registration>> Get(const void* base, size_t bytes,
                                                          MemoryKind kind);
  void Invalidate(uintptr_t base, size_t bytes);

  size_t size() const { return entries_.size(); }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }
  uint64_t evictions() const { return evictions_; }

 private:
  struct Entry {
    std::shared_ptr<const Registration> registration;
    std::list<uintptr_t>::iterator recent;  // position in recent_
  };
  Registrar registrar_;
  size_t capacity_;
  std::map<uintptr_t, Entry> entries_;  // by base address
  std::list<uintptr_t> recent_;         // most recently used first
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

// A peer's registered buffer, as it described it in-band.
struct RemoteBuffer {
  uint64_t address = 0;
  uint64_t bytes = 0;
  std::string key;

  std::string Serialize() const;
  static absl::StatusOr<RemoteBuffer> Parse(const std::string& text);
};

class Window {
 public:
  virtual ~Window() = default;
  // Signal words per rank; algorithms use fixed slots (ring.cc).
  static constexpr int kSignalSlots = 8;

  // Registers [base, base + bytes) so that the peers this window serves may put into it.
  virtual absl::StatusOr<std::shared_ptr<const Registration>> Register(const void* base,
                                                                       size_t bytes,
                                                                       MemoryKind kind) = 0;
  // Writes `bytes` from `local` to `remote.address + offset` in `peer`'s memory. `request`
  // completes once `local` may be reused.
  virtual absl::Status Put(int peer, const RemoteBuffer& remote, size_t offset,
                           const void* local, size_t bytes, Request* request) = 0;
  // Adds one to `peer`'s signal word `slot`, after every earlier Put to `peer` has landed.
  virtual absl::Status Signal(int peer, int slot) = 0;
  // This rank's signal word `slot`, as peers raised it.
  virtual uint64_t SignalValue(int slot) const = 0;
  // Every rank's staging memory mapped here (the lane), when this window has it; else nullptr.
  virtual shm::Lane* mapped() const { return nullptr; }

  // The executing thread's bookkeeping: how far this rank's operations have counted each
  // signal word (an operation waits until SignalValue(slot) >= expected(slot) + n, then adds
  // n), and how many puts they made (tests assert the window path ran).
  uint64_t& expected(int slot) { return expected_[slot]; }
  uint64_t puts_made = 0;

 private:
  uint64_t expected_[kSignalSlots] = {};
};

}  // namespace cohort
