// The lane: shared staging memory among the ranks of a communicator that all live on one host.
// Every rank owns a slot (two halves, used by alternate operations) that it writes and every
// other rank reads, and a stage counter it publishes after writing. A one-host collective is then
// a few stages: write your slot, publish, wait until everyone published, read theirs — no
// messages, no matching, one synchronisation for small operations (as in Open MPI's and NCCL's
// shared-memory collectives). The memory lives in each rank's transport segment, so it is
// unlinked with it and a crash leaves nothing behind.
//
// Reuse is safe without extra synchronisation: a rank writes a half again two operations later,
// and it can only get there after every rank published a stage of the operation in between,
// which each does only after it finished reading that half.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/transport/shm/ring.h"
#include "collectives/transport/wire.h"

namespace cohort::shm {

// The control block at the head of a rank's lane memory.
struct alignas(kCacheLine) LaneControl {
  std::atomic<uint32_t> stages{0};  // stages published, ever
  std::atomic<int32_t> cpu{-1};     // where the owner last ran (publishing or waiting)
  char pad0[kCacheLine - 2 * sizeof(std::atomic<uint32_t>)];
  FrameHeader call[2];  // the collective this rank runs in each half (its fingerprint)
};

class Lane {
 public:
  // Bytes of lane memory per rank for slots of `capacity` bytes: control plus two halves.
  static size_t BytesFor(size_t capacity);

  // `memory[rank]` is each rank's lane memory (this rank's own included), `doorbells[rank]` its
  // doorbell (rung on publishing, slept on while waiting).
  Lane(int rank, std::vector<char*> memory, std::vector<Doorbell*> doorbells, size_t capacity);

  int rank() const { return rank_; }
  int size() const { return static_cast<int>(controls_.size()); }
  size_t capacity() const { return capacity_; }

  // Starts the next lane operation: records its fingerprint in this rank's control block and
  // returns the half it uses. Only the thread executing operations calls these.
  int Begin(const Fingerprint& fingerprint);
  // A rank's slot in `half`.
  char* Slot(int rank, int half) const { return data_[rank] + half * capacity_; }
  // The fingerprint `rank` recorded for `half` (valid once it published a stage of it).
  Fingerprint Call(int rank, int half) const { return controls_[rank]->call[half].fingerprint(); }

  // Publishes one more stage: what this rank wrote before is visible to whoever sees it.
  // Returns the stage number every rank must reach.
  uint32_t Publish();
  // Whether every rank published at least `stage` stages.
  bool Reached(uint32_t stage) const;
  // The first rank that has not reached `stage`, or -1.
  int Laggard(uint32_t stage) const;
  // Records the CPU this rank runs on now; true when `peer` was last seen on the same one (then
  // polling for it only keeps it from running: yield instead).
  bool SharesCpuWith(int peer) const;
  // Sleeps on this rank's doorbell until a peer publishes (or anything rings it), at most
  // `timeout_ms`; returns at once when `stage` is already reached.
  void Sleep(uint32_t stage, int timeout_ms) const;

 private:
  int rank_;
  size_t capacity_;
  std::vector<LaneControl*> controls_;
  std::vector<char*> data_;
  std::vector<Doorbell*> doorbells_;
  uint32_t published_ = 0;
  uint64_t operations_ = 0;
};

}  // namespace cohort::shm
