#include "collectives/transport/tcp/address.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "common/socket.h"

namespace cohort::tcp {

std::string Address::Serialize() const { return absl::StrCat(ip, " ", port, " ", host_name); }

absl::StatusOr<Address> Address::Parse(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(' ', 2));
  Address address;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &address.port)) {
    return absl::DataLossError(absl::StrCat("malformed TCP address \"", text,
                                            "\" in the bootstrap store; is another job using "
                                            "the same store and prefix?"));
  }
  address.ip = parts[0];
  address.host_name = parts[2];
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

}  // namespace cohort::tcp
