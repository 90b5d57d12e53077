// The channel list and the per-pair choice: parsing COHORT_TRANSPORTS-style lists, peer records
// surviving the bootstrap, and which kind serves a pair (both ends must agree; a kind that
// cannot serve is an error naming the pair, never a silent fallback).
#include "collectives/transport/channel.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

PeerRecord Record(int rank, const std::string& host, const std::string& order, bool forced,
                  bool ucx = false, bool rdma = false) {
  PeerRecord record;
  record.rank = rank;
  record.host_id = host;
  record.host_name = "node-" + host;
  record.pid = 100 + rank;
  record.order = *ParseChannelKinds(order);
  record.order_forced = forced;
  for (ChannelKind kind : record.order) {
    if (kind == ChannelKind::kUcx && !ucx) continue;
    record.offers[static_cast<int>(kind)] =
        kind == ChannelKind::kUcx ? (rdma ? "rdma=1 addr=00" : "rdma=0 addr=00") : "10.0.0.1 5000";
  }
  return record;
}

TEST(ChannelKinds, ParseAndPrint) {
  auto kinds = ParseChannelKinds("shm, UCX,tcp");
  ASSERT_TRUE(kinds.ok()) << kinds.status();
  EXPECT_EQ(ChannelKindsText(*kinds), "shm,ucx,tcp");
  EXPECT_EQ(ChannelKindsText(*ParseChannelKinds("tcp")), "tcp");
}

TEST(ChannelKinds, BadListsNameWhatIsAccepted) {
  for (const char* text : {"", "rdma", "tcp,tcp", " , "}) {
    auto kinds = ParseChannelKinds(text);
    ASSERT_FALSE(kinds.ok()) << text;
    EXPECT_THAT(std::string(kinds.status().message()), HasSubstr("shm, ucx, tcp")) << text;
  }
  EXPECT_THAT(std::string(ParseChannelKinds("tcp,ib").status().message()), HasSubstr("\"ib\""));
}

TEST(PeerRecord, RoundTrip) {
  PeerRecord record = Record(3, "hostA/boot", "shm,ucx,tcp", true, true, true);
  auto parsed = PeerRecord::Parse(record.Serialize());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rank, 3);
  EXPECT_EQ(parsed->host_id, "hostA/boot");
  EXPECT_EQ(parsed->host_name, "node-hostA/boot");
  EXPECT_EQ(parsed->pid, 103);
  EXPECT_EQ(ChannelKindsText(parsed->order), "shm,ucx,tcp");
  EXPECT_TRUE(parsed->order_forced);
  for (int kind = 0; kind < kChannelKinds; ++kind) EXPECT_EQ(parsed->offers[kind], record.offers[kind]);
}

TEST(PeerRecord, MalformedIsAnError) {
  for (const char* text : {"garbage", "rank=x\norder=tcp", "rank=1", "rank=1\norder=bogus"}) {
    auto parsed = PeerRecord::Parse(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("malformed peer record"));
  }
}

TEST(ChooseChannel, DefaultOrder) {
  // Same host: shared memory; other hosts: TCP, since UCX has no RDMA device to offer.
  PeerRecord a = Record(0, "h0", "shm,ucx,tcp", false, true);
  PeerRecord b = Record(1, "h0", "shm,ucx,tcp", false, true);
  PeerRecord c = Record(2, "h1", "shm,ucx,tcp", false, true);
  EXPECT_EQ(*ChooseChannel(a, b), ChannelKind::kSharedMemory);
  EXPECT_EQ(*ChooseChannel(b, a), ChannelKind::kSharedMemory);
  EXPECT_EQ(*ChooseChannel(a, c), ChannelKind::kTcp);
  EXPECT_EQ(*ChooseChannel(c, a), ChannelKind::kTcp);
  // With RDMA on both ends, UCX carries the pairs across hosts.
  PeerRecord d = Record(3, "h1", "shm,ucx,tcp", false, true, true);
  PeerRecord e = Record(4, "h2", "shm,ucx,tcp", false, true, true);
  EXPECT_EQ(*ChooseChannel(d, e), ChannelKind::kUcx);
  EXPECT_EQ(*ChooseChannel(c, e), ChannelKind::kTcp);  // c has no RDMA
}

TEST(ChooseChannel, ForcedUcxServesWithoutRdma) {
  PeerRecord a = Record(0, "h0", "ucx", true, true);
  PeerRecord b = Record(1, "h1", "ucx", true, true);
  EXPECT_EQ(*ChooseChannel(a, b), ChannelKind::kUcx);
}

TEST(ChooseChannel, TheLowerRanksOrderDecides) {
  PeerRecord low = Record(0, "h0", "tcp,shm", true);
  PeerRecord high = Record(1, "h0", "shm,tcp", true);
  EXPECT_EQ(*ChooseChannel(low, high), ChannelKind::kTcp);
  EXPECT_EQ(*ChooseChannel(high, low), ChannelKind::kTcp);
}

TEST(ChooseChannel, NoKindLeftIsAnErrorNamingThePair) {
  PeerRecord a = Record(0, "h0", "shm", true);
  PeerRecord b = Record(1, "h1", "shm", true);
  auto kind = ChooseChannel(a, b);
  ASSERT_FALSE(kind.ok());
  EXPECT_THAT(std::string(kind.status().message()),
              AllOf(HasSubstr("rank 0 (node-h0)"), HasSubstr("rank 1 (node-h1)"),
                    HasSubstr("different hosts"), HasSubstr("COHORT_TRANSPORTS")));
  // Forced UCX where a rank has none: says so rather than falling back to TCP.
  PeerRecord c = Record(2, "h0", "ucx", true, /*ucx=*/false);
  PeerRecord d = Record(3, "h1", "ucx", true, /*ucx=*/true);
  kind = ChooseChannel(c, d);
  ASSERT_FALSE(kind.ok());
  EXPECT_THAT(std::string(kind.status().message()),
              AllOf(HasSubstr("rank 2"), HasSubstr("UCX is not available")));
}

}  // namespace
}  // namespace cohort
