// The etcd v3 client against a real etcd (started by the test, tests/support/etcd_cluster.h):
// key-value calls, transactions, leases, watches (also across a member's death), a cluster
// that loses its leader, endpoints that do not answer, authentication and TLS.
#include "elastic/etcd/etcd_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/etcd_cluster.h"

namespace cohort::etcd {
namespace {

using ::testing::HasSubstr;
using testing::EtcdCluster;
using testing::EtcdClusterOptions;

std::unique_ptr<EtcdCluster> StartCluster(EtcdClusterOptions options = {}) {
  auto cluster = EtcdCluster::Start(options);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return cluster.ok() ? std::move(*cluster) : nullptr;
}

std::unique_ptr<Client> Connect(const EtcdCluster& cluster, ClientOptions options = {}) {
  options.endpoints = cluster.endpoints();
  if (options.ca_file.empty()) options.ca_file = cluster.ca_file();
  auto client = Client::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(EtcdBase64, RoundTripsEveryLength) {
  std::string bytes;
  for (int length = 0; length < 8; ++length) {
    std::string decoded;
    ASSERT_TRUE(Base64Decode(Base64Encode(bytes), &decoded));
    EXPECT_EQ(decoded, bytes);
    bytes.push_back(static_cast<char>(0xf0 + length));
  }
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  std::string decoded;
  EXPECT_FALSE(Base64Decode("Zm9", &decoded));
  EXPECT_FALSE(Base64Decode("Z=9v", &decoded));
  EXPECT_EQ(Client::PrefixEnd("/a/"), "/a0");
  EXPECT_EQ(Client::PrefixEnd(std::string("a\xff", 2)), "b");
}

TEST(EtcdClient, KeysTransactionsLeasesAndWatches) {
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  auto client = Connect(*cluster);
  ASSERT_NE(client, nullptr);

  auto put = client->Put("/t/a", std::string("v\0a", 3));
  ASSERT_TRUE(put.ok()) << put.status();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client->Put(absl::StrCat("/t/p/", i), "x").ok());
  auto one = client->Range("/t/a");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->kvs.size(), 1u);
  EXPECT_EQ(one->kvs[0].value, std::string("v\0a", 3));
  EXPECT_EQ(one->kvs[0].mod_revision, *put);
  auto paged = client->RangePrefix("/t/p/", /*page=*/2);  // three pages of one snapshot
  ASSERT_TRUE(paged.ok()) << paged.status();
  ASSERT_EQ(paged->kvs.size(), 5u);
  EXPECT_EQ(paged->kvs[4].key, "/t/p/4");
  auto counted = client->Range("/t/", Client::PrefixEnd("/t/"), 0, /*count_only=*/true);
  ASSERT_TRUE(counted.ok());
  EXPECT_EQ(counted->count, 6);
  EXPECT_TRUE(counted->kvs.empty());

  // Create-if-absent: the first transaction wins, the second sees the key in its failure branch.
  auto absent = Comparison::CreateRevision("/t/leader", Comparison::Result::kEqual, 0);
  auto won = client->Txn({absent}, {Operation::Put("/t/leader", "me")},
                         {Operation::Range("/t/leader")});
  ASSERT_TRUE(won.ok()) << won.status();
  EXPECT_TRUE(won->succeeded);
  auto lost = client->Txn({absent}, {Operation::Put("/t/leader", "other")},
                          {Operation::Range("/t/leader")});
  ASSERT_TRUE(lost.ok()) << lost.status();
  EXPECT_FALSE(lost->succeeded);
  ASSERT_EQ(lost->ranges.size(), 1u);
  EXPECT_EQ(lost->ranges[0].kvs.at(0).value, "me");
  auto guarded = client->Txn({Comparison::ValueEquals("/t/leader", "me")},
                             {Operation::Put("/t/state", "1"), Operation::Delete("/t/p/", Client::PrefixEnd("/t/p/"))});
  ASSERT_TRUE(guarded.ok() && guarded->succeeded);
  EXPECT_EQ(client->Range("/t/p/", Client::PrefixEnd("/t/p/"))->kvs.size(), 0u);

  // A watch from a past revision replays, then follows; a lease's keys go with it.
  auto watch = client->StartWatch("/t/", Client::PrefixEnd("/t/"), *put);
  ASSERT_TRUE(watch.ok()) << watch.status();
  std::vector<WatchEvent> seen;
  Deadline deadline = Deadline::In(absl::Seconds(5));
  while (seen.size() < 13 && !deadline.Expired()) {
    auto events = (*watch)->Next(deadline);
    ASSERT_TRUE(events.ok()) << events.status();
    seen.insert(seen.end(), events->begin(), events->end());
  }
  ASSERT_EQ(seen.size(), 13u);  // a, p/0..4, leader, then state and five deletes in one txn
  EXPECT_EQ(seen[0].kv.key, "/t/a");
  EXPECT_EQ(seen[6].kv.value, "me");
  EXPECT_FALSE(seen[7].deleted);
  EXPECT_TRUE(seen[12].deleted);
  EXPECT_EQ(seen[12].kv.mod_revision, seen[7].kv.mod_revision);
  auto lease = client->GrantLease(5);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(client->Put("/t/alive", "1", *lease).ok());
  EXPECT_TRUE(client->KeepAlive(*lease).ok());
  ASSERT_TRUE(client->RevokeLease(*lease).ok());
  EXPECT_EQ(client->KeepAlive(*lease).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(client->Range("/t/alive")->kvs.empty());
  bool put_seen = false, delete_seen = false;
  deadline = Deadline::In(absl::Seconds(5));
  while (!delete_seen && !deadline.Expired()) {
    auto events = (*watch)->Next(deadline);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const WatchEvent& event : *events) {
      if (event.kv.key != "/t/alive") continue;
      put_seen |= !event.deleted;
      delete_seen |= event.deleted;
    }
  }
  EXPECT_TRUE(put_seen);
  EXPECT_TRUE(delete_seen);
  // Interrupt ends a wait at once.
  std::thread interrupter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    (*watch)->Interrupt();
  });
  auto start = std::chrono::steady_clock::now();
  auto interrupted = (*watch)->Next(Deadline::In(absl::Seconds(10)));
  interrupter.join();
  EXPECT_EQ(interrupted.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(EtcdClient, AWatchFromCompactedRevisionsSaysSo) {
  auto cluster = StartCluster();
  ASSERT_NE(cluster, nullptr);
  auto client = Connect(*cluster);
  ASSERT_NE(client, nullptr);
  int64_t first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    auto put = client->Put("/c/k", absl::StrCat(i));
    ASSERT_TRUE(put.ok()) << put.status();
    if (i == 0) first = *put;
    last = *put;
  }
  ASSERT_TRUE(cluster->Etcdctl(absl::StrCat("compact ", last)).ok());
  absl::Status status;
  auto watch = client->StartWatch("/c/", Client::PrefixEnd("/c/"), first);
  if (watch.ok()) {
    status = (*watch)->Next(Deadline::In(absl::Seconds(5))).status();
  } else {
    status = watch.status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  EXPECT_THAT(status.message(), HasSubstr("compacted"));
}

TEST(EtcdClient, UnreachableEndpointsAreNamedAtOnce) {
  ClientOptions options;
  options.endpoints = {"http://127.0.0.1:1", "http://127.0.0.1:2"};
  auto start = std::chrono::steady_clock::now();
  auto client = Client::Connect(options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(client.status().message(), HasSubstr("http://127.0.0.1:1"));
  EXPECT_THAT(client.status().message(), HasSubstr("http://127.0.0.1:2"));
  EXPECT_THAT(client.status().message(), HasSubstr("check that etcd runs there"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  options.endpoints = {"127.0.0.1:2379"};
  EXPECT_THAT(Client::Connect(options).status().message(), HasSubstr("is not a URL"));
}

TEST(EtcdClient, CallsAndWatchesContinueWhenTheLeaderDies) {
  auto cluster = StartCluster({.members = 3});
  ASSERT_NE(cluster, nullptr);
  auto client = Connect(*cluster);
  ASSERT_NE(client, nullptr);
  auto watch = client->StartWatch("/w/", Client::PrefixEnd("/w/"), 0);
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(client->Put("/w/0", "before").ok());
  auto leader = cluster->Leader();
  ASSERT_TRUE(leader.ok()) << leader.status();
  cluster->Kill(*leader);
  // The next calls land on a live member, after the election if they must.
  for (int i = 1; i <= 5; ++i) {
    auto written = client->Put(absl::StrCat("/w/", i), "after");
    ASSERT_TRUE(written.ok()) << written.status();
  }
  std::vector<std::string> keys;
  Deadline deadline = Deadline::In(absl::Seconds(10));
  while (keys.size() < 6 && !deadline.Expired()) {
    auto events = (*watch)->Next(deadline);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const WatchEvent& event : *events) keys.push_back(event.kv.key);
  }
  // Every event once, in order, though the stream may have been on the dead member.
  EXPECT_THAT(keys, ::testing::ElementsAre("/w/0", "/w/1", "/w/2", "/w/3", "/w/4", "/w/5"));
}

TEST(EtcdClient, AuthenticationAndTls) {
  auto cluster = StartCluster({.tls = true, .auth = true});
  ASSERT_NE(cluster, nullptr);
  ClientOptions options;
  options.user = "cohort";
  options.password = "cohortpw";
  auto client = Connect(*cluster, options);
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->Put("/cohort/x", "1").ok());
  auto watch = client->StartWatch("/cohort/", Client::PrefixEnd("/cohort/"), 1);
  ASSERT_TRUE(watch.ok());
  auto events = (*watch)->Next(Deadline::In(absl::Seconds(5)));
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_FALSE(events->empty());
  EXPECT_EQ(events->front().kv.key, "/cohort/x");
  auto denied = client->Put("/elsewhere", "1");
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied) << denied.status();

  options.endpoints = cluster->endpoints();
  options.ca_file = cluster->ca_file();
  options.password = "wrong";
  auto refused = Client::Connect(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(refused.status().message(), HasSubstr("refused user \"cohort\""));
  EXPECT_THAT(refused.status().message(), HasSubstr("COHORT_ETCD_PASSWORD"));

  options.user.clear();
  auto anonymous = Client::Connect(options);
  ASSERT_TRUE(anonymous.ok()) << anonymous.status();  // reaching etcd needs no user
  auto read = (*anonymous)->Range("/cohort/x");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kPermissionDenied) << read.status();
  EXPECT_THAT(read.status().message(), HasSubstr("requires authentication"));

  options.ca_file.clear();  // the system's CAs do not know the test CA
  auto untrusted = Client::Connect(options);
  ASSERT_FALSE(untrusted.ok());
  EXPECT_THAT(untrusted.status().message(), HasSubstr("cacert"));
}

}  // namespace
}  // namespace cohort::etcd
