// How a rank's TCP listening address is chosen, published through the bootstrap and read back.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/bootstrap.h"

namespace cohort::tcp {

struct Address {
  std::string host_name;  // for messages (COHORT_HOST_ID or hostname)
  std::string ip;         // where peers connect
  int port = 0;
  int pid = 0;
  std::string host_id;    // ranks with equal host ids share memory (COHORT_HOST_ID or
                          // hostname + boot id)

  std::string Serialize() const;  // "ip port pid host_id host_name"
  static absl::StatusOr<Address> Parse(const std::string& text);
};

// The IP this rank listens on: COHORT_SOCKET_IFNAME's address, else the address the bootstrap
// reaches its server from, else loopback.
absl::StatusOr<std::string> ChooseListenIp(Bootstrap& bootstrap);

// This host's identity for topology: COHORT_HOST_ID, else hostname + kernel boot id.
std::string HostIdentity();

}  // namespace cohort::tcp
