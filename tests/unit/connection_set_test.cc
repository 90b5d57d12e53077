// The connection set's routing of frames between communicator views (connection_set.h): the
// current epoch's frames reach the view under its own ranks; older epochs' and left-out ranks'
// are dropped; a newer epoch's are held and replayed, in order, when that view is installed;
// closed connections are reported to a new view at once; what a peer announces is held only up
// to a bound (larger frames stay in their channel, dropped ones are read past).
#include "collectives/transport/connection_set.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

// A view that takes every frame into a buffer of its own (or defers it, when asked).
class RecordingView final : public FrameSink {
 public:
  struct Seen {
    int rank;
    uint32_t tag;
    std::string payload;
  };
  absl::StatusOr<Landing> OnFrame(int rank, const FrameHeader& header,
                                  uint64_t deferred_id) override {
    if (defer) {
      deferred_ids.push_back(deferred_id);
      pending.push_back({rank, header.tag, ""});  // lands wherever its claim says
      return Landing{};
    }
    landed.push_back({rank, header.tag, std::string(header.length, '\0')});
    return Landing{landed.back().payload.data(), &landed.back()};
  }
  absl::Status OnPayload(int rank, void* token) override {
    (void)rank;
    complete.push_back(static_cast<Seen*>(token));
    return absl::OkStatus();
  }
  absl::Status OnPeerClosed(int rank, const std::string& why) override {
    closed.push_back(rank);
    return absl::UnavailableError(why);
  }
  bool defer = false;
  std::vector<Seen> landed;  // reserved below: tokens point into it
  std::vector<Seen> pending;
  std::vector<uint64_t> deferred_ids;
  std::vector<Seen*> complete;
  std::vector<int> closed;
};

FrameHeader Frame(uint32_t epoch, uint32_t tag, size_t length) {
  FrameHeader header = {};
  header.kind = static_cast<uint8_t>(FrameKind::kPointToPoint);
  header.tag = tag;
  header.length = length;
  header.set_epoch(epoch);
  return header;
}

// Delivers a frame as a channel would: announce, copy the payload where it lands, complete.
void Deliver(ConnectionSet& set, int connection, const FrameHeader& header,
             const std::string& payload) {
  auto landing = set.OnFrame(connection, header, 7);
  ASSERT_TRUE(landing.ok()) << landing.status();
  if (landing->data == nullptr && header.length > 0) return;  // deferred
  if (header.length > 0) std::memcpy(landing->data, payload.data(), header.length);
  ASSERT_TRUE(set.OnPayload(connection, landing->token).ok());
}

TEST(ConnectionSet, RoutesByEpochAndMembership) {
  ConnectionSet set(4);
  RecordingView parent, child;
  parent.landed.reserve(16);
  child.landed.reserve(16);
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1, 2, 3}, nullptr).ok());
  Deliver(set, 2, Frame(0, 1, 3), "abc");
  ASSERT_EQ(parent.landed.size(), 1u);
  EXPECT_EQ(parent.landed[0].rank, 2);
  EXPECT_EQ(parent.landed[0].payload, "abc");

  // Connection 3 already shrank (epoch 1) and sends to the child this rank has not installed.
  Deliver(set, 3, Frame(1, 5, 4), "next");
  Deliver(set, 3, Frame(1, 6, 0), "");
  EXPECT_EQ(parent.landed.size(), 1u);

  // The child: connections 0, 1, 3 (2 was left out) become ranks 0, 1, 2.
  ASSERT_TRUE(set.Install(&child, 1, {0, 1, 3}, nullptr).ok());
  ASSERT_EQ(child.landed.size(), 2u);
  EXPECT_EQ(child.landed[0].rank, 2);
  EXPECT_EQ(child.landed[0].tag, 5u);
  EXPECT_EQ(child.landed[0].payload, "next");
  EXPECT_EQ(child.landed[1].tag, 6u);
  EXPECT_EQ(child.complete.size(), 2u);

  // The parent's epoch, and the left-out connection, are dropped; so are their payloads.
  Deliver(set, 1, Frame(0, 9, 1000), std::string(1000, 'x'));
  Deliver(set, 2, Frame(1, 9, 2), "no");
  EXPECT_EQ(child.landed.size(), 2u);
  EXPECT_EQ(parent.landed.size(), 1u);
  // The current epoch goes straight through.
  Deliver(set, 1, Frame(1, 3, 2), "ok");
  ASSERT_EQ(child.landed.size(), 3u);
  EXPECT_EQ(child.landed[2].rank, 1);
  EXPECT_EQ(child.landed[2].payload, "ok");
}

TEST(ConnectionSet, HeldFramesTheViewDefersAreClaimedFromTheSet) {
  ConnectionSet set(2);
  RecordingView parent, child;
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1}, nullptr).ok());
  Deliver(set, 1, Frame(1, 4, 5), "hello");
  child.defer = true;
  ASSERT_TRUE(set.Install(&child, 1, {0, 1}, nullptr).ok());
  ASSERT_EQ(child.deferred_ids.size(), 1u);
  ASSERT_TRUE(ConnectionSet::Holds(child.deferred_ids[0]));
  char buffer[5];
  RecordingView::Seen token{1, 4, ""};
  ASSERT_TRUE(set.Claim(1, child.deferred_ids[0], buffer, &token).ok());
  EXPECT_EQ(std::string(buffer, 5), "hello");
  ASSERT_EQ(child.complete.size(), 1u);
  EXPECT_EQ(child.complete[0], &token);
  EXPECT_FALSE(set.Claim(1, child.deferred_ids[0], buffer, &token).ok());  // claimed once
}

// A channel's deferred frame, as the set's claim sees it.
struct ChannelClaims {
  struct Claimed {
    int rank;
    uint64_t id;
    char* data;
    void* token;
  };
  std::vector<Claimed> claimed;
  ConnectionSet::ChannelClaim Claimer() {
    return [this](int rank, uint64_t id, char* data, void* token) {
      claimed.push_back({rank, id, data, token});
      return absl::OkStatus();
    };
  }
};

TEST(ConnectionSet, DroppedFramesAreReadPastWhateverLengthTheyAnnounce) {
  ConnectionSet set(3);
  RecordingView parent, child;
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1, 2}, nullptr).ok());
  ASSERT_TRUE(set.Install(&child, 1, {0, 1}, nullptr).ok());
  // An older epoch's frame, and a left-out connection's, of any length: no buffer for it.
  for (auto [connection, epoch] : {std::pair{1, 0u}, std::pair{2, 1u}, std::pair{2, 5u}}) {
    auto landing = set.OnFrame(connection, Frame(epoch, 1, uint64_t{1} << 62), 7);
    ASSERT_TRUE(landing.ok());
    EXPECT_TRUE(landing->discard);
    EXPECT_EQ(landing->data, nullptr);
    EXPECT_EQ(landing->token, nullptr);
  }
  auto empty = set.OnFrame(1, Frame(0, 1, 0), 7);
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->discard);
  EXPECT_TRUE(child.landed.empty());
}

TEST(ConnectionSet, LargeHeldFramesStayInTheirChannelAndAreClaimedThere) {
  ConnectionSet set(2);
  RecordingView parent, child;
  child.landed.reserve(4);
  ChannelClaims channel;
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1}, nullptr).ok());
  // A newer epoch's frame bigger than the set copies: deferred in the channel, nothing held.
  const uint64_t big = ConnectionSet::kHeldCopyBytes + 1;
  auto landing = set.OnFrame(1, Frame(1, 4, big), 41);
  ASSERT_TRUE(landing.ok());
  EXPECT_EQ(landing->data, nullptr);
  EXPECT_FALSE(landing->discard);
  // Announcing 2^64 - 1 bytes holds nothing either.
  auto huge = set.OnFrame(1, Frame(2, 4, ~uint64_t{0}), 42);
  ASSERT_TRUE(huge.ok());
  EXPECT_EQ(huge->data, nullptr);
  // Installed: the view lands it through the channel's claim, under the channel's id.
  ASSERT_TRUE(set.Install(&child, 1, {0, 1}, channel.Claimer()).ok());
  ASSERT_EQ(channel.claimed.size(), 1u);
  EXPECT_EQ(channel.claimed[0].rank, 1);
  EXPECT_EQ(channel.claimed[0].id, 41u);
  ASSERT_EQ(child.landed.size(), 1u);
  EXPECT_EQ(channel.claimed[0].data, child.landed[0].payload.data());
  EXPECT_EQ(channel.claimed[0].token, &child.landed[0]);
  // A view that defers it gets the channel's id (so its claim goes to the channel).
  RecordingView next;
  next.defer = true;
  ASSERT_TRUE(set.Install(&next, 2, {0, 1}, channel.Claimer()).ok());
  ASSERT_EQ(next.deferred_ids, std::vector<uint64_t>({42}));
  EXPECT_FALSE(ConnectionSet::Holds(next.deferred_ids[0]));
  EXPECT_EQ(channel.claimed.size(), 1u);
}

TEST(ConnectionSet, HeldCopiesStayWithinTheirTotal) {
  ConnectionSet set(2);
  RecordingView parent, child;
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1}, nullptr).ok());
  const uint64_t each = ConnectionSet::kHeldCopyBytes;
  const uint64_t fit = ConnectionSet::kHeldTotalBytes / each;
  for (uint64_t i = 0; i < fit; ++i) {
    auto landing = set.OnFrame(1, Frame(1, 1, each), i);
    ASSERT_TRUE(landing.ok());
    ASSERT_NE(landing->data, nullptr) << "frame " << i;
    ASSERT_TRUE(set.OnPayload(1, landing->token).ok());
  }
  auto over = set.OnFrame(1, Frame(1, 1, each), fit);
  ASSERT_TRUE(over.ok());
  EXPECT_EQ(over->data, nullptr);  // left in its channel
  // Replayed, the copies are freed: the set copies again.
  child.landed.reserve(fit + 2);
  ChannelClaims channel;
  ASSERT_TRUE(set.Install(&child, 1, {0, 1}, channel.Claimer()).ok());
  EXPECT_EQ(child.landed.size(), fit + 1);
  EXPECT_EQ(channel.claimed.size(), 1u);
  auto again = set.OnFrame(1, Frame(2, 1, each), 99);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->data, nullptr);
}

TEST(ConnectionSet, ClosedConnectionsAreReportedToANewView) {
  ConnectionSet set(3);
  RecordingView parent, child;
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1, 2}, nullptr).ok());
  EXPECT_FALSE(set.OnPeerClosed(2, "reset").ok());
  EXPECT_EQ(parent.closed, std::vector<int>({2}));
  // Left out: nothing to report.
  RecordingView without;
  EXPECT_TRUE(set.Install(&without, 1, {0, 1}, nullptr).ok());
  EXPECT_TRUE(without.closed.empty());
  // Kept (a survivor's connection closed meanwhile): the view hears of it at once.
  EXPECT_FALSE(set.Install(&child, 2, {0, 2}, nullptr).ok());
  EXPECT_EQ(child.closed, std::vector<int>({1}));
  // Epochs only go up.
  EXPECT_FALSE(set.Install(&child, 2, {0, 2}, nullptr).ok());
}

}  // namespace
}  // namespace cohort
