// Store server + client over loopback: every operation, blocking waits released by other
// clients, timeouts, many concurrent clients, authentication, size limits, and a server that
// stops or is killed while clients wait.
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/socket.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"
#include "elastic/store/wire.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::store {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr char kJob[] = "test-job";
constexpr char kToken[] = "test-token";

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

StoreServerOptions ServerOptions() {
  StoreServerOptions options;
  options.host = "127.0.0.1";
  options.job_id = kJob;
  options.token = kToken;
  options.max_key_bytes = 256;
  options.max_value_bytes = 16 << 20;
  return options;
}

StoreClientOptions ClientOptions(int port) {
  StoreClientOptions options;
  options.host = "127.0.0.1";
  options.port = port;
  options.job_id = kJob;
  options.token = kToken;
  options.connect_timeout = absl::Seconds(10);
  options.timeout = absl::Seconds(10);
  options.reply_margin = absl::Seconds(2);
  return options;
}

// A free port on loopback: bound, then released.
int FreePort() {
  auto listening = ListenTcp("127.0.0.1", 0);
  EXPECT_TRUE(listening.ok()) << listening.status();
  auto port = LocalPort(listening->get());
  EXPECT_TRUE(port.ok()) << port.status();
  return *port;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = StoreServer::Start(ServerOptions());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  std::unique_ptr<StoreClient> NewClient() {
    auto client = StoreClient::Connect(ClientOptions(server_->port()));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  std::unique_ptr<StoreServer> server_;
  std::string address_;
};

TEST_F(StoreTest, SetThenGetReturnsLatestValue) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("a", "1").ok());
  EXPECT_EQ(client->Get("a", absl::Seconds(1)).value_or("?"), "1");
  ASSERT_TRUE(client->Set("a", "2").ok());
  EXPECT_EQ(client->Get("a").value_or("?"), "2");
  std::string binary("x\0y\xff", 4);
  ASSERT_TRUE(client->Set("binary", binary).ok());
  EXPECT_EQ(client->Get("binary").value_or("?"), binary);
  ASSERT_TRUE(client->Set("empty", "").ok());
  EXPECT_EQ(client->Get("empty").value_or("?"), "");
}

TEST_F(StoreTest, LargeValueRoundTrips) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  std::string value = crypto::RandomBytes(8 << 20);
  ASSERT_TRUE(client->Set("big", value).ok());
  auto got = client->Get("big");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == value);
}

TEST_F(StoreTest, GetOfMissingKeyTimesOutNamingTheKey) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  auto start = std::chrono::steady_clock::now();
  auto got = client->Get("never/set", absl::Milliseconds(200));
  EXPECT_GE(SecondsSince(start), 0.19);
  EXPECT_LT(SecondsSince(start), 2.0);
  ASSERT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr(absl::StrCat("store at ", address_)));
  EXPECT_THAT(got.status().message(), HasSubstr("\"never/set\""));
  EXPECT_THAT(got.status().message(), HasSubstr("COHORT_TIMEOUT"));
}

TEST_F(StoreTest, WaitTimesOutNamingTheMissingKeys) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("present", "1").ok());
  absl::Status status = client->Wait({"present", "absent"}, absl::Milliseconds(150));
  ASSERT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_THAT(status.message(), HasSubstr("missing: \"absent\""));
  EXPECT_TRUE(client->Wait({"present"}, absl::Milliseconds(150)).ok());
}

TEST_F(StoreTest, GetBlocksUntilAnotherClientSets) {
  auto waiter = NewClient();
  auto setter = NewClient();
  ASSERT_NE(waiter, nullptr);
  ASSERT_NE(setter, nullptr);
  auto got = std::async(std::launch::async, [&] { return waiter->Get("late", absl::Seconds(10)); });
  EXPECT_EQ(got.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(setter->Set("late", "here").ok());
  ASSERT_EQ(got.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_LT(SecondsSince(start), 1.0);
  auto value = got.get();
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "here");
}

TEST_F(StoreTest, WaitIsReleasedOnlyWhenEveryKeyExists) {
  auto waiter = NewClient();
  auto setter = NewClient();
  ASSERT_NE(waiter, nullptr);
  ASSERT_NE(setter, nullptr);
  auto done = std::async(std::launch::async, [&] {
    return waiter->Wait({"x", "y", "z"}, absl::Seconds(10));
  });
  ASSERT_TRUE(setter->Set("x", "1").ok());
  ASSERT_EQ(setter->Add("y", 1).value_or(0), 1);
  EXPECT_EQ(done.wait_for(std::chrono::milliseconds(150)), std::future_status::timeout);
  ASSERT_EQ(setter->CompareSet("z", "", "3").value_or("?"), "3");
  ASSERT_EQ(done.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_TRUE(done.get().ok());
}

TEST_F(StoreTest, WaitCountsADeletedKeyAsMissing) {
  auto waiter = NewClient();
  auto setter = NewClient();
  ASSERT_NE(waiter, nullptr);
  ASSERT_NE(setter, nullptr);
  auto done = std::async(std::launch::async, [&] {
    return waiter->Wait({"a", "b"}, absl::Seconds(10));
  });
  ASSERT_TRUE(setter->Set("a", "1").ok());
  ASSERT_TRUE(setter->Delete("a").value_or(false));
  ASSERT_TRUE(setter->Set("b", "1").ok());
  EXPECT_EQ(done.wait_for(std::chrono::milliseconds(150)), std::future_status::timeout);
  ASSERT_TRUE(setter->Set("a", "2").ok());
  ASSERT_EQ(done.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_TRUE(done.get().ok());
}

TEST_F(StoreTest, OneClientSharedByThreadsDoesNotBlockItselfWhileWaiting) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  auto got = std::async(std::launch::async, [&] { return client->Get("k", absl::Seconds(10)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // The parked get must not hold up other calls on the same connection.
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(client->Ping().ok());
  ASSERT_TRUE(client->Set("k", "v").ok());
  EXPECT_LT(SecondsSince(start), 1.0);
  ASSERT_EQ(got.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_EQ(got.get().value_or("?"), "v");
}

TEST_F(StoreTest, AddCountsFromZeroAndRejectsNonIntegers) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Add("counter", 5).value_or(0), 5);
  EXPECT_EQ(client->Add("counter", -7).value_or(0), -2);
  EXPECT_EQ(client->Get("counter").value_or("?"), "-2");
  ASSERT_TRUE(client->Set("text", "abc").ok());
  auto added = client->Add("text", 1);
  EXPECT_EQ(added.status().code(), absl::StatusCode::kFailedPrecondition) << added.status();
  EXPECT_THAT(added.status().message(), HasSubstr("not an integer"));
  ASSERT_TRUE(client->Set("max", absl::StrCat(INT64_MAX)).ok());
  EXPECT_EQ(client->Add("max", 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(client->Add("max", 0).value_or(0), INT64_MAX);
}

TEST_F(StoreTest, CompareSetFollowsC10dSemantics) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  // Missing key, non-empty expected: nothing stored, `expected` returned.
  EXPECT_EQ(client->CompareSet("cas", "old", "new").value_or("?"), "old");
  EXPECT_EQ(client->NumKeys().value_or(-1), 0);
  // Missing key, empty expected: desired stored.
  EXPECT_EQ(client->CompareSet("cas", "", "first").value_or("?"), "first");
  EXPECT_EQ(client->Get("cas").value_or("?"), "first");
  // Mismatch: unchanged, current value returned.
  EXPECT_EQ(client->CompareSet("cas", "wrong", "second").value_or("?"), "first");
  EXPECT_EQ(client->Get("cas").value_or("?"), "first");
  // Match: desired stored and returned.
  EXPECT_EQ(client->CompareSet("cas", "first", "second").value_or("?"), "second");
  EXPECT_EQ(client->Get("cas").value_or("?"), "second");
  // An existing empty value matches an empty expected.
  ASSERT_TRUE(client->Set("blank", "").ok());
  EXPECT_EQ(client->CompareSet("blank", "", "filled").value_or("?"), "filled");
}

TEST_F(StoreTest, DeleteReportsWhetherTheKeyExisted) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("gone", "1").ok());
  EXPECT_EQ(client->Delete("gone").value_or(false), true);
  EXPECT_EQ(client->Delete("gone").value_or(true), false);
  EXPECT_EQ(client->Get("gone", absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(StoreTest, ListByPrefixAndNumKeys) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  for (const char* key : {"rank/0", "rank/1", "rank/10", "ranking", "other", "rank"}) {
    ASSERT_TRUE(client->Set(key, "v").ok());
  }
  EXPECT_THAT(client->List("rank/").value_or(std::vector<std::string>{}),
              ElementsAre("rank/0", "rank/1", "rank/10"));
  EXPECT_THAT(client->List("rank").value_or(std::vector<std::string>{}),
              ElementsAre("rank", "rank/0", "rank/1", "rank/10", "ranking"));
  EXPECT_TRUE(client->List("none/").value_or(std::vector<std::string>{"?"}).empty());
  EXPECT_EQ(client->List("").value_or(std::vector<std::string>{}).size(), 6u);
  EXPECT_EQ(client->NumKeys().value_or(-1), 6);
}

std::vector<std::string> ChangedKeys(const ChangeSet& set) {
  std::vector<std::string> keys;
  for (const Change& change : set.changes) keys.push_back(change.key);
  return keys;
}

TEST_F(StoreTest, ChangesListWritesUnderAPrefixInRevisionOrder) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("in/b", "1").ok());
  ASSERT_TRUE(client->Set("hb/x", "1").ok());
  ASSERT_TRUE(client->Set("in/a", "2").ok());
  auto all = client->Changes("in/", 0, absl::ZeroDuration());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(ChangedKeys(*all), ElementsAre("in/b", "in/a"));  // by write, not by name
  EXPECT_EQ(all->changes[1].value, "2");
  EXPECT_EQ(all->revision, 3);
  // A rewrite moves the key to its new revision; add and compare_set count as writes, a
  // compare_set that does not store does not, and deletions are not listed.
  ASSERT_TRUE(client->Set("in/b", "3").ok());
  ASSERT_TRUE(client->Add("in/c", 5).ok());
  ASSERT_TRUE(client->CompareSet("in/a", "nope", "x").ok());
  ASSERT_TRUE(client->Delete("in/a").ok());
  auto later = client->Changes("in/", all->revision, absl::ZeroDuration());
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_THAT(ChangedKeys(*later), ElementsAre("in/b", "in/c"));
  EXPECT_EQ(later->changes[0].value, "3");
  EXPECT_EQ(later->changes[1].value, "5");
  EXPECT_EQ(later->changes[1].revision, 5);
  auto none = client->Changes("in/", later->revision, absl::ZeroDuration());
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->changes.empty());
  EXPECT_EQ(none->revision, later->revision);
}

TEST_F(StoreTest, ChangesWaitsForAWriteUnderItsPrefixOnly) {
  auto watcher = NewClient();
  auto writer = NewClient();
  ASSERT_NE(watcher, nullptr);
  ASSERT_NE(writer, nullptr);
  auto start = std::chrono::steady_clock::now();
  auto waited = watcher->Changes("in/", 0, absl::Milliseconds(150));
  ASSERT_TRUE(waited.ok()) << waited.status();  // a poll that saw nothing is not an error
  EXPECT_TRUE(waited->changes.empty());
  EXPECT_GE(SecondsSince(start), 0.14);
  auto parked = std::async(std::launch::async,
                           [&] { return watcher->Changes("in/", 0, absl::Seconds(10)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(writer->Set("hb/other", "1").ok());  // not under the prefix: still parked
  EXPECT_EQ(parked.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
  start = std::chrono::steady_clock::now();
  ASSERT_TRUE(writer->Set("in/join", "node").ok());
  auto woken = parked.get();
  ASSERT_TRUE(woken.ok()) << woken.status();
  EXPECT_LT(SecondsSince(start), 1.0);
  EXPECT_THAT(ChangedKeys(*woken), ElementsAre("in/join"));
  EXPECT_EQ(woken->revision, 2);
}

TEST_F(StoreTest, SetManyStoresEveryEntryInOneRoundTrip) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  std::vector<std::pair<std::string, std::string>> entries;
  for (int i = 0; i < 2000; ++i) entries.emplace_back(absl::StrCat("admit/", i), absl::StrCat(i));
  ASSERT_TRUE(client->SetMany(entries).ok());
  EXPECT_EQ(client->List("admit/").value_or(std::vector<std::string>{}).size(), 2000u);
  EXPECT_EQ(client->Get("admit/1999").value_or("?"), "1999");
  EXPECT_TRUE(client->SetMany({}).ok());
  auto too_big = client->SetMany({{"ok", "1"}, {std::string(300, 'k'), "1"}});
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument) << too_big;
  EXPECT_FALSE(client->Get("ok", absl::Milliseconds(10)).ok());  // checked before anything is sent
}

TEST_F(StoreTest, ShutdownEndsAParkedCallAtOnce) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  auto parked = std::async(std::launch::async,
                           [&] { return client->Get("never", absl::Seconds(20)).status(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto start = std::chrono::steady_clock::now();
  client->Shutdown();
  absl::Status status = parked.get();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(SecondsSince(start), 1.0);
  EXPECT_FALSE(client->Ping().ok());
}

TEST_F(StoreTest, PingAndLocalAddressHint) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->Ping().ok());
  EXPECT_EQ(client->LocalAddressHint(), "127.0.0.1");
  EXPECT_EQ(client->address(), address_);
}

TEST_F(StoreTest, ManyKeys) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  constexpr int kKeys = 5000;
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(client->Set(absl::StrCat("many/", i), absl::StrCat("value-", i)).ok());
  }
  EXPECT_EQ(client->NumKeys().value_or(-1), kKeys);
  EXPECT_EQ(client->List("many/").value_or(std::vector<std::string>{}).size(), size_t{kKeys});
  // many/42, many/420..429, many/4200..4299
  EXPECT_EQ(client->List("many/42").value_or(std::vector<std::string>{}).size(), 111u);
  for (int i = 0; i < kKeys; i += 997) {
    EXPECT_EQ(client->Get(absl::StrCat("many/", i)).value_or("?"), absl::StrCat("value-", i));
  }
  std::vector<std::string> all;
  for (int i = 0; i < kKeys; ++i) all.push_back(absl::StrCat("many/", i));
  EXPECT_TRUE(client->Wait(all, absl::Seconds(1)).ok());
}

TEST_F(StoreTest, ThreeHundredConcurrentClientsAddToOneCounter) {
  constexpr int kClients = 300;
  constexpr int kAddsPerClient = 10;
  std::vector<std::vector<int64_t>> sums(kClients);
  std::vector<absl::Status> errors(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      auto client = StoreClient::Connect(ClientOptions(server_->port()));
      if (!client.ok()) {
        errors[i] = client.status();
        return;
      }
      for (int j = 0; j < kAddsPerClient; ++j) {
        auto sum = (*client)->Add("counter", 1);
        if (!sum.ok()) {
          errors[i] = sum.status();
          return;
        }
        sums[i].push_back(*sum);
      }
      // Everyone waits for everyone: hundreds of parked waits released by the last add.
      errors[i] = (*client)->Wait({"all-done"}, absl::Seconds(20));
    });
  }
  auto closer = NewClient();
  ASSERT_NE(closer, nullptr);
  absl::Status waited = closer->Wait({"counter"}, absl::Seconds(20));
  ASSERT_TRUE(waited.ok()) << waited;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (closer->Get("counter").value_or("0") != absl::StrCat(kClients * kAddsPerClient) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(closer->Set("all-done", "1").ok());
  for (auto& thread : threads) thread.join();
  std::set<int64_t> seen;
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(errors[i].ok()) << "client " << i << ": " << errors[i];
    seen.insert(sums[i].begin(), sums[i].end());
  }
  // Every add saw a distinct running total: the adds were atomic.
  EXPECT_EQ(seen.size(), size_t{kClients * kAddsPerClient});
  EXPECT_EQ(*seen.begin(), 1);
  EXPECT_EQ(*seen.rbegin(), kClients * kAddsPerClient);
  EXPECT_EQ(closer->Get("counter").value_or("?"), absl::StrCat(kClients * kAddsPerClient));
}

TEST_F(StoreTest, WrongTokenIsRefused) {
  StoreClientOptions options = ClientOptions(server_->port());
  options.token = "not-the-token";
  auto client = StoreClient::Connect(options);
  ASSERT_EQ(client.status().code(), absl::StatusCode::kPermissionDenied) << client.status();
  EXPECT_THAT(client.status().message(),
              HasSubstr(absl::StrCat("store at ", address_,
                                     " refused this client: the job token does not match (set "
                                     "COHORT_JOB_TOKEN to the job's token)")));
  EXPECT_TRUE(NewClient() != nullptr);  // the server carries on
}

TEST_F(StoreTest, MissingTokenIsRefused) {
  StoreClientOptions options = ClientOptions(server_->port());
  options.token = "";
  auto client = StoreClient::Connect(options);
  ASSERT_EQ(client.status().code(), absl::StatusCode::kPermissionDenied) << client.status();
  EXPECT_THAT(client.status().message(), HasSubstr(absl::StrCat("store at ", address_,
                                                                " refused this client: the client "
                                                                "has no job token")));
  EXPECT_THAT(client.status().message(), HasSubstr("COHORT_JOB_TOKEN"));
}

TEST_F(StoreTest, WrongJobIsRefused) {
  StoreClientOptions options = ClientOptions(server_->port());
  options.job_id = "other-job";
  auto client = StoreClient::Connect(options);
  ASSERT_EQ(client.status().code(), absl::StatusCode::kPermissionDenied) << client.status();
  EXPECT_THAT(client.status().message(), HasSubstr("job \"other-job\""));
  EXPECT_THAT(client.status().message(), HasSubstr("COHORT_JOB_ID"));
}

TEST(StoreAuthTest, ClientWithTokenRefusesServerWithout) {
  StoreServerOptions server_options = ServerOptions();
  server_options.token = "";
  auto server = StoreServer::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = StoreClient::Connect(ClientOptions((*server)->port()));
  ASSERT_EQ(client.status().code(), absl::StatusCode::kPermissionDenied) << client.status();
  EXPECT_THAT(client.status().message(), HasSubstr("COHORT_JOB_TOKEN"));
  // Without a token on either side the store is open to the job.
  StoreClientOptions open = ClientOptions((*server)->port());
  open.token = "";
  auto open_client = StoreClient::Connect(open);
  ASSERT_TRUE(open_client.ok()) << open_client.status();
  EXPECT_TRUE((*open_client)->Ping().ok());
}

TEST_F(StoreTest, OversizedKeyAndValueAreRejectedNamingTheLimit) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  absl::Status status = client->Set(std::string(257, 'k'), "v");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("limit of 256 bytes"));
  EXPECT_THAT(status.message(), HasSubstr("COHORT_STORE_MAX_KEY_BYTES"));
  status = client->Set("k", std::string((16 << 20) + 1, 'v'));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("COHORT_STORE_MAX_VALUE_BYTES"));
  EXPECT_EQ(client->Get(std::string(300, 'k'), absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(client->Set(std::string(256, 'k'), "fits").ok());
  EXPECT_TRUE(client->Ping().ok());
}

// A hand-driven connection that speaks the wire protocol directly, to send what StoreClient
// never would.
class RawConnection {
 public:
  static Fd Open(int port) {
    auto fd = ConnectTcp("127.0.0.1", port, Deadline::In(absl::Seconds(5)));
    EXPECT_TRUE(fd.ok()) << fd.status();
    return fd.ok() ? std::move(*fd) : Fd();
  }

  // Connects and completes the handshake with the test job's token.
  static Fd Authenticated(int port) {
    Fd fd = Open(port);
    std::string client_nonce = crypto::RandomBytes(kNonceBytes);
    std::string out(kMagic);
    Writer writer(&out);
    writer.U32(kProtocolVersion);
    writer.BeginFrame();
    writer.U8(static_cast<uint8_t>(HandshakeType::kHello));
    writer.String(kJob);
    writer.U8(1);
    writer.Bytes(client_nonce);
    writer.EndFrame();
    Send(fd, out);
    std::string challenge = ReadFrame(fd);
    EXPECT_EQ(challenge.size(), 1 + kNonceBytes);
    std::string server_nonce = challenge.substr(1);
    out.clear();
    writer.BeginFrame();
    writer.U8(static_cast<uint8_t>(HandshakeType::kProof));
    writer.Bytes(HandshakeProof(kToken, "client", kJob, client_nonce, server_nonce));
    writer.EndFrame();
    Send(fd, out);
    std::string welcome = ReadFrame(fd);
    EXPECT_EQ(welcome[0], static_cast<char>(HandshakeType::kWelcome));
    return fd;
  }

  static void Send(const Fd& fd, const std::string& bytes) {
    absl::Status status =
        WriteFully(fd.get(), bytes.data(), bytes.size(), Deadline::In(absl::Seconds(5)), "store");
    EXPECT_TRUE(status.ok()) << status;
  }

  static std::string ReadFrame(const Fd& fd) {
    char header[4];
    absl::Status status = ReadFully(fd.get(), header, 4, Deadline::In(absl::Seconds(5)), "store");
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) return "";
    std::string body(LoadU32(header), '\0');
    status = ReadFully(fd.get(), body.data(), body.size(), Deadline::In(absl::Seconds(5)), "store");
    EXPECT_TRUE(status.ok()) << status;
    return body;
  }

  // True when the server closes the connection within `timeout`.
  static bool ClosedWithin(const Fd& fd, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    char buffer[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd entry = {fd.get(), POLLIN, 0};
      if (::poll(&entry, 1, 50) <= 0) continue;
      ssize_t got = ::recv(fd.get(), buffer, sizeof(buffer), 0);
      if (got <= 0) return true;
    }
    return false;
  }
};

TEST_F(StoreTest, ServerRejectsOversizedRequestsAndClosesOnOversizedFrames) {
  Fd fd = RawConnection::Authenticated(server_->port());
  ASSERT_TRUE(fd.valid());
  // A key over the limit inside a frame the server can take: an error reply, connection kept.
  std::string out;
  Writer writer(&out);
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(Op::kSet));
  writer.U64(7);
  writer.String(std::string(1000, 'k'));
  writer.String("v");
  writer.EndFrame();
  RawConnection::Send(fd, out);
  std::string reply = RawConnection::ReadFrame(fd);
  Reader reader(reply);
  uint64_t request_id = 0;
  uint8_t code = 0;
  std::string message;
  ASSERT_TRUE(reader.U64(&request_id, "id").ok());
  ASSERT_TRUE(reader.U8(&code, "code").ok());
  ASSERT_TRUE(reader.String(&message, "message").ok());
  EXPECT_EQ(request_id, 7u);
  EXPECT_EQ(code, static_cast<uint8_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(message, HasSubstr("COHORT_STORE_MAX_KEY_BYTES"));

  // A frame header announcing more than key + value limits: an error, then the server closes.
  out.clear();
  writer.U32((16 << 20) + 256 + kRequestOverheadBytes + 1);
  RawConnection::Send(fd, out);
  reply = RawConnection::ReadFrame(fd);
  reader = Reader(reply);
  ASSERT_TRUE(reader.U64(&request_id, "id").ok());
  ASSERT_TRUE(reader.U8(&code, "code").ok());
  ASSERT_TRUE(reader.String(&message, "message").ok());
  EXPECT_EQ(request_id, kConnectionMessageId);
  EXPECT_THAT(message, HasSubstr("larger than the store's limit"));
  EXPECT_TRUE(RawConnection::ClosedWithin(fd, std::chrono::seconds(3)));

  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->Ping().ok());
}

TEST_F(StoreTest, ForeignProtocolIsClosedAndServerCarriesOn) {
  Fd fd = RawConnection::Open(server_->port());
  RawConnection::Send(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(RawConnection::ClosedWithin(fd, std::chrono::seconds(2)));
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->Ping().ok());
}

TEST_F(StoreTest, WrongProtocolVersionIsRefusedWithReason) {
  Fd fd = RawConnection::Open(server_->port());
  std::string out(kMagic);
  Writer writer(&out);
  writer.U32(kProtocolVersion + 1);
  RawConnection::Send(fd, out);
  std::string refusal = RawConnection::ReadFrame(fd);
  ASSERT_FALSE(refusal.empty());
  EXPECT_EQ(refusal[0], static_cast<char>(HandshakeType::kRefused));
  EXPECT_THAT(refusal, HasSubstr("protocol version"));
  EXPECT_TRUE(RawConnection::ClosedWithin(fd, std::chrono::seconds(3)));
}

TEST(StoreHandshakeTest, SilentClientIsDroppedAtTheHandshakeDeadline) {
  StoreServerOptions options = ServerOptions();
  options.handshake_timeout = absl::Milliseconds(200);
  auto server = StoreServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  Fd silent = RawConnection::Open((*server)->port());
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(RawConnection::ClosedWithin(silent, std::chrono::seconds(3)));
  EXPECT_LT(SecondsSince(start), 2.0);
  // Meanwhile the server served others.
  auto client = StoreClient::Connect(ClientOptions((*server)->port()));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Ping().ok());
}

TEST_F(StoreTest, ServerThreadIsNamed) {
  bool found = false;
  DIR* tasks = opendir("/proc/self/task");
  ASSERT_NE(tasks, nullptr);
  while (dirent* entry = readdir(tasks)) {
    std::ifstream comm(absl::StrCat("/proc/self/task/", entry->d_name, "/comm"));
    std::string name;
    if (std::getline(comm, name) && name == "cohort-store") found = true;
  }
  closedir(tasks);
  EXPECT_TRUE(found);
}

TEST_F(StoreTest, LateReplyAfterTheClientGaveUpIsDropped) {
  // No margin: the client's deadline passes together with the store's, so the store's timeout
  // reply may arrive after the client stopped waiting for it.
  StoreClientOptions options = ClientOptions(server_->port());
  options.reply_margin = absl::ZeroDuration();
  auto client = StoreClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  for (int i = 0; i < 3; ++i) {
    auto got = (*client)->Get("later", absl::Milliseconds(50));
    EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded) << got.status();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE((*client)->Set("later", "v").ok());
  EXPECT_EQ((*client)->Get("later").value_or("?"), "v");
}

TEST_F(StoreTest, ClientThatLeavesWhileParkedDoesNotDisturbTheServer) {
  {
    Fd fd = RawConnection::Authenticated(server_->port());
    std::string out;
    Writer writer(&out);
    writer.BeginFrame();
    writer.U8(static_cast<uint8_t>(Op::kGet));
    writer.U64(1);
    writer.String("parked");
    writer.U64(EncodeTimeout(absl::Seconds(30)));
    writer.EndFrame();
    RawConnection::Send(fd, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }  // closes with the get still parked
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("parked", "v").ok());
  EXPECT_EQ(client->Get("parked").value_or("?"), "v");
}

TEST_F(StoreTest, StoppingTheServerFailsAWaitingClientPromptly) {
  auto client = NewClient();
  ASSERT_NE(client, nullptr);
  auto got =
      std::async(std::launch::async, [&] { return client->Get("never", absl::Seconds(30)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto start = std::chrono::steady_clock::now();
  server_->Stop();
  ASSERT_EQ(got.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_LT(SecondsSince(start), 2.0);
  absl::Status status = got.get().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(address_));
  // Later calls fail at once, too.
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(client->Set("k", "v").code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(SecondsSince(start), 1.0);
}

// Kills the forked server process when the test ends, however it ends.
class ChildProcess {
 public:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ~ChildProcess() { Kill(); }
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_;
};

TEST(StoreProcessTest, KilledServerProcessFailsAWaitingClientPromptly) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    read_end.Reset();
    auto server = StoreServer::Start(ServerOptions());
    int port = server.ok() ? (*server)->port() : -1;
    if (::write(write_end.get(), &port, sizeof(port)) != sizeof(port)) _exit(1);
    while (true) ::pause();
  }
  ChildProcess child(pid);
  write_end.Reset();
  int port = -1;
  pollfd entry = {read_end.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&entry, 1, 10'000), 1) << "the server process did not report its port";
  ASSERT_EQ(::read(read_end.get(), &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  ASSERT_GT(port, 0);
  auto client = StoreClient::Connect(ClientOptions(port));
  ASSERT_TRUE(client.ok()) << client.status();
  auto got =
      std::async(std::launch::async, [&] { return (*client)->Get("never", absl::Seconds(30)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto start = std::chrono::steady_clock::now();
  child.Kill();
  ASSERT_EQ(got.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  EXPECT_LT(SecondsSince(start), 2.0);
  absl::Status status = got.get().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("127.0.0.1:", port)));
}

TEST(StoreConnectTest, RefusedConnectionIsRetriedUntilTheConnectTimeout) {
  int port = FreePort();
  StoreClientOptions options = ClientOptions(port);
  options.connect_timeout = absl::Milliseconds(500);
  auto start = std::chrono::steady_clock::now();
  auto client = StoreClient::Connect(options);
  double elapsed = SecondsSince(start);
  ASSERT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << client.status();
  EXPECT_GE(elapsed, 0.45);
  EXPECT_LT(elapsed, 3.0);
  EXPECT_THAT(client.status().message(), HasSubstr(absl::StrCat("127.0.0.1:", port)));
  EXPECT_THAT(client.status().message(), HasSubstr("connect timeout"));
}

TEST(StoreConnectTest, ClientConnectsOnceALateServerStarts) {
  int port = FreePort();
  std::unique_ptr<StoreServer> server;
  std::thread starter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    StoreServerOptions options = ServerOptions();
    options.port = port;
    auto started = StoreServer::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server = std::move(*started);
  });
  StoreClientOptions options = ClientOptions(port);
  options.connect_timeout = absl::Seconds(5);
  auto client = StoreClient::Connect(options);
  starter.join();
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Ping().ok());
}

}  // namespace
}  // namespace cohort::store
