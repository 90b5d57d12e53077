// Sockets: a port another socket holds is reported by its status code (AlreadyExists), which
// callers decide on (cohortrun's agent: another agent on this host runs the rendezvous store)
// instead of matching strerror's text, which differs between libcs and locales.
#include "common/socket.h"

#include "elastic/store/store_server.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

TEST(Socket, TakenPortIsAlreadyExists) {
  auto first = ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(first.ok()) << first.status();
  auto port = LocalPort(first->get());
  ASSERT_TRUE(port.ok());
  auto second = ListenTcp("127.0.0.1", *port);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  // Other failures keep their codes: an address this host does not have.
  auto foreign = ListenTcp("192.0.2.1", 0);
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.status().code(), absl::StatusCode::kAlreadyExists) << foreign.status();
}

TEST(Socket, StoreServerOnATakenPortIsAlreadyExists) {
  auto taken = ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(taken.ok());
  store::StoreServerOptions options;
  options.host = "127.0.0.1";
  options.port = *LocalPort(taken->get());
  options.job_id = "job";
  options.token = "";
  auto server = store::StoreServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kAlreadyExists) << server.status();
}

}  // namespace
}  // namespace cohort
