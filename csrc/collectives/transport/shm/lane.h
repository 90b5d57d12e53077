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
// which each does only after it finished reading that half. Stages are numbered across
// operations; each half's line holds the last one published in it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/transport/shm/ring.h"
#include "collectives/transport/wire.h"
#include "common/cpu.h"

namespace cohort::shm {

// One cache line per half: the stage published, the fingerprint of the collective in that half
// and, for tiny operations, the data itself, so that a small collective moves one line each way.
struct alignas(kCacheLine) LaneLine {
  std::atomic<uint32_t> stage{0};  // last stage published in this half (0: none yet)
  std::atomic<int32_t> cpu{-1};    // where the owner last ran (publishing or waiting)
  FrameHeader call;                // the collective this rank runs in this half
  char inline_data[16];            // payloads of up to kInlineBytes
};
static_assert(sizeof(LaneLine) == kCacheLine);

// The control block at the head of a rank's lane memory.
struct LaneControl {
  LaneLine half[2];
};

class Lane {
 public:
  static constexpr size_t kInlineBytes = sizeof(LaneLine::inline_data);
  // Staged bytes beyond the line's but up to this many are prefetched from a laggard's slot
  // while polling for its stage: they travel with the stage line instead of after it.
  static constexpr size_t kPrefetchBytes = 1024;

  // Bytes of lane memory per rank for slots of `capacity` bytes: control plus two halves.
  static size_t BytesFor(size_t capacity);

  // `memory[rank]` is each rank's lane memory (this rank's own included), `doorbells[rank]` its
  // doorbell (slept on while waiting, rung by WakeSleepers).
  Lane(int rank, std::vector<char*> memory, std::vector<Doorbell*> doorbells, size_t capacity);

  int rank() const { return rank_; }
  int size() const { return static_cast<int>(controls_.size()); }
  size_t capacity() const { return capacity_; }

  // Starts the next lane operation, for which every rank stages `staged_bytes`: records its
  // fingerprint and returns the half it uses. Only the thread executing operations calls these.
  int Begin(const Fingerprint& fingerprint, size_t staged_bytes);
  // A rank's slot in `half`.
  char* Slot(int rank, int half) const { return data_[rank] + half * capacity_; }
  // Where a rank's `bytes` of this half go: inside its control line when they are few (one
  // cache line carries stage, fingerprint and data), else its slot. This rank's own line is
  // written in one burst by Publish: until then its inline bytes wait in a private copy.
  char* Data(int rank, int half, size_t bytes) const {
    if (bytes > kInlineBytes) return Slot(rank, half);
    return rank == rank_ ? pending_.inline_data : controls_[rank]->half[half].inline_data;
  }
  // The fingerprint `rank` recorded for `half` (valid once it published a stage of it).
  Fingerprint Call(int rank, int half) const {
    return controls_[rank]->half[half].call.fingerprint();
  }
  // Whether `peer` runs the very collective this rank began last (sequence and call), once it
  // published a stage of it: the check every lane collective makes, without building
  // Fingerprints.
  bool SameCall(int peer) const {
    const FrameHeader& theirs = controls_[peer]->half[half_].call;
    const FrameHeader& mine = pending_.call;
    return theirs.sequence == mine.sequence && theirs.count == mine.count &&
           theirs.op == mine.op && theirs.dtype == mine.dtype &&
           theirs.reduce_op == mine.reduce_op && theirs.root == mine.root;
  }

  // Publishes one more stage of the current operation: what this rank wrote before is visible
  // to whoever sees it. Returns the stage every rank must reach. Wakes nobody: see WakeSleepers.
  uint32_t Publish();
  // Rings the doorbell of every peer that sleeps waiting for a stage. Called after each wait for
  // a stage ends: a sleeper waits until every rank published, and the last rank to publish finds
  // its own wait over at once and wakes it then. Publish itself does not, because the full
  // barrier the sleeper handshake needs would then sit between publishing and polling, holding
  // the publisher until its store left (a cache-line transfer, a third of a small allreduce).
  void WakeSleepers() const;
  // Whether every rank published at least `stage` in the current half.
  bool Reached(uint32_t stage) const { return Laggard(stage) < 0; }
  // The first rank that has not reached `stage`, or -1.
  int Laggard(uint32_t stage) const;
  // Records the CPU this rank runs on now; true when a rank that has not reached `stage` was
  // last seen on the same one (then polling for it only keeps it from running: yield instead).
  bool LaggardSharesCpu(uint32_t stage) const;
  // Sleeps on this rank's doorbell until a peer publishes (or anything rings it), at most
  // `timeout_ms`; returns at once when `stage` is already reached.
  void Sleep(uint32_t stage, int timeout_ms) const;

 private:
  int rank_;
  size_t capacity_;
  std::vector<LaneControl*> controls_;
  std::vector<char*> data_;
  std::vector<Doorbell*> doorbells_;
  // This rank's next line (fingerprint and inline bytes), copied into the shared one just before
  // the stage: the peers poll that line, and every separate write to it while they do costs a
  // cache-line transfer (a fingerprint, then data, then the stage would be three).
  mutable LaneLine pending_{};
  bool pending_dirty_ = false;
  uint32_t published_ = 0;  // stages ever published (numbers them; wraps safely)
  uint64_t operations_ = 0;
  int half_ = 0;            // of the current operation
  int prefetch_lines_ = 0;  // of a laggard's slot, fetched while polling for it
};

}  // namespace cohort::shm
