#include "collectives/transport/window.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cohort {

const char* MemoryKindName(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kHost:
      return "host";
    case MemoryKind::kCuda:
      return "cuda";
  }
  return "?";
}

RegistrationCache::RegistrationCache(Registrar registrar, size_t capacity)
    : registrar_(std::move(registrar)), capacity_(capacity == 0 ? 1 : capacity) {}

absl::StatusOr<std::shared_ptr<const Registration>> RegistrationCache::Get(const void* pointer,
                                                                           size_t bytes,
                                                                           MemoryKind kind) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(pointer);
  // The entry starting at or below `base` with the highest start is the only one that can hold
  // the range (entries may overlap; a newer, larger one wins the next lookups).
  auto it = entries_.upper_bound(base);
  if (it != entries_.begin()) {
    --it;
    const Registration& registration = *it->second.registration;
    if (registration.kind == kind && base + bytes <= registration.base + registration.bytes) {
      ++hits_;
      recent_.splice(recent_.begin(), recent_, it->second.recent);
      return it->second.registration;
    }
  }
  ++misses_;
  auto made = registrar_(base, bytes, kind);
  if (!made.ok()) return made.status();
  auto existing = entries_.find(base);
  if (existing != entries_.end()) {  // a smaller one at the same start: replaced
    recent_.erase(existing->second.recent);
    entries_.erase(existing);
  }
  recent_.push_front(base);
  entries_[base] = Entry{*made, recent_.begin()};
  while (entries_.size() > capacity_) {
    entries_.erase(recent_.back());
    recent_.pop_back();
    ++evictions_;
  }
  return *made;
}

void RegistrationCache::Invalidate(uintptr_t base, size_t bytes) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Registration& registration = *it->second.registration;
    bool overlaps = registration.base < base + bytes && base < registration.base + registration.bytes;
    if (overlaps) {
      recent_.erase(it->second.recent);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

std::string RemoteBuffer::Serialize() const {
  return absl::StrCat(address, " ", bytes, " ", absl::BytesToHexString(key));
}

absl::StatusOr<RemoteBuffer> RemoteBuffer::Parse(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ' ');
  RemoteBuffer remote;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &remote.address) ||
      !absl::SimpleAtoi(parts[1], &remote.bytes) ||
      parts[2].size() % 2 != 0 ||
      parts[2].find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return absl::DataLossError(
        absl::StrCat("malformed window description from a peer: \"", text.substr(0, 80), "\""));
  }
  remote.key = absl::HexStringToBytes(parts[2]);
  return remote;
}

}  // namespace cohort
