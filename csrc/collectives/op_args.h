// The description of one operation as the engine and the algorithms see it: buffers and where
// they live, element counts (equal or per rank), type, reduce op, root or peer.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "collectives/memory_kind.h"
#include "collectives/types.h"

namespace cohort {

namespace device {
class Stream;
}

struct OpArgs {
  OpType op = OpType::kBarrier;
  const void* input = nullptr;
  void* output = nullptr;
  // allreduce/broadcast/reduce: elements in the buffer; allgather/gather/scatter/reduce_scatter:
  // elements per rank when `counts` is empty; alltoall: elements per peer when `counts` is
  // empty; send/recv: elements.
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
  ReduceOp reduce_op = ReduceOp::kSum;
  int root = -1;  // broadcast/reduce/gather/scatter; peer for send/recv
  uint32_t tag = 0;  // send/recv
  // Variable sizes, in elements, one per rank: allgather/reduce_scatter per-rank blocks;
  // alltoall: what this rank sends to each peer (counts) and receives from each (recv_counts).
  std::vector<size_t> counts;
  std::vector<size_t> recv_counts;
  // Element offsets of each rank's block; computed as prefix sums when empty.
  std::vector<size_t> displacements;
  std::vector<size_t> recv_displacements;
  // Where input and output live. kCuda: memory of `stream`'s device, ordered on `stream` (the
  // caller's): the operation's device steps are enqueued there when it is submitted
  // (device_runtime.h).
  MemoryKind memory = MemoryKind::kHost;
  std::shared_ptr<device::Stream> stream;

  size_t element_size() const { return DataTypeSize(dtype); }
};

}  // namespace cohort
