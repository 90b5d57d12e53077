// The elastic coordinator: runs inside one agent, on its own thread, over a backend
// (backend.h): the embedded store on the rendezvous endpoint host, or etcd, where the agent
// holding the leader lease runs it. It closes rendezvous rounds (min:max nodes, join and
// last-call timeouts), assigns group ranks, publishes each generation's world with a fresh
// store for its workers, and ends a generation on a worker failure, a lost or departed node, or
// a waiting node that can scale the job up. It acts on events (a join, a loss, a report), so a
// round of N nodes costs O(N), not O(N^2). On etcd it saves its state at every transition, and
// a coordinator elected after the last one's host died recovers it and ends the running
// generation (its workers' store died with that host), so the survivors restart without it.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "elastic/rendezvous.h"

namespace cohort::store {
class StoreServer;
}

namespace cohort::elastic {

class CoordinatorBackend;

struct CoordinatorOptions {
  // The job's store (normally in the same process), for Start() without a backend.
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  std::string job_id;
  std::string token;
  RendezvousSettings settings;
  // Each generation gets a fresh store for its workers (COHORT_STORE_ADDR), so a restarted
  // generation never reads the keys of the last one and old workers lose their store. It
  // listens on `worker_store_listen_host` and is published as `worker_store_public_host`.
  std::string worker_store_listen_host;
  std::string worker_store_public_host = "127.0.0.1";
  // This host's name, as the coordinator's state records it.
  std::string host;
};

class Coordinator {
 public:
  // Connects to the embedded store and starts the "cohort-coord" thread.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(const CoordinatorOptions& options);
  // Starts the "cohort-coord" thread over `backend`.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(
      const CoordinatorOptions& options, std::unique_ptr<CoordinatorBackend> backend);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Tells the thread to stop without waiting for it: call before stopping the store, so the
  // store going away is not reported as an error.
  void RequestStop();
  // Stops the thread. Stopping the store first makes this immediate.
  void Stop();
  // Why the coordinator stopped on its own (the store went away, it lost the leader lease), or
  // OK while it runs.
  absl::Status status() const;
  bool stopped() const;

 private:
  class Loop;
  explicit Coordinator(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace cohort::elastic
