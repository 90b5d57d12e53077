// Set-up of the UCX channel: the context and worker (Create, before the peer records exist),
// then one endpoint per served peer from the worker address in its record, and a hello each way
// that proves the communicator's secret (Connect). Frames flow only on proven endpoints.
//
// The hello exchange, per pair (both ends alike):
//   1. each end creates its endpoint to the other (UCX pairs the two into one connection) and
//      sends Hello{kind hello, proof};
//   2. on a hello whose proof holds, an end records the endpoint it came on (reply_ep) as the
//      peer's, and answers Hello{kind ack, proof};
//   3. Connect returns once, for every peer, a proven hello and an acknowledgement of ours have
//      arrived. So a peer's first frame always comes after this end accepted its endpoint: a
//      frame on any other endpoint is refused, never held.
// Both kinds carry their own proof, so their order on the wire does not matter.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "collectives/transport/ucx/channel_impl.h"
#include "common/crypto.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort::ucx {
namespace {

struct ParsedOffer {
  bool rdma = false;
  std::string address;  // raw bytes
  uint64_t signal_address = 0;  // its window's signal words (0: no window)
  std::string signal_key;       // packed remote key of them
};

bool IsHex(absl::string_view text) {
  return !text.empty() && text.size() % 2 == 0 &&
         std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

absl::StatusOr<ParsedOffer> ParseOffer(const std::string& offer) {
  ParsedOffer parsed;
  bool have_address = false;
  for (absl::string_view field : absl::StrSplit(offer, ' ', absl::SkipEmpty())) {
    if (field == "rdma=1") {
      parsed.rdma = true;
    } else if (field == "rdma=0") {
      parsed.rdma = false;
    } else if (absl::StartsWith(field, "addr=")) {
      absl::string_view hex = field.substr(5);
      if (!IsHex(hex)) return absl::DataLossError("malformed worker address");
      parsed.address = absl::HexStringToBytes(hex);
      have_address = true;
    } else if (absl::StartsWith(field, "signals=")) {
      // "signals=<address>:<hex of the packed key>"
      std::vector<absl::string_view> parts = absl::StrSplit(field.substr(8), ':');
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &parsed.signal_address) ||
          !IsHex(parts[1])) {
        return absl::DataLossError("malformed window signal words");
      }
      parsed.signal_key = absl::HexStringToBytes(parts[1]);
    }
  }
  if (!have_address) return absl::DataLossError("no worker address");
  return parsed;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UcxChannel>> UcxChannel::Create(const ChannelSetup& setup,
                                                               const UcxOptions& options) {
  if (setup.sink == nullptr || setup.size <= 0 || setup.rank < 0 || setup.rank >= setup.size) {
    return absl::InvalidArgumentError("UcxChannel::Create needs a sink, a size and a rank in it");
  }
  COHORT_ASSIGN_OR_RETURN(std::unique_ptr<Context> context,
                          Context::Create(options, setup.size - 1));
  if (context->max_am_header() < sizeof(WireHeader)) {
    return absl::UnavailableError(absl::StrCat(
        "UCX takes active-message headers of at most ", context->max_am_header(),
        " bytes with ", UcxTlsText(), " (transports ", context->transports(),
        "); the UCX channel needs ", sizeof(WireHeader)));
  }
  auto channel = std::make_unique<UcxChannelImpl>(setup, options, std::move(context));
  COHORT_RETURN_IF_ERROR(channel->InstallHandlers());
  COHORT_RETURN_IF_ERROR(channel->SetUpWindow());
  return std::unique_ptr<UcxChannel>(std::move(channel));
}

UcxChannelImpl::UcxChannelImpl(const ChannelSetup& setup, const UcxOptions& options,
                               std::unique_ptr<Context> context)
    : rank_(setup.rank),
      size_(setup.size),
      prefix_(setup.prefix),
      secret_(setup.secret),
      sink_(setup.sink),
      options_(options),
      context_(std::move(context)),
      peers_(setup.size) {
  for (int rank = 0; rank < size_; ++rank) {
    peers_[rank].channel = this;
    peers_[rank].rank = rank;
  }
}

absl::Status UcxChannelImpl::InstallHandlers() {
  struct Handler {
    unsigned id;
    ucp_am_recv_callback_t callback;
  };
  for (Handler handler : {Handler{kFrameMessage, &OnFrameMessage},
                          Handler{kHelloMessage, &OnHelloMessage}}) {
    ucp_am_handler_param_t param = {};
    param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                       UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    param.id = handler.id;
    // Whole messages only, and eager payloads that outlive the callback: frames are handed to
    // the protocol after ucp_worker_progress returns, and deferred ones much later.
    param.flags = UCP_AM_FLAG_WHOLE_MSG | UCP_AM_FLAG_PERSISTENT_DATA;
    param.cb = handler.callback;
    param.arg = this;
    ucs_status_t status = Ucx().ucp_worker_set_am_recv_handler(context_->worker(), &param);
    if (status != UCS_OK) {
      return absl::UnavailableError(absl::StrCat("UCX refused an active-message handler: ",
                                                 UcxStatusText(status)));
    }
  }
  return absl::OkStatus();
}

std::string UcxChannelImpl::Offer() const {
  return absl::StrCat("rdma=", context_->rdma() ? 1 : 0,
                      " addr=", absl::BytesToHexString(context_->address()),
                      " signals=", reinterpret_cast<uint64_t>(signals_), ":",
                      absl::BytesToHexString(signal_key_));
}

std::string UcxChannelImpl::Name(int rank) const {
  const std::string& host = peers_[rank].host;
  return absl::StrCat("rank ", rank, " (", host.empty() ? "?" : host, ")");
}

std::string UcxChannelImpl::Proof(HelloKind kind, int from, int to) const {
  return crypto::HmacSha256(secret_, absl::StrCat("cohort-ucx|", prefix_, "|",
                                                  static_cast<uint32_t>(kind), "|", from, "|", to));
}

void UcxChannelImpl::SendHello(Peer& peer, HelloKind kind) {
  Hello& hello = kind == HelloKind::kHello ? peer.hello_out : peer.ack_out;
  hello = {kWireMagic, kWireVersion, static_cast<uint32_t>(kind), rank_, peer.rank, size_, {}};
  std::string proof = Proof(kind, rank_, peer.rank);
  std::memcpy(hello.proof, proof.data(), sizeof(hello.proof));
  SendSlot* slot = AcquireSendSlot();
  std::memcpy(slot->header, &hello, sizeof(hello));
  (void)Post(peer, slot, kHelloMessage, sizeof(Hello), nullptr, 0, 0);
}

void UcxChannelImpl::ProcessHellos() {
  std::vector<PendingHello> hellos;
  hellos.swap(hellos_);
  for (const PendingHello& pending : hellos) {
    const Hello& hello = pending.hello;
    auto refuse = [&](const std::string& why) {
      ++refused_;
      COHORT_LOG(WARN) << "refused a UCX endpoint claiming rank " << hello.from << " of "
                       << hello.size << ": " << why;
    };
    if (hello.magic != kWireMagic || hello.version != kWireVersion) {
      refuse(absl::StrCat("wrong magic or protocol version ", hello.version, " (this rank speaks ",
                          kWireVersion, ")"));
      continue;
    }
    const HelloKind kind = static_cast<HelloKind>(hello.kind);
    if ((kind != HelloKind::kHello && kind != HelloKind::kAck) || hello.to != rank_ ||
        hello.size != size_ || hello.from < 0 || hello.from >= size_ || hello.from == rank_ ||
        !peers_[hello.from].served) {
      refuse("wrong rank, world size or message kind (another job on the same store prefix?)");
      continue;
    }
    if (!crypto::ConstantTimeEquals(std::string(hello.proof, sizeof(hello.proof)),
                                    Proof(kind, hello.from, rank_))) {
      refuse("wrong communicator secret");
      continue;
    }
    Peer& peer = peers_[hello.from];
    if (peer.reply_ep != nullptr && peer.reply_ep != pending.reply_ep) {
      refuse("that rank has already proven itself on another endpoint");
      continue;
    }
    peer.reply_ep = pending.reply_ep;
    if (kind == HelloKind::kHello && !peer.hello_received) {
      peer.hello_received = true;
      if (peer.ep != nullptr) SendHello(peer, HelloKind::kAck);
    } else if (kind == HelloKind::kAck) {
      peer.ack_received = true;
    }
  }
}

absl::Status UcxChannelImpl::Connect(const ChannelSetup& setup, const std::vector<int>& peers) {
  if (setup.records == nullptr || static_cast<int>(setup.records->size()) != size_) {
    return absl::InvalidArgumentError("UcxChannel::Connect needs every rank's peer record");
  }
  const std::vector<PeerRecord>& records = *setup.records;
  for (int rank = 0; rank < size_; ++rank) peers_[rank].host = records[rank].host_name;
  int local_peers = 0;
  for (int rank : peers) {
    if (rank < 0 || rank >= size_ || rank == rank_ || peers_[rank].served) {
      return absl::InvalidArgumentError(absl::StrCat("UcxChannel::Connect: bad peer ", rank));
    }
    Peer& peer = peers_[rank];
    peer.served = true;
    if (records[rank].host_id == records[rank_].host_id) ++local_peers;
    auto offer = ParseOffer(records[rank].offer(ChannelKind::kUcx));
    if (!offer.ok()) {
      return absl::DataLossError(absl::StrCat(
          "the UCX offer of ", Name(rank), " in the bootstrap store is unusable (",
          offer.status().message(), "): \"", records[rank].offer(ChannelKind::kUcx).substr(0, 80),
          "\"; do all ranks run the same cohort version?"));
    }
    ucp_ep_params_t params = {};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t*>(offer->address.data());
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb = &OnEndpointError;
    params.err_handler.arg = &peer;
    ucs_status_t status = Ucx().ucp_ep_create(context_->worker(), &params, &peer.ep);
    if (status != UCS_OK) {
      peer.ep = nullptr;
      return absl::UnavailableError(absl::StrCat(
          "rank ", rank_, " (", logging::HostName(), ") found no UCX transport to ", Name(rank),
          " (", UcxStatusText(status), ") with ", UcxTlsText(), "; this rank's UCX has ",
          context_->transports(),
          ". UCX needs a transport that reaches the peer and reports peer failures: across hosts "
          "tcp or an RDMA transport (rc, dc, ud), on one host also sm; `ucx_info -d` lists them"));
    }
  }
  // Each peer's signal words, reachable once its endpoint exists.
  for (int rank : peers) {
    Peer& peer = peers_[rank];
    auto offer = ParseOffer(records[rank].offer(ChannelKind::kUcx));
    if (offer->signal_key.empty()) continue;  // an older peer: no window to it
    ucs_status_t status =
        Ucx().ucp_ep_rkey_unpack(peer.ep, offer->signal_key.data(), &peer.signal_rkey);
    if (status != UCS_OK) {
      peer.signal_rkey = nullptr;
      COHORT_LOG(INFO) << "no UCX window to " << Name(rank) << ": its signal key does not unpack ("
                       << UcxStatusText(status) << ")";
      continue;
    }
    peer.signal_address = offer->signal_address;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  preferred_spin_micros_ = local_peers + 1 <= cores ? 200 : 0;
  for (int rank : peers) SendHello(peers_[rank], HelloKind::kHello);

  while (true) {
    Progress();
    ProcessHellos();
    std::vector<std::string> missing;
    for (int rank : peers) {
      const Peer& peer = peers_[rank];
      if (peer.failed) {
        return absl::UnavailableError(absl::StrCat(
            "rank ", rank_, " could not connect to ", Name(rank), " over UCX: ", peer.why,
            ". Is its process running? (", UcxTlsText(), ")"));
      }
      if (!peer.hello_received || !peer.ack_received) {
        missing.push_back(absl::StrCat(rank, peer.hello_received ? " (no acknowledgement)" : ""));
      }
    }
    if (missing.empty()) break;
    if (setup.deadline.Expired()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", rank_, " timed out waiting for ranks ", absl::StrJoin(missing, ", "),
          " to prove the communicator secret over UCX (", UcxTlsText(),
          "). Are they running, in the same job and with the same world size? A refused hello is "
          "logged on the rank that refused it"));
    }
    WaitForEvents(setup.deadline.RemainingMillis(100));
  }
  if (logging::Enabled(logging::Level::DEBUG)) {
    for (int rank : peers) {
      COHORT_LOG(DEBUG) << "UCX endpoint to " << Name(rank) << ": "
                        << EndpointTransports(peers_[rank].ep);
    }
  }
  return absl::OkStatus();
}

void UcxChannelImpl::WaitForEvents(int timeout_ms) {
  if (!PrepareToSleep()) return;
  pollfd descriptor = {context_->event_fd(), POLLIN, 0};
  (void)::poll(&descriptor, 1, timeout_ms);
}

}  // namespace cohort::ucx
