// Bad input at the network edge of the store and the coordinator: random bytes, truncated and
// oversized frames and fields (length prefixes and counts up to 2^32 - 1, 64-bit fields up to
// 2^64 - 1), a replayed or wrong proof, a sender of one byte a second, a thousand idle
// connections, and malformed rendezvous records written by an authenticated client. Each is
// refused or timed out with bounded memory while a legitimate client is served throughout.
// docs/security.md records what each input gets.
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/socket.h"
#include "elastic/agent_client.h"
#include "elastic/coordinator.h"
#include "elastic/rendezvous.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"
#include "elastic/store/wire.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::store {
namespace {

using ::testing::HasSubstr;

constexpr char kJob[] = "edge-job";
constexpr char kToken[] = "edge-token";
constexpr int64_t kMaxValueBytes = 1 << 20;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Resident memory of this process (the server runs in it), in MiB.
double ResidentMiB() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1048576.0);
}

// A connection speaking the store protocol by hand (store_server.h describes it).
struct Raw {
  Fd fd;

  static Raw Open(int port) {
    auto fd = ConnectTcp("127.0.0.1", port, Deadline::In(absl::Seconds(5)));
    EXPECT_TRUE(fd.ok()) << fd.status();
    return Raw{fd.ok() ? std::move(*fd) : Fd()};
  }

  void Send(const std::string& bytes) const {
    absl::Status status =
        WriteFully(fd.get(), bytes.data(), bytes.size(), Deadline::In(absl::Seconds(5)), "store");
    EXPECT_TRUE(status.ok()) << status;
  }

  std::string ReadFrame() const {
    char header[4];
    if (!ReadFully(fd.get(), header, 4, Deadline::In(absl::Seconds(5)), "store").ok()) return "";
    std::string body(LoadU32(header), '\0');
    if (!ReadFully(fd.get(), body.data(), body.size(), Deadline::In(absl::Seconds(5)), "store")
             .ok()) {
      return "";
    }
    return body;
  }

  // True when the server closes the connection within `seconds` (what it sends first is read
  // and dropped).
  bool ClosedWithin(double seconds) const {
    auto start = std::chrono::steady_clock::now();
    char buffer[4096];
    while (SecondsSince(start) < seconds) {
      pollfd entry = {fd.get(), POLLIN, 0};
      if (::poll(&entry, 1, 50) <= 0) continue;
      ssize_t got = ::recv(fd.get(), buffer, sizeof(buffer), 0);
      if (got <= 0) return true;
    }
    return false;
  }

  static std::string Hello(const std::string& nonce, const std::string& job = kJob) {
    std::string out(kMagic);
    Writer writer(&out);
    writer.U32(kProtocolVersion);
    writer.BeginFrame();
    writer.U8(static_cast<uint8_t>(HandshakeType::kHello));
    writer.String(job);
    writer.U8(1);
    writer.Bytes(nonce);
    writer.EndFrame();
    return out;
  }

  static std::string Proof(const std::string& proof) {
    std::string out;
    Writer writer(&out);
    writer.BeginFrame();
    writer.U8(static_cast<uint8_t>(HandshakeType::kProof));
    writer.Bytes(proof);
    writer.EndFrame();
    return out;
  }

  // Hello and the challenge's server nonce.
  std::string Challenge(const std::string& client_nonce) const {
    Send(Hello(client_nonce));
    std::string challenge = ReadFrame();
    EXPECT_EQ(challenge.size(), 1 + kNonceBytes);
    return challenge.size() > 1 ? challenge.substr(1) : "";
  }

  static Raw Authenticated(int port) {
    Raw raw = Open(port);
    std::string client_nonce = crypto::RandomBytes(kNonceBytes);
    std::string server_nonce = raw.Challenge(client_nonce);
    raw.Send(Proof(HandshakeProof(kToken, "client", kJob, client_nonce, server_nonce)));
    std::string welcome = raw.ReadFrame();
    EXPECT_FALSE(welcome.empty());
    if (!welcome.empty()) {
      EXPECT_EQ(welcome[0], static_cast<char>(HandshakeType::kWelcome));
    }
    return raw;
  }

  // The reply to one request: its id, status code and the rest.
  struct Reply {
    uint64_t id = 0;
    uint8_t code = 0;
    std::string rest;
  };
  Reply ReadReply() const {
    std::string body = ReadFrame();
    Reply reply;
    Reader reader(body);
    EXPECT_TRUE(reader.U64(&reply.id, "id").ok());
    EXPECT_TRUE(reader.U8(&reply.code, "code").ok());
    reply.rest = body.size() > 9 ? body.substr(9) : "";
    return reply;
  }
};

// A request frame: op, request id, then `fields` as given (possibly malformed).
std::string Request(Op op, uint64_t id, const std::string& fields) {
  std::string out;
  Writer writer(&out);
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(op));
  writer.U64(id);
  writer.Bytes(fields);
  writer.EndFrame();
  return out;
}

std::string U32(uint32_t value) {
  std::string out;
  Writer(&out).U32(value);
  return out;
}

std::string U64(uint64_t value) {
  std::string out;
  Writer(&out).U64(value);
  return out;
}

std::string Str(const std::string& text) {
  std::string out;
  Writer(&out).String(text);
  return out;
}

class StoreEdgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreServerOptions options;
    options.host = "127.0.0.1";
    options.job_id = kJob;
    options.token = kToken;
    options.max_key_bytes = 1024;
    options.max_value_bytes = kMaxValueBytes;
    options.handshake_timeout = absl::Seconds(2);
    auto server = StoreServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    StoreClientOptions client_options;
    client_options.host = "127.0.0.1";
    client_options.port = server_->port();
    client_options.job_id = kJob;
    client_options.token = kToken;
    client_options.connect_timeout = absl::Seconds(5);
    client_options.timeout = absl::Seconds(5);
    auto client = StoreClient::Connect(client_options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  // The legitimate client is served: a round trip, a write and a read back, quickly.
  void ExpectServed(const std::string& when) {
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(client_->Ping().ok()) << when;
    EXPECT_TRUE(client_->Set("legit", when).ok()) << when;
    auto value = client_->Get("legit", absl::Seconds(1));
    EXPECT_TRUE(value.ok() && *value == when) << when;
    EXPECT_LT(SecondsSince(start), 0.5) << "the legitimate client waited " << when;
  }

  int port() const { return server_->port(); }

  std::unique_ptr<StoreServer> server_;
  std::unique_ptr<StoreClient> client_;
};

TEST_F(StoreEdgeTest, RandomBytesAreClosedWithoutReply) {
  std::mt19937_64 random(20240601);
  for (int connection = 0; connection < 64; ++connection) {
    std::string bytes(1 + random() % 4096, '\0');
    for (char& byte : bytes) byte = static_cast<char>(random());
    if (bytes[0] == 'C') bytes[0] = 'X';  // not the magic's first byte
    Raw raw = Raw::Open(port());
    raw.Send(bytes);
    EXPECT_TRUE(raw.ClosedWithin(2.0)) << "connection " << connection;
    if (connection % 16 == 0) ExpectServed(absl::StrCat("after random input ", connection));
  }
  // Random bytes after a valid preamble: refused at the first frame (a hello of up to 8 KiB
  // that does not parse, or a larger length), closed.
  for (int connection = 0; connection < 16; ++connection) {
    std::string bytes = std::string(kMagic) + U32(kProtocolVersion);
    for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(random()));
    Raw raw = Raw::Open(port());
    raw.Send(bytes);
    EXPECT_TRUE(raw.ClosedWithin(4.0)) << "connection " << connection;
  }
  ExpectServed("after random frames");
}

TEST_F(StoreEdgeTest, OversizedAndTruncatedFramesAreRefusedWithBoundedMemory) {
  const double resident_before = ResidentMiB();
  // During the handshake: a frame announcing 2^32 - 1 bytes is refused with a reason.
  {
    Raw raw = Raw::Open(port());
    raw.Send(std::string(kMagic) + U32(kProtocolVersion) + U32(0xFFFFFFFF));
    std::string refusal = raw.ReadFrame();
    ASSERT_FALSE(refusal.empty());
    EXPECT_EQ(refusal[0], static_cast<char>(HandshakeType::kRefused));
    EXPECT_THAT(refusal, HasSubstr("larger than the 8192 bytes a handshake may take"));
    EXPECT_TRUE(raw.ClosedWithin(4.0));
  }
  // Authenticated: a frame over key + value limits is a protocol error, then the close; the
  // server never buffers what the length announces.
  for (uint32_t length : {uint32_t{kMaxValueBytes + 1024 + kRequestOverheadBytes + 1},
                          uint32_t{0x7FFFFFFF}, uint32_t{0xFFFFFFFF}}) {
    Raw raw = Raw::Authenticated(port());
    raw.Send(U32(length) + std::string(4096, 'x'));
    Raw::Reply reply = raw.ReadReply();
    EXPECT_EQ(reply.id, kConnectionMessageId);
    EXPECT_THAT(reply.rest, HasSubstr("larger than the store's limit"));
    EXPECT_TRUE(raw.ClosedWithin(4.0));
  }
  ExpectServed("after oversized frames");
  // Fields inside a frame the server takes: a string length or a key count of 2^32 - 1, 64-bit
  // timeouts of 2^63 and 2^64 - 1, an unknown op. Each gets an error reply (or, for the huge
  // timeouts, a wait without a deadline, answered when the key appears); the connection stays.
  {
    Raw raw = Raw::Authenticated(port());
    raw.Send(Request(Op::kSet, 1, U32(0xFFFFFFFF) + "key"));
    Raw::Reply reply = raw.ReadReply();
    EXPECT_EQ(reply.id, 1u);
    EXPECT_EQ(reply.code, static_cast<uint8_t>(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(reply.rest, HasSubstr("could not parse this set request"));
    raw.Send(Request(Op::kWait, 2, U32(0xFFFFFFFF) + U64(0)));
    reply = raw.ReadReply();
    EXPECT_EQ(reply.id, 2u);
    EXPECT_THAT(reply.rest, HasSubstr("could not parse this wait request"));
    raw.Send(Request(static_cast<Op>(200), 3, ""));
    reply = raw.ReadReply();
    EXPECT_EQ(reply.code, static_cast<uint8_t>(absl::StatusCode::kUnimplemented));
    raw.Send(Request(Op::kGet, 4, Str("later") + U64(uint64_t{1} << 63)));
    raw.Send(Request(Op::kGet, 5, Str("later") + U64(~uint64_t{0})));
    raw.Send(Request(Op::kGet, 6, Str("later")));  // truncated: no timeout field
    reply = raw.ReadReply();
    EXPECT_EQ(reply.id, 6u);
    EXPECT_EQ(reply.code, static_cast<uint8_t>(absl::StatusCode::kInvalidArgument));
    ASSERT_TRUE(client_->Set("later", "now").ok());
    for (uint64_t id : {4u, 5u}) {
      reply = raw.ReadReply();
      EXPECT_EQ(reply.code, 0) << id;
    }
    // A frame cut short, then the client leaves: no reply, the server drops the connection.
    std::string cut = Request(Op::kSet, 7, Str("k") + Str("v"));
    raw.Send(cut.substr(0, cut.size() - 3));
    ::shutdown(raw.fd.get(), SHUT_WR);
    EXPECT_TRUE(raw.ClosedWithin(2.0));
  }
  ExpectServed("after malformed fields");
  EXPECT_LT(ResidentMiB() - resident_before, 64.0) << "the server buffered what lengths announced";
}

TEST_F(StoreEdgeTest, WrongMissingAndReplayedProofsAreRefused) {
  // The right proof for another connection's nonces (a replay): refused.
  Raw first = Raw::Open(port());
  std::string first_nonce = crypto::RandomBytes(kNonceBytes);
  std::string first_server_nonce = first.Challenge(first_nonce);
  std::string proof = HandshakeProof(kToken, "client", kJob, first_nonce, first_server_nonce);
  Raw second = Raw::Open(port());
  second.Challenge(first_nonce);  // the same client nonce; the server's differs
  second.Send(Raw::Proof(proof));
  std::string refusal = second.ReadFrame();
  ASSERT_FALSE(refusal.empty());
  EXPECT_EQ(refusal[0], static_cast<char>(HandshakeType::kRefused));
  EXPECT_THAT(refusal, HasSubstr("job token does not match"));
  EXPECT_TRUE(second.ClosedWithin(4.0));
  // A proof made with a wrong token, and one that is all zeros: refused alike.
  for (const std::string& bad : {HandshakeProof("guess", "client", kJob, first_nonce,
                                                first_server_nonce),
                                 std::string(kProofBytes, '\0')}) {
    Raw raw = Raw::Open(port());
    std::string nonce = crypto::RandomBytes(kNonceBytes);
    std::string server_nonce = raw.Challenge(nonce);
    raw.Send(Raw::Proof(bad == std::string(kProofBytes, '\0')
                            ? bad
                            : HandshakeProof("guess", "client", kJob, nonce, server_nonce)));
    refusal = raw.ReadFrame();
    ASSERT_FALSE(refusal.empty());
    EXPECT_EQ(refusal[0], static_cast<char>(HandshakeType::kRefused));
    EXPECT_TRUE(raw.ClosedWithin(4.0));
  }
  // The first connection, still within its deadline, completes with its own proof.
  first.Send(Raw::Proof(proof));
  std::string welcome = first.ReadFrame();
  ASSERT_FALSE(welcome.empty());
  EXPECT_EQ(welcome[0], static_cast<char>(HandshakeType::kWelcome));
  // No proof at all (hello, then silence): dropped at the handshake deadline (2 s).
  Raw silent = Raw::Open(port());
  silent.Challenge(crypto::RandomBytes(kNonceBytes));
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(silent.ClosedWithin(4.0));
  EXPECT_LT(SecondsSince(start), 3.0);
  ExpectServed("after bad proofs");
}

TEST_F(StoreEdgeTest, SlowSenderIsDroppedAtTheHandshakeDeadline) {
  // One byte a second: the preamble alone would take 12 s; the handshake deadline is 2 s.
  Raw slow = Raw::Open(port());
  const std::string hello = Raw::Hello(crypto::RandomBytes(kNonceBytes));
  auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (size_t sent = 0; sent < hello.size() && !closed; ++sent) {
    if (::send(slow.fd.get(), &hello[sent], 1, MSG_NOSIGNAL) != 1) break;
    ExpectServed(absl::StrCat("while the slow sender is at byte ", sent));
    closed = slow.ClosedWithin(1.0);
  }
  EXPECT_TRUE(closed || slow.ClosedWithin(1.0));
  EXPECT_GT(SecondsSince(start), 1.5);
  EXPECT_LT(SecondsSince(start), 4.0);
}

TEST_F(StoreEdgeTest, ThousandIdleConnectionsDoNotStopALegitimateClient) {
  rlimit limit = {};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 2200 && limit.rlim_max >= 2200) {
    limit.rlim_cur = 2200;  // both ends of each connection live in this process
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
  if (limit.rlim_cur < 2200) GTEST_SKIP() << "needs 2200 descriptors (ulimit -n)";
  const double resident_before = ResidentMiB();
  std::vector<Raw> idle;
  idle.reserve(1000);
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    idle.push_back(Raw::Open(port()));
    // Half of them say hello and stop there.
    if (i % 2 == 1) idle.back().Send(Raw::Hello(crypto::RandomBytes(kNonceBytes)));
    if (i % 250 == 0) ExpectServed(absl::StrCat("with ", i, " idle connections"));
  }
  ExpectServed("with 1000 idle connections");
  // A new client still connects and authenticates while they are all open.
  Raw fresh = Raw::Authenticated(port());
  fresh.Send(Request(Op::kPing, 1, ""));
  EXPECT_EQ(fresh.ReadReply().code, 0);
  EXPECT_LT(ResidentMiB() - resident_before, 64.0);
  // Every idle one is closed by the handshake deadline (2 s after it connected).
  for (size_t i = 0; i < idle.size(); ++i) {
    double left = std::max(0.5, 2.0 + 1.0 - SecondsSince(start));
    ASSERT_TRUE(idle[i].ClosedWithin(left)) << "idle connection " << i << " was kept";
  }
  ExpectServed("after the idle connections were dropped");
}

}  // namespace
}  // namespace cohort::store

namespace cohort::elastic {
namespace {

// An authenticated client (a buggy agent, or a script holding the token) writes malformed
// rendezvous records: a join request without a node record, node records that do not parse or
// lie about their size, a failure report that is not JSON. The coordinator ignores them (with
// one warning each) and forms the round of the two real agents.
TEST(CoordinatorEdgeTest, MalformedRecordsDoNotStopTheRendezvous) {
  store::StoreServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.job_id = "job";
  server_options.token = "secret";
  auto server = store::StoreServer::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();
  RendezvousSettings settings;
  settings.min_nodes = 2;
  settings.max_nodes = 2;
  settings.join_timeout = absl::Seconds(20);
  settings.last_call_timeout = absl::Milliseconds(200);
  settings.heartbeat_interval = absl::Milliseconds(100);
  settings.heartbeat_timeout = absl::Seconds(2);
  settings.read_timeout = absl::Seconds(5);
  CoordinatorOptions coordinator_options;
  coordinator_options.store_port = (*server)->port();
  coordinator_options.job_id = "job";
  coordinator_options.token = "secret";
  coordinator_options.settings = settings;
  coordinator_options.worker_store_listen_host = "127.0.0.1";
  auto coordinator = Coordinator::Start(coordinator_options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();

  store::StoreClientOptions rogue_options;
  rogue_options.host = "127.0.0.1";
  rogue_options.port = (*server)->port();
  rogue_options.job_id = "job";
  rogue_options.token = "secret";
  rogue_options.timeout = absl::Seconds(5);
  rogue_options.connect_timeout = absl::Seconds(5);
  auto rogue = store::StoreClient::Connect(rogue_options);
  ASSERT_TRUE(rogue.ok()) << rogue.status();
  const std::vector<std::pair<std::string, std::string>> records = {
      {keys::Join("not-json"), "{\"id\": "},
      {keys::Join("huge"), R"({"id":"huge","host":"h","address":"a","master_port":1e300,)"
                           R"("local_world_size":9223372036854775807,"role":"r",)"
                           R"("node_rank":-1,"labels":{}})"},
      {keys::Join("empty"), ""},
      {keys::Left("nobody"), "\x01\x02"},
      {keys::Failure(1, "rogue"), "\x01\x02 not json"},
      {keys::Heartbeat("no-record"), "x"},
  };
  for (const auto& [key, value] : records) ASSERT_TRUE((*rogue)->Set(key, value).ok()) << key;

  AgentClientOptions options;
  options.store_host = "127.0.0.1";
  options.store_port = (*server)->port();
  options.job_id = "job";
  options.token = "secret";
  options.settings = settings;
  std::vector<std::unique_ptr<AgentClient>> agents;
  std::vector<std::future<absl::StatusOr<World>>> joins;
  for (const std::string host : {"a", "b"}) {
    auto agent = AgentClient::Connect(options, host + "-id");
    ASSERT_TRUE(agent.ok()) << agent.status();
    agents.push_back(std::move(*agent));
    AgentClient* raw = agents.back().get();
    joins.push_back(std::async(std::launch::async, [raw, host] {
      NodeInfo info;
      info.node_id = raw->node_id();
      info.host = host;
      info.address = "127.0.0.1";
      info.master_port = 1000;
      info.local_world_size = 2;
      return raw->Join(info, absl::Seconds(15), nullptr);
    }));
  }
  for (auto& join : joins) {
    auto world = join.get();
    ASSERT_TRUE(world.ok()) << world.status();
    ASSERT_EQ(world->nodes.size(), 2u) << EncodeWorld(*world);
    EXPECT_EQ(world->world_size(), 4) << EncodeWorld(*world);
  }
  EXPECT_TRUE((*coordinator)->status().ok()) << (*coordinator)->status();
  agents.clear();
  (*coordinator)->RequestStop();
  (*server)->Stop();
}

}  // namespace
}  // namespace cohort::elastic
