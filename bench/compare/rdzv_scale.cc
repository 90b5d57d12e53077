// cohort-rdzv-scale: N simulated agents (threads speaking the real rendezvous protocol through
// AgentClient) join one rendezvous; prints how long it took from the first join until every
// agent held the world, then lets them heartbeat (and check for their generation's end every
// 100 ms, as cohortrun's agent loop does) and prints the coordinator's CPU meanwhile.
//
// embedded: the store and the coordinator run in a child process, as the endpoint host's agent
// runs them, so their CPU is their own. etcd: the child is the agent holding the coordinator
// role (it never joins); etcd's own CPU is reported when --etcd-pid names it.
// Used by bench/compare/rdzv_scale.py (side by side with torch's c10d rendezvous) and by
// tests/cluster/rdzv_scale_smoke.sh.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/barrier.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "elastic/agent_client.h"
#include "elastic/coordinator.h"
#include "elastic/etcd_backend.h"
#include "elastic/store/store_server.h"

namespace cohort {
namespace {

struct Options {
  std::string backend = "embedded";
  int agents = 64;
  double heartbeat_seconds = 0;
  double timeout_seconds = 120;
  bool monitor = true;
  std::vector<std::string> endpoints;  // etcd
  int etcd_pid = 0;
  int connect_threads = 32;
};

int Usage() {
  std::fprintf(stderr,
               "usage: cohort-rdzv-scale [--backend embedded|etcd] [--agents N]\n"
               "         [--heartbeat-seconds S] [--timeout S] [--monitor 0|1]\n"
               "         [--endpoints URL,...] [--etcd-pid PID]\n"
               "  N simulated agents join one rendezvous (min = max = N); prints one JSON line\n"
               "  with the time from the first join until every agent held the world, and the\n"
               "  coordinator's CPU while the agents heartbeat (1 s interval) for S seconds.\n");
  return 2;
}

bool ParseOptions(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return false;
    std::string value = argv[++i];
    if (flag == "--backend") {
      options->backend = value;
    } else if (flag == "--agents") {
      if (!absl::SimpleAtoi(value, &options->agents) || options->agents < 1) return false;
    } else if (flag == "--heartbeat-seconds") {
      if (!absl::SimpleAtod(value, &options->heartbeat_seconds)) return false;
    } else if (flag == "--timeout") {
      if (!absl::SimpleAtod(value, &options->timeout_seconds)) return false;
    } else if (flag == "--monitor") {
      options->monitor = value != "0";
    } else if (flag == "--endpoints") {
      options->endpoints = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (flag == "--etcd-pid") {
      if (!absl::SimpleAtoi(value, &options->etcd_pid)) return false;
    } else {
      return false;
    }
  }
  if (options->backend == "etcd") return !options->endpoints.empty();
  return options->backend == "embedded";
}

elastic::RendezvousSettings Settings(const Options& options) {
  elastic::RendezvousSettings settings;
  settings.min_nodes = options.agents;
  settings.max_nodes = options.agents;
  settings.join_timeout = absl::Seconds(options.timeout_seconds);
  settings.last_call_timeout = absl::Seconds(30);
  settings.heartbeat_interval = absl::Seconds(1);
  settings.heartbeat_timeout = absl::Seconds(5);
  settings.read_timeout = absl::Seconds(options.timeout_seconds);
  settings.etcd.endpoints = options.endpoints;
  return settings;
}

// One per run, fixed before the coordinator's process forks.
std::string& JobId() {
  static std::string id;
  return id;
}

elastic::EtcdAgentOptions EtcdOptions(const Options& options, const std::string& node_id,
                                      const std::string& host) {
  elastic::EtcdAgentOptions etcd;
  etcd.settings = Settings(options);
  etcd.job_id = JobId();
  etcd.node_id = node_id;
  etcd.host = host;
  etcd.campaign = true;
  etcd.coordinator.job_id = JobId();
  etcd.coordinator.token = "scale-token";
  etcd.coordinator.settings = etcd.settings;
  etcd.coordinator.worker_store_listen_host = "127.0.0.1";
  etcd.coordinator.worker_store_public_host = "127.0.0.1";
  etcd.coordinator.host = host;
  return etcd;
}

// CPU seconds (user + system) of a process, from /proc.
double ProcessCpuSeconds(pid_t pid) {
  std::string path = absl::StrCat("/proc/", pid, "/stat");
  FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return -1;
  char buffer[4096] = {};
  size_t got = std::fread(buffer, 1, sizeof(buffer) - 1, file);
  std::fclose(file);
  buffer[got] = 0;
  const char* after_name = std::strrchr(buffer, ')');
  if (after_name == nullptr) return -1;
  // Fields after the name: state(3) ... utime(14) stime(15).
  unsigned long long utime = 0, stime = 0;
  if (std::sscanf(after_name + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                  &stime) != 2) {
    return -1;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

void RaiseFileLimit() {
  rlimit limit = {};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

[[noreturn]] void Die(const absl::Status& status) {
  std::fprintf(stderr, "cohort-rdzv-scale: %s\n", std::string(status.message()).c_str());
  _exit(1);
}

// The coordinator's process. Embedded: the store and the coordinator, as the endpoint host's
// agent runs them; writes the store's port to `ready`. etcd: an agent that takes the
// coordinator role and never joins; writes 0 once it holds the role. Serves until killed.
[[noreturn]] void ServeCoordinator(const Options& options, int ready) {
  int port = 0;
  std::unique_ptr<store::StoreServer> server;
  std::unique_ptr<elastic::Coordinator> coordinator;
  std::unique_ptr<elastic::AgentClient> agent;
  if (options.backend == "etcd") {
    auto connected = elastic::ConnectEtcdAgent(EtcdOptions(options, "coordinator-0", "coordinator"));
    if (!connected.ok()) Die(connected.status());
    agent = std::move(*connected);
    Deadline deadline = Deadline::In(absl::Seconds(30));
    while (!agent->backend().RunsCoordinator()) {
      if (deadline.Expired()) Die(absl::DeadlineExceededError("did not take the coordinator role"));
      absl::SleepFor(absl::Milliseconds(5));
    }
  } else {
    store::StoreServerOptions server_options;
    server_options.host = "127.0.0.1";
    server_options.job_id = JobId();
    server_options.token = "scale-token";
    auto started = store::StoreServer::Start(server_options);
    if (!started.ok()) Die(started.status());
    server = std::move(*started);
    elastic::CoordinatorOptions coordinator_options;
    coordinator_options.store_port = server->port();
    coordinator_options.job_id = JobId();
    coordinator_options.token = "scale-token";
    coordinator_options.settings = Settings(options);
    coordinator_options.worker_store_listen_host = "127.0.0.1";
    auto running = elastic::Coordinator::Start(coordinator_options);
    if (!running.ok()) Die(running.status());
    coordinator = std::move(*running);
    port = server->port();
  }
  if (write(ready, &port, sizeof(port)) != sizeof(port)) _exit(1);
  close(ready);
  while (true) pause();
}

absl::StatusOr<std::unique_ptr<elastic::AgentClient>> ConnectAgent(const Options& options, int port,
                                                                   int index) {
  std::string node_id = absl::StrCat("sim", index, "-", 100000 + index, "-", 0xa0000 + index);
  if (options.backend == "etcd") {
    return elastic::ConnectEtcdAgent(EtcdOptions(options, node_id, absl::StrCat("sim", index)));
  }
  elastic::AgentClientOptions client_options;
  client_options.store_host = "127.0.0.1";
  client_options.store_port = port;
  client_options.job_id = JobId();
  client_options.token = "scale-token";
  client_options.settings = Settings(options);
  client_options.connect_timeout = absl::Seconds(options.timeout_seconds);
  return elastic::AgentClient::Connect(client_options, node_id);
}

int Run(const Options& options) {
  RaiseFileLimit();
  JobId() = absl::StrCat("scale-", getpid());
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return 1;
  pid_t coordinator_pid = fork();
  if (coordinator_pid == 0) {
    close(pipe_fds[0]);
    ServeCoordinator(options, pipe_fds[1]);
  }
  close(pipe_fds[1]);
  int port = 0;
  if (read(pipe_fds[0], &port, sizeof(port)) != sizeof(port)) {
    std::fprintf(stderr, "cohort-rdzv-scale: the coordinator process did not start\n");
    waitpid(coordinator_pid, nullptr, 0);
    return 1;
  }
  close(pipe_fds[0]);
  auto stop_coordinator = [&] {
    kill(coordinator_pid, SIGKILL);
    waitpid(coordinator_pid, nullptr, 0);
  };

  // Connect every agent first (that is start-up, not rendezvous), a few at a time, then release
  // the joins at once.
  const int count = options.agents;
  absl::Time connect_start = absl::Now();
  std::vector<std::unique_ptr<elastic::AgentClient>> agents(count);
  std::atomic<int> next{0};
  std::atomic<int> failed{0};
  {
    std::vector<std::thread> connectors;
    for (int t = 0; t < std::min(options.connect_threads, count); ++t) {
      connectors.emplace_back([&] {
        for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
          auto agent = ConnectAgent(options, port, i);
          if (!agent.ok()) {
            if (failed.fetch_add(1) == 0) {
              std::fprintf(stderr, "cohort-rdzv-scale: agent %d: %s\n", i,
                           std::string(agent.status().message()).c_str());
            }
            continue;
          }
          agents[i] = std::move(*agent);
        }
      });
    }
    for (std::thread& connector : connectors) connector.join();
  }
  if (failed.load() > 0) {
    agents.clear();
    stop_coordinator();
    return 1;
  }
  double connect_seconds = absl::ToDoubleSeconds(absl::Now() - connect_start);

  absl::Barrier* start = new absl::Barrier(count + 1);
  std::atomic<int64_t> last_held_nanos{0};
  std::atomic<int> held{0};
  std::atomic<bool> heartbeat_over{false};
  std::vector<std::thread> threads;
  threads.reserve(count);
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      elastic::NodeInfo info;
      info.node_id = agents[i]->node_id();
      info.host = absl::StrCat("sim", i);
      info.address = absl::StrCat("10.", (i >> 8) & 255, ".", i & 255, ".1");
      info.master_port = 20000 + i;
      info.local_world_size = 8;
      if (start->Block()) delete start;
      auto world = agents[i]->Join(info, absl::Seconds(options.timeout_seconds), nullptr);
      int64_t now = NowNanos();
      if (!world.ok() || world->world_size() != 8 * count) {
        if (failed.fetch_add(1) == 0) {
          std::fprintf(stderr, "cohort-rdzv-scale: agent %d: %s\n", i,
                       world.ok() ? "wrong world size" : std::string(world.status().message()).c_str());
        }
        return;
      }
      int64_t seen = last_held_nanos.load();
      while (seen < now && !last_held_nanos.compare_exchange_weak(seen, now)) {
      }
      held.fetch_add(1);
      // The running job: cohortrun's agent checks for the generation's end each monitor interval.
      while (options.monitor && !heartbeat_over.load()) {
        absl::SleepFor(absl::Milliseconds(100));
        auto end = agents[i]->PollEnd(world->generation, absl::ZeroDuration());
        if (!end.ok() || end->has_value()) {
          if (failed.fetch_add(1) == 0) {
            std::fprintf(stderr, "cohort-rdzv-scale: agent %d: %s\n", i,
                         end.ok() ? (*end)->reason.c_str() : std::string(end.status().message()).c_str());
          }
          return;
        }
      }
    });
  }
  int64_t first_join_nanos = NowNanos();
  if (start->Block()) delete start;
  while (held.load() + failed.load() < count) absl::SleepFor(absl::Milliseconds(1));
  auto finish = [&] {
    heartbeat_over.store(true);
    for (std::thread& thread : threads) thread.join();
    // The coordinator first, so that the agents going away is nobody's news.
    stop_coordinator();
    agents.clear();
  };
  if (failed.load() > 0) {
    finish();
    return 1;
  }
  double rendezvous_seconds = static_cast<double>(last_held_nanos.load() - first_join_nanos) / 1e9;

  // Every agent heartbeats on its own thread; the coordinator watches them.
  double cpu_seconds = 0, etcd_cpu_seconds = 0, wall_seconds = 0;
  if (options.heartbeat_seconds > 0) {
    double cpu_before = ProcessCpuSeconds(coordinator_pid);
    double etcd_before = options.etcd_pid > 0 ? ProcessCpuSeconds(options.etcd_pid) : 0;
    absl::Time before = absl::Now();
    absl::SleepFor(absl::Seconds(options.heartbeat_seconds));
    cpu_seconds = ProcessCpuSeconds(coordinator_pid) - cpu_before;
    if (options.etcd_pid > 0) etcd_cpu_seconds = ProcessCpuSeconds(options.etcd_pid) - etcd_before;
    wall_seconds = absl::ToDoubleSeconds(absl::Now() - before);
    for (auto& agent : agents) {
      absl::Status health = agent->health();
      if (!health.ok()) {
        std::fprintf(stderr, "cohort-rdzv-scale: %s\n", std::string(health.message()).c_str());
        finish();
        return 1;
      }
    }
  }
  finish();
  if (failed.load() > 0) return 1;
  auto percent = [&](double cpu) { return wall_seconds > 0 ? 100.0 * cpu / wall_seconds : 0.0; };
  std::printf(
      "{\"backend\": \"%s\", \"agents\": %d, \"connect_s\": %.3f, \"rendezvous_s\": %.3f, "
      "\"heartbeat_s\": %.1f, \"coordinator_cpu_s\": %.3f, \"coordinator_cpu_percent\": %.2f, "
      "\"etcd_cpu_percent\": %.2f}\n",
      options.backend.c_str(), count, connect_seconds, rendezvous_seconds, wall_seconds,
      cpu_seconds, percent(cpu_seconds), percent(etcd_cpu_seconds));
  std::fflush(stdout);
  return 0;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  cohort::Options options;
  if (!cohort::ParseOptions(argc, argv, &options)) return cohort::Usage();
  return cohort::Run(options);
}
