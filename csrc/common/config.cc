#include "common/config.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/logging.h"

extern char** environ;

namespace cohort::config {
namespace {

const std::vector<Variable>& BuildRegistry() {
  static const std::vector<Variable> registry = {
      {"COHORT_LOG_LEVEL", Type::kChoice, "WARN",
       "Least severe log level printed to stderr.",
       {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"}},
      {"COHORT_TIMEOUT", Type::kDuration, "300s",
       "Longest any collective, connection or bootstrap wait may take before it fails."},
      {"COHORT_ALGO", Type::kString, "",
       "Forces one collective algorithm by name (see `cohort-bench algos`) for every op it "
       "implements; a call it cannot serve fails naming why. Empty lets the tuner choose."},
      {"COHORT_CHUNK_BYTES", Type::kBytes, "512K",
       "Pipeline segment size: large transfers are split into segments of this size so sending "
       "overlaps reducing.",
       {}, 4096, int64_t{1} << 30},
      {"COHORT_EAGER_BYTES", Type::kBytes, "256K",
       "Messages up to this size that arrive before their receive is posted are buffered; "
       "larger ones wait in the socket.",
       {}, 0, int64_t{1} << 30},
      {"COHORT_SOCKET_BUFFER", Type::kBytes, "0",
       "SO_SNDBUF/SO_RCVBUF for transport sockets; 0 keeps the kernel's autotuning.",
       {}, 0, int64_t{1} << 30},
      {"COHORT_SOCKET_IFNAME", Type::kString, "",
       "Network interfaces cohort may use, in NCCL_SOCKET_IFNAME's syntax: comma-separated name "
       "prefixes, `=` first for whole names, `^` first to exclude (`eth,ib`, `=eth0`, "
       "`^docker`). Each rank's NIC is the nearest selected one that is up (`cohort-bench "
       "topo`); the TCP transport listens on the first selected interface's IPv4 address. "
       "Empty: every interface but docker* (lo only when no other is up), and the TCP transport "
       "listens on the address used to reach the bootstrap store."},
      {"COHORT_IB_HCA", Type::kString, "",
       "RDMA devices cohort may use, in NCCL_IB_HCA's syntax: comma-separated device prefixes, "
       "each optionally with `:port`, `=` first for whole names, `^` first to exclude "
       "(`mlx5_0:1,mlx5_1`, `^mlx5_2`). Empty: every device with an active port."},
      {"COHORT_SPIN_US", Type::kInt, "-1",
       "Microseconds a waiting thread polls before it sleeps in the kernel; -1 (auto): 200 when "
       "each rank on this host has a core of its own (waking from a sleep costs more than most "
       "replies take, over shared memory, UCX or TCP), else 0; also 0 while the machine has more "
       "runnable threads than cores (other namespaces' or containers' ranks, a build), and "
       "shorter while a communicator's waits keep outlasting it.",
       {}, -1, 1'000'000},
      {"COHORT_TRANSPORTS", Type::kString, "",
       "Channel kinds a communicator may use, in order of preference (shm, ucx, tcp, comma "
       "separated): each pair of ranks takes the first that can connect it, and creation fails "
       "naming the pair when none can. Empty (auto): shm inside a host, UCX across hosts where "
       "UCX finds an RDMA device, else TCP. Named, ucx also serves pairs without RDMA (over "
       "UCX_TLS)."},
      {"COHORT_WINDOWS", Type::kBool, "1",
       "Ring collectives put their pieces straight into the neighbour's memory where the "
       "channel between them offers a window (shm, ucx) and the operation is at least 256 KiB "
       "(0: messages everywhere). Every rank must use the same value."},
      {"COHORT_SHM", Type::kBool, "1",
       "Ranks on the same host exchange data through shared memory (0: leaves shm out of the "
       "channel list, so they use TCP loopback or UCX)."},
      {"COHORT_SHM_RING_BYTES", Type::kBytes, "1M",
       "Size of each shared-memory ring (one per ordered pair of ranks on a host); a power of two.",
       {}, 4096, int64_t{1} << 30},
      {"COHORT_SHM_SINGLE_COPY_BYTES", Type::kBytes, "64K",
       "Messages between ranks on one host at least this large are read straight from the "
       "sender's memory (process_vm_readv); 0 always copies through the ring.",
       {}, 0, int64_t{1} << 40},
      {"COHORT_SHM_LANE_BYTES", Type::kBytes, "1M",
       "When every rank is on one host, each has a shared staging slot of this size (twice, plus "
       "a page) that collectives of up to this many bytes per rank use directly: one "
       "synchronisation instead of messages. 0 turns the lane off.",
       {}, 0, int64_t{1} << 30},
      {"COHORT_TRACE_BUFFER", Type::kInt, "2000",
       "Operations each communicator's flight recorder keeps (the last ones, with their state and "
       "times; dumped on a failure, a timeout, SIGUSR1 or cohort.dump_trace()); 0 turns it off.",
       {}, 0, 10'000'000},
      {"COHORT_TRACE_DIR", Type::kString, "",
       "Folder the flight recorders dump to (trace-rank<R>-<communicator>.json); cohortrun sets "
       "it to <log dir>/attempt_<n>/traces. Empty: a failure dumps nothing, SIGUSR1 dumps into "
       "the working folder."},
      {"COHORT_ON_FAILURE", Type::kChoice, "restart",
       "What a failed worker or a lost node does to a cohortrun job (the default of cohortrun's "
       "--on-failure, which sets it for the workers): restart (every worker stops and a new "
       "generation starts, as torchrun) or shrink (cohortrun removes the failed ranks and the "
       "survivors go on; the torch backend then watches the launcher's removals and fails "
       "operations with a removed rank at once).",
       {"restart", "shrink"}},
      {"COHORT_SHRINK_WAIT", Type::kDuration, "30s",
       "How long Shrink's agreement waits for a rank that nobody reported as failed (a rank "
       "reported lost, stopped or timed out is waited for only a moment) before it leaves it "
       "out."},
      {"COHORT_DEBUG", Type::kString, "",
       "Comma-separated debug output to print: TUNING (each collective's algorithm with its "
       "predicted and measured time)."},
      {"COHORT_TUNER_PROBE", Type::kBool, "0",
       "Measure the tuner's link models at communicator creation (a short ping-pong inside a "
       "host and across hosts; rank 0's figures are used by all) instead of the defaults."},
      {"COHORT_TOPO_FILE", Type::kString, "",
       "File with the tuner's link models, one line per class: `intra|inter <latency us> "
       "<bandwidth GB/s> <reduce GB/s>`; unset: built-in defaults."},
      {"COHORT_HOST_ID", Type::kString, "",
       "Name of this host in topology and error messages; empty: the hostname."},
      {"COHORT_JOB_ID", Type::kString, "default",
       "Identifier of the job; every connection's handshake carries it."},
      {"COHORT_JOB_TOKEN", Type::kString, "",
       "Shared secret of the job; store and transport handshakes prove knowledge of it."},
      {"COHORT_STORE_ADDR", Type::kString, "",
       "host:port of the cohort store server the ranks bootstrap through."},
      {"COHORT_STORE_MAX_KEY_BYTES", Type::kBytes, "4K",
       "Largest key the store server accepts.", {}, 1, int64_t{1} << 20},
      {"COHORT_STORE_MAX_VALUE_BYTES", Type::kBytes, "64M",
       "Largest value the store server accepts.", {}, 1, int64_t{1} << 31},
      {"COHORT_GENERATION", Type::kInt, "0",
       "Set by cohortrun for its workers: the job's generation (1 at the first rendezvous, one "
       "more at each restart or scale-up).",
       {}, 0, INT64_MAX},
      {"COHORT_PYTHON", Type::kString, "python3",
       "Interpreter cohortrun runs training scripts with (not used with --no-python)."},
      {"COHORT_ETCD_PASSWORD", Type::kString, "",
       "Password of the etcd user (--rdzv-conf user=) for --rdzv-backend etcd, read here so "
       "that it stays off the command line; --rdzv-conf password= wins."},
      {"COHORT_STOP_GRACE", Type::kDuration, "5s",
       "How long cohortrun waits after SIGTERM before it SIGKILLs workers it stops."},
      {"COHORT_CUDA_PATH", Type::kChoice, "auto",
       "How collectives on CUDA buffers (torch's CUDA tensors) run: nccl (NCCL inside each host, "
       "cohort's rails between hosts; an error where a host cannot have an NCCL group), staged "
       "(copied through pinned host memory and run by cohort's host algorithms), or auto (nccl "
       "where every host can: one GPU per rank and libnccl.so.2 loadable; else staged).",
       {"auto", "nccl", "staged"}},
      {"COHORT_BENCH_MIN_BW", Type::kString, "",
       "cohort-bench sweeps exit with code 7 when the average bus bandwidth (GB/s, e.g. 10.5) is "
       "below it, like nccl-tests' NCCL_TESTS_MIN_BW; empty: no minimum."},
      {"COHORT_BENCH_CORRUPT", Type::kString, "",
       "For tests of cohort-bench's #wrong: `RANK[:ELEMENTS]` makes that rank change ELEMENTS "
       "(default 1) elements of every checked result before counting them; empty: off."},
  };
  return registry;
}

absl::Status BadValue(const Variable& variable, const std::string& value) {
  return absl::InvalidArgumentError(absl::StrCat(variable.name, "=\"", value, "\" is not valid: ",
                                                 variable.name, " accepts ", Accepted(variable),
                                                 ". Fix or unset it."));
}

// The raw text of a variable: environment first, then the default.
std::string RawValue(const Variable& variable) {
  const char* value = std::getenv(variable.name);
  return value != nullptr ? std::string(value) : std::string(variable.default_value);
}

absl::Status CheckValue(const Variable& variable, const std::string& value) {
  switch (variable.type) {
    case Type::kString:
      return absl::OkStatus();
    case Type::kInt: {
      int64_t parsed;
      if (!absl::SimpleAtoi(value, &parsed) || parsed < variable.min || parsed > variable.max) {
        return BadValue(variable, value);
      }
      return absl::OkStatus();
    }
    case Type::kBool: {
      std::string lower = absl::AsciiStrToLower(value);
      if (lower == "1" || lower == "0" || lower == "true" || lower == "false" || lower == "yes" ||
          lower == "no" || lower == "on" || lower == "off") {
        return absl::OkStatus();
      }
      return BadValue(variable, value);
    }
    case Type::kDuration:
      if (!ParseDuration(value).ok()) return BadValue(variable, value);
      return absl::OkStatus();
    case Type::kBytes: {
      auto parsed = ParseBytes(value);
      if (!parsed.ok() || *parsed < variable.min || *parsed > variable.max) {
        return BadValue(variable, value);
      }
      return absl::OkStatus();
    }
    case Type::kChoice:
      for (const std::string& choice : variable.choices) {
        if (absl::EqualsIgnoreCase(choice, value)) return absl::OkStatus();
      }
      return BadValue(variable, value);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CheckedRaw(const std::string& name, Type expected) {
  const Variable* variable = Find(name);
  if (variable == nullptr) {
    return absl::InternalError(absl::StrCat("config variable ", name, " is not registered"));
  }
  if (variable->type != expected && !(expected == Type::kString)) {
    return absl::InternalError(absl::StrCat("config variable ", name, " read with the wrong type"));
  }
  std::string value = RawValue(*variable);
  absl::Status status = CheckValue(*variable, value);
  if (!status.ok()) return status;
  // A choice is accepted in any case; callers compare with the registered spelling.
  if (variable->type == Type::kChoice) {
    for (const std::string& choice : variable->choices) {
      if (absl::EqualsIgnoreCase(choice, value)) return choice;
    }
  }
  return value;
}

}  // namespace

const std::vector<Variable>& Registry() { return BuildRegistry(); }

const Variable* Find(const std::string& name) {
  for (const Variable& variable : Registry()) {
    if (name == variable.name) return &variable;
  }
  return nullptr;
}

std::string Accepted(const Variable& variable) {
  switch (variable.type) {
    case Type::kString:
      return "any text";
    case Type::kInt:
      return absl::StrCat("an integer from ", variable.min, " to ", variable.max);
    case Type::kBool:
      return "1/0, true/false, yes/no or on/off";
    case Type::kDuration:
      return "a duration such as 300, 300s, 5m or 250ms (plain numbers are seconds)";
    case Type::kBytes:
      return absl::StrCat("a size in bytes such as 65536, 64K, 1M or 2G, from ", variable.min,
                          " to ", variable.max);
    case Type::kChoice:
      return absl::StrCat("one of ", absl::StrJoin(variable.choices, ", "));
  }
  return "";
}

absl::Status ValidateEnvironment() {
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    absl::string_view text(*entry);
    if (!absl::StartsWith(text, "COHORT_")) continue;
    size_t equals = text.find('=');
    std::string name(text.substr(0, equals));
    std::string value(equals == absl::string_view::npos ? "" : text.substr(equals + 1));
    const Variable* variable = Find(name);
    if (variable == nullptr) {
      // Tests and tools set their own COHORT_TEST_* / COHORT_BENCH_* variables.
      if (!absl::StartsWith(name, "COHORT_TEST_") && !absl::StartsWith(name, "COHORT_BENCH_")) {
        COHORT_LOG(WARN) << "unknown environment variable " << name
                         << " ignored; docs/config.md lists the ones cohort reads";
      }
      continue;
    }
    absl::Status status = CheckValue(*variable, value);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetString(const std::string& name) {
  return CheckedRaw(name, Type::kString);
}

absl::StatusOr<int64_t> GetInt(const std::string& name) {
  auto raw = CheckedRaw(name, Type::kInt);
  if (!raw.ok()) return raw.status();
  int64_t value = 0;
  (void)absl::SimpleAtoi(*raw, &value);
  return value;
}

absl::StatusOr<bool> GetBool(const std::string& name) {
  auto raw = CheckedRaw(name, Type::kBool);
  if (!raw.ok()) return raw.status();
  std::string lower = absl::AsciiStrToLower(*raw);
  return lower == "1" || lower == "true" || lower == "yes" || lower == "on";
}

absl::StatusOr<absl::Duration> GetDuration(const std::string& name) {
  auto raw = CheckedRaw(name, Type::kDuration);
  if (!raw.ok()) return raw.status();
  return ParseDuration(*raw);
}

absl::StatusOr<int64_t> GetBytes(const std::string& name) {
  auto raw = CheckedRaw(name, Type::kBytes);
  if (!raw.ok()) return raw.status();
  return ParseBytes(*raw);
}

absl::StatusOr<int64_t> ParseBytes(const std::string& text) {
  absl::string_view body = absl::StripAsciiWhitespace(text);
  int64_t multiplier = 1;
  if (!body.empty()) {
    char suffix = absl::ascii_toupper(body.back());
    int shift = suffix == 'K' ? 10 : suffix == 'M' ? 20 : suffix == 'G' ? 30 : suffix == 'T' ? 40 : 0;
    if (shift != 0) {
      multiplier = int64_t{1} << shift;
      body.remove_suffix(1);
    } else if (suffix == 'B') {
      body.remove_suffix(1);
    }
  }
  int64_t value;
  if (body.empty() || !absl::SimpleAtoi(body, &value) || value < 0 ||
      value > INT64_MAX / multiplier) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a size (expected e.g. 65536, 64K, 1M, 2G)"));
  }
  return value * multiplier;
}

absl::StatusOr<absl::Duration> ParseDuration(const std::string& text) {
  absl::string_view body = absl::StripAsciiWhitespace(text);
  double seconds;
  if (absl::SimpleAtod(body, &seconds) && seconds >= 0) {
    return absl::Seconds(seconds);
  }
  absl::Duration duration;
  if (absl::ParseDuration(body, &duration) && duration >= absl::ZeroDuration()) {
    return duration;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("\"", text, "\" is not a duration (expected e.g. 300, 300s, 5m, 250ms)"));
}

std::string Markdown() {
  std::string out =
      "# Configuration\n\n"
      "<!-- Generated by `cohort-config --markdown` from csrc/common/config.cc; do not edit. -->\n\n"
      "Every `COHORT_*` environment variable cohort reads. A value that is not accepted stops the\n"
      "program at start with a message naming the variable, the value and what is accepted.\n\n"
      "| Variable | Default | Accepts | Meaning |\n"
      "|---|---|---|---|\n";
  for (const Variable& variable : Registry()) {
    std::string default_text =
        std::strlen(variable.default_value) == 0 ? "(unset)" : variable.default_value;
    absl::StrAppend(&out, "| `", variable.name, "` | `", default_text, "` | ", Accepted(variable),
                    " | ", variable.doc, " |\n");
  }
  return out;
}

}  // namespace cohort::config
