// libcohort's Bootstrap over torch's c10d::Store: the backend's creator receives torch's store
// (TCPStore, FileStore, HashStore, a PrefixStore over any of them, or a Python store), so every
// init_method torch supports bootstraps cohort's communicators too. Used by ProcessGroupCohort.
#pragma once

#include <string>
#include <vector>

#include "common/bootstrap.h"
#include "torch_compat.h"

namespace cohort::torch_ext {

class StoreBootstrap final : public Bootstrap {
 public:
  // `local_address` is this host's address as peers should see it (see LocalAddressToward).
  StoreBootstrap(c10::intrusive_ptr<c10d::Store> store, std::string local_address);

  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  absl::StatusOr<std::string> CompareSet(const std::string& key, const std::string& expected,
                                         const std::string& desired) override;
  std::string LocalAddressHint() override { return local_address_; }

  c10d::Store& store() { return *store_; }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  std::string local_address_;
};

// The IPv4 address of the local interface that routes to `host` (the store's host or
// MASTER_ADDR): what peers on other hosts can reach. Found with a connected UDP socket, which
// sends nothing. Empty when `host` is empty or cannot be resolved (libcohort then listens on
// 127.0.0.1, which serves one host; COHORT_SOCKET_IFNAME overrides both).
std::string LocalAddressToward(const std::string& host);

}  // namespace cohort::torch_ext
