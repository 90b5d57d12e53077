#include "collectives/transport/shm/lane.h"

#include <sched.h>

#include <cstring>
#include <new>

namespace cohort::shm {
namespace {

// The slots start on their own page after the control block.
constexpr size_t kControlBytes = 4096;
static_assert(sizeof(LaneControl) <= kControlBytes);

// Wrap-safe "a is at least b" for stage counters.
bool AtLeast(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) >= 0; }

// Stores the CPU only when it changed: the peers poll this line, and a store takes it from them.
int RecordCpu(LaneLine& line) {
  int cpu = sched_getcpu();
  if (line.cpu.load(std::memory_order_relaxed) != cpu) {
    line.cpu.store(cpu, std::memory_order_relaxed);
  }
  return cpu;
}

}  // namespace

size_t Lane::BytesFor(size_t capacity) { return kControlBytes + 2 * capacity; }

Lane::Lane(int rank, std::vector<char*> memory, std::vector<Doorbell*> doorbells, size_t capacity)
    : rank_(rank), capacity_(capacity), doorbells_(std::move(doorbells)) {
  for (char* base : memory) {
    controls_.push_back(reinterpret_cast<LaneControl*>(base));
    data_.push_back(base + kControlBytes);
  }
  // Our own control block starts from zero; peers construct theirs in their memory.
  new (controls_[rank_]) LaneControl();
}

int Lane::Begin(const Fingerprint& fingerprint, size_t staged_bytes) {
  half_ = static_cast<int>(operations_++ & 1);
  prefetch_lines_ = staged_bytes > kInlineBytes && staged_bytes <= kPrefetchBytes
                        ? static_cast<int>((staged_bytes + kCacheLine - 1) / kCacheLine)
                        : 0;
  pending_.call.SetFingerprint(fingerprint);
  pending_dirty_ = true;
  return half_;
}

uint32_t Lane::Publish() {
  ++published_;
  LaneLine& line = controls_[rank_]->half[half_];
  if (pending_dirty_) {
    line.call = pending_.call;
    std::memcpy(line.inline_data, pending_.inline_data, sizeof(line.inline_data));
    pending_dirty_ = false;
  }
  line.cpu.store(sched_getcpu(), std::memory_order_relaxed);
  line.stage.store(published_, std::memory_order_release);
  return published_;
}

void Lane::WakeSleepers() const {
  // The fence orders this rank's stage stores before the looks at `sleeping`, pairing with a
  // sleeper's store of `sleeping` before it re-checks the stages (Ring fences again, but only
  // for a peer that sleeps).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (int peer = 0; peer < size(); ++peer) {
    if (peer != rank_ && doorbells_[peer]->sleeping.load(std::memory_order_relaxed) != 0) {
      Ring(*doorbells_[peer]);
    }
  }
}

int Lane::Laggard(uint32_t stage) const {
  for (int peer = 0; peer < size(); ++peer) {
    if (!AtLeast(controls_[peer]->half[half_].stage.load(std::memory_order_acquire), stage)) {
      // A few staged bytes in the slot: ask for their lines on every look, so that once the
      // peer writes them they travel alongside its stage line, not after it (32 B to 1 KiB,
      // 10-15% faster on an AMD EPYC).
      const char* slot = Slot(peer, half_);
      for (int line = 0; line < prefetch_lines_; ++line) {
        __builtin_prefetch(slot + line * kCacheLine);
      }
      return peer;
    }
  }
  return -1;
}

bool Lane::LaggardSharesCpu(uint32_t stage) const {
  int cpu = RecordCpu(controls_[rank_]->half[half_]);
  for (int peer = 0; peer < size(); ++peer) {
    const LaneLine& line = controls_[peer]->half[half_];
    if (!AtLeast(line.stage.load(std::memory_order_acquire), stage) &&
        line.cpu.load(std::memory_order_relaxed) == cpu) {
      return true;
    }
  }
  return false;
}

void Lane::Sleep(uint32_t stage, int timeout_ms) const {
  Doorbell& own = *doorbells_[rank_];
  own.sleeping.store(1, std::memory_order_seq_cst);
  uint32_t seen = own.value.load(std::memory_order_seq_cst);
  if (!Reached(stage)) shm::Sleep(own, seen, timeout_ms);
  own.sleeping.store(0, std::memory_order_relaxed);
}

}  // namespace cohort::shm
