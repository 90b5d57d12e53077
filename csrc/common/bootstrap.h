// The small key-value interface a communicator bootstraps through (addresses, secrets, ids).
// Implemented by the store client (elastic/), the torch c10d::Store adapter (python/) and an
// in-process map for tests. It lives in common/ so that collectives never depends on elastic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort {

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // Waits up to `timeout` for the key to exist, then returns its value.
  virtual absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) = 0;
  // Waits up to `timeout` until every key exists.
  virtual absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) = 0;
  // Atomically adds `delta` to the integer stored at key (missing counts as 0); returns the sum.
  virtual absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) = 0;
  // torch c10d's compare_set: stores `desired` when the key holds `expected` (a missing key
  // matches an empty `expected`) and returns the value now stored. Shrink's agreement decides
  // through it; a bootstrap without it answers Unimplemented (the agreement then decides by
  // the first ticket of an Add, which a decider that dies at that very moment can stall).
  virtual absl::StatusOr<std::string> CompareSet(const std::string& key,
                                                 const std::string& expected,
                                                 const std::string& desired) {
    (void)key, (void)expected, (void)desired;
    return absl::UnimplementedError("this bootstrap has no compare_set");
  }
  // An address of this host that peers can reach (e.g. the local end of the connection to the
  // store), or empty when the bootstrap cannot tell.
  virtual std::string LocalAddressHint() { return ""; }
};

}  // namespace cohort
