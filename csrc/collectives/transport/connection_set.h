// The connection set: the channels of a lineage of communicators, and the one place that decides
// which communicator view an inbound frame belongs to. Used by the protocol (protocol.h); the
// channels below report to it (it is their FrameSink) and it hands each frame on.
//
// A communicator made by Communicator::Create owns a Protocol whose channels connect it to every
// peer. Communicator::Shrink makes a child view of the survivors over the same channels (no new
// connections, no bootstrap round for them): the parent view is revoked, and the child is
// installed here under the next epoch with dense new ranks. (Split does not use this: its parent
// stays alive, so it makes its own connections.)
//
// Ranks: "connection ranks" are the ranks of the communicator that made the channels; each view
// maps its own ranks onto them (the first view: the identity; a child: its survivors in order).
//
// Epochs: every frame a view sends carries the view's epoch (FrameHeader bits 8..31; control
// frames too, through Channel::set_control). Views are installed in increasing epochs, one at a
// time. An inbound frame from connection rank c with epoch e, while epoch E is current:
//   - c is not a member of the current view (left out by the shrink): dropped.
//   - e < E: a frame of a revoked view (an operation cut short by the failure, the old
//     communicator's abort frames): dropped. A stream payload is read past (Landing::discard,
//     no buffer of the announced length); a remote (single-copy) payload is left unread, so the
//     sender's memory is not touched after it moved on.
//   - e == E: handed to the view, c translated to the view's rank.
//   - e > E: a peer that finished its shrink first and already sends to the child view this rank
//     has yet to install: kept here, in arrival order, and replayed to that view when it is
//     installed. A small payload (at most kHeldCopyBytes, while all copies here stay within
//     kHeldTotalBytes) is copied here; what the view then defers stays here until it claims it
//     (Claim). A larger one, or a remote one, stays in its channel (deferred there: a stream
//     reads nothing more of that peer until it is claimed, which bounds what a peer can make
//     this rank hold); on replay the view lands it through the channel's Claim, or defers it
//     under the channel's own id.
// Closes: a closed connection is remembered; when a view is installed, members whose connection
// closed meanwhile are reported to it at once, so a child never waits for a peer that is gone.
//
// Frames held here have landing tokens tagged 3 in their low bits (the protocol's own tags are
// 0..2) and deferred ids with the top bit set (channels' ids never have it), so that OnPayload and
// Claim tell them apart from the channels'.
//
// All calls come from the thread that executes the current view's operations; Install runs while
// the parent view's engine is stopped.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "collectives/transport/channel.h"

namespace cohort {

class ConnectionSet final : public FrameSink {
 public:
  explicit ConnectionSet(int connections);

  int connections() const { return static_cast<int>(view_of_.size()); }
  uint32_t epoch() const { return epoch_; }
  // Lands a frame a channel deferred (its id) for the view's rank `rank` (Channel::Claim).
  using ChannelClaim =
      std::function<absl::Status(int rank, uint64_t deferred_id, char* data, void* token)>;
  // The most a held frame's payload copied here may be, and all of them together.
  static constexpr uint64_t kHeldCopyBytes = 256 << 10;
  static constexpr uint64_t kHeldTotalBytes = 64 << 20;

  // Makes `view` current under `epoch` (above the current one, but for the first view).
  // `members[v]` is the connection rank of the view's rank v; `claim` lands frames the channels
  // deferred for the view. Replays the frames held for this epoch and reports members whose
  // connections closed; returns the view's verdict on those.
  absl::Status Install(FrameSink* view, uint32_t epoch, std::vector<int> members,
                       ChannelClaim claim);
  // Why the connection to `connection` closed, or "" while it is open.
  const std::string& closed(int connection) const { return closed_[connection]; }

  // Whether a deferred id the view got is one of this set's (then Claim it here).
  static bool Holds(uint64_t deferred_id) { return (deferred_id & kHeldBit) != 0; }
  // Lands a held frame the view deferred into `data`, then tells the view (OnPayload).
  absl::Status Claim(int connection, uint64_t deferred_id, char* data, void* token);

  // FrameSink, as the channels call it (connection ranks).
  absl::StatusOr<Landing> OnFrame(int connection, const FrameHeader& header,
                                  uint64_t deferred_id) override;
  absl::Status OnPayload(int connection, void* token) override;
  absl::Status OnPeerClosed(int connection, const std::string& why) override;

 private:
  static constexpr uint64_t kHeldBit = uint64_t{1} << 63;
  struct Held {
    int connection = -1;
    FrameHeader header = {};
    std::string data;
    uint64_t id = 0;            // with kHeldBit
    bool discard = false;       // a dropped frame's scratch buffer
    bool arrived = false;       // its payload is all in `data`
    bool deferred = false;      // replayed, and the view deferred it (claimed by id)
    bool in_channel = false;    // the payload waits in the channel, under channel_id
    uint64_t channel_id = 0;
  };
  // Hands a held frame whose payload arrived to the current view.
  absl::Status Replay(std::list<Held>::iterator held);
  void Erase(const Held* held);
  void Drop(std::list<Held>::iterator held);  // removes it, and its copy from held_bytes_

  FrameSink* view_ = nullptr;
  ChannelClaim claim_;
  uint32_t epoch_ = 0;
  uint64_t held_bytes_ = 0;  // payload bytes copied into held_
  bool installed_ = false;
  std::vector<int> view_of_;         // connection rank -> view rank, -1: not a member
  std::vector<std::string> closed_;  // per connection rank: why it closed, "" while open
  std::list<Held> held_;             // a list: tokens point into it
  uint64_t next_id_ = 0;
};

}  // namespace cohort
