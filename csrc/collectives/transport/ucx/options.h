// The UCX channel's settings (part of CommOptions; the protocol hands them to UcxChannel::Create).
// UCX itself is configured the way UCX always is, through UCX_* variables (UCX_TLS,
// UCX_NET_DEVICES, ...): the channel reads them with ucp_config_read and changes none of them.
// The two settings below are applied to the channel's own UCP context only, and only where the
// user has not set the UCX variable that governs them.
#pragma once

#include "absl/time/time.h"

namespace cohort::ucx {

struct UcxOptions {
  // How often UCX checks that each peer is still there (UCX_KEEPALIVE_INTERVAL, whose default is
  // 20 s). A peer on shared memory that dies is noticed only by this check, so it bounds how
  // soon its death becomes an error. Used only when UCX_KEEPALIVE_INTERVAL is unset; zero leaves
  // UCX's default.
  absl::Duration keepalive_interval = absl::Seconds(1);
  // UCX's shared-memory transports (posix, sysv) report a dead peer only when asked to
  // (UCX_MM_ERROR_HANDLING, default n); without it UCX refuses shared memory for endpoints that
  // must report peer failures, which every cohort endpoint does. True turns it on for this
  // context when none of UCX_MM_/POSIX_/SYSV_/XPMEM_ERROR_HANDLING is set.
  bool shared_memory_error_handling = true;
  // Payloads of at least this many bytes always go by rendezvous (zero-copy into the receiver's
  // buffer); smaller ones as UCX decides (UCX_RNDV_THRESH). 0: UCX decides for every size.
  size_t rendezvous_bytes = 0;
};

// Whether this build has the UCX channel (libucx was found when it was configured).
bool Built();

}  // namespace cohort::ucx
