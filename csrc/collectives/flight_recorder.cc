#include "collectives/flight_recorder.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "collectives/transport/channel.h"
#include "common/logging.h"

namespace cohort {
namespace {

int64_t RealtimeNanos() {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

void AppendJsonString(std::string* out, const std::string& text) {
  out->push_back('"');
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out->append(escaped);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

std::string JsonString(const std::string& text) {
  std::string out;
  AppendJsonString(&out, text);
  return out;
}

const char* StateName(FlightRecorder::State state) {
  switch (state) {
    case FlightRecorder::State::kQueued:
      return "queued";
    case FlightRecorder::State::kStarted:
      return "started";
    case FlightRecorder::State::kDone:
      return "done";
    case FlightRecorder::State::kFailed:
      return "failed";
  }
  return "?";
}

// Every live recorder of the process, for SIGUSR1.
struct Registry {
  absl::Mutex mutex;
  std::vector<FlightRecorder*> recorders ABSL_GUARDED_BY(mutex);
  pid_t signal_pid ABSL_GUARDED_BY(mutex) = 0;  // the process whose thread waits for SIGUSR1
};

Registry& TheRegistry() {
  static Registry* registry = new Registry;  // never destroyed: the dumper thread outlives main
  return *registry;
}

int signal_pipe[2] = {-1, -1};

void OnSignal(int) {
  int saved = errno;
  char one = 1;
  ssize_t ignored = ::write(signal_pipe[1], &one, 1);
  (void)ignored;
  errno = saved;
}

// On SIGUSR1 every recorder dumps, from a thread of its own (a signal handler may only write a
// byte). Installed once per process, and only where nobody else handles SIGUSR1 (its default
// would end the process).
void WatchSignal(Registry& registry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(registry.mutex) {
  if (registry.signal_pid == getpid()) return;
  registry.signal_pid = getpid();  // a forked child starts its own
  struct sigaction current = {};
  if (sigaction(SIGUSR1, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) return;
  if (signal_pipe[0] >= 0) {
    ::close(signal_pipe[0]);
    ::close(signal_pipe[1]);
  }
  if (::pipe2(signal_pipe, O_CLOEXEC) != 0) return;
  std::thread([fd = signal_pipe[0]] {
    pthread_setname_np(pthread_self(), "cohort-trace");
    char byte;
    while (true) {
      ssize_t got = ::read(fd, &byte, 1);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return;
      for (const std::string& path : FlightRecorder::DumpAll("signal")) {
        COHORT_LOG(WARN) << "SIGUSR1: flight recorder dumped to " << path;
      }
    }
  }).detach();
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, nullptr);
}

}  // namespace

FlightRecorder::FlightRecorder(size_t capacity, Identity identity, std::string directory)
    : capacity_(capacity), identity_(std::move(identity)), directory_(std::move(directory)) {
  if (capacity_ == 0) return;
  {
    absl::MutexLock lock(&mutex_);
    entries_.resize(capacity_);
  }
  Registry& registry = TheRegistry();
  absl::MutexLock lock(&registry.mutex);
  registry.recorders.push_back(this);
  WatchSignal(registry);
}

FlightRecorder::~FlightRecorder() {
  if (capacity_ == 0) return;
  Registry& registry = TheRegistry();
  absl::MutexLock lock(&registry.mutex);
  std::erase(registry.recorders, this);
}

FlightRecorder::Entry* FlightRecorder::Find(uint64_t id) {
  if (id == 0) return nullptr;
  Entry& entry = entries_[(id - 1) % capacity_];
  return entry.id == id ? &entry : nullptr;
}

uint64_t FlightRecorder::Add(const Fingerprint& fingerprint, int peer,
                             const std::string* algorithm, bool started) {
  if (capacity_ == 0) return 0;
  const int64_t now = RealtimeNanos();
  absl::MutexLock lock(&mutex_);
  const uint64_t id = ++next_id_;
  Entry& entry = entries_[(id - 1) % capacity_];
  entry.id = id;
  entry.fingerprint = fingerprint;
  entry.peer = peer;
  entry.algorithm = algorithm;
  entry.channels = 0;
  entry.state = started ? State::kStarted : State::kQueued;
  entry.queued_ns = now;
  entry.started_ns = started ? now : 0;
  entry.finished_ns = 0;
  entry.error.clear();
  return id;
}

uint64_t FlightRecorder::Queued(const Fingerprint& fingerprint, int peer,
                                const std::string* algorithm) {
  return Add(fingerprint, peer, algorithm, false);
}

uint64_t FlightRecorder::StartedNow(const Fingerprint& fingerprint, int peer,
                                    const std::string* algorithm) {
  return Add(fingerprint, peer, algorithm, true);
}

void FlightRecorder::Started(uint64_t id) {
  if (id == 0) return;
  const int64_t now = RealtimeNanos();
  absl::MutexLock lock(&mutex_);
  Entry* entry = Find(id);
  if (entry == nullptr || entry->state != State::kQueued) return;
  entry->state = State::kStarted;
  entry->started_ns = now;
}

void FlightRecorder::Finished(uint64_t id, const absl::Status& status, uint8_t channels) {
  if (id == 0) return;
  const int64_t now = RealtimeNanos();
  absl::MutexLock lock(&mutex_);
  Entry* entry = Find(id);
  if (entry == nullptr || entry->state == State::kDone || entry->state == State::kFailed) return;
  entry->channels |= channels;
  entry->finished_ns = now;
  if (status.ok()) {
    entry->state = State::kDone;
  } else {
    entry->state = State::kFailed;
    entry->error = std::string(status.message());
  }
}

std::string FlightRecorder::FileName() const {
  std::string name;
  for (char c : identity_.communicator) {
    name.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_');
  }
  return absl::StrCat("trace-rank", identity_.rank, name.empty() ? "" : "-", name, ".json");
}

std::string FlightRecorder::Json(const std::string& reason, const std::string& error,
                                 const std::vector<FailedRank>& failed) const {
  const int64_t now = RealtimeNanos();
  std::vector<Entry> entries;
  uint64_t made = 0;
  {
    absl::MutexLock lock(&mutex_);
    made = next_id_;
    for (const Entry& entry : entries_) {
      if (entry.id != 0) entries.push_back(entry);
    }
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.id < b.id; });
  time_t seconds = static_cast<time_t>(now / 1'000'000'000);
  tm utc;
  gmtime_r(&seconds, &utc);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &utc);
  std::string out = absl::StrCat(
      "{\"kind\": \"trace\", \"format_version\": 1, \"tool\": \"libcohort flight recorder\",\n"
      " \"rank\": ", identity_.rank, ", \"world_size\": ", identity_.size,
      ", \"host\": ", JsonString(identity_.host), ", \"pid\": ", getpid(),
      ",\n \"communicator\": ", JsonString(identity_.communicator),
      ", \"generation\": ", identity_.generation, ", \"root_rank\": ", identity_.root_rank,
      ", \"reason\": ", JsonString(reason),
      ",\n \"error\": ", error.empty() ? "null" : JsonString(error), ", \"failed_ranks\": [",
      absl::StrJoin(failed, ", ",
                    [](std::string* out, const FailedRank& failure) {
                      absl::StrAppend(out, "{\"rank\": ", failure.rank,
                                      ", \"how\": ", JsonString(failure.how), "}");
                    }),
      "]",
      ",\n \"clock\": \"realtime\", \"dumped_at_ns\": ", now, ", \"buffer_size\": ", capacity_,
      ", \"dropped\": ", made > capacity_ ? made - capacity_ : 0,
      ",\n \"machine\": {\"host\": ", JsonString(identity_.host), "}, \"commit\": null",
      ", \"date\": \"", date, "\",\n \"entries\": [");
  bool first = true;
  for (const Entry& entry : entries) {
    const Fingerprint& fingerprint = entry.fingerprint;
    std::vector<std::string> channels;
    for (int kind = 0; kind < kChannelKinds; ++kind) {
      if (entry.channels & (1u << kind)) {
        channels.push_back(absl::StrCat("\"", ChannelKindName(static_cast<ChannelKind>(kind)), "\""));
      }
    }
    auto stamp = [](int64_t ns) { return ns == 0 ? std::string("null") : absl::StrCat(ns); };
    absl::StrAppend(
        &out, first ? "\n" : ",\n", "  {\"sequence\": ", fingerprint.sequence,
        ", \"op\": \"", OpTypeName(fingerprint.op), "\", \"dtype\": \"",
        DataTypeName(fingerprint.dtype), "\", \"count\": ", fingerprint.count,
        ", \"root\": ", fingerprint.root, ", \"peer\": ", entry.peer, ", \"algorithm\": ",
        entry.algorithm != nullptr ? JsonString(*entry.algorithm) : std::string("null"),
        ", \"channels\": [", absl::StrJoin(channels, ", "), "], \"state\": \"",
        StateName(entry.state), "\", \"queued_ns\": ", stamp(entry.queued_ns),
        ", \"started_ns\": ", stamp(entry.started_ns), ", \"finished_ns\": ",
        stamp(entry.finished_ns), ", \"error\": ",
        entry.error.empty() ? std::string("null") : JsonString(entry.error), "}");
    first = false;
  }
  absl::StrAppend(&out, "]}\n");
  return out;
}

absl::StatusOr<std::string> FlightRecorder::Dump(const std::string& reason,
                                                 const std::string& error,
                                                 const std::string& directory,
                                                 const std::vector<FailedRank>& failed) const {
  const std::string& folder = directory.empty() ? directory_ : directory;
  if (folder.empty()) {
    return absl::FailedPreconditionError(
        "no folder for flight-recorder dumps: set COHORT_TRACE_DIR or name one");
  }
  std::error_code code;
  std::filesystem::create_directories(folder, code);
  const std::string path = absl::StrCat(folder, "/", FileName());
  const std::string partial = absl::StrCat(path, ".", getpid(), ".tmp");
  {
    std::ofstream file(partial, std::ios::trunc);
    file << Json(reason, error, failed);
    if (!file) {
      return absl::UnavailableError(absl::StrCat("cannot write the flight-recorder dump ", partial,
                                                 ": ", std::strerror(errno)));
    }
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot write the flight-recorder dump ", path, ": ", std::strerror(errno)));
  }
  return path;
}

std::vector<std::string> FlightRecorder::DumpAll(const std::string& reason) {
  std::vector<std::string> paths;
  Registry& registry = TheRegistry();
  absl::MutexLock lock(&registry.mutex);
  for (const FlightRecorder* recorder : registry.recorders) {
    auto path = recorder->Dump(reason, "", recorder->directory_.empty() ? "." : "");
    if (path.ok()) paths.push_back(*path);
  }
  return paths;
}

}  // namespace cohort
