// The flight recorder (after PyTorch's NCCL flight recorder): per communicator, a ring buffer
// of its last operations (COHORT_TRACE_BUFFER, 2000 by default) with what each was (sequence
// number, op, type, count, root or peer, algorithm, the channel kinds it used), how far it got
// (queued, started, done, failed) and when. The engine records; the buffer is dumped as JSON,
// one file per rank and communicator (the format docs/bench.md describes, read by `cohort-bench
// report` and `cohort-trace`), when the communicator fails or times out, on SIGUSR1, and when
// asked (Communicator::DumpTrace, cohort.dump_trace()). Dumps go to COHORT_TRACE_DIR (cohortrun
// sets it to its log folder); failures dump only where it is set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "collectives/transport/wire.h"

namespace cohort {

class FlightRecorder {
 public:
  enum class State : uint8_t { kQueued, kStarted, kDone, kFailed };
  struct Identity {
    std::string communicator;
    int rank = 0;
    int size = 1;
    std::string host;
    int generation = 0;  // cohortrun's (COHORT_GENERATION)
    int root_rank = 0;   // this rank in the communicator a shrink or split started from
  };
  // A rank this rank knew had failed when it dumped, and how it learned (BlameName: lost,
  // stopped, timeout, removed): cohort-trace names a rank that wrote no dump from these.
  struct FailedRank {
    int rank = 0;
    std::string how;
  };

  // `capacity` 0 records nothing. `directory`: where dumps go ("" for failures: nowhere).
  FlightRecorder(size_t capacity, Identity identity, std::string directory);
  ~FlightRecorder();
  FlightRecorder(const FlightRecorder&) = delete;
  FlightRecorder& operator=(const FlightRecorder&) = delete;

  bool enabled() const { return capacity_ > 0; }
  const std::string& directory() const { return directory_; }

  // An operation was issued (`peer`: point-to-point only, else -1); returns its entry's id
  // (0 when disabled). `algorithm` must outlive the recorder (a registry entry's name) or be
  // null.
  uint64_t Queued(const Fingerprint& fingerprint, int peer, const std::string* algorithm);
  // Issued and started at once (a blocking call run on the caller's thread).
  uint64_t StartedNow(const Fingerprint& fingerprint, int peer, const std::string* algorithm);
  void Started(uint64_t id);
  // `channels`: a mask of 1 << ChannelKind it used.
  void Finished(uint64_t id, const absl::Status& status, uint8_t channels);

  // The dump as JSON; `reason` is error, timeout, signal or request.
  std::string Json(const std::string& reason, const std::string& error,
                   const std::vector<FailedRank>& failed = {}) const;
  // Writes it to `directory` (else the recorder's) as trace-rank<R>[-<communicator>].json,
  // replacing an earlier dump of the same communicator; returns the path.
  absl::StatusOr<std::string> Dump(const std::string& reason, const std::string& error,
                                   const std::string& directory = "",
                                   const std::vector<FailedRank>& failed = {}) const;
  // The file name of this recorder's dumps.
  std::string FileName() const;

  // Every live recorder of this process dumps to its directory (or the working folder when it
  // has none): what SIGUSR1 does. Returns the paths written.
  static std::vector<std::string> DumpAll(const std::string& reason);

 private:
  struct Entry {
    uint64_t id = 0;  // 0: empty
    Fingerprint fingerprint;
    int peer = -1;
    const std::string* algorithm = nullptr;
    uint8_t channels = 0;
    State state = State::kQueued;
    int64_t queued_ns = 0;
    int64_t started_ns = 0;
    int64_t finished_ns = 0;
    std::string error;
  };
  Entry* Find(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  uint64_t Add(const Fingerprint& fingerprint, int peer, const std::string* algorithm,
               bool started);

  const size_t capacity_;
  const Identity identity_;
  const std::string directory_;
  mutable absl::Mutex mutex_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_id_ ABSL_GUARDED_BY(mutex_) = 0;  // ids made so far
};

}  // namespace cohort
