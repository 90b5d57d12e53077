#include "common/logging.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cohort::logging {
namespace {

std::atomic<int> g_threshold{-1};
std::atomic<int> g_rank{-1};

Level ParseLevel(const char* text) {
  if (text == nullptr) return Level::WARN;
  std::string upper = absl::AsciiStrToUpper(text);
  if (upper == "ERROR") return Level::ERROR;
  if (upper == "WARN" || upper == "WARNING") return Level::WARN;
  if (upper == "INFO") return Level::INFO;
  if (upper == "DEBUG") return Level::DEBUG;
  if (upper == "TRACE") return Level::TRACE;
  return Level::WARN;
}

const char* LevelName(Level level) {
  switch (level) {
    case Level::ERROR: return "E";
    case Level::WARN: return "W";
    case Level::INFO: return "I";
    case Level::DEBUG: return "D";
    case Level::TRACE: return "T";
  }
  return "?";
}

}  // namespace

Level Threshold() {
  int value = g_threshold.load(std::memory_order_relaxed);
  if (value < 0) {
    value = static_cast<int>(ParseLevel(std::getenv("COHORT_LOG_LEVEL")));
    g_threshold.store(value, std::memory_order_relaxed);
  }
  return static_cast<Level>(value);
}

void SetThreshold(Level level) { g_threshold.store(static_cast<int>(level)); }

void SetRank(int rank) { g_rank.store(rank); }

const std::string& HostName() {
  static const std::string name = [] {
    const char* host_id = std::getenv("COHORT_HOST_ID");
    if (host_id != nullptr && host_id[0] != '\0') return std::string(host_id);
    char buffer[256] = {};
    if (gethostname(buffer, sizeof(buffer) - 1) != 0) return std::string("unknown-host");
    return std::string(buffer);
  }();
  return name;
}

Message::Message(Level level, const char* file, int line) : level_(level) {
  const char* base = std::strrchr(file, '/');
  base = base != nullptr ? base + 1 : file;
  stream_ << "[" << HostName() << ":" << getpid();
  int rank = g_rank.load(std::memory_order_relaxed);
  if (rank >= 0) stream_ << " rank " << rank;
  stream_ << "] " << LevelName(level_) << " "
          << absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::LocalTimeZone()) << " " << base
          << ":" << line << "] ";
}

Message::~Message() {
  stream_ << '\n';
  std::string text = stream_.str();
  // One write per line so lines from threads and processes do not interleave.
  ssize_t ignored = ::write(STDERR_FILENO, text.data(), text.size());
  (void)ignored;
}

}  // namespace cohort::logging
