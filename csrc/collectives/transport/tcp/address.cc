#include "collectives/transport/tcp/address.h"

#include <unistd.h>

#include <fstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "common/socket.h"

namespace cohort::tcp {

std::string Address::Serialize() const {
  return absl::StrCat(ip, " ", port, " ", pid, " ", host_id, " ", host_name);
}

absl::StatusOr<Address> Address::Parse(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(' ', 4));
  Address address;
  if (parts.size() != 5 || !absl::SimpleAtoi(parts[1], &address.port) ||
      !absl::SimpleAtoi(parts[2], &address.pid)) {
    return absl::DataLossError(absl::StrCat("malformed TCP address \"", text,
                                            "\" in the bootstrap store; is another job using "
                                            "the same store and prefix?"));
  }
  address.ip = parts[0];
  address.host_id = parts[3];
  address.host_name = parts[4];
  return address;
}

absl::StatusOr<std::string> ChooseListenIp(Bootstrap& bootstrap) {
  auto interface_name = config::GetString("COHORT_SOCKET_IFNAME");
  if (!interface_name.ok()) return interface_name.status();
  if (!interface_name->empty()) return InterfaceAddress(*interface_name);
  std::string hint = bootstrap.LocalAddressHint();
  if (!hint.empty()) return hint;
  return std::string("127.0.0.1");
}

std::string HostIdentity() {
  auto configured = config::GetString("COHORT_HOST_ID");
  if (configured.ok() && !configured->empty()) {
    return absl::StrReplaceAll(*configured, {{" ", "_"}});
  }
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  std::string boot_id;
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::getline(file, boot_id);
  return absl::StrCat(absl::StrReplaceAll(name, {{" ", "_"}}), "/", boot_id);
}

}  // namespace cohort::tcp
