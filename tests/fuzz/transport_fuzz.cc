// The transport's edge: the mesh handshake (tcp/mesh.cc: the Hello a connecting rank sends) and
// the frame header parser behind it (stream.cc framing, protocol.cc matching, fingerprint and
// length checks, abort and goodbye frames). Each input runs one real Protocol as rank 0 of 2
// over TCP; this harness plays rank 1: it publishes rank 1's record in the bootstrap and
//   - byte 0 bit 0 set: first opens a connection that sends the next up-to-52 bytes as its
//     hello and leaves (a stranger or a stale rank at the listening port),
//   - then connects with the right proof (an authenticated peer),
//   - byte 1 says what rank 0 has posted: a point-to-point receive (bit 0), a collective with
//     its receive (bit 1), both of a length from byte 2 (x 64 bytes),
//   - and the rest of the input is what rank 1 then writes: frames (40-byte headers with 64-bit
//     lengths up to 2^64 - 1, kinds, fingerprints, payloads), cut wherever it ends.
// Rank 0 drives its protocol until it fails or the bytes are used up. A crash, an ASan or UBSan
// report, a hang, or memory grown with what a length announces is a finding.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "collectives/in_memory_bootstrap.h"
#include "collectives/transport/protocol.h"
#include "common/crypto.h"
#include "common/socket.h"
#include "fuzz_input.h"

using namespace cohort;

namespace {

constexpr char kPrefix[] = "fuzz";

// tcp/mesh.cc's handshake, as a connecting rank sends it.
#pragma pack(push, 1)
struct Hello {
  uint32_t magic;
  uint32_t version;
  int32_t from;
  int32_t to;
  int32_t size;
  char proof[32];
};
struct HelloReply {
  uint32_t magic;
  uint32_t status;
};
#pragma pack(pop)

Deadline Soon() { return Deadline::In(absl::Seconds(10)); }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("COHORT_LOG_LEVEL", "ERROR", 1);  // refused connections are logged as warnings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const uint8_t mode = data[0];
  const uint8_t posted = data[1];
  const size_t receive_bytes = size_t{data[2]} * 64;
  const uint8_t* rest = data + 3;
  size_t left = size - 3;

  auto state = std::make_shared<InMemoryBootstrap::State>();
  InMemoryBootstrap bootstrap(state);
  ProtocolOptions options;
  options.prefix = kPrefix;
  options.timeout = absl::Seconds(10);
  options.transports = {ChannelKind::kTcp};
  options.transports_forced = true;
  options.listen_ip = "127.0.0.1";
  options.host_id = "fuzz-rank0";
  options.host_name = "rank0";
  absl::StatusOr<std::unique_ptr<Protocol>> created;
  std::thread rank0([&] { created = Protocol::Create(bootstrap, 0, 2, options); });

  // Rank 1: its record, then the connections.
  PeerRecord self;
  self.rank = 1;
  self.host_id = "fuzz-rank1";
  self.host_name = "rank1";
  self.pid = 1;
  self.order = {ChannelKind::kTcp};
  self.order_forced = true;
  self.offers[static_cast<int>(ChannelKind::kTcp)] = "127.0.0.1 1";  // never connected to
  if (!bootstrap.Set(absl::StrCat(kPrefix, "/peer/1"), self.Serialize()).ok()) __builtin_trap();
  auto secret = bootstrap.Get(absl::StrCat(kPrefix, "/secret"), absl::Seconds(10));
  auto record_text = bootstrap.Get(absl::StrCat(kPrefix, "/peer/0"), absl::Seconds(10));
  if (!secret.ok() || !record_text.ok()) __builtin_trap();
  auto record = PeerRecord::Parse(*record_text);
  if (!record.ok()) __builtin_trap();
  const std::string& offer = record->offer(ChannelKind::kTcp);
  const std::string ip = offer.substr(0, offer.find(' '));
  const int port = std::stoi(offer.substr(offer.find(' ') + 1));

  if (mode & 1) {
    size_t hello_bytes = std::min(left, sizeof(Hello));
    auto stranger = ConnectTcp(ip, port, Soon());
    if (!stranger.ok()) __builtin_trap();
    if (hello_bytes > 0) {
      (void)WriteFully(stranger->get(), rest, hello_bytes, Soon(), "rank 0");
    }
    ::shutdown(stranger->get(), SHUT_WR);
    rest += hello_bytes;
    left -= hello_bytes;
    // Rank 0 reads it and refuses it, or drops it at our close, then accepts the next.
    char sink[64];
    while (::recv(stranger->get(), sink, sizeof(sink), 0) > 0) {
    }
  }
  auto peer = ConnectTcp(ip, port, Soon());
  if (!peer.ok()) __builtin_trap();
  Hello hello = {kWireMagic, kWireVersion, 1, 0, 2, {}};
  std::string proof =
      crypto::HmacSha256(*secret, absl::StrCat("cohort-tcp|", kPrefix, "|", 1, "|", 0));
  std::memcpy(hello.proof, proof.data(), sizeof(hello.proof));
  if (!WriteFully(peer->get(), &hello, sizeof(hello), Soon(), "rank 0").ok()) __builtin_trap();
  HelloReply reply = {};
  if (!ReadFully(peer->get(), &reply, sizeof(reply), Soon(), "rank 0").ok() ||
      reply.status != 0) {
    __builtin_trap();  // the right proof was refused
  }
  rank0.join();
  if (!created.ok()) __builtin_trap();
  Protocol& protocol = **created;

  std::string p2p_buffer(receive_bytes, '\0'), collective_buffer(receive_bytes, '\0');
  Request p2p, collective;
  if (posted & 1) {
    p2p.direction = Request::Direction::kRecv;
    p2p.peer = 1;
    p2p.header.kind = static_cast<uint8_t>(FrameKind::kPointToPoint);
    p2p.header.tag = 0;
    p2p.data = p2p_buffer.data();
    p2p.length = receive_bytes;
    protocol.PostRecv(&p2p);
  }
  if (posted & 2) {
    Fingerprint fingerprint;
    fingerprint.sequence = 1;
    fingerprint.op = OpType::kAllreduce;
    fingerprint.dtype = DataType::kFloat32;
    fingerprint.count = receive_bytes / 4;
    (void)protocol.BeginCollective(fingerprint);
    collective.direction = Request::Direction::kRecv;
    collective.peer = 1;
    collective.header.kind = static_cast<uint8_t>(FrameKind::kCollective);
    collective.header.SetFingerprint(fingerprint);
    collective.data = collective_buffer.data();
    collective.length = receive_bytes;
    protocol.PostRecv(&collective);
  }

  // Rank 1's frames, then its close; rank 0 reads until it fails (the close is an error unless
  // a goodbye came first) or has nothing left to read.
  if (left > 0) (void)WriteFully(peer->get(), rest, left, Soon(), "rank 0");
  ::shutdown(peer->get(), SHUT_WR);
  // A few rounds: the bytes are all in rank 0's socket already. (A deferred frame or a clean
  // close leaves nothing to fail on: the rounds then just end.)
  for (int round = 0; round < 8; ++round) {
    if (!protocol.Progress(round == 0 ? 0 : 1).ok()) break;
  }
  protocol.DropRequests();
  protocol.Close(/*clean=*/false, Deadline::In(absl::Milliseconds(10)));
  created->reset();
  return 0;
}
