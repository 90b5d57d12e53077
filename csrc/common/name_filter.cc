#include "common/name_filter.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cohort {

absl::StatusOr<NameFilter> NameFilter::Parse(absl::string_view text, bool with_ports,
                                             absl::string_view what) {
  NameFilter filter;
  filter.text_ = std::string(absl::StripAsciiWhitespace(text));
  absl::string_view rest = filter.text_;
  // NCCL accepts the two markers in either order.
  for (int i = 0; i < 2 && !rest.empty(); ++i) {
    if (rest.front() == '^') {
      filter.exclude_ = true;
      rest.remove_prefix(1);
    } else if (rest.front() == '=') {
      filter.exact_ = true;
      rest.remove_prefix(1);
    }
  }
  for (absl::string_view item : absl::StrSplit(rest, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    Entry entry;
    size_t colon = with_ports ? item.rfind(':') : absl::string_view::npos;
    if (colon != absl::string_view::npos) {
      if (!absl::SimpleAtoi(item.substr(colon + 1), &entry.port) || entry.port < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, "=\"", text, "\": \"", item,
            "\" has a port that is not a positive number; write e.g. mlx5_0:1 or mlx5_0"));
      }
      item = item.substr(0, colon);
    }
    if (item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(what, "=\"", text,
                                                     "\" has an entry without a name; write "
                                                     "names (prefixes) separated by commas"));
    }
    entry.name = std::string(item);
    filter.entries_.push_back(std::move(entry));
  }
  if (filter.entries_.empty() && !filter.text_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "=\"", text, "\" lists no names; e.g. eth0,ib or ^docker"));
  }
  return filter;
}

bool NameFilter::EntryMatches(const Entry& entry, absl::string_view name, int port) const {
  bool name_matches = exact_ ? name == entry.name : absl::StartsWith(name, entry.name);
  return name_matches && (entry.port == 0 || port == 0 || entry.port == port);
}

bool NameFilter::Names(absl::string_view name) const {
  for (const Entry& entry : entries_) {
    if (EntryMatches(entry, name, 0)) return true;
  }
  return false;
}

bool NameFilter::Matches(absl::string_view name, int port) const {
  if (entries_.empty()) return true;
  bool listed = false;
  for (const Entry& entry : entries_) {
    if (EntryMatches(entry, name, port)) {
      listed = true;
      break;
    }
  }
  return listed != exclude_;
}

}  // namespace cohort
