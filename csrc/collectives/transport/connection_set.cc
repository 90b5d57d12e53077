#include "collectives/transport/connection_set.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

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

absl::Status ConnectionSet::Install(FrameSink* view, uint32_t epoch, std::vector<int> members,
                                    ChannelClaim claim) {
  if (installed_ && epoch <= epoch_) {
    return absl::InternalError(absl::StrCat("a communicator view of epoch ", epoch,
                                            " cannot follow epoch ", epoch_));
  }
  if (epoch > kMaxFrameEpoch) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a communicator lineage can be shrunk at most ", kMaxFrameEpoch, " times"));
  }
  view_ = view;
  claim_ = std::move(claim);
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
      // (One left in its channel stays unread there: the connection is not this view's.)
      if (it->arrived) Drop(it);
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
  if (held->in_channel) {
    // The view lands it through the channel, or defers it under the channel's id (then its
    // claim goes to the channel, not here).
    const FrameHeader header = held->header;
    const uint64_t id = held->channel_id;
    Drop(held);
    COHORT_ASSIGN_OR_RETURN(Landing landing, view_->OnFrame(rank, header, id));
    if (landing.data == nullptr) return absl::OkStatus();
    if (!claim_) return absl::InternalError("a frame deferred in its channel has no claim");
    return claim_(rank, id, landing.data, landing.token);
  }
  auto landing = view_->OnFrame(rank, held->header, held->id);
  if (!landing.ok()) {
    Drop(held);
    return landing.status();
  }
  if (landing->data == nullptr && held->header.length > 0) {
    held->deferred = true;  // claimed by its id later
    return absl::OkStatus();
  }
  if (held->header.length > 0) std::memcpy(landing->data, held->data.data(), held->header.length);
  Drop(held);
  return view_->OnPayload(rank, landing->token);
}

void ConnectionSet::Drop(std::list<Held>::iterator held) {
  held_bytes_ -= held->data.size();
  held_.erase(held);
}

void ConnectionSet::Erase(const Held* held) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (&*it == held) {
      Drop(it);
      return;
    }
  }
}

absl::Status ConnectionSet::Claim(int connection, uint64_t deferred_id, char* data, void* token) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (it->id != deferred_id || it->connection != connection || !it->deferred) continue;
    if (it->header.length > 0) std::memcpy(data, it->data.data(), it->header.length);
    Drop(it);
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
  if (epoch <= epoch_ || rank < 0) {
    // Dropped: the channel reads past a stream payload. A remote payload stays unread in the
    // sender's memory; nothing stalls for it.
    return Landing{nullptr, nullptr, /*discard=*/header.length > 0};
  }
  Held& held = held_.emplace_back();
  held.connection = connection;
  held.header = header;
  held.id = ++next_id_ | kHeldBit;
  const bool copy = header.length <= kHeldCopyBytes &&
                    held_bytes_ + header.length <= kHeldTotalBytes &&
                    (header.reserved & kFrameRemote) == 0;
  if (!copy) {
    held.in_channel = true;
    held.channel_id = deferred_id;
    held.arrived = true;  // nothing more comes here: the channel keeps the payload
    return Landing{};
  }
  held.data.assign(header.length, '\0');
  held_bytes_ += header.length;
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
