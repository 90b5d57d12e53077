// The store client: connects to a StoreServer, proves the job's token, and runs set / get /
// wait / add / compare_set / delete / list on it. It is the Bootstrap that communicators, the
// rendezvous and the agents use. Thread-safe; every call is bounded by a deadline.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/bootstrap.h"
#include "common/clock.h"
#include "common/socket.h"
#include "elastic/store/wire.h"

namespace cohort::store {

struct StoreClientOptions {
  std::string host;  // empty: this host
  int port = 0;
  // Unset: COHORT_JOB_ID.
  std::optional<std::string> job_id;
  // Unset: COHORT_JOB_TOKEN. Empty: connect without a token.
  std::optional<std::string> token;
  // How long Connect keeps retrying a refused connection (the store may start later) and waits
  // for the handshake. Unset: COHORT_TIMEOUT.
  std::optional<absl::Duration> connect_timeout;
  // The timeout of calls that take none (set, add, ...; also Get(key) and Wait(keys)).
  // Unset: COHORT_TIMEOUT.
  std::optional<absl::Duration> timeout;
  // How much longer than a get/wait's own timeout the client waits for the store's answer
  // (the store's "timed out" reply travelling back). Small: a store that stopped answering must
  // not hold a call much beyond the timeout it was given.
  absl::Duration reply_margin = absl::Milliseconds(500);
};

// What StoreClient::Changes returns: keys written after a revision, oldest first.
struct Change {
  std::string key;
  std::string value;
  int64_t revision = 0;
};
struct ChangeSet {
  int64_t revision = 0;  // pass as `after_revision` to continue
  std::vector<Change> changes;
};

class StoreClient final : public Bootstrap {
 public:
  // Connects (retrying refused connections until the connect timeout) and runs the handshake.
  // A store that refuses this client gives PermissionDenied (token, job id) or
  // FailedPrecondition (protocol version) naming the reason; an unreachable one Unavailable.
  static absl::StatusOr<std::unique_ptr<StoreClient>> Connect(const StoreClientOptions& options);
  ~StoreClient() override;
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  absl::Status Set(const std::string& key, const std::string& value) override;
  // Several sets sent back to back, then every reply awaited: one round trip, not one per key
  // (the coordinator admits a round's nodes with it).
  absl::Status SetMany(const std::vector<std::pair<std::string, std::string>>& entries);
  // Waits up to `timeout` for the key; DeadlineExceeded names it when it does not appear.
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override;
  absl::StatusOr<std::string> Get(const std::string& key);
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::Status Wait(const std::vector<std::string>& keys);
  // Adds to the decimal int64 at key (missing counts as 0) and returns the sum.
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  // torch c10d's compare_set: stores `desired` when the key holds `expected` (a missing key
  // matches an empty `expected`) and returns the value now stored; when the key is missing
  // and `expected` is not empty, nothing is stored and `expected` comes back.
  absl::StatusOr<std::string> CompareSet(const std::string& key, const std::string& expected,
                                         const std::string& desired) override;
  // Whether the key existed.
  absl::StatusOr<bool> Delete(const std::string& key);
  // Keys that start with `prefix`, sorted.
  absl::StatusOr<std::vector<std::string>> List(const std::string& prefix);
  absl::StatusOr<int64_t> NumKeys();
  // The keys under `prefix` written after `after_revision` (0: all), waiting up to `timeout`
  // for one; an empty set when none was written by then. Deletions are not listed.
  absl::StatusOr<ChangeSet> Changes(const std::string& prefix, int64_t after_revision,
                                    absl::Duration timeout);
  // Shuts the connection down: pending and later calls fail at once (another thread's parked
  // get returns). Used to stop a thread that waits on the store.
  void Shutdown();
  // A round trip to the store.
  absl::Status Ping();
  // The local address of the connection to the store.
  std::string LocalAddressHint() override;

  // "host:port" of the store, as errors name it.
  const std::string& address() const { return address_; }
  absl::Duration timeout() const { return timeout_; }

 private:
  struct Slot {
    bool done = false;
    absl::StatusCode code = absl::StatusCode::kOk;
    std::string payload;  // the reply's result fields if OK, else the store's message
  };

  StoreClient(Fd fd, std::string address, std::string local_address, absl::Duration timeout,
              absl::Duration reply_margin, int64_t max_key_bytes, int64_t max_value_bytes);

  // Sends one request and waits for its reply until `deadline`; returns the reply's result
  // fields. `what` names the request in errors ("get of key \"a\"").
  absl::StatusOr<std::string> Call(Op op, const std::function<void(Writer&)>& fields,
                                   Deadline deadline, const std::string& what);
  // Sends `count` requests (fields(i, writer) fills the i-th) at once and waits for every reply;
  // returns the first error, naming what(i).
  absl::Status CallMany(Op op, size_t count, const std::function<void(size_t, Writer&)>& fields,
                        Deadline deadline, const std::function<std::string(size_t)>& what);
  // Run by the one caller that holds the reader role: waits for bytes (not past `deadline`)
  // and delivers every complete reply. An error means the connection is gone.
  absl::Status ReadReplies(Deadline deadline);
  void DeliverLocked(absl::string_view body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status CheckKey(const std::string& key) const;
  absl::Status CheckValue(const std::string& value) const;

  const Fd fd_;
  const std::string address_;
  const std::string local_address_;
  const absl::Duration timeout_;
  const absl::Duration reply_margin_;
  const int64_t max_key_bytes_;
  const int64_t max_value_bytes_;

  absl::Mutex send_mutex_;  // one request on the wire at a time
  absl::Mutex mutex_;
  absl::CondVar changed_;
  uint64_t next_request_id_ ABSL_GUARDED_BY(mutex_) = 1;
  absl::flat_hash_map<uint64_t, Slot*> slots_ ABSL_GUARDED_BY(mutex_);
  bool reader_active_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status broken_ ABSL_GUARDED_BY(mutex_);  // why the connection is unusable
  // Partial replies; touched only by the caller holding the reader role (reader_active_).
  std::string read_buffer_;
};

}  // namespace cohort::store
