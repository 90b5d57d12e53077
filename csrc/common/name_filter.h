// Lists of network interface or RDMA device names in NCCL's syntax (NCCL_SOCKET_IFNAME,
// NCCL_IB_HCA), so that a user's existing settings carry over: comma-separated name prefixes;
// a leading `^` keeps every name except those listed; a leading `=` matches whole names instead
// of prefixes (both: `^=docker0`). For RDMA devices an entry may end in `:port`. The socket
// helpers (InterfaceAddress) and the topology's NIC choice (collectives/nic.h) parse
// COHORT_SOCKET_IFNAME and COHORT_IB_HCA with it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cohort {

class NameFilter {
 public:
  // Matches every name.
  NameFilter() = default;

  // `with_ports`: entries may end in `:port` (a positive integer); without it a colon is part of
  // the name (interface aliases such as eth0:1). `what` names the setting in errors.
  static absl::StatusOr<NameFilter> Parse(absl::string_view text, bool with_ports,
                                          absl::string_view what);

  // No entries: everything matches.
  bool empty() const { return entries_.empty(); }
  bool exclude() const { return exclude_; }
  // The text it was parsed from.
  const std::string& text() const { return text_; }

  // Whether `name` (and, for RDMA devices, its 1-based `port`; 0: any) is selected.
  bool Matches(absl::string_view name, int port = 0) const;
  // Whether an entry names `name` (exact or by prefix), regardless of `^`: a filter that lists
  // an interface on purpose (e.g. `lo`) overrides the default exclusions.
  bool Names(absl::string_view name) const;

 private:
  struct Entry {
    std::string name;
    int port = 0;  // 0: every port
  };
  bool EntryMatches(const Entry& entry, absl::string_view name, int port) const;

  std::string text_;
  bool exclude_ = false;
  bool exact_ = false;
  std::vector<Entry> entries_;
};

}  // namespace cohort
