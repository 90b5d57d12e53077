#include "collectives/transport/shm/ring.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace cohort::shm {

void Ring(Doorbell& doorbell) {
  // seq_cst pairs with the sleeper's store of `sleeping` before it re-checks for work.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (doorbell.sleeping.load(std::memory_order_relaxed) == 0) return;
  doorbell.value.fetch_add(1, std::memory_order_seq_cst);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&doorbell.value), FUTEX_WAKE, 1, nullptr,
          nullptr, 0);
}

void Sleep(Doorbell& doorbell, uint32_t seen, int timeout_ms) {
  timespec timeout = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&doorbell.value), FUTEX_WAIT, seen, &timeout,
          nullptr, 0);
}

size_t RingView::Write(const iovec* iov, int count) {
  uint64_t head = control_->head.load(std::memory_order_relaxed);
  size_t free = capacity_ - (head - control_->tail.load(std::memory_order_acquire));
  size_t written = 0;
  for (int i = 0; i < count && free > 0; ++i) {
    const char* source = static_cast<const char*>(iov[i].iov_base);
    size_t length = std::min(iov[i].iov_len, free);
    size_t at = (head + written) & (capacity_ - 1);
    size_t first = std::min(length, capacity_ - at);
    std::memcpy(data_ + at, source, first);
    if (length > first) std::memcpy(data_, source + first, length - first);
    written += length;
    free -= length;
    if (length < iov[i].iov_len) break;
  }
  if (written > 0) control_->head.store(head + written, std::memory_order_release);
  return written;
}

size_t RingView::Read(void* buffer, size_t length) {
  uint64_t tail = control_->tail.load(std::memory_order_relaxed);
  size_t available = control_->head.load(std::memory_order_acquire) - tail;
  length = std::min(length, available);
  if (length == 0) return 0;
  size_t at = tail & (capacity_ - 1);
  size_t first = std::min(length, capacity_ - at);
  std::memcpy(buffer, data_ + at, first);
  if (length > first) std::memcpy(static_cast<char*>(buffer) + first, data_, length - first);
  control_->tail.store(tail + length, std::memory_order_release);
  return length;
}

}  // namespace cohort::shm
