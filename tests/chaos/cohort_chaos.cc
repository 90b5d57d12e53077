// cohort-chaos: the chaos suite's trials (tests/chaos/run.sh runs it).
//
//   cohort-chaos driver --trials N [--faults kill,stop,drop] [--transports shm,tcp] [--shrink]
//                       [--ranks 4] [--timeout 2s] [--seed S] [--netns NS0,NS1,...] [--json F]
//
// Each trial starts --ranks rank processes (this binary, `rank` mode) that bootstrap through a
// store the driver serves, and run a random sequence of collectives (allreduce, broadcast,
// reduce, allgather, reduce-scatter, alltoall, barrier; 8 B to 16 MiB, the same on every rank).
// At a random moment the driver injures a random rank: SIGKILL (kill), SIGSTOP (stop: frozen,
// not dead), or, with --netns (one namespace per host, ranks spread over them), drops every
// packet of the victim's host with iptables (drop: no FIN, no RST). Then it checks:
//   - no survivor hangs: each reports its error within a bound (kill: 10 s; stop and drop:
//     the timeout + 5 s);
//   - every survivor's error names the injured rank and its host ("rank V (host)");
//   - with --shrink, the survivors shrink and run verified allreduces: correct results;
//   - nothing is left: every rank process reaped, no /dev/shm segment of theirs.
// One line per trial (and --json: one JSON object per line), then a summary with the median and
// maximum time from the injury to the last survivor's error and, with --shrink, to the last
// survivor's first correct allreduce on the shrunk communicator. Exit 0 when every check held.
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "collectives/communicator.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"

namespace cohort::chaos {
namespace {

int64_t RealtimeNanos() {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

std::map<std::string, std::string> ParseFlags(int argc, char** argv, int first) {
  std::map<std::string, std::string> flags;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) continue;
    arg = arg.substr(2);
    if (size_t equals = arg.find('='); equals != std::string::npos) {
      flags[arg.substr(0, equals)] = arg.substr(equals + 1);
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      flags[arg] = argv[++i];
    } else {
      flags[arg] = "1";
    }
  }
  return flags;
}

std::string Flag(const std::map<std::string, std::string>& flags, const std::string& name,
                 const std::string& fallback) {
  auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second;
}

absl::Duration DurationFlag(const std::map<std::string, std::string>& flags,
                            const std::string& name, absl::Duration fallback) {
  absl::Duration value;
  return absl::ParseDuration(Flag(flags, name, ""), &value) ? value : fallback;
}

absl::StatusOr<std::unique_ptr<store::StoreClient>> ConnectStore(const std::string& address,
                                                                 const std::string& token) {
  std::vector<std::string> parts = absl::StrSplit(address, ':');
  store::StoreClientOptions options;
  options.host = parts[0];
  options.port = parts.size() > 1 ? std::stoi(parts[1]) : 0;
  options.token = token;
  options.job_id = "cohort-chaos";
  options.connect_timeout = absl::Seconds(20);
  options.timeout = absl::Seconds(30);
  return store::StoreClient::Connect(options);
}

// ---------------------------------------------------------------------------------------------
// A rank.

struct Collective {
  OpType op;
  size_t count;  // float32 elements per rank (per peer for alltoall)
  int root;
};

// The trial's i-th collective, the same on every rank.
Collective Pick(uint64_t seed, int index, int size) {
  std::mt19937_64 random(seed * 1000003 + static_cast<uint64_t>(index));
  static const OpType ops[] = {OpType::kAllreduce, OpType::kAllreduce, OpType::kBroadcast,
                               OpType::kReduce,    OpType::kAllgather, OpType::kReduceScatter,
                               OpType::kAlltoall,  OpType::kBarrier};
  Collective pick;
  pick.op = ops[random() % (sizeof(ops) / sizeof(ops[0]))];
  // 8 B .. 16 MiB per rank, uniform in log scale.
  double bytes = std::exp2(3.0 + std::uniform_real_distribution<double>(0, 21)(random));
  pick.count = std::max<size_t>(2, static_cast<size_t>(bytes) / 4);
  if (pick.op == OpType::kAllgather || pick.op == OpType::kReduceScatter ||
      pick.op == OpType::kAlltoall) {
    pick.count = std::max<size_t>(1, pick.count / static_cast<size_t>(size));
  }
  pick.root = static_cast<int>(random() % static_cast<uint64_t>(size));
  return pick;
}

absl::Status Run(Communicator& comm, const Collective& pick, std::vector<float>& in,
                 std::vector<float>& out) {
  const size_t size = static_cast<size_t>(comm.size());
  const size_t total = pick.count * size;
  if (in.size() < total) in.assign(total, 1.0f);
  if (out.size() < total) out.assign(total, 0.0f);
  switch (pick.op) {
    case OpType::kAllreduce: {
      AllreduceOptions o;
      o.input = in.data(), o.output = out.data(), o.count = pick.count;
      return comm.Allreduce(o)->Wait();
    }
    case OpType::kBroadcast: {
      BroadcastOptions o;
      o.input = in.data(), o.output = out.data(), o.count = pick.count, o.root = pick.root;
      return comm.Broadcast(o)->Wait();
    }
    case OpType::kReduce: {
      ReduceOptions o;
      o.input = in.data(), o.output = out.data(), o.count = pick.count, o.root = pick.root;
      return comm.Reduce(o)->Wait();
    }
    case OpType::kAllgather: {
      AllgatherOptions o;
      o.input = in.data(), o.output = out.data(), o.count = pick.count;
      return comm.Allgather(o)->Wait();
    }
    case OpType::kReduceScatter: {
      ReduceScatterOptions o;
      o.input = in.data(), o.output = out.data(), o.count = pick.count;
      return comm.ReduceScatter(o)->Wait();
    }
    case OpType::kAlltoall: {
      AlltoallOptions o;
      o.input = in.data(), o.output = out.data(), o.count = pick.count;
      return comm.Alltoall(o)->Wait();
    }
    default:
      return comm.Barrier()->Wait();
  }
}

// Verified allreduces on the shrunk communicator: each rank contributes rank + round.
absl::Status Verify(Communicator& comm, int rounds, int64_t* first_done_ns) {
  const int n = comm.size();
  for (int round = 0; round < rounds; ++round) {
    std::vector<float> values(round % 2 == 0 ? 4096 : (1 << 18),
                              static_cast<float>(comm.rank() + round));
    AllreduceOptions o;
    o.input = values.data(), o.output = values.data(), o.count = values.size();
    COHORT_RETURN_IF_ERROR(comm.Allreduce(o)->Wait());
    if (round == 0) *first_done_ns = RealtimeNanos();
    const float expected = static_cast<float>(n * (n - 1) / 2 + n * round);
    for (float value : {values.front(), values[values.size() / 2], values.back()}) {
      if (value != expected) {
        return absl::DataLossError(absl::StrCat("allreduce round ", round, " gave ", value,
                                                " instead of ", expected));
      }
    }
  }
  return absl::OkStatus();
}

int RankMain(const std::map<std::string, std::string>& flags) {
  const int rank = std::stoi(Flag(flags, "rank", "0"));
  const int size = std::stoi(Flag(flags, "size", "1"));
  const uint64_t seed = std::stoull(Flag(flags, "seed", "1"));
  const std::string trial = Flag(flags, "trial", "t");
  auto store = ConnectStore(Flag(flags, "store", ""), Flag(flags, "token", ""));
  if (!store.ok()) {
    std::fprintf(stderr, "chaos rank %d: %s\n", rank, std::string(store.status().message()).c_str());
    return 2;
  }
  Bootstrap& bootstrap = **store;
  auto report = [&](const std::string& key, const std::string& value) {
    (void)bootstrap.Set(absl::StrCat(trial, "/", key, "/", rank), value);
  };
  CommOptions options;
  options.name = absl::StrCat(trial, "-chaos");
  options.timeout = DurationFlag(flags, "timeout", absl::Seconds(2));
  auto kinds = ParseChannelKinds(Flag(flags, "transport", "shm") == "tcp" ? "tcp" : "shm,tcp");
  options.transports = *kinds;
  options.trace_dir = Flag(flags, "trace-dir", "");
  auto created = Communicator::Create(bootstrap, rank, size, options);
  if (!created.ok()) {
    report("error", absl::StrCat(RealtimeNanos(), "\ncreate: ", created.status().message()));
    return 2;
  }
  std::unique_ptr<Communicator> comm = std::move(*created);
  std::vector<float> in, out;
  absl::Status status = Run(*comm, Pick(seed, 0, size), in, out);  // one before the clock starts
  report("ready", "1");
  const Deadline give_up = Deadline::In(absl::Seconds(60));
  for (int index = 1; status.ok() && !give_up.Expired(); ++index) {
    status = Run(*comm, Pick(seed, index, size), in, out);
  }
  const int64_t failed_at = RealtimeNanos();
  if (status.ok()) {
    report("error", absl::StrCat(failed_at, "\nno failure within 60 s"));
    return 3;
  }
  report("error", absl::StrCat(failed_at, "\n", status.message()));
  if (Flag(flags, "shrink", "0") != "1") return 0;
  auto shrunk = comm->Shrink(bootstrap);
  if (!shrunk.ok()) {
    report("shrunk", absl::StrCat("shrink failed: ", shrunk.status().message()));
    return 4;
  }
  int64_t first_done = 0;
  absl::Status verified = Verify(**shrunk, 4, &first_done);
  report("shrunk", verified.ok() ? absl::StrCat("ok ", first_done, " ", (*shrunk)->size())
                                 : absl::StrCat("wrong: ", verified.message()));
  return verified.ok() ? 0 : 5;
}

// ---------------------------------------------------------------------------------------------
// The driver.

struct Outcome {
  int trial = 0;
  std::string fault, transport;
  int victim = -1;
  std::string victim_host;
  int64_t injured_ns = 0;
  double error_ms = -1;   // injury -> the last survivor's error
  double shrink_ms = -1;  // injury -> the last survivor's first correct allreduce after shrinking
  bool hang = false, named = true, shrunk = true, clean = true;
  std::string problem;
};

double Median(std::vector<double> values) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

bool Exited(pid_t pid, int* status) {
  pid_t done = waitpid(pid, status, WNOHANG);
  return done == pid || (done < 0 && errno == ECHILD);
}

std::string SelfPath() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

int DriverMain(const std::map<std::string, std::string>& flags) {
  const int trials = std::stoi(Flag(flags, "trials", "20"));
  const int size = std::stoi(Flag(flags, "ranks", "4"));
  const bool shrink = Flag(flags, "shrink", "0") == "1";
  const absl::Duration timeout = DurationFlag(flags, "timeout", absl::Seconds(2));
  std::vector<std::string> faults = absl::StrSplit(Flag(flags, "faults", "kill"), ',');
  std::vector<std::string> transports = absl::StrSplit(Flag(flags, "transports", "shm,tcp"), ',');
  std::vector<std::string> namespaces =
      absl::StrSplit(Flag(flags, "netns", ""), ',', absl::SkipEmpty());
  const std::string store_ip = Flag(flags, "store-ip", "127.0.0.1");
  const uint64_t seed = std::stoull(Flag(flags, "seed", absl::StrCat(time(nullptr))));
  const std::string trace_root = Flag(flags, "trace-dir", "");
  std::FILE* json = nullptr;
  if (flags.contains("json")) json = std::fopen(Flag(flags, "json", "").c_str(), "w");
  std::mt19937_64 random(seed);
  const std::string token = crypto::RandomHex(8);

  store::StoreServerOptions server_options;
  server_options.host = store_ip;
  server_options.token = token;
  server_options.job_id = "cohort-chaos";
  auto server = store::StoreServer::Start(server_options);
  if (!server.ok()) {
    std::fprintf(stderr, "cohort-chaos: store: %s\n", std::string(server.status().message()).c_str());
    return 2;
  }
  const std::string address = absl::StrCat(store_ip, ":", (*server)->port());
  auto client = ConnectStore(address, token);
  if (!client.ok()) return 2;
  store::StoreClient& store = **client;
  const std::string self = SelfPath();
  // The ranks' output, shown for a trial that fails.
  std::string logs = Flag(flags, "logs", "");
  const bool own_logs = logs.empty();
  if (own_logs) {
    char folder[] = "/tmp/cohort-chaos.XXXXXX";
    logs = mkdtemp(folder) != nullptr ? folder : "/tmp";
  }
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  std::printf("# cohort-chaos: %d trials, %d ranks, faults %s, transports %s%s, timeout %s, seed %llu\n",
              trials, size, absl::StrJoin(faults, ",").c_str(), absl::StrJoin(transports, ",").c_str(),
              shrink ? ", shrink" : "", absl::FormatDuration(timeout).c_str(),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);

  std::vector<Outcome> outcomes;
  for (int trial = 0; trial < trials; ++trial) {
    Outcome outcome;
    outcome.trial = trial;
    outcome.fault = faults[random() % faults.size()];
    outcome.transport = namespaces.empty() ? transports[random() % transports.size()] : "tcp";
    outcome.victim = static_cast<int>(random() % static_cast<uint64_t>(size));
    const std::string name = absl::StrCat("t", trial, "-", random() % 100000);
    const uint64_t trial_seed = random();
    auto host_of = [&](int rank) {
      return namespaces.empty() ? 0 : rank * static_cast<int>(namespaces.size()) / size;
    };
    if (outcome.fault == "drop" && !namespaces.empty()) {
      // Drop a whole host: the victim is the only rank of the last host.
      outcome.victim = size - 1;
    }
    std::vector<pid_t> pids(size, -1);
    for (int rank = 0; rank < size; ++rank) {
      std::vector<std::string> args;
      if (!namespaces.empty()) {
        int host = host_of(rank);
        args = {"ip", "netns", "exec", namespaces[host], "unshare", "--uts", "sh", "-c",
                "hostname \"$0\"; exec \"$@\"", absl::StrCat("node", host)};
      }
      std::vector<std::string> rank_args = {
          self, "rank", "--rank", absl::StrCat(rank), "--size", absl::StrCat(size), "--seed",
          absl::StrCat(trial_seed), "--trial", name, "--store", address, "--token", token,
          "--transport", outcome.transport, "--timeout", absl::FormatDuration(timeout),
          "--shrink", shrink ? "1" : "0"};
      if (!trace_root.empty()) {
        rank_args.insert(rank_args.end(), {"--trace-dir", absl::StrCat(trace_root, "/", name)});
      }
      args.insert(args.end(), rank_args.begin(), rank_args.end());
      const std::string log = absl::StrCat(logs, "/", name, "-rank", rank, ".log");
      pid_t pid = fork();
      if (pid == 0) {
        FILE* out = std::fopen(log.c_str(), "w");
        if (out != nullptr) {
          dup2(fileno(out), 1);
          dup2(fileno(out), 2);
        }
        std::vector<char*> argv;
        for (std::string& arg : args) argv.push_back(arg.data());
        argv.push_back(nullptr);
        execvp(argv[0], argv.data());
        _exit(127);
      }
      pids[rank] = pid;
    }
    outcome.victim_host = namespaces.empty() ? hostname : absl::StrCat("node", host_of(outcome.victim));
    auto finish = [&](const std::string& problem) {
      if (!problem.empty() && outcome.problem.empty()) outcome.problem = problem;
    };
    bool ready = true;
    for (int rank = 0; rank < size && ready; ++rank) {
      ready = store.Get(absl::StrCat(name, "/ready/", rank), absl::Seconds(60)).ok();
    }
    if (!ready) {
      outcome.hang = true;
      finish("a rank did not start");
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(random() % 300));
      outcome.injured_ns = RealtimeNanos();
      if (outcome.fault == "kill") {
        kill(pids[outcome.victim], SIGKILL);
      } else if (outcome.fault == "stop") {
        kill(pids[outcome.victim], SIGSTOP);
      } else {
        const std::string& ns = namespaces[host_of(outcome.victim)];
        for (const char* chain : {"INPUT", "OUTPUT"}) {
          std::string command = absl::StrCat("ip netns exec ", ns, " iptables -I ", chain, " -j DROP");
          if (std::system(command.c_str()) != 0) finish("iptables failed");
        }
      }
      const absl::Duration bound =
          outcome.fault == "kill" ? absl::Seconds(10) : timeout + absl::Seconds(5);
      int64_t last_error = 0, last_shrunk = 0;
      for (int rank = 0; rank < size; ++rank) {
        if (rank == outcome.victim) continue;
        auto text = store.Get(absl::StrCat(name, "/error/", rank), bound);
        if (!text.ok()) {
          outcome.hang = true;
          finish(absl::StrCat("rank ", rank, " reported no error within ",
                              absl::FormatDuration(bound)));
          continue;
        }
        size_t newline = text->find('\n');
        int64_t at = 0;
        (void)absl::SimpleAtoi(text->substr(0, newline), &at);
        last_error = std::max(last_error, at);
        std::string message = text->substr(newline + 1);
        std::string expected = absl::StrCat("rank ", outcome.victim, " (", outcome.victim_host, ")");
        if (!absl::StrContains(message, expected)) {
          outcome.named = false;
          finish(absl::StrCat("rank ", rank, "'s error does not name ", expected, ": ", message));
        }
      }
      outcome.error_ms = (last_error - outcome.injured_ns) / 1e6;
      if (shrink && !outcome.hang) {
        for (int rank = 0; rank < size; ++rank) {
          if (rank == outcome.victim) continue;
          auto text = store.Get(absl::StrCat(name, "/shrunk/", rank), absl::Seconds(20));
          if (!text.ok() || !absl::StartsWith(*text, "ok ")) {
            outcome.shrunk = false;
            finish(absl::StrCat("rank ", rank, " after the shrink: ",
                                text.ok() ? *text : std::string(text.status().message())));
            continue;
          }
          std::vector<std::string> parts = absl::StrSplit(*text, ' ');
          int64_t at = 0;
          (void)absl::SimpleAtoi(parts[1], &at);
          last_shrunk = std::max(last_shrunk, at);
        }
        if (outcome.shrunk) outcome.shrink_ms = (last_shrunk - outcome.injured_ns) / 1e6;
      }
    }
    // End the trial: the survivors exit by themselves; the victim (and any straggler) is killed.
    const Deadline reap = Deadline::In(absl::Seconds(15));
    std::vector<bool> done(size, false);
    int remaining = size;
    while (remaining > 0) {
      for (int rank = 0; rank < size; ++rank) {
        int status = 0;
        if (done[rank] || !Exited(pids[rank], &status)) continue;
        done[rank] = true;
        --remaining;
        if (rank != outcome.victim && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
          finish(absl::StrCat("rank ", rank, " ended with ",
                              WIFEXITED(status) ? absl::StrCat("exit code ", WEXITSTATUS(status))
                                                : absl::StrCat("signal ", WTERMSIG(status))));
        }
      }
      if (remaining == 0) break;
      if (!done[outcome.victim]) kill(pids[outcome.victim], SIGKILL);
      if (reap.Expired()) {
        for (int rank = 0; rank < size; ++rank) {
          if (done[rank] || rank == outcome.victim) continue;
          outcome.clean = false;
          finish(absl::StrCat("rank ", rank, " was still running; killed"));
          kill(pids[rank], SIGKILL);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (outcome.fault == "drop") {
      const std::string& ns = namespaces[host_of(outcome.victim)];
      for (const char* chain : {"INPUT", "OUTPUT"}) {
        std::string command = absl::StrCat("ip netns exec ", ns, " iptables -D ", chain, " -j DROP");
        (void)std::system(command.c_str());
      }
    }
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
      std::string file = entry.path().filename();
      for (pid_t pid : pids) {
        if (file.rfind(absl::StrCat("cohort-", pid, "-"), 0) == 0) {
          outcome.clean = false;
          finish(absl::StrCat("/dev/shm/", file, " left behind"));
          std::filesystem::remove(entry.path());
        }
      }
    }
    const bool ok = outcome.problem.empty();
    for (int rank = 0; rank < size; ++rank) {
      const std::string log = absl::StrCat(logs, "/", name, "-rank", rank, ".log");
      if (!ok) {
        std::ifstream file(log);
        std::string line;
        while (std::getline(file, line)) std::printf("  rank %d: %s\n", rank, line.c_str());
      }
      if (own_logs) std::filesystem::remove(log);
    }
    std::printf("trial %3d %-4s %-3s victim %d (%s): errors after %7.1f ms%s  %s%s\n", trial,
                outcome.fault.c_str(), outcome.transport.c_str(), outcome.victim,
                outcome.victim_host.c_str(), outcome.error_ms,
                shrink ? absl::StrCat(", shrunk and correct after ", absl::StrFormat("%.1f", outcome.shrink_ms), " ms").c_str() : "",
                ok ? "ok" : "FAIL: ", outcome.problem.c_str());
    std::fflush(stdout);
    if (json != nullptr) {
      std::fprintf(json,
                   "{\"trial\": %d, \"fault\": \"%s\", \"transport\": \"%s\", \"victim\": %d, "
                   "\"error_ms\": %.3f, \"shrink_ms\": %.3f, \"hang\": %s, \"named\": %s, "
                   "\"shrunk\": %s, \"clean\": %s, \"ok\": %s}\n",
                   trial, outcome.fault.c_str(), outcome.transport.c_str(), outcome.victim,
                   outcome.error_ms, outcome.shrink_ms, outcome.hang ? "true" : "false",
                   outcome.named ? "true" : "false", outcome.shrunk ? "true" : "false",
                   outcome.clean ? "true" : "false", ok ? "true" : "false");
      std::fflush(json);
    }
    outcomes.push_back(outcome);
  }
  // Summary per fault kind.
  int failed = 0;
  for (const std::string& fault : {std::string("kill"), std::string("stop"), std::string("drop")}) {
    std::vector<double> errors, shrinks;
    int count = 0, hangs = 0, named = 0, bad = 0;
    for (const Outcome& outcome : outcomes) {
      if (outcome.fault != fault) continue;
      ++count;
      hangs += outcome.hang;
      named += outcome.named && !outcome.hang;
      bad += !outcome.problem.empty();
      if (!outcome.hang) errors.push_back(outcome.error_ms);
      if (outcome.shrink_ms >= 0) shrinks.push_back(outcome.shrink_ms);
    }
    if (count == 0) continue;
    failed += bad;
    std::printf("# %s: %d trials, %d hangs, %d of %d errors name the rank and host, "
                "injury to every survivor's error: median %.1f ms, max %.1f ms",
                fault.c_str(), count, hangs, named, count, Median(errors),
                errors.empty() ? -1.0 : *std::max_element(errors.begin(), errors.end()));
    if (shrink) {
      std::printf("; to the shrunk communicator's first correct allreduce: median %.1f ms, max %.1f ms",
                  Median(shrinks),
                  shrinks.empty() ? -1.0 : *std::max_element(shrinks.begin(), shrinks.end()));
    }
    std::printf("; %d failed\n", bad);
  }
  if (json != nullptr) std::fclose(json);
  if (own_logs) std::filesystem::remove_all(logs);
  (*server)->Stop();
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace cohort::chaos

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  cohort::ConfigureProcess();
  if (argc < 2) {
    std::fprintf(stderr, "usage: cohort-chaos driver|rank [flags] (see tests/chaos/run.sh)\n");
    return 2;
  }
  auto flags = cohort::chaos::ParseFlags(argc, argv, 2);
  if (std::string(argv[1]) == "rank") return cohort::chaos::RankMain(flags);
  if (std::string(argv[1]) == "driver") return cohort::chaos::DriverMain(flags);
  std::fprintf(stderr, "cohort-chaos: unknown mode %s\n", argv[1]);
  return 2;
}
