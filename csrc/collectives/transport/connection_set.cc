#include "collectives/transport/connection_set.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace cohort {
namespace {

constexpr uintptr_t kHeldTag = 3;

void* TokenOf(const void* held) {
  return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(held) | kHeldTag);
}
bool IsHeldToken(void* token) { return (reinterpret_cast<uintptr_t>(token) & 3) == kHeldTag; }
template <typename T>
T* HeldOf(void* token) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(token) & ~uintptr_t{3});
}

}  // namespace

ConnectionSet::ConnectionSet(int connections)
    : view_of_(connections, -1), closed_(connections) {}

absl::Status ConnectionSet::Install(FrameSink* view, uint32_t epoch, std::vector<int> members) {
  if (installed_ && epoch <= epoch_) {
    return absl::InternalError(absl::StrCat("a communicator view of epoch ", epoch,
                                            " cannot follow epoch ", epoch_));
  }
  if (epoch > kMaxFrameEpoch) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a communicator lineage can be shrunk at most ", kMaxFrameEpoch, " times"));
  }
  view_ = view;
  epoch_ = epoch;
  installed_ = true;
  std::fill(view_of_.begin(), view_of_.end(), -1);
  for (size_t rank = 0; rank < members.size(); ++rank) view_of_[members[rank]] = int(rank);
  absl::Status verdict;
  // Frames of revoked views still held (a payload that was arriving) are dropped; frames for
  // this epoch that have arrived are handed over in arrival order.
  for (auto it = held_.begin(); it != held_.end();) {
    auto next = std::next(it);
    const bool member = view_of_[it->connection] >= 0;
    if (!it->discard && (it->header.epoch() < epoch_ || !member)) it->discard = true;
    if (it->discard) {
      if (it->arrived) held_.erase(it);
    } else if (it->header.epoch() == epoch_ && it->arrived && !it->deferred) {
      absl::Status status = Replay(it);
      if (verdict.ok()) verdict = status;
    }
    it = next;
  }
  for (size_t rank = 0; rank < members.size(); ++rank) {
    const std::string& why = closed_[members[rank]];
    if (why.empty()) continue;
    absl::Status status = view_->OnPeerClosed(static_cast<int>(rank), why);
    if (verdict.ok()) verdict = status;
  }
  return verdict;
}

absl::Status ConnectionSet::Replay(std::list<Held>::iterator held) {
  const int rank = view_of_[held->connection];
  auto landing = view_->OnFrame(rank, held->header, held->id);
  if (!landing.ok()) {
    held_.erase(held);
    return landing.status();
  }
  if (landing->data == nullptr && held->header.length > 0) {
    held->deferred = true;  // claimed by its id later
    return absl::OkStatus();
  }
  if (held->header.length > 0) std::memcpy(landing->data, held->data.data(), held->header.length);
  held_.erase(held);
  return view_->OnPayload(rank, landing->token);
}

void ConnectionSet::Erase(const Held* held) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (&*it == held) {
      held_.erase(it);
      return;
    }
  }
}

absl::Status ConnectionSet::Claim(int connection, uint64_t deferred_id, char* data, void* token) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (it->id != deferred_id || it->connection != connection || !it->deferred) continue;
    if (it->header.length > 0) std::memcpy(data, it->data.data(), it->header.length);
    held_.erase(it);
    return view_->OnPayload(view_of_[connection], token);
  }
  return absl::InternalError(absl::StrCat("claimed frame ", deferred_id & ~kHeldBit,
                                          " of connection ", connection, " is not held"));
}

absl::StatusOr<Landing> ConnectionSet::OnFrame(int connection, const FrameHeader& header,
                                               uint64_t deferred_id) {
  const int rank = view_of_[connection];
  const uint32_t epoch = header.epoch();
  if (rank >= 0 && epoch == epoch_) return view_->OnFrame(rank, header, deferred_id);
  const bool future = epoch > epoch_ && rank >= 0;
  if (!future) {
    // Dropped. A remote payload stays unread in the sender's memory; nothing stalls for it.
    if (header.length == 0 || (header.reserved & kFrameRemote)) return Landing{};
  }
  Held& held = held_.emplace_back();
  held.connection = connection;
  held.header = header;
  held.id = ++next_id_ | kHeldBit;
  held.discard = !future;
  held.data.assign(header.length, '\0');
  return Landing{header.length > 0 ? held.data.data() : nullptr, TokenOf(&held)};
}

absl::Status ConnectionSet::OnPayload(int connection, void* token) {
  if (token == nullptr) return absl::OkStatus();  // a frame without payload nobody waits for
  if (!IsHeldToken(token)) return view_->OnPayload(view_of_[connection], token);
  Held* held = HeldOf<Held>(token);
  held->arrived = true;
  if (held->discard) {
    Erase(held);
    return absl::OkStatus();
  }
  if (held->header.epoch() != epoch_ || view_of_[connection] < 0) return absl::OkStatus();
  // Installed while its payload was arriving: hand it over now.
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (&*it == held) return Replay(it);
  }
  return absl::OkStatus();
}

absl::Status ConnectionSet::OnPeerClosed(int connection, const std::string& why) {
  closed_[connection] = why.empty() ? "the connection closed" : why;
  const int rank = view_of_[connection];
  if (rank < 0 || view_ == nullptr) return absl::OkStatus();
  return view_->OnPeerClosed(rank, why);
}

}  // namespace cohort
