// The one-line progress display of cohort-bench: on a terminal, rank 0 rewrites one status line
// on stderr (what runs, which size, which iteration) and clears it before each table row, so the
// table on stdout stays clean. Does nothing when stderr is not a terminal (logs, cohortrun).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace cohort::bench {

class Progress {
 public:
  // `enabled` false (or a `stream` that is not a terminal, unless `force`) makes every call a
  // no-op.
  explicit Progress(bool enabled, FILE* stream = stderr, bool force = false);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool enabled() const { return enabled_; }
  // Shows `text` (cut to the terminal's width); at most ten redraws a second unless `now`.
  void Update(const std::string& text, bool now = false);
  // Erases the line (call before printing anything else to the terminal).
  void Clear();

 private:
  bool enabled_;
  FILE* stream_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace cohort::bench
