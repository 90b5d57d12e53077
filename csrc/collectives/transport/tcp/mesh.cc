#include "collectives/transport/tcp/mesh.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort::tcp {
namespace {

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
  uint32_t status;  // 0 accepted, 1 bad proof, 2 bad rank or size
};
#pragma pack(pop)

std::string Proof(const std::string& secret, const std::string& prefix, int from, int to) {
  return crypto::HmacSha256(secret, absl::StrCat("cohort-tcp|", prefix, "|", from, "|", to));
}

std::string Name(const ChannelSetup& setup, int rank) {
  const std::string& host = (*setup.records)[rank].host_name;
  return absl::StrCat("rank ", rank, " (", host.empty() ? "?" : host, ")");
}

}  // namespace

absl::StatusOr<Mesh> Mesh::Listen(const std::string& ip) {
  Mesh mesh;
  COHORT_ASSIGN_OR_RETURN(mesh.listener_, ListenTcp(ip, 0));
  COHORT_ASSIGN_OR_RETURN(mesh.port_, LocalPort(mesh.listener_.get()));
  mesh.ip_ = ip;
  return mesh;
}

std::string Mesh::Offer() const { return absl::StrCat(ip_, " ", port_); }

absl::StatusOr<std::pair<std::string, int>> Mesh::AddressOf(const PeerRecord& record) {
  const std::string& offer = !record.offer(ChannelKind::kTcp).empty()
                                 ? record.offer(ChannelKind::kTcp)
                                 : record.offer(ChannelKind::kSharedMemory);
  std::vector<std::string> parts = absl::StrSplit(offer, ' ');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) {
    return absl::DataLossError(absl::StrCat("rank ", record.rank,
                                            " published no usable TCP address (\"", offer,
                                            "\"); is another job using the same store prefix?"));
  }
  return std::make_pair(parts[0], port);
}

absl::StatusOr<std::vector<Fd>> Mesh::Connect(const ChannelSetup& setup,
                                              const std::vector<int>& peers) {
  const int rank = setup.rank;
  const int size = setup.size;
  const Deadline& deadline = setup.deadline;
  std::vector<Fd> sockets(size);
  for (int peer : peers) {
    if (peer >= rank) continue;
    COHORT_ASSIGN_OR_RETURN(auto address, AddressOf((*setup.records)[peer]));
    auto fd = ConnectTcp(address.first, address.second, deadline);
    if (!fd.ok()) {
      return absl::UnavailableError(absl::StrCat("rank ", rank, " could not connect to ",
                                                 Name(setup, peer), " at ", address.first, ":",
                                                 address.second, ": ", fd.status().message()));
    }
    Hello hello = {kWireMagic, kWireVersion, rank, peer, size, {}};
    std::string proof = Proof(setup.secret, setup.prefix, rank, peer);
    std::memcpy(hello.proof, proof.data(), sizeof(hello.proof));
    COHORT_RETURN_IF_ERROR(
        WriteFully(fd->get(), &hello, sizeof(hello), deadline, Name(setup, peer)));
    sockets[peer] = std::move(*fd);
  }
  std::vector<bool> expected(size, false);
  int missing = 0;
  for (int peer : peers) {
    if (peer > rank) {
      expected[peer] = true;
      ++missing;
    }
  }
  while (missing > 0) {
    auto fd = AcceptTcp(listener_.get(), deadline);
    if (!fd.ok()) {
      std::string names;
      for (int peer = rank + 1; peer < size; ++peer) {
        if (expected[peer] && !sockets[peer].valid()) {
          absl::StrAppend(&names, names.empty() ? "" : ", ", peer);
        }
      }
      return absl::DeadlineExceededError(absl::StrCat("rank ", rank,
                                                      " timed out waiting for connections from "
                                                      "ranks ", names, ": ", fd.status().message()));
    }
    Hello hello;
    Deadline hello_deadline = deadline.Earlier(Deadline::In(absl::Seconds(10)));
    if (!ReadFully(fd->get(), &hello, sizeof(hello), hello_deadline, "a connecting peer").ok()) {
      COHORT_LOG(WARN) << "dropped a connection that sent no valid cohort handshake";
      continue;
    }
    HelloReply reply = {kWireMagic, 0};
    if (hello.magic != kWireMagic || hello.version != kWireVersion) {
      COHORT_LOG(WARN) << "dropped a connection with wrong magic or protocol version "
                       << hello.version << " (this rank speaks " << kWireVersion << ")";
      continue;
    }
    if (hello.to != rank || hello.size != size || hello.from <= rank || hello.from >= size ||
        !expected[hello.from] || sockets[hello.from].valid()) {
      reply.status = 2;
    } else if (!crypto::ConstantTimeEquals(std::string(hello.proof, sizeof(hello.proof)),
                                           Proof(setup.secret, setup.prefix, hello.from, rank))) {
      reply.status = 1;
    }
    (void)WriteFully(fd->get(), &reply, sizeof(reply), hello_deadline, "a connecting peer");
    if (reply.status != 0) {
      COHORT_LOG(WARN) << "refused a transport connection claiming rank " << hello.from
                       << " of " << hello.size << ": "
                       << (reply.status == 1 ? "wrong communicator secret" : "wrong rank or size");
      continue;
    }
    sockets[hello.from] = std::move(*fd);
    --missing;
  }
  for (int peer : peers) {
    if (peer >= rank) continue;
    HelloReply reply;
    COHORT_RETURN_IF_ERROR(
        ReadFully(sockets[peer].get(), &reply, sizeof(reply), deadline, Name(setup, peer)));
    if (reply.magic != kWireMagic || reply.status != 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          Name(setup, peer), " refused the transport handshake from rank ", rank, " (",
          reply.status == 1 ? "wrong communicator secret" : "wrong rank or world size",
          "); another job may be using the same store prefix"));
    }
  }
  return sockets;
}

}  // namespace cohort::tcp
