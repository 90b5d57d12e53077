// One rank's shared-memory segment: its doorbell and the inbound rings from each other rank on
// the same host. Created with shm_open, mapped by every local peer, and unlinked as soon as all
// of them have mapped it, so a crash leaves nothing in /dev/shm.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "collectives/transport/shm/ring.h"

namespace cohort::shm {

class Segment {
 public:
  // Layout: Doorbell, then for each of `peers` inbound slots a RingControl and `ring_bytes`,
  // then (page-aligned) `lane_bytes` of lane memory (see lane.h).
  static size_t BytesFor(int peers, size_t ring_bytes, size_t lane_bytes);

  // Creates (owner) or opens (peer) and maps a segment.
  static absl::StatusOr<Segment> Create(const std::string& name, int peers, size_t ring_bytes,
                                        size_t lane_bytes);
  static absl::StatusOr<Segment> Open(const std::string& name, int peers, size_t ring_bytes,
                                      size_t lane_bytes);

  Segment() = default;
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  // Removes the name (the mapping stays). Idempotent; the owner's destructor also does it.
  void Unlink();

  Doorbell& doorbell() const { return *reinterpret_cast<Doorbell*>(base_); }
  RingView ring(int slot) const;
  // The lane memory; nullptr when the segment has none.
  char* lane() const;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  char* base_ = nullptr;
  size_t bytes_ = 0;
  size_t ring_bytes_ = 0;
  int peers_ = 0;
  size_t lane_bytes_ = 0;
  bool owner_ = false;
  bool linked_ = false;
};

}  // namespace cohort::shm
