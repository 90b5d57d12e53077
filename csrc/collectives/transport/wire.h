// The frame header every transport message carries, and the collective fingerprint in it.
// The fingerprint (sequence, op, dtype, count, root, reduce op) lets the receiver detect ranks
// that issued different collectives and fail with an error naming both sides instead of hanging.
#pragma once

#include <cstdint>
#include <string>

#include "collectives/types.h"

namespace cohort {

inline constexpr uint32_t kWireMagic = 0x43485254;  // "CHRT"
inline constexpr uint32_t kWireVersion = 1;

enum class FrameKind : uint8_t {
  kCollective = 1,  // data of a collective, matched by (sequence, tag)
  kPointToPoint = 2,  // user send/recv, matched by tag in order
  kAbort = 3,       // the sender failed; payload is the reason
  kGoodbye = 4,     // the sender is closing its communicator cleanly
  kAck = 5,         // the sender finished reading a single-copy payload (id in `sequence`)
  kProbe = 6,       // "are you there?": the channel answers it itself (a timeout's check)
  kProbeReply = 7,  // the answer; neither reaches the protocol
};

// FrameHeader::reserved bits.
inline constexpr uint32_t kFrameRemote = 1;  // payload is {address, id} to read from the sender
// Bits 8..31: the epoch of the communicator view that sent the frame (0 for a communicator
// made by Create; its shrunk children count up, connection_set.h). The channels below keep it
// as it is; only the protocol and the connection set read it.
inline constexpr int kFrameEpochShift = 8;
inline constexpr uint32_t kFrameEpochMask = 0xffffff00u;
inline constexpr uint32_t kMaxFrameEpoch = kFrameEpochMask >> kFrameEpochShift;

// Why an abort frame's sender failed, carried in its header (root: the rank it blames, in the
// sender's communicator; -1 when none), so that receivers learn who failed without reading
// the text. The text (payload) says it in words.
enum class Blame : uint32_t {
  kNone = 0,     // an abort asked for by the user, a mismatch, a bad argument: nobody failed
  kLost = 1,     // the blamed rank's connection closed or broke: its process died
  kStopped = 2,  // the blamed rank's process is stopped (SIGSTOP, a debugger)
  kTimeout = 3,  // the blamed rank did not answer within the timeout (frozen, cut off, slow)
  kRemoved = 4,  // the launcher removed the blamed rank from the job (its node was lost)
};
const char* BlameName(Blame blame);

// What a collective is, as every rank must agree on it.
struct Fingerprint {
  uint64_t sequence = 0;  // 1-based count of collectives issued on the communicator
  OpType op = OpType::kBarrier;
  DataType dtype = DataType::kUInt8;
  ReduceOp reduce_op = ReduceOp::kSum;
  int32_t root = -1;
  uint64_t count = 0;  // total element count as every rank sees it

  bool SameCall(const Fingerprint& other) const {
    return op == other.op && dtype == other.dtype && reduce_op == other.reduce_op &&
           root == other.root && count == other.count;
  }
  // "allreduce(float32 x 1024, sum)" / "broadcast(int8 x 3, root 1)"
  std::string Describe() const;
};

#pragma pack(push, 1)
struct FrameHeader {
  uint8_t kind;
  uint8_t op;
  uint8_t dtype;
  uint8_t reduce_op;
  int32_t root;
  uint32_t tag;
  uint32_t reserved;
  uint64_t sequence;
  uint64_t count;
  uint64_t length;  // payload bytes after this header

  Fingerprint fingerprint() const {
    Fingerprint result;
    result.sequence = sequence;
    result.op = static_cast<OpType>(op);
    result.dtype = static_cast<DataType>(dtype);
    result.reduce_op = static_cast<ReduceOp>(reduce_op);
    result.root = root;
    result.count = count;
    return result;
  }
  uint32_t epoch() const { return reserved >> kFrameEpochShift; }
  void set_epoch(uint32_t epoch) {
    reserved = (reserved & ~kFrameEpochMask) | (epoch << kFrameEpochShift);
  }
  void SetFingerprint(const Fingerprint& fingerprint) {
    sequence = fingerprint.sequence;
    op = static_cast<uint8_t>(fingerprint.op);
    dtype = static_cast<uint8_t>(fingerprint.dtype);
    reduce_op = static_cast<uint8_t>(fingerprint.reduce_op);
    root = fingerprint.root;
    count = fingerprint.count;
  }
};
#pragma pack(pop)
static_assert(sizeof(FrameHeader) == 40);

}  // namespace cohort
