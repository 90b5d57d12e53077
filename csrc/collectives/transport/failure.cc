#include "collectives/transport/failure.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cohort {
namespace {

constexpr char kBlameUrl[] = "type.cohort/failure_blame";

}  // namespace

absl::Status WithBlame(absl::Status status, int rank, Blame blame) {
  if (status.ok()) return status;
  status.SetPayload(kBlameUrl,
                    absl::Cord(absl::StrCat(rank, " ", static_cast<uint32_t>(blame))));
  return status;
}

FailureBlame BlameOf(const absl::Status& status) {
  FailureBlame result;
  auto payload = status.GetPayload(kBlameUrl);
  if (!payload.has_value()) return result;
  std::vector<std::string> parts = absl::StrSplit(std::string(*payload), ' ');
  uint32_t blame = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &result.rank) ||
      !absl::SimpleAtoi(parts[1], &blame) || blame > static_cast<uint32_t>(Blame::kRemoved)) {
    return FailureBlame{};
  }
  result.blame = static_cast<Blame>(blame);
  return result;
}

bool ProcessStopped(pid_t pid) {
  if (pid <= 0) return false;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char text[512];
  ssize_t got = ::read(fd, text, sizeof(text) - 1);
  ::close(fd);
  if (got <= 0) return false;
  text[got] = '\0';
  // "pid (comm) S ...": the command may hold spaces and parentheses; the state follows the
  // last ')'.
  const char* close = std::strrchr(text, ')');
  if (close == nullptr || close[1] != ' ') return false;
  return close[2] == 'T' || close[2] == 't';
}

}  // namespace cohort
