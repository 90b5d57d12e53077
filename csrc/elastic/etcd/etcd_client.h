// A client of etcd's v3 API over its HTTP/JSON gateway (/v3/kv/range, /v3/kv/txn,
// /v3/lease/grant, /v3/lease/keepalive, /v3/watch, /v3/auth/authenticate), with libcurl and
// nlohmann-json: keys and values travel base64-encoded, 64-bit numbers as strings. Used by the
// etcd rendezvous backend (etcd_backend.h). etcd 3.4 and later serve this gateway; the v2 API
// that torch's etcd backend speaks is off by default in 3.4 and gone in 3.6.
//
// Endpoints: a request goes to the endpoint that answered last; when it cannot be reached the
// client moves to the next, and while the cluster elects a leader ("no leader", "leader
// changed") it retries, both until the request's deadline. So a member that dies costs a
// request a reconnect and an election a pause, not an error. TLS (a CA bundle, a client
// certificate) and etcd users (a token from /v3/auth/authenticate, renewed when etcd says it
// expired) are configured per client. Thread-safe: calls are serialized on one connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "nlohmann/json_fwd.hpp"

namespace cohort::etcd {

struct ClientOptions {
  // Client URLs (http://host:2379, https://host:2379); at least one.
  std::vector<std::string> endpoints;
  std::string ca_file;    // CA bundle that signed the members' certificates (https)
  std::string cert_file;  // this client's certificate and key, when etcd checks clients
  std::string key_file;
  std::string user;  // empty: no authentication
  std::string password;
  // The deadline of one call, retries included.
  absl::Duration request_timeout = absl::Seconds(10);
  // How long one endpoint may take to accept a connection.
  absl::Duration connect_timeout = absl::Seconds(3);
  // With several endpoints, how long one attempt may take before the next endpoint is tried. A
  // follower whose leader died holds a request for etcd's own 5 s request timeout; another
  // member has a new leader within the election timeout (1 s by default).
  absl::Duration attempt_timeout = absl::Seconds(2);
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

struct RangeResponse {
  int64_t revision = 0;  // the store's revision when it answered
  std::vector<KeyValue> kvs;
  int64_t count = 0;  // keys in the range (all of them, also with a limit or count_only)
  bool more = false;  // a limit cut the list
};

// One comparison of a transaction: `target` of `key` compared with `number` (or `value`).
struct Comparison {
  enum class Target { kVersion, kCreateRevision, kModRevision, kValue };
  enum class Result { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kVersion;
  Result result = Result::kEqual;
  int64_t number = 0;
  std::string value;

  static Comparison Version(std::string key, Result result, int64_t version);
  static Comparison CreateRevision(std::string key, Result result, int64_t revision);
  static Comparison ValueEquals(std::string key, std::string value);
};

// One operation of a transaction.
struct Operation {
  enum class Type { kPut, kDelete, kRange };
  Type type = Type::kPut;
  std::string key;
  std::string value;      // put
  std::string range_end;  // delete, range: "" for the key alone
  int64_t lease = 0;      // put

  static Operation Put(std::string key, std::string value, int64_t lease = 0);
  static Operation Delete(std::string key, std::string range_end = "");
  static Operation Range(std::string key, std::string range_end = "");
};

struct TxnResponse {
  bool succeeded = false;
  int64_t revision = 0;
  // The results of the range operations of the branch that ran, in order.
  std::vector<RangeResponse> ranges;
};

struct WatchEvent {
  bool deleted = false;  // else a put
  KeyValue kv;           // for a delete: the key and its mod_revision
};

class Watch;

class Client {
 public:
  // Checks the options, reaches an endpoint (every one is tried once; none answering is
  // Unavailable naming each and why) and authenticates when a user is given (refused
  // credentials are PermissionDenied naming the user).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The keys from `key` up to `range_end` (exclusive; "" for `key` alone).
  absl::StatusOr<RangeResponse> Range(const std::string& key, const std::string& range_end = "",
                                      int64_t limit = 0, bool count_only = false);
  // Every key under `prefix`, fetched in pages of `page` keys, all at one revision.
  absl::StatusOr<RangeResponse> RangePrefix(const std::string& prefix, int64_t page = 1000);
  // Returns the revision of the write.
  absl::StatusOr<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  // Returns how many keys were deleted.
  absl::StatusOr<int64_t> Delete(const std::string& key, const std::string& range_end = "");
  absl::StatusOr<TxnResponse> Txn(const std::vector<Comparison>& compare,
                                  const std::vector<Operation>& success,
                                  const std::vector<Operation>& failure = {});
  // A lease of `ttl_seconds`; returns its id.
  absl::StatusOr<int64_t> GrantLease(int64_t ttl_seconds);
  // Renews a lease; NotFound when it expired (or was revoked).
  absl::Status KeepAlive(int64_t lease);
  absl::Status RevokeLease(int64_t lease);
  // Follows the keys from `key` to `range_end` from `start_revision` (0: from when this
  // returns: it waits until etcd created the watch).
  absl::StatusOr<std::unique_ptr<Watch>> StartWatch(const std::string& key,
                                                    const std::string& range_end,
                                                    int64_t start_revision);

  // The first key after every key that starts with `prefix` (etcd's range end of a prefix).
  static std::string PrefixEnd(const std::string& prefix);
  // "etcd at http://a:2379, http://b:2379", as errors name it.
  std::string Describe() const;
  // This host's address on the connection of the last call (what etcd sees), or empty.
  std::string LocalAddress();
  const ClientOptions& options() const { return options_; }

 private:
  friend class Watch;
  struct Connection;
  explicit Client(ClientOptions options);

  // POSTs `body` to `path` and returns the parsed reply, retrying as the file comment says;
  // with `one_pass`, gives up once every endpoint failed to answer.
  absl::StatusOr<nlohmann::json> Post(const std::string& path, const nlohmann::json& body,
                                      Deadline deadline, bool one_pass = false);
  // One POST to the current endpoint. `transport` tells a failure to reach it (retry
  // elsewhere) from an answer.
  absl::StatusOr<nlohmann::json> PostOnce(const std::string& path, const std::string& body,
                                          Deadline deadline, bool* transport)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status Authenticate(Deadline deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  std::string token() const;
  std::string endpoint_now() const;
  void NextEndpoint();

  const ClientOptions options_;
  mutable absl::Mutex mutex_;
  std::unique_ptr<Connection> connection_ ABSL_GUARDED_BY(mutex_);
  mutable absl::Mutex state_mutex_;
  size_t current_ ABSL_GUARDED_BY(state_mutex_) = 0;
  std::string token_ ABSL_GUARDED_BY(state_mutex_);
};

// One watch stream. Next() is called by one thread; Interrupt() by any.
class Watch {
 public:
  ~Watch();
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // The events that arrived, waiting until `deadline` for the first; none at the deadline.
  // A broken stream is reopened (on another endpoint if need be) from the next revision, so
  // no event is lost or repeated. OutOfRange when etcd compacted the revisions the watch still
  // needed (read the range again, then watch from its revision); Cancelled after Interrupt().
  absl::StatusOr<std::vector<WatchEvent>> Next(Deadline deadline);
  // From any thread: the Next() in progress (or the next one) returns at once, with what it has.
  void Wake();
  // From any thread: Next() returns Cancelled, now and from then on.
  void Interrupt();
  // The revision from which a reopened stream continues.
  int64_t next_revision() const { return next_revision_; }

 private:
  friend class Client;
  struct Stream;
  Watch(Client* client, std::string key, std::string range_end, int64_t start_revision);
  absl::Status Open();
  // Pumps the stream until etcd confirms the watch (events that come along are kept).
  absl::Status AwaitCreated(Deadline deadline);
  void Close();
  // Parses complete messages from the stream's buffer into `events`.
  absl::Status Drain(std::vector<WatchEvent>* events);

  Client* const client_;
  const std::string key_;
  const std::string range_end_;
  int64_t next_revision_;
  void* const multi_;  // the CURLM handle, for the watch's lifetime (Interrupt wakes it)
  std::unique_ptr<Stream> stream_;
  std::atomic<bool> interrupted_{false};
  std::atomic<bool> woken_{false};
  int failed_opens_ = 0;  // streams in a row that broke before delivering anything
  std::vector<WatchEvent> early_;  // events that came while AwaitCreated waited
  bool created_reported_ = false;  // Next returned once when the stream was confirmed
};

// Base64 as etcd's gateway writes it (standard alphabet, padded).
std::string Base64Encode(const std::string& bytes);
bool Base64Decode(const std::string& text, std::string* bytes);

}  // namespace cohort::etcd
