// Sharing a device group's unique id through cohort's Bootstrap: NCCL's ncclUniqueId (rank 0
// calls ncclGetUniqueId), or the fake device group's shared-memory segment name. Written once
// for both so the fake's set-up runs the same steps as NCCL's in make test.
//
// Under `key`: every rank first announces itself (key/arrived/<rank>) and waits for all, so a
// rank that never comes is named in a timeout instead of hanging NCCL's init; then rank 0 makes
// the id and publishes it (key/id = "I" + the id in hex), or publishes its failure (key/id = "E" +
// message) so the other ranks fail at once with rank 0's reason instead of timing out.
#pragma once

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/bootstrap.h"

namespace cohort::device {

// Returns the id every rank of the group agrees on. `key` must be fresh for each group created
// (e.g. the communicator's prefix + "/nccl/" + a counter). `make_id` runs on rank 0 only.
// `expected_bytes` (when > 0) is the id's exact size; another size is an error. `what` names the
// group in errors ("nccl device group").
absl::StatusOr<std::string> ShareUniqueId(Bootstrap& bootstrap, const std::string& key, int rank,
                                          int size, absl::Duration timeout, size_t expected_bytes,
                                          const std::string& what,
                                          absl::FunctionRef<absl::StatusOr<std::string>()> make_id);

}  // namespace cohort::device
