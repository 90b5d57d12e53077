// The connection set's routing of frames between communicator views (connection_set.h): the
// current epoch's frames reach the view under its own ranks; older epochs' and left-out ranks'
// are dropped; a newer epoch's are held and replayed, in order, when that view is installed;
// closed connections are reported to a new view at once.
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
      pending.push_back({rank, header.tag, std::string(header.length, '\0')});
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
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1, 2, 3}).ok());
  Deliver(set, 2, Frame(0, 1, 3), "abc");
  ASSERT_EQ(parent.landed.size(), 1u);
  EXPECT_EQ(parent.landed[0].rank, 2);
  EXPECT_EQ(parent.landed[0].payload, "abc");

  // Connection 3 already shrank (epoch 1) and sends to the child this rank has not installed.
  Deliver(set, 3, Frame(1, 5, 4), "next");
  Deliver(set, 3, Frame(1, 6, 0), "");
  EXPECT_EQ(parent.landed.size(), 1u);

  // The child: connections 0, 1, 3 (2 was left out) become ranks 0, 1, 2.
  ASSERT_TRUE(set.Install(&child, 1, {0, 1, 3}).ok());
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
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1}).ok());
  Deliver(set, 1, Frame(1, 4, 5), "hello");
  child.defer = true;
  ASSERT_TRUE(set.Install(&child, 1, {0, 1}).ok());
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

TEST(ConnectionSet, ClosedConnectionsAreReportedToANewView) {
  ConnectionSet set(3);
  RecordingView parent, child;
  ASSERT_TRUE(set.Install(&parent, 0, {0, 1, 2}).ok());
  EXPECT_FALSE(set.OnPeerClosed(2, "reset").ok());
  EXPECT_EQ(parent.closed, std::vector<int>({2}));
  // Left out: nothing to report.
  RecordingView without;
  EXPECT_TRUE(set.Install(&without, 1, {0, 1}).ok());
  EXPECT_TRUE(without.closed.empty());
  // Kept (a survivor's connection closed meanwhile): the view hears of it at once.
  EXPECT_FALSE(set.Install(&child, 2, {0, 2}).ok());
  EXPECT_EQ(child.closed, std::vector<int>({1}));
  // Epochs only go up.
  EXPECT_FALSE(set.Install(&child, 2, {0, 2}).ok());
}

}  // namespace
}  // namespace cohort
