// Multi-process test support (after gloo's multiproc_test.h): runs a body as N forked rank
// processes that bootstrap through a store server started in the test process. A rank that
// records a gtest failure exits non-zero; ranks that outlive the time limit are killed, so a
// hang fails the test instead of the suite.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/bootstrap.h"
#include "elastic/store/store_server.h"

namespace cohort::testing {

struct RankExit {
  int exit_code = -1;  // when exited normally
  int signal = 0;      // when killed by a signal
  bool ok() const { return signal == 0 && exit_code == 0; }
};

using RankBody = std::function<void(int rank, int size, Bootstrap& bootstrap)>;

class RankGroup {
 public:
  // Starts a fresh store server (own token) for this group, in a process of its own.
  RankGroup();
  ~RankGroup();  // kills and reaps whatever is still running

  // Forks `size` ranks running `body`; returns at once.
  void Start(int size, RankBody body);
  pid_t pid(int rank) const { return pids_[rank]; }
  // Waits for every rank (killing those still running after `limit`).
  std::vector<RankExit> Join(absl::Duration limit = absl::Seconds(240));
  // A client of the group's store, for the test process itself.
  Bootstrap& store();

 private:
  pid_t server_pid_ = -1;
  int port_ = -1;
  std::unique_ptr<Bootstrap> client_;
  std::string token_;
  std::vector<pid_t> pids_;
};

// Start + Join, expecting every rank to succeed.
void RunRanks(int size, RankBody body, absl::Duration limit = absl::Seconds(240));

}  // namespace cohort::testing
