#include "collectives/transport/channel.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace cohort {

const char* ChannelKindName(ChannelKind kind) {
  switch (kind) {
    case ChannelKind::kSharedMemory:
      return "shm";
    case ChannelKind::kUcx:
      return "ucx";
    case ChannelKind::kTcp:
      return "tcp";
  }
  return "?";
}

absl::StatusOr<std::vector<ChannelKind>> ParseChannelKinds(absl::string_view text) {
  std::vector<ChannelKind> kinds;
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel list \"", text, "\" ", why,
        "; give one or more of shm, ucx, tcp separated by commas, in order of preference "
        "(e.g. shm,ucx,tcp)"));
  };
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(item));
    ChannelKind kind;
    if (name == "shm") {
      kind = ChannelKind::kSharedMemory;
    } else if (name == "ucx") {
      kind = ChannelKind::kUcx;
    } else if (name == "tcp") {
      kind = ChannelKind::kTcp;
    } else {
      return bad(absl::StrCat("names \"", name, "\", which is not a channel kind"));
    }
    if (std::find(kinds.begin(), kinds.end(), kind) != kinds.end()) {
      return bad(absl::StrCat("names ", name, " twice"));
    }
    kinds.push_back(kind);
  }
  if (kinds.empty()) return bad("is empty");
  return kinds;
}

std::string ChannelKindsText(const std::vector<ChannelKind>& kinds) {
  return absl::StrJoin(kinds, ",", [](std::string* out, ChannelKind kind) {
    out->append(ChannelKindName(kind));
  });
}

// One "key=value" per line; values never hold a newline (offers are printable by contract).
std::string PeerRecord::Serialize() const {
  std::string text = absl::StrCat("rank=", rank, "\nhost_id=", host_id, "\nhost_name=", host_name,
                                  "\npid=", pid, "\norder=", ChannelKindsText(order),
                                  "\nforced=", order_forced ? 1 : 0);
  for (int kind = 0; kind < kChannelKinds; ++kind) {
    if (offers[kind].empty()) continue;
    absl::StrAppend(&text, "\noffer.", ChannelKindName(static_cast<ChannelKind>(kind)), "=",
                    offers[kind]);
  }
  return text;
}

absl::StatusOr<PeerRecord> PeerRecord::Parse(const std::string& text) {
  PeerRecord record;
  auto malformed = [&](absl::string_view line) {
    return absl::DataLossError(absl::StrCat(
        "malformed peer record in the bootstrap store (line \"", line,
        "\"); is another job, or another cohort version, using the same store and prefix?"));
  };
  bool have_rank = false, have_order = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    size_t equals = line.find('=');
    if (equals == absl::string_view::npos) return malformed(line);
    absl::string_view key = line.substr(0, equals);
    std::string value(line.substr(equals + 1));
    if (key == "rank") {
      if (!absl::SimpleAtoi(value, &record.rank)) return malformed(line);
      have_rank = true;
    } else if (key == "host_id") {
      record.host_id = value;
    } else if (key == "host_name") {
      record.host_name = value;
    } else if (key == "pid") {
      if (!absl::SimpleAtoi(value, &record.pid)) return malformed(line);
    } else if (key == "order") {
      auto order = ParseChannelKinds(value);
      if (!order.ok()) return malformed(line);
      record.order = std::move(*order);
      have_order = true;
    } else if (key == "forced") {
      record.order_forced = value == "1";
    } else if (absl::StartsWith(key, "offer.")) {
      auto kind = ParseChannelKinds(key.substr(6));
      if (!kind.ok() || kind->size() != 1) return malformed(line);
      record.offers[static_cast<int>((*kind)[0])] = value;
    }
    // Unknown keys are skipped: a newer peer may publish more.
  }
  if (!have_rank || !have_order) return malformed(text.substr(0, 80));
  return record;
}

namespace {

std::string Who(const PeerRecord& record) {
  return absl::StrCat("rank ", record.rank, " (", record.host_name, ")");
}

// Whether `kind` can connect a and b, or why not.
absl::Status CanConnect(ChannelKind kind, const PeerRecord& a, const PeerRecord& b) {
  const PeerRecord* missing = a.offer(kind).empty() ? &a : b.offer(kind).empty() ? &b : nullptr;
  if (missing != nullptr) {
    std::string why = std::find(missing->order.begin(), missing->order.end(), kind) ==
                              missing->order.end()
                          ? "it is not in that rank's channel list"
                          : "that rank could not set it up (see its log)";
    if (kind == ChannelKind::kUcx && missing->offer(ChannelKind::kUcx).empty() &&
        std::find(missing->order.begin(), missing->order.end(), kind) != missing->order.end()) {
      why = "UCX is not available on that rank (built without UCX, or UCX found no transport)";
    }
    return absl::FailedPreconditionError(
        absl::StrCat(Who(*missing), " does not offer ", ChannelKindName(kind), ": ", why));
  }
  switch (kind) {
    case ChannelKind::kSharedMemory:
      if (a.host_id != b.host_id) {
        return absl::FailedPreconditionError(absl::StrCat(
            Who(a), " and ", Who(b), " are on different hosts, so shared memory cannot connect them"));
      }
      return absl::OkStatus();
    case ChannelKind::kUcx: {
      // By default UCX serves a pair only where it has RDMA to offer; named in the channel list,
      // it serves any pair over whatever UCX_TLS allows (tcp, sm).
      const bool rdma = absl::StrContains(a.offer(kind), "rdma=1") &&
                        absl::StrContains(b.offer(kind), "rdma=1");
      if (!rdma && !(a.order_forced && b.order_forced)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "UCX found no RDMA device on ", Who(a), " or ", Who(b),
            " (set COHORT_TRANSPORTS to a list naming ucx to use UCX over TCP or shared memory)"));
      }
      return absl::OkStatus();
    }
    case ChannelKind::kTcp:
      return absl::OkStatus();
  }
  return absl::InternalError("unknown channel kind");
}

}  // namespace

absl::StatusOr<ChannelKind> ChooseChannel(const PeerRecord& a, const PeerRecord& b) {
  const PeerRecord& lower = a.rank < b.rank ? a : b;
  const PeerRecord& higher = a.rank < b.rank ? b : a;
  std::vector<std::string> reasons;
  for (ChannelKind kind : lower.order) {
    absl::Status can = CanConnect(kind, lower, higher);
    if (can.ok()) return kind;
    reasons.push_back(absl::StrCat(ChannelKindName(kind), ": ", can.message()));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no channel can connect ", Who(lower), " and ", Who(higher), " with the channel list ",
      ChannelKindsText(lower.order), lower.order_forced ? " (COHORT_TRANSPORTS)" : "", " — ",
      absl::StrJoin(reasons, "; "),
      ". Add a channel kind that can reach that peer to COHORT_TRANSPORTS (tcp always can)"));
}

}  // namespace cohort
