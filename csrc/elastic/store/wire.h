// The store's wire protocol: constants, the handshake's proofs, and the byte writer/reader that
// build and parse frames. Shared by StoreServer and StoreClient (and raw-protocol tests).
// Layout and handshake are described in store_server.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace cohort::store {

// Sent unframed as the first 12 bytes of every connection: magic, then the version (u32).
inline constexpr absl::string_view kMagic = "COHORTKV";
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kPreambleBytes = 12;
inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kProofBytes = 32;
// Every frame is a u32 length of its body, then the body.
inline constexpr size_t kFrameHeaderBytes = 4;
// Handshake frames are small; anything larger during the handshake is a protocol error.
inline constexpr size_t kMaxHandshakeFrameBytes = 8 * 1024;
// Room in a request frame beyond one key and one value: op, request id, lengths, and the key
// lists of wait.
inline constexpr size_t kRequestOverheadBytes = 64 * 1024;
// A timeout on the wire meaning "no timeout".
inline constexpr uint64_t kNoTimeout = UINT64_MAX;
// The request id of a server-initiated message (a protocol error before the server closes).
inline constexpr uint64_t kConnectionMessageId = 0;

// Handshake message types (first byte of a handshake frame).
enum class HandshakeType : uint8_t {
  kHello = 1,      // client: job id, has-token flag, client nonce
  kChallenge = 2,  // server: server nonce
  kProof = 3,      // client: HMAC proof
  kWelcome = 4,    // server: HMAC proof, key and value limits
  kRefused = 5,    // server: status code, reason
};

enum class Op : uint8_t {
  kPing = 1,
  kSet = 2,
  kGet = 3,
  kWait = 4,
  kAdd = 5,
  kCompareSet = 6,
  kDelete = 7,
  kList = 8,
  kNumKeys = 9,
  // Added in the same protocol version (an older store answers Unimplemented): the keys under a
  // prefix written after a revision, parked until there is one. See store_server.h.
  kChanges = 10,
};

const char* OpName(Op op);

// HMAC-SHA256(token, role || job id || client nonce || server nonce); role is "client" or
// "server", so one side's proof can never be replayed as the other's.
std::string HandshakeProof(const std::string& token, absl::string_view role,
                           const std::string& job_id, const std::string& client_nonce,
                           const std::string& server_nonce);

// The message for a key or value over its limit, naming the variable that raises it.
std::string KeyTooLargeMessage(size_t key_bytes, int64_t limit);
std::string ValueTooLargeMessage(size_t value_bytes, int64_t limit);

// Durations as they travel: whole milliseconds, kNoTimeout for infinite.
uint64_t EncodeTimeout(absl::Duration timeout);
absl::Duration DecodeTimeout(uint64_t millis);

// Appends big-endian integers and length-prefixed strings to a buffer. BeginFrame() reserves a
// frame's length prefix and EndFrame() fills it in.
class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void BeginFrame();
  void EndFrame();
  void U8(uint8_t value) { out_->push_back(static_cast<char>(value)); }
  void U32(uint32_t value);
  void U64(uint64_t value);
  void I64(int64_t value) { U64(static_cast<uint64_t>(value)); }
  void Bytes(absl::string_view bytes) {
    out_->append(bytes.data(), bytes.size());
  }                                                       // fixed size, no length
  void String(absl::string_view text);                    // u32 length, then bytes
  void StringList(const std::vector<std::string>& list);  // u32 count, then strings

 private:
  std::string* out_;
  size_t frame_start_ = 0;
};

// Reads what Writer wrote; every read checks bounds, and a short or malformed body gives an
// error naming the field.
class Reader {
 public:
  explicit Reader(absl::string_view body) : data_(body) {}
  absl::Status U8(uint8_t* value, const char* field);
  absl::Status U32(uint32_t* value, const char* field);
  absl::Status U64(uint64_t* value, const char* field);
  absl::Status I64(int64_t* value, const char* field);
  absl::Status Bytes(size_t length, std::string* value, const char* field);
  absl::Status String(std::string* value, const char* field);
  absl::Status StringList(std::vector<std::string>* list, const char* field);
  // Error unless every byte was consumed.
  absl::Status Done() const;
  size_t remaining() const { return data_.size() - offset_; }

 private:
  absl::string_view data_;
  size_t offset_ = 0;
};

uint32_t LoadU32(const char* bytes);

// A key as it appears in messages: quoted, non-printable bytes escaped, long keys shortened.
std::string QuoteKey(absl::string_view key);
// Up to `limit` keys quoted and comma-separated, with a count of the rest.
std::string QuoteKeys(const std::vector<std::string>& keys, size_t limit = 8);

}  // namespace cohort::store
