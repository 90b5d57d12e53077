// The node agent that cohortrun runs: hosts the store and the coordinator when this node is the
// rendezvous endpoint, joins each round, starts this node's workers with torchrun's environment,
// watches them, their output and signals, follows the coordinator through restarts, and ends
// with torchrun's failure summary.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/socket.h"
#include "launcher/options.h"

namespace cohort::launcher {

// Runs the job on this node; returns cohortrun's exit code.
int RunAgent(const LaunchOptions& options);

// Prints what was detected and would be done (--dry-run).
std::string DescribeDryRun(const LaunchOptions& options);

// A TCP port held for MASTER_PORT without the bind-close-reuse race: the socket stays bound
// (SO_REUSEADDR, not listening) while workers run, so the kernel never hands the port to
// anyone else, yet a worker's store (which also sets SO_REUSEADDR) can bind and listen on it.
class ReservedPort {
 public:
  static absl::StatusOr<ReservedPort> Reserve(int port = 0);
  int port() const { return port_; }

 private:
  Fd fd_;
  int port_ = 0;
};

// Whether `host` names this machine (loopback, its host name, or an address of an interface).
bool IsLocalHost(const std::string& host);

}  // namespace cohort::launcher
