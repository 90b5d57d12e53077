#include "elastic/etcd_backend.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "zlib.h"
#include "common/json_fields.h"

namespace cohort::elastic {
namespace {

using Json = nlohmann::json;
using etcd::Comparison;
using etcd::Operation;

// etcd's transactions take at most 128 operations by default (--max-txn-ops).
constexpr size_t kOperationsPerTransaction = 100;

namespace etcd_keys {
constexpr char kAgent[] = "agent/";
constexpr char kJoin[] = "join/";
constexpr char kLeft[] = "left/";
constexpr char kGeneration[] = "gen/";
constexpr char kExited[] = "exited/";
constexpr char kPublished[] = "pub/";
constexpr char kLeader[] = "pub/leader";
constexpr char kWorld[] = "pub/world";
constexpr char kEnd[] = "pub/end";
constexpr char kRefused[] = "pub/refused/";
constexpr char kClosed[] = "pub/closed";
constexpr char kState[] = "state";
constexpr char kToken[] = "token";
}  // namespace etcd_keys

std::string Failure(int64_t generation, const std::string& node_id) {
  return absl::StrCat(etcd_keys::kGeneration, generation, "/failure/", node_id);
}
std::string Done(int64_t generation, const std::string& node_id) {
  return absl::StrCat(etcd_keys::kGeneration, generation, "/done/", node_id);
}

int64_t LeaseSeconds(const RendezvousSettings& settings) {
  // etcd does not grant leases much shorter than 1.5 election timeouts (1.5 s by default).
  double seconds = std::ceil(absl::ToDoubleSeconds(settings.heartbeat_timeout));
  return std::max<int64_t>(2, static_cast<int64_t>(seconds));
}

// The world as etcd keeps it: deflated, since every agent's watch receives it (base64 inside
// JSON: for 1,024 nodes the plain text is ~60 KB, so each round moved ~80 MB through etcd's
// gateway and the agents' parsers). "cohort-world-z <length>\n" then zlib's stream.
constexpr absl::string_view kDeflatedWorld = "cohort-world-z ";

std::string DeflateWorld(const World& world) {
  std::string text = EncodeWorld(world);
  uLongf size = compressBound(text.size());
  std::string out = absl::StrCat(kDeflatedWorld, text.size(), "\n");
  size_t header = out.size();
  out.resize(header + size);
  if (compress2(reinterpret_cast<Bytef*>(out.data() + header), &size,
                reinterpret_cast<const Bytef*>(text.data()), text.size(), Z_BEST_SPEED) != Z_OK) {
    return text;  // the plain form reads as well
  }
  out.resize(header + size);
  return out;
}

absl::StatusOr<World> InflateWorld(const std::string& value) {
  absl::string_view rest = value;
  if (!absl::ConsumePrefix(&rest, kDeflatedWorld)) return DecodeWorld(value);
  size_t newline = rest.find('\n');
  uLongf length = 0;
  if (newline == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, newline), &length) ||
      length > (uLongf{1} << 30)) {
    return absl::DataLossError("malformed deflated world in etcd");
  }
  rest.remove_prefix(newline + 1);
  std::string text(length, '\0');
  uLongf produced = length;
  if (uncompress(reinterpret_cast<Bytef*>(text.data()), &produced,
                 reinterpret_cast<const Bytef*>(rest.data()), rest.size()) != Z_OK ||
      produced != length) {
    return absl::DataLossError("the deflated world in etcd does not inflate");
  }
  return DecodeWorld(text);
}

std::string EncodePublishedEnd(int64_t generation, const GenerationEnd& end) {
  return Json{{"generation", generation}, {"end", EncodeEnd(end)}}.dump();
}

absl::StatusOr<std::pair<int64_t, GenerationEnd>> DecodePublishedEnd(const std::string& text) {
  Json json = Json::parse(text, nullptr, false);
  if (!json.is_object() || !json.contains("generation") || !json["generation"].is_number_integer() ||
      !json.contains("end") || !json["end"].is_string()) {
    return absl::DataLossError("malformed generation end in etcd");
  }
  COHORT_ASSIGN_OR_RETURN(GenerationEnd end, DecodeEnd(json["end"].get<std::string>()));
  return std::make_pair(json["generation"].get<int64_t>(), end);
}

std::string EncodeState(const CoordinatorState& state, int64_t considered_revision) {
  Json members = Json::array();
  for (const NodeInfo& member : state.members) members.push_back(member.node_id);
  return Json{{"generation", state.generation},
              {"restarts", state.restarts},
              {"running", state.running},
              {"finished", state.finished},
              {"members", members},
              {"expected", state.expected},
              {"waiting", state.waiting},
              {"lost", state.lost},
              {"host", state.host},
              {"considered_revision", considered_revision}}
      .dump();
}

struct SavedState {
  CoordinatorState state;
  std::vector<std::string> member_ids;
  int64_t considered_revision = 0;
};

absl::StatusOr<SavedState> DecodeState(const std::string& text) {
  try {
    Json json = Json::parse(text);
    SavedState saved;
    saved.state.generation = JsonInteger(json, "generation", 0, INT64_MAX);
    saved.state.restarts = JsonInteger(json, "restarts", 0, INT64_MAX);
    saved.state.running = json.at("running").get<bool>();
    saved.state.finished = json.at("finished").get<bool>();
    saved.member_ids = json.at("members").get<std::vector<std::string>>();
    saved.state.expected = json.at("expected").get<std::vector<std::string>>();
    saved.state.waiting = json.at("waiting").get<std::vector<std::string>>();
    saved.state.lost = json.at("lost").get<std::vector<std::string>>();
    saved.state.host = json.at("host").get<std::string>();
    saved.considered_revision = JsonInteger(json, "considered_revision", 0, INT64_MAX);
    return saved;
  } catch (const std::exception& error) {
    return absl::DataLossError(
        absl::StrCat("malformed coordinator state in etcd: ", error.what()));
  }
}

// The coordinator's side on etcd: recovers P/ when it takes the role, then follows P/.
class EtcdCoordinatorBackend final : public CoordinatorBackend {
 public:
  EtcdCoordinatorBackend(std::unique_ptr<etcd::Client> client, std::string prefix,
                         std::string node_id, RendezvousSettings settings)
      : client_(std::move(client)),
        prefix_(std::move(prefix)),
        node_id_(std::move(node_id)),
        settings_(std::move(settings)) {}

  absl::StatusOr<std::optional<CoordinatorState>> Recover(
      std::vector<AgentEvent>* pending) override {
    COHORT_ASSIGN_OR_RETURN(etcd::RangeResponse all, client_->RangePrefix(prefix_));
    last_event_revision_ = all.revision;
    std::optional<SavedState> saved;
    std::optional<World> world;
    std::set<std::string> alive;
    std::vector<std::pair<int64_t, AgentEvent>> joins;
    std::vector<etcd::KeyValue> reports;
    for (const etcd::KeyValue& kv : all.kvs) {
      absl::string_view key = kv.key;
      if (!absl::ConsumePrefix(&key, prefix_)) continue;
      if (key == etcd_keys::kState) {
        auto decoded = DecodeState(kv.value);
        if (!decoded.ok()) return decoded.status();
        saved = std::move(*decoded);
      } else if (key == etcd_keys::kWorld) {
        auto decoded = InflateWorld(kv.value);
        if (decoded.ok()) world = std::move(*decoded);
      } else if (absl::ConsumePrefix(&key, etcd_keys::kAgent)) {
        alive.insert(std::string(key));
        hosts_[std::string(key)] = kv.value;
      } else {
        reports.push_back(kv);
      }
    }
    std::optional<CoordinatorState> state;
    if (saved) {
      state = saved->state;
      std::map<std::string, NodeInfo> known;
      if (world) {
        for (const NodeInfo& node : world->nodes) known[node.node_id] = node;
      }
      for (const std::string& node_id : saved->member_ids) {
        auto found = known.find(node_id);
        NodeInfo member;
        if (found != known.end()) {
          member = found->second;
        } else {
          member.node_id = node_id;
          member.host = HostOf(node_id);
        }
        hosts_[node_id] = member.host;
        state->members.push_back(member);
      }
    }
    std::set<std::string> waited;
    if (saved) waited.insert(saved->state.waiting.begin(), saved->state.waiting.end());
    for (const etcd::KeyValue& kv : reports) {
      auto event = ToEvent(kv, /*deleted=*/false);
      if (!event) continue;
      if (event->kind == AgentEvent::Kind::kJoined) {
        // Joins the last coordinator acted on are spent, unless it left them waiting.
        if (saved && kv.mod_revision <= saved->considered_revision &&
            !waited.contains(event->node_id)) {
          continue;
        }
        joins.emplace_back(kv.mod_revision, std::move(*event));
      } else if (event->kind == AgentEvent::Kind::kFailed || event->kind == AgentEvent::Kind::kDone) {
        if (event->generation == (state ? state->generation : 1)) pending->push_back(std::move(*event));
      } else {
        pending->push_back(std::move(*event));
      }
    }
    std::sort(joins.begin(), joins.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [revision, event] : joins) pending->push_back(std::move(event));
    // Nodes the state counts on whose lease is gone died while nobody coordinated.
    if (state) {
      std::set<std::string> counted(state->expected.begin(), state->expected.end());
      if (state->running) {
        for (const NodeInfo& member : state->members) counted.insert(member.node_id);
      }
      for (const std::string& node_id : counted) {
        if (alive.contains(node_id)) continue;
        AgentEvent lost;
        lost.kind = AgentEvent::Kind::kLost;
        lost.node_id = node_id;
        lost.reason = LostReason(node_id);
        pending->push_back(std::move(lost));
      }
    }
    COHORT_ASSIGN_OR_RETURN(watch_, client_->StartWatch(prefix_, etcd::Client::PrefixEnd(prefix_),
                                                        all.revision + 1));
    return state;
  }

  absl::StatusOr<std::vector<AgentEvent>> Poll(absl::Duration wait) override {
    COHORT_ASSIGN_OR_RETURN(std::vector<etcd::WatchEvent> changes,
                            watch_->Next(Deadline::In(wait)));
    std::vector<AgentEvent> events;
    for (const etcd::WatchEvent& change : changes) {
      last_event_revision_ = std::max(last_event_revision_, change.kv.mod_revision);
      auto event = ToEvent(change.kv, change.deleted);
      if (event) events.push_back(std::move(*event));
    }
    return events;
  }

  absl::Status PublishWorld(const World& world, const CoordinatorState& state) override {
    return Guarded({Operation::Put(prefix_ + etcd_keys::kWorld, DeflateWorld(world)),
                    Operation::Put(prefix_ + etcd_keys::kState,
                                   EncodeState(state, last_event_revision_))});
  }

  absl::Status PublishEnd(int64_t generation, const GenerationEnd& end,
                          const CoordinatorState& state) override {
    std::vector<Operation> operations = {
        Operation::Put(prefix_ + etcd_keys::kEnd, EncodePublishedEnd(generation, end)),
        Operation::Put(prefix_ + etcd_keys::kState, EncodeState(state, last_event_revision_))};
    if (state.finished) operations.push_back(Operation::Put(prefix_ + etcd_keys::kClosed, end.reason));
    return Guarded(operations);
  }

  absl::Status Refuse(const std::vector<std::string>& node_ids, const std::string& why) override {
    std::vector<Operation> operations;
    for (const std::string& node_id : node_ids) {
      operations.push_back(Operation::Put(prefix_ + etcd_keys::kRefused + node_id, why));
      if (operations.size() == kOperationsPerTransaction) {
        COHORT_RETURN_IF_ERROR(Guarded(operations));
        operations.clear();
      }
    }
    return operations.empty() ? absl::OkStatus() : Guarded(operations);
  }

 private:
  // Writes only while this agent holds the role.
  absl::Status Guarded(const std::vector<Operation>& operations) {
    COHORT_ASSIGN_OR_RETURN(
        etcd::TxnResponse response,
        client_->Txn({Comparison::ValueEquals(prefix_ + etcd_keys::kLeader, node_id_)}, operations));
    if (!response.succeeded) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this agent no longer holds the coordinator role (", prefix_, etcd_keys::kLeader,
          " changed in ", client_->Describe(), ")"));
    }
    return absl::OkStatus();
  }

  std::string HostOf(const std::string& node_id) const {
    auto found = hosts_.find(node_id);
    return found == hosts_.end() ? node_id : found->second;
  }

  std::string LostReason(const std::string& node_id) const {
    return absl::StrCat("node ", HostOf(node_id), " lost: its etcd lease expired (no keep-alive for ",
                        LeaseSeconds(settings_), " s)");
  }

  // The agents' keys as events; nullopt for the others.
  std::optional<AgentEvent> ToEvent(const etcd::KeyValue& kv, bool deleted) {
    absl::string_view key = kv.key;
    if (!absl::ConsumePrefix(&key, prefix_)) return std::nullopt;
    AgentEvent event;
    if (absl::ConsumePrefix(&key, etcd_keys::kAgent)) {
      std::string node_id(key);
      if (!deleted) {
        hosts_[node_id] = kv.value;
        return std::nullopt;
      }
      event.kind = AgentEvent::Kind::kLost;
      event.node_id = node_id;
      event.reason = LostReason(node_id);
      return event;
    }
    if (deleted) return std::nullopt;
    if (absl::ConsumePrefix(&key, etcd_keys::kJoin)) {
      auto info = DecodeNode(kv.value);
      if (!info.ok() || info->node_id != key) {
        COHORT_LOG(WARN) << "ignoring the join " << kv.key << " in etcd: "
                         << (info.ok() ? "it names another node" : info.status().message());
        return std::nullopt;
      }
      event.kind = AgentEvent::Kind::kJoined;
      event.node_id = std::string(key);
      event.info = std::move(*info);
      event.order = kv.mod_revision;
      hosts_[event.node_id] = event.info.host;
      return event;
    }
    if (absl::ConsumePrefix(&key, etcd_keys::kLeft)) {
      event.kind = AgentEvent::Kind::kLeft;
      event.node_id = std::string(key);
      event.reason = kv.value;
      return event;
    }
    if (absl::ConsumePrefix(&key, etcd_keys::kGeneration)) {
      std::vector<absl::string_view> parts = absl::StrSplit(key, absl::MaxSplits('/', 2));
      if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &event.generation)) return std::nullopt;
      event.node_id = std::string(parts[2]);
      if (parts[1] == "done") {
        event.kind = AgentEvent::Kind::kDone;
        return event;
      }
      if (parts[1] != "failure") return std::nullopt;
      auto failures = DecodeFailures(kv.value);
      if (!failures.ok()) {
        COHORT_LOG(WARN) << "ignoring " << kv.key << ": " << failures.status().message();
        return std::nullopt;
      }
      event.kind = AgentEvent::Kind::kFailed;
      event.failures = std::move(*failures);
      return event;
    }
    return std::nullopt;
  }

  std::unique_ptr<etcd::Client> client_;
  const std::string prefix_;
  const std::string node_id_;
  const RendezvousSettings settings_;
  std::unique_ptr<etcd::Watch> watch_;
  int64_t last_event_revision_ = 0;
  std::map<std::string, std::string> hosts_;
};

}  // namespace

etcd::ClientOptions EtcdClientOptions(const RendezvousSettings& settings) {
  etcd::ClientOptions options;
  for (const std::string& endpoint : settings.etcd.endpoints) {
    options.endpoints.push_back(absl::StrContains(endpoint, "://")
                                    ? endpoint
                                    : absl::StrCat(settings.etcd.protocol, "://", endpoint));
  }
  options.ca_file = settings.etcd.ca_file;
  options.cert_file = settings.etcd.cert_file;
  options.key_file = settings.etcd.key_file;
  options.user = settings.etcd.user;
  options.password = settings.etcd.password;
  options.request_timeout = std::max(absl::Seconds(5), std::min(settings.read_timeout, absl::Seconds(30)));
  return options;
}

std::string EtcdJobPrefix(const RendezvousSettings& settings, const std::string& job_id) {
  std::string prefix = settings.etcd.prefix;
  while (absl::EndsWith(prefix, "/")) prefix.pop_back();
  return absl::StrCat(prefix, "/", job_id, "/");
}

absl::StatusOr<std::unique_ptr<EtcdAgentBackend>> EtcdAgentBackend::Connect(
    const EtcdAgentOptions& options) {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<etcd::Client> client,
                          etcd::Client::Connect(EtcdClientOptions(options.settings)));
  auto backend = std::unique_ptr<EtcdAgentBackend>(new EtcdAgentBackend(options, std::move(client)));
  COHORT_RETURN_IF_ERROR(backend->Start());
  return backend;
}

EtcdAgentBackend::EtcdAgentBackend(EtcdAgentOptions options, std::unique_ptr<etcd::Client> client)
    : options_(std::move(options)),
      prefix_(EtcdJobPrefix(options_.settings, options_.job_id)),
      client_(std::move(client)) {}

absl::Status EtcdAgentBackend::Start() {
  COHORT_ASSIGN_OR_RETURN(lease_, client_->GrantLease(LeaseSeconds(options_.settings)));
  auto announced = client_->Txn(
      {Comparison::Version(prefix_ + etcd_keys::kClosed, Comparison::Result::kEqual, 0)},
      {Operation::Put(prefix_ + etcd_keys::kAgent + options_.node_id, options_.host, lease_)},
      {Operation::Range(prefix_ + etcd_keys::kClosed)});
  if (!announced.ok()) {
    if (announced.status().code() == absl::StatusCode::kPermissionDenied &&
        !options_.settings.etcd.user.empty()) {
      return absl::PermissionDeniedError(absl::StrCat(
          announced.status().message(), ": etcd user \"", options_.settings.etcd.user,
          "\" needs read-write access to the keys under ", prefix_,
          " (etcdctl role grant-permission ROLE --prefix=true readwrite ",
          options_.settings.etcd.prefix, "/)"));
    }
    return announced.status();
  }
  if (!announced->succeeded) {
    std::string why = announced->ranges.empty() || announced->ranges[0].kvs.empty()
                          ? std::string()
                          : announced->ranges[0].kvs[0].value;
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", options_.job_id, " already ended in ", client_->Describe(), " (", why,
        "); give this run another --rdzv-id, or remove the old job's keys: etcdctl del --prefix ",
        prefix_));
  }
  job_token_ = options_.coordinator.token;
  if (job_token_.empty()) {
    const std::string key = prefix_ + etcd_keys::kToken;
    COHORT_ASSIGN_OR_RETURN(
        etcd::TxnResponse shared,
        client_->Txn({Comparison::CreateRevision(key, Comparison::Result::kEqual, 0)},
                     {Operation::Put(key, crypto::RandomHex(16))}, {Operation::Range(key)}));
    if (shared.succeeded) {
      COHORT_ASSIGN_OR_RETURN(etcd::RangeResponse created, client_->Range(key));
      if (!created.kvs.empty()) job_token_ = created.kvs[0].value;
    } else if (!shared.ranges.empty() && !shared.ranges[0].kvs.empty()) {
      job_token_ = shared.ranges[0].kvs[0].value;
    }
    if (job_token_.empty()) return absl::InternalError("no job token in etcd");
  }
  const std::string published = prefix_ + etcd_keys::kPublished;
  COHORT_ASSIGN_OR_RETURN(etcd::RangeResponse current, client_->RangePrefix(published));
  {
    absl::MutexLock lock(&mutex_);
    for (const etcd::KeyValue& kv : current.kvs) Apply(etcd::WatchEvent{false, kv});
    ends_.clear();  // the ends of generations before this agent came are not its news
  }
  COHORT_ASSIGN_OR_RETURN(watch_, client_->StartWatch(published, etcd::Client::PrefixEnd(published),
                                                      current.revision + 1));
  return absl::OkStatus();
}

EtcdAgentBackend::~EtcdAgentBackend() {
  absl::MutexLock lock(&role_mutex_);
  coordinator_.reset();
}

void EtcdAgentBackend::Close() {
  {
    absl::MutexLock lock(&role_mutex_);
    coordinator_.reset();
  }
  // The keys on the lease (the agent, its join, the leader key) go now, not when it expires.
  if (lease_ != 0) (void)client_->RevokeLease(lease_);
  lease_ = 0;
}

std::string EtcdAgentBackend::Describe() const {
  return absl::StrCat(client_->Describe(), " (keys under ", prefix_, ")");
}

absl::Status EtcdAgentBackend::Beat() {
  absl::Status alive = client_->KeepAlive(lease_);
  if (alive.code() == absl::StatusCode::kNotFound) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this node's lease expired: it could not reach etcd for longer than heartbeat_timeout (",
        LeaseSeconds(options_.settings), " s), so the coordinator dropped it; check the network "
        "between this node and etcd"));
  }
  return alive;
}

void EtcdAgentBackend::Apply(const etcd::WatchEvent& event) {
  absl::string_view key = event.kv.key;
  if (!absl::ConsumePrefix(&key, prefix_)) return;
  if (key == etcd_keys::kLeader) {
    leader_ = event.deleted ? std::string() : event.kv.value;
  } else if (key == etcd_keys::kWorld && !event.deleted) {
    auto world = InflateWorld(event.kv.value);
    if (!world.ok()) {
      COHORT_LOG(WARN) << "ignoring the world in etcd: " << world.status().message();
      return;
    }
    world_ = std::move(*world);
    world_revision_ = event.kv.mod_revision;
  } else if (key == etcd_keys::kEnd && !event.deleted) {
    auto end = DecodePublishedEnd(event.kv.value);
    if (end.ok()) ends_.push_back(std::move(*end));
  } else if (absl::ConsumePrefix(&key, etcd_keys::kRefused) && key == options_.node_id &&
             !event.deleted) {
    refused_ = event.kv.value;
    refused_revision_ = event.kv.mod_revision;
  }
}

absl::StatusOr<News> EtcdAgentBackend::WaitForNews(const Interest& interest, Deadline deadline) {
  COHORT_RETURN_IF_ERROR(TendRole());
  auto changes = watch_->Next(deadline);
  if (changes.status().code() == absl::StatusCode::kOutOfRange) {
    // etcd compacted what the watch had yet to read (it was away long): read the published
    // keys as they are now and follow them from there.
    COHORT_LOG(WARN) << changes.status().message() << "; reading " << prefix_ << "pub/ again";
    const std::string published = prefix_ + etcd_keys::kPublished;
    COHORT_ASSIGN_OR_RETURN(etcd::RangeResponse current, client_->RangePrefix(published));
    std::vector<etcd::WatchEvent> replayed;
    for (const etcd::KeyValue& kv : current.kvs) replayed.push_back(etcd::WatchEvent{false, kv});
    {
      absl::MutexLock lock(&mutex_);
      if (std::none_of(current.kvs.begin(), current.kvs.end(), [&](const etcd::KeyValue& kv) {
            return kv.key == prefix_ + etcd_keys::kLeader;
          })) {
        leader_.clear();
      }
    }
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<etcd::Watch> fresh,
                            client_->StartWatch(published, etcd::Client::PrefixEnd(published),
                                                current.revision + 1));
    {
      absl::MutexLock lock(&watch_mutex_);
      watch_.swap(fresh);
      if (interrupted_) watch_->Interrupt();
    }
    changes = std::move(replayed);
  }
  if (!changes.ok()) return changes.status();
  News news;
  bool leader_changed = false;
  {
    absl::MutexLock lock(&mutex_);
    std::string before = leader_;
    for (const etcd::WatchEvent& change : *changes) Apply(change);
    leader_changed = leader_ != before;
    if (interest.admission && joined_ && join_revision_ > 0) {
      if (world_ && world_revision_ > join_revision_ && world_->GroupRank(options_.node_id) >= 0) {
        news.admitted = world_->generation;
        news.world = *world_;
        joined_ = false;
      } else if (refused_ && refused_revision_ > join_revision_) {
        news.refused = *refused_;
        joined_ = false;
      }
    }
    news.ends.swap(ends_);
  }
  if (leader_changed) COHORT_RETURN_IF_ERROR(TendRole());
  return news;
}

void EtcdAgentBackend::Interrupt() {
  absl::MutexLock lock(&watch_mutex_);
  interrupted_ = true;
  watch_->Interrupt();
}

std::string EtcdAgentBackend::leader() const {
  absl::MutexLock lock(&mutex_);
  return leader_;
}

bool EtcdAgentBackend::RunsCoordinator() const {
  absl::MutexLock lock(&role_mutex_);
  return coordinator_ != nullptr && !coordinator_->stopped();
}

absl::Status EtcdAgentBackend::TendRole() {
  if (!options_.campaign) return absl::OkStatus();
  absl::MutexLock role_lock(&role_mutex_);
  if (coordinator_ != nullptr && coordinator_->stopped()) {
    COHORT_LOG(WARN) << "the coordinator on " << options_.host
                     << " stopped: " << coordinator_->status().message();
    coordinator_.reset();
  }
  std::string leader = this->leader();
  if (leader.empty()) {
    const std::string key = prefix_ + etcd_keys::kLeader;
    COHORT_ASSIGN_OR_RETURN(
        etcd::TxnResponse campaign,
        client_->Txn({Comparison::CreateRevision(key, Comparison::Result::kEqual, 0)},
                     {Operation::Put(key, options_.node_id, lease_)}, {Operation::Range(key)}));
    if (campaign.succeeded) {
      leader = options_.node_id;
    } else if (!campaign.ranges.empty() && !campaign.ranges[0].kvs.empty()) {
      leader = campaign.ranges[0].kvs[0].value;
    }
    absl::MutexLock lock(&mutex_);
    if (leader_.empty()) leader_ = leader;
  }
  if (leader == options_.node_id && coordinator_ == nullptr) {
    COHORT_LOG(INFO) << "this agent (" << options_.host << ") holds the coordinator role";
    COHORT_ASSIGN_OR_RETURN(std::unique_ptr<etcd::Client> client,
                            etcd::Client::Connect(client_->options()));
    auto backend = std::make_unique<EtcdCoordinatorBackend>(std::move(client), prefix_,
                                                            options_.node_id, options_.settings);
    CoordinatorOptions coordinator = options_.coordinator;
    coordinator.token = job_token_;
    // The workers reach the store where etcd reaches this agent, unless told otherwise.
    if (coordinator.worker_store_public_host.empty()) {
      coordinator.worker_store_public_host = client_->LocalAddress();
    }
    COHORT_ASSIGN_OR_RETURN(coordinator_, Coordinator::Start(coordinator, std::move(backend)));
  } else if (leader != options_.node_id && coordinator_ != nullptr) {
    COHORT_LOG(WARN) << "this agent (" << options_.host << ") lost the coordinator role to "
                     << (leader.empty() ? std::string("nobody yet") : leader);
    coordinator_.reset();
  }
  return absl::OkStatus();
}

absl::Status EtcdAgentBackend::Join(const NodeInfo& info) {
  {
    absl::MutexLock lock(&mutex_);
    joined_ = true;
    join_revision_ = 0;
  }
  COHORT_ASSIGN_OR_RETURN(
      etcd::TxnResponse joined,
      client_->Txn(
          {Comparison::Version(prefix_ + etcd_keys::kClosed, Comparison::Result::kEqual, 0),
           Comparison::Version(prefix_ + etcd_keys::kAgent + options_.node_id,
                               Comparison::Result::kGreater, 0)},
          {Operation::Put(prefix_ + etcd_keys::kJoin + options_.node_id, EncodeNode(info), lease_)},
          {Operation::Range(prefix_ + etcd_keys::kClosed)}));
  if (!joined.succeeded) {
    if (!joined.ranges.empty() && !joined.ranges[0].kvs.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the job has already finished (", joined.ranges[0].kvs[0].value, "); its keys are under ",
          prefix_, " in ", client_->Describe()));
    }
    absl::Status alive = Beat();  // the lease is gone: say so
    return alive.ok() ? absl::InternalError("the join transaction failed") : alive;
  }
  {
    absl::MutexLock lock(&mutex_);
    join_revision_ = joined.revision;
  }
  // The heartbeat thread may hold the world already: let it look again.
  absl::MutexLock lock(&watch_mutex_);
  watch_->Wake();
  return absl::OkStatus();
}

absl::StatusOr<World> EtcdAgentBackend::FetchWorld(int64_t generation) {
  {
    absl::MutexLock lock(&mutex_);
    if (world_ && world_->generation == generation) return *world_;
  }
  COHORT_ASSIGN_OR_RETURN(etcd::RangeResponse range, client_->Range(prefix_ + etcd_keys::kWorld));
  if (range.kvs.empty()) return absl::NotFoundError(absl::StrCat("no world in ", Describe()));
  COHORT_ASSIGN_OR_RETURN(World world, InflateWorld(range.kvs[0].value));
  if (world.generation != generation) {
    return absl::FailedPreconditionError(absl::StrCat("the world of generation ", generation,
                                                      " was replaced by generation ",
                                                      world.generation, "'s"));
  }
  return world;
}

absl::Status EtcdAgentBackend::ReportFailures(int64_t generation,
                                              const std::vector<WorkerFailure>& failures) {
  return client_->Put(prefix_ + Failure(generation, options_.node_id), EncodeFailures(failures))
      .status();
}

absl::Status EtcdAgentBackend::ReportDone(int64_t generation) {
  return client_->Put(prefix_ + Done(generation, options_.node_id), "1").status();
}

absl::Status EtcdAgentBackend::Leave(const std::string& reason) {
  COHORT_RETURN_IF_ERROR(client_->Put(prefix_ + etcd_keys::kLeft + options_.node_id, reason).status());
  {
    absl::MutexLock lock(&role_mutex_);
    coordinator_.reset();
  }
  if (lease_ != 0) {
    (void)client_->RevokeLease(lease_);
    lease_ = 0;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WorkerFailure>> EtcdAgentBackend::Failures(int64_t generation) {
  COHORT_ASSIGN_OR_RETURN(
      etcd::RangeResponse range,
      client_->RangePrefix(absl::StrCat(prefix_, etcd_keys::kGeneration, generation, "/failure/")));
  std::vector<WorkerFailure> all;
  for (const etcd::KeyValue& kv : range.kvs) {
    COHORT_ASSIGN_OR_RETURN(std::vector<WorkerFailure> failures, DecodeFailures(kv.value));
    all.insert(all.end(), failures.begin(), failures.end());
  }
  return all;
}

absl::StatusOr<int64_t> EtcdAgentBackend::AcknowledgeEnd() {
  COHORT_RETURN_IF_ERROR(
      client_->Put(prefix_ + etcd_keys::kExited + options_.node_id, "1").status());
  return AcknowledgedCount();
}

absl::StatusOr<int64_t> EtcdAgentBackend::AcknowledgedCount() {
  const std::string prefix = prefix_ + etcd_keys::kExited;
  COHORT_ASSIGN_OR_RETURN(etcd::RangeResponse range,
                          client_->Range(prefix, etcd::Client::PrefixEnd(prefix), 0, true));
  return range.count;
}

absl::StatusOr<int64_t> EtcdAgentBackend::RefusedCount() {
  const std::string prefix = prefix_ + etcd_keys::kRefused;
  COHORT_ASSIGN_OR_RETURN(etcd::RangeResponse range,
                          client_->Range(prefix, etcd::Client::PrefixEnd(prefix), 0, true));
  return range.count;
}

absl::Status EtcdAgentBackend::RemoveJobKeys() {
  {
    absl::MutexLock lock(&role_mutex_);
    coordinator_.reset();
  }
  // Only a job that ended for good: an agent that stops early leaves the others their keys.
  return client_
      ->Txn({Comparison::Version(prefix_ + etcd_keys::kClosed, Comparison::Result::kGreater, 0)},
            {Operation::Delete(prefix_, etcd::Client::PrefixEnd(prefix_))})
      .status();
}

absl::StatusOr<std::unique_ptr<AgentClient>> ConnectEtcdAgent(const EtcdAgentOptions& options) {
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<EtcdAgentBackend> backend,
                          EtcdAgentBackend::Connect(options));
  return AgentClient::Start(std::move(backend), options.settings, options.node_id);
}

}  // namespace cohort::elastic
