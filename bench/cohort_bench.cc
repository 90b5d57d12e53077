// cohort-bench: nccl-tests-style collective benchmarks. `cohort-bench allreduce --nranks 4
// -b 8 -e 64M -f 2` spawns 4 local ranks itself; without --nranks it runs as one rank of a job
// started by a launcher (RANK, WORLD_SIZE, COHORT_STORE_ADDR in the environment).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/descriptors.h"
#include "bench/sweep.h"
#include "collectives/algorithms/registry.h"
#include "collectives/communicator.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/socket.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"

namespace cohort::bench {
namespace {

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 3;
constexpr int kExitWrong = 7;  // as nccl-tests: results wrong (or bandwidth below the minimum)

struct Command {
  std::string collective;
  int nranks = 0;  // 0: launched by someone else
  SweepOptions sweep;
};

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: cohort-bench COLLECTIVE [--nranks N] [flags]\n"
               "       cohort-bench topo [--nranks N]     the hosts, local ranks and links\n"
               "       cohort-bench algos\n\n"
               "COLLECTIVE: %s\n\n"
               "  --nranks N        spawn N local ranks (else: one rank of a launched job, from\n"
               "                    RANK, WORLD_SIZE and COHORT_STORE_ADDR)\n"
               "  -b, --minbytes    smallest size (default 32M; suffixes K, M, G)\n"
               "  -e, --maxbytes    largest size (default 32M)\n"
               "  -i, --stepbytes   increment between sizes (default 1M)\n"
               "  -f, --stepfactor  multiply sizes by this instead (default 1: use -i)\n"
               "  -n, --iters       timed iterations per size (default 20)\n"
               "  -w, --warmup_iters  untimed iterations first (default 5)\n"
               "  -c, --check       check results, 0 or 1 (default 1)\n"
               "  -z, --blocking    wait for each operation before the next, 0 or 1 (default 0)\n"
               "  -o, --op          sum, prod, min, max, avg, band, bor, bxor (default sum)\n"
               "  -d, --datatype    float, double, half, bfloat16, int8, uint8, int32, int64\n"
               "  -r, --root        root rank of rooted collectives (default 0)\n"
               "  --algo NAME       force an algorithm (see `cohort-bench algos`)\n"
               "  --tag TEXT        a label for the command line; ignored\n",
               absl::StrJoin(CollectiveNames(), ", ").c_str());
}

absl::Status Fail(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::StatusOr<Command> Parse(int argc, char** argv) {
  Command command;
  if (argc < 2) return Fail("no collective given");
  command.collective = argv[1];
  if (command.collective != "algos" && command.collective != "topo" &&
      command.collective != "memcpy" &&
      FindCollective(command.collective) == nullptr) {
    return Fail(absl::StrCat("unknown collective \"", command.collective, "\"; accepted: ",
                             absl::StrJoin(CollectiveNames(), ", "), ", topo, algos"));
  }
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return Fail(absl::StrCat("flag ", flag, " needs a value"));
    std::string value = argv[++i];
    auto bad = [&](const std::string& accepted) {
      return Fail(absl::StrCat("flag ", flag, " got \"", value, "\"; it accepts ", accepted));
    };
    int64_t integer = 0;
    double real = 0;
    if (flag == "--nranks") {
      if (!absl::SimpleAtoi(value, &command.nranks) || command.nranks < 1 || command.nranks > 512) {
        return bad("a rank count from 1 to 512");
      }
    } else if (flag == "-b" || flag == "--minbytes" || flag == "-e" || flag == "--maxbytes" ||
               flag == "-i" || flag == "--stepbytes") {
      auto bytes = config::ParseBytes(value);
      if (!bytes.ok()) return bad("a size such as 8, 64K, 1M or 2G");
      size_t& target = (flag == "-b" || flag == "--minbytes")   ? command.sweep.min_bytes
                       : (flag == "-e" || flag == "--maxbytes") ? command.sweep.max_bytes
                                                                : command.sweep.step_bytes;
      target = static_cast<size_t>(*bytes);
    } else if (flag == "-f" || flag == "--stepfactor") {
      if (!absl::SimpleAtod(value, &real) || real < 1) return bad("a factor of at least 1");
      command.sweep.step_factor = real;
    } else if (flag == "-n" || flag == "--iters") {
      if (!absl::SimpleAtoi(value, &integer) || integer < 1) return bad("a positive count");
      command.sweep.iterations = static_cast<int>(integer);
    } else if (flag == "-w" || flag == "--warmup_iters") {
      if (!absl::SimpleAtoi(value, &integer) || integer < 0) return bad("a count from 0");
      command.sweep.warmup = static_cast<int>(integer);
    } else if (flag == "-c" || flag == "--check") {
      if (value != "0" && value != "1") return bad("0 or 1");
      command.sweep.check = value == "1";
    } else if (flag == "-z" || flag == "--blocking") {
      if (value != "0" && value != "1") return bad("0 or 1");
      command.sweep.blocking = value == "1";
    } else if (flag == "-o" || flag == "--op") {
      auto op = ParseReduceOp(value);
      if (!op.ok()) return Fail(std::string(op.status().message()));
      command.sweep.params.op = *op;
    } else if (flag == "-d" || flag == "--datatype") {
      auto type = ParseDataType(value);
      if (!type.ok()) return Fail(std::string(type.status().message()));
      command.sweep.params.dtype = *type;
    } else if (flag == "-r" || flag == "--root") {
      if (!absl::SimpleAtoi(value, &integer) || integer < 0) return bad("a rank");
      command.sweep.params.root = static_cast<int>(integer);
    } else if (flag == "--tag") {
      // A label on the command line only (tests find their processes by it).
    } else if (flag == "--algo") {
      absl::Status valid = ValidateAlgorithmName(value);
      if (!valid.ok()) return Fail(std::string(valid.message()));
      command.sweep.params.algorithm = value;
    } else {
      return Fail(absl::StrCat("unknown flag ", flag, "; run cohort-bench --help for the list"));
    }
  }
  if (command.sweep.min_bytes > command.sweep.max_bytes) {
    return Fail("-b (smallest size) is larger than -e (largest size)");
  }
  return command;
}

// One rank: connect to the store, build the communicator, run the sweep.
int RunRank(const Command& command, const store::StoreClientOptions& store_options, int rank,
            int size) {
  auto client = store::StoreClient::Connect(store_options);
  if (!client.ok()) {
    std::fprintf(stderr, "cohort-bench rank %d: %s\n", rank, std::string(client.status().message()).c_str());
    return kExitFailure;
  }
  auto comm = Communicator::Create(**client, rank, size, {.name = "cohort-bench"});
  if (!comm.ok()) {
    std::fprintf(stderr, "cohort-bench rank %d: %s\n", rank, std::string(comm.status().message()).c_str());
    return kExitFailure;
  }
  if (command.collective == "topo") {
    if (rank == 0) std::fputs((*comm)->topology().Describe().c_str(), stdout);
    return (*comm)->Barrier()->Wait().ok() ? 0 : kExitFailure;
  }
  if (command.sweep.params.root >= size) {
    if (rank == 0) std::fprintf(stderr, "cohort-bench: root %d is not a rank of %d\n", command.sweep.params.root, size);
    return kExitUsage;
  }
  auto result = RunSweep(**comm, *FindCollective(command.collective), command.sweep, stdout);
  if (!result.ok()) {
    std::fprintf(stderr, "cohort-bench rank %d: %s\n", rank, std::string(result.status().message()).c_str());
    return kExitFailure;
  }
  return result->wrong > 0 ? kExitWrong : 0;
}

int SpawnLocal(const Command& command) {
  std::string token = crypto::RandomHex(16);
  store::StoreServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.token = token;
  server_options.job_id = "cohort-bench";
  auto server = store::StoreServer::Start(server_options);
  if (!server.ok()) {
    std::fprintf(stderr, "cohort-bench: cannot start the local store: %s\n", std::string(server.status().message()).c_str());
    return kExitFailure;
  }
  store::StoreClientOptions client_options;
  client_options.host = "127.0.0.1";
  client_options.port = (*server)->port();
  client_options.token = token;
  client_options.job_id = "cohort-bench";
  std::fflush(stdout);
  std::vector<pid_t> children;
  for (int rank = 0; rank < command.nranks; ++rank) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("cohort-bench: fork");
      for (pid_t child : children) kill(child, SIGKILL);
      return kExitFailure;
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int code = RunRank(command, client_options, rank, command.nranks);
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(code);
    }
    children.push_back(pid);
  }
  int worst = 0;
  for (size_t rank = 0; rank < children.size(); ++rank) {
    int status = 0;
    waitpid(children[rank], &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : kExitFailure;
    if (WIFSIGNALED(status)) {
      std::fprintf(stderr, "cohort-bench: rank %zu was killed by signal %d\n", rank, WTERMSIG(status));
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
      !absl::SimpleAtoi(size_text, &size)) {
    std::fprintf(stderr,
                 "cohort-bench: give --nranks N to spawn local ranks, or run under a launcher that "
                 "sets RANK, WORLD_SIZE and COHORT_STORE_ADDR (e.g. cohortrun)\n");
    return kExitUsage;
  }
  auto address_text = config::GetString("COHORT_STORE_ADDR");
  auto address = address_text.ok() ? ParseHostPort(*address_text)
                                    : absl::StatusOr<HostPort>(address_text.status());
  if (!address.ok()) {
    std::fprintf(stderr, "cohort-bench: COHORT_STORE_ADDR: %s\n", std::string(address.status().message()).c_str());
    return kExitUsage;
  }
  store::StoreClientOptions options;
  options.host = address->host;
  options.port = address->port;
  return RunRank(command, options, rank, size);
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) {
  using namespace cohort::bench;
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    Usage(stdout);
    return 0;
  }
  absl::Status environment = cohort::config::ValidateEnvironment();
  if (!environment.ok()) {
    std::fprintf(stderr, "cohort-bench: %s\n", std::string(environment.message()).c_str());
    return kExitUsage;
  }
  auto command = Parse(argc, argv);
  if (!command.ok()) {
    std::fprintf(stderr, "cohort-bench: %s\n\n", std::string(command.status().message()).c_str());
    Usage(stderr);
    return kExitUsage;
  }
  if (command->collective == "memcpy") {
    // The machine's copy bandwidth, the reference the shared-memory figures are read against.
    size_t bytes = command->sweep.max_bytes;
    std::vector<char> source(bytes, 1), target(bytes, 0);
    std::memcpy(target.data(), source.data(), bytes);
    double best = 0;
    for (int i = 0; i < std::max(1, command->sweep.iterations); ++i) {
      auto start = std::chrono::steady_clock::now();
      std::memcpy(target.data(), source.data(), bytes);
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, static_cast<double>(bytes) / seconds / 1e9);
    }
    std::printf("# memcpy bandwidth: %.3f GB/s (%zu bytes, best of %d)\n", best, bytes,
                command->sweep.iterations);
    return 0;
  }
  if (command->collective == "algos") {
    for (const cohort::Algorithm& algorithm : cohort::Algorithms()) {
      std::vector<std::string> ops;
      for (cohort::OpType op : algorithm.ops) ops.push_back(cohort::OpTypeName(op));
      std::printf("%-20s %s\n", algorithm.name.c_str(), absl::StrJoin(ops, ", ").c_str());
    }
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  return command->nranks > 0 ? SpawnLocal(*command) : RunLaunched(*command);
}
