#include "collectives/agreement.h"

#include <algorithm>
#include <optional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr int kBitsPerWord = 62;  // an int64 the store adds: stay clear of its sign bit

// "f=1:1,3:2|x=0,4": failed ranks with their Blame, ranks to leave out.
std::string EncodeJoin(const std::vector<FailureBlame>& failed, const std::vector<int>& exclude) {
  std::vector<std::string> parts;
  for (const FailureBlame& entry : failed) {
    parts.push_back(absl::StrCat(entry.rank, ":", static_cast<uint32_t>(entry.blame)));
  }
  return absl::StrCat("f=", absl::StrJoin(parts, ","), "|x=", absl::StrJoin(exclude, ","));
}

absl::Status DecodeJoin(const std::string& text, int size, std::vector<FailureBlame>* failed,
                        std::vector<int>* exclude) {
  auto malformed = [&] {
    return absl::DataLossError(absl::StrCat("malformed shrink agreement record \"", text,
                                            "\"; is another job using the same store prefix?"));
  };
  std::vector<std::string> halves = absl::StrSplit(text, '|');
  if (halves.size() != 2 || halves[0].rfind("f=", 0) != 0 || halves[1].rfind("x=", 0) != 0) {
    return malformed();
  }
  for (absl::string_view item : absl::StrSplit(halves[0].substr(2), ',', absl::SkipEmpty())) {
    std::vector<std::string> pair = absl::StrSplit(item, ':');
    FailureBlame entry;
    uint32_t blame = 0;
    if (pair.size() != 2 || !absl::SimpleAtoi(pair[0], &entry.rank) ||
        !absl::SimpleAtoi(pair[1], &blame) || entry.rank < 0 || entry.rank >= size ||
        blame > static_cast<uint32_t>(Blame::kRemoved)) {
      return malformed();
    }
    entry.blame = static_cast<Blame>(blame);
    failed->push_back(entry);
  }
  for (absl::string_view item : absl::StrSplit(halves[1].substr(2), ',', absl::SkipEmpty())) {
    int rank = -1;
    if (!absl::SimpleAtoi(item, &rank) || rank < 0 || rank >= size) return malformed();
    exclude->push_back(rank);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> DecodeRanks(const std::string& text, int size) {
  std::vector<int> ranks;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int rank = -1;
    if (!absl::SimpleAtoi(item, &rank) || rank < 0 || rank >= size) {
      return absl::DataLossError(absl::StrCat("malformed shrink decision \"", text, "\""));
    }
    ranks.push_back(rank);
  }
  return ranks;
}

bool Hard(Blame blame) {
  return blame == Blame::kLost || blame == Blame::kRemoved || blame == Blame::kStopped;
}

}  // namespace

absl::StatusOr<AgreementResult> AgreeOnSurvivors(Bootstrap& bootstrap,
                                                 const AgreementOptions& options) {
  const int size = options.size;
  const int rank = options.rank;
  const std::string& prefix = options.prefix;
  const std::string decision_key = absl::StrCat(prefix, "/decision");
  const std::string decided_key = absl::StrCat(prefix, "/decided");
  const int words = (size + kBitsPerWord - 1) / kBitsPerWord;

  COHORT_RETURN_IF_ERROR(bootstrap.Set(absl::StrCat(prefix, "/join/", rank),
                                       EncodeJoin(options.failed, options.exclude)));
  COHORT_RETURN_IF_ERROR(bootstrap
                             .Add(absl::StrCat(prefix, "/mask/", rank / kBitsPerWord),
                                  int64_t{1} << (rank % kBitsPerWord))
                             .status());

  std::vector<bool> joined(size, false);
  std::vector<Blame> reported(size, Blame::kNone);  // the strongest report about each rank
  std::vector<bool> excluded(size, false);
  auto merge = [&](const std::vector<FailureBlame>& failed, const std::vector<int>& exclude) {
    for (const FailureBlame& entry : failed) {
      if (entry.rank < 0 || entry.rank >= size) continue;
      if (reported[entry.rank] == Blame::kNone || Hard(entry.blame)) {
        reported[entry.rank] = entry.blame;
      }
    }
    for (int r : exclude) excluded[r] = true;
  };
  merge(options.failed, options.exclude);
  joined[rank] = true;

  const Deadline give_up = Deadline::In(options.wait);
  Deadline grace_ends = Deadline::Never();  // Never: not counting
  absl::Duration nap = absl::Microseconds(200);
  std::string decision;
  while (true) {
    COHORT_ASSIGN_OR_RETURN(int64_t proposals, bootstrap.Add(decided_key, 0));
    if (proposals > 0) {
      COHORT_ASSIGN_OR_RETURN(decision, bootstrap.Get(decision_key, options.store_timeout));
      break;
    }
    for (int word = 0; word < words; ++word) {
      COHORT_ASSIGN_OR_RETURN(int64_t bits,
                              bootstrap.Add(absl::StrCat(prefix, "/mask/", word), 0));
      for (int bit = 0; bit < kBitsPerWord; ++bit) {
        const int r = word * kBitsPerWord + bit;
        if (r >= size || joined[r] || !(bits & (int64_t{1} << bit))) continue;
        joined[r] = true;
        COHORT_ASSIGN_OR_RETURN(std::string text, bootstrap.Get(absl::StrCat(prefix, "/join/", r),
                                                                options.store_timeout));
        std::vector<FailureBlame> failed;
        std::vector<int> exclude;
        COHORT_RETURN_IF_ERROR(DecodeJoin(text, size, &failed, &exclude));
        merge(failed, exclude);
      }
    }
    auto out = [&](int r) {
      return excluded[r] || (options.leave_out_failed && Hard(reported[r]));
    };
    bool missing = false, missing_unreported = false;
    for (int r = 0; r < size; ++r) {
      if (joined[r] || out(r)) continue;
      missing = true;
      if (!options.leave_out_failed || reported[r] == Blame::kNone) missing_unreported = true;
    }
    bool decide = !missing || give_up.Expired();
    if (!decide && !missing_unreported) {
      // Only ranks reported stopped or timed out are missing: they may still come, briefly.
      if (grace_ends.IsNever()) grace_ends = Deadline::In(options.grace);
      decide = grace_ends.Expired();
    } else if (missing_unreported) {
      grace_ends = Deadline::Never();
    }
    if (decide) {
      std::vector<int> survivors;
      for (int r = 0; r < size; ++r) {
        if (joined[r] && !out(r)) survivors.push_back(r);
      }
      std::string proposal = absl::StrJoin(survivors, ",");
      auto stored = bootstrap.CompareSet(decision_key, "", proposal);
      if (stored.ok()) {
        decision = *stored;
      } else if (stored.status().code() == absl::StatusCode::kUnimplemented) {
        COHORT_ASSIGN_OR_RETURN(int64_t ticket,
                                bootstrap.Add(absl::StrCat(prefix, "/ticket"), 1));
        if (ticket == 1) {
          COHORT_RETURN_IF_ERROR(bootstrap.Set(decision_key, proposal));
          decision = proposal;
        } else {
          COHORT_ASSIGN_OR_RETURN(decision, bootstrap.Get(decision_key, options.store_timeout));
        }
      } else {
        return stored.status();
      }
      COHORT_RETURN_IF_ERROR(bootstrap.Add(decided_key, 1).status());
      break;
    }
    std::this_thread::sleep_for(absl::ToChronoMicroseconds(nap));
    nap = std::min(nap * 2, absl::Milliseconds(5));
  }
  AgreementResult result;
  COHORT_ASSIGN_OR_RETURN(result.survivors, DecodeRanks(decision, size));
  for (int r = 0; r < size; ++r) {
    if (reported[r] != Blame::kNone) result.failed.push_back({r, reported[r]});
  }
  if (std::find(result.survivors.begin(), result.survivors.end(), rank) ==
      result.survivors.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", rank, " was left out of the shrunk communicator: the survivors agreed on ranks ",
        decision.empty() ? "(none)" : decision, " of the old numbering",
        excluded[rank] ? " (this rank was asked to leave)"
                       : " (this rank joined the agreement too late, or a survivor lost its "
                         "connection to it)"));
  }
  return result;
}

}  // namespace cohort
