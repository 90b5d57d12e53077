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

absl::StatusOr<std::string> ChooseListenIp(Bootstrap& bootstrap,
                                           const std::string& interface_name) {
  if (!interface_name.empty()) return InterfaceAddress(interface_name);
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
