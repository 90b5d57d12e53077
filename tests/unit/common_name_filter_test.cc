// NameFilter: NCCL_SOCKET_IFNAME / NCCL_IB_HCA syntax as COHORT_SOCKET_IFNAME and COHORT_IB_HCA
// read it, and InterfaceAddress choosing by it.
#include "common/name_filter.h"

#include "common/socket.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

NameFilter Parse(const char* text, bool with_ports = false) {
  auto filter = NameFilter::Parse(text, with_ports, "COHORT_SOCKET_IFNAME");
  EXPECT_TRUE(filter.ok()) << filter.status();
  return filter.ok() ? *filter : NameFilter();
}

TEST(NameFilter, EmptyMatchesEverything) {
  NameFilter filter = Parse("");
  EXPECT_TRUE(filter.empty());
  EXPECT_TRUE(filter.Matches("eth0"));
  EXPECT_TRUE(filter.Matches("lo"));
}

TEST(NameFilter, PrefixesByDefault) {
  NameFilter filter = Parse("eth,ib");
  EXPECT_TRUE(filter.Matches("eth0"));
  EXPECT_TRUE(filter.Matches("eth10"));
  EXPECT_TRUE(filter.Matches("ib0"));
  EXPECT_FALSE(filter.Matches("ens1"));
  EXPECT_FALSE(filter.Matches("et"));
}

TEST(NameFilter, EqualsMatchesWholeNames) {
  NameFilter filter = Parse("=eth0");
  EXPECT_TRUE(filter.Matches("eth0"));
  EXPECT_FALSE(filter.Matches("eth01"));
}

TEST(NameFilter, CaretExcludes) {
  NameFilter filter = Parse("^docker,lo");
  EXPECT_TRUE(filter.exclude());
  EXPECT_TRUE(filter.Matches("eth0"));
  EXPECT_FALSE(filter.Matches("docker0"));
  EXPECT_FALSE(filter.Matches("lo"));
  // Both markers, in either order.
  EXPECT_FALSE(Parse("^=eth0").Matches("eth0"));
  EXPECT_TRUE(Parse("^=eth0").Matches("eth01"));
  EXPECT_FALSE(Parse("=^eth0").Matches("eth0"));
}

TEST(NameFilter, PortsForRdmaDevices) {
  NameFilter filter = Parse("mlx5_0:1,mlx5_1", true);
  EXPECT_TRUE(filter.Matches("mlx5_0", 1));
  EXPECT_FALSE(filter.Matches("mlx5_0", 2));
  EXPECT_TRUE(filter.Matches("mlx5_1", 2));
  EXPECT_FALSE(filter.Matches("mlx4_0", 1));
  NameFilter excluded = Parse("^mlx5_0:2", true);
  EXPECT_TRUE(excluded.Matches("mlx5_0", 1));
  EXPECT_FALSE(excluded.Matches("mlx5_0", 2));
  // Interface names keep their colon (aliases).
  EXPECT_TRUE(Parse("eth0:1").Matches("eth0:1"));
  EXPECT_FALSE(Parse("eth0:1").Matches("eth0"));
}

TEST(NameFilter, BadTextNamesTheSetting) {
  auto port = NameFilter::Parse("mlx5_0:x", true, "COHORT_IB_HCA");
  ASSERT_FALSE(port.ok());
  EXPECT_THAT(std::string(port.status().message()),
              AllOf(HasSubstr("COHORT_IB_HCA=\"mlx5_0:x\""), HasSubstr("port")));
  auto nothing = NameFilter::Parse("^", false, "COHORT_SOCKET_IFNAME");
  ASSERT_FALSE(nothing.ok());
  EXPECT_THAT(std::string(nothing.status().message()), HasSubstr("lists no names"));
  EXPECT_FALSE(NameFilter::Parse(":1", true, "COHORT_IB_HCA").ok());
}

TEST(InterfaceAddress, ExactNamePrefixAndExclusion) {
  // Every Linux host has lo at 127.0.0.1.
  EXPECT_EQ(*InterfaceAddress("lo"), "127.0.0.1");
  EXPECT_EQ(*InterfaceAddress("=lo"), "127.0.0.1");
  auto none = InterfaceAddress("no-such-interface");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()),
              AllOf(HasSubstr("no-such-interface"), HasSubstr("lo")));
  // Excluding names never selects loopback: it is chosen only when named.
  auto excluded = InterfaceAddress("^lo");
  if (excluded.ok()) {
    EXPECT_NE(*excluded, "127.0.0.1");
  }
}

}  // namespace
}  // namespace cohort
