#include "support/etcd_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/clock.h"
#include "common/socket.h"
#include "common/status.h"
#include "elastic/etcd/etcd_client.h"
#include "nlohmann/json.hpp"

namespace cohort::testing {
namespace {

absl::StatusOr<int> FreeLoopbackPort() {
  COHORT_ASSIGN_OR_RETURN(Fd listening, ListenTcp("127.0.0.1", 0));
  return LocalPort(listening.get());
}

absl::StatusOr<std::string> RunCommand(const std::string& command) {
  FILE* pipe = ::popen(("(" + command + ") 2>&1").c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(absl::StrCat("cannot run ", command));
  std::string output;
  char buffer[4096];
  size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, got);
  int status = ::pclose(pipe);
  if (status != 0) {
    return absl::InternalError(absl::StrCat("`", command, "` failed (", status, "): ", output));
  }
  return output;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::Start(const EtcdClusterOptions& options) {
  auto cluster = std::unique_ptr<EtcdCluster>(new EtcdCluster());
  char directory[] = "/tmp/cohort-etcd-XXXXXX";
  if (::mkdtemp(directory) == nullptr) return absl::InternalError("mkdtemp failed");
  cluster->directory_ = directory;
  cluster->tls_ = options.tls;
  COHORT_RETURN_IF_ERROR(cluster->StartMembers(options));
  COHORT_RETURN_IF_ERROR(cluster->WaitUntilHealthy());
  if (options.auth) COHORT_RETURN_IF_ERROR(cluster->EnableAuth());
  return cluster;
}

absl::Status EtcdCluster::StartMembers(const EtcdClusterOptions& options) {
  const std::string scheme = options.tls ? "https" : "http";
  if (options.tls) {
    // A throwaway CA and one certificate for 127.0.0.1 that every member serves.
    const std::string& d = directory_;
    COHORT_RETURN_IF_ERROR(
        RunCommand(absl::StrCat(
                       "cd ", d, " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
                       " -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=cohort-test-ca && "
                       "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                       "-keyout server.key -out server.csr -subj /CN=localhost && "
                       "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext && "
                       "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                       "-out server.pem -days 1 -extfile ext"))
            .status());
    ca_file_ = d + "/ca.pem";
  }
  std::vector<int> client_ports, peer_ports;
  std::vector<std::string> initial;
  for (int i = 0; i < options.members; ++i) {
    COHORT_ASSIGN_OR_RETURN(int client_port, FreeLoopbackPort());
    COHORT_ASSIGN_OR_RETURN(int peer_port, FreeLoopbackPort());
    client_ports.push_back(client_port);
    peer_ports.push_back(peer_port);
    initial.push_back(absl::StrCat("m", i, "=http://127.0.0.1:", peer_port));
    endpoints_.push_back(absl::StrCat(scheme, "://127.0.0.1:", client_port));
  }
  const std::string cluster = absl::StrJoin(initial, ",");
  for (int i = 0; i < options.members; ++i) {
    std::vector<std::string> args = {
        "etcd",
        absl::StrCat("--name=m", i),
        absl::StrCat("--data-dir=", directory_, "/m", i),
        absl::StrCat("--listen-client-urls=", endpoints_[i]),
        absl::StrCat("--advertise-client-urls=", endpoints_[i]),
        absl::StrCat("--listen-peer-urls=http://127.0.0.1:", peer_ports[i]),
        absl::StrCat("--initial-advertise-peer-urls=http://127.0.0.1:", peer_ports[i]),
        absl::StrCat("--initial-cluster=", cluster),
        absl::StrCat("--initial-cluster-token=cohort-test-", ::getpid()),
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-level=warn",
    };
    if (options.tls) {
      args.push_back(absl::StrCat("--cert-file=", directory_, "/server.pem"));
      args.push_back(absl::StrCat("--key-file=", directory_, "/server.key"));
    }
    std::string log = absl::StrCat(directory_, "/m", i, ".log");
    pid_t pid = ::fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execvp("etcd", argv.data());
      std::fprintf(stderr, "cannot run etcd (install etcd-server: scripts/bootstrap)\n");
      ::_exit(127);
    }
    pids_.push_back(pid);
  }
  return absl::OkStatus();
}

absl::Status EtcdCluster::WaitUntilHealthy() const {
  Deadline deadline = Deadline::In(absl::Seconds(15));
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    while (true) {
      int status = 0;
      if (::waitpid(pids_[i], &status, WNOHANG) == pids_[i]) {
        auto log = RunCommand(absl::StrCat("tail -20 ", directory_, "/m", i, ".log"));
        return absl::InternalError(absl::StrCat("etcd member ", i, " exited at start: ",
                                                log.ok() ? *log : std::string()));
      }
      etcd::ClientOptions options;
      options.endpoints = {endpoints_[i]};
      options.ca_file = ca_file_;
      options.request_timeout = absl::Seconds(2);
      auto client = etcd::Client::Connect(options);
      // A member answers before the cluster has a leader; a read needs one.
      if (client.ok() && (*client)->Range("/health-check").ok()) break;
      if (deadline.Expired()) {
        return absl::DeadlineExceededError(absl::StrCat("etcd member ", i, " at ", endpoints_[i],
                                                        " did not become healthy in 15 s"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> EtcdCluster::Etcdctl(const std::string& arguments) const {
  std::vector<std::string> live;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    if (pids_[i] > 0) live.push_back(endpoints_[i]);
  }
  std::string command = absl::StrCat("ETCDCTL_API=3 etcdctl --endpoints=", absl::StrJoin(live, ","));
  if (tls_) absl::StrAppend(&command, " --cacert=", ca_file_);
  if (auth_) absl::StrAppend(&command, " --user=root:rootpw");
  absl::StrAppend(&command, " ", arguments);
  return RunCommand(command);
}

absl::Status EtcdCluster::EnableAuth() {
  for (const char* step :
       {"user add root:rootpw", "user grant-role root root", "user add cohort:cohortpw",
        "role add cohort", "role grant-permission cohort --prefix=true readwrite /cohort/",
        "user grant-role cohort cohort", "auth enable"}) {
    COHORT_RETURN_IF_ERROR(Etcdctl(step).status());
  }
  auth_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int> EtcdCluster::Leader() const {
  COHORT_ASSIGN_OR_RETURN(std::string output, Etcdctl("endpoint status -w json"));
  auto statuses = nlohmann::json::parse(output, nullptr, false);
  if (!statuses.is_array()) return absl::InternalError(absl::StrCat("etcdctl said: ", output));
  for (const auto& entry : statuses) {
    const auto& status = entry["Status"];
    if (status["header"]["member_id"] != status["leader"]) continue;
    std::string endpoint = entry["Endpoint"].get<std::string>();
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      if (endpoints_[i] == endpoint) return static_cast<int>(i);
    }
  }
  return absl::NotFoundError(absl::StrCat("no live member leads: ", output));
}

void EtcdCluster::Kill(int index) {
  if (pids_[index] <= 0) return;
  ::kill(pids_[index], SIGKILL);
  ::waitpid(pids_[index], nullptr, 0);
  pids_[index] = -1;
}

std::string EtcdCluster::endpoints_joined() const { return absl::StrJoin(endpoints_, ","); }

EtcdCluster::~EtcdCluster() {
  for (size_t i = 0; i < pids_.size(); ++i) Kill(static_cast<int>(i));
  std::error_code error;
  if (!directory_.empty()) std::filesystem::remove_all(directory_, error);
}

}  // namespace cohort::testing
