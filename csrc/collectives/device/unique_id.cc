#include "collectives/device/unique_id.h"

#include <algorithm>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort::device {
namespace {

bool DecodeHex(absl::string_view hex, std::string& bytes) {
  if (hex.size() % 2 != 0) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  bytes = absl::HexStringToBytes(hex);
  return true;
}

}  // namespace

absl::StatusOr<std::string> ShareUniqueId(
    Bootstrap& bootstrap, const std::string& key, int rank, int size, absl::Duration timeout,
    size_t expected_bytes, const std::string& what,
    absl::FunctionRef<absl::StatusOr<std::string>()> make_id) {
  if (size <= 0 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank ", rank, " is not in a group of ", size));
  }
  const std::string who = absl::StrCat(what, " rank ", rank, "/", size);
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status status = bootstrap.Set(absl::StrCat(key, "/arrived/", rank), "1");
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(who,
                                                    ": cannot announce itself through the "
                                                    "bootstrap under ",
                                                    key, ": ", status.message()));
  }
  std::vector<std::string> arrived;
  for (int r = 0; r < size; ++r) arrived.push_back(absl::StrCat(key, "/arrived/", r));
  status = bootstrap.Wait(arrived, timeout);
  if (!status.ok()) {
    if (status.code() != absl::StatusCode::kDeadlineExceeded) {
      return absl::Status(status.code(), absl::StrCat(who, ": waiting for the group's ranks under ",
                                                      key, " failed: ", status.message()));
    }
    std::vector<int> missing;
    for (int r = 0; r < size; ++r) {
      if (!bootstrap.Wait({arrived[r]}, absl::ZeroDuration()).ok()) missing.push_back(r);
    }
    return absl::DeadlineExceededError(absl::StrCat(
        who, " waited ", absl::FormatDuration(timeout), " for rank(s) ",
        absl::StrJoin(missing, ", "), " to create the group (", key,
        "); every rank of the host must issue the same GPU collectives, in the same order"));
  }

  const std::string id_key = absl::StrCat(key, "/id");
  if (rank == 0) {
    absl::StatusOr<std::string> id = make_id();
    if (id.ok() && expected_bytes > 0 && id->size() != expected_bytes) {
      id = absl::InternalError(
          absl::StrCat("the id made is ", id->size(), " bytes, not ", expected_bytes));
    }
    if (!id.ok()) {
      // Tell the others, so they fail now with this reason rather than at their timeout.
      (void)bootstrap.Set(id_key, absl::StrCat("E", id.status().message()));
      return absl::Status(
          id.status().code(),
          absl::StrCat(who, ": cannot make the group's id: ", id.status().message()));
    }
    status = bootstrap.Set(id_key, absl::StrCat("I", absl::BytesToHexString(*id)));
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat(who, ": cannot publish the group's id: ", status.message()));
    }
    return *std::move(id);
  }

  const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
  absl::StatusOr<std::string> published = bootstrap.Get(id_key, left);
  if (!published.ok()) {
    return absl::Status(
        published.status().code(),
        absl::StrCat(who, ": rank 0 did not publish the group's id under ", id_key, " within ",
                     absl::FormatDuration(timeout), ": ", published.status().message()));
  }
  if (!published->empty() && (*published)[0] == 'E') {
    return absl::UnavailableError(
        absl::StrCat(who, ": rank 0 could not make the group's id: ", published->substr(1)));
  }
  std::string id;
  if (published->empty() || (*published)[0] != 'I' ||
      !DecodeHex(absl::string_view(*published).substr(1), id) ||
      (expected_bytes > 0 && id.size() != expected_bytes)) {
    return absl::DataLossError(absl::StrCat(
        who, ": malformed group id under ", id_key, " (", published->size(), " characters",
        expected_bytes > 0
            ? absl::StrCat("; expected \"I\" and ", 2 * expected_bytes, " hex digits")
            : "",
        "); another job or group may be using the same key"));
  }
  return id;
}

}  // namespace cohort::device
