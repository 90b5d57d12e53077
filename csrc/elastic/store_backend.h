// The rendezvous over cohort's embedded store (--rdzv-backend c10d and static): the store and
// the coordinator run in the agent on the endpoint host; the keys are in rendezvous.h (keys).
//
// The coordinator follows the agents' messages under "in/" with the store's changes op (one
// call per batch of messages, in arrival order) and their heartbeats under "hb/" the same way
// every quarter heartbeat interval, so its cost grows with what happens, not with N. An agent
// keeps a second connection for its heartbeat thread, which parks a get on the key it waits
// for (its admission, or its generation's end) between beats: nothing polls.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "elastic/backend.h"
#include "elastic/store/store_client.h"

namespace cohort::elastic {

class StoreCoordinatorBackend final : public CoordinatorBackend {
 public:
  StoreCoordinatorBackend(std::unique_ptr<store::StoreClient> client, RendezvousSettings settings);

  absl::StatusOr<std::optional<CoordinatorState>> Recover(std::vector<AgentEvent>*) override {
    return std::optional<CoordinatorState>();  // the store lives and dies with the coordinator
  }
  absl::StatusOr<std::vector<AgentEvent>> Poll(absl::Duration wait) override;
  absl::Status PublishWorld(const World& world, const CoordinatorState& state) override;
  absl::Status PublishEnd(int64_t generation, const GenerationEnd& end,
                          const CoordinatorState& state) override;
  absl::Status Refuse(const std::vector<std::string>& node_ids, const std::string& why) override;

 private:
  struct Tracked {
    absl::Time last_beat;
    std::string host;
  };
  absl::Status CheckHeartbeats(absl::Time now, std::vector<AgentEvent>* events);

  std::unique_ptr<store::StoreClient> client_;
  const RendezvousSettings settings_;
  int64_t inbox_revision_ = 0;
  int64_t heartbeat_revision_ = 0;
  absl::Time next_heartbeat_check_ = absl::InfinitePast();
  std::map<std::string, Tracked> tracked_;  // nodes that joined, until lost
};

class StoreAgentBackend final : public AgentBackend {
 public:
  // Connects twice (calls, and the heartbeat thread's waits), retrying until `connect_timeout`.
  static absl::StatusOr<std::unique_ptr<StoreAgentBackend>> Connect(
      const store::StoreClientOptions& options, const std::string& node_id,
      const RendezvousSettings& settings);

  absl::Status Beat() override;
  absl::StatusOr<News> WaitForNews(const Interest& interest, Deadline deadline) override;
  void Interrupt() override { waiter_->Shutdown(); }
  absl::Status Join(const NodeInfo& info) override;
  absl::StatusOr<World> FetchWorld(int64_t generation) override;
  absl::Status ReportFailures(int64_t generation,
                              const std::vector<WorkerFailure>& failures) override;
  absl::Status ReportDone(int64_t generation) override;
  absl::Status Leave(const std::string& reason) override;
  absl::StatusOr<std::vector<WorkerFailure>> Failures(int64_t generation) override;
  absl::StatusOr<int64_t> AcknowledgeEnd() override;
  absl::StatusOr<int64_t> AcknowledgedCount() override;
  absl::StatusOr<int64_t> RefusedCount() override;
  std::string LocalAddressHint() override { return client_->LocalAddressHint(); }
  std::string Describe() const override;

 private:
  StoreAgentBackend(std::unique_ptr<store::StoreClient> client,
                    std::unique_ptr<store::StoreClient> waiter, std::string node_id,
                    RendezvousSettings settings);

  std::unique_ptr<store::StoreClient> client_;
  std::unique_ptr<store::StoreClient> waiter_;  // the heartbeat thread's
  const std::string node_id_;
  const RendezvousSettings settings_;
};

}  // namespace cohort::elastic
