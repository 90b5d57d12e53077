// Shrink's agreement: which ranks of a communicator go on after a failure, decided once for
// every survivor (like ULFM's MPI_Comm_agree behind MPI_Comm_shrink), with the bootstrap's store
// as the arbiter, so that it still ends when another rank fails during it.
//
// Keys, under a prefix unique to the shrink (<communicator>/shrink/<epoch>):
//   join/<rank>    what that rank knows: the ranks it learned failed, and how; the ranks it was
//                  asked to leave out. Written before its bit below.
//   mask/<word>    bit (rank % 62) of word rank / 62 is added once by each rank that joined
//                  (an Add of distinct bits is their OR, readable with Add(0)).
//   decision       the survivors, "0,1,3"; set once, by compare_set (the first proposal wins,
//                  every later one reads it back).
//   decided        counts the proposals made (polled: a cheap "is it decided?").
//
// Each rank joins, then watches the masks and reads what each joiner knows, until it may
// decide: every rank is either joined, or known to be out (its connection was lost, or it was
// named to leave out), or reported stopped / timed out and given `grace` to join anyway (it may
// be alive and only slow), or `wait` has passed since this rank joined (a rank nobody reported,
// which never came). It proposes the joined ranks that are not known to be out; the first
// proposal is the decision. A rank that finds itself left out fails (it came too late, or a
// survivor lost its connection to it). A rank that dies during the agreement is left out if it
// had not joined; if it had, the new communicator finds it gone at its first operation, and the
// caller may shrink again.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/transport/failure.h"
#include "common/bootstrap.h"

namespace cohort {

struct AgreementOptions {
  std::string prefix;
  int rank = 0;
  int size = 1;
  std::vector<FailureBlame> failed;  // what this rank learned
  std::vector<int> exclude;          // ranks the caller leaves out
  bool leave_out_failed = true;      // also the ranks reported lost or removed
  absl::Duration wait = absl::Seconds(30);
  absl::Duration grace = absl::Milliseconds(300);
  absl::Duration store_timeout = absl::Seconds(30);  // for each store call
};

struct AgreementResult {
  std::vector<int> survivors;  // ascending, this rank among them
  std::vector<FailureBlame> failed;  // every joiner's reports, merged (for messages)
};

absl::StatusOr<AgreementResult> AgreeOnSurvivors(Bootstrap& bootstrap,
                                                 const AgreementOptions& options);

}  // namespace cohort
