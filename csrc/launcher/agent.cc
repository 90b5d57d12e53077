#include "launcher/agent.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"
#include "elastic/agent_client.h"
#include "elastic/coordinator.h"
#include "elastic/etcd_backend.h"
#include "elastic/store/store_server.h"
#include "launcher/summary.h"
#include "launcher/workers.h"

namespace cohort::launcher {
namespace {

namespace fs = std::filesystem;
using elastic::GenerationEnd;
using elastic::WorkerFailure;
using elastic::World;

constexpr int kExitFailure = 1;

int SignalNumber(const std::string& name) {
  static const std::map<std::string, int> numbers = {
      {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT},   {"SIGHUP", SIGHUP},   {"SIGQUIT", SIGQUIT},
      {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGABRT", SIGABRT}, {"SIGALRM", SIGALRM},
      {"SIGCONT", SIGCONT}, {"SIGTSTP", SIGTSTP}};
  auto it = numbers.find(name);
  return it == numbers.end() ? 0 : it->second;
}

bool IsLoopbackName(const std::string& host) {
  return host.empty() || host == "localhost" || absl::StartsWith(host, "127.") || host == "::1";
}

// Fills ${host} ${rank} ${local_rank} ${role_name} ${generation} in the line prefix template.
std::string ExpandPrefix(const std::string& format, const std::string& host, int rank,
                         int local_rank, const std::string& role, int64_t generation) {
  return absl::StrReplaceAll(format, {{"${host}", host},
                                      {"${rank}", absl::StrCat(rank)},
                                      {"${local_rank}", absl::StrCat(local_rank)},
                                      {"${role_name}", role},
                                      {"${generation}", absl::StrCat(generation)}});
}

std::vector<std::string> WorkerCommand(const LaunchOptions& options, std::string* program) {
  std::vector<std::string> argv;
  if (options.no_python && !options.run_path) {
    argv.push_back(options.training_script);
    *program = options.training_script;
  } else {
    auto python = config::GetString("COHORT_PYTHON");
    std::string interpreter = python.ok() && !python->empty() ? *python : "python3";
    argv = {interpreter, "-u"};
    if (options.module) argv.push_back("-m");
    argv.push_back(options.training_script);
    *program = interpreter;
  }
  argv.insert(argv.end(), options.script_args.begin(), options.script_args.end());
  return argv;
}

// The variables torchrun sets for a worker, plus cohort's.
std::map<std::string, std::string> WorkerVariables(const LaunchOptions& options, const World& world,
                                                   int group_rank, int local_rank,
                                                   const std::string& master_addr, int master_port,
                                                   const std::string& job_token,
                                                   const std::string& host,
                                                   const std::string& error_file) {
  const elastic::NodeInfo& node = world.nodes[group_rank];
  int rank = world.RankOffset(group_rank) + local_rank;
  std::map<std::string, std::string> variables = {
      {"LOCAL_RANK", absl::StrCat(local_rank)},
      {"RANK", absl::StrCat(rank)},
      {"GROUP_RANK", absl::StrCat(group_rank)},
      {"ROLE_RANK", absl::StrCat(world.RoleRankOffset(group_rank) + local_rank)},
      {"ROLE_NAME", node.role},
      {"LOCAL_WORLD_SIZE", absl::StrCat(node.local_world_size)},
      {"WORLD_SIZE", absl::StrCat(world.world_size())},
      {"GROUP_WORLD_SIZE", absl::StrCat(world.nodes.size())},
      {"ROLE_WORLD_SIZE", absl::StrCat(world.RoleWorldSize(node.role))},
      {"MASTER_ADDR", master_addr},
      {"MASTER_PORT", absl::StrCat(master_port)},
      {"TORCHELASTIC_RESTART_COUNT", absl::StrCat(world.restart_count)},
      {"TORCHELASTIC_MAX_RESTARTS", absl::StrCat(options.max_restarts)},
      {"TORCHELASTIC_RUN_ID", options.rdzv_id},
      {"TORCHELASTIC_USE_AGENT_STORE", "False"},
      {"TORCHELASTIC_ERROR_FILE", error_file},
      {"COHORT_STORE_ADDR", world.worker_store},
      {"COHORT_JOB_TOKEN", job_token},
      {"COHORT_JOB_ID", options.rdzv_id},
      {"COHORT_HOST_ID", host},
      {"COHORT_GENERATION", absl::StrCat(world.generation)},
      {"COHORT_ON_FAILURE", options.on_failure},
  };
  return variables;
}

std::vector<std::string> MergeEnvironment(const std::map<std::string, std::string>& variables,
                                          int local_world_size) {
  std::map<std::string, std::string> environment = CurrentEnvironment();
  if (!environment.contains("NCCL_ASYNC_ERROR_HANDLING")) environment["NCCL_ASYNC_ERROR_HANDLING"] = "1";
  if (!environment.contains("OMP_NUM_THREADS") && local_world_size > 1) {
    environment["OMP_NUM_THREADS"] = "1";
  }
  for (const auto& [name, value] : variables) environment[name] = value;
  std::vector<std::string> entries;
  for (const auto& [name, value] : environment) entries.push_back(absl::StrCat(name, "=", value));
  return entries;
}

class Agent {
 public:
  explicit Agent(const LaunchOptions& options) : options_(options) {}

  int Run() {
    absl::Status setup = Setup();
    if (!setup.ok()) {
      std::fprintf(stderr, "cohortrun: %s\n", std::string(setup.message()).c_str());
      Shutdown(0);
      return kExitFailure;
    }
    int code = Loop();
    Shutdown(expected_acks_);
    return code;
  }

 private:
  absl::Status Setup() {
    // Signals arrive through a signalfd; they stay blocked in every thread we start.
    sigemptyset(&handled_);
    sigaddset(&handled_, SIGCHLD);
    for (const std::string& name : options_.signals_to_handle) {
      int number = SignalNumber(name);
      if (number != 0) sigaddset(&handled_, number);
    }
    if (::pthread_sigmask(SIG_BLOCK, &handled_, &original_mask_) != 0) {
      return absl::InternalError("cannot block signals");
    }
    // Before any thread starts: the guard is forked from a single-threaded process.
    COHORT_ASSIGN_OR_RETURN(guard_, GroupGuard::Start());
    signal_fd_.Reset(::signalfd(-1, &handled_, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd_.valid()) return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno)));
    ::signal(SIGPIPE, SIG_IGN);
    // Orphaned grandchildren come to us, so nothing becomes a zombie of init or stays behind.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);

    host_ = logging::HostName();
    node_id_ = absl::StrCat(host_, "-", ::getpid(), "-", crypto::RandomHex(3));
    auto token = config::GetString("COHORT_JOB_TOKEN");
    COHORT_RETURN_IF_ERROR(token.status());
    token_ = *token;
    if (options_.rdzv_backend == "etcd") {
      COHORT_RETURN_IF_ERROR(ConnectEtcd());
    } else {
      COHORT_RETURN_IF_ERROR(ConnectEmbedded());
    }
    if (address_.empty()) address_ = options_.local_addr;
    if (address_.empty()) address_ = client_->LocalAddressHint();
    if (address_.empty()) address_ = host_;

    // Logs and error files: --log-dir/<run id>_<random>/attempt_<n>/<local rank>/.
    std::string suffix = crypto::RandomHex(4);
    if (!options_.log_dir.empty()) {
      run_log_dir_ = absl::StrCat(options_.log_dir, "/", options_.rdzv_id, "_", suffix);
    } else {
      run_log_dir_ = absl::StrCat(fs::temp_directory_path().string(), "/cohortrun_", options_.rdzv_id,
                                  "_", suffix);
      temporary_log_dir_ = true;
    }
    std::error_code error;
    fs::create_directories(run_log_dir_, error);
    if (error) return absl::InternalError(absl::StrCat("cannot create ", run_log_dir_, ": ", error.message()));
    return absl::OkStatus();
  }

  // The embedded store: this agent runs it and the coordinator when it is the endpoint host.
  absl::Status ConnectEmbedded() {
    COHORT_ASSIGN_OR_RETURN(HostPort endpoint, ParseHostPort(options_.rdzv_endpoint));
    const bool loopback = IsLoopbackName(endpoint.host);
    if (token_.empty()) {
      if (options_.max_nodes == 1 && loopback) {
        token_ = crypto::RandomHex(16);  // one node: nobody else needs to know it
      } else {
        COHORT_LOG(WARN) << "COHORT_JOB_TOKEN is not set: the job's store accepts any client on "
                         << "the network; export the same secret on every node to authenticate";
      }
    }

    bool try_host;
    if (options_.settings.static_ranks) {
      try_host = options_.node_rank == 0;
    } else if (options_.is_host >= 0) {
      try_host = options_.is_host == 1;
    } else {
      try_host = IsLocalHost(endpoint.host);
    }
    const std::string listen_host = loopback ? "127.0.0.1" : "";
    if (try_host) {
      // The store keeps two connections per agent: a thousand agents pass the usual soft limit
      // of 1,024 descriptors.
      rlimit files = {};
      if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &files);
      }
      store::StoreServerOptions server_options;
      server_options.host = listen_host;
      server_options.port = endpoint.port;
      server_options.job_id = options_.rdzv_id;
      server_options.token = token_;
      auto server = store::StoreServer::Start(server_options);
      if (server.ok()) {
        server_ = std::move(*server);
      } else if (server.status().code() == absl::StatusCode::kAlreadyExists &&
                 options_.is_host != 1 && !options_.settings.static_ranks) {
        COHORT_LOG(INFO) << "another agent on this host runs the rendezvous store at "
                         << options_.rdzv_endpoint;
      } else {
        return absl::Status(server.status().code(),
                            absl::StrCat("cannot start the rendezvous store at ",
                                         options_.rdzv_endpoint, ": ", server.status().message()));
      }
    }
    std::string store_host = loopback ? "127.0.0.1" : endpoint.host;
    int store_port = endpoint.port;
    if (server_ != nullptr) {
      store_port = server_->port();
      elastic::CoordinatorOptions coordinator_options;
      coordinator_options.store_host = "127.0.0.1";
      coordinator_options.store_port = store_port;
      coordinator_options.job_id = options_.rdzv_id;
      coordinator_options.token = token_;
      coordinator_options.settings = options_.settings;
      coordinator_options.worker_store_listen_host = listen_host;
      coordinator_options.worker_store_public_host = store_host;
      coordinator_options.host = host_;
      COHORT_ASSIGN_OR_RETURN(coordinator_, elastic::Coordinator::Start(coordinator_options));
      if (!loopback) store_host = "127.0.0.1";
    }
    elastic::AgentClientOptions client_options;
    client_options.store_host = store_host;
    client_options.store_port = store_port;
    client_options.job_id = options_.rdzv_id;
    client_options.token = token_;
    client_options.settings = options_.settings;
    client_options.connect_timeout = options_.settings.join_timeout;
    COHORT_ASSIGN_OR_RETURN(client_, elastic::AgentClient::Connect(client_options, node_id_));

    if (options_.local_addr.empty() && server_ != nullptr && !loopback) address_ = endpoint.host;
    return absl::OkStatus();
  }

  // etcd: every agent is a candidate for the coordinator role; the job token, unless given,
  // is shared through etcd.
  absl::Status ConnectEtcd() {
    elastic::EtcdAgentOptions etcd_options;
    etcd_options.settings = options_.settings;
    etcd_options.job_id = options_.rdzv_id;
    etcd_options.node_id = node_id_;
    etcd_options.host = host_;
    etcd_options.campaign = true;
    etcd_options.coordinator.job_id = options_.rdzv_id;
    etcd_options.coordinator.token = token_;
    etcd_options.coordinator.settings = options_.settings;
    etcd_options.coordinator.worker_store_listen_host = "";
    etcd_options.coordinator.worker_store_public_host = options_.local_addr;  // empty: etcd's view
    etcd_options.coordinator.host = host_;
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<elastic::EtcdAgentBackend> backend,
                            elastic::EtcdAgentBackend::Connect(etcd_options));
    token_ = backend->job_token();
    COHORT_ASSIGN_OR_RETURN(client_, elastic::AgentClient::Start(std::move(backend),
                                                                 options_.settings, node_id_));
    return absl::OkStatus();
  }

  // Checks the signalfd without blocking. Returns the first handled signal other than SIGCHLD
  // (0 if none); a SIGCHLD sets `child_exited_`.
  int ReadSignals() {
    signalfd_siginfo info;
    int received = 0;
    while (::read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
      if (static_cast<int>(info.ssi_signo) == SIGCHLD) {
        child_exited_ = true;
      } else if (received == 0) {
        received = static_cast<int>(info.ssi_signo);
      }
    }
    return received;
  }

  int OnSignal(int signal_number) {
    std::fprintf(stderr, "cohortrun: received %s; forwarding it to the workers and stopping\n",
                 SignalName(signal_number).c_str());
    if (workers_ != nullptr) {
      workers_->Signal(signal_number);
      workers_->Stop(StopGrace());
    }
    absl::Status left = client_->Leave(absl::StrCat("its agent received ", SignalName(signal_number)));
    if (!left.ok()) {
      COHORT_LOG(WARN) << "could not tell the coordinator: " << left.message();
    }
    left_ = true;
    return 128 + signal_number;
  }

  absl::Duration StopGrace() {
    auto grace = config::GetDuration("COHORT_STOP_GRACE");
    return grace.ok() ? *grace : absl::Seconds(5);
  }

  int Loop() {
    while (true) {
      std::optional<ReservedPort> reserved;
      int master_port = options_.master_port;
      if (!options_.master_port_given) {
        auto port = ReservedPort::Reserve();
        if (!port.ok()) {
          std::fprintf(stderr, "cohortrun: %s\n", std::string(port.status().message()).c_str());
          return kExitFailure;
        }
        reserved = std::move(*port);
        master_port = reserved->port();
      }
      elastic::NodeInfo info;
      info.node_id = node_id_;
      info.host = host_;
      info.address = address_;
      info.master_port = master_port;
      info.local_world_size = options_.nproc_per_node;
      info.role = options_.role;
      info.node_rank = options_.node_rank;
      info.labels = options_.node_labels;
      int interrupted_by = 0;
      auto world = client_->Join(info, options_.settings.join_timeout + absl::Seconds(30),
                                 [&]() -> absl::Status {
                                   interrupted_by = ReadSignals();
                                   if (interrupted_by != 0) return absl::CancelledError("signal");
                                   return absl::OkStatus();
                                 });
      if (interrupted_by != 0) return OnSignal(interrupted_by);
      if (!world.ok()) {
        std::fprintf(stderr, "cohortrun: rendezvous failed on %s: %s\n", host_.c_str(),
                     std::string(world.status().message()).c_str());
        // The store's host waits until every agent turned away has read why.
        auto refused = client_->RefusedCount();
        if (refused.ok()) expected_acks_ = *refused;
        (void)client_->AcknowledgeEnd();
        return kExitFailure;
      }
      expected_acks_ = static_cast<int64_t>(world->nodes.size());
      auto outcome = RunGeneration(*world);
      if (!outcome.has_value()) continue;  // restart: join the next round
      return *outcome;
    }
  }

  // Runs this node's workers in `world` until the generation ends. Returns the exit code when
  // the job is over, nullopt to re-join.
  std::optional<int> RunGeneration(const World& world) {
    const int group_rank = world.GroupRank(node_id_);
    if (group_rank < 0) {
      std::fprintf(stderr, "cohortrun: generation %lld does not include this node\n",
                   static_cast<long long>(world.generation));
      return kExitFailure;
    }
    const elastic::NodeInfo& node = world.nodes[group_rank];
    std::string master_addr = options_.master_addr_given ? options_.master_addr : world.master_addr;
    int master_port = options_.master_port_given ? options_.master_port : world.master_port;
    COHORT_LOG(INFO) << "generation " << world.generation << ": group rank " << group_rank << " of "
                     << world.nodes.size() << ", ranks " << world.RankOffset(group_rank) << ".."
                     << world.RankOffset(group_rank) + node.local_world_size - 1 << " of "
                     << world.world_size() << ", master " << master_addr << ":" << master_port;

    std::string attempt_dir = absl::StrCat(run_log_dir_, "/attempt_", world.restart_count);
    std::error_code error;
    fs::remove_all(attempt_dir, error);  // a scale-up reuses the attempt number, as in torchrun
    std::string program;
    std::vector<std::string> argv = WorkerCommand(options_, &program);
    auto resolved = ResolveProgram(program);
    if (!resolved.ok()) {
      std::fprintf(stderr, "cohortrun: %s\n", std::string(resolved.status().message()).c_str());
      (void)client_->Leave("cannot start its workers");
      left_ = true;
      return kExitFailure;
    }
    // The workers' flight recorders dump here on a failure (COHORT_TRACE_DIR), unless the user
    // chose a folder.
    std::string trace_dir;
    if (!CurrentEnvironment().contains("COHORT_TRACE_DIR")) {
      trace_dir = absl::StrCat(attempt_dir, "/traces");
      fs::create_directories(trace_dir, error);
      if (error) {
        COHORT_LOG(WARN) << "cannot create " << trace_dir << ": " << error.message()
                         << "; the workers' flight recorders will not dump";
        trace_dir.clear();
      }
    }
    std::vector<WorkerSpec> specs;
    for (int local_rank = 0; local_rank < node.local_world_size; ++local_rank) {
      std::string rank_dir = absl::StrCat(attempt_dir, "/", local_rank);
      fs::create_directories(rank_dir, error);
      if (error) {
        std::fprintf(stderr, "cohortrun: cannot create %s: %s\n", rank_dir.c_str(), error.message().c_str());
        return kExitFailure;
      }
      WorkerSpec spec;
      spec.local_rank = local_rank;
      spec.rank = world.RankOffset(group_rank) + local_rank;
      spec.program = *resolved;
      spec.argv = argv;
      std::string error_file = absl::StrCat(rank_dir, "/error.json");
      auto variables = WorkerVariables(options_, world, group_rank, local_rank, master_addr,
                                       master_port, token_, host_, error_file);
      if (!trace_dir.empty()) variables["COHORT_TRACE_DIR"] = trace_dir;
      spec.env = MergeEnvironment(variables, node.local_world_size);
      spec.prefix = ExpandPrefix(options_.log_line_prefix_template, host_, spec.rank, local_rank,
                                 node.role, world.generation);
      int redirect = options_.redirects.For(local_rank);
      int tee = options_.tee.For(local_rank);
      bool shown = options_.local_ranks_filter.empty() ||
                   std::find(options_.local_ranks_filter.begin(), options_.local_ranks_filter.end(),
                             local_rank) != options_.local_ranks_filter.end();
      // A rank filtered off the console still has its output in its log files.
      if (!shown) redirect = 3;
      if ((redirect | tee) & 1) spec.stdout_file = rank_dir + "/stdout.log";
      if ((redirect | tee) & 2) spec.stderr_file = rank_dir + "/stderr.log";
      spec.stdout_console = !(redirect & 1);
      spec.stderr_console = !(redirect & 2);
      specs.push_back(std::move(spec));
      if (!shown || redirect != 0 || tee != 0) keep_log_dir_ = true;
    }
    std::map<int, std::string> error_files;
    for (const WorkerSpec& spec : specs) {
      error_files[spec.local_rank] = absl::StrCat(attempt_dir, "/", spec.local_rank, "/error.json");
    }
    auto started = WorkerGroup::Start(std::move(specs), original_mask_, guard_.get());
    if (!started.ok()) {
      std::fprintf(stderr, "cohortrun: cannot start workers: %s\n",
                   std::string(started.status().message()).c_str());
      (void)client_->Leave("cannot start its workers");
      left_ = true;
      return kExitFailure;
    }
    workers_ = std::move(*started);

    const bool shrink = options_.settings.shrink_on_failure;
    // This agent's host runs the rendezvous store: its beats cannot be cut off from it.
    const bool beside_coordinator = server_ != nullptr;
    // A node cut off from the coordinator this long has been declared lost (the coordinator
    // allows heartbeat_timeout, and checks a few times per interval).
    const absl::Duration cut_off_after =
        options_.settings.heartbeat_timeout + options_.settings.heartbeat_interval;
    std::vector<WorkerFailure> reported_failures;  // every failure so far, as last reported
    bool failures_reported = false;
    bool done_reported = false;
    bool all_ok = true;
    const int monitor_ms = std::max(1, static_cast<int>(options_.monitor_interval_seconds * 1000));
    while (true) {
      std::vector<int> output_fds = workers_->OutputFds();
      bool idle = workers_->AllExited() && output_fds.empty();
      if (!idle) {
        std::vector<pollfd> fds = {pollfd{signal_fd_.get(), POLLIN, 0}};
        for (int fd : output_fds) fds.push_back(pollfd{fd, POLLIN, 0});
        ::poll(fds.data(), fds.size(), monitor_ms);
        for (size_t i = 1; i < fds.size(); ++i) {
          if (fds[i].revents != 0) workers_->Pump(fds[i].fd);
        }
      }
      int received = ReadSignals();
      if (received != 0) {
        int code = OnSignal(received);
        workers_.reset();
        return code;
      }
      std::vector<WorkerFailure> failures;
      for (const WorkerExit& exit : workers_->Reap()) {
        if (exit.exit_code == 0) continue;
        all_ok = false;
        WorkerFailure failure;
        failure.host = host_;
        failure.node_id = node_id_;
        failure.rank = exit.rank;
        failure.local_rank = exit.local_rank;
        failure.pid = exit.pid;
        failure.exit_code = exit.exit_code;
        failure.time_ms = exit.time_ms;
        FillFromErrorFile(error_files[exit.local_rank], &failure);
        failures.push_back(failure);
      }
      if (shrink && !beside_coordinator && absl::Now() - client_->last_beat() > cut_off_after) {
        std::fprintf(stderr,
                     "cohortrun: %s has had no heartbeat through to %s for %s: the coordinator "
                     "has removed this node from the job (--on-failure shrink) and the others go "
                     "on without it; stopping its workers. Check the network between this node "
                     "and the rendezvous endpoint\n",
                     host_.c_str(), client_->backend().Describe().c_str(),
                     absl::FormatDuration(absl::Trunc(absl::Now() - client_->last_beat(),
                                                      absl::Milliseconds(100)))
                         .c_str());
        workers_->Stop(StopGrace());
        workers_->PumpAll();
        workers_.reset();
        keep_log_dir_ = true;
        return kExitFailure;
      }
      // Restart: the first failures are reported and every other worker stops (the coordinator
      // ends the generation everywhere). Shrink: each new failure is reported (the list so
      // far), and the other workers go on.
      if (!failures.empty() && (shrink || !failures_reported)) {
        failures_reported = true;
        for (const WorkerFailure& failure : failures) {
          std::fprintf(stderr, "cohortrun: worker rank %d (local rank %d, pid %d) on %s %s%s\n",
                       failure.rank, failure.local_rank, failure.pid, host_.c_str(),
                       failure.exit_code < 0
                           ? absl::StrCat("was killed by ", SignalName(-failure.exit_code)).c_str()
                           : absl::StrCat("exited with code ", failure.exit_code).c_str(),
                       shrink ? "; --on-failure shrink: the job goes on without it" : "");
        }
        reported_failures.insert(reported_failures.end(), failures.begin(), failures.end());
        absl::Status reported = client_->ReportFailures(world.generation, reported_failures);
        if (!reported.ok()) return LostStore(reported);
        if (!shrink) workers_->Stop(StopGrace());
      }
      // With shrink, the workers that failed are out of the job: this node is done once the
      // others exited with 0.
      if (workers_->AllExited() && (all_ok || shrink) && !done_reported) {
        done_reported = true;
        absl::Status reported = client_->ReportDone(world.generation);
        if (!reported.ok()) return LostStore(reported);
      }
      absl::Status health = client_->health();
      if (!health.ok()) return LostStore(health);
      idle = workers_->AllExited() && workers_->OutputFds().empty();
      auto end = client_->PollEnd(world.generation,
                                  idle ? absl::Milliseconds(monitor_ms) : absl::ZeroDuration());
      if (!end.ok()) return LostStore(end.status());
      if (!end->has_value()) continue;
      const GenerationEnd& how = **end;
      ShowTraces(trace_dir);
      if (how.readers > 0) expected_acks_ = how.readers;  // lost nodes will not read it
      if (!workers_->AllExited()) workers_->Stop(StopGrace());
      workers_->PumpAll();
      workers_.reset();
      switch (how.kind) {
        case GenerationEnd::Kind::kRestart:
          std::fprintf(stderr, "cohortrun: generation %lld ended on %s: %s; restarting%s\n",
                       static_cast<long long>(world.generation), host_.c_str(), how.reason.c_str(),
                       how.counted ? absl::StrCat(" (restart ", world.restart_count + 1, " of ",
                                                  options_.max_restarts, ")").c_str()
                                   : "");
          return std::nullopt;
        case GenerationEnd::Kind::kSucceeded:
          if (shrink && how.reason != "all workers exited with code 0") {
            std::fprintf(stderr, "cohortrun: the job succeeded: %s\n", how.reason.c_str());
          }
          (void)client_->AcknowledgeEnd();
          return 0;
        case GenerationEnd::Kind::kFailed: {
          auto all = client_->Failures(world.generation);
          std::string title = absl::StrCat(options_.training_script, " FAILED");
          std::string summary = FormatSummary(title, all.ok() ? *all : std::vector<WorkerFailure>(),
                                              how.reason);
          std::fprintf(stderr, "%s", summary.c_str());
          keep_log_dir_ = true;
          (void)client_->AcknowledgeEnd();
          return kExitFailure;
        }
      }
    }
  }

  // Names the folder where this node's workers dumped their flight recorders, if any did, and
  // keeps the log folder that holds it.
  void ShowTraces(const std::string& trace_dir) {
    std::error_code error;
    if (trace_dir.empty() || fs::is_empty(trace_dir, error) || error) return;
    keep_log_dir_ = true;
    std::fprintf(stderr,
                 "cohortrun: the flight recorders of %s's workers dumped into %s; `cohort-trace "
                 "%s` says where each rank stopped\n",
                 host_.c_str(), trace_dir.c_str(), trace_dir.c_str());
  }

  int LostStore(const absl::Status& status) {
    std::fprintf(stderr, "cohortrun: %s; stopping this node's workers\n",
                 std::string(status.message()).c_str());
    if (workers_ != nullptr) workers_->Stop(StopGrace());
    workers_.reset();
    return kExitFailure;
  }

  void Shutdown(int64_t expected_acks) {
    // The coordinator's agent (on etcd, whichever holds the role now) stays until the others
    // read the job's end: from its store, or from etcd, which it then clears of the job.
    const bool coordinates =
        client_ != nullptr && (server_ != nullptr || client_->backend().RunsCoordinator());
    if (coordinates) {
      Deadline deadline = Deadline::In(expected_acks > 1 ? options_.settings.close_timeout
                                                         : absl::Milliseconds(200));
      while (!deadline.Expired()) {
        auto acks = client_->AcknowledgedCount();
        if (!acks.ok() || *acks >= std::max<int64_t>(expected_acks, 1)) break;
        ::usleep(10'000);
      }
      absl::Status removed = client_->backend().RemoveJobKeys();  // only once the job ended
      if (!removed.ok()) {
        COHORT_LOG(WARN) << "could not remove the job's keys: " << removed.message();
      }
    }
    if (client_ != nullptr) client_->Close();
    client_.reset();
    if (coordinator_ != nullptr) coordinator_->RequestStop();
    if (server_ != nullptr) server_->Stop();  // the coordinator's calls fail: it stops at once
    coordinator_.reset();
    server_.reset();
    if (temporary_log_dir_ && !keep_log_dir_ && !run_log_dir_.empty()) {
      std::error_code error;
      fs::remove_all(run_log_dir_, error);
    }
    workers_.reset();
    guard_.reset();
    ::pthread_sigmask(SIG_SETMASK, &original_mask_, nullptr);
  }

  const LaunchOptions& options_;
  sigset_t handled_;
  sigset_t original_mask_;
  Fd signal_fd_;
  bool child_exited_ = false;
  std::string host_;
  std::string node_id_;
  std::string token_;
  std::string address_;
  std::string run_log_dir_;
  bool temporary_log_dir_ = false;
  bool keep_log_dir_ = false;
  bool left_ = false;
  int64_t expected_acks_ = 0;
  std::unique_ptr<store::StoreServer> server_;
  std::unique_ptr<elastic::Coordinator> coordinator_;
  std::unique_ptr<elastic::AgentClient> client_;
  std::unique_ptr<GroupGuard> guard_;
  std::unique_ptr<WorkerGroup> workers_;
};

}  // namespace

absl::StatusOr<ReservedPort> ReservedPort::Reserve(int port) {
  ReservedPort reserved;
  reserved.fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!reserved.fd_.valid()) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  int one = 1;
  ::setsockopt(reserved.fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(reserved.fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot reserve a port for MASTER_PORT: ", std::strerror(errno)));
  }
  COHORT_ASSIGN_OR_RETURN(reserved.port_, LocalPort(reserved.fd_.get()));
  return reserved;
}

bool IsLocalHost(const std::string& host) {
  if (IsLoopbackName(host)) return true;
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) == 0 && host == name) return true;
  std::vector<std::string> local;
  ifaddrs* addresses = nullptr;
  if (::getifaddrs(&addresses) == 0) {
    for (ifaddrs* entry = addresses; entry != nullptr; entry = entry->ifa_next) {
      if (entry->ifa_addr == nullptr) continue;
      char text[INET6_ADDRSTRLEN] = {};
      if (entry->ifa_addr->sa_family == AF_INET) {
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(entry->ifa_addr)->sin_addr, text, sizeof(text));
      } else if (entry->ifa_addr->sa_family == AF_INET6) {
        ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(entry->ifa_addr)->sin6_addr, text, sizeof(text));
      } else {
        continue;
      }
      local.push_back(text);
    }
    ::freeifaddrs(addresses);
  }
  for (const std::string& address : local) {
    if (address == host) return true;
  }
  // A name: resolve it and compare its addresses with ours.
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* resolved = nullptr;
  bool found = false;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &resolved) == 0) {
    for (addrinfo* info = resolved; info != nullptr && !found; info = info->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      if (info->ai_family == AF_INET) {
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(info->ai_addr)->sin_addr, text, sizeof(text));
      } else if (info->ai_family == AF_INET6) {
        ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(info->ai_addr)->sin6_addr, text, sizeof(text));
      }
      for (const std::string& address : local) found |= address == text;
      found |= absl::StartsWith(text, "127.");
    }
    ::freeaddrinfo(resolved);
  }
  return found;
}

std::string DescribeDryRun(const LaunchOptions& options) {
  std::string out = "cohortrun --dry-run\n";
  absl::StrAppend(&out, "scheduler environment: ", options.scheduler, "\n");
  absl::StrAppend(&out, "settings (value  <- source):\n");
  auto line = [&](const std::string& name, const std::string& value) {
    auto it = options.sources.find(name);
    std::string source = it == options.sources.end() ? "derived" : it->second;
    absl::StrAppend(&out, "  ", name, std::string(name.size() < 26 ? 26 - name.size() : 1, ' '), value,
                    "  <- ", source, "\n");
  };
  line("nnodes", absl::StrCat(options.min_nodes, ":", options.max_nodes));
  line("nproc-per-node", absl::StrCat(options.nproc_per_node, " (", options.nproc_per_node_text, ")"));
  line("node-rank", options.node_rank < 0 ? "(assigned by rendezvous)" : absl::StrCat(options.node_rank));
  line("rdzv-backend", options.rdzv_backend);
  line("rdzv-endpoint", options.rdzv_endpoint);
  line("rdzv-id", options.rdzv_id);
  line("rdzv-conf", options.rdzv_conf);
  line("max-restarts", absl::StrCat(options.max_restarts));
  line("on-failure", options.on_failure);
  line("monitor-interval", absl::StrCat(options.monitor_interval_seconds, "s"));
  line("role", options.role);
  line("master-addr", options.master_addr_given ? options.master_addr : "(group rank 0's address)");
  line("master-port", options.master_port_given ? absl::StrCat(options.master_port) : "(reserved on group rank 0)");
  line("log-dir", options.log_dir.empty() ? "(temporary)" : options.log_dir);
  std::vector<std::string> labels;
  for (const auto& [key, value] : options.node_labels) labels.push_back(absl::StrCat(key, "=", value));
  line("node-label", absl::StrJoin(labels, ","));
  const auto& s = options.settings;
  absl::StrAppend(&out, "rendezvous: join_timeout=", absl::FormatDuration(s.join_timeout),
                  " last_call_timeout=", absl::FormatDuration(s.last_call_timeout),
                  " heartbeat_interval=", absl::FormatDuration(s.heartbeat_interval),
                  " heartbeat_timeout=", absl::FormatDuration(s.heartbeat_timeout),
                  " read_timeout=", absl::FormatDuration(s.read_timeout), "\n");
  if (options.rdzv_backend == "etcd") {
    absl::StrAppend(&out, "this node (", logging::HostName(), ") joins the rendezvous in etcd at ",
                    absl::StrJoin(options.settings.etcd.endpoints, ", "), " (keys under ",
                    elastic::EtcdJobPrefix(options.settings, options.rdzv_id),
                    "); any node may take the coordinator role\n");
  } else {
    auto endpoint = ParseHostPort(options.rdzv_endpoint);
    bool hosts = options.settings.static_ranks ? options.node_rank == 0
                 : options.is_host >= 0        ? options.is_host == 1
                                               : (endpoint.ok() && IsLocalHost(endpoint->host));
    absl::StrAppend(&out, "this node (", logging::HostName(), ") ",
                    hosts ? "runs the rendezvous store and coordinator"
                          : "joins the store at the endpoint",
                    "\n");
  }
  std::string program;
  std::vector<std::string> argv = WorkerCommand(options, &program);
  absl::StrAppend(&out, "worker command: ", absl::StrJoin(argv, " "), "\n");
  int group_rank = std::max(options.node_rank, 0);
  absl::StrAppend(&out, "worker environment (if this node is group rank ", group_rank, " of ",
                  options.max_nodes, " nodes of ", options.nproc_per_node, " workers each):\n");
  World world;
  world.generation = 1;
  for (int i = 0; i < options.max_nodes; ++i) {
    elastic::NodeInfo node;
    node.node_id = absl::StrCat(i);
    node.local_world_size = options.nproc_per_node;
    node.role = options.role;
    world.nodes.push_back(node);
  }
  world.worker_store = "(generation's store)";
  group_rank = std::min(group_rank, options.max_nodes - 1);
  for (int local_rank = 0; local_rank < options.nproc_per_node; ++local_rank) {
    auto variables = WorkerVariables(options, world, group_rank, local_rank,
                                     options.master_addr_given ? options.master_addr : "(rank 0's address)",
                                     options.master_port, "(job token)", logging::HostName(),
                                     absl::StrCat("<log dir>/attempt_0/", local_rank, "/error.json"));
    if (!options.master_port_given) variables["MASTER_PORT"] = "(reserved port)";
    if (!CurrentEnvironment().contains("COHORT_TRACE_DIR")) {
      variables["COHORT_TRACE_DIR"] = "<log dir>/attempt_0/traces";
    }
    std::vector<std::string> entries;
    for (const auto& [name, value] : variables) entries.push_back(absl::StrCat(name, "=", value));
    absl::StrAppend(&out, "  local rank ", local_rank, ": ", absl::StrJoin(entries, " "), "\n");
  }
  return out;
}

int RunAgent(const LaunchOptions& options) { return Agent(options).Run(); }

}  // namespace cohort::launcher
