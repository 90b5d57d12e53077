// The UCX channel: one UCP context and worker per communicator, one endpoint per peer it serves.
// RDMA on clusters (UCX's rc/dc/ud transports), UCX's tcp and shared memory elsewhere. Frames
// are UCX active messages whose header carries the protocol's FrameHeader; large payloads move
// zero-copy by UCX's rendezvous straight into the buffer the protocol names. The protocol
// (protocol.h) makes it in two steps: Create before the peer records are exchanged (its Offer()
// is this rank's worker address), Connect once they are.
//
// Builds without UCX keep this header: Create then fails with "this build has no UCX".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "collectives/transport/channel.h"
#include "collectives/transport/ucx/options.h"

namespace cohort::ucx {

class UcxChannel : public Channel {
 public:
  // Makes the UCP context and worker (no peers yet: setup.records may be null). Fails when UCX
  // is not built in or finds no usable transport; the message says which and what to set.
  static absl::StatusOr<std::unique_ptr<UcxChannel>> Create(const ChannelSetup& setup,
                                                            const UcxOptions& options);

  // What this rank publishes in PeerRecord::offers[kUcx]: "rdma=0|1 addr=<hex of the worker
  // address>". rdma=1 when the context can use an RDMA transport on an active port (respecting
  // UCX_TLS and UCX_NET_DEVICES).
  virtual std::string Offer() const = 0;
  // Connects to `peers` (the ranks ChooseChannel gave this channel), once setup.records holds
  // every rank's record: an endpoint per peer, then an authenticated hello each way. Returns
  // when every peer has proven the communicator's secret, or an error naming those that did not
  // within setup.deadline.
  virtual absl::Status Connect(const ChannelSetup& setup, const std::vector<int>& peers) = 0;

  ChannelKind kind() const override { return ChannelKind::kUcx; }
};

}  // namespace cohort::ucx
