#include "collectives/transport/shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/socket.h"

namespace cohort::shm {
namespace {

size_t SlotBytes(size_t ring_bytes) { return sizeof(RingControl) + ring_bytes; }

constexpr size_t kPage = 4096;

size_t LaneOffset(int peers, size_t ring_bytes) {
  size_t end = sizeof(Doorbell) + static_cast<size_t>(peers) * SlotBytes(ring_bytes);
  return (end + kPage - 1) / kPage * kPage;
}

absl::Status SystemError(const std::string& what, const std::string& name) {
  return absl::UnavailableError(absl::StrCat(
      what, " shared-memory segment ", name, ": ", std::strerror(errno),
      ". Check that /dev/shm is mounted and has room (or set COHORT_SHM=0 to use TCP)"));
}

}  // namespace

size_t Segment::BytesFor(int peers, size_t ring_bytes, size_t lane_bytes) {
  if (lane_bytes == 0) return sizeof(Doorbell) + static_cast<size_t>(peers) * SlotBytes(ring_bytes);
  return LaneOffset(peers, ring_bytes) + lane_bytes;
}

absl::StatusOr<Segment> Segment::Create(const std::string& name, int peers, size_t ring_bytes,
                                        size_t lane_bytes) {
  Segment segment;
  segment.name_ = name;
  segment.owner_ = true;
  segment.ring_bytes_ = ring_bytes;
  segment.peers_ = peers;
  segment.lane_bytes_ = lane_bytes;
  segment.bytes_ = BytesFor(peers, ring_bytes, lane_bytes);
  Fd fd(shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600));
  if (!fd.valid()) return SystemError("cannot create", name);
  segment.linked_ = true;
  if (ftruncate(fd.get(), static_cast<off_t>(segment.bytes_)) != 0) {
    return SystemError("cannot size", name);
  }
  void* base = mmap(nullptr, segment.bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return SystemError("cannot map", name);
  segment.base_ = static_cast<char*>(base);
  new (segment.base_) Doorbell();
  for (int slot = 0; slot < peers; ++slot) {
    new (segment.base_ + sizeof(Doorbell) + slot * SlotBytes(ring_bytes)) RingControl();
  }
  return segment;
}

absl::StatusOr<Segment> Segment::Open(const std::string& name, int peers, size_t ring_bytes,
                                      size_t lane_bytes) {
  Segment segment;
  segment.name_ = name;
  segment.ring_bytes_ = ring_bytes;
  segment.peers_ = peers;
  segment.lane_bytes_ = lane_bytes;
  segment.bytes_ = BytesFor(peers, ring_bytes, lane_bytes);
  Fd fd(shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600));
  if (!fd.valid()) return SystemError("cannot open", name);
  struct stat info = {};
  if (fstat(fd.get(), &info) != 0 || static_cast<size_t>(info.st_size) != segment.bytes_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shared-memory segment ", name, " has an unexpected size; do all ranks on this host use "
        "the same COHORT_SHM_RING_BYTES and COHORT_SHM_LANE_BYTES?"));
  }
  void* base = mmap(nullptr, segment.bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return SystemError("cannot map", name);
  segment.base_ = static_cast<char*>(base);
  return segment;
}

Segment::Segment(Segment&& other) noexcept { *this = std::move(other); }

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    this->~Segment();
    name_ = std::move(other.name_);
    base_ = std::exchange(other.base_, nullptr);
    bytes_ = other.bytes_;
    ring_bytes_ = other.ring_bytes_;
    peers_ = other.peers_;
    lane_bytes_ = other.lane_bytes_;
    owner_ = other.owner_;
    linked_ = std::exchange(other.linked_, false);
  }
  return *this;
}

Segment::~Segment() {
  if (owner_) Unlink();
  if (base_ != nullptr) munmap(base_, bytes_);
  base_ = nullptr;
}

void Segment::Unlink() {
  if (linked_) {
    shm_unlink(name_.c_str());
    linked_ = false;
  }
}

RingView Segment::ring(int slot) const {
  char* at = base_ + sizeof(Doorbell) + slot * SlotBytes(ring_bytes_);
  return RingView(reinterpret_cast<RingControl*>(at), at + sizeof(RingControl), ring_bytes_);
}

}  // namespace cohort::shm

namespace cohort::shm {

char* Segment::lane() const {
  if (lane_bytes_ == 0 || base_ == nullptr) return nullptr;
  return base_ + LaneOffset(peers_, ring_bytes_);
}

}  // namespace cohort::shm
