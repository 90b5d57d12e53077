#include "elastic/rendezvous.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/config.h"
#include "nlohmann/json.hpp"

namespace cohort::elastic {
namespace {

using Json = nlohmann::json;

Json NodeToJson(const NodeInfo& node) {
  return Json{{"id", node.node_id},
              {"host", node.host},
              {"address", node.address},
              {"master_port", node.master_port},
              {"local_world_size", node.local_world_size},
              {"role", node.role},
              {"node_rank", node.node_rank},
              {"labels", node.labels}};
}

// Bounds of what a record may say: a world of up to kMaxNodes nodes of up to kMaxLocalRanks
// ranks each keeps every rank count and offset within an int.
constexpr int64_t kMaxNodes = 1 << 15;
constexpr int64_t kMaxLocalRanks = 1 << 15;

// An integer field within [min, max]; anything else (a float such as 1e300, which converting
// would be undefined, a string, a value out of range) throws, and ParseJson reports it.
int64_t Integer(const Json& object, const char* key, int64_t min, int64_t max) {
  const Json& value = object.at(key);
  bool fits = false;
  int64_t result = 0;
  if (value.is_number_unsigned()) {
    uint64_t unsigned_value = value.get<uint64_t>();
    fits = unsigned_value <= static_cast<uint64_t>(max);
    result = fits ? static_cast<int64_t>(unsigned_value) : 0;
  } else if (value.is_number_integer()) {
    result = value.get<int64_t>();
    fits = true;
  } else {
    throw std::invalid_argument(absl::StrCat("\"", key, "\" is not an integer"));
  }
  if (!fits || result < min || result > max) {
    throw std::out_of_range(
        absl::StrCat("\"", key, "\" is ", value.dump(), ", outside ", min, " to ", max));
  }
  return result;
}

int SmallInteger(const Json& object, const char* key, int64_t min, int64_t max) {
  return static_cast<int>(Integer(object, key, min, max));
}

constexpr int64_t kIntMin = std::numeric_limits<int>::min();
constexpr int64_t kIntMax = std::numeric_limits<int>::max();

NodeInfo NodeFromJson(const Json& json) {
  NodeInfo node;
  node.node_id = json.at("id").get<std::string>();
  node.host = json.at("host").get<std::string>();
  node.address = json.at("address").get<std::string>();
  node.master_port = SmallInteger(json, "master_port", 0, 65535);
  node.local_world_size = SmallInteger(json, "local_world_size", 0, kMaxLocalRanks);
  node.role = json.at("role").get<std::string>();
  node.node_rank = SmallInteger(json, "node_rank", -1, kMaxNodes);
  node.labels = json.at("labels").get<std::map<std::string, std::string>>();
  return node;
}

// Parses JSON the store holds, turning exceptions into a Status naming what was parsed.
template <typename T, typename F>
absl::StatusOr<T> ParseJson(const std::string& text, const char* what, F&& convert) {
  try {
    return convert(Json::parse(text));
  } catch (const std::exception& error) {
    return absl::DataLossError(
        absl::StrCat("malformed ", what, " in the rendezvous store: ", error.what()));
  }
}

absl::Status BadConf(absl::string_view entry, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "--rdzv-conf entry \"", entry, "\" is not valid: ", why,
      ". Accepted keys: join_timeout (alias timeout), last_call_timeout, close_timeout, "
      "heartbeat_interval (alias keep_alive_interval), heartbeat_timeout, "
      "keep_alive_max_attempt, read_timeout (durations such as 30, 30s, 500ms), is_host "
      "(true/false)"));
}

}  // namespace

int World::world_size() const {
  int total = 0;
  for (const NodeInfo& node : nodes) total += node.local_world_size;
  return total;
}

int World::GroupRank(const std::string& node_id) const {
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].node_id == node_id) return static_cast<int>(i);
  }
  return -1;
}

int World::RankOffset(int group_rank) const {
  int offset = 0;
  for (int i = 0; i < group_rank; ++i) offset += nodes[i].local_world_size;
  return offset;
}

int World::RoleRankOffset(int group_rank) const {
  int offset = 0;
  for (int i = 0; i < group_rank; ++i) {
    if (nodes[i].role == nodes[group_rank].role) offset += nodes[i].local_world_size;
  }
  return offset;
}

int World::RoleWorldSize(const std::string& role) const {
  int total = 0;
  for (const NodeInfo& node : nodes) {
    if (node.role == role) total += node.local_world_size;
  }
  return total;
}

absl::Status ParseRendezvousConf(const std::string& text, RendezvousSettings* settings,
                                 int* is_host) {
  *is_host = -1;
  int keep_alive_attempts = -1;
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    std::string key(absl::StripAsciiWhitespace(kv.first));
    std::string value(absl::StripAsciiWhitespace(kv.second));
    if (entry.find('=') == absl::string_view::npos) return BadConf(entry, "expected key=value");
    if (key == "is_host") {
      std::string lower = absl::AsciiStrToLower(value);
      if (lower == "1" || lower == "true" || lower == "yes") {
        *is_host = 1;
      } else if (lower == "0" || lower == "false" || lower == "no") {
        *is_host = 0;
      } else {
        return BadConf(entry, "is_host takes true or false");
      }
      continue;
    }
    if (key == "keep_alive_max_attempt") {
      if (!absl::SimpleAtoi(value, &keep_alive_attempts) || keep_alive_attempts < 1) {
        return BadConf(entry, "keep_alive_max_attempt takes a positive integer");
      }
      continue;
    }
    absl::Duration* target = nullptr;
    if (key == "join_timeout" || key == "timeout") {
      target = &settings->join_timeout;
    } else if (key == "last_call_timeout") {
      target = &settings->last_call_timeout;
    } else if (key == "close_timeout") {
      target = &settings->close_timeout;
    } else if (key == "heartbeat_interval" || key == "keep_alive_interval") {
      target = &settings->heartbeat_interval;
    } else if (key == "heartbeat_timeout") {
      target = &settings->heartbeat_timeout;
    } else if (key == "read_timeout") {
      target = &settings->read_timeout;
    } else {
      return BadConf(entry, absl::StrCat("unknown key \"", key, "\""));
    }
    auto duration = config::ParseDuration(value);
    if (!duration.ok()) return BadConf(entry, duration.status().message());
    *target = *duration;
  }
  if (keep_alive_attempts > 0) {
    settings->heartbeat_timeout = settings->heartbeat_interval * keep_alive_attempts;
  }
  if (settings->heartbeat_interval <= absl::ZeroDuration()) {
    return BadConf("heartbeat_interval", "must be more than 0");
  }
  if (settings->heartbeat_timeout <= settings->heartbeat_interval) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rdzv-conf: heartbeat_timeout (", absl::FormatDuration(settings->heartbeat_timeout),
                     ") must be longer than heartbeat_interval (",
                     absl::FormatDuration(settings->heartbeat_interval), ")"));
  }
  return absl::OkStatus();
}

std::vector<NodeInfo> OrderNodes(std::vector<NodeInfo> nodes, bool static_ranks) {
  if (static_ranks) {
    std::sort(nodes.begin(), nodes.end(), [](const NodeInfo& a, const NodeInfo& b) {
      return std::tie(a.node_rank, a.node_id) < std::tie(b.node_rank, b.node_id);
    });
    return nodes;
  }
  // Every label key any node has, in name order; a node without a key sorts before those with
  // it, so labelled groups stay contiguous.
  std::vector<std::string> label_keys;
  for (const NodeInfo& node : nodes) {
    for (const auto& [key, value] : node.labels) label_keys.push_back(key);
  }
  std::sort(label_keys.begin(), label_keys.end());
  label_keys.erase(std::unique(label_keys.begin(), label_keys.end()), label_keys.end());
  auto sort_key = [&](const NodeInfo& node) {
    std::vector<std::string> key;
    for (const std::string& label : label_keys) {
      auto it = node.labels.find(label);
      key.push_back(it == node.labels.end() ? std::string() : it->second);
    }
    key.push_back(node.host);
    key.push_back(node.node_id);
    return key;
  };
  std::sort(nodes.begin(), nodes.end(),
            [&](const NodeInfo& a, const NodeInfo& b) { return sort_key(a) < sort_key(b); });
  return nodes;
}

std::string EncodeNode(const NodeInfo& node) { return NodeToJson(node).dump(); }

absl::StatusOr<NodeInfo> DecodeNode(const std::string& text) {
  return ParseJson<NodeInfo>(text, "node", [](const Json& json) { return NodeFromJson(json); });
}

std::string EncodeWorld(const World& world) {
  Json nodes = Json::array();
  for (const NodeInfo& node : world.nodes) nodes.push_back(NodeToJson(node));
  return Json{{"generation", world.generation},
              {"restart_count", world.restart_count},
              {"nodes", nodes},
              {"master_addr", world.master_addr},
              {"master_port", world.master_port},
              {"worker_store", world.worker_store}}
      .dump();
}

absl::StatusOr<World> DecodeWorld(const std::string& text) {
  return ParseJson<World>(text, "world", [](const Json& json) {
    World world;
    world.generation = Integer(json, "generation", 0, INT64_MAX);
    world.restart_count = Integer(json, "restart_count", 0, INT64_MAX);
    const Json& nodes = json.at("nodes");
    if (!nodes.is_array() || nodes.size() > static_cast<size_t>(kMaxNodes)) {
      throw std::out_of_range(absl::StrCat("\"nodes\" is not a list of at most ", kMaxNodes,
                                           " nodes"));
    }
    for (const Json& node : nodes) world.nodes.push_back(NodeFromJson(node));
    world.master_addr = json.at("master_addr").get<std::string>();
    world.master_port = SmallInteger(json, "master_port", 0, 65535);
    world.worker_store = json.at("worker_store").get<std::string>();
    return world;
  });
}

std::string EncodeEnd(const GenerationEnd& end) {
  const char* kind = end.kind == GenerationEnd::Kind::kRestart     ? "restart"
                     : end.kind == GenerationEnd::Kind::kSucceeded ? "succeeded"
                                                                   : "failed";
  return Json{{"kind", kind}, {"reason", end.reason}, {"counted", end.counted}}.dump();
}

absl::StatusOr<GenerationEnd> DecodeEnd(const std::string& text) {
  return ParseJson<GenerationEnd>(text, "generation end", [](const Json& json) {
    GenerationEnd end;
    std::string kind = json.at("kind").get<std::string>();
    end.kind = kind == "restart"     ? GenerationEnd::Kind::kRestart
               : kind == "succeeded" ? GenerationEnd::Kind::kSucceeded
                                     : GenerationEnd::Kind::kFailed;
    end.reason = json.at("reason").get<std::string>();
    end.counted = json.at("counted").get<bool>();
    return end;
  });
}

std::string EncodeFailures(const std::vector<WorkerFailure>& failures) {
  Json list = Json::array();
  for (const WorkerFailure& failure : failures) {
    list.push_back(Json{{"host", failure.host},
                        {"node_id", failure.node_id},
                        {"rank", failure.rank},
                        {"local_rank", failure.local_rank},
                        {"pid", failure.pid},
                        {"exit_code", failure.exit_code},
                        {"time_ms", failure.time_ms},
                        {"error_file", failure.error_file},
                        {"message", failure.message},
                        {"traceback", failure.traceback}});
  }
  return list.dump();
}

absl::StatusOr<std::vector<WorkerFailure>> DecodeFailures(const std::string& text) {
  return ParseJson<std::vector<WorkerFailure>>(text, "failure report", [](const Json& json) {
    std::vector<WorkerFailure> failures;
    for (const Json& item : json) {
      WorkerFailure failure;
      failure.host = item.at("host").get<std::string>();
      failure.node_id = item.at("node_id").get<std::string>();
      failure.rank = SmallInteger(item, "rank", -1, kIntMax);
      failure.local_rank = SmallInteger(item, "local_rank", -1, kIntMax);
      failure.pid = SmallInteger(item, "pid", kIntMin, kIntMax);
      failure.exit_code = SmallInteger(item, "exit_code", kIntMin, kIntMax);
      failure.time_ms = Integer(item, "time_ms", INT64_MIN, INT64_MAX);
      failure.error_file = item.at("error_file").get<std::string>();
      failure.message = item.at("message").get<std::string>();
      failure.traceback = item.at("traceback").get<std::string>();
      failures.push_back(std::move(failure));
    }
    return failures;
  });
}

namespace keys {
std::string Node(const std::string& node_id) { return absl::StrCat("node/", node_id); }
std::string Waiting(const std::string& node_id) { return absl::StrCat(kWaitingPrefix, node_id); }
std::string Admit(const std::string& node_id) { return absl::StrCat("admit/", node_id); }
std::string Heartbeat(const std::string& node_id) { return absl::StrCat("hb/", node_id); }
std::string Left(const std::string& node_id) { return absl::StrCat(kLeftPrefix, node_id); }
std::string World(int64_t generation) { return absl::StrCat("gen/", generation, "/world"); }
std::string End(int64_t generation) { return absl::StrCat("gen/", generation, "/end"); }
std::string Failure(int64_t generation, const std::string& node_id) {
  return absl::StrCat(FailurePrefix(generation), node_id);
}
std::string FailurePrefix(int64_t generation) { return absl::StrCat("gen/", generation, "/failure/"); }
std::string Done(int64_t generation, const std::string& node_id) {
  return absl::StrCat(DonePrefix(generation), node_id);
}
std::string DonePrefix(int64_t generation) { return absl::StrCat("gen/", generation, "/done/"); }
std::string Ring(int64_t number) { return absl::StrCat("ring/", number); }
}  // namespace keys

}  // namespace cohort::elastic
