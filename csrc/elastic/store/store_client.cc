#include "elastic/store/store_client.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/status.h"

namespace cohort::store {
namespace {

constexpr size_t kReadChunkBytes = 64 * 1024;

constexpr char kTimeoutAdvice[] =
    "; the process that should set it may have failed or be slow: check its log, or raise the "
    "timeout (COHORT_TIMEOUT)";

struct Limits {
  int64_t max_key_bytes = 0;
  int64_t max_value_bytes = 0;
};

// Reads one handshake frame's body.
absl::StatusOr<std::string> ReadHandshakeFrame(int fd, const std::string& what, Deadline deadline) {
  char header[kFrameHeaderBytes];
  COHORT_RETURN_IF_ERROR(ReadFully(fd, header, sizeof(header), deadline, what));
  uint32_t length = LoadU32(header);
  if (length > kMaxHandshakeFrameBytes) {
    return absl::DataLossError(absl::StrCat(what, " answered with a ", length,
                                            "-byte message, which no cohort store sends"));
  }
  std::string body(length, '\0');
  COHORT_RETURN_IF_ERROR(ReadFully(fd, body.data(), body.size(), deadline, what));
  return body;
}

absl::Status RefusalError(Reader& reader, const std::string& address) {
  uint8_t code = 0;
  std::string reason;
  if (!reader.U8(&code, "code").ok() || !reader.String(&reason, "reason").ok() || code == 0 ||
      code > static_cast<uint8_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::PermissionDeniedError(
        absl::StrCat("store at ", address, " refused this client without a readable reason"));
  }
  return absl::Status(static_cast<absl::StatusCode>(code),
                      absl::StrCat("store at ", address, " refused this client: ", reason));
}

absl::StatusOr<Limits> Handshake(int fd, const std::string& address, const std::string& job_id,
                                 const std::string& token, Deadline deadline) {
  const std::string what = absl::StrCat("the store at ", address);
  const std::string client_nonce = crypto::RandomBytes(kNonceBytes);
  std::string out(kMagic);
  Writer writer(&out);
  writer.U32(kProtocolVersion);
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(HandshakeType::kHello));
  writer.String(job_id);
  writer.U8(token.empty() ? 0 : 1);
  writer.Bytes(client_nonce);
  writer.EndFrame();
  COHORT_RETURN_IF_ERROR(WriteFully(fd, out.data(), out.size(), deadline, what));

  COHORT_ASSIGN_OR_RETURN(std::string body, ReadHandshakeFrame(fd, what, deadline));
  Reader reader(body);
  uint8_t type = 0;
  COHORT_RETURN_IF_ERROR(reader.U8(&type, "type"));
  if (type == static_cast<uint8_t>(HandshakeType::kRefused)) return RefusalError(reader, address);
  std::string server_nonce;
  if (type != static_cast<uint8_t>(HandshakeType::kChallenge) ||
      !reader.Bytes(kNonceBytes, &server_nonce, "server nonce").ok() || !reader.Done().ok()) {
    return absl::DataLossError(absl::StrCat(what,
                                            " answered the handshake with a malformed "
                                            "challenge"));
  }

  out.clear();
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(HandshakeType::kProof));
  writer.Bytes(HandshakeProof(token, "client", job_id, client_nonce, server_nonce));
  writer.EndFrame();
  COHORT_RETURN_IF_ERROR(WriteFully(fd, out.data(), out.size(), deadline, what));

  COHORT_ASSIGN_OR_RETURN(body, ReadHandshakeFrame(fd, what, deadline));
  reader = Reader(body);
  COHORT_RETURN_IF_ERROR(reader.U8(&type, "type"));
  if (type == static_cast<uint8_t>(HandshakeType::kRefused)) return RefusalError(reader, address);
  std::string server_proof;
  uint64_t max_key = 0, max_value = 0;
  if (type != static_cast<uint8_t>(HandshakeType::kWelcome) ||
      !reader.Bytes(kProofBytes, &server_proof, "proof").ok() ||
      !reader.U64(&max_key, "max key").ok() || !reader.U64(&max_value, "max value").ok() ||
      !reader.Done().ok()) {
    return absl::DataLossError(absl::StrCat(what,
                                            " answered the handshake with a malformed "
                                            "welcome"));
  }
  if (!crypto::ConstantTimeEquals(
          server_proof, HandshakeProof(token, "server", job_id, client_nonce, server_nonce))) {
    return absl::PermissionDeniedError(absl::StrCat(
        what,
        " could not prove that it knows this job's token, so this client does not trust "
        "it; check COHORT_STORE_ADDR (it may be another job's store) and COHORT_JOB_TOKEN"));
  }
  return Limits{static_cast<int64_t>(max_key), static_cast<int64_t>(max_value)};
}

}  // namespace

absl::StatusOr<std::unique_ptr<StoreClient>> StoreClient::Connect(
    const StoreClientOptions& options) {
  std::string job_id, token;
  if (options.job_id.has_value()) {
    job_id = *options.job_id;
  } else {
    COHORT_ASSIGN_OR_RETURN(job_id, config::GetString("COHORT_JOB_ID"));
  }
  if (options.token.has_value()) {
    token = *options.token;
  } else {
    COHORT_ASSIGN_OR_RETURN(token, config::GetString("COHORT_JOB_TOKEN"));
  }
  absl::Duration timeout, connect_timeout;
  if (!options.timeout.has_value() || !options.connect_timeout.has_value()) {
    COHORT_ASSIGN_OR_RETURN(absl::Duration configured, config::GetDuration("COHORT_TIMEOUT"));
    timeout = options.timeout.value_or(configured);
    connect_timeout = options.connect_timeout.value_or(configured);
  } else {
    timeout = *options.timeout;
    connect_timeout = *options.connect_timeout;
  }
  const std::string host = options.host.empty() ? "localhost" : options.host;
  const std::string address = HostPort{host, options.port}.ToString();
  const Deadline deadline = Deadline::In(connect_timeout);

  while (true) {
    auto connected = ConnectTcp(host, options.port, deadline);
    if (!connected.ok()) {
      if (connected.status().code() != absl::StatusCode::kUnavailable) {
        return absl::Status(connected.status().code(),
                            absl::StrCat("store client: ", connected.status().message(),
                                         " (check COHORT_STORE_ADDR)"));
      }
      return absl::UnavailableError(absl::StrCat(
          "store client gave up on the store at ", address, " after its connect timeout of ",
          absl::FormatDuration(connect_timeout), ": ", connected.status().message(),
          "; if the store starts later, raise the connect timeout (COHORT_TIMEOUT)"));
    }
    Fd fd = std::move(*connected);
    auto limits = Handshake(fd.get(), address, job_id, token, deadline);
    if (limits.ok()) {
      std::string local_address = LocalAddress(fd.get()).value_or("");
      return absl::WrapUnique(new StoreClient(std::move(fd), address, std::move(local_address),
                                              timeout, options.reply_margin, limits->max_key_bytes,
                                              limits->max_value_bytes));
    }
    absl::StatusCode code = limits.status().code();
    bool transport_failure =
        code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded;
    if (!transport_failure) return limits.status();
    if (deadline.Expired()) {
      return absl::Status(
          code, absl::StrCat("handshake with the store at ", address, " did not finish within ",
                             absl::FormatDuration(connect_timeout), ": ", limits.status().message(),
                             " (is a cohort store listening there? check COHORT_STORE_ADDR)"));
    }
    // The store may be starting or stopping; try a fresh connection.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(50, deadline.RemainingMillis(50))));
  }
}

StoreClient::StoreClient(Fd fd, std::string address, std::string local_address,
                         absl::Duration timeout, absl::Duration reply_margin, int64_t max_key_bytes,
                         int64_t max_value_bytes)
    : fd_(std::move(fd)),
      address_(std::move(address)),
      local_address_(std::move(local_address)),
      timeout_(timeout),
      reply_margin_(reply_margin),
      max_key_bytes_(max_key_bytes),
      max_value_bytes_(max_value_bytes) {}

StoreClient::~StoreClient() = default;

std::string StoreClient::LocalAddressHint() { return local_address_; }

absl::Status StoreClient::CheckKey(const std::string& key) const {
  if (key.size() > static_cast<size_t>(max_key_bytes_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("store at ", address_, ": ", KeyTooLargeMessage(key.size(), max_key_bytes_)));
  }
  return absl::OkStatus();
}

absl::Status StoreClient::CheckValue(const std::string& value) const {
  if (value.size() > static_cast<size_t>(max_value_bytes_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "store at ", address_, ": ", ValueTooLargeMessage(value.size(), max_value_bytes_)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> StoreClient::Call(Op op, const std::function<void(Writer&)>& fields,
                                              Deadline deadline, const std::string& what) {
  Slot slot;
  uint64_t request_id = 0;
  {
    absl::MutexLock lock(&mutex_);
    if (!broken_.ok()) return broken_;
    request_id = next_request_id_++;
    slots_[request_id] = &slot;
  }
  std::string frame;
  Writer writer(&frame);
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(op));
  writer.U64(request_id);
  fields(writer);
  writer.EndFrame();
  absl::Status sent;
  {
    absl::MutexLock lock(&send_mutex_);
    sent = WriteFully(fd_.get(), frame.data(), frame.size(), deadline,
                      absl::StrCat("the store at ", address_));
  }

  absl::MutexLock lock(&mutex_);
  if (!sent.ok() && broken_.ok()) {
    // A request cut off midway leaves the stream unusable.
    broken_ = absl::UnavailableError(
        absl::StrCat("store at ", address_, ": sending the ", what, " failed: ", sent.message(),
                     "; the store server may have stopped or its host failed"));
  }
  while (!slot.done && broken_.ok() && !deadline.Expired()) {
    if (reader_active_) {
      changed_.WaitWithTimeout(&mutex_, deadline.Remaining());
      continue;
    }
    reader_active_ = true;
    mutex_.Unlock();
    absl::Status read = ReadReplies(deadline);
    mutex_.Lock();
    reader_active_ = false;
    if (!read.ok() && broken_.ok()) broken_ = read;
    changed_.SignalAll();  // replies delivered, or another caller must take over reading
  }
  slots_.erase(request_id);
  if (slot.done) {
    if (slot.code == absl::StatusCode::kOk) return std::move(slot.payload);
    return absl::Status(
        slot.code,
        absl::StrCat("store at ", address_, ": ", slot.payload,
                     slot.code == absl::StatusCode::kDeadlineExceeded ? kTimeoutAdvice : ""));
  }
  if (!broken_.ok()) return broken_;
  return absl::DeadlineExceededError(
      absl::StrCat("store at ", address_, " did not answer the ", what,
                   " in time; the store server may be overloaded, stopped or unreachable"));
}

absl::Status StoreClient::CallMany(Op op, size_t count,
                                   const std::function<void(size_t, Writer&)>& fields,
                                   Deadline deadline,
                                   const std::function<std::string(size_t)>& what) {
  if (count == 0) return absl::OkStatus();
  std::vector<Slot> slots(count);
  std::vector<uint64_t> ids(count);
  {
    absl::MutexLock lock(&mutex_);
    if (!broken_.ok()) return broken_;
    for (size_t i = 0; i < count; ++i) {
      ids[i] = next_request_id_++;
      slots_[ids[i]] = &slots[i];
    }
  }
  std::string frames;
  Writer writer(&frames);
  for (size_t i = 0; i < count; ++i) {
    writer.BeginFrame();
    writer.U8(static_cast<uint8_t>(op));
    writer.U64(ids[i]);
    fields(i, writer);
    writer.EndFrame();
  }
  absl::Status sent;
  {
    absl::MutexLock lock(&send_mutex_);
    sent = WriteFully(fd_.get(), frames.data(), frames.size(), deadline,
                      absl::StrCat("the store at ", address_));
  }
  absl::MutexLock lock(&mutex_);
  if (!sent.ok() && broken_.ok()) {
    broken_ = absl::UnavailableError(absl::StrCat("store at ", address_, ": sending ", count, " ",
                                                  OpName(op), " requests failed: ", sent.message(),
                                                  "; the store server may have stopped or its "
                                                  "host failed"));
  }
  auto all_done = [&] {
    for (const Slot& slot : slots) {
      if (!slot.done) return false;
    }
    return true;
  };
  while (!all_done() && broken_.ok() && !deadline.Expired()) {
    if (reader_active_) {
      changed_.WaitWithTimeout(&mutex_, deadline.Remaining());
      continue;
    }
    reader_active_ = true;
    mutex_.Unlock();
    absl::Status read = ReadReplies(deadline);
    mutex_.Lock();
    reader_active_ = false;
    if (!read.ok() && broken_.ok()) broken_ = read;
    changed_.SignalAll();
  }
  for (uint64_t id : ids) slots_.erase(id);
  for (size_t i = 0; i < count; ++i) {
    if (!slots[i].done) {
      if (!broken_.ok()) return broken_;
      return absl::DeadlineExceededError(absl::StrCat(
          "store at ", address_, " did not answer the ", what(i),
          " in time; the store server may be overloaded, stopped or unreachable"));
    }
    if (slots[i].code != absl::StatusCode::kOk) {
      return absl::Status(slots[i].code,
                          absl::StrCat("store at ", address_, ": ", slots[i].payload));
    }
  }
  return absl::OkStatus();
}

absl::Status StoreClient::ReadReplies(Deadline deadline) {
  pollfd entry = {fd_.get(), POLLIN, 0};
  int ready = ::poll(&entry, 1, deadline.RemainingMillis(1000));
  if (ready < 0 && errno != EINTR) {
    return absl::UnavailableError(
        absl::StrCat("store at ", address_, ": poll failed: ", std::strerror(errno)));
  }
  if (ready <= 0) return absl::OkStatus();
  char chunk[kReadChunkBytes];
  while (true) {
    ssize_t got = ::recv(fd_.get(), chunk, sizeof(chunk), MSG_DONTWAIT);
    if (got > 0) {
      read_buffer_.append(chunk, static_cast<size_t>(got));
      if (static_cast<size_t>(got) < sizeof(chunk)) break;
      continue;
    }
    if (got == 0) {
      return absl::UnavailableError(absl::StrCat(
          "the store at ", address_,
          " closed the connection (the store server stopped or its host failed); check the "
          "process that runs the store (the rendezvous host), then restart the job"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return absl::UnavailableError(absl::StrCat("store at ", address_,
                                               ": the connection failed: ", std::strerror(errno),
                                               "; the store server may have stopped"));
  }
  size_t offset = 0;
  absl::MutexLock lock(&mutex_);
  while (read_buffer_.size() - offset >= kFrameHeaderBytes) {
    uint32_t length = LoadU32(read_buffer_.data() + offset);
    if (read_buffer_.size() - offset - kFrameHeaderBytes < length) break;
    DeliverLocked(absl::string_view(read_buffer_).substr(offset + kFrameHeaderBytes, length));
    offset += kFrameHeaderBytes + length;
  }
  read_buffer_.erase(0, offset);
  return absl::OkStatus();
}

void StoreClient::DeliverLocked(absl::string_view body) {
  Reader reader(body);
  uint64_t request_id = 0;
  uint8_t code = 0;
  if (!reader.U64(&request_id, "request id").ok() || !reader.U8(&code, "code").ok() ||
      code > static_cast<uint8_t>(absl::StatusCode::kUnauthenticated)) {
    if (broken_.ok()) {
      broken_ = absl::DataLossError(
          absl::StrCat("store at ", address_,
                       " sent a malformed reply (run the same cohort version on "
                       "every node)"));
    }
    return;
  }
  auto status_code = static_cast<absl::StatusCode>(code);
  std::string payload;
  if (status_code == absl::StatusCode::kOk) {
    payload.assign(body.data() + body.size() - reader.remaining(), reader.remaining());
  } else if (!reader.String(&payload, "message").ok()) {
    payload = "(no readable message)";
  }
  if (request_id == kConnectionMessageId) {
    if (broken_.ok()) {
      broken_ = absl::Status(
          status_code == absl::StatusCode::kOk ? absl::StatusCode::kUnavailable : status_code,
          absl::StrCat("store at ", address_, ": ", payload));
    }
    return;
  }
  auto found = slots_.find(request_id);
  if (found == slots_.end()) return;  // its caller gave up waiting
  found->second->done = true;
  found->second->code = status_code;
  found->second->payload = std::move(payload);
}

namespace {

absl::Status Malformed(const std::string& address, const std::string& what,
                       const absl::Status& status) {
  return absl::DataLossError(absl::StrCat("store at ", address, " sent a malformed reply to the ",
                                          what, ": ", status.message(),
                                          " (run the same cohort version on every node)"));
}

}  // namespace

absl::Status StoreClient::Set(const std::string& key, const std::string& value) {
  COHORT_RETURN_IF_ERROR(CheckKey(key));
  COHORT_RETURN_IF_ERROR(CheckValue(value));
  std::string what = absl::StrCat("set of key ", QuoteKey(key));
  auto reply = Call(
      Op::kSet,
      [&](Writer& writer) {
        writer.String(key);
        writer.String(value);
      },
      Deadline::In(timeout_), what);
  return reply.status();
}

absl::Status StoreClient::SetMany(const std::vector<std::pair<std::string, std::string>>& entries) {
  for (const auto& [key, value] : entries) {
    COHORT_RETURN_IF_ERROR(CheckKey(key));
    COHORT_RETURN_IF_ERROR(CheckValue(value));
  }
  return CallMany(
      Op::kSet, entries.size(),
      [&](size_t i, Writer& writer) {
        writer.String(entries[i].first);
        writer.String(entries[i].second);
      },
      Deadline::In(timeout_),
      [&](size_t i) { return absl::StrCat("set of key ", QuoteKey(entries[i].first)); });
}

absl::StatusOr<std::string> StoreClient::Get(const std::string& key) { return Get(key, timeout_); }

absl::StatusOr<std::string> StoreClient::Get(const std::string& key, absl::Duration timeout) {
  COHORT_RETURN_IF_ERROR(CheckKey(key));
  std::string what = absl::StrCat("get of key ", QuoteKey(key));
  COHORT_ASSIGN_OR_RETURN(std::string reply, Call(
                                                 Op::kGet,
                                                 [&](Writer& writer) {
                                                   writer.String(key);
                                                   writer.U64(EncodeTimeout(timeout));
                                                 },
                                                 Deadline::In(timeout + reply_margin_), what));
  Reader reader(reply);
  std::string value;
  absl::Status parsed = reader.String(&value, "value");
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) return Malformed(address_, what, parsed);
  return value;
}

absl::Status StoreClient::Wait(const std::vector<std::string>& keys) {
  return Wait(keys, timeout_);
}

absl::Status StoreClient::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  for (const std::string& key : keys) COHORT_RETURN_IF_ERROR(CheckKey(key));
  std::string what =
      absl::StrCat("wait for ", keys.size() == 1 ? "key " : "keys ", QuoteKeys(keys));
  auto reply = Call(
      Op::kWait,
      [&](Writer& writer) {
        writer.StringList(keys);
        writer.U64(EncodeTimeout(timeout));
      },
      Deadline::In(timeout + reply_margin_), what);
  return reply.status();
}

absl::StatusOr<int64_t> StoreClient::Add(const std::string& key, int64_t delta) {
  COHORT_RETURN_IF_ERROR(CheckKey(key));
  std::string what = absl::StrCat("add to key ", QuoteKey(key));
  COHORT_ASSIGN_OR_RETURN(std::string reply, Call(
                                                 Op::kAdd,
                                                 [&](Writer& writer) {
                                                   writer.String(key);
                                                   writer.I64(delta);
                                                 },
                                                 Deadline::In(timeout_), what));
  Reader reader(reply);
  int64_t sum = 0;
  absl::Status parsed = reader.I64(&sum, "sum");
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) return Malformed(address_, what, parsed);
  return sum;
}

absl::StatusOr<std::string> StoreClient::CompareSet(const std::string& key,
                                                    const std::string& expected,
                                                    const std::string& desired) {
  COHORT_RETURN_IF_ERROR(CheckKey(key));
  COHORT_RETURN_IF_ERROR(CheckValue(expected));
  COHORT_RETURN_IF_ERROR(CheckValue(desired));
  std::string what = absl::StrCat("compare_set of key ", QuoteKey(key));
  COHORT_ASSIGN_OR_RETURN(std::string reply, Call(
                                                 Op::kCompareSet,
                                                 [&](Writer& writer) {
                                                   writer.String(key);
                                                   writer.String(expected);
                                                   writer.String(desired);
                                                 },
                                                 Deadline::In(timeout_), what));
  Reader reader(reply);
  std::string value;
  absl::Status parsed = reader.String(&value, "value");
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) return Malformed(address_, what, parsed);
  return value;
}

absl::StatusOr<bool> StoreClient::Delete(const std::string& key) {
  COHORT_RETURN_IF_ERROR(CheckKey(key));
  std::string what = absl::StrCat("delete of key ", QuoteKey(key));
  COHORT_ASSIGN_OR_RETURN(
      std::string reply,
      Call(
          Op::kDelete, [&](Writer& writer) { writer.String(key); }, Deadline::In(timeout_), what));
  Reader reader(reply);
  uint8_t existed = 0;
  absl::Status parsed = reader.U8(&existed, "existed");
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) return Malformed(address_, what, parsed);
  return existed != 0;
}

absl::StatusOr<std::vector<std::string>> StoreClient::List(const std::string& prefix) {
  COHORT_RETURN_IF_ERROR(CheckKey(prefix));
  std::string what = absl::StrCat("list of prefix ", QuoteKey(prefix));
  COHORT_ASSIGN_OR_RETURN(
      std::string reply,
      Call(
          Op::kList, [&](Writer& writer) { writer.String(prefix); }, Deadline::In(timeout_), what));
  Reader reader(reply);
  std::vector<std::string> keys;
  absl::Status parsed = reader.StringList(&keys, "keys");
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) return Malformed(address_, what, parsed);
  return keys;
}

absl::StatusOr<int64_t> StoreClient::NumKeys() {
  COHORT_ASSIGN_OR_RETURN(std::string reply,
                          Call(
                              Op::kNumKeys, [](Writer&) {}, Deadline::In(timeout_), "num_keys"));
  Reader reader(reply);
  uint64_t count = 0;
  absl::Status parsed = reader.U64(&count, "count");
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) return Malformed(address_, "num_keys", parsed);
  return static_cast<int64_t>(count);
}

absl::StatusOr<ChangeSet> StoreClient::Changes(const std::string& prefix, int64_t after_revision,
                                               absl::Duration timeout) {
  COHORT_RETURN_IF_ERROR(CheckKey(prefix));
  std::string what = absl::StrCat("changes under prefix ", QuoteKey(prefix));
  COHORT_ASSIGN_OR_RETURN(std::string reply, Call(
                                                 Op::kChanges,
                                                 [&](Writer& writer) {
                                                   writer.String(prefix);
                                                   writer.I64(after_revision);
                                                   writer.U64(EncodeTimeout(timeout));
                                                 },
                                                 Deadline::In(timeout + reply_margin_), what));
  Reader reader(reply);
  ChangeSet set;
  uint32_t count = 0;
  absl::Status parsed = reader.I64(&set.revision, "revision");
  if (parsed.ok()) parsed = reader.U32(&count, "count");
  // Each entry takes at least 16 bytes, so a corrupt count cannot make us reserve much.
  if (parsed.ok() && count > reader.remaining() / 16) {
    parsed = absl::DataLossError("count larger than the reply");
  }
  for (uint32_t i = 0; parsed.ok() && i < count; ++i) {
    Change change;
    parsed = reader.String(&change.key, "key");
    if (parsed.ok()) parsed = reader.String(&change.value, "value");
    if (parsed.ok()) parsed = reader.I64(&change.revision, "revision");
    set.changes.push_back(std::move(change));
  }
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) return Malformed(address_, what, parsed);
  return set;
}

void StoreClient::Shutdown() { ::shutdown(fd_.get(), SHUT_RDWR); }

absl::Status StoreClient::Ping() {
  return Call(
             Op::kPing, [](Writer&) {}, Deadline::In(timeout_), "ping")
      .status();
}

}  // namespace cohort::store
