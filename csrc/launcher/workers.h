// The worker processes of one node in one generation: spawned in their own process groups with
// a parent-death signal (killing cohortrun with SIGKILL leaves no orphan), their output
// prefixed line by line and copied to the console and/or per-rank log files, their exits
// reaped (no zombies), and stopped with SIGTERM, a grace period and SIGKILL.
#pragma once

#include <signal.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/socket.h"

namespace cohort::launcher {

struct WorkerSpec {
  int local_rank = 0;
  int rank = 0;
  std::string program;            // resolved path to exec
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> env;   // "NAME=value"
  std::string prefix;             // put before each console line
  std::string stdout_file;        // "" = none
  std::string stderr_file;
  bool stdout_console = true;     // echo stdout lines (prefixed) to our stdout
  bool stderr_console = true;
};

// A small helper process that outlives a SIGKILLed cohortrun just long enough to SIGKILL the
// workers' process groups, so their children (which the parent-death signal does not reach)
// are not left behind. It learns the groups through a pipe and acts when the pipe closes
// while groups are still registered.
class GroupGuard {
 public:
  // Forks the guard; call before starting threads.
  static absl::StatusOr<std::unique_ptr<GroupGuard>> Start();
  ~GroupGuard();  // a clean exit: the guard leaves every group alone and is reaped
  GroupGuard(const GroupGuard&) = delete;
  GroupGuard& operator=(const GroupGuard&) = delete;
  void Add(int process_group);
  void Remove(int process_group);
  int pid() const { return pid_; }

 private:
  GroupGuard() = default;
  Fd pipe_;
  int pid_ = -1;
};

struct WorkerExit {
  int local_rank = 0;
  int rank = 0;
  int pid = 0;
  int exit_code = 0;   // torchrun's convention: -N for signal N
  int64_t time_ms = 0; // wall clock, ms since the epoch
};

class WorkerGroup {
 public:
  // Forks and execs every worker. `child_mask` is the signal mask workers start with.
  // `guard` (optional) learns each worker's process group.
  static absl::StatusOr<std::unique_ptr<WorkerGroup>> Start(std::vector<WorkerSpec> specs,
                                                            const sigset_t& child_mask,
                                                            GroupGuard* guard = nullptr);
  ~WorkerGroup();  // kills what still runs and reaps it
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;

  // Output pipes to poll for reading.
  std::vector<int> OutputFds() const;
  // Reads what is ready on `fd` and writes complete lines out.
  void Pump(int fd);
  // Drains every pipe that has data without blocking.
  void PumpAll();
  // Collects exited workers (and any other child of ours, as subreaper), newest last.
  std::vector<WorkerExit> Reap();
  bool AllExited() const;
  int running() const;
  // Sends `signal` to every running worker's process group.
  void Signal(int signal);
  // SIGTERM to every worker's group, wait up to `grace` (pumping output), then SIGKILL; returns
  // when every worker is reaped.
  void Stop(absl::Duration grace);
  std::vector<int> pids() const;

 private:
  struct Stream {
    Fd pipe;            // read end, or invalid
    Fd file;            // log file, or invalid
    bool console = false;
    int console_fd = 1;
    std::string partial;
  };
  struct Worker {
    WorkerSpec spec;
    int pid = -1;
    bool exited = false;
    Stream out, err;
  };
  WorkerGroup() = default;
  void Emit(Worker& worker, Stream& stream, const char* data, size_t length, bool flush);
  void DrainStream(Worker& worker, Stream& stream);

  std::vector<Worker> workers_;
  GroupGuard* guard_ = nullptr;
};

// Where `program` is: itself if it has a slash, else the first match on PATH.
absl::StatusOr<std::string> ResolveProgram(const std::string& program);

// Milliseconds since the epoch.
int64_t WallMillis();

}  // namespace cohort::launcher
