// What `cohortrun --on-failure shrink` tells a job's workers when it removes ranks from the job
// (a worker that died, a node that was lost): one record per removal in the worker store (the
// store cohortrun serves a generation's workers, COHORT_STORE_ADDR), numbered from 1, so a
// worker can wait for the next one. The torch backend waits for them and fails the pending
// operations that involve a removed rank at once (a peer whose traffic vanished sends no FIN),
// naming it; cohort.shrink then leaves it out. Written by the coordinator (elastic/), read by
// the backend (python/csrc): it lives in common/, which both depend on.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort::membership {

// Key of removal `number` (1, 2, ...).
std::string RemovalKey(int number);

struct Removal {
  std::vector<int> ranks;  // job ranks (RANK), ascending
  std::string reason;      // e.g. "node node2 lost: no heartbeat for 3s"
};

std::string Encode(const Removal& removal);  // "8,9,10,11|reason"
absl::StatusOr<Removal> Decode(const std::string& text);

}  // namespace cohort::membership
