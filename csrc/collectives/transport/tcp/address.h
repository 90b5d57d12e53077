// Where a rank listens for its mesh connections, and this host's identity.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/bootstrap.h"

namespace cohort::tcp {

// The IP this rank listens on: the address of `interface_name` (COHORT_SOCKET_IFNAME) when
// given, else the address the bootstrap reaches its server from, else loopback.
absl::StatusOr<std::string> ChooseListenIp(Bootstrap& bootstrap, const std::string& interface_name);

// This host's identity for topology: COHORT_HOST_ID, else hostname + kernel boot id.
std::string HostIdentity();

}  // namespace cohort::tcp
