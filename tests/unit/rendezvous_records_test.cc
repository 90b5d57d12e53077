// Records the rendezvous reads from the store are checked field by field: a number that is not
// an integer in range (found by tests/fuzz/rendezvous_fuzz: 1.7e92 as a generation was
// converted to int64, which is undefined) or an oversized world is a DataLoss error naming the
// field, never a silently wrong or undefined value.
#include "elastic/rendezvous.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::elastic {
namespace {

using ::testing::HasSubstr;

const char kNode[] =
    R"({"id":"a","host":"h","address":"1.2.3.4","master_port":%s,"local_world_size":%s,)"
    R"("role":"default","node_rank":-1,"labels":{}})";

std::string Node(const std::string& port, const std::string& ranks) {
  char text[512];
  std::snprintf(text, sizeof(text), kNode, port.c_str(), ranks.c_str());
  return text;
}

TEST(RendezvousRecords, IntegersMustBeIntegersInRange) {
  EXPECT_TRUE(DecodeNode(Node("29500", "8")).ok());
  for (const auto& [port, ranks, field] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"1.7e92", "8", "master_port"},
           {"29500.5", "8", "master_port"},
           {"70000", "8", "master_port"},
           {"29500", "-3", "local_world_size"},
           {"29500", "18446744073709551615", "local_world_size"},
           {"29500", "\"8\"", "local_world_size"}}) {
    auto node = DecodeNode(Node(port, ranks));
    ASSERT_FALSE(node.ok()) << port << " " << ranks;
    EXPECT_EQ(node.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(node.status().message()), HasSubstr(field));
  }
  for (const auto& [text, field] : std::vector<std::pair<std::string, std::string>>{
           {"cohort-world 1\n1.7e92\t0\t\t0\t\t0\n", "generation"},
           {"cohort-world 1\n1\t0\t\t70000\t\t0\n", "master_port"},
           {"cohort-world 1\n1\t0\t\t0\t\t1\na\th\ta\t1\t99999999\tr\t-1\t\n",
            "local_world_size"},
           {"cohort-world 1\n1\t0\t\t0\t\t1\na\th\ta\t1\t8\tr\t-7\t\n", "node_rank"}}) {
    auto world = DecodeWorld(text);
    ASSERT_FALSE(world.ok()) << text;
    EXPECT_EQ(world.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(world.status().message()), HasSubstr(field));
  }
  EXPECT_TRUE(DecodeWorld("cohort-world 1\n1\t0\t\t0\t\t1\na\th\ta\t1\t8\tr\t-1\t\n").ok());
}

}  // namespace
}  // namespace cohort::elastic
