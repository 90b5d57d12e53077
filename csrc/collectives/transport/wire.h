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
};

// FrameHeader::reserved bits.
inline constexpr uint32_t kFrameRemote = 1;  // payload is {address, id} to read from the sender

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
