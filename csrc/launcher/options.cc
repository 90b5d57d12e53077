#include "launcher/options.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/crypto.h"
#include "common/status.h"

extern char** environ;

namespace cohort::launcher {
namespace {

struct Flag {
  const char* name;        // dash spelling, without the leading "--"
  bool takes_value;
  const char* short_name;  // e.g. "-r", or nullptr
  const char* help;
};

const std::vector<Flag>& Flags() {
  static const std::vector<Flag> flags = {
      {"nnodes", true, nullptr, "N or MIN:MAX nodes (default 1)"},
      {"nproc-per-node", true, nullptr, "workers per node: N, auto, cpu or gpu (default 1)"},
      {"node-rank", true, nullptr,
       "this node's rank; static rendezvous orders nodes by it (default 0 there)"},
      {"rdzv-backend", true, nullptr,
       "c10d (embedded store, default), static, or etcd (alias etcd-v3: etcd's v3 API)"},
      {"rdzv-endpoint", true, nullptr,
       "host:port of the rendezvous store (its host runs it); with etcd, its client URLs, "
       "comma-separated"},
      {"rdzv-id", true, nullptr, "job id shared by the nodes of one job (default none)"},
      {"rdzv-conf", true, nullptr,
       "k=v,...: join_timeout, last_call_timeout, close_timeout, heartbeat_interval, "
       "heartbeat_timeout, keep_alive_interval, keep_alive_max_attempt, read_timeout, is_host; "
       "etcd: protocol, cacert, cert, key, user, password, etcd_prefix"},
      {"standalone", false, nullptr, "single node: a private store on a free local port"},
      {"max-restarts", true, nullptr, "restarts of the job after failures (default 0)"},
      {"on-failure", true, nullptr,
       "restart (default: every worker stops, a new generation starts) or shrink (the failed "
       "worker or lost node is removed and the survivors go on; below the minimum of --nnodes "
       "the job restarts); also COHORT_ON_FAILURE"},
      {"monitor-interval", true, nullptr, "seconds between worker checks (default 0.1)"},
      {"start-method", true, nullptr, "spawn, fork or forkserver (accepted; workers are exec'd)"},
      {"role", true, nullptr, "role of this node's workers (default \"default\")"},
      {"master-addr", true, nullptr, "MASTER_ADDR for workers (default: rank 0's address)"},
      {"master-port", true, nullptr, "MASTER_PORT for workers (default: a reserved free port)"},
      {"local-addr", true, nullptr, "address other nodes reach this node at"},
      {"log-dir", true, nullptr, "keep per-attempt, per-rank logs and error files here"},
      {"redirects", true, "-r", "0-3 or rank:mask,... send stdout(1)/stderr(2) to log files"},
      {"tee", true, "-t", "0-3 or rank:mask,... copy stdout(1)/stderr(2) to log files"},
      {"local-ranks-filter", true, nullptr, "comma-separated local ranks shown on the console"},
      {"no-python", false, nullptr, "run the script directly, not through python"},
      {"module", false, "-m", "run the script as a python module (python -m)"},
      {"run-path", false, nullptr, "run the script by path through python"},
      {"signals-to-handle", true, nullptr,
       "signals forwarded to workers (default SIGTERM,SIGINT,SIGHUP,SIGQUIT)"},
      {"node-label", true, nullptr,
       "key=value topology label (repeatable); nodes sharing labels get adjacent ranks"},
      {"log-line-prefix-template", true, nullptr,
       "prefix of each worker output line; ${host} ${rank} ${local_rank} ${role_name} "
       "(default \"[${host}:${rank}] \")"},
      {"dry-run", false, nullptr, "print what was detected and would be run, then exit"},
      {"help", false, "-h", "this help"},
  };
  return flags;
}

const Flag* FindFlag(absl::string_view spelled) {
  std::string name = absl::StrReplaceAll(spelled, {{"_", "-"}});
  for (const Flag& flag : Flags()) {
    if (name == flag.name) return &flag;
  }
  return nullptr;
}

const Flag* FindShort(absl::string_view spelled) {
  for (const Flag& flag : Flags()) {
    if (flag.short_name != nullptr && spelled == flag.short_name) return &flag;
  }
  return nullptr;
}

std::string PetName(const Flag& flag) {
  return absl::StrCat("PET_", absl::AsciiStrToUpper(absl::StrReplaceAll(flag.name, {{"-", "_"}})));
}

absl::Status BadValue(const std::string& flag, const std::string& value, const std::string& accepted) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " \"", value, "\" is not valid: it accepts ", accepted));
}

const std::vector<std::pair<const char*, int>>& SignalNames() {
  static const std::vector<std::pair<const char*, int>> names = {
      {"SIGTERM", 15}, {"SIGINT", 2},  {"SIGHUP", 1},   {"SIGQUIT", 3},  {"SIGUSR1", 10},
      {"SIGUSR2", 12}, {"SIGABRT", 6}, {"SIGALRM", 14}, {"SIGCONT", 18}, {"SIGTSTP", 20},
  };
  return names;
}

bool ParseBoolText(const std::string& text, bool* value) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "1" || lower == "true" || lower == "yes" || lower == "on" || lower.empty()) {
    *value = true;
    return true;
  }
  if (lower == "0" || lower == "false" || lower == "no" || lower == "off") {
    *value = false;
    return true;
  }
  return false;
}

std::string Get(const std::map<std::string, std::string>& environment, const std::string& name) {
  auto it = environment.find(name);
  return it == environment.end() ? std::string() : it->second;
}

bool Has(const std::map<std::string, std::string>& environment, const std::string& name) {
  auto it = environment.find(name);
  return it != environment.end() && !it->second.empty();
}

// Values a scheduler's environment supplies, by flag name, and the scheduler's name.
std::pair<std::map<std::string, std::string>, std::string> SchedulerValues(
    const std::map<std::string, std::string>& environment) {
  std::map<std::string, std::string> values;
  if (Has(environment, "SLURM_JOB_ID") || Has(environment, "SLURM_NNODES")) {
    std::string nnodes = Has(environment, "SLURM_NNODES") ? Get(environment, "SLURM_NNODES")
                                                          : Get(environment, "SLURM_JOB_NUM_NODES");
    if (!nnodes.empty()) values["nnodes"] = nnodes;
    if (Has(environment, "SLURM_NODEID")) values["node-rank"] = Get(environment, "SLURM_NODEID");
    if (Has(environment, "SLURM_JOB_ID")) values["rdzv-id"] = Get(environment, "SLURM_JOB_ID");
    std::string nodelist = Has(environment, "SLURM_JOB_NODELIST")
                               ? Get(environment, "SLURM_JOB_NODELIST")
                               : Get(environment, "SLURM_NODELIST");
    if (!nodelist.empty()) {
      auto hosts = ExpandSlurmNodelist(nodelist);
      if (hosts.ok() && !hosts->empty()) {
        values["rdzv-endpoint"] = absl::StrCat(hosts->front(), ":29400");
        values["master-addr"] = hosts->front();
      }
    }
    return {values, "Slurm"};
  }
  if (Has(environment, "DSTACK_NODES_NUM") || Has(environment, "DSTACK_RUN_ID")) {
    if (Has(environment, "DSTACK_NODES_NUM")) values["nnodes"] = Get(environment, "DSTACK_NODES_NUM");
    if (Has(environment, "DSTACK_NODE_RANK")) values["node-rank"] = Get(environment, "DSTACK_NODE_RANK");
    if (Has(environment, "DSTACK_MASTER_NODE_IP")) {
      values["rdzv-endpoint"] = absl::StrCat(Get(environment, "DSTACK_MASTER_NODE_IP"), ":29400");
      values["master-addr"] = Get(environment, "DSTACK_MASTER_NODE_IP");
    }
    if (Has(environment, "DSTACK_GPUS_PER_NODE") && Get(environment, "DSTACK_GPUS_PER_NODE") != "0") {
      values["nproc-per-node"] = Get(environment, "DSTACK_GPUS_PER_NODE");
    }
    if (Has(environment, "DSTACK_RUN_ID")) values["rdzv-id"] = Get(environment, "DSTACK_RUN_ID");
    return {values, "dstack"};
  }
  if (Has(environment, "OMPI_COMM_WORLD_SIZE")) {
    // One cohortrun per node under mpirun (-npernode 1): the MPI rank is the node rank. Open
    // MPI names no master host, so the endpoint comes from MASTER_ADDR when exported.
    values["nnodes"] = Get(environment, "OMPI_COMM_WORLD_SIZE");
    if (Has(environment, "OMPI_COMM_WORLD_RANK")) values["node-rank"] = Get(environment, "OMPI_COMM_WORLD_RANK");
    if (Has(environment, "MASTER_ADDR")) {
      values["master-addr"] = Get(environment, "MASTER_ADDR");
      values["rdzv-endpoint"] = absl::StrCat(
          Get(environment, "MASTER_ADDR"), ":",
          Has(environment, "MASTER_PORT") ? Get(environment, "MASTER_PORT") : "29400");
    }
    if (Has(environment, "OMPI_MCA_orte_ess_jobid")) {
      values["rdzv-id"] = Get(environment, "OMPI_MCA_orte_ess_jobid");
    }
    return {values, "Open MPI"};
  }
  return {values, "none"};
}

absl::StatusOr<int> ParseInt(const std::string& flag, const std::string& value, int min, int max) {
  int parsed;
  if (!absl::SimpleAtoi(value, &parsed) || parsed < min || parsed > max) {
    return BadValue(flag, value, absl::StrCat("an integer from ", min, " to ", max));
  }
  return parsed;
}

int CountGpus(const std::map<std::string, std::string>& environment) {
  int physical = 0;
  if (DIR* dir = opendir("/proc/driver/nvidia/gpus")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++physical;
    }
    closedir(dir);
  }
  auto visible = environment.find("CUDA_VISIBLE_DEVICES");
  if (visible != environment.end() && physical > 0) {
    int listed = 0;
    for (absl::string_view item : absl::StrSplit(visible->second, ',', absl::SkipWhitespace())) {
      if (absl::StripAsciiWhitespace(item) == "-1") break;
      ++listed;
    }
    return std::min(listed, physical);
  }
  return physical;
}

// The rendezvous store's port when only --master-addr/--master-port say where nodes meet. The
// workers' torch store needs MASTER_PORT itself (cohort's store is not a c10d TCPStore, so
// torchrun's TORCHELASTIC_USE_AGENT_STORE sharing does not apply): a given --master-port stays
// the workers', and the store takes the next port.
int StorePortBesideMaster(const LaunchOptions& options) {
  return options.master_port_given ? options.master_port + 1 : options.master_port;
}

}  // namespace

std::map<std::string, std::string> CurrentEnvironment() {
  std::map<std::string, std::string> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    absl::string_view text(*entry);
    size_t equals = text.find('=');
    if (equals == absl::string_view::npos) continue;
    environment[std::string(text.substr(0, equals))] = std::string(text.substr(equals + 1));
  }
  return environment;
}

// More hosts than any Slurm cluster has: a node list naming more is malformed.
constexpr size_t kMaxNodelistHosts = 100000;

absl::StatusOr<std::vector<std::string>> ExpandSlurmNodelist(const std::string& nodelist) {
  // Split at top-level commas (commas inside brackets separate ranges).
  std::vector<std::string> items;
  int depth = 0;
  std::string current;
  for (char c : nodelist) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) return absl::InvalidArgumentError(absl::StrCat("bad Slurm node list \"", nodelist, "\": unbalanced ]"));
    if (c == ',' && depth == 0) {
      if (!current.empty()) items.push_back(current);
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (depth != 0) return absl::InvalidArgumentError(absl::StrCat("bad Slurm node list \"", nodelist, "\": unbalanced ["));
  if (!current.empty()) items.push_back(current);
  std::vector<std::string> hosts;
  for (const std::string& item : items) {
    std::vector<std::string> expanded = {""};
    size_t position = 0;
    while (position < item.size()) {
      size_t open = item.find('[', position);
      if (open == std::string::npos) {
        for (std::string& host : expanded) host += item.substr(position);
        break;
      }
      size_t close = item.find(']', open);
      std::string prefix = item.substr(position, open - position);
      std::vector<std::string> alternatives;
      for (absl::string_view range : absl::StrSplit(item.substr(open + 1, close - open - 1), ',')) {
        std::vector<std::string> bounds = absl::StrSplit(range, '-');
        int64_t low, high;
        if (bounds.size() > 2 || !absl::SimpleAtoi(bounds[0], &low) ||
            !absl::SimpleAtoi(bounds.back(), &high) || low > high || high - low > 100000) {
          return absl::InvalidArgumentError(absl::StrCat("bad Slurm node list \"", nodelist,
                                                         "\": range \"", range, "\""));
        }
        if (alternatives.size() + static_cast<size_t>(high - low) >= kMaxNodelistHosts) {
          return absl::InvalidArgumentError(absl::StrCat(
              "bad Slurm node list \"", nodelist.substr(0, 200), "\": it names more than ",
              kMaxNodelistHosts, " hosts"));
        }
        size_t width = bounds[0].size();  // zero padding, as in node[001-010]
        for (int64_t n = low; n <= high; ++n) {
          std::string digits = absl::StrCat(n);
          if (digits.size() < width) digits.insert(0, width - digits.size(), '0');
          alternatives.push_back(digits);
        }
      }
      // Several bracket groups multiply ("a[0-999][0-999]" is a million names): bound the
      // whole list, as each range is bounded.
      if (alternatives.size() > kMaxNodelistHosts / std::max<size_t>(1, expanded.size()) ||
          hosts.size() + expanded.size() * alternatives.size() > kMaxNodelistHosts) {
        return absl::InvalidArgumentError(absl::StrCat(
            "bad Slurm node list \"", nodelist.substr(0, 200), "\": it names more than ",
            kMaxNodelistHosts, " hosts"));
      }
      std::vector<std::string> next;
      for (const std::string& host : expanded) {
        for (const std::string& alternative : alternatives) next.push_back(host + prefix + alternative);
      }
      expanded = std::move(next);
      position = close + 1;
    }
    hosts.insert(hosts.end(), expanded.begin(), expanded.end());
  }
  return hosts;
}

absl::StatusOr<StreamSpec> ParseStreamSpec(const std::string& text, const std::string& flag) {
  StreamSpec spec;
  const std::string accepted =
      "0 (none), 1 (stdout), 2 (stderr) or 3 (both), for all local ranks or per rank as "
      "rank:mask,... (e.g. 0:1,1:2)";
  int mask;
  if (absl::SimpleAtoi(text, &mask)) {
    if (mask < 0 || mask > 3) return BadValue(flag, text, accepted);
    spec.all = mask;
    return spec;
  }
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<std::string> parts = absl::StrSplit(entry, ':');
    int rank;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &rank) || rank < 0 ||
        !absl::SimpleAtoi(parts[1], &mask) || mask < 0 || mask > 3) {
      return BadValue(flag, text, accepted);
    }
    spec.per_rank[rank] = mask;
  }
  if (spec.per_rank.empty()) return BadValue(flag, text, accepted);
  return spec;
}

absl::StatusOr<int> ResolveNprocPerNode(const std::string& text) {
  std::map<std::string, std::string> environment = CurrentEnvironment();
  int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  if (text == "cpu") return std::max(cpus, 1);
  if (text == "gpu") {
    int gpus = CountGpus(environment);
    if (gpus == 0) {
      return absl::FailedPreconditionError(
          "--nproc-per-node gpu: this host has no visible GPU; use a number, cpu or auto");
    }
    return gpus;
  }
  if (text == "auto") {
    int gpus = CountGpus(environment);
    return gpus > 0 ? gpus : std::max(cpus, 1);
  }
  return ParseInt("nproc-per-node", text, 1, 1 << 16).status().ok()
             ? ParseInt("nproc-per-node", text, 1, 1 << 16)
             : BadValue("nproc-per-node", text, "a positive integer, auto, cpu or gpu");
}

absl::StatusOr<LaunchOptions> ParseLaunchOptions(
    const std::vector<std::string>& args, const std::map<std::string, std::string>& environment) {
  LaunchOptions options;
  std::map<std::string, std::vector<std::string>> given;  // flag name -> values, in order
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') break;  // the training script
    const Flag* flag = nullptr;
    std::optional<std::string> inline_value;
    if (absl::StartsWith(arg, "--")) {
      std::string body = arg.substr(2);
      size_t equals = body.find('=');
      if (equals != std::string::npos) {
        inline_value = body.substr(equals + 1);
        body = body.substr(0, equals);
      }
      flag = FindFlag(body);
    } else {
      flag = FindShort(arg.substr(0, 2));
      if (flag != nullptr && arg.size() > 2) inline_value = arg.substr(arg[2] == '=' ? 3 : 2);
    }
    if (flag == nullptr) {
      std::vector<std::string> names;
      for (const Flag& known : Flags()) names.push_back(absl::StrCat("--", known.name));
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag \"", arg, "\"; cohortrun accepts ", absl::StrJoin(names, ", "),
          " (underscores work too, e.g. --nproc_per_node), then the script and its arguments"));
    }
    if (!flag->takes_value) {
      if (inline_value) {
        bool value;
        if (!ParseBoolText(*inline_value, &value)) {
          return BadValue(flag->name, *inline_value, "no value (it is a switch), or true/false");
        }
        given[flag->name].push_back(value ? "1" : "0");
      } else {
        given[flag->name].push_back("1");
      }
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", flag->name, " needs a value (",
                                                       flag->help, ")"));
      }
      inline_value = args[++i];
    }
    given[flag->name].push_back(*inline_value);
  }
  if (i < args.size()) {
    options.training_script = args[i];
    options.script_args.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
  }
  if (given.contains("help")) {
    options.sources["help"] = "flag";
    return options;
  }

  // Not a structured binding: the lambda below captures these (clang 14 cannot capture those).
  const auto scheduler_found = SchedulerValues(environment);
  const auto& scheduler_values = scheduler_found.first;
  const auto& scheduler = scheduler_found.second;
  options.scheduler = scheduler;
  // The value of a flag: the command line, then PET_<NAME>, then the scheduler's environment.
  auto value_of = [&](const char* name) -> std::optional<std::string> {
    auto flag_it = given.find(name);
    if (flag_it != given.end()) {
      options.sources[name] = "flag";
      return flag_it->second.back();
    }
    const Flag* flag = FindFlag(name);
    std::string pet = PetName(*flag);
    if (environment.contains(pet)) {
      options.sources[name] = pet;
      return environment.at(pet);
    }
    auto scheduler_it = scheduler_values.find(name);
    if (scheduler_it != scheduler_values.end()) {
      options.sources[name] = scheduler;
      return scheduler_it->second;
    }
    options.sources[name] = "default";
    return std::nullopt;
  };
  auto bool_of = [&](const char* name, bool* target) -> absl::Status {
    auto value = value_of(name);
    if (value && !ParseBoolText(*value, target)) return BadValue(name, *value, "true or false");
    return absl::OkStatus();
  };

  if (auto value = value_of("nnodes")) {
    std::vector<std::string> parts = absl::StrSplit(*value, ':');
    int low, high;
    if (parts.size() == 1 && absl::SimpleAtoi(parts[0], &low) && low >= 1) {
      high = low;
    } else if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &low) ||
               !absl::SimpleAtoi(parts[1], &high) || low < 1 || high < low) {
      return BadValue("nnodes", *value, "N or MIN:MAX with 1 <= MIN <= MAX");
    }
    options.min_nodes = low;
    options.max_nodes = high;
  }
  if (auto value = value_of("nproc-per-node")) options.nproc_per_node_text = *value;
  COHORT_ASSIGN_OR_RETURN(options.nproc_per_node, ResolveNprocPerNode(options.nproc_per_node_text));
  if (auto value = value_of("node-rank")) {
    COHORT_ASSIGN_OR_RETURN(options.node_rank, ParseInt("node-rank", *value, 0, 1 << 20));
  }
  if (auto value = value_of("rdzv-backend")) {
    std::string backend = absl::AsciiStrToLower(*value);
    if (backend == "etcd-v2") {
      return absl::UnimplementedError(
          "--rdzv-backend etcd-v2 is not available: etcd's v2 API is off by default since etcd "
          "3.4 and gone in 3.6; use --rdzv-backend etcd (the v3 API)");
    }
    if (backend == "etcd-v3") backend = "etcd";
    if (backend != "c10d" && backend != "static" && backend != "etcd") {
      return BadValue("rdzv-backend", *value, "c10d, static or etcd (alias etcd-v3)");
    }
    options.rdzv_backend = backend;
  }
  if (auto value = value_of("rdzv-endpoint")) options.rdzv_endpoint = *value;
  if (auto value = value_of("rdzv-id")) options.rdzv_id = *value;
  if (auto value = value_of("rdzv-conf")) options.rdzv_conf = *value;
  COHORT_RETURN_IF_ERROR(bool_of("standalone", &options.standalone));
  if (auto value = value_of("max-restarts")) {
    COHORT_ASSIGN_OR_RETURN(options.max_restarts, ParseInt("max-restarts", *value, 0, 1 << 30));
  }
  {
    // The flag, PET_ON_FAILURE, then COHORT_ON_FAILURE (the name the workers see it by).
    std::optional<std::string> value = value_of("on-failure");
    std::string named = "--on-failure";
    if (!value && Has(environment, "COHORT_ON_FAILURE")) {
      value = environment.at("COHORT_ON_FAILURE");
      options.sources["on-failure"] = named = "COHORT_ON_FAILURE";
    } else if (value && options.sources["on-failure"] != "flag") {
      named = options.sources["on-failure"];
    }
    if (value) {
      std::string mode = absl::AsciiStrToLower(absl::StripAsciiWhitespace(*value));
      if (mode != "restart" && mode != "shrink") {
        return absl::InvalidArgumentError(absl::StrCat(
            named, " \"", *value, "\" is not valid: it accepts restart (every worker stops and "
            "the job starts again, as torchrun) or shrink (the failed worker or lost node is "
            "removed and the survivors go on)"));
      }
      options.on_failure = mode;
    }
  }
  if (auto value = value_of("monitor-interval")) {
    if (!absl::SimpleAtod(*value, &options.monitor_interval_seconds) ||
        options.monitor_interval_seconds <= 0 || options.monitor_interval_seconds > 3600) {
      return BadValue("monitor-interval", *value, "seconds, more than 0 (e.g. 0.1 or 5)");
    }
  }
  if (auto value = value_of("start-method")) {
    if (*value != "spawn" && *value != "fork" && *value != "forkserver") {
      return BadValue("start-method", *value, "spawn, fork or forkserver");
    }
    options.start_method = *value;
  }
  if (auto value = value_of("role")) {
    if (value->empty()) return BadValue("role", *value, "a non-empty name");
    options.role = *value;
  }
  if (auto value = value_of("master-addr")) {
    options.master_addr = *value;
    options.master_addr_given = true;
  }
  if (auto value = value_of("master-port")) {
    COHORT_ASSIGN_OR_RETURN(options.master_port, ParseInt("master-port", *value, 1, 65534));
    options.master_port_given = true;
  }
  if (auto value = value_of("local-addr")) options.local_addr = *value;
  if (auto value = value_of("log-dir")) options.log_dir = *value;
  if (auto value = value_of("redirects")) {
    COHORT_ASSIGN_OR_RETURN(options.redirects, ParseStreamSpec(*value, "redirects"));
  }
  if (auto value = value_of("tee")) {
    COHORT_ASSIGN_OR_RETURN(options.tee, ParseStreamSpec(*value, "tee"));
  }
  if (auto value = value_of("local-ranks-filter")) {
    for (absl::string_view item : absl::StrSplit(*value, ',', absl::SkipWhitespace())) {
      int rank;
      if (!absl::SimpleAtoi(item, &rank) || rank < 0) {
        return BadValue("local-ranks-filter", *value, "comma-separated local ranks, e.g. 0,1");
      }
      options.local_ranks_filter.push_back(rank);
    }
  }
  COHORT_RETURN_IF_ERROR(bool_of("no-python", &options.no_python));
  COHORT_RETURN_IF_ERROR(bool_of("module", &options.module));
  COHORT_RETURN_IF_ERROR(bool_of("run-path", &options.run_path));
  if (auto value = value_of("signals-to-handle")) {
    options.signals_to_handle.clear();
    for (absl::string_view item : absl::StrSplit(*value, ',', absl::SkipWhitespace())) {
      std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(item));
      if (!absl::StartsWith(name, "SIG")) name = "SIG" + name;
      bool known = false;
      for (const auto& [signal_name, number] : SignalNames()) known |= name == signal_name;
      if (!known) {
        std::vector<std::string> names;
        for (const auto& [signal_name, number] : SignalNames()) names.push_back(signal_name);
        return BadValue("signals-to-handle", *value,
                        absl::StrCat("comma-separated signal names among ", absl::StrJoin(names, ", ")));
      }
      options.signals_to_handle.push_back(name);
    }
  }
  {
    std::vector<std::string> labels;
    auto flag_it = given.find("node-label");
    if (flag_it != given.end()) {
      labels = flag_it->second;
      options.sources["node-label"] = "flag";
    } else if (environment.contains("PET_NODE_LABEL")) {
      labels = absl::StrSplit(environment.at("PET_NODE_LABEL"), ',', absl::SkipWhitespace());
      options.sources["node-label"] = "PET_NODE_LABEL";
    }
    for (const std::string& label : labels) {
      size_t equals = label.find('=');
      if (equals == std::string::npos || equals == 0) {
        return BadValue("node-label", label, "key=value, e.g. rack=r1");
      }
      options.node_labels[label.substr(0, equals)] = label.substr(equals + 1);
    }
  }
  if (auto value = value_of("log-line-prefix-template")) {
    options.log_line_prefix_template = *value;
  } else if (environment.contains("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE")) {
    options.log_line_prefix_template = environment.at("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE");
    options.sources["log-line-prefix-template"] = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE";
  }
  COHORT_RETURN_IF_ERROR(bool_of("dry-run", &options.dry_run));

  // What torchrun derives.
  if (options.standalone) {
    options.rdzv_backend = "c10d";
    options.rdzv_endpoint = "localhost:0";
    options.rdzv_id = crypto::RandomHex(8);
    options.min_nodes = options.max_nodes = 1;
    options.sources["rdzv-endpoint"] = options.sources["rdzv-id"] = "--standalone";
  }
  if (options.rdzv_backend == "static") {
    if (options.min_nodes != options.max_nodes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--rdzv-backend static needs a fixed --nnodes, not ", options.min_nodes, ":",
          options.max_nodes, "; use --rdzv-backend c10d for an elastic range"));
    }
    if (options.node_rank < 0) options.node_rank = 0;
    if (options.rdzv_endpoint.empty()) {
      options.rdzv_endpoint = absl::StrCat(options.master_addr, ":", StorePortBesideMaster(options));
      options.sources["rdzv-endpoint"] = "--master-addr:--master-port";
    }
  } else if (options.rdzv_backend == "etcd") {
    // A scheduler's guess (its first host, port 29400) is where an embedded store would run,
    // not where etcd runs.
    const std::string& source = options.sources["rdzv-endpoint"];
    if (options.rdzv_endpoint.empty() || (source != "flag" && !absl::StartsWith(source, "PET_"))) {
      return absl::InvalidArgumentError(
          "--rdzv-backend etcd needs --rdzv-endpoint: etcd's client URLs, comma-separated (e.g. "
          "http://etcd0:2379,http://etcd1:2379,http://etcd2:2379)");
    }
    for (absl::string_view endpoint : absl::StrSplit(options.rdzv_endpoint, ',', absl::SkipWhitespace())) {
      endpoint = absl::StripAsciiWhitespace(endpoint);
      if (!absl::StrContains(endpoint, "://") && !absl::StrContains(endpoint, ':')) {
        return BadValue("rdzv-endpoint", std::string(endpoint),
                        "etcd client URLs (http://host:port, https://host:port) or host:port");
      }
      options.settings.etcd.endpoints.emplace_back(endpoint);
    }
  } else if (options.rdzv_endpoint.empty()) {
    if (options.max_nodes == 1 && !options.master_addr_given) {
      options.rdzv_endpoint = "localhost:0";  // one node: a private store
      options.sources["rdzv-endpoint"] = "single node";
    } else if (options.master_addr_given) {
      options.rdzv_endpoint = absl::StrCat(options.master_addr, ":", StorePortBesideMaster(options));
      options.sources["rdzv-endpoint"] = "--master-addr:--master-port";
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--nnodes ", options.min_nodes, ":", options.max_nodes,
          " spans nodes, so cohortrun needs to know where they meet: give --rdzv-endpoint "
          "host:port (a host of the job; it runs the store), or --master-addr"));
    }
  }
  options.settings.min_nodes = options.min_nodes;
  options.settings.max_nodes = options.max_nodes;
  options.settings.max_restarts = options.max_restarts;
  options.settings.shrink_on_failure = options.on_failure == "shrink";
  options.settings.static_ranks = options.rdzv_backend == "static";
  COHORT_RETURN_IF_ERROR(
      elastic::ParseRendezvousConf(options.rdzv_conf, &options.settings, &options.is_host));
  // The etcd password stays off the command line when it comes from the environment.
  if (options.settings.etcd.password.empty()) {
    options.settings.etcd.password = Get(environment, "COHORT_ETCD_PASSWORD");
  }
  if (options.training_script.empty() && !options.dry_run) {
    return absl::InvalidArgumentError(
        "missing the training script: cohortrun [flags] script.py [script args] (see --help)");
  }
  if (options.module && options.no_python) {
    return absl::InvalidArgumentError("--module and --no-python cannot be combined");
  }
  return options;
}

std::string Usage() {
  std::string out =
      "usage: cohortrun [flags] training_script [script args...]\n\n"
      "Launches nproc-per-node workers on each node, forms the job's ranks across nodes with an\n"
      "elastic coordinator, restarts the job when a worker or node fails (with --on-failure\n"
      "shrink: removes it, and the survivors go on), and prints a summary of the first\n"
      "failure. Flags are torchrun's, in --dash-case or --snake_case, each also\n"
      "settable as PET_<NAME> (e.g. PET_NPROC_PER_NODE=4); Slurm, dstack and Open MPI\n"
      "environments fill what neither gives. Flags win.\n\nflags:\n";
  for (const Flag& flag : Flags()) {
    std::string spelled = absl::StrCat("--", flag.name, flag.takes_value ? " V" : "");
    if (flag.short_name != nullptr) spelled = absl::StrCat(flag.short_name, ", ", spelled);
    absl::StrAppend(&out, "  ", spelled, std::string(spelled.size() < 30 ? 30 - spelled.size() : 1, ' '),
                    flag.help, "\n");
  }
  absl::StrAppend(&out,
                  "\nWorkers get torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, "
                  "...)\nplus COHORT_STORE_ADDR, COHORT_JOB_TOKEN, COHORT_JOB_ID, COHORT_HOST_ID "
                  "and\nCOHORT_GENERATION, COHORT_ON_FAILURE for the cohort backend. See "
                  "docs/launcher.md.\n");
  return out;
}

}  // namespace cohort::launcher
