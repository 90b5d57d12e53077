// cohort-bench: nccl-tests-style collective benchmarks and cluster validation.
// `cohort-bench allreduce --nranks 4 -b 8 -e 64M -f 2` spawns 4 local ranks itself (a store
// server in this process, forked ranks); without --nranks it runs as one rank of a job started
// by a launcher (RANK, WORLD_SIZE, COHORT_STORE_ADDR in the environment, as cohortrun sets them).
// `cohort-bench validate` checks a cluster (validate.h). Flags are parsed in options.cc.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/descriptors.h"
#include "bench/options.h"
#include "bench/sweep.h"
#include "bench/validate.h"
#include "collectives/algorithms/registry.h"
#include "collectives/communicator.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/socket.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"

namespace cohort::bench {
namespace {

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// The report page is made by python/cohort/report.py (matplotlib), run by Debian's python3.
std::vector<std::string> ReportCommand(const std::vector<std::string>& args) {
  std::vector<std::string> command = {COHORT_REPORT_PYTHON, COHORT_REPORT_SCRIPT};
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

// Runs report.py and returns its exit code (kExitFailure when it could not start).
int RunReport(const std::vector<std::string>& args) {
  std::vector<std::string> command = ReportCommand(args);
  std::vector<char*> argv;
  for (std::string& arg : command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  // Made before fork: the child calls only async-signal-safe functions (this process may have
  // other threads, a communicator's).
  const std::string cannot =
      absl::StrCat("cohort-bench: cannot run ", command[0], " (scripts/bootstrap installs it)\n");
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("cohort-bench: fork");
    return kExitFailure;
  }
  if (pid == 0) {
    execv(argv[0], argv.data());
    ssize_t written = write(STDERR_FILENO, cannot.data(), cannot.size());
    (void)written;
    _exit(kExitFailure);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : kExitFailure;
}

// --report: after the run, rank 0 turns its JSON report into the page while the other ranks
// wait in a barrier (a launcher ends the whole job as soon as one rank exits non-zero, which
// would cut the page off). The run's own exit code stands unless the page could not be made
// (then kExitFailure; the run's figures are in the JSON report).
int AfterRun(const Command& command, Communicator& comm, int code) {
  if (command.report_dir.empty() || code == kExitFailure || code == kExitUsage) return code;
  if (comm.rank() == 0 && RunReport({command.json_path, "-o", command.report_dir}) != 0) {
    std::fprintf(stderr, "cohort-bench: no report page in %s (the JSON report is %s)\n",
                 command.report_dir.c_str(), command.json_path.c_str());
    code = std::max(code, kExitFailure);
  }
  BarrierOptions barrier;
  barrier.timeout = absl::Minutes(5);  // making the page takes seconds, more on a busy node
  absl::Status status = comm.Barrier(barrier)->Wait();
  if (!status.ok()) {
    std::fprintf(stderr, "cohort-bench rank %d: waiting for rank 0's report page: %s\n",
                 comm.rank(), Message(status).c_str());
    return kExitFailure;
  }
  return code;
}

int RunSweepRank(const Command& command, Communicator& comm) {
  const Collective& collective = *FindCollective(command.collective);
  if (collective.rooted && command.sweep.params.root >= comm.size()) {
    if (comm.rank() == 0) {
      std::fprintf(stderr, "cohort-bench: -r %d is not a rank of %d\n", command.sweep.params.root,
                   comm.size());
    }
    return kExitUsage;
  }
  auto result = RunSweep(comm, collective, command.sweep, stdout);
  if (!result.ok()) {
    std::fprintf(stderr, "cohort-bench rank %d: %s\n", comm.rank(),
                 Message(result.status()).c_str());
    return kExitFailure;
  }
  if (comm.rank() == 0 && !command.json_path.empty()) {
    nlohmann::json document =
        SweepJson(collective, command.sweep, *result, comm.size(), comm.topology(), command.argv);
    std::ofstream file(command.json_path);
    file << document.dump(2) << "\n";
    file.close();
    if (!file) {
      std::fprintf(stderr, "cohort-bench: cannot write the JSON report to %s\n",
                   command.json_path.c_str());
      return kExitFailure;
    }
  }
  return result->exit_code;
}

// One rank: connect to the store, build the communicator, run the command.
int RunRank(const Command& command, const store::StoreClientOptions& store_options, int rank,
            int size) {
  auto client = store::StoreClient::Connect(store_options);
  if (!client.ok()) {
    std::fprintf(stderr, "cohort-bench rank %d: %s\n", rank, Message(client.status()).c_str());
    return kExitFailure;
  }
  CommOptions options;
  options.name = "cohort-bench";
  if (command.timeout != absl::ZeroDuration()) options.timeout = command.timeout;
  if (command.transports.has_value()) options.transports = command.transports;
  auto comm = Communicator::Create(**client, rank, size, options);
  if (!comm.ok()) {
    std::fprintf(stderr, "cohort-bench rank %d: %s\n", rank, Message(comm.status()).c_str());
    return kExitFailure;
  }
  switch (command.mode) {
    case Mode::kTopo:
      if (rank == 0) {
        std::fputs((*comm)->topology().Describe().c_str(), stdout);
        std::printf("%s\n", (*comm)->DescribeLinks().c_str());
      }
      return (*comm)->Barrier()->Wait().ok() ? kExitOk : kExitFailure;
    case Mode::kValidate: {
      auto code = RunValidate(**comm, **client, "cohort-bench", command.validate,
                              rank == 0 ? stdout : nullptr, command.json_path);
      if (!code.ok()) {
        std::fprintf(stderr, "cohort-bench validate rank %d: %s\n", rank,
                     Message(code.status()).c_str());
        return kExitFailure;
      }
      return AfterRun(command, **comm, *code);
    }
    default:
      return AfterRun(command, **comm, RunSweepRank(command, **comm));
  }
}

// Pins a spawned rank to one CPU of those this process may use, so that two ranks never
// share a core and a polling rank never keeps its peer from running.
void BindRank(const Command& command, int rank) {
  if (command.bind == Command::Bind::kNone) return;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  }
  if (cpus.empty()) return;
  if (command.bind == Command::Bind::kAuto && static_cast<int>(cpus.size()) < command.nranks) {
    return;
  }
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpus[rank % cpus.size()], &one);
  if (sched_setaffinity(0, sizeof(one), &one) != 0) {
    std::fprintf(stderr, "cohort-bench: rank %d: cannot bind to CPU %d: %s\n", rank,
                 cpus[rank % cpus.size()], std::strerror(errno));
  }
}

// Forks the ranks first and starts the store afterwards: a process that forks while it runs
// other threads (the store's) hands its children whatever locks those threads held, and a
// child that needs one (OpenSSL's, for the store handshake) would wait forever. The children
// learn the store's port through a pipe.
int SpawnLocal(const Command& command) {
  int port_pipe[2];
  if (pipe(port_pipe) != 0) {
    std::perror("cohort-bench: pipe");
    return kExitFailure;
  }
  const std::string token = crypto::RandomHex(16);
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> children;
  for (int rank = 0; rank < command.nranks; ++rank) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("cohort-bench: fork");
      close(port_pipe[1]);
      for (pid_t child : children) kill(child, SIGKILL);
      for (pid_t child : children) waitpid(child, nullptr, 0);
      return kExitFailure;
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      BindRank(command, rank);
      close(port_pipe[1]);
      int32_t port = 0;
      // Each write of the parent is one port, read whole by one child (writes up to PIPE_BUF
      // bytes are atomic); end of file means the store did not start.
      if (read(port_pipe[0], &port, sizeof(port)) != sizeof(port)) _exit(kExitFailure);
      close(port_pipe[0]);
      store::StoreClientOptions client_options;
      client_options.host = "127.0.0.1";
      client_options.port = port;
      client_options.token = token;
      client_options.job_id = "cohort-bench";
      int code = RunRank(command, client_options, rank, command.nranks);
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(code);
    }
    children.push_back(pid);
  }
  close(port_pipe[0]);
  store::StoreServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.token = token;
  server_options.job_id = "cohort-bench";
  auto server = store::StoreServer::Start(server_options);
  if (!server.ok()) {
    std::fprintf(stderr, "cohort-bench: cannot start the local store: %s\n",
                 Message(server.status()).c_str());
  } else {
    int32_t port = (*server)->port();
    for (size_t i = 0; i < children.size(); ++i) {
      if (write(port_pipe[1], &port, sizeof(port)) != sizeof(port)) break;
    }
  }
  close(port_pipe[1]);
  int worst = server.ok() ? 0 : kExitFailure;
  for (size_t rank = 0; rank < children.size(); ++rank) {
    int status = 0;
    waitpid(children[rank], &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : kExitFailure;
    if (WIFSIGNALED(status)) {
      std::fprintf(stderr, "cohort-bench: rank %zu was killed by signal %d\n", rank,
                   WTERMSIG(status));
    }
    worst = std::max(worst, code);
  }
  return worst;
}

int RunLaunched(const Command& command) {
  const char* rank_text = std::getenv("RANK");
  const char* size_text = std::getenv("WORLD_SIZE");
  int rank = 0, size = 0;
  if (rank_text == nullptr || size_text == nullptr || !absl::SimpleAtoi(rank_text, &rank) ||
      !absl::SimpleAtoi(size_text, &size) || rank < 0 || size < 1 || rank >= size) {
    std::fprintf(stderr,
                 "cohort-bench: give --nranks N to spawn local ranks, or run under a launcher that "
                 "sets RANK, WORLD_SIZE and COHORT_STORE_ADDR (e.g. cohortrun)\n");
    return kExitUsage;
  }
  auto address_text = config::GetString("COHORT_STORE_ADDR");
  auto address = address_text.ok() ? ParseHostPort(*address_text)
                                   : absl::StatusOr<HostPort>(address_text.status());
  if (!address.ok()) {
    std::fprintf(stderr, "cohort-bench: COHORT_STORE_ADDR: %s\n",
                 Message(address.status()).c_str());
    return kExitUsage;
  }
  store::StoreClientOptions options;
  options.host = address->host;
  options.port = address->port;
  return RunRank(command, options, rank, size);
}

// The machine's copy bandwidth, the reference the shared-memory figures are read against.
int RunMemcpy(const Command& command) {
  size_t bytes = std::max<size_t>(command.sweep.max_bytes, 1);
  std::vector<char> source(bytes, 1), target(bytes, 0);
  std::memcpy(target.data(), source.data(), bytes);
  double best = 0;
  for (int i = 0; i < std::max(1, command.sweep.iterations); ++i) {
    auto start = std::chrono::steady_clock::now();
    std::memcpy(target.data(), source.data(), bytes);
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(bytes) / seconds / 1e9);
  }
  std::printf("# memcpy bandwidth: %.3f GB/s (%zu bytes, best of %d)\n", best, bytes,
              command.sweep.iterations);
  return kExitOk;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  using namespace cohort::bench;
  cohort::ConfigureProcess();
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    PrintUsage(stdout);
    return kExitOk;
  }
  absl::Status environment = cohort::config::ValidateEnvironment();
  if (!environment.ok()) {
    std::fprintf(stderr, "cohort-bench: %s\n", std::string(environment.message()).c_str());
    return kExitUsage;
  }
  auto command = ParseCommand(std::vector<std::string>(argv, argv + argc));
  absl::Status status = command.ok() ? ApplyEnvironment(*command) : command.status();
  if (!status.ok()) {
    std::fprintf(stderr, "cohort-bench: %s\n\n", std::string(status.message()).c_str());
    PrintUsage(stderr);
    return kExitUsage;
  }
  command->sweep.progress = true;  // shown only when stderr is a terminal
  // Per-iteration statistics appear in the JSON report only.
  command->sweep.iteration_times = !command->json_path.empty();
  command->validate.argv = command->argv;
  // The report's folder, made before any rank runs (rank 0 of a launched job makes it on its node).
  const char* launched_rank = std::getenv("RANK");
  if (!command->report_dir.empty() &&
      (command->nranks > 0 || (launched_rank != nullptr && std::strcmp(launched_rank, "0") == 0))) {
    std::error_code error;
    std::filesystem::create_directories(command->report_dir, error);
    if (error) {
      std::fprintf(stderr, "cohort-bench: --report %s: cannot make the folder: %s\n",
                   command->report_dir.c_str(), error.message().c_str());
      return kExitUsage;
    }
  }
  switch (command->mode) {
    case Mode::kReport:
      return RunReport(command->report_args);
    case Mode::kMemcpy:
      return RunMemcpy(*command);
    case Mode::kAlgos:
      for (const cohort::Algorithm& algorithm : cohort::Algorithms()) {
        std::vector<std::string> ops;
        for (cohort::OpType op : algorithm.ops) ops.push_back(cohort::OpTypeName(op));
        std::printf("%-20s %s\n", algorithm.name.c_str(), absl::StrJoin(ops, ", ").c_str());
      }
      return kExitOk;
    default:
      break;
  }
  signal(SIGPIPE, SIG_IGN);
  return command->nranks > 0 ? SpawnLocal(*command) : RunLaunched(*command);
}
