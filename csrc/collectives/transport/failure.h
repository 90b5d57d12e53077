// Who failed, as a value: where a failure is found (a lost connection, a timeout, a peer's
// abort frame) the Status it makes carries the rank it blames and why (wire.h's Blame) as a
// payload, so the engine can pass it on in abort frames, Shrink's agreement can leave that rank
// out, and tools can read it, all without parsing the message. Also how a rank finds out that a
// peer on its own host is stopped (SIGSTOP, a debugger) rather than slow.
#pragma once

#include <sys/types.h>

#include "absl/status/status.h"
#include "collectives/transport/wire.h"

namespace cohort {

struct FailureBlame {
  int rank = -1;  // in the communicator whose operation failed; -1: nobody
  Blame blame = Blame::kNone;
};

// `status` with `blame` attached (replacing an earlier one).
absl::Status WithBlame(absl::Status status, int rank, Blame blame);
// The blame `status` carries, or {-1, kNone}.
FailureBlame BlameOf(const absl::Status& status);

// Whether process `pid` (on this host) is stopped: state T (SIGSTOP) or t (traced) in
// /proc/<pid>/stat. False when it cannot tell (no such process, no /proc).
bool ProcessStopped(pid_t pid);

}  // namespace cohort
