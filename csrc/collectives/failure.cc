#include "collectives/failure.h"

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cohort {
namespace {

// The payloads' type URLs. Details travel as lines: op, sequence, then "rank<TAB>host" per rank.
constexpr char kDetailsUrl[] = "type.cohort.dev/FailureDetails";
constexpr char kPeersUrl[] = "type.cohort.dev/FailedPeers";

}  // namespace

void SetFailureDetails(absl::Status& status, const FailureDetails& details) {
  if (status.ok()) return;
  std::string text = absl::StrCat(details.op, "\n", details.sequence);
  for (size_t i = 0; i < details.ranks.size(); ++i) {
    absl::StrAppend(&text, "\n", details.ranks[i], "\t",
                    i < details.hosts.size() ? details.hosts[i] : std::string());
  }
  status.SetPayload(kDetailsUrl, absl::Cord(text));
}

std::optional<FailureDetails> GetFailureDetails(const absl::Status& status) {
  auto payload = status.GetPayload(kDetailsUrl);
  if (!payload.has_value()) return std::nullopt;
  std::vector<std::string> lines = absl::StrSplit(std::string(*payload), '\n');
  if (lines.size() < 2) return std::nullopt;
  FailureDetails details;
  details.op = lines[0];
  if (!absl::SimpleAtoi(lines[1], &details.sequence)) return std::nullopt;
  for (size_t i = 2; i < lines.size(); ++i) {
    std::pair<std::string, std::string> entry = absl::StrSplit(lines[i], absl::MaxSplits('\t', 1));
    int rank = 0;
    if (!absl::SimpleAtoi(entry.first, &rank)) return std::nullopt;
    details.ranks.push_back(rank);
    details.hosts.push_back(entry.second);
  }
  return details;
}

void AddFailedPeer(absl::Status& status, int rank) {
  if (status.ok()) return;
  std::vector<int> peers = FailedPeers(status);
  if (std::find(peers.begin(), peers.end(), rank) != peers.end()) return;
  std::string text(status.GetPayload(kPeersUrl).value_or(absl::Cord()));
  absl::StrAppend(&text, text.empty() ? "" : ",", rank);
  status.SetPayload(kPeersUrl, absl::Cord(text));
}

std::vector<int> FailedPeers(const absl::Status& status) {
  std::vector<int> peers;
  if (auto details = GetFailureDetails(status)) {
    for (size_t i = 1; i < details->ranks.size(); ++i) peers.push_back(details->ranks[i]);
  }
  auto payload = status.GetPayload(kPeersUrl);
  if (!payload.has_value()) return peers;
  for (absl::string_view item : absl::StrSplit(std::string(*payload), ',', absl::SkipEmpty())) {
    int rank = 0;
    if (absl::SimpleAtoi(item, &rank) &&
        std::find(peers.begin(), peers.end(), rank) == peers.end()) {
      peers.push_back(rank);
    }
  }
  return peers;
}

absl::Status WithPayloadsOf(absl::StatusCode code, const std::string& message,
                            const absl::Status& from) {
  absl::Status status(code, message);
  if (status.ok()) return status;
  from.ForEachPayload([&status](absl::string_view url, const absl::Cord& payload) {
    status.SetPayload(url, payload);
  });
  return status;
}

}  // namespace cohort
