// The store server: a TCP key-value store that the ranks of a job bootstrap through (set, get,
// wait, add, compare_set, delete, list). One epoll loop on one named thread serves every client;
// the rendezvous host embeds it, and tests start it in-process.
//
// Wire format (all integers big-endian; a string is a u32 length then its bytes):
//   preamble   client sends "COHORTKV" + u32 protocol version, unframed, once.
//   frame      u32 body length, then the body.
//   handshake  client Hello {u8 1, string job_id, u8 has_token, 32-byte client nonce}
//              server Challenge {u8 2, 32-byte server nonce}
//              client Proof {u8 3, HMAC-SHA256(token, "client", job, nonces)}
//              server Welcome {u8 4, HMAC-SHA256(token, "server", job, nonces), u64 max key
//              bytes, u64 max value bytes}; at any step instead Refused {u8 5, u8 status code,
//              string reason}, after which the server closes. The token itself never travels.
//   request    {u8 op, u64 request id (> 0), op's fields}; see wire.h for the ops.
//   reply      {u64 request id, u8 absl status code, then the op's result if OK, else a string
//              message}. Replies may come out of order (a parked get/wait answers later).
//              Request id 0 carries a connection error just before the server closes.
//   changes    request {string prefix, i64 after_revision, u64 timeout ms}; reply {i64 revision,
//              u32 count, count x (string key, string value, i64 revision)}. Every write (set,
//              add, a compare_set that stores) gives its key the store's next revision (from 1);
//              the reply lists the keys under the prefix whose last write is after
//              `after_revision`, oldest first, with their values now. With none, the request
//              waits up to its timeout for one and then answers with count 0 (not an error).
//              `revision` is where the next call continues: the store's revision, or the last
//              listed key's when the list was cut at COHORT_STORE_MAX_VALUE_BYTES. Deletions are
//              not listed. Watchers (the rendezvous coordinator) follow a prefix with it at a
//              cost proportional to what changed, not to how many keys there are.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort::store {

struct StoreServerOptions {
  // Interface to listen on; empty: all interfaces.
  std::string host;
  // 0: an ephemeral port (see StoreServer::port()).
  int port = 0;
  // Unset: COHORT_JOB_ID.
  std::optional<std::string> job_id;
  // The job's shared secret that clients must prove they know. Unset: COHORT_JOB_TOKEN. Empty:
  // only clients without a token are accepted.
  std::optional<std::string> token;
  // Unset: COHORT_STORE_MAX_KEY_BYTES / COHORT_STORE_MAX_VALUE_BYTES.
  std::optional<int64_t> max_key_bytes;
  std::optional<int64_t> max_value_bytes;
  // A connection that has not finished its handshake by then is closed.
  absl::Duration handshake_timeout = absl::Seconds(30);
};

class StoreServer {
 public:
  // Listens and starts serving on the "cohort-store" thread. AlreadyExists when the port is
  // taken (another store, or another program, holds it).
  static absl::StatusOr<std::unique_ptr<StoreServer>> Start(const StoreServerOptions& options);
  ~StoreServer();  // Stop()s
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  int port() const;
  // Stops serving and closes every connection (clients see the store go away). Idempotent and
  // safe from any thread but the server's own.
  void Stop();

 private:
  class Loop;  // the epoll loop, the connections and the data; defined in store_server.cc
  explicit StoreServer(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
};

}  // namespace cohort::store
