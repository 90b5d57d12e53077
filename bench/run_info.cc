#include "bench/run_info.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "bench/build_commit.h"
#include "bench/inventory.h"

extern char** environ;

namespace cohort::bench {
namespace {

// PRETTY_NAME of /etc/os-release ("Debian GNU/Linux 12 (bookworm)"); empty when unreadable.
std::string OperatingSystem() {
  std::ifstream file("/etc/os-release");
  std::string line;
  while (std::getline(file, line)) {
    absl::string_view value = line;
    if (absl::ConsumePrefix(&value, "PRETTY_NAME=")) {
      absl::ConsumePrefix(&value, "\"");
      absl::ConsumeSuffix(&value, "\"");
      return std::string(value);
    }
  }
  return "";
}

// Left out of "environment": secrets, and who the job is rather than how it runs (cohortrun
// sets these for its workers; they differ between any two runs).
bool LeftOut(const std::string& name) {
  for (const char* word : {"TOKEN", "SECRET", "PASSWORD", "KEY"}) {
    if (absl::StrContains(name, word)) return true;
  }
  for (const char* identity :
       {"COHORT_STORE_ADDR", "COHORT_JOB_ID", "COHORT_GENERATION", "COHORT_HOST_ID"}) {
    if (name == identity) return true;
  }
  return false;
}

}  // namespace

const char* BuildCommit() { return COHORT_BUILD_COMMIT; }

nlohmann::json RunInfo() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  utsname system{};
  uname(&system);
  nlohmann::json machine = {
      {"host", host},
      {"cpu_model", CpuModel()},
      {"cores", sysconf(_SC_NPROCESSORS_ONLN)},
      {"memory_bytes", static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE)},
      {"kernel", std::string(system.sysname) + " " + system.release},
      {"os", OperatingSystem()}};
  nlohmann::json environment = nlohmann::json::object();
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text = *entry;
    size_t equals = text.find('=');
    if (equals == std::string::npos || !absl::StartsWith(text, "COHORT_")) continue;
    std::string name = text.substr(0, equals);
    if (!LeftOut(name)) environment[name] = text.substr(equals + 1);
  }
  char date[32] = {};
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return {{"format_version", kReportFormatVersion},
          {"machine", machine},
          {"commit", BuildCommit()},
          {"date", date},
          {"environment", environment}};
}

}  // namespace cohort::bench
