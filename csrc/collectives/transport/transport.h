// The transport boundary: per-peer asynchronous sends and receives of byte ranges, tagged and
// fingerprinted, driven by the communicator's progress engine. Algorithms never see sockets;
// they post Requests through OpContext and the engine calls Progress until they complete.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/clock.h"
#include "collectives/transport/wire.h"

namespace cohort {

namespace shm {
class Lane;
}

inline constexpr int kAnySource = -1;

// One send or receive. The poster owns it and keeps it (and its buffer) alive until it is
// complete or the transport's requests are dropped.
struct Request {
  enum class Direction : uint8_t { kSend, kRecv };
  Direction direction = Direction::kSend;
  int peer = 0;             // kAnySource for a point-to-point receive from anyone
  FrameHeader header = {};  // send: sent as is; receive: kind, sequence and tag to match
  char* data = nullptr;
  size_t length = 0;        // bytes to send, or the exact number of bytes expected
  size_t transferred = 0;   // send: header + payload bytes written; receive: payload bytes read
  bool complete = false;
  // Single-copy send to a peer on this host: the frame carries {address, id} instead of the
  // payload, the peer reads the payload from this process, and its acknowledgement completes
  // the request.
  uint64_t remote[2] = {0, 0};
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Host name of a rank, for error messages.
  virtual const std::string& PeerHost(int rank) const = 0;

  // Queue a send / post a receive. The request completes during Progress (or right away).
  virtual void PostSend(Request* request) = 0;
  virtual void PostRecv(Request* request) = 0;

  // Moves data on every connection and completes requests. Waits up to `timeout_ms` for an
  // event if nothing is ready (0: does not block). An error (lost peer, collective mismatch,
  // a peer's abort) is sticky: every later call returns it.
  virtual absl::Status Progress(int timeout_ms) = 0;

  // The collective now executing; incoming frames of the same sequence must carry the same
  // fingerprint.
  virtual absl::Status BeginCollective(const Fingerprint& fingerprint) = 0;

  // Makes a Progress blocked in another thread return soon. Thread-safe.
  virtual void Wake() = 0;

  // How long a waiter should poll before sleeping when COHORT_SPIN_US is auto: worth it only
  // where peers answer through memory and every local rank has a core of its own.
  virtual int PreferredSpinMicros() const { return 0; }

  // Shared staging memory among all ranks when they all live on one host (see shm/lane.h);
  // nullptr otherwise. Lane collectives wait on it and call CheckPeers now and then.
  virtual shm::Lane* lane() { return nullptr; }
  // Looks at every connection now (closes, aborts, mismatching frames) and drives pending
  // transfers, without blocking. Errors as Progress.
  virtual absl::Status CheckPeers() { return Progress(0); }

  // Best effort: tells every peer this rank failed with `reason`, then forgets every queued
  // request (their owners are about to go away).
  virtual void AbortPeers(const std::string& reason) = 0;
  virtual void DropRequests() = 0;

  // Closing. Clean: tells every peer this rank closes on purpose, so they do not take the close
  // for a crash. After a failure: half-closes every connection and reads until the peers close
  // theirs (or the deadline), so the abort frames already sent are read rather than lost to a
  // connection reset.
  virtual void Close(bool clean, Deadline deadline) = 0;
};

}  // namespace cohort
