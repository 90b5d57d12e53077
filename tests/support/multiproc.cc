#include "support/multiproc.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "elastic/store/store_client.h"
#include "gtest/gtest.h"

namespace cohort::testing {

RankGroup::RankGroup() : token_(crypto::RandomHex(8)) {
  // The store runs in a process of its own, started before any thread exists here: the ranks
  // are forked from this process, and a fork while a thread of it holds a lock (the store
  // thread inside malloc under ASan, or inside OpenSSL) would leave that lock held forever in
  // the child.
  int ports[2];
  if (pipe(ports) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return;
  }
  fflush(stdout);
  fflush(stderr);
  server_pid_ = fork();
  if (server_pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    close(ports[0]);
    store::StoreServerOptions options;
    options.host = "127.0.0.1";
    options.token = token_;
    options.job_id = "cohort-test";
    auto server = store::StoreServer::Start(options);
    if (!server.ok()) fprintf(stderr, "store server: %s\n", server.status().ToString().c_str());
    int port = server.ok() ? (*server)->port() : -1;
    if (write(ports[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
    close(ports[1]);
    while (true) pause();  // until the group kills it
  }
  close(ports[1]);
  if (server_pid_ < 0 || read(ports[0], &port_, sizeof(port_)) != sizeof(port_)) port_ = -1;
  close(ports[0]);
  if (port_ <= 0) ADD_FAILURE() << "the test's store server did not start";
}

RankGroup::~RankGroup() {
  client_.reset();
  for (pid_t pid : pids_) {
    if (pid > 0) kill(pid, SIGKILL);
  }
  for (pid_t pid : pids_) {
    if (pid > 0) waitpid(pid, nullptr, 0);
  }
  if (server_pid_ > 0) {
    kill(server_pid_, SIGKILL);
    waitpid(server_pid_, nullptr, 0);
  }
}

Bootstrap& RankGroup::store() {
  if (client_ == nullptr) {
    store::StoreClientOptions options;
    options.host = "127.0.0.1";
    options.port = port_;
    options.token = token_;
    options.job_id = "cohort-test";
    auto client = store::StoreClient::Connect(options);
    if (!client.ok()) {
      ADD_FAILURE() << "store client: " << client.status();
      std::abort();
    }
    client_ = std::move(*client);
  }
  return *client_;
}

void RankGroup::Start(int size, RankBody body) {
  ASSERT_GT(port_, 0);
  int port = port_;
  fflush(stdout);
  fflush(stderr);
  // The ranks start talking to the store only once every rank is forked: a fork while the
  // store's thread is inside a handshake could copy a lock it holds (OpenSSL's, for one) into
  // the child, locked forever.
  int release[2];
  ASSERT_EQ(pipe(release), 0);
  for (int rank = 0; rank < size; ++rank) {
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      close(release[1]);
      char go;
      while (read(release[0], &go, 1) < 0 && errno == EINTR) {
      }
      close(release[0]);
      store::StoreClientOptions options;
      options.host = "127.0.0.1";
      options.port = port;
      options.token = token_;
      options.job_id = "cohort-test";
      auto client = store::StoreClient::Connect(options);
      if (!client.ok()) {
        fprintf(stderr, "rank %d: store client: %s\n", rank, client.status().ToString().c_str());
        _exit(3);
      }
      body(rank, size, **client);
      client->reset();
      fflush(stdout);
      fflush(stderr);
      _exit(::testing::Test::HasFailure() ? 1 : 0);
    }
    pids_.push_back(pid);
  }
  close(release[0]);
  close(release[1]);  // end of file: every rank goes
}

std::vector<RankExit> RankGroup::Join(absl::Duration limit) {
  std::vector<RankExit> exits(pids_.size());
  absl::Time deadline = absl::Now() + limit;
  size_t remaining = pids_.size();
  while (remaining > 0) {
    for (size_t rank = 0; rank < pids_.size(); ++rank) {
      if (pids_[rank] <= 0) continue;
      int status = 0;
      pid_t done = waitpid(pids_[rank], &status, WNOHANG);
      if (done == pids_[rank]) {
        if (WIFEXITED(status)) exits[rank].exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) exits[rank].signal = WTERMSIG(status);
        pids_[rank] = -1;
        --remaining;
      }
    }
    if (remaining == 0) break;
    if (absl::Now() > deadline) {
      for (size_t rank = 0; rank < pids_.size(); ++rank) {
        if (pids_[rank] > 0) {
          ADD_FAILURE() << "rank " << rank << " still running after " << limit << "; killed";
          kill(pids_[rank], SIGKILL);
          waitpid(pids_[rank], nullptr, 0);
          exits[rank].signal = SIGKILL;
          pids_[rank] = -1;
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return exits;
}

void RunRanks(int size, RankBody body, absl::Duration limit) {
  RankGroup group;
  group.Start(size, std::move(body));
  std::vector<RankExit> exits = group.Join(limit);
  for (size_t rank = 0; rank < exits.size(); ++rank) {
    EXPECT_TRUE(exits[rank].ok()) << "rank " << rank << " exit code " << exits[rank].exit_code
                                  << " signal " << exits[rank].signal;
  }
}

}  // namespace cohort::testing
