// An in-process Bootstrap over a shared map, for tests that run ranks as threads.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/bootstrap.h"

namespace cohort {

class InMemoryBootstrap final : public Bootstrap {
 public:
  // Ranks that share `state` see each other's keys.
  struct State {
    absl::Mutex mutex;
    std::map<std::string, std::string> values ABSL_GUARDED_BY(mutex);
  };
  explicit InMemoryBootstrap(std::shared_ptr<State> state) : state_(std::move(state)) {}

  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  absl::StatusOr<std::string> CompareSet(const std::string& key, const std::string& expected,
                                         const std::string& desired) override;
  std::string LocalAddressHint() override { return "127.0.0.1"; }

 private:
  std::shared_ptr<State> state_;
};

}  // namespace cohort
