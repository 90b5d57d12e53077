#include "elastic/rendezvous.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/config.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "common/json_fields.h"

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

// Integer fields are read within [min, max] (JsonInt, common/json_fields.h): anything else (a
// float such as 1e300, which converting would be undefined, a string, a value out of range)
// throws, and ParseJson reports it.

NodeInfo NodeFromJson(const Json& json) {
  NodeInfo node;
  node.node_id = json.at("id").get<std::string>();
  node.host = json.at("host").get<std::string>();
  node.address = json.at("address").get<std::string>();
  node.master_port = JsonInt(json, "master_port", 0, 65535);
  node.local_world_size = JsonInt(json, "local_world_size", 0, kMaxLocalRanks);
  node.role = json.at("role").get<std::string>();
  node.node_rank = JsonInt(json, "node_rank", -1, kMaxNodes);
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
      "(true/false); for etcd: protocol (http/https), cacert, cert, key (file paths), user "
      "(alias username), password, etcd_prefix"));
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
    std::string* etcd_text = nullptr;
    if (key == "cacert") etcd_text = &settings->etcd.ca_file;
    if (key == "cert") etcd_text = &settings->etcd.cert_file;
    if (key == "key") etcd_text = &settings->etcd.key_file;
    if (key == "user" || key == "username") etcd_text = &settings->etcd.user;
    if (key == "password") etcd_text = &settings->etcd.password;
    if (key == "etcd_prefix") etcd_text = &settings->etcd.prefix;
    if (etcd_text != nullptr) {
      if (value.empty()) return BadConf(entry, absl::StrCat(key, " takes a value"));
      *etcd_text = value;
      continue;
    }
    if (key == "protocol") {
      std::string lower = absl::AsciiStrToLower(value);
      if (lower != "http" && lower != "https") return BadConf(entry, "protocol takes http or https");
      settings->etcd.protocol = lower;
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

namespace {

constexpr absl::string_view kWorldHeader = "cohort-world 1";

bool NeedsEscape(char c) {
  auto byte = static_cast<unsigned char>(c);
  return c == '%' || c == '\t' || c == '\n' || c == '=' || c == ';' || byte < 0x20 || byte == 0x7f;
}

void AppendField(std::string* out, absl::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : text) {
    if (NeedsEscape(c)) {
      auto byte = static_cast<unsigned char>(c);
      out->push_back('%');
      out->push_back(kHex[byte >> 4]);
      out->push_back(kHex[byte & 15]);
    } else {
      out->push_back(c);
    }
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool Unescape(absl::string_view field, std::string* out) {
  out->clear();
  if (field.find('%') == absl::string_view::npos) {
    out->assign(field.data(), field.size());
    return true;
  }
  out->reserve(field.size());
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '%') {
      out->push_back(field[i]);
      continue;
    }
    if (i + 2 >= field.size()) return false;
    int high = HexValue(field[i + 1]), low = HexValue(field[i + 2]);
    if (high < 0 || low < 0) return false;
    out->push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return true;
}

// Splits one line into exactly `count` tab-separated fields.
bool SplitFields(absl::string_view line, size_t count, absl::string_view* fields) {
  size_t found = 0;
  while (found + 1 < count) {
    size_t tab = line.find('\t');
    if (tab == absl::string_view::npos) return false;
    fields[found++] = line.substr(0, tab);
    line.remove_prefix(tab + 1);
  }
  if (line.find('\t') != absl::string_view::npos) return false;
  fields[found] = line;
  return true;
}

// The next line of `text` (without its newline); false at the end.
bool NextLine(absl::string_view* text, absl::string_view* line) {
  if (text->empty()) return false;
  size_t newline = text->find('\n');
  if (newline == absl::string_view::npos) {
    *line = *text;
    text->remove_prefix(text->size());
  } else {
    *line = text->substr(0, newline);
    text->remove_prefix(newline + 1);
  }
  return true;
}

// An integer field of the world text within [min, max]; false with `why` naming the field.
template <typename T>
bool TextInteger(absl::string_view field, const char* name, int64_t min, int64_t max, T* out,
                 std::string* why) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(field, &value)) {
    *why = absl::StrCat(name, " \"", field, "\" is not an integer");
    return false;
  }
  if (value < min || value > max) {
    *why = absl::StrCat(name, " is ", value, ", outside ", min, " to ", max);
    return false;
  }
  *out = static_cast<T>(value);
  return true;
}

absl::Status BadWorld(size_t line, absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("malformed world in the rendezvous store: line ", line, ": ", why,
                   " (run the same cohort version on every node)"));
}

}  // namespace

std::string EncodeWorld(const World& world) {
  std::string out;
  out.reserve(64 + world.nodes.size() * 96);
  absl::StrAppend(&out, kWorldHeader, "\n", world.generation, "\t", world.restart_count, "\t");
  AppendField(&out, world.master_addr);
  absl::StrAppend(&out, "\t", world.master_port, "\t");
  AppendField(&out, world.worker_store);
  absl::StrAppend(&out, "\t", world.nodes.size(), "\n");
  for (const NodeInfo& node : world.nodes) {
    AppendField(&out, node.node_id);
    out.push_back('\t');
    AppendField(&out, node.host);
    out.push_back('\t');
    AppendField(&out, node.address);
    absl::StrAppend(&out, "\t", node.master_port, "\t", node.local_world_size, "\t");
    AppendField(&out, node.role);
    absl::StrAppend(&out, "\t", node.node_rank, "\t");
    bool first = true;
    for (const auto& [key, value] : node.labels) {
      if (!first) out.push_back(';');
      first = false;
      AppendField(&out, key);
      out.push_back('=');
      AppendField(&out, value);
    }
    out.push_back('\n');
  }
  return out;
}

absl::StatusOr<World> DecodeWorld(absl::string_view text) {
  World world;
  absl::string_view line;
  if (!NextLine(&text, &line) || line != kWorldHeader) {
    return BadWorld(1, absl::StrCat("expected \"", kWorldHeader, "\""));
  }
  absl::string_view fields[8];
  if (!NextLine(&text, &line) || !SplitFields(line, 6, fields)) {
    return BadWorld(2, "expected 6 tab-separated fields");
  }
  int64_t count = 0;
  std::string why;
  if (!TextInteger(fields[0], "generation", 0, INT64_MAX, &world.generation, &why) ||
      !TextInteger(fields[1], "restart_count", 0, INT64_MAX, &world.restart_count, &why) ||
      !TextInteger(fields[3], "master_port", 0, 65535, &world.master_port, &why) ||
      !TextInteger(fields[5], "node count", 0, kMaxNodes, &count, &why)) {
    return BadWorld(2, why);
  }
  if (!Unescape(fields[2], &world.master_addr) || !Unescape(fields[4], &world.worker_store)) {
    return BadWorld(2, "master_addr or worker_store is not validly escaped");
  }
  // Each node takes at least 15 bytes, so a corrupt count cannot make us reserve much.
  if (static_cast<size_t>(count) > text.size() / 15 + 1) {
    return BadWorld(2, "more nodes than the text holds");
  }
  world.nodes.reserve(count);
  std::string label_key, label_value;
  for (int64_t i = 0; i < count; ++i) {
    size_t number = static_cast<size_t>(i) + 3;
    if (!NextLine(&text, &line) || !SplitFields(line, 8, fields)) {
      return BadWorld(number, "expected 8 tab-separated fields");
    }
    NodeInfo& node = world.nodes.emplace_back();
    if (!TextInteger(fields[3], "master_port", 0, 65535, &node.master_port, &why) ||
        !TextInteger(fields[4], "local_world_size", 0, kMaxLocalRanks, &node.local_world_size,
                     &why) ||
        !TextInteger(fields[6], "node_rank", -1, kMaxNodes, &node.node_rank, &why)) {
      return BadWorld(number, why);
    }
    if (!Unescape(fields[0], &node.node_id) || !Unescape(fields[1], &node.host) ||
        !Unescape(fields[2], &node.address) || !Unescape(fields[5], &node.role)) {
      return BadWorld(number, "a text field is not validly escaped");
    }
    absl::string_view labels = fields[7];
    while (!labels.empty()) {
      size_t end = labels.find(';');
      absl::string_view label = labels.substr(0, end);
      labels.remove_prefix(end == absl::string_view::npos ? labels.size() : end + 1);
      size_t equals = label.find('=');
      if (equals == absl::string_view::npos || !Unescape(label.substr(0, equals), &label_key) ||
          !Unescape(label.substr(equals + 1), &label_value)) {
        return BadWorld(number, "a label is not key=value");
      }
      node.labels[label_key] = label_value;
    }
  }
  if (!text.empty()) return BadWorld(count + 3, "text after the last node");
  return world;
}

std::string EncodeEnd(const GenerationEnd& end) {
  const char* kind = end.kind == GenerationEnd::Kind::kRestart     ? "restart"
                     : end.kind == GenerationEnd::Kind::kSucceeded ? "succeeded"
                                                                   : "failed";
  return Json{{"kind", kind}, {"reason", end.reason}, {"counted", end.counted},
              {"readers", end.readers}}
      .dump();
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
    if (json.contains("readers")) end.readers = JsonInteger(json, "readers", 0, kMaxNodes);
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
      failure.rank = JsonInt(item, "rank", -1, INT32_MAX);
      failure.local_rank = JsonInt(item, "local_rank", -1, INT32_MAX);
      failure.pid = JsonInt(item, "pid");
      failure.exit_code = JsonInt(item, "exit_code");
      failure.time_ms = JsonInteger(item, "time_ms", INT64_MIN, INT64_MAX);
      failure.error_file = item.at("error_file").get<std::string>();
      failure.message = item.at("message").get<std::string>();
      failure.traceback = item.at("traceback").get<std::string>();
      failures.push_back(std::move(failure));
    }
    return failures;
  });
}

absl::StatusOr<std::optional<AgentEvent>> DecodeInboxEntry(absl::string_view key,
                                                           const std::string& value,
                                                           int64_t revision) {
  if (!absl::ConsumePrefix(&key, keys::kInbox)) return std::optional<AgentEvent>();
  AgentEvent event;
  event.order = revision;
  std::vector<absl::string_view> parts = absl::StrSplit(key, absl::MaxSplits('/', 2));
  if (parts.size() == 2 && parts[0] == "join") {
    event.kind = AgentEvent::Kind::kJoined;
    event.node_id = std::string(parts[1]);
    COHORT_ASSIGN_OR_RETURN(event.info, DecodeNode(value));
    if (event.info.node_id != event.node_id) {
      return absl::DataLossError(absl::StrCat("join of node ", event.node_id,
                                              " carries the record of node ", event.info.node_id));
    }
  } else if (parts.size() == 2 && parts[0] == "left") {
    event.kind = AgentEvent::Kind::kLeft;
    event.node_id = std::string(parts[1]);
    event.reason = value;
  } else if (parts.size() == 3 && (parts[0] == "failure" || parts[0] == "done")) {
    if (!absl::SimpleAtoi(parts[1], &event.generation)) {
      return absl::DataLossError(absl::StrCat("bad generation in key ", key));
    }
    event.node_id = std::string(parts[2]);
    if (parts[0] == "done") {
      event.kind = AgentEvent::Kind::kDone;
    } else {
      event.kind = AgentEvent::Kind::kFailed;
      COHORT_ASSIGN_OR_RETURN(event.failures, DecodeFailures(value));
    }
  } else {
    return std::optional<AgentEvent>();
  }
  return std::optional<AgentEvent>(std::move(event));
}

namespace keys {
std::string Join(const std::string& node_id) { return absl::StrCat(kInbox, "join/", node_id); }
std::string Left(const std::string& node_id) { return absl::StrCat(kInbox, "left/", node_id); }
std::string Failure(int64_t generation, const std::string& node_id) {
  return absl::StrCat(FailurePrefix(generation), node_id);
}
std::string FailurePrefix(int64_t generation) {
  return absl::StrCat(kInbox, "failure/", generation, "/");
}
std::string Done(int64_t generation, const std::string& node_id) {
  return absl::StrCat(kInbox, "done/", generation, "/", node_id);
}
std::string Heartbeat(const std::string& node_id) { return absl::StrCat(kHeartbeatPrefix, node_id); }
std::string Admit(const std::string& node_id) { return absl::StrCat("admit/", node_id); }
std::string World(int64_t generation) { return absl::StrCat("gen/", generation, "/world"); }
std::string End(int64_t generation) { return absl::StrCat("gen/", generation, "/end"); }
}  // namespace keys

}  // namespace cohort::elastic
