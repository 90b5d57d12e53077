#include "launcher/workers.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/logging.h"

namespace cohort::launcher {
namespace {

void WriteAll(int fd, const char* data, size_t length) {
  while (length > 0) {
    ssize_t written = ::write(fd, data, length);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd entry{fd, POLLOUT, 0};
        ::poll(&entry, 1, 100);
        continue;
      }
      return;  // console gone: drop the output, keep the job running
    }
    data += written;
    length -= static_cast<size_t>(written);
  }
}

absl::Status ErrnoStatus(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

int64_t WallMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::string> ResolveProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat("cannot run \"", program, "\": ", std::strerror(errno)));
    }
    return program;
  }
  const char* path = std::getenv("PATH");
  for (absl::string_view directory :
       absl::StrSplit(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(directory.empty() ? "." : directory, "/", program);
    struct stat info;
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return absl::NotFoundError(absl::StrCat("cannot run \"", program, "\": not found on PATH"));
}

absl::StatusOr<std::unique_ptr<GroupGuard>> GroupGuard::Start() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid == 0) {
    ::prctl(PR_SET_NAME, "cohortrun-guard");
    write_end.Reset();
    static int groups[65536];
    int count = 0;
    int32_t message = 0;
    while (::read(read_end.get(), &message, sizeof(message)) == sizeof(message)) {
      if (message > 0 && count < 65536) {
        groups[count++] = message;
      } else if (message < 0) {
        for (int i = 0; i < count; ++i) {
          if (groups[i] == -message) groups[i] = groups[--count];
        }
      }
    }
    // The launcher is gone (or done): whatever is still registered dies with it.
    for (int i = 0; i < count; ++i) ::kill(-groups[i], SIGKILL);
    ::_exit(0);
  }
  auto guard = std::unique_ptr<GroupGuard>(new GroupGuard());
  guard->pipe_ = std::move(write_end);
  guard->pid_ = pid;
  return guard;
}

GroupGuard::~GroupGuard() {
  pipe_.Reset();
  int status;
  ::waitpid(pid_, &status, 0);
}

void GroupGuard::Add(int process_group) {
  int32_t message = process_group;
  WriteAll(pipe_.get(), reinterpret_cast<const char*>(&message), sizeof(message));
}

void GroupGuard::Remove(int process_group) {
  int32_t message = -process_group;
  WriteAll(pipe_.get(), reinterpret_cast<const char*>(&message), sizeof(message));
}

absl::StatusOr<std::unique_ptr<WorkerGroup>> WorkerGroup::Start(std::vector<WorkerSpec> specs,
                                                                const sigset_t& child_mask,
                                                                GroupGuard* guard) {
  auto group = std::unique_ptr<WorkerGroup>(new WorkerGroup());
  group->guard_ = guard;
  group->workers_.resize(specs.size());
  const pid_t parent = ::getpid();
  for (size_t i = 0; i < specs.size(); ++i) {
    Worker& worker = group->workers_[i];
    worker.spec = std::move(specs[i]);
    const WorkerSpec& spec = worker.spec;
    // For each stream: the fd the child writes to, and what the parent keeps.
    int child_fds[2] = {-1, -1};
    Fd child_ends[2];
    Stream* streams[2] = {&worker.out, &worker.err};
    const std::string* files[2] = {&spec.stdout_file, &spec.stderr_file};
    bool consoles[2] = {spec.stdout_console, spec.stderr_console};
    for (int s = 0; s < 2; ++s) {
      Stream& stream = *streams[s];
      stream.console = consoles[s];
      stream.console_fd = s == 0 ? STDOUT_FILENO : STDERR_FILENO;
      if (!files[s]->empty()) {
        stream.file.Reset(::open(files[s]->c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
        if (!stream.file.valid()) return ErrnoStatus(absl::StrCat("cannot open ", *files[s]));
      }
      if (stream.console) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
        stream.pipe.Reset(fds[0]);
        child_ends[s].Reset(fds[1]);
        ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
        child_fds[s] = fds[1];
      } else if (stream.file.valid()) {
        child_fds[s] = stream.file.get();
      } else {
        child_ends[s].Reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
        child_fds[s] = child_ends[s].get();
      }
    }
    std::vector<char*> argv;
    for (const std::string& arg : spec.argv) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const std::string& entry : spec.env) envp.push_back(const_cast<char*>(entry.c_str()));
    envp.push_back(nullptr);
    const char* program = spec.program.c_str();

    pid_t pid = ::fork();
    if (pid < 0) return ErrnoStatus("fork");
    if (pid == 0) {
      // Only async-signal-safe calls from here to exec.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(137);  // the launcher died before prctl
      ::dup2(child_fds[0], STDOUT_FILENO);
      ::dup2(child_fds[1], STDERR_FILENO);
      struct sigaction default_action = {};
      default_action.sa_handler = SIG_DFL;
      for (int signal_number = 1; signal_number < NSIG; ++signal_number) {
        if (signal_number != SIGKILL && signal_number != SIGSTOP) {
          ::sigaction(signal_number, &default_action, nullptr);
        }
      }
      ::sigprocmask(SIG_SETMASK, &child_mask, nullptr);
      ::execve(program, argv.data(), envp.data());
      const char* reason = std::strerror(errno);
      const char* head = "cohortrun: cannot exec ";
      ssize_t ignored = ::write(STDERR_FILENO, head, std::strlen(head));
      ignored = ::write(STDERR_FILENO, program, std::strlen(program));
      ignored = ::write(STDERR_FILENO, ": ", 2);
      ignored = ::write(STDERR_FILENO, reason, std::strlen(reason));
      ignored = ::write(STDERR_FILENO, "\n", 1);
      (void)ignored;
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // both sides set it, so signals to the group work at once
    worker.pid = pid;
    if (guard != nullptr) guard->Add(pid);
  }
  return group;
}

WorkerGroup::~WorkerGroup() {
  if (!AllExited()) Stop(absl::ZeroDuration());
  if (guard_ != nullptr) {
    for (const Worker& worker : workers_) {
      if (worker.pid > 0) guard_->Remove(worker.pid);
    }
  }
}

std::vector<int> WorkerGroup::OutputFds() const {
  std::vector<int> fds;
  for (const Worker& worker : workers_) {
    if (worker.out.pipe.valid()) fds.push_back(worker.out.pipe.get());
    if (worker.err.pipe.valid()) fds.push_back(worker.err.pipe.get());
  }
  return fds;
}

void WorkerGroup::Emit(Worker& worker, Stream& stream, const char* data, size_t length, bool flush) {
  if (stream.file.valid() && length > 0) WriteAll(stream.file.get(), data, length);
  stream.partial.append(data, length);
  size_t start = 0;
  std::string out;
  while (true) {
    size_t newline = stream.partial.find('\n', start);
    if (newline == std::string::npos) break;
    absl::StrAppend(&out, worker.spec.prefix,
                    absl::string_view(stream.partial).substr(start, newline + 1 - start));
    start = newline + 1;
  }
  stream.partial.erase(0, start);
  if (flush && !stream.partial.empty()) {
    absl::StrAppend(&out, worker.spec.prefix, stream.partial, "\n");
    stream.partial.clear();
  }
  // A very long line without a newline is written out in pieces.
  if (stream.partial.size() > 64 * 1024) {
    absl::StrAppend(&out, worker.spec.prefix, stream.partial, "\n");
    stream.partial.clear();
  }
  if (!out.empty()) WriteAll(stream.console_fd, out.data(), out.size());
}

void WorkerGroup::DrainStream(Worker& worker, Stream& stream) {
  if (!stream.pipe.valid()) return;
  char buffer[65536];
  while (true) {
    ssize_t got = ::read(stream.pipe.get(), buffer, sizeof(buffer));
    if (got > 0) {
      Emit(worker, stream, buffer, static_cast<size_t>(got), false);
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    // End of the stream (or an error): write out the last partial line and close.
    Emit(worker, stream, nullptr, 0, true);
    stream.pipe.Reset();
    return;
  }
}

void WorkerGroup::Pump(int fd) {
  for (Worker& worker : workers_) {
    if (worker.out.pipe.get() == fd) DrainStream(worker, worker.out);
    if (worker.err.pipe.get() == fd) DrainStream(worker, worker.err);
  }
}

void WorkerGroup::PumpAll() {
  for (Worker& worker : workers_) {
    DrainStream(worker, worker.out);
    DrainStream(worker, worker.err);
  }
}

std::vector<WorkerExit> WorkerGroup::Reap() {
  std::vector<WorkerExit> exits;
  while (true) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    for (Worker& worker : workers_) {
      if (worker.pid != pid || worker.exited) continue;
      worker.exited = true;
      WorkerExit exit;
      exit.local_rank = worker.spec.local_rank;
      exit.rank = worker.spec.rank;
      exit.pid = pid;
      exit.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      exit.time_ms = WallMillis();
      exits.push_back(exit);
    }
    // Any other pid is an orphaned grandchild handed to us as subreaper: reaped, nothing more.
  }
  return exits;
}

bool WorkerGroup::AllExited() const { return running() == 0; }

int WorkerGroup::running() const {
  int count = 0;
  for (const Worker& worker : workers_) count += worker.exited ? 0 : 1;
  return count;
}

std::vector<int> WorkerGroup::pids() const {
  std::vector<int> pids;
  for (const Worker& worker : workers_) pids.push_back(worker.pid);
  return pids;
}

void WorkerGroup::Signal(int signal) {
  for (const Worker& worker : workers_) {
    if (!worker.exited) ::kill(-worker.pid, signal);
  }
}

void WorkerGroup::Stop(absl::Duration grace) {
  Signal(SIGTERM);
  Deadline deadline = Deadline::In(grace);
  while (!AllExited() && !deadline.Expired()) {
    std::vector<pollfd> fds;
    for (int fd : OutputFds()) fds.push_back(pollfd{fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), deadline.RemainingMillis(10));
    PumpAll();
    Reap();
  }
  // Whatever is left, and anything the workers started in their groups.
  for (const Worker& worker : workers_) ::kill(-worker.pid, SIGKILL);
  for (Worker& worker : workers_) {
    if (worker.exited) continue;
    int status = 0;
    if (::waitpid(worker.pid, &status, 0) == worker.pid) worker.exited = true;
  }
  Reap();
  PumpAll();
  // Pipes still held open by a grandchild that escaped its group: stop reading them.
  for (Worker& worker : workers_) {
    if (worker.out.pipe.valid()) Emit(worker, worker.out, nullptr, 0, true);
    if (worker.err.pipe.valid()) Emit(worker, worker.err, nullptr, 0, true);
    worker.out.pipe.Reset();
    worker.err.pipe.Reset();
  }
}

}  // namespace cohort::launcher
