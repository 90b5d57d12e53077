#include "launcher/summary.h"

#include <signal.h>
#include <string.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace cohort::launcher {

std::string SignalName(int signal) {
  const char* abbreviation = sigabbrev_np(signal);
  return abbreviation != nullptr ? absl::StrCat("SIG", abbreviation) : absl::StrCat("signal ", signal);
}

void FillFromErrorFile(const std::string& path, elastic::WorkerFailure* failure) {
  std::ifstream file(path);
  bool read = false;
  if (file) {
    std::stringstream text;
    text << file.rdbuf();
    try {
      nlohmann::json json = nlohmann::json::parse(text.str());
      const nlohmann::json& message = json.at("message");
      if (message.is_string()) {
        failure->message = message.get<std::string>();
        if (json.contains("timestamp")) {
          int64_t seconds = 0;
          const nlohmann::json& stamp = json.at("timestamp");
          // An integer, or a float (time.time()) converted only within range: converting
          // 1e300 would be undefined.
          if (stamp.is_number_integer()) seconds = stamp.get<int64_t>();
          if (stamp.is_number_float() && stamp.get<double>() > 0 && stamp.get<double>() < 1e15) {
            seconds = static_cast<int64_t>(stamp.get<double>());
          }
          if (stamp.is_string()) (void)absl::SimpleAtoi(stamp.get<std::string>(), &seconds);
          if (seconds > 0 && seconds < 1'000'000'000'000'000) failure->time_ms = std::min(failure->time_ms, seconds * 1000);
        }
      } else {
        failure->message = message.value("message", std::string("<N/A>"));
        if (message.contains("extraInfo")) {
          const nlohmann::json& extra = message.at("extraInfo");
          failure->traceback = extra.value("py_callstack", std::string());
          int64_t seconds = 0;
          if (extra.contains("timestamp") && extra.at("timestamp").is_string() &&
              absl::SimpleAtoi(extra.at("timestamp").get<std::string>(), &seconds) && seconds > 0) {
            // The file's clock is coarse (seconds); keep our finer one when it is the same second.
            failure->time_ms = std::min(failure->time_ms, seconds * 1000 + 999);
          }
        }
      }
      failure->error_file = path;
      read = true;
    } catch (const std::exception& error) {
      failure->message = absl::StrCat("unreadable error file ", path, ": ", error.what());
      failure->error_file = path;
      read = true;
    }
  }
  if (!read) {
    failure->error_file = "<N/A>";
    if (failure->exit_code < 0) {
      failure->message = absl::StrCat("Signal ", -failure->exit_code, " (", SignalName(-failure->exit_code),
                                      ") received by PID ", failure->pid);
    } else {
      failure->message = absl::StrCat(
          "exited with code ", failure->exit_code,
          "; to record the traceback, decorate the entry point with "
          "torch.distributed.elastic.multiprocessing.errors.record");
    }
  }
}

std::string FormatSummary(const std::string& title, std::vector<elastic::WorkerFailure> failures,
                          const std::string& reason) {
  std::stable_sort(failures.begin(), failures.end(),
                   [](const elastic::WorkerFailure& a, const elastic::WorkerFailure& b) {
                     return a.time_ms < b.time_ms;
                   });
  auto format = [](size_t index, const elastic::WorkerFailure& failure) {
    std::string message = failure.traceback.empty() ? failure.message
                                                    : absl::StrCat(failure.message, "\n", failure.traceback);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    message = absl::StrReplaceAll(message, {{"\n", "\n  "}});
    absl::Time time = absl::FromUnixMillis(failure.time_ms);
    return absl::StrCat("[", index, "]:\n",
                        "  time      : ", absl::FormatTime("%Y-%m-%d_%H:%M:%E3S", time, absl::LocalTimeZone()), "\n",
                        "  host      : ", failure.host, "\n",
                        "  rank      : ", failure.rank, " (local_rank: ", failure.local_rank, ")\n",
                        "  exitcode  : ", failure.exit_code, " (pid: ", failure.pid, ")\n",
                        "  error_file: ", failure.error_file, "\n",
                        "  traceback : ", message, "\n");
  };
  std::string root;
  std::string others;
  if (failures.empty()) {
    root = absl::StrCat("  ", reason, "\n");
    others = "  <NO_OTHER_FAILURES>\n";
  } else {
    root = format(0, failures.front());
    for (size_t i = 1; i < failures.size(); ++i) others += format(i, failures[i]);
    if (others.empty()) others = "  <NO_OTHER_FAILURES>\n";
  }
  size_t width = std::max<size_t>(title.size(), 60);
  std::string border(width, '=');
  std::string section(width, '-');
  return absl::StrCat(border, "\n", title, "\n", section, "\nFailures:\n", others, section,
                      "\nRoot Cause (first observed failure):\n", root,
                      failures.empty() ? "" : absl::StrCat("  (job: ", reason, ")\n"), border, "\n");
}

}  // namespace cohort::launcher
