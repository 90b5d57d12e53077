// An etcd cluster for tests: Debian's etcd (scripts/bootstrap installs etcd-server), one or
// three members on loopback ports picked here, data under a fresh folder in /tmp. Members die
// with the test process (a parent-death signal) and the destructor kills them and removes the
// data, also when the test fails. Optionally with TLS (a CA and a server certificate made with
// openssl) and with etcd's authentication (a root user and a "cohort" user that may use
// /cohort/).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort::testing {

struct EtcdClusterOptions {
  int members = 1;
  bool tls = false;
  // Users root (password "rootpw") and cohort (password "cohortpw", read-write on /cohort/).
  bool auth = false;
};

class EtcdCluster {
 public:
  // Starts the members and waits until every one answers (10 s at most).
  static absl::StatusOr<std::unique_ptr<EtcdCluster>> Start(const EtcdClusterOptions& options);
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Client URLs, one per member.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  std::string endpoints_joined() const;
  // The CA bundle that signed the members' certificates (tls).
  const std::string& ca_file() const { return ca_file_; }
  // SIGKILLs member `index` (its data stays until the destructor).
  void Kill(int index);
  bool alive(int index) const { return pids_[index] > 0; }
  // The member that leads the cluster now, asked of the live members.
  absl::StatusOr<int> Leader() const;
  // Runs etcdctl against the live members; returns its output.
  absl::StatusOr<std::string> Etcdctl(const std::string& arguments) const;

 private:
  EtcdCluster() = default;
  absl::Status StartMembers(const EtcdClusterOptions& options);
  absl::Status WaitUntilHealthy() const;
  absl::Status EnableAuth();

  std::string directory_;
  std::string ca_file_;
  std::vector<std::string> endpoints_;
  std::vector<pid_t> pids_;
  bool tls_ = false;
  bool auth_ = false;
};

}  // namespace cohort::testing
