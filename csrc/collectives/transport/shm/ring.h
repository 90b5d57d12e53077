// Shared-memory rings between ranks on one host: one single-producer/single-consumer byte ring
// per ordered pair, living in the receiver's segment, with head and tail on their own cache
// lines. Each rank also has a doorbell word: a sleeper futex-waits on it and whoever gives it
// data or ring space rings it. Used by the mesh transport for peers on the same host.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cohort::shm {

inline constexpr size_t kCacheLine = 64;

struct alignas(kCacheLine) Doorbell {
  std::atomic<uint32_t> value{0};
  char pad0[kCacheLine - sizeof(std::atomic<uint32_t>)];
  std::atomic<uint32_t> sleeping{0};
  char pad1[kCacheLine - sizeof(std::atomic<uint32_t>)];
  // The window's signal words (window.h): peers add to them, the owner reads them. Next to the
  // doorbell because whoever raises one rings it.
  std::atomic<uint64_t> signals[8] = {};
};

struct alignas(kCacheLine) RingControl {
  std::atomic<uint64_t> head{0};  // bytes ever written (producer)
  char pad0[kCacheLine - sizeof(std::atomic<uint64_t>)];
  std::atomic<uint64_t> tail{0};  // bytes ever consumed (consumer)
  char pad1[kCacheLine - sizeof(std::atomic<uint64_t>)];
};

// Wakes a rank sleeping on its doorbell (cheap when it is not asleep).
void Ring(Doorbell& doorbell);
// Sleeps until the doorbell changes from `seen` or `timeout_ms` passes.
void Sleep(Doorbell& doorbell, uint32_t seen, int timeout_ms);

// A view of one ring: control block plus `capacity` data bytes (a power of two).
class RingView {
 public:
  RingView() = default;
  RingView(RingControl* control, char* data, size_t capacity)
      : control_(control), data_(data), capacity_(capacity) {}
  bool valid() const { return control_ != nullptr; }

  // Producer side: copies as much of the buffers as fits; returns bytes written.
  size_t Write(const iovec* iov, int count);
  size_t FreeBytes() const {
    return capacity_ - (control_->head.load(std::memory_order_relaxed) -
                        control_->tail.load(std::memory_order_acquire));
  }
  // Consumer side: copies up to `length` available bytes; returns bytes read.
  size_t Read(void* buffer, size_t length);
  size_t AvailableBytes() const {
    return control_->head.load(std::memory_order_acquire) -
           control_->tail.load(std::memory_order_relaxed);
  }

 private:
  RingControl* control_ = nullptr;
  char* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace cohort::shm
