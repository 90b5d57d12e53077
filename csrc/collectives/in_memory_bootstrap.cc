#include "collectives/in_memory_bootstrap.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort {

absl::Status InMemoryBootstrap::Set(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&state_->mutex);
  state_->values[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::string> InMemoryBootstrap::Get(const std::string& key,
                                                   absl::Duration timeout) {
  absl::Status waited = Wait({key}, timeout);
  if (!waited.ok()) return waited;
  absl::MutexLock lock(&state_->mutex);
  return state_->values[key];
}

absl::Status InMemoryBootstrap::Wait(const std::vector<std::string>& keys,
                                     absl::Duration timeout) {
  absl::MutexLock lock(&state_->mutex);
  auto all_present = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (const std::string& key : keys) {
      if (state_->values.find(key) == state_->values.end()) return false;
    }
    return true;
  };
  if (!state_->mutex.AwaitWithTimeout(absl::Condition(&all_present), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("timed out waiting for keys ", absl::StrJoin(keys, ", ")));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> InMemoryBootstrap::Add(const std::string& key, int64_t delta) {
  absl::MutexLock lock(&state_->mutex);
  int64_t value = 0;
  auto it = state_->values.find(key);
  if (it != state_->values.end()) (void)absl::SimpleAtoi(it->second, &value);
  value += delta;
  state_->values[key] = std::to_string(value);
  return value;
}

absl::StatusOr<std::string> InMemoryBootstrap::CompareSet(const std::string& key,
                                                          const std::string& expected,
                                                          const std::string& desired) {
  absl::MutexLock lock(&state_->mutex);
  auto it = state_->values.find(key);
  if (it == state_->values.end()) {
    if (!expected.empty()) return expected;
    state_->values[key] = desired;
    return desired;
  }
  if (it->second == expected) it->second = desired;
  return it->second;
}

}  // namespace cohort
