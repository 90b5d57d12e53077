#include "common/membership.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace cohort::membership {

std::string RemovalKey(int number) { return absl::StrCat("cohort/removed/", number); }

std::string Encode(const Removal& removal) {
  return absl::StrCat(absl::StrJoin(removal.ranks, ","), "|", removal.reason);
}

absl::StatusOr<Removal> Decode(const std::string& text) {
  size_t bar = text.find('|');
  if (bar == std::string::npos) {
    return absl::DataLossError(absl::StrCat("malformed removal record \"", text, "\""));
  }
  Removal removal;
  for (absl::string_view item : absl::StrSplit(text.substr(0, bar), ',', absl::SkipEmpty())) {
    int rank = -1;
    if (!absl::SimpleAtoi(item, &rank) || rank < 0) {
      return absl::DataLossError(absl::StrCat("malformed removal record \"", text, "\""));
    }
    removal.ranks.push_back(rank);
  }
  removal.reason = text.substr(bar + 1);
  return removal;
}

}  // namespace cohort::membership
