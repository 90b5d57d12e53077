#include "elastic/etcd/etcd_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace cohort::etcd {
namespace {

using Json = nlohmann::json;

// Between passes over every endpoint, and between retries while the cluster has no leader.
constexpr absl::Duration kRetryPause = absl::Milliseconds(100);

void InitCurlOnce() {
  static const bool initialized = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return true;
  }();
  (void)initialized;
}

size_t AppendToString(char* data, size_t size, size_t count, void* target) {
  static_cast<std::string*>(target)->append(data, size * count);
  return size * count;
}

int64_t Int64Field(const Json& json, const char* name) {
  auto found = json.find(name);
  if (found == json.end()) return 0;
  if (found->is_number_integer()) return found->get<int64_t>();
  if (found->is_string()) {
    int64_t value = 0;
    if (absl::SimpleAtoi(found->get<std::string>(), &value)) return value;
  }
  return 0;
}

std::string Bytes(const Json& json, const char* name) {
  auto found = json.find(name);
  if (found == json.end() || !found->is_string()) return "";
  std::string bytes;
  if (!Base64Decode(found->get<std::string>(), &bytes)) return "";
  return bytes;
}

KeyValue ParseKeyValue(const Json& json) {
  KeyValue kv;
  kv.key = Bytes(json, "key");
  kv.value = Bytes(json, "value");
  kv.create_revision = Int64Field(json, "create_revision");
  kv.mod_revision = Int64Field(json, "mod_revision");
  kv.version = Int64Field(json, "version");
  kv.lease = Int64Field(json, "lease");
  return kv;
}

RangeResponse ParseRange(const Json& json) {
  RangeResponse range;
  if (auto header = json.find("header"); header != json.end()) {
    range.revision = Int64Field(*header, "revision");
  }
  if (auto kvs = json.find("kvs"); kvs != json.end() && kvs->is_array()) {
    for (const Json& kv : *kvs) range.kvs.push_back(ParseKeyValue(kv));
  }
  range.count = Int64Field(json, "count");
  auto more = json.find("more");
  range.more = more != json.end() && more->is_boolean() && more->get<bool>();
  return range;
}

Json OperationJson(const Operation& operation) {
  switch (operation.type) {
    case Operation::Type::kPut: {
      Json put{{"key", Base64Encode(operation.key)}, {"value", Base64Encode(operation.value)}};
      if (operation.lease != 0) put["lease"] = absl::StrCat(operation.lease);
      return Json{{"request_put", put}};
    }
    case Operation::Type::kDelete: {
      Json del{{"key", Base64Encode(operation.key)}};
      if (!operation.range_end.empty()) del["range_end"] = Base64Encode(operation.range_end);
      return Json{{"request_delete_range", del}};
    }
    case Operation::Type::kRange: {
      Json range{{"key", Base64Encode(operation.key)}};
      if (!operation.range_end.empty()) range["range_end"] = Base64Encode(operation.range_end);
      return Json{{"request_range", range}};
    }
  }
  return Json::object();
}

Json ComparisonJson(const Comparison& comparison) {
  static const char* kTargets[] = {"VERSION", "CREATE", "MOD", "VALUE"};
  static const char* kResults[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  Json json{{"key", Base64Encode(comparison.key)},
            {"target", kTargets[static_cast<int>(comparison.target)]},
            {"result", kResults[static_cast<int>(comparison.result)]}};
  switch (comparison.target) {
    case Comparison::Target::kVersion:
      json["version"] = absl::StrCat(comparison.number);
      break;
    case Comparison::Target::kCreateRevision:
      json["create_revision"] = absl::StrCat(comparison.number);
      break;
    case Comparison::Target::kModRevision:
      json["mod_revision"] = absl::StrCat(comparison.number);
      break;
    case Comparison::Target::kValue:
      json["value"] = Base64Encode(comparison.value);
      break;
  }
  return json;
}

// etcd's errors carry gRPC codes, which absl's codes number the same way.
absl::StatusCode CodeOf(int64_t grpc_code) {
  if (grpc_code <= 0 || grpc_code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(grpc_code);
}

// A failure to reach or talk to the endpoint at all: another endpoint may do better. TLS
// verification and certificate problems are not: they are the same everywhere.
bool IsTransportFailure(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

void ApplyConnectionOptions(CURL* easy, const ClientOptions& options) {
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options.connect_timeout)));
  // Proxies from the environment would route a cluster's loopback or fabric traffic away.
  curl_easy_setopt(easy, CURLOPT_PROXY, "");
  if (!options.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, options.ca_file.c_str());
  if (!options.cert_file.empty()) curl_easy_setopt(easy, CURLOPT_SSLCERT, options.cert_file.c_str());
  if (!options.key_file.empty()) curl_easy_setopt(easy, CURLOPT_SSLKEY, options.key_file.c_str());
}

curl_slist* Headers(const std::string& token) {
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (!token.empty()) headers = curl_slist_append(headers, ("Authorization: " + token).c_str());
  return headers;
}

std::string CurlError(CURLcode code, const char* detail) {
  std::string text = curl_easy_strerror(code);
  if (detail != nullptr && detail[0] != 0 && !absl::StrContains(text, detail)) {
    absl::StrAppend(&text, ": ", detail);
  }
  return text;
}

}  // namespace

Comparison Comparison::Version(std::string key, Result result, int64_t version) {
  Comparison comparison;
  comparison.key = std::move(key);
  comparison.target = Target::kVersion;
  comparison.result = result;
  comparison.number = version;
  return comparison;
}

Comparison Comparison::CreateRevision(std::string key, Result result, int64_t revision) {
  Comparison comparison = Version(std::move(key), result, revision);
  comparison.target = Target::kCreateRevision;
  return comparison;
}

Comparison Comparison::ValueEquals(std::string key, std::string value) {
  Comparison comparison;
  comparison.key = std::move(key);
  comparison.target = Target::kValue;
  comparison.value = std::move(value);
  return comparison;
}

Operation Operation::Put(std::string key, std::string value, int64_t lease) {
  Operation operation;
  operation.type = Type::kPut;
  operation.key = std::move(key);
  operation.value = std::move(value);
  operation.lease = lease;
  return operation;
}

Operation Operation::Delete(std::string key, std::string range_end) {
  Operation operation;
  operation.type = Type::kDelete;
  operation.key = std::move(key);
  operation.range_end = std::move(range_end);
  return operation;
}

Operation Operation::Range(std::string key, std::string range_end) {
  Operation operation = Delete(std::move(key), std::move(range_end));
  operation.type = Type::kRange;
  return operation;
}

struct Client::Connection {
  CURL* easy = nullptr;
  char error[CURL_ERROR_SIZE] = {};
  ~Connection() {
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
};

Client::Client(ClientOptions options) : options_(std::move(options)) {}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  InitCurlOnce();
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("no etcd endpoint given (--rdzv-endpoint)");
  }
  for (const std::string& endpoint : options.endpoints) {
    if (!absl::StartsWith(endpoint, "http://") && !absl::StartsWith(endpoint, "https://")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "etcd endpoint \"", endpoint, "\" is not a URL; give http://host:port or https://host:port"));
    }
  }
  auto client = std::unique_ptr<Client>(new Client(options));
  {
    absl::MutexLock lock(&client->mutex_);
    client->connection_ = std::make_unique<Connection>();
    client->connection_->easy = curl_easy_init();
    if (client->connection_->easy == nullptr) return absl::InternalError("curl_easy_init failed");
    CURL* easy = client->connection_->easy;
    ApplyConnectionOptions(easy, options);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, client->connection_->error);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, AppendToString);
  }
  // Reach a member (each endpoint once), check it serves the v3 gateway, then log in.
  Deadline deadline = Deadline::In(options.request_timeout);
  COHORT_ASSIGN_OR_RETURN(Json status,
                          client->Post("/v3/maintenance/status", Json::object(), deadline, true));
  if (!status.contains("version")) {
    return absl::FailedPreconditionError(absl::StrCat(
        client->Describe(), " did not say its version at /v3/maintenance/status; cohort needs "
        "etcd 3.4 or later (the v3 JSON gateway)"));
  }
  if (!options.user.empty()) {
    absl::MutexLock lock(&client->mutex_);
    COHORT_RETURN_IF_ERROR(client->Authenticate(deadline));
  }
  return client;
}

std::string Client::Describe() const {
  return absl::StrCat("etcd at ", absl::StrJoin(options_.endpoints, ", "));
}

std::string Client::LocalAddress() {
  absl::MutexLock lock(&mutex_);
  char* address = nullptr;
  if (curl_easy_getinfo(connection_->easy, CURLINFO_LOCAL_IP, &address) != CURLE_OK ||
      address == nullptr) {
    return "";
  }
  return address;
}

std::string Client::endpoint_now() const {
  absl::MutexLock lock(&state_mutex_);
  return options_.endpoints[current_ % options_.endpoints.size()];
}

void Client::NextEndpoint() {
  absl::MutexLock lock(&state_mutex_);
  current_ = (current_ + 1) % options_.endpoints.size();
}

std::string Client::token() const {
  absl::MutexLock lock(&state_mutex_);
  return token_;
}

absl::Status Client::Authenticate(Deadline deadline) {
  Json body{{"name", options_.user}, {"password", options_.password}};
  {
    absl::MutexLock lock(&state_mutex_);
    token_.clear();
  }
  // Each endpoint once; a refusal is final.
  std::vector<std::string> failures;
  for (size_t i = 0; i < options_.endpoints.size(); ++i) {
    bool transport = false;
    std::string endpoint = endpoint_now();
    auto reply = PostOnce("/v3/auth/authenticate", body.dump(), deadline, &transport);
    if (reply.ok()) {
      auto token = reply->find("token");
      if (token == reply->end() || !token->is_string()) {
        return absl::DataLossError(absl::StrCat("etcd at ", endpoint,
                                                " answered the authentication without a token"));
      }
      absl::MutexLock lock(&state_mutex_);
      token_ = token->get<std::string>();
      return absl::OkStatus();
    }
    if (!transport) {
      return absl::PermissionDeniedError(absl::StrCat(
          "etcd at ", endpoint, " refused user \"", options_.user, "\": ",
          absl::StripPrefix(reply.status().message(), absl::StrCat("etcd at ", endpoint, ": ")),
          "; check --rdzv-conf user= and the password (COHORT_ETCD_PASSWORD or --rdzv-conf "
          "password=)"));
    }
    failures.push_back(std::string(reply.status().message()));
    NextEndpoint();
  }
  return absl::UnavailableError(absl::StrCat("cannot reach ", Describe(), " to authenticate user \"",
                                             options_.user, "\": ", absl::StrJoin(failures, "; ")));
}

absl::StatusOr<Json> Client::PostOnce(const std::string& path, const std::string& body,
                                      Deadline deadline, bool* transport) {
  *transport = false;
  const std::string endpoint = endpoint_now();
  CURL* easy = connection_->easy;
  std::string url = endpoint + path;
  std::string reply;
  curl_slist* headers = Headers(token());
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &reply);
  // With one endpoint there is nowhere else to go: a slow answer is the best there is.
  Deadline attempt = options_.endpoints.size() > 1
                         ? deadline.Earlier(Deadline::In(options_.attempt_timeout))
                         : deadline;
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max(1, attempt.RemainingMillis())));
  connection_->error[0] = 0;
  CURLcode code = curl_easy_perform(easy);
  curl_slist_free_all(headers);
  if (code != CURLE_OK) {
    *transport = IsTransportFailure(code);
    std::string why = CurlError(code, connection_->error);
    if (!*transport) {
      return absl::FailedPreconditionError(absl::StrCat(
          "etcd at ", endpoint, ": ", why,
          "; check the endpoint's scheme and --rdzv-conf cacert, cert and key"));
    }
    return absl::UnavailableError(absl::StrCat(endpoint, ": ", why));
  }
  long http_code = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &http_code);
  Json json = Json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "etcd at ", endpoint, " answered HTTP ", http_code, " to ", path,
        " with something that is not etcd's JSON gateway; cohort needs etcd 3.4 or later, and "
        "--rdzv-endpoint must name its client URLs"));
  }
  auto error = json.find("error");
  if (error != json.end()) {
    std::string message = error->is_string() ? error->get<std::string>() : error->dump();
    if (auto text = json.find("message"); text != json.end() && text->is_string()) {
      message = text->get<std::string>();
    }
    return absl::Status(CodeOf(Int64Field(json, "code")),
                        absl::StrCat("etcd at ", endpoint, ": ", message));
  }
  if (http_code != 200) {
    return absl::UnknownError(absl::StrCat("etcd at ", endpoint, " answered HTTP ", http_code,
                                           " to ", path, ": ", reply.substr(0, 200)));
  }
  return json;
}

absl::StatusOr<Json> Client::Post(const std::string& path, const Json& body, Deadline deadline,
                                  bool one_pass) {
  const std::string text = body.dump();
  absl::MutexLock lock(&mutex_);
  std::vector<std::string> unreachable;  // this pass over the endpoints
  bool reauthenticated = false;
  while (true) {
    bool transport = false;
    auto reply = PostOnce(path, text, deadline, &transport);
    if (reply.ok()) return reply;
    absl::StatusCode code = reply.status().code();
    if (transport) {
      COHORT_LOG(DEBUG) << reply.status().message() << "; trying the next endpoint";
      unreachable.push_back(std::string(reply.status().message()));
      NextEndpoint();
      if (unreachable.size() < options_.endpoints.size()) continue;
      if (one_pass || deadline.Remaining() < kRetryPause) {
        return absl::UnavailableError(absl::StrCat(
            "cannot reach ", Describe(), " (", absl::StrJoin(unreachable, "; "),
            "); check that etcd runs there and that this host can reach it"));
      }
      unreachable.clear();
      mutex_.Unlock();
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(kRetryPause));
      mutex_.Lock();
      continue;
    }
    unreachable.clear();
    if (code == absl::StatusCode::kUnauthenticated && !options_.user.empty() && !reauthenticated) {
      // The token expired (etcd forgets idle tokens after --auth-token-ttl): log in again.
      reauthenticated = true;
      COHORT_RETURN_IF_ERROR(Authenticate(deadline));
      continue;
    }
    // "no leader", "leader changed", "request timed out": the cluster is electing; a member
    // cut off from the others says so too, and another member may know better.
    if ((code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded) &&
        !one_pass && deadline.Remaining() > kRetryPause) {
      COHORT_LOG(DEBUG) << reply.status().message() << "; retrying";
      NextEndpoint();
      mutex_.Unlock();
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(kRetryPause));
      mutex_.Lock();
      continue;
    }
    if (code == absl::StatusCode::kInvalidArgument && options_.user.empty() &&
        absl::StrContains(reply.status().message(), "user name")) {
      return absl::PermissionDeniedError(absl::StrCat(
          reply.status().message(),
          ": this etcd requires authentication; give --rdzv-conf user=NAME and its password "
          "(COHORT_ETCD_PASSWORD, or --rdzv-conf password=)"));
    }
    return reply.status();
  }
}

absl::StatusOr<RangeResponse> Client::Range(const std::string& key, const std::string& range_end,
                                            int64_t limit, bool count_only) {
  Json body{{"key", Base64Encode(key)}};
  if (!range_end.empty()) body["range_end"] = Base64Encode(range_end);
  if (limit > 0) body["limit"] = absl::StrCat(limit);
  if (count_only) body["count_only"] = true;
  COHORT_ASSIGN_OR_RETURN(Json reply,
                          Post("/v3/kv/range", body, Deadline::In(options_.request_timeout)));
  return ParseRange(reply);
}

absl::StatusOr<RangeResponse> Client::RangePrefix(const std::string& prefix, int64_t page) {
  const std::string end = PrefixEnd(prefix);
  RangeResponse all;
  std::string from = prefix;
  while (true) {
    Json body{{"key", Base64Encode(from)}, {"range_end", Base64Encode(end)},
              {"limit", absl::StrCat(page)}};
    if (all.revision > 0) body["revision"] = absl::StrCat(all.revision);  // one snapshot
    COHORT_ASSIGN_OR_RETURN(Json reply,
                            Post("/v3/kv/range", body, Deadline::In(options_.request_timeout)));
    RangeResponse part = ParseRange(reply);
    if (all.revision == 0) all.revision = part.revision;
    for (KeyValue& kv : part.kvs) all.kvs.push_back(std::move(kv));
    if (!part.more || all.kvs.empty()) break;
    from = all.kvs.back().key + std::string(1, '\0');
  }
  all.count = static_cast<int64_t>(all.kvs.size());
  return all;
}

absl::StatusOr<int64_t> Client::Put(const std::string& key, const std::string& value,
                                    int64_t lease) {
  Json body{{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) body["lease"] = absl::StrCat(lease);
  COHORT_ASSIGN_OR_RETURN(Json reply,
                          Post("/v3/kv/put", body, Deadline::In(options_.request_timeout)));
  return reply.contains("header") ? Int64Field(reply["header"], "revision") : 0;
}

absl::StatusOr<int64_t> Client::Delete(const std::string& key, const std::string& range_end) {
  Json body{{"key", Base64Encode(key)}};
  if (!range_end.empty()) body["range_end"] = Base64Encode(range_end);
  COHORT_ASSIGN_OR_RETURN(Json reply,
                          Post("/v3/kv/deleterange", body, Deadline::In(options_.request_timeout)));
  return Int64Field(reply, "deleted");
}

absl::StatusOr<TxnResponse> Client::Txn(const std::vector<Comparison>& compare,
                                        const std::vector<Operation>& success,
                                        const std::vector<Operation>& failure) {
  Json body = Json::object();
  Json& compares = body["compare"] = Json::array();
  for (const Comparison& comparison : compare) compares.push_back(ComparisonJson(comparison));
  Json& on_success = body["success"] = Json::array();
  for (const Operation& operation : success) on_success.push_back(OperationJson(operation));
  Json& on_failure = body["failure"] = Json::array();
  for (const Operation& operation : failure) on_failure.push_back(OperationJson(operation));
  COHORT_ASSIGN_OR_RETURN(Json reply,
                          Post("/v3/kv/txn", body, Deadline::In(options_.request_timeout)));
  TxnResponse response;
  auto succeeded = reply.find("succeeded");
  response.succeeded = succeeded != reply.end() && succeeded->is_boolean() && succeeded->get<bool>();
  if (reply.contains("header")) response.revision = Int64Field(reply["header"], "revision");
  if (auto responses = reply.find("responses"); responses != reply.end() && responses->is_array()) {
    for (const Json& item : *responses) {
      if (auto range = item.find("response_range"); range != item.end()) {
        response.ranges.push_back(ParseRange(*range));
      }
    }
  }
  return response;
}

absl::StatusOr<int64_t> Client::GrantLease(int64_t ttl_seconds) {
  COHORT_ASSIGN_OR_RETURN(
      Json reply, Post("/v3/lease/grant", Json{{"TTL", absl::StrCat(ttl_seconds)}},
                       Deadline::In(options_.request_timeout)));
  int64_t id = Int64Field(reply, "ID");
  if (id == 0) {
    return absl::DataLossError(absl::StrCat(Describe(), " granted a lease without an id"));
  }
  return id;
}

absl::Status Client::KeepAlive(int64_t lease) {
  COHORT_ASSIGN_OR_RETURN(Json reply,
                          Post("/v3/lease/keepalive", Json{{"ID", absl::StrCat(lease)}},
                               Deadline::In(options_.request_timeout)));
  // The gateway wraps a stream's replies in "result"; a lease that is gone has no TTL.
  const Json& result = reply.contains("result") ? reply["result"] : reply;
  if (Int64Field(result, "TTL") <= 0) {
    return absl::NotFoundError(absl::StrCat("lease ", lease, " expired or was revoked in ",
                                            Describe()));
  }
  return absl::OkStatus();
}

absl::Status Client::RevokeLease(int64_t lease) {
  return Post("/v3/lease/revoke", Json{{"ID", absl::StrCat(lease)}},
              Deadline::In(options_.request_timeout))
      .status();
}

std::string Client::PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::StatusOr<std::unique_ptr<Watch>> Client::StartWatch(const std::string& key,
                                                          const std::string& range_end,
                                                          int64_t start_revision) {
  auto watch = std::unique_ptr<Watch>(new Watch(this, key, range_end, start_revision));
  COHORT_RETURN_IF_ERROR(watch->Open());
  COHORT_RETURN_IF_ERROR(watch->AwaitCreated(Deadline::In(options_.request_timeout)));
  return watch;
}

// One HTTP request whose response is the stream of watch messages, one JSON object a line.
struct Watch::Stream {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;
  std::string buffer;
  std::string endpoint;
  char error[CURL_ERROR_SIZE] = {};
  bool created = false;
  bool delivered = false;
  ~Stream() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

Watch::Watch(Client* client, std::string key, std::string range_end, int64_t start_revision)
    : client_(client),
      key_(std::move(key)),
      range_end_(std::move(range_end)),
      next_revision_(start_revision),
      multi_(curl_multi_init()) {}

Watch::~Watch() {
  Close();
  curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

void Watch::Wake() {
  woken_.store(true);
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

void Watch::Interrupt() {
  interrupted_.store(true);
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

void Watch::Close() {
  if (stream_ == nullptr) return;
  curl_multi_remove_handle(static_cast<CURLM*>(multi_), stream_->easy);
  stream_.reset();
}

absl::Status Watch::Open() {
  Close();
  auto stream = std::make_unique<Stream>();
  Json create{{"key", Base64Encode(key_)}};
  if (!range_end_.empty()) create["range_end"] = Base64Encode(range_end_);
  if (next_revision_ > 0) create["start_revision"] = absl::StrCat(next_revision_);
  stream->body = Json{{"create_request", create}}.dump();
  stream->endpoint = client_->endpoint_now();
  stream->easy = curl_easy_init();
  if (stream->easy == nullptr) return absl::InternalError("curl_easy_init failed");
  stream->headers = Headers(client_->token());
  std::string url = stream->endpoint + "/v3/watch";
  CURL* easy = stream->easy;
  ApplyConnectionOptions(easy, client_->options());
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, stream->headers);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, stream->body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(stream->body.size()));
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, AppendToString);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &stream->buffer);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, stream->error);
  created_reported_ = false;
  if (curl_multi_add_handle(static_cast<CURLM*>(multi_), easy) != CURLM_OK) {
    return absl::InternalError("curl_multi_add_handle failed");
  }
  stream_ = std::move(stream);
  return absl::OkStatus();
}

absl::Status Watch::Drain(std::vector<WatchEvent>* events) {
  std::string& buffer = stream_->buffer;
  size_t start = 0;
  while (true) {
    size_t newline = buffer.find('\n', start);
    if (newline == std::string::npos) break;
    Json message = Json::parse(buffer.begin() + static_cast<std::ptrdiff_t>(start),
                               buffer.begin() + static_cast<std::ptrdiff_t>(newline), nullptr,
                               /*allow_exceptions=*/false);
    start = newline + 1;
    if (message.is_discarded() || !message.is_object()) continue;  // blank keep-alive lines
    if (auto error = message.find("error"); error != message.end()) {
      std::string text = error->is_object() && error->contains("message") && (*error)["message"].is_string()
                             ? (*error)["message"].get<std::string>()
                             : error->dump();
      int64_t code = error->is_object() ? Int64Field(*error, "grpc_code") : 0;
      buffer.erase(0, start);
      return absl::Status(CodeOf(code), absl::StrCat("etcd watch at ", stream_->endpoint, ": ", text));
    }
    auto result = message.find("result");
    if (result == message.end() || !result->is_object()) continue;
    int64_t header_revision =
        result->contains("header") ? Int64Field((*result)["header"], "revision") : 0;
    auto flag = [&](const char* name) {
      auto found = result->find(name);
      return found != result->end() && found->is_boolean() && found->get<bool>();
    };
    if (flag("canceled")) {
      int64_t compacted = Int64Field(*result, "compact_revision");
      std::string reason = result->contains("cancel_reason") && (*result)["cancel_reason"].is_string()
                               ? (*result)["cancel_reason"].get<std::string>()
                               : std::string("canceled");
      buffer.erase(0, start);
      if (compacted > 0) {
        return absl::OutOfRangeError(absl::StrCat(
            "etcd compacted revisions up to ", compacted, " that the watch of ", key_,
            " still needed (from ", next_revision_, ")"));
      }
      if (absl::StrContains(reason, "permission denied") || absl::StrContains(reason, "user name")) {
        return absl::PermissionDeniedError(absl::StrCat("etcd watch at ", stream_->endpoint, ": ", reason));
      }
      return absl::AbortedError(absl::StrCat("etcd watch at ", stream_->endpoint, ": ", reason));
    }
    if (flag("created")) {
      stream_->created = true;
      if (next_revision_ == 0) next_revision_ = header_revision + 1;
    }
    if (auto list = result->find("events"); list != result->end() && list->is_array()) {
      for (const Json& item : *list) {
        WatchEvent event;
        auto type = item.find("type");
        event.deleted = type != item.end() && type->is_string() && type->get<std::string>() == "DELETE";
        if (auto kv = item.find("kv"); kv != item.end()) event.kv = ParseKeyValue(*kv);
        next_revision_ = std::max(next_revision_, event.kv.mod_revision + 1);
        events->push_back(std::move(event));
      }
      stream_->delivered = true;
    }
  }
  buffer.erase(0, start);
  return absl::OkStatus();
}

absl::Status Watch::AwaitCreated(Deadline deadline) {
  while (stream_ == nullptr || !stream_->created) {
    COHORT_ASSIGN_OR_RETURN(std::vector<WatchEvent> events, Next(deadline));
    early_.insert(early_.end(), events.begin(), events.end());
    if (stream_ != nullptr && stream_->created) break;
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "cannot start a watch on ", client_->Describe(), ": no member confirmed it in time"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WatchEvent>> Watch::Next(Deadline deadline) {
  std::vector<WatchEvent> events;
  if (!early_.empty()) {
    events.swap(early_);
    return events;
  }
  auto* multi = static_cast<CURLM*>(multi_);
  while (true) {
    if (interrupted_.load()) return absl::CancelledError("the watch was interrupted");
    if (stream_ == nullptr) COHORT_RETURN_IF_ERROR(Open());
    int running = 0;
    curl_multi_perform(multi, &running);
    absl::Status drained = Drain(&events);
    if (!drained.ok()) {
      Close();
      return drained;
    }
    if (!events.empty()) {
      failed_opens_ = 0;
      return events;
    }
    if (stream_->created && !created_reported_) {
      created_reported_ = true;
      return events;
    }
    int queued = 0;
    bool ended = false;
    std::string why;
    while (CURLMsg* message = curl_multi_info_read(multi, &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      ended = true;
      CURLcode code = message->data.result;
      why = code == CURLE_OK ? std::string("the stream ended") : CurlError(code, stream_->error);
      if (code != CURLE_OK && !IsTransportFailure(code)) {
        std::string endpoint = stream_->endpoint;
        Close();
        return absl::FailedPreconditionError(absl::StrCat(
            "etcd watch at ", endpoint, ": ", why,
            "; check the endpoint's scheme and --rdzv-conf cacert, cert and key"));
      }
    }
    if (ended) {
      // The member went away (or closed the stream): continue on the next one from where this
      // stream stopped.
      COHORT_LOG(DEBUG) << "etcd watch at " << stream_->endpoint << ": " << why << "; reopening";
      bool delivered = stream_->created || stream_->delivered;
      Close();
      client_->NextEndpoint();
      failed_opens_ = delivered ? 0 : failed_opens_ + 1;
      if (failed_opens_ >= static_cast<int>(client_->options().endpoints.size())) {
        // Every member refused in a row: pause before the next pass.
        if (deadline.Expired()) return events;
        std::this_thread::sleep_for(absl::ToChronoMilliseconds(
            std::min(kRetryPause, std::max(absl::ZeroDuration(), deadline.Remaining()))));
      }
      continue;
    }
    if (deadline.Expired() || woken_.exchange(false)) return events;
    curl_multi_poll(multi, nullptr, 0, std::max(1, deadline.RemainingMillis(1000)), nullptr);
  }
}

std::string Base64Encode(const std::string& bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t group = (static_cast<uint8_t>(bytes[i]) << 16) |
                     (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(kAlphabet[(group >> 18) & 63]);
    out.push_back(kAlphabet[(group >> 12) & 63]);
    out.push_back(kAlphabet[(group >> 6) & 63]);
    out.push_back(kAlphabet[group & 63]);
  }
  if (i < bytes.size()) {
    uint32_t group = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) group |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(group >> 18) & 63]);
    out.push_back(kAlphabet[(group >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(group >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

bool Base64Decode(const std::string& text, std::string* bytes) {
  static const auto kValues = [] {
    std::array<int8_t, 256> values{};
    values.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) values[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
    return values;
  }();
  bytes->clear();
  if (text.size() % 4 != 0) return false;
  bytes->reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int values[4];
    int padding = 0;
    for (int j = 0; j < 4; ++j) {
      char c = text[i + j];
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        values[j] = 0;
        ++padding;
        continue;
      }
      if (padding > 0) return false;
      values[j] = kValues[static_cast<uint8_t>(c)];
      if (values[j] < 0) return false;
    }
    uint32_t group = (values[0] << 18) | (values[1] << 12) | (values[2] << 6) | values[3];
    bytes->push_back(static_cast<char>((group >> 16) & 255));
    if (padding < 2) bytes->push_back(static_cast<char>((group >> 8) & 255));
    if (padding < 1) bytes->push_back(static_cast<char>(group & 255));
  }
  return true;
}

}  // namespace cohort::etcd
