// Leveled logging to stderr with a "[host:pid rank N]" prefix. Level from COHORT_LOG_LEVEL.
// Usage: COHORT_LOG(INFO) << "connected to " << peer;
#pragma once

#include <sstream>
#include <string>

namespace cohort::logging {

enum class Level { ERROR = 0, WARN = 1, INFO = 2, DEBUG = 3, TRACE = 4 };

// The current threshold (read from COHORT_LOG_LEVEL once; an invalid value means WARN).
Level Threshold();
void SetThreshold(Level level);
inline bool Enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(Threshold()); }

// Rank shown in the prefix; -1 (the default) omits it.
void SetRank(int rank);
// This host's name in the prefix and in error messages (COHORT_HOST_ID, else the hostname).
const std::string& HostName();

class Message {
 public:
  Message(Level level, const char* file, int line);
  ~Message();
  std::ostream& stream() { return stream_; }

 private:
  Level level_;
  std::ostringstream stream_;
};

}  // namespace cohort::logging

#define COHORT_LOG(level)                                                          \
  if (!::cohort::logging::Enabled(::cohort::logging::Level::level)) {             \
  } else                                                                           \
    ::cohort::logging::Message(::cohort::logging::Level::level, __FILE__, __LINE__).stream()
