// The elastic coordinator: runs on the rendezvous endpoint host, inside that host's agent, on
// its own thread over the job's store. It closes rendezvous rounds (min:max nodes, join and
// last-call timeouts), assigns group ranks, publishes each generation's world, watches the
// agents' heartbeats, and ends a generation on a worker failure, a lost or departed node, or a
// waiting node that can scale the job up. Agents talk to it only through the store
// (agent_client.h); the keys are in rendezvous.h.
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

struct CoordinatorOptions {
  // The job's store (normally in the same process).
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
};

class Coordinator {
 public:
  // Connects to the store and starts the "cohort-coord" thread.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(const CoordinatorOptions& options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Tells the thread to stop without waiting for it: call before stopping the store, so the
  // store going away is not reported as an error.
  void RequestStop();
  // Stops the thread. Stopping the store first makes this immediate.
  void Stop();
  // Why the coordinator stopped on its own (the store went away), or OK.
  absl::Status status() const;

 private:
  class Loop;
  explicit Coordinator(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace cohort::elastic
