// Protocol::Shrink: a child view of the survivors over the parent's channels (the states are
// described in connection_set.h and at the top of protocol.h).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "collectives/transport/protocol.h"
#include "collectives/transport/shm/channel.h"

namespace cohort {

absl::StatusOr<std::unique_ptr<Protocol>> Protocol::Shrink(Protocol& parent,
                                                           const std::vector<int>& survivors,
                                                           const std::string& prefix) {
  auto self = std::find(survivors.begin(), survivors.end(), parent.rank_);
  if (self == survivors.end() || !std::is_sorted(survivors.begin(), survivors.end())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", parent.rank_, " cannot shrink into a communicator it is not in"));
  }
  if (parent.connections_ == nullptr || (parent.channels_.empty() && parent.size_ > 1)) {
    return absl::FailedPreconditionError(
        "this communicator's connections were handed to a shrunk communicator already");
  }
  const int rank = static_cast<int>(self - survivors.begin());
  const int size = static_cast<int>(survivors.size());
  ProtocolOptions options = parent.options_;
  options.prefix = prefix;
  std::unique_ptr<Protocol> child(new Protocol(rank, size, std::move(options)));
  child->connections_ = parent.connections_;
  child->epoch_ = parent.epoch_ + 1;
  for (int view = 0; view < size; ++view) {
    const int old = survivors[view];
    if (old < 0 || old >= parent.size_) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", old, " is not a rank of the parent"));
    }
    child->conn_of_[view] = parent.conn_of_[old];
    child->records_[view] = parent.records_[old];
    child->kinds_[view] = parent.kinds_[old];
    if (view != rank) child->peers_[view].channel = parent.peers_[old].channel;
  }
  child->channels_ = std::move(parent.channels_);
  child->shm_ = parent.shm_;
  child->descriptor_channels_ = std::move(parent.descriptor_channels_);
  child->epoll_ = std::move(parent.epoll_);
  child->wake_ = std::move(parent.wake_);
  // The parent keeps no way to reach the channels, and says why from now on.
  parent.channels_.clear();
  parent.descriptor_channels_.clear();
  parent.shm_ = nullptr;
  for (Peer& peer : parent.peers_) peer.channel = nullptr;
  (void)parent.Fail(absl::FailedPreconditionError(absl::StrCat(
      "this communicator was shrunk into \"", prefix, "\"; use that one")));
  for (auto& channel : child->channels_) channel->set_control(child->epoch_, -1, Blame::kNone);
  // A survivor whose connection closed meanwhile fails the child at once (sticky): its first
  // operation names that rank, and the caller may shrink again.
  (void)child->connections_->Install(child.get(), child->epoch_, child->conn_of_,
                                     child->ChannelClaimer());
  return child;
}

}  // namespace cohort
