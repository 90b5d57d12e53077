// A device group: the ranks of one host that hold device buffers, and the intra-node step of a GPU
// collective among them (NCCL's job). The engine composes it with cohort's rails between hosts:
// reduce-scatter inside the host, rails across, allgather inside the host. Implementations:
// NcclDeviceGroup (nccl_device_group.h, one rank per GPU) and FakeDeviceGroup
// (fake_device_group.h, host memory and FakeStreams, for make test). Both are created from
// cohort's Bootstrap (the NCCL unique id, the fake's shared-memory segment; nccl_id.h).
//
// Every call enqueues on the given stream after the work already there and returns at once with
// an event recorded after the collective: the data is in place when the event completes. An
// error returned by a call means nothing was enqueued (or the group is unusable); a failure
// while the collective runs shows in the event's Query and in AsyncError.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "collectives/device/stream.h"
#include "collectives/types.h"

namespace cohort::device {

// One collective among the group's ranks. Counts are elements of `type`:
//   allreduce       send, recv: count
//   reduce_scatter  send: count * size(), recv: count (this rank's block of the reduction)
//   allgather       send: count, recv: count * size() (rank r's block at r * count)
//   broadcast       send (read on `root` only), recv: count
//   reduce          send: count, recv: count (written on `root` only)
// send == recv is allowed (in place; for reduce_scatter recv == send + rank * count, for
// allgather send == recv + rank * count).
struct DeviceCall {
  OpType op = OpType::kAllreduce;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  DataType type = DataType::kFloat32;
  ReduceOp reduce = ReduceOp::kSum;  // allreduce, reduce_scatter, reduce
  int root = 0;                      // broadcast, reduce
};

std::string DescribeDeviceCall(const DeviceCall& call);  // "allreduce of 1024 float32 (sum)"

class DeviceGroup {
 public:
  virtual ~DeviceGroup() = default;

  virtual const char* backend() const = 0;  // "nccl", "fake"
  virtual int rank() const = 0;             // within the group (the host's local rank)
  virtual int size() const = 0;
  virtual StreamKind stream_kind() const = 0;  // the streams Enqueue accepts

  // OK when the group can run `call` (op, type and reduce op; root in range); otherwise
  // InvalidArgument / Unimplemented naming the call and what the backend accepts. Enqueue checks
  // this too; the engine asks first to choose another path.
  virtual absl::Status CheckSupported(const DeviceCall& call) const = 0;

  // Enqueues `call` on `stream` (of stream_kind()) and returns an event recorded after it.
  virtual absl::StatusOr<std::unique_ptr<Event>> Enqueue(const DeviceCall& call,
                                                         Stream& stream) = 0;

  // An error the backend reported asynchronously (NCCL: ncclCommGetAsyncError; the fake: a task
  // that failed or timed out, a peer that aborted), or OK. Cheap; the engine polls it with the
  // events of pending Works and aborts the group on an error.
  virtual absl::Status AsyncError() = 0;

  // Fails what is pending and makes every later call return `reason` (NCCL: ncclCommAbort).
  // Callable from any thread, more than once (the first reason stays).
  virtual void Abort(const absl::Status& reason) = 0;

  // The convenience forms.
  absl::StatusOr<std::unique_ptr<Event>> Allreduce(const void* send, void* recv, size_t count,
                                                   DataType type, ReduceOp reduce, Stream& stream) {
    return Enqueue({OpType::kAllreduce, send, recv, count, type, reduce, 0}, stream);
  }
  absl::StatusOr<std::unique_ptr<Event>> ReduceScatter(const void* send, void* recv, size_t count,
                                                       DataType type, ReduceOp reduce,
                                                       Stream& stream) {
    return Enqueue({OpType::kReduceScatter, send, recv, count, type, reduce, 0}, stream);
  }
  absl::StatusOr<std::unique_ptr<Event>> Allgather(const void* send, void* recv, size_t count,
                                                   DataType type, Stream& stream) {
    return Enqueue({OpType::kAllgather, send, recv, count, type, ReduceOp::kSum, 0}, stream);
  }
  absl::StatusOr<std::unique_ptr<Event>> Broadcast(const void* send, void* recv, size_t count,
                                                   DataType type, int root, Stream& stream) {
    return Enqueue({OpType::kBroadcast, send, recv, count, type, ReduceOp::kSum, root}, stream);
  }
  absl::StatusOr<std::unique_ptr<Event>> Reduce(const void* send, void* recv, size_t count,
                                                DataType type, ReduceOp reduce, int root,
                                                Stream& stream) {
    return Enqueue({OpType::kReduce, send, recv, count, type, reduce, root}, stream);
  }
};

// Checks shared by the implementations: the op is one of the five, root in [0, size), the
// buffers this rank uses non-null when count > 0. `who` prefixes the message ("nccl device group
// rank 1/4").
absl::Status CheckDeviceCallShape(const DeviceCall& call, int rank, int size,
                                  const std::string& who);

}  // namespace cohort::device
