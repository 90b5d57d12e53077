// Bad input at a rank's listening port (the TCP mesh a communicator connects through): random
// bytes, wrong handshakes, 1,000 idle connections while the communicator is being created, and
// frames with lengths up to 2^64 - 1 from a peer that knows the communicator's secret (this
// process reads it from the store, as any holder of the job token could). The communicator must
// either be created as if nothing happened, or fail with an error naming the peer, with bounded
// memory; docs/security.md records what each input gets.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "collectives/nic.h"
#include "collectives/transport/channel.h"
#include "common/crypto.h"
#include "common/socket.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

#pragma pack(push, 1)
struct Hello {  // tcp/mesh.cc's handshake
  uint32_t magic;
  uint32_t version;
  int32_t from;
  int32_t to;
  int32_t size;
  char proof[32];
};
#pragma pack(pop)

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double ResidentMiB(pid_t pid) {
  std::ifstream statm(absl::StrCat("/proc/", pid, "/statm"));
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1048576.0);
}

// This process takes rank 1's place in a two-rank communicator whose rank 0 is a forked
// process (as any holder of the job token could: the records and the communicator's secret are
// in the store): it publishes rank 1's records, finds rank 0's listening port, and connects
// with the right proof when told to.
struct Impostor {
  Bootstrap& store;
  std::string secret;
  std::string ip;
  int port = 0;

  // Rank 1's topology and peer records; then rank 0's secret and mesh address.
  void Publish() {
    nlohmann::json topology = {{"host_id", "impostor"},
                               {"host_name", "impostor"},
                               {"numa_node", 0},
                               {"cpus", "0"},
                               {"network", NicsToJson(HostNics{})}};
    ASSERT_TRUE(store.Set("edge/topo/1", topology.dump()).ok());
    PeerRecord self;
    self.rank = 1;
    self.host_id = "impostor";
    self.host_name = "impostor";
    self.pid = 1;
    self.order = {ChannelKind::kTcp};
    self.offers[static_cast<int>(ChannelKind::kTcp)] = "127.0.0.1 1";  // never connected to
    ASSERT_TRUE(store.Set("edge/peer/1", self.Serialize()).ok());
    auto found = store.Get("edge/secret", absl::Seconds(20));
    ASSERT_TRUE(found.ok()) << found.status();
    secret = *found;
    auto text = store.Get("edge/peer/0", absl::Seconds(20));
    ASSERT_TRUE(text.ok()) << text.status();
    auto record = PeerRecord::Parse(*text);
    ASSERT_TRUE(record.ok()) << record.status();
    const std::string& offer = record->offer(ChannelKind::kTcp);
    ip = offer.substr(0, offer.find(' '));
    port = std::stoi(offer.substr(offer.find(' ') + 1));
  }

  // The handshake; returns the connection once rank 0 accepted it (and how long that took).
  Fd Connect(double* seconds) {
    auto start = std::chrono::steady_clock::now();
    auto fd = ConnectTcp(ip, port, Deadline::In(absl::Seconds(5)));
    EXPECT_TRUE(fd.ok()) << fd.status();
    if (!fd.ok()) return Fd();
    Hello hello = {kWireMagic, kWireVersion, 1, 0, 2, {}};
    std::string proof = crypto::HmacSha256(secret, "cohort-tcp|edge|1|0");
    std::memcpy(hello.proof, proof.data(), sizeof(hello.proof));
    EXPECT_TRUE(
        WriteFully(fd->get(), &hello, sizeof(hello), Deadline::In(absl::Seconds(5)), "r0").ok());
    uint32_t reply[2] = {0, 1};
    absl::Status read =
        ReadFully(fd->get(), reply, sizeof(reply), Deadline::In(absl::Seconds(15)), "rank 0");
    EXPECT_TRUE(read.ok()) << read;
    EXPECT_EQ(reply[1], 0u) << "the right proof was refused";
    *seconds = SecondsSince(start);
    return std::move(*fd);
  }
};

// Rank 0 of the two: creates the communicator (10 s timeout), then waits until the test is
// done with it.
void Rank0(int, int, Bootstrap& bootstrap) {
  setenv("COHORT_SHM", "0", 1);
  auto comm = Communicator::Create(bootstrap, 0, 2, {.name = "edge", .timeout = absl::Seconds(10)});
  ASSERT_TRUE(comm.ok()) << comm.status();
  ASSERT_TRUE(bootstrap.Set("created", "1").ok());
  ASSERT_TRUE(bootstrap.Get("test-done", absl::Seconds(30)).ok());
}

// Strangers that send garbage or a wrong handshake and leave are dropped; the real peer is
// accepted at once after them.
TEST(TransportEdge, BadHandshakesAtTheListenerAreDropped) {
  testing::RankGroup group;
  group.Start(1, Rank0);
  Impostor impostor{group.store()};
  impostor.Publish();
  ASSERT_GT(impostor.port, 0);
  std::mt19937_64 random(7);
  std::vector<std::string> inputs;
  for (int i = 0; i < 8; ++i) {
    std::string bytes(1 + random() % 200, '\0');
    for (char& byte : bytes) byte = static_cast<char>(random());
    inputs.push_back(bytes);
  }
  Hello wrong_magic = {0x12345678, kWireVersion, 1, 0, 2, {}};
  Hello wrong_version = {kWireMagic, kWireVersion + 1, 1, 0, 2, {}};
  Hello wrong_proof = {kWireMagic, kWireVersion, 1, 0, 2, {}};
  Hello wrong_rank = {kWireMagic, kWireVersion, 7, 0, 2, {}};
  Hello wrong_size = {kWireMagic, kWireVersion, 1, 0, 1 << 30, {}};
  for (const Hello* hello : {&wrong_magic, &wrong_version, &wrong_proof, &wrong_rank, &wrong_size}) {
    inputs.emplace_back(reinterpret_cast<const char*>(hello), sizeof(Hello));
  }
  for (const std::string& input : inputs) {
    auto fd = ConnectTcp(impostor.ip, impostor.port, Deadline::In(absl::Seconds(5)));
    ASSERT_TRUE(fd.ok()) << fd.status();
    ASSERT_TRUE(WriteFully(fd->get(), input.data(), input.size(), Deadline::In(absl::Seconds(5)),
                           "rank 0")
                    .ok());
    ::shutdown(fd->get(), SHUT_WR);
    char sink[64];
    while (::recv(fd->get(), sink, sizeof(sink), 0) > 0) {
    }  // rank 0 answers or drops it, and closes it
  }
  double seconds = 0;
  Fd peer = impostor.Connect(&seconds);
  EXPECT_LT(seconds, 1.0);
  EXPECT_TRUE(group.store().Get("created", absl::Seconds(10)).ok());
  ASSERT_TRUE(group.store().Set("test-done", "1").ok());
  for (const auto& exit : group.Join(absl::Seconds(60))) EXPECT_TRUE(exit.ok());
}

// A thousand connections that say nothing, open while the communicator is created: none must
// hold up the rank that listens. (This fails today: the mesh reads each accepted connection's
// hello in turn, waiting up to the creation timeout for it; see docs/security.md.)
TEST(TransportEdge, DISABLED_ThousandIdleConnectionsDoNotHoldUpCreation) {
  rlimit limit = {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 1200 && limit.rlim_max >= 1200) {
    limit.rlim_cur = 1200;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
  if (limit.rlim_cur < 1200) GTEST_SKIP() << "needs 1200 descriptors (ulimit -n)";
  testing::RankGroup group;
  group.Start(1, Rank0);
  Impostor impostor{group.store()};
  impostor.Publish();
  ASSERT_GT(impostor.port, 0);
  std::vector<Fd> idle;
  for (int i = 0; i < 1000; ++i) {
    auto fd = ConnectTcp(impostor.ip, impostor.port, Deadline::In(absl::Seconds(1)));
    if (!fd.ok()) break;  // the backlog is full
    idle.push_back(std::move(*fd));
  }
  ASSERT_GE(idle.size(), 100u);
  double seconds = 0;
  Fd peer = impostor.Connect(&seconds);
  EXPECT_LT(seconds, 1.0) << "rank 0 accepted the real peer only after waiting on idle ones";
  EXPECT_TRUE(group.store().Get("created", absl::Seconds(10)).ok());
  ASSERT_TRUE(group.store().Set("test-done", "1").ok());
  for (const auto& exit : group.Join(absl::Seconds(60))) EXPECT_TRUE(exit.ok());
}

// The authenticated impostor sends frames whose lengths no rank would send: rank 0's receive
// fails naming rank 1, at once and without allocating what the lengths announce.
TEST(TransportEdge, OversizedFramesFromAnAuthenticatedPeerFailTheOperation) {
  for (uint64_t length : {uint64_t{1} << 40, (uint64_t{1} << 63) + 1, ~uint64_t{0}}) {
    testing::RankGroup group;
    group.Start(1, [](int, int, Bootstrap& bootstrap) {
      setenv("COHORT_SHM", "0", 1);
      auto comm = Communicator::Create(bootstrap, 0, 2,
                                       {.name = "edge", .timeout = absl::Seconds(10)});
      ASSERT_TRUE(comm.ok()) << comm.status();
      std::vector<char> buffer(4096);
      RecvOptions receive;
      receive.data = buffer.data();
      receive.count = buffer.size();
      receive.peer = 1;
      auto start = std::chrono::steady_clock::now();
      absl::Status status = (*comm)->Recv(receive)->Wait();
      EXPECT_FALSE(status.ok());
      EXPECT_THAT(std::string(status.message()), HasSubstr("rank 1"));
      EXPECT_LT(SecondsSince(start), 2.0);
      ASSERT_TRUE(bootstrap.Set("rank0-done", "1").ok());
    });
    Impostor impostor{group.store()};
    impostor.Publish();
    ASSERT_GT(impostor.port, 0);
    double seconds = 0;
    Fd fd = impostor.Connect(&seconds);
    ASSERT_TRUE(fd.valid());
    FrameHeader header = {};
    header.kind = static_cast<uint8_t>(FrameKind::kPointToPoint);
    header.length = length;
    ASSERT_TRUE(
        WriteFully(fd.get(), &header, sizeof(header), Deadline::In(absl::Seconds(5)), "r0").ok());
    std::string filler(1 << 16, 'x');
    (void)WriteFully(fd.get(), filler.data(), filler.size(), Deadline::In(absl::Seconds(2)), "r0");
    ASSERT_TRUE(group.store().Get("rank0-done", absl::Seconds(20)).ok()) << "length " << length;
    EXPECT_LT(ResidentMiB(group.pid(0)), 512.0) << "length " << length;
    for (const auto& exit : group.Join(absl::Seconds(30))) EXPECT_TRUE(exit.ok()) << length;
  }
}

}  // namespace
}  // namespace cohort
