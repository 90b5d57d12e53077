// The store server fed requests in process: a real StoreServer on loopback, one connection per
// input. The first byte picks the mode: odd, the rest of the input is the whole connection
// (preamble, handshake, frames: what an unauthenticated stranger can send); even, this harness
// runs the handshake with the job's token first and the rest is the request stream of an
// authenticated client (every op's decoder, the parked waits, the limits). The harness then
// half-closes and reads until the server closes: a server that keeps the connection of a
// client that left, or crashes, or trips ASan/UBSan, is a finding. The server restarts every
// few thousand inputs so that what inputs stored stays bounded.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/crypto.h"
#include "common/logging.h"
#include "common/socket.h"
#include "elastic/store/store_server.h"
#include "elastic/store/wire.h"
#include "fuzz_input.h"

using namespace cohort;
using namespace cohort::store;

namespace {

constexpr char kJob[] = "fuzz-job";
constexpr char kToken[] = "fuzz-token";
constexpr int kInputsPerServer = 4096;

std::unique_ptr<StoreServer> server;
int inputs_served = 0;

void StartServer() {
  server.reset();
  StoreServerOptions options;
  options.host = "127.0.0.1";
  options.job_id = kJob;
  options.token = kToken;
  options.max_key_bytes = 1024;
  options.max_value_bytes = 64 * 1024;
  options.handshake_timeout = absl::Seconds(5);
  auto started = StoreServer::Start(options);
  if (!started.ok()) __builtin_trap();
  server = std::move(*started);
}

bool Handshake(int fd);

// One handshake before the inputs: OpenSSL gives the server thread its per-thread state on its
// first HMAC, which libFuzzer's per-input leak check would otherwise blame on that input. (A
// restart frees the old thread's state as the new one allocates it.)
void WarmUp() {
  auto connected = ConnectTcp("127.0.0.1", server->port(), Deadline::In(absl::Seconds(10)));
  if (!connected.ok() || !Handshake(connected->get())) __builtin_trap();
}

bool ReadFrame(int fd, std::string* body) {
  char header[kFrameHeaderBytes];
  Deadline deadline = Deadline::In(absl::Seconds(10));
  if (!ReadFully(fd, header, sizeof(header), deadline, "store").ok()) return false;
  uint32_t length = LoadU32(header);
  if (length > kMaxHandshakeFrameBytes) return false;
  body->assign(length, '\0');
  return ReadFully(fd, body->data(), length, deadline, "store").ok();
}

// The client's side of the handshake (store_server.h), with the right token.
bool Handshake(int fd) {
  const std::string client_nonce = crypto::RandomBytes(kNonceBytes);
  std::string out(kMagic);
  Writer writer(&out);
  writer.U32(kProtocolVersion);
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(HandshakeType::kHello));
  writer.String(kJob);
  writer.U8(1);
  writer.Bytes(client_nonce);
  writer.EndFrame();
  Deadline deadline = Deadline::In(absl::Seconds(10));
  if (!WriteFully(fd, out.data(), out.size(), deadline, "store").ok()) return false;
  std::string body;
  if (!ReadFrame(fd, &body) || body.size() != 1 + kNonceBytes) return false;
  std::string server_nonce = body.substr(1);
  out.clear();
  writer.BeginFrame();
  writer.U8(static_cast<uint8_t>(HandshakeType::kProof));
  writer.Bytes(HandshakeProof(kToken, "client", kJob, client_nonce, server_nonce));
  writer.EndFrame();
  if (!WriteFully(fd, out.data(), out.size(), deadline, "store").ok()) return false;
  return ReadFrame(fd, &body) && !body.empty() &&
         body[0] == static_cast<char>(HandshakeType::kWelcome);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("COHORT_LOG_LEVEL", "ERROR", 1);  // refusals are logged as warnings: not per input
  // OpenSSL frees a thread's state when the thread ends, unless its own exit handler ran first:
  // initialise it now, so that the server (stopped by the handler registered after it) ends
  // before OpenSSL cleans up (else LeakSanitizer reports the server thread's error state).
  (void)crypto::RandomBytes(1);
  std::atexit([] { server.reset(); });
  StartServer();
  WarmUp();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (++inputs_served % kInputsPerServer == 0) StartServer();
  auto connected = ConnectTcp("127.0.0.1", server->port(), Deadline::In(absl::Seconds(10)));
  if (!connected.ok()) __builtin_trap();
  Fd fd = std::move(*connected);
  const bool authenticated = (data[0] & 1) == 0;
  if (authenticated && !Handshake(fd.get())) __builtin_trap();
  // What is left may exceed the socket buffers while the server answers: write it without
  // blocking forever, reading the replies meanwhile.
  const char* rest = reinterpret_cast<const char*>(data + 1);
  size_t left = size - 1;
  char sink[64 * 1024];
  bool open = true;
  while (left > 0 && open) {
    pollfd entry = {fd.get(), POLLOUT | POLLIN, 0};
    if (::poll(&entry, 1, 10'000) <= 0) __builtin_trap();  // neither reads nor writes
    if (entry.revents & POLLIN) {
      ssize_t got = ::recv(fd.get(), sink, sizeof(sink), MSG_DONTWAIT);
      if (got == 0) open = false;
    }
    if (open && (entry.revents & POLLOUT)) {
      ssize_t sent = ::send(fd.get(), rest, left, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent > 0) {
        rest += sent;
        left -= static_cast<size_t>(sent);
      } else if (sent < 0 && errno != EAGAIN && errno != EINTR) {
        open = false;  // the server closed on us (a refusal): fine
      }
    }
    if (entry.revents & (POLLERR | POLLHUP)) open = false;
  }
  ::shutdown(fd.get(), SHUT_WR);
  // The client is gone: the server must close its side (within its linger, 2 s at most).
  while (true) {
    pollfd entry = {fd.get(), POLLIN, 0};
    if (::poll(&entry, 1, 10'000) <= 0) __builtin_trap();
    ssize_t got = ::recv(fd.get(), sink, sizeof(sink), 0);
    if (got <= 0) break;
  }
  return 0;
}
