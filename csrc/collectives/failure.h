// What a failed collective or transfer was and whom it involved, carried inside its
// absl::Status as a payload: the op, its sequence number, and the ranks (with their hosts) that
// took part in the failure, this rank first. The engine fills it in for every operation that
// fails for a reason outside the call's arguments (a lost or silent peer, a mismatch, an abort);
// lower layers name the peer they lost or waited for with AddFailedPeer. The torch extension
// turns it into the attributes of cohort.CollectiveError, so a training loop can tell a peer's
// failure from a programming error without reading the message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cohort {

struct FailureDetails {
  std::string op;         // "allreduce", "send", ...
  uint64_t sequence = 0;  // the collective's sequence number; 0 for point-to-point transfers
  std::vector<int> ranks;           // this rank first, then the peers involved
  std::vector<std::string> hosts;   // the host of each rank in `ranks`
};

// Sets (replaces) the details of `status` (which must not be OK).
void SetFailureDetails(absl::Status& status, const FailureDetails& details);
// The details carried by `status`, if any.
std::optional<FailureDetails> GetFailureDetails(const absl::Status& status);

// Names `rank` as a peer involved in the failure, before the engine adds the op (used where the
// peer is known: a timeout waiting for it, a lost connection to it).
void AddFailedPeer(absl::Status& status, int rank);
// The peers named with AddFailedPeer (or in full details), in order, without duplicates.
std::vector<int> FailedPeers(const absl::Status& status);

// A new status with `code` and `message` that keeps every payload of `from`.
absl::Status WithPayloadsOf(absl::StatusCode code, const std::string& message,
                            const absl::Status& from);

}  // namespace cohort
