#include "elastic/store/store_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/memory/memory.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/socket.h"
#include "common/status.h"
#include "elastic/store/wire.h"

namespace cohort::store {
namespace {

constexpr uint64_t kListenTag = UINT64_MAX;
constexpr uint64_t kWakeTag = UINT64_MAX - 1;
constexpr size_t kReadChunkBytes = 64 * 1024;
// Bytes read from one connection per readiness event, so one busy client cannot starve others.
constexpr size_t kReadBudgetBytes = 4 * 1024 * 1024;
// A client that does not read its replies stops being served beyond this much queued output.
constexpr size_t kOutputHighWaterBytes = 8 * 1024 * 1024;
// After a refusal or protocol error the server stops sending and reads what the client still
// sends for this long, so the client receives the explanation instead of a connection reset.
constexpr absl::Duration kLinger = absl::Seconds(2);
constexpr int64_t kNever = INT64_MAX;

std::string PeerAddress(int fd) {
  sockaddr_storage address = {};
  socklen_t length = sizeof(address);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return "an unknown address";
  }
  char text[INET6_ADDRSTRLEN] = {};
  int port = 0;
  if (address.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    }
    port = ntohs(v6->sin6_port);
  }
  return HostPort{text, port}.ToString();
}

absl::StatusOr<int64_t> ResolveLimit(const std::optional<int64_t>& option, const char* variable) {
  if (!option.has_value()) return config::GetBytes(variable);
  if (*option <= 0 || *option > (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat("store server option for ", variable, " is ",
                                                   *option,
                                                   " bytes; give a positive size of at most 2G"));
  }
  return *option;
}

int64_t DeadlineNanos(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return kNever;
  return NowNanos() + absl::ToInt64Nanoseconds(timeout);
}

enum class State { kPreamble, kHello, kProof, kReady };

struct Connection {
  uint64_t id = 0;
  Fd fd;
  std::string peer;
  State state = State::kPreamble;
  std::string client_nonce;
  std::string server_nonce;
  // Unconsumed input starts at input_offset; unsent output at output_offset.
  std::string input;
  size_t input_offset = 0;
  std::string output;
  size_t output_offset = 0;
  uint32_t registered_events = 0;
  bool flush_queued = false;
  bool reading_paused = false;  // too much queued output: stop taking requests
  bool input_stalled = false;   // complete requests wait in `input` until output drains
  bool close_after_flush = false;
  bool draining = false;  // write side shut; reading until EOF or the linger deadline
  bool dead = false;
  int64_t deadline_nanos = kNever;  // handshake or linger deadline
  std::vector<uint64_t> waiter_ids;

  size_t pending_output() const { return output.size() - output_offset; }
};

// A key's value and the revision of its last write.
struct Entry {
  std::string value;
  int64_t revision = 0;
};

// A get or wait parked until its keys exist or its timeout passes; a changes request parked
// until a key under its prefix (keys[0]) is written.
struct Waiter {
  uint64_t connection_id = 0;
  uint64_t request_id = 0;
  Op op = Op::kWait;
  std::vector<std::string> keys;
  absl::Duration timeout;
  int64_t deadline_nanos = kNever;
  // keys[0, cursor) existed when last looked at; the waiter is listed in key_waiters_ under
  // keys[cursor] only, so a set touches just the waiters blocked on that very key.
  size_t cursor = 0;
  bool listed = false;
  int64_t after_revision = 0;  // changes only
};

}  // namespace

class StoreServer::Loop {
 public:
  Loop() = default;
  ~Loop() { Stop(); }

  absl::Status Init(const StoreServerOptions& options);
  int port() const { return port_; }
  void Stop();

 private:
  void Run();
  int NextTimeoutMillis() const;
  void AcceptAll();
  void HandleEvent(uint64_t id, uint32_t events);
  void ReadInput(Connection& connection);
  void ProcessInput(Connection& connection);
  void HandleHandshake(Connection& connection, absl::string_view body);
  void HandleRequest(Connection& connection, absl::string_view body);
  absl::Status Dispatch(Connection& connection, Op op, uint64_t request_id, Reader& reader);
  void Park(Connection& connection, uint64_t request_id, Op op, std::vector<std::string> keys,
            absl::Duration timeout);
  // Stores a value under the next revision; the caller answers its request, then KeyWritten.
  void Put(const std::string& key, std::string value);
  bool Erase(const std::string& key);
  void KeyWritten(const std::string& key);
  // Answers a changes request with the keys under `prefix` written after `after_revision`;
  // false (nothing sent) when there are none.
  bool AnswerChanges(Connection& connection, uint64_t request_id, const std::string& prefix,
                     int64_t after_revision, bool even_if_empty);
  // True when every key of the waiter exists; otherwise lists it under its first missing key.
  bool Advance(uint64_t waiter_id, Waiter& waiter);
  void AnswerWaiter(Connection& connection, const Waiter& waiter);
  void RemoveWaiter(uint64_t waiter_id);
  void ExpireDeadlines();

  void SendOk(Connection& connection, uint64_t request_id,
              const std::function<void(Writer&)>& payload);
  void SendError(Connection& connection, uint64_t request_id, const absl::Status& status);
  void Refuse(Connection& connection, absl::StatusCode code, const std::string& reason);
  void ProtocolError(Connection& connection, const std::string& what);
  void QueueFlush(Connection& connection);
  void FlushQueued();
  void Flush(Connection& connection);
  void UpdateInterest(Connection& connection);
  void SetDeadline(Connection& connection, int64_t deadline_nanos);
  void MarkDead(Connection& connection);
  void Reap();
  Connection* Find(uint64_t id);

  absl::Status CheckKey(const std::string& key) const;
  absl::Status CheckValue(const std::string& value) const;

  // Set before the thread starts, read-only after.
  std::string job_id_;
  std::string token_;
  int64_t max_key_bytes_ = 0;
  int64_t max_value_bytes_ = 0;
  uint64_t max_frame_bytes_ = 0;
  absl::Duration handshake_timeout_;
  int port_ = 0;
  Fd listen_fd_;
  Fd epoll_fd_;
  Fd wake_fd_;
  Fd reserve_fd_;  // given up to accept-and-close a connection when out of descriptors

  absl::Mutex stop_mutex_;
  std::thread thread_ ABSL_GUARDED_BY(stop_mutex_);
  std::atomic<bool> stopping_{false};

  // Everything below belongs to the loop thread.
  std::map<std::string, Entry, std::less<>> data_;
  // Every key by the revision of its last write (points at data_'s keys, which stay put).
  std::map<int64_t, const std::string*> by_revision_;
  int64_t revision_ = 0;
  // Parked changes requests (also in waiters_).
  std::set<uint64_t> change_waiters_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  uint64_t next_connection_id_ = 1;
  std::set<std::pair<int64_t, uint64_t>> connection_deadlines_;
  absl::flat_hash_map<uint64_t, Waiter> waiters_;
  uint64_t next_waiter_id_ = 1;
  absl::flat_hash_map<std::string, std::vector<uint64_t>> key_waiters_;
  std::set<std::pair<int64_t, uint64_t>> waiter_deadlines_;
  std::vector<uint64_t> flush_queue_;
  std::vector<uint64_t> dead_;
};

absl::Status StoreServer::Loop::Init(const StoreServerOptions& options) {
  if (options.job_id.has_value()) {
    job_id_ = *options.job_id;
  } else {
    COHORT_ASSIGN_OR_RETURN(job_id_, config::GetString("COHORT_JOB_ID"));
  }
  if (options.token.has_value()) {
    token_ = *options.token;
  } else {
    COHORT_ASSIGN_OR_RETURN(token_, config::GetString("COHORT_JOB_TOKEN"));
  }
  COHORT_ASSIGN_OR_RETURN(max_key_bytes_,
                          ResolveLimit(options.max_key_bytes, "COHORT_STORE_MAX_KEY_BYTES"));
  COHORT_ASSIGN_OR_RETURN(max_value_bytes_,
                          ResolveLimit(options.max_value_bytes, "COHORT_STORE_MAX_VALUE_BYTES"));
  max_frame_bytes_ = static_cast<uint64_t>(max_key_bytes_) +
                     static_cast<uint64_t>(max_value_bytes_) + kRequestOverheadBytes;
  handshake_timeout_ = options.handshake_timeout;

  std::string where = HostPort{options.host.empty() ? "*" : options.host, options.port}.ToString();
  auto listening = ListenTcp(options.host, options.port);
  if (!listening.ok()) {
    return absl::Status(
        listening.status().code(),
        absl::StrCat("store server cannot listen on ", where, ": ", listening.status().message(),
                     "; choose a free port, or stop the process that holds it"));
  }
  listen_fd_ = std::move(*listening);
  COHORT_RETURN_IF_ERROR(SetNonBlocking(listen_fd_.get(), true));
  COHORT_ASSIGN_OR_RETURN(port_, LocalPort(listen_fd_.get()));

  epoll_fd_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
  wake_fd_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!epoll_fd_.valid() || !wake_fd_.valid()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "store server cannot create its epoll or eventfd descriptor: ", std::strerror(errno),
        "; raise the open-file limit (ulimit -n)"));
  }
  reserve_fd_ = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const std::pair<int, uint64_t> watched[] = {{listen_fd_.get(), kListenTag},
                                              {wake_fd_.get(), kWakeTag}};
  for (auto [fd, tag] : watched) {
    epoll_event event = {};
    event.events = EPOLLIN;
    event.data.u64 = tag;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      return absl::InternalError(
          absl::StrCat("store server: epoll_ctl failed: ", std::strerror(errno)));
    }
  }
  COHORT_LOG(INFO) << "store serving job " << QuoteKey(job_id_) << " on port " << port_
                   << (token_.empty() ? " without a job token" : "");
  absl::MutexLock lock(&stop_mutex_);
  thread_ = std::thread([this] { Run(); });
  pthread_setname_np(thread_.native_handle(), "cohort-store");
  return absl::OkStatus();
}

void StoreServer::Loop::Stop() {
  absl::MutexLock lock(&stop_mutex_);
  if (!thread_.joinable()) return;
  stopping_.store(true);
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
  thread_.join();
}

void StoreServer::Loop::Run() {
  std::vector<epoll_event> events(256);
  while (!stopping_.load()) {
    int count = ::epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()),
                             NextTimeoutMillis());
    if (count < 0) {
      if (errno != EINTR) {
        COHORT_LOG(ERROR) << "store server: epoll_wait failed: " << std::strerror(errno);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      continue;
    }
    for (int i = 0; i < count; ++i) {
      uint64_t tag = events[i].data.u64;
      if (tag == kListenTag) {
        AcceptAll();
      } else if (tag == kWakeTag) {
        uint64_t value = 0;
        ssize_t ignored = ::read(wake_fd_.get(), &value, sizeof(value));
        (void)ignored;
      } else {
        HandleEvent(tag, events[i].events);
      }
    }
    ExpireDeadlines();
    FlushQueued();
    Reap();
  }
  // Closing every socket now lets clients see at once that the store is gone.
  waiters_.clear();
  change_waiters_.clear();
  key_waiters_.clear();
  waiter_deadlines_.clear();
  connection_deadlines_.clear();
  connections_.clear();
  listen_fd_.Reset();
  COHORT_LOG(INFO) << "store on port " << port_ << " stopped";
}

int StoreServer::Loop::NextTimeoutMillis() const {
  int64_t next = kNever;
  if (!waiter_deadlines_.empty()) next = waiter_deadlines_.begin()->first;
  if (!connection_deadlines_.empty()) {
    next = std::min(next, connection_deadlines_.begin()->first);
  }
  if (next == kNever) return -1;
  int64_t millis = (next - NowNanos() + 999'999) / 1'000'000;
  return static_cast<int>(std::clamp<int64_t>(millis, 0, 60'000));
}

void StoreServer::Loop::AcceptAll() {
  while (true) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if ((errno == EMFILE || errno == ENFILE) && reserve_fd_.valid()) {
        // Accept and close one connection with the spare descriptor, so the client hears
        // about it and the loop does not spin on a listen socket it cannot serve.
        reserve_fd_.Reset();
        Fd refused(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        COHORT_LOG(WARN) << "store on port " << port_ << " is out of file descriptors with "
                         << connections_.size()
                         << " connections and turned a client away; raise the open-file "
                            "limit (ulimit -n) where the store runs";
        refused.Reset();
        reserve_fd_ = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        continue;
      }
      COHORT_LOG(WARN) << "store on port " << port_
                       << " cannot accept a connection: " << std::strerror(errno);
      return;
    }
    auto connection = std::make_unique<Connection>();
    connection->id = next_connection_id_++;
    connection->fd = Fd(fd);
    connection->peer = PeerAddress(fd);
    (void)SetNoDelay(fd);
    epoll_event event = {};
    event.events = EPOLLIN;
    event.data.u64 = connection->id;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      COHORT_LOG(WARN) << "store cannot watch the connection from " << connection->peer << ": "
                       << std::strerror(errno);
      continue;
    }
    connection->registered_events = EPOLLIN;
    SetDeadline(*connection, DeadlineNanos(handshake_timeout_));
    connections_.emplace(connection->id, std::move(connection));
  }
}

Connection* StoreServer::Loop::Find(uint64_t id) {
  auto found = connections_.find(id);
  return found == connections_.end() ? nullptr : found->second.get();
}

void StoreServer::Loop::HandleEvent(uint64_t id, uint32_t events) {
  Connection* connection = Find(id);
  if (connection == nullptr || connection->dead) return;
  if (events & EPOLLOUT) {
    Flush(*connection);
    if (!connection->dead && connection->input_stalled) ProcessInput(*connection);
  }
  if (connection->dead) return;
  if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
    MarkDead(*connection);
    return;
  }
  if (events & EPOLLIN) ReadInput(*connection);
}

void StoreServer::Loop::ReadInput(Connection& connection) {
  char chunk[kReadChunkBytes];
  size_t total = 0;
  bool peer_closed = false;
  while (total < kReadBudgetBytes) {
    ssize_t got = ::recv(connection.fd.get(), chunk, sizeof(chunk), 0);
    if (got > 0) {
      total += static_cast<size_t>(got);
      // Once the server has said its last word, what the client still sends is dropped.
      if (!connection.close_after_flush) connection.input.append(chunk, static_cast<size_t>(got));
      continue;
    }
    if (got == 0) {
      peer_closed = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    COHORT_LOG(DEBUG) << "store: receiving from " << connection.peer
                      << " failed: " << std::strerror(errno);
    MarkDead(connection);
    return;
  }
  if (!connection.close_after_flush) ProcessInput(connection);
  if (peer_closed && !connection.dead) {
    // A bare connect-and-close (a port probe) is not worth a warning; a half-done handshake is.
    if ((connection.state == State::kHello || connection.state == State::kProof) &&
        !connection.close_after_flush) {
      COHORT_LOG(WARN) << "store: the client at " << connection.peer
                       << " closed its connection during the handshake";
    }
    MarkDead(connection);
  }
}

void StoreServer::Loop::ProcessInput(Connection& connection) {
  connection.input_stalled = false;
  while (!connection.dead && !connection.close_after_flush) {
    if (connection.pending_output() > kOutputHighWaterBytes) {
      connection.input_stalled = true;
      break;
    }
    absl::string_view pending(connection.input.data() + connection.input_offset,
                              connection.input.size() - connection.input_offset);
    if (connection.state == State::kPreamble) {
      // A foreign protocol shows in its first bytes; no need to wait for all twelve.
      size_t shown = std::min(pending.size(), kMagic.size());
      if (pending.substr(0, shown) != kMagic.substr(0, shown)) {
        COHORT_LOG(WARN) << "store on port " << port_ << " closed a connection from "
                         << connection.peer
                         << ": it is not a cohort store client (its first bytes are not the "
                            "store protocol's magic); check what connects to this port";
        MarkDead(connection);
        break;
      }
      if (pending.size() < kPreambleBytes) break;
      uint32_t version = LoadU32(pending.data() + kMagic.size());
      connection.input_offset += kPreambleBytes;
      if (version != kProtocolVersion) {
        Refuse(connection, absl::StatusCode::kFailedPrecondition,
               absl::StrCat("the client speaks store protocol version ", version,
                            " but the store speaks version ", kProtocolVersion,
                            " (run the same cohort version on every node)"));
        break;
      }
      connection.state = State::kHello;
      continue;
    }
    if (pending.size() < kFrameHeaderBytes) break;
    uint64_t length = LoadU32(pending.data());
    if (connection.state != State::kReady && length > kMaxHandshakeFrameBytes) {
      Refuse(connection, absl::StatusCode::kInvalidArgument,
             absl::StrCat("its handshake message of ", length, " bytes is larger than the ",
                          kMaxHandshakeFrameBytes, " bytes a handshake may take"));
      break;
    }
    if (length > max_frame_bytes_) {
      ProtocolError(connection,
                    absl::StrCat("it sent a message of ", length,
                                 " bytes, larger than the store's limit of ", max_frame_bytes_,
                                 " bytes (COHORT_STORE_MAX_KEY_BYTES + "
                                 "COHORT_STORE_MAX_VALUE_BYTES + 64K); store less, or raise "
                                 "those limits where the store server runs"));
      break;
    }
    if (pending.size() < kFrameHeaderBytes + length) break;
    absl::string_view body = pending.substr(kFrameHeaderBytes, length);
    connection.input_offset += kFrameHeaderBytes + length;
    if (connection.state == State::kReady) {
      HandleRequest(connection, body);
    } else {
      HandleHandshake(connection, body);
    }
  }
  if (connection.input_offset == connection.input.size()) {
    connection.input.clear();
    connection.input_offset = 0;
  } else if (connection.input_offset > 0 &&
             connection.input_offset >= connection.input.size() / 2) {
    connection.input.erase(0, connection.input_offset);
    connection.input_offset = 0;
  }
}

void StoreServer::Loop::HandleHandshake(Connection& connection, absl::string_view body) {
  Reader reader(body);
  uint8_t type = 0;
  absl::Status parsed = reader.U8(&type, "message type");
  if (connection.state == State::kHello) {
    std::string job_id, nonce;
    uint8_t has_token = 0;
    if (parsed.ok() && type != static_cast<uint8_t>(HandshakeType::kHello)) {
      parsed = absl::InvalidArgumentError("it did not start with a hello message");
    }
    if (parsed.ok()) parsed = reader.String(&job_id, "job id");
    if (parsed.ok()) parsed = reader.U8(&has_token, "has token");
    if (parsed.ok()) parsed = reader.Bytes(kNonceBytes, &nonce, "client nonce");
    if (parsed.ok()) parsed = reader.Done();
    if (!parsed.ok()) {
      Refuse(connection, absl::StatusCode::kInvalidArgument,
             absl::StrCat("its hello is malformed (", parsed.message(), ")"));
      return;
    }
    if (job_id != job_id_) {
      Refuse(
          connection, absl::StatusCode::kPermissionDenied,
          absl::StrCat("the client belongs to job ", QuoteKey(job_id), " but the store serves job ",
                       QuoteKey(job_id_), " (set COHORT_JOB_ID to the job's id)"));
      return;
    }
    if (has_token == 0 && !token_.empty()) {
      Refuse(connection, absl::StatusCode::kPermissionDenied,
             "the client has no job token but the store requires one (set COHORT_JOB_TOKEN to "
             "the job's token)");
      return;
    }
    connection.client_nonce = std::move(nonce);
    connection.server_nonce = crypto::RandomBytes(kNonceBytes);
    Writer writer(&connection.output);
    writer.BeginFrame();
    writer.U8(static_cast<uint8_t>(HandshakeType::kChallenge));
    writer.Bytes(connection.server_nonce);
    writer.EndFrame();
    connection.state = State::kProof;
    QueueFlush(connection);
    return;
  }
  std::string proof;
  if (parsed.ok() && type != static_cast<uint8_t>(HandshakeType::kProof)) {
    parsed = absl::InvalidArgumentError("it sent no proof after the challenge");
  }
  if (parsed.ok()) parsed = reader.Bytes(kProofBytes, &proof, "proof");
  if (parsed.ok()) parsed = reader.Done();
  if (!parsed.ok()) {
    Refuse(connection, absl::StatusCode::kInvalidArgument,
           absl::StrCat("its proof message is malformed (", parsed.message(), ")"));
    return;
  }
  std::string expected =
      HandshakeProof(token_, "client", job_id_, connection.client_nonce, connection.server_nonce);
  if (!crypto::ConstantTimeEquals(proof, expected)) {
    Refuse(connection, absl::StatusCode::kPermissionDenied,
           "the job token does not match (set COHORT_JOB_TOKEN to the job's token)");
    return;
  }
  Writer writer(&connection.output);
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(HandshakeType::kWelcome));
  writer.Bytes(
      HandshakeProof(token_, "server", job_id_, connection.client_nonce, connection.server_nonce));
  writer.U64(static_cast<uint64_t>(max_key_bytes_));
  writer.U64(static_cast<uint64_t>(max_value_bytes_));
  writer.EndFrame();
  connection.state = State::kReady;
  SetDeadline(connection, kNever);
  QueueFlush(connection);
  COHORT_LOG(DEBUG) << "store: client at " << connection.peer << " connected";
}

void StoreServer::Loop::HandleRequest(Connection& connection, absl::string_view body) {
  Reader reader(body);
  uint8_t op = 0;
  uint64_t request_id = 0;
  if (!reader.U8(&op, "op").ok() || !reader.U64(&request_id, "request id").ok() ||
      request_id == kConnectionMessageId) {
    ProtocolError(connection, "it sent a request without an operation and request id");
    return;
  }
  absl::Status status = Dispatch(connection, static_cast<Op>(op), request_id, reader);
  if (status.ok()) return;
  if (status.code() == absl::StatusCode::kDataLoss) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "the store could not parse this ", OpName(static_cast<Op>(op)),
        " request: ", status.message(), " (run the same cohort version on every node)"));
  }
  SendError(connection, request_id, status);
}

absl::Status StoreServer::Loop::CheckKey(const std::string& key) const {
  if (key.size() > static_cast<size_t>(max_key_bytes_)) {
    return absl::InvalidArgumentError(KeyTooLargeMessage(key.size(), max_key_bytes_));
  }
  return absl::OkStatus();
}

absl::Status StoreServer::Loop::CheckValue(const std::string& value) const {
  if (value.size() > static_cast<size_t>(max_value_bytes_)) {
    return absl::InvalidArgumentError(ValueTooLargeMessage(value.size(), max_value_bytes_));
  }
  return absl::OkStatus();
}

absl::Status StoreServer::Loop::Dispatch(Connection& connection, Op op, uint64_t request_id,
                                         Reader& reader) {
  auto no_payload = [](Writer&) {};
  switch (op) {
    case Op::kPing: {
      COHORT_RETURN_IF_ERROR(reader.Done());
      SendOk(connection, request_id, no_payload);
      return absl::OkStatus();
    }
    case Op::kSet: {
      std::string key, value;
      COHORT_RETURN_IF_ERROR(reader.String(&key, "key"));
      COHORT_RETURN_IF_ERROR(reader.String(&value, "value"));
      COHORT_RETURN_IF_ERROR(reader.Done());
      COHORT_RETURN_IF_ERROR(CheckKey(key));
      COHORT_RETURN_IF_ERROR(CheckValue(value));
      Put(key, std::move(value));
      SendOk(connection, request_id, no_payload);
      KeyWritten(key);
      return absl::OkStatus();
    }
    case Op::kGet:
    case Op::kWait: {
      std::vector<std::string> keys;
      if (op == Op::kGet) {
        keys.emplace_back();
        COHORT_RETURN_IF_ERROR(reader.String(&keys[0], "key"));
      } else {
        COHORT_RETURN_IF_ERROR(reader.StringList(&keys, "keys"));
      }
      uint64_t timeout_millis = 0;
      COHORT_RETURN_IF_ERROR(reader.U64(&timeout_millis, "timeout"));
      COHORT_RETURN_IF_ERROR(reader.Done());
      for (const std::string& key : keys) COHORT_RETURN_IF_ERROR(CheckKey(key));
      Park(connection, request_id, op, std::move(keys), DecodeTimeout(timeout_millis));
      return absl::OkStatus();
    }
    case Op::kAdd: {
      std::string key;
      int64_t delta = 0;
      COHORT_RETURN_IF_ERROR(reader.String(&key, "key"));
      COHORT_RETURN_IF_ERROR(reader.I64(&delta, "delta"));
      COHORT_RETURN_IF_ERROR(reader.Done());
      COHORT_RETURN_IF_ERROR(CheckKey(key));
      int64_t current = 0;
      auto found = data_.find(key);
      if (found != data_.end() && !absl::SimpleAtoi(found->second.value, &current)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "add on key ", QuoteKey(key), ": it holds ", QuoteKey(found->second.value),
            ", which is not an integer; add only keys that hold a decimal int64 or are missing"));
      }
      int64_t sum = 0;
      if (__builtin_add_overflow(current, delta, &sum)) {
        return absl::OutOfRangeError(absl::StrCat("add of ", delta, " to key ", QuoteKey(key),
                                                  " (now ", current, ") overflows int64"));
      }
      Put(key, absl::StrCat(sum));
      SendOk(connection, request_id, [sum](Writer& writer) { writer.I64(sum); });
      KeyWritten(key);
      return absl::OkStatus();
    }
    case Op::kCompareSet: {
      std::string key, expected, desired;
      COHORT_RETURN_IF_ERROR(reader.String(&key, "key"));
      COHORT_RETURN_IF_ERROR(reader.String(&expected, "expected"));
      COHORT_RETURN_IF_ERROR(reader.String(&desired, "desired"));
      COHORT_RETURN_IF_ERROR(reader.Done());
      COHORT_RETURN_IF_ERROR(CheckKey(key));
      COHORT_RETURN_IF_ERROR(CheckValue(expected));
      COHORT_RETURN_IF_ERROR(CheckValue(desired));
      // torch c10d semantics: a missing key counts as the empty value for the comparison; when
      // it is missing and the comparison fails nothing is stored and `expected` comes back.
      auto found = data_.find(key);
      bool written = false;
      if (found == data_.end() ? expected.empty() : found->second.value == expected) {
        Put(key, std::move(desired));
        found = data_.find(key);
        written = true;
      }
      const std::string* result = found == data_.end() ? &expected : &found->second.value;
      SendOk(connection, request_id, [result](Writer& writer) { writer.String(*result); });
      if (written) KeyWritten(key);
      return absl::OkStatus();
    }
    case Op::kDelete: {
      std::string key;
      COHORT_RETURN_IF_ERROR(reader.String(&key, "key"));
      COHORT_RETURN_IF_ERROR(reader.Done());
      COHORT_RETURN_IF_ERROR(CheckKey(key));
      bool existed = Erase(key);
      SendOk(connection, request_id, [existed](Writer& writer) { writer.U8(existed ? 1 : 0); });
      return absl::OkStatus();
    }
    case Op::kList: {
      std::string prefix;
      COHORT_RETURN_IF_ERROR(reader.String(&prefix, "prefix"));
      COHORT_RETURN_IF_ERROR(reader.Done());
      COHORT_RETURN_IF_ERROR(CheckKey(prefix));
      std::vector<std::string> keys;
      for (auto it = data_.lower_bound(prefix);
           it != data_.end() && absl::StartsWith(it->first, prefix); ++it) {
        keys.push_back(it->first);
      }
      SendOk(connection, request_id, [&keys](Writer& writer) { writer.StringList(keys); });
      return absl::OkStatus();
    }
    case Op::kNumKeys: {
      COHORT_RETURN_IF_ERROR(reader.Done());
      uint64_t count = data_.size();
      SendOk(connection, request_id, [count](Writer& writer) { writer.U64(count); });
      return absl::OkStatus();
    }
    case Op::kChanges: {
      std::string prefix;
      int64_t after_revision = 0;
      uint64_t timeout_millis = 0;
      COHORT_RETURN_IF_ERROR(reader.String(&prefix, "prefix"));
      COHORT_RETURN_IF_ERROR(reader.I64(&after_revision, "after revision"));
      COHORT_RETURN_IF_ERROR(reader.U64(&timeout_millis, "timeout"));
      COHORT_RETURN_IF_ERROR(reader.Done());
      COHORT_RETURN_IF_ERROR(CheckKey(prefix));
      absl::Duration timeout = DecodeTimeout(timeout_millis);
      if (AnswerChanges(connection, request_id, prefix, after_revision,
                        timeout <= absl::ZeroDuration())) {
        return absl::OkStatus();
      }
      Waiter waiter{connection.id, request_id, op, {prefix}, timeout};
      waiter.after_revision = after_revision;
      waiter.deadline_nanos = DeadlineNanos(timeout);
      uint64_t waiter_id = next_waiter_id_++;
      if (waiter.deadline_nanos != kNever) {
        waiter_deadlines_.emplace(waiter.deadline_nanos, waiter_id);
      }
      connection.waiter_ids.push_back(waiter_id);
      waiters_.emplace(waiter_id, std::move(waiter));
      change_waiters_.insert(waiter_id);
      return absl::OkStatus();
    }
  }
  return absl::UnimplementedError(absl::StrCat(
      "the store does not know operation ", static_cast<int>(op),
      "; the client speaks a newer store protocol (run the same cohort version on every node)"));
}

bool StoreServer::Loop::Advance(uint64_t waiter_id, Waiter& waiter) {
  const size_t count = waiter.keys.size();
  while (waiter.cursor < count && data_.contains(waiter.keys[waiter.cursor])) ++waiter.cursor;
  if (waiter.cursor == count) {
    // A key passed earlier may have been deleted since; it counts as missing again.
    size_t first_missing = 0;
    while (first_missing < count && data_.contains(waiter.keys[first_missing])) ++first_missing;
    if (first_missing == count) return true;
    waiter.cursor = first_missing;
  }
  key_waiters_[waiter.keys[waiter.cursor]].push_back(waiter_id);
  waiter.listed = true;
  return false;
}

void StoreServer::Loop::AnswerWaiter(Connection& connection, const Waiter& waiter) {
  if (waiter.op == Op::kGet) {
    const std::string& value = data_.find(waiter.keys[0])->second.value;
    SendOk(connection, waiter.request_id, [&value](Writer& writer) { writer.String(value); });
  } else {
    SendOk(connection, waiter.request_id, [](Writer&) {});
  }
}

void StoreServer::Loop::Park(Connection& connection, uint64_t request_id, Op op,
                             std::vector<std::string> keys, absl::Duration timeout) {
  Waiter waiter{connection.id, request_id, op, std::move(keys), timeout};
  uint64_t waiter_id = next_waiter_id_++;
  if (Advance(waiter_id, waiter)) {
    AnswerWaiter(connection, waiter);
    return;
  }
  waiter.deadline_nanos = DeadlineNanos(timeout);
  if (waiter.deadline_nanos != kNever) {
    waiter_deadlines_.emplace(waiter.deadline_nanos, waiter_id);
  }
  connection.waiter_ids.push_back(waiter_id);
  waiters_.emplace(waiter_id, std::move(waiter));
}

void StoreServer::Loop::Put(const std::string& key, std::string value) {
  auto found = data_.find(key);
  if (found == data_.end()) {
    found = data_.emplace(key, Entry{}).first;
  } else {
    by_revision_.erase(found->second.revision);
  }
  found->second.value = std::move(value);
  found->second.revision = ++revision_;
  by_revision_.emplace(revision_, &found->first);
}

bool StoreServer::Loop::Erase(const std::string& key) {
  auto found = data_.find(key);
  if (found == data_.end()) return false;
  by_revision_.erase(found->second.revision);
  data_.erase(found);
  return true;
}

bool StoreServer::Loop::AnswerChanges(Connection& connection, uint64_t request_id,
                                      const std::string& prefix, int64_t after_revision,
                                      bool even_if_empty) {
  // Walks the writes after `after_revision` (each watcher sees each write once as it follows
  // the store, so the cost is proportional to what changed).
  std::vector<std::pair<const std::string*, const Entry*>> listed;
  size_t bytes = 0;
  int64_t continue_after = revision_;
  for (auto it = by_revision_.upper_bound(after_revision); it != by_revision_.end(); ++it) {
    const std::string& key = *it->second;
    if (!absl::StartsWith(key, prefix)) continue;
    const Entry& entry = data_.find(key)->second;
    bytes += key.size() + entry.value.size() + 16;
    if (!listed.empty() && bytes > static_cast<size_t>(max_value_bytes_)) {
      continue_after = listed.back().second->revision;
      break;
    }
    listed.emplace_back(&key, &entry);
  }
  if (listed.empty() && !even_if_empty) return false;
  SendOk(connection, request_id, [&](Writer& writer) {
    writer.I64(continue_after);
    writer.U32(static_cast<uint32_t>(listed.size()));
    for (const auto& [key, entry] : listed) {
      writer.String(*key);
      writer.String(entry->value);
      writer.I64(entry->revision);
    }
  });
  return true;
}

void StoreServer::Loop::KeyWritten(const std::string& key) {
  if (!change_waiters_.empty()) {
    std::vector<uint64_t> answered;
    for (uint64_t waiter_id : change_waiters_) {
      const Waiter& waiter = waiters_.at(waiter_id);
      if (!absl::StartsWith(key, waiter.keys[0])) continue;
      Connection* connection = Find(waiter.connection_id);
      if (connection != nullptr && !connection->dead) {
        AnswerChanges(*connection, waiter.request_id, waiter.keys[0], waiter.after_revision, true);
      }
      answered.push_back(waiter_id);
    }
    for (uint64_t waiter_id : answered) RemoveWaiter(waiter_id);
  }
  auto found = key_waiters_.find(key);
  if (found == key_waiters_.end()) return;
  std::vector<uint64_t> blocked = std::move(found->second);
  key_waiters_.erase(found);
  for (uint64_t waiter_id : blocked) {
    auto waiter = waiters_.find(waiter_id);
    if (waiter == waiters_.end()) continue;
    waiter->second.listed = false;
    if (!Advance(waiter_id, waiter->second)) continue;
    Connection* connection = Find(waiter->second.connection_id);
    if (connection != nullptr && !connection->dead) AnswerWaiter(*connection, waiter->second);
    RemoveWaiter(waiter_id);
  }
}

void StoreServer::Loop::RemoveWaiter(uint64_t waiter_id) {
  auto found = waiters_.find(waiter_id);
  if (found == waiters_.end()) return;
  Waiter& waiter = found->second;
  if (waiter.listed) {
    auto listed = key_waiters_.find(waiter.keys[waiter.cursor]);
    if (listed != key_waiters_.end()) {
      std::erase(listed->second, waiter_id);
      if (listed->second.empty()) key_waiters_.erase(listed);
    }
  }
  if (waiter.deadline_nanos != kNever) {
    waiter_deadlines_.erase({waiter.deadline_nanos, waiter_id});
  }
  change_waiters_.erase(waiter_id);
  if (Connection* connection = Find(waiter.connection_id)) {
    std::erase(connection->waiter_ids, waiter_id);
  }
  waiters_.erase(found);
}

void StoreServer::Loop::ExpireDeadlines() {
  int64_t now = NowNanos();
  while (!waiter_deadlines_.empty() && waiter_deadlines_.begin()->first <= now) {
    uint64_t waiter_id = waiter_deadlines_.begin()->second;
    const Waiter& waiter = waiters_.at(waiter_id);
    Connection* connection = Find(waiter.connection_id);
    if (connection != nullptr && !connection->dead && waiter.op == Op::kChanges) {
      // A changes request that saw nothing by its timeout answers with an empty list.
      AnswerChanges(*connection, waiter.request_id, waiter.keys[0], waiter.after_revision, true);
    } else if (connection != nullptr && !connection->dead) {
      std::vector<std::string> missing;
      for (const std::string& key : waiter.keys) {
        if (!data_.contains(key)) missing.push_back(key);
      }
      std::string message = absl::StrCat(
          OpName(waiter.op), " timed out after ", absl::FormatDuration(waiter.timeout),
          " waiting for ", waiter.keys.size() == 1 ? "key " : "keys ", QuoteKeys(waiter.keys));
      if (waiter.keys.size() > 1) absl::StrAppend(&message, " (missing: ", QuoteKeys(missing), ")");
      SendError(*connection, waiter.request_id, absl::DeadlineExceededError(message));
    }
    RemoveWaiter(waiter_id);
  }
  while (!connection_deadlines_.empty() && connection_deadlines_.begin()->first <= now) {
    Connection* connection = Find(connection_deadlines_.begin()->second);
    connection_deadlines_.erase(connection_deadlines_.begin());
    if (connection == nullptr) continue;
    connection->deadline_nanos = kNever;
    if (!connection->draining && !connection->close_after_flush) {
      COHORT_LOG(WARN) << "store closed the connection from " << connection->peer
                       << ": it did not complete the handshake within "
                       << absl::FormatDuration(handshake_timeout_)
                       << " (a stalled client, or a program that is not a cohort client)";
    }
    MarkDead(*connection);
  }
}

void StoreServer::Loop::SendOk(Connection& connection, uint64_t request_id,
                               const std::function<void(Writer&)>& payload) {
  Writer writer(&connection.output);
  writer.BeginFrame();
  writer.U64(request_id);
  writer.U8(static_cast<uint8_t>(absl::StatusCode::kOk));
  payload(writer);
  writer.EndFrame();
  QueueFlush(connection);
}

void StoreServer::Loop::SendError(Connection& connection, uint64_t request_id,
                                  const absl::Status& status) {
  Writer writer(&connection.output);
  writer.BeginFrame();
  writer.U64(request_id);
  writer.U8(static_cast<uint8_t>(status.code()));
  writer.String(status.message());
  writer.EndFrame();
  QueueFlush(connection);
}

void StoreServer::Loop::Refuse(Connection& connection, absl::StatusCode code,
                               const std::string& reason) {
  COHORT_LOG(WARN) << "store on port " << port_ << " refused the client at " << connection.peer
                   << ": " << reason;
  Writer writer(&connection.output);
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(HandshakeType::kRefused));
  writer.U8(static_cast<uint8_t>(code));
  writer.String(reason);
  writer.EndFrame();
  connection.close_after_flush = true;
  connection.input.clear();
  connection.input_offset = 0;
  SetDeadline(connection, DeadlineNanos(kLinger));
  QueueFlush(connection);
}

void StoreServer::Loop::ProtocolError(Connection& connection, const std::string& what) {
  COHORT_LOG(WARN) << "store on port " << port_ << " closed the connection from " << connection.peer
                   << ": " << what;
  SendError(connection, kConnectionMessageId,
            absl::InvalidArgumentError(absl::StrCat("the store closed this connection: ", what)));
  connection.close_after_flush = true;
  connection.input.clear();
  connection.input_offset = 0;
  SetDeadline(connection, DeadlineNanos(kLinger));
}

void StoreServer::Loop::QueueFlush(Connection& connection) {
  if (connection.flush_queued) return;
  connection.flush_queued = true;
  flush_queue_.push_back(connection.id);
}

void StoreServer::Loop::FlushQueued() {
  while (!flush_queue_.empty()) {
    std::vector<uint64_t> queue;
    queue.swap(flush_queue_);
    for (uint64_t id : queue) {
      Connection* connection = Find(id);
      if (connection == nullptr) continue;
      connection->flush_queued = false;
      if (connection->dead) continue;
      Flush(*connection);
      // Requests that waited for the output to drain can go now (they may queue more output).
      if (!connection->dead && connection->input_stalled && !connection->reading_paused) {
        ProcessInput(*connection);
      }
    }
  }
}

void StoreServer::Loop::Flush(Connection& connection) {
  while (connection.pending_output() > 0) {
    ssize_t sent = ::send(connection.fd.get(), connection.output.data() + connection.output_offset,
                          connection.pending_output(), MSG_NOSIGNAL);
    if (sent > 0) {
      connection.output_offset += static_cast<size_t>(sent);
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    COHORT_LOG(DEBUG) << "store: sending to " << connection.peer
                      << " failed: " << std::strerror(errno);
    MarkDead(connection);
    return;
  }
  if (connection.pending_output() == 0) {
    connection.output.clear();
    connection.output_offset = 0;
    if (connection.close_after_flush && !connection.draining) {
      // The last word is out; half-close and read until the client closes or the linger ends.
      ::shutdown(connection.fd.get(), SHUT_WR);
      connection.draining = true;
    }
  } else if (connection.output_offset >= connection.output.size() / 2) {
    connection.output.erase(0, connection.output_offset);
    connection.output_offset = 0;
  }
  connection.reading_paused = connection.pending_output() > kOutputHighWaterBytes;
  UpdateInterest(connection);
}

void StoreServer::Loop::UpdateInterest(Connection& connection) {
  uint32_t wanted = 0;
  if (!connection.reading_paused) wanted |= EPOLLIN;
  if (connection.pending_output() > 0) wanted |= EPOLLOUT;
  if (wanted == connection.registered_events) return;
  epoll_event event = {};
  event.events = wanted;
  event.data.u64 = connection.id;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, connection.fd.get(), &event) != 0) {
    COHORT_LOG(WARN) << "store: epoll_ctl for " << connection.peer
                     << " failed: " << std::strerror(errno);
    MarkDead(connection);
    return;
  }
  connection.registered_events = wanted;
}

void StoreServer::Loop::SetDeadline(Connection& connection, int64_t deadline_nanos) {
  if (connection.deadline_nanos != kNever) {
    connection_deadlines_.erase({connection.deadline_nanos, connection.id});
  }
  connection.deadline_nanos = deadline_nanos;
  if (deadline_nanos != kNever) connection_deadlines_.emplace(deadline_nanos, connection.id);
}

void StoreServer::Loop::MarkDead(Connection& connection) {
  if (connection.dead) return;
  connection.dead = true;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, connection.fd.get(), nullptr);
  dead_.push_back(connection.id);
}

void StoreServer::Loop::Reap() {
  for (uint64_t id : dead_) {
    Connection* connection = Find(id);
    if (connection == nullptr) continue;
    std::vector<uint64_t> waiter_ids = connection->waiter_ids;
    for (uint64_t waiter_id : waiter_ids) RemoveWaiter(waiter_id);
    SetDeadline(*connection, kNever);
    connections_.erase(id);  // closes the socket
  }
  dead_.clear();
}

StoreServer::StoreServer(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

StoreServer::~StoreServer() { Stop(); }

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::Start(const StoreServerOptions& options) {
  auto loop = std::make_unique<Loop>();
  COHORT_RETURN_IF_ERROR(loop->Init(options));
  return absl::WrapUnique(new StoreServer(std::move(loop)));
}

int StoreServer::port() const { return loop_->port(); }

void StoreServer::Stop() { loop_->Stop(); }

}  // namespace cohort::store
