// The UCP context and worker behind one UcxChannel (gloo's "device"): built from the user's UCX
// configuration (UCX_* variables, read by ucp_config_read), with the features the channel uses
// (active messages, RMA for windows, wake-up through an event fd). Internal to transport/ucx/.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "collectives/transport/ucx/library.h"
#include "collectives/transport/ucx/options.h"

namespace cohort::ucx {

class Context {
 public:
  static absl::StatusOr<std::unique_ptr<Context>> Create(const UcxOptions& options,
                                                         int estimated_peers);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  ucp_context_h context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }
  // Readable when the worker has events (after ucp_worker_arm).
  int event_fd() const { return event_fd_; }
  // The worker's address, raw bytes (peers make their endpoints from it).
  const std::string& address() const { return address_; }
  // Whether the context holds an RDMA transport (rc, dc, ud) on an active port.
  bool rdma() const { return rdma_; }
  // The transports the context may use, for messages ("tcp/lo, tcp/eth0, posix/memory").
  const std::string& transports() const { return transports_; }
  // The largest active-message header the worker takes.
  size_t max_am_header() const { return max_am_header_; }

 private:
  Context() = default;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int event_fd_ = -1;
  std::string address_;
  bool rdma_ = false;
  std::string transports_;
  size_t max_am_header_ = 0;
};

// "UCX_TLS=tcp" / "UCX_TLS unset": for error messages that say what the user asked UCX for.
std::string UcxTlsText();
// The transports of an endpoint's lanes ("tcp/eth0", "sysv/memory, cma/memory"), for logs.
std::string EndpointTransports(ucp_ep_h ep);
// A status of UCX as text ("Connection reset by remote peer").
std::string UcxStatusText(ucs_status_t status);

}  // namespace cohort::ucx
