// Allreduce of CUDA buffers across hosts: the device group (NCCL) inside each host, cohort's
// rails between hosts, the device group again (as hierarchical.cc composes the same steps for
// host memory). With L ranks per host and B = count / L:
//
//   device   reduce-scatter inside the host: local rank l holds block l (B elements) reduced
//            over its host; the T = count - L*B trailing elements are allreduced inside the host;
//   copies   block l and the tail go to pinned host memory, chunk by chunk (events);
//   host     one ring allreduce per chunk across hosts over the rail (the l-th rank of every
//            host), on the pinned memory, as each chunk's copy completes; each opens a gate;
//   copies   each chunk back to the device behind its gate;
//   device   allgather inside the host of the B-element blocks.
//
// All device steps are enqueued at submit; the stream runs the copies to the host ahead, so one
// chunk crosses the network while the next is copied down and the previous copied back. The
// rails move what leaves the device in pinned host memory; putting GPU memory on the wire
// (UCX built with CUDA, GPUDirect RDMA) is not done yet.
#include <algorithm>

#include "collectives/algorithms/registry.h"
#include "collectives/algorithms/ring.h"
#include "collectives/device_runtime.h"
#include "collectives/op_context.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagRail = 6u << 24;
constexpr uint32_t kTagChunkStride = 1u << 16;  // below ring.cc's tags (1 << 20 and up)
constexpr int kMaxChunks = 8;

struct Layout {
  int local_size = 1;
  int local_rank = 0;
  size_t block = 0;   // B: elements per local rank in the reduce-scatter
  size_t tail = 0;    // T: the rest, allreduced inside the host
  size_t staged = 0;  // B + T: what this rank's rail reduces
  Blocks chunks;      // over [0, staged)
};

// Chunks of at least 8 pipeline segments (4 MiB by default), at most kMaxChunks of them.
Layout LayoutOf(const OpArgs& args, const DeviceState& state, size_t segment_bytes) {
  Layout layout;
  layout.local_size = state.local_size;
  layout.local_rank = state.local_rank;
  layout.block = args.count / static_cast<size_t>(layout.local_size);
  layout.tail = args.count - layout.block * static_cast<size_t>(layout.local_size);
  layout.staged = layout.block + layout.tail;
  const size_t bytes = layout.staged * args.element_size();
  const size_t chunk_bytes = std::max<size_t>(8 * segment_bytes, 64 << 10);
  const int chunks = static_cast<int>(std::clamp<size_t>(bytes / chunk_bytes, 1, kMaxChunks));
  layout.chunks = SplitEvenly(layout.staged, chunks);
  return layout;
}

// The device-group reduction of the host steps: an average is a sum until the rail divides.
ReduceOp DeviceReduce(const OpArgs& args) {
  return args.reduce_op == ReduceOp::kAvg ? ReduceOp::kSum : args.reduce_op;
}

bool Serves(const OpArgs& args, const Tuning& tuning) {
  if (tuning.device == nullptr || !tuning.device->prepared.load(std::memory_order_acquire)) {
    return false;
  }
  const DeviceState& state = *tuning.device;
  if (!state.groups || !tuning.multi_host() || !tuning.topology->Uniform()) return false;
  if (!args.counts.empty()) return false;
  static char placeholder;  // buffers are checked when the calls are enqueued
  device::DeviceCall call;
  call.op = OpType::kReduceScatter;
  call.send = &placeholder;
  call.recv = &placeholder;
  call.count = 1;
  call.type = args.dtype;
  call.reduce = DeviceReduce(args);
  if (!state.group->CheckSupported(call).ok()) return false;
  call.op = OpType::kAllgather;
  return state.group->CheckSupported(call).ok();
}

double Cost(const OpArgs& args, const Tuning& tuning) {
  const double m = static_cast<double>(tuning.topology->hosts()[0].size());
  const double h = static_cast<double>(tuning.topology->hosts().size());
  const double bytes = static_cast<double>(OpBytes(args, tuning.size()));
  const LinkModel& inter = tuning.inter;
  const double inside = 20e-6 + 2 * bytes / 100e9;
  const double copies = 2 * bytes / m / 12e9;
  const double across = 2 * (h - 1) * inter.latency_seconds +
                        2 * (h - 1) / h * bytes / m / inter.bytes_per_second +
                        (h - 1) / h * bytes / m / inter.reduce_bytes_per_second;
  return inside + copies + across;
}

// Calls `copy(device_offset, staged_offset, elements)` for the pieces of staged range
// [begin, end): block l's part, then the tail's.
template <typename Copy>
absl::Status ForPieces(const Layout& layout, size_t begin, size_t end, Copy copy) {
  const size_t l = static_cast<size_t>(layout.local_rank);
  const size_t all_blocks = layout.block * static_cast<size_t>(layout.local_size);
  if (begin < layout.block) {
    const size_t stop = std::min(end, layout.block);
    COHORT_RETURN_IF_ERROR(copy(l * layout.block + begin, begin, stop - begin));
  }
  if (end > layout.block) {
    const size_t start = std::max(begin, layout.block);
    COHORT_RETURN_IF_ERROR(copy(all_blocks + (start - layout.block), start, end - start));
  }
  return absl::OkStatus();
}

absl::Status Enqueue(DevicePlan& plan) {
  const OpArgs& args = plan.args();
  const Layout layout = LayoutOf(args, plan.state(), plan.segment_bytes());
  const size_t element = args.element_size();
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  const size_t l = static_cast<size_t>(layout.local_rank);
  const size_t all_blocks = layout.block * static_cast<size_t>(layout.local_size);
  device::Stream& stream = plan.stream();

  COHORT_RETURN_IF_ERROR(plan.AddGate().status());  // 0: the fingerprints matched
  device::DeviceCall call;
  call.type = args.dtype;
  call.reduce = DeviceReduce(args);
  if (layout.block > 0) {
    call.op = OpType::kReduceScatter;
    call.send = input;
    call.recv = output + l * layout.block * element;
    call.count = layout.block;
    COHORT_RETURN_IF_ERROR(plan.Call(call));
  }
  if (layout.tail > 0) {
    call.op = OpType::kAllreduce;
    call.send = input + all_blocks * element;
    call.recv = output + all_blocks * element;
    call.count = layout.tail;
    COHORT_RETURN_IF_ERROR(plan.Call(call));
  }
  COHORT_ASSIGN_OR_RETURN(char* staging, plan.Staging(layout.staged * element));
  const int chunks = static_cast<int>(layout.chunks.counts.size());
  for (int chunk = 0; chunk < chunks; ++chunk) {  // events 0 .. chunks-1
    const size_t begin = layout.chunks.offsets[chunk];
    COHORT_RETURN_IF_ERROR(ForPieces(
        layout, begin, begin + layout.chunks.counts[chunk],
        [&](size_t device_at, size_t staged_at, size_t elements) {
          return stream.CopyAsync(staging + staged_at * element, output + device_at * element,
                                  elements * element);
        }));
    COHORT_RETURN_IF_ERROR(plan.AddEvent().status());
  }
  for (int chunk = 0; chunk < chunks; ++chunk) {  // gates 1 .. chunks
    COHORT_RETURN_IF_ERROR(plan.AddGate().status());
    const size_t begin = layout.chunks.offsets[chunk];
    COHORT_RETURN_IF_ERROR(ForPieces(
        layout, begin, begin + layout.chunks.counts[chunk],
        [&](size_t device_at, size_t staged_at, size_t elements) {
          return stream.CopyAsync(output + device_at * element, staging + staged_at * element,
                                  elements * element);
        }));
  }
  if (layout.block > 0) {
    call.op = OpType::kAllgather;
    call.send = output + l * layout.block * element;
    call.recv = output;
    call.count = layout.block;
    COHORT_RETURN_IF_ERROR(plan.Call(call));
  }
  return absl::OkStatus();
}

absl::Status Run(OpContext& context) {
  DevicePlan& plan = *context.device_plan();
  const OpArgs& args = context.args();
  const Layout layout = LayoutOf(args, plan.state(), plan.segment_bytes());
  const Topology& topology = context.topology();
  const RankPlace& place = topology.place(context.rank());
  const size_t element = args.element_size();
  COHORT_RETURN_IF_ERROR(CheckFingerprintsOnHost(context));
  plan.Open(0);
  char* staging = plan.staging(0);
  const int chunks = static_cast<int>(layout.chunks.counts.size());
  for (int chunk = 0; chunk < chunks; ++chunk) {
    COHORT_RETURN_IF_ERROR(plan.WaitEvent(context, chunk, "the copy of a reduced block to host memory"));
    RingGroup rail;
    for (const std::vector<int>& host : topology.hosts()) rail.ranks.push_back(host[place.local_rank]);
    rail.index = place.host;
    rail.tag_base = kTagRail + static_cast<uint32_t>(chunk) * kTagChunkStride;
    char* data = staging + layout.chunks.offsets[chunk] * element;
    COHORT_RETURN_IF_ERROR(RingAllreduceInPlace(context, rail, data, data,
                                                layout.chunks.counts[chunk],
                                                args.reduce_op == ReduceOp::kAvg));
    plan.Open(chunk + 1);
  }
  return context.WaitAll();
}

}  // namespace

void RegisterDeviceHierarchicalAlgorithms(std::vector<Algorithm>& registry) {
  Algorithm algorithm{"device_hierarchical", {OpType::kAllreduce}, Serves, Cost, Run};
  algorithm.memory = {MemoryKind::kCuda};
  algorithm.enqueue = Enqueue;
  registry.push_back(std::move(algorithm));
}

}  // namespace cohort
