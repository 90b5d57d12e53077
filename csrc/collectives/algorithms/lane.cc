// Collectives through the lane (transport/shm/lane.h): when every rank lives on one host, each
// writes what its peers need into its own shared slot, publishes a stage, waits until every rank
// did, and reads straight from the peers' slots. No messages, no matching: one synchronisation
// for small operations, two for the large allreduce. Every entry serves an operation only when
// the bytes a rank stages fit in a slot, a condition every rank evaluates the same way.
//
// Reductions read the inputs in rank order with ReduceMany (fp16/bf16 accumulate in fp32), so
// every rank computes bit-identical results.
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "collectives/algorithms/registry.h"
#include "collectives/algorithms/ring.h"
#include "collectives/reduce.h"
#include "collectives/transport/shm/lane.h"
#include "common/status.h"

namespace cohort {
namespace {

using Inputs = absl::InlinedVector<const void*, 16>;

// Bytes one rank stages in its slot for `args` (the same on every rank), or SIZE_MAX when the
// operation does not run on the lane.
size_t StagedBytes(const OpArgs& args, int n) {
  const size_t element = args.element_size();
  auto total = [&] {
    if (args.counts.empty()) return args.count * n;
    size_t sum = 0;
    for (size_t count : args.counts) sum += count;
    return sum;
  };
  auto largest_block = [&] {
    if (args.counts.empty()) return args.count;
    return *std::max_element(args.counts.begin(), args.counts.end());
  };
  switch (args.op) {
    case OpType::kAllreduce:
    case OpType::kReduce:
    case OpType::kBroadcast:
      return args.count * element;
    case OpType::kAllgather:
    case OpType::kGather:
      if (!args.displacements.empty()) return SIZE_MAX;
      return largest_block() * element;
    case OpType::kReduceScatter:
    case OpType::kScatter:
      if (!args.displacements.empty()) return SIZE_MAX;
      return total() * element;
    case OpType::kAlltoall:
      // Per-peer splits differ between ranks; only the equal exchange is decided alike.
      if (!args.counts.empty() || !args.displacements.empty()) return SIZE_MAX;
      return args.count * n * element;
    case OpType::kBarrier:
      return 0;
    default:
      return SIZE_MAX;
  }
}

bool Fits(const OpArgs& args, const Tuning& tuning) {
  return tuning.lane_bytes > 0 && !tuning.multi_host() &&
         StagedBytes(args, tuning.size()) <= tuning.lane_bytes;
}

// Two-shot allreduce streams any size through the slot in pieces.
bool Streams(const OpArgs&, const Tuning& tuning) {
  return tuning.lane_bytes >= 4096 && !tuning.multi_host();
}

// The lane's cost: a synchronisation is a cache-line round trip, far below a message's.
double StageSeconds(const Tuning& tuning) { return tuning.intra.latency_seconds / 4; }

shm::Lane& Lane(OpContext& context) { return *context.lane(); }

// After the first stage: every rank must be running this very collective.
absl::Status CheckCalls(OpContext& context, int half) {
  shm::Lane& lane = Lane(context);
  const Fingerprint& mine = context.fingerprint();
  for (int peer = 0; peer < context.size(); ++peer) {
    if (peer == context.rank()) continue;
    Fingerprint theirs = lane.Call(peer, half);
    if (theirs.sequence != mine.sequence || !theirs.SameCall(mine)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "collective mismatch: rank ", peer, " runs ", theirs.Describe(), " #", theirs.sequence,
          " while this rank runs ", mine.Describe(), " #", mine.sequence,
          "; every rank must issue the same collectives, with the same sizes, in the same "
          "order"));
    }
  }
  return absl::OkStatus();
}

// Write (done by the caller), publish, wait for everyone, check they run the same call.
absl::Status Exchange(OpContext& context, int half) {
  COHORT_RETURN_IF_ERROR(context.LaneWait(Lane(context).Publish()));
  return CheckCalls(context, half);
}

void CopyIn(char* to, const void* from, size_t bytes) {
  if (bytes > 0 && to != from) std::memcpy(to, from, bytes);
}

absl::Status LaneAllreduceOneShot(OpContext& context) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const int n = context.size();
  const int half = lane.Begin(context.fingerprint());
  const size_t staged = StagedBytes(args, context.size());
  CopyIn(lane.Data(context.rank(), half, staged), args.input, args.count * args.element_size());
  COHORT_RETURN_IF_ERROR(Exchange(context, half));
  Inputs inputs(n);
  for (int peer = 0; peer < n; ++peer) inputs[peer] = lane.Data(peer, half, staged);
  GetReduceManyFn(args.dtype, args.reduce_op)(args.output, inputs.data(), n, args.count);
  context.FinishAverage(args.output, args.count);
  return absl::OkStatus();
}

// Reduce-scatter then allgather through the slots. A rank stages only the blocks its peers
// reduce, reduces its own block into its slot (where the peers fetch it) and copies out. Large
// buffers go in pieces of at most kPieceBytes, alternating between two regions of the slot, so a
// piece is reduced and copied out while it is still in cache, and a rank may stage the next
// piece while its peers still copy out the last one.
constexpr size_t kPieceBytes = 256 << 10;

absl::Status LaneAllreduceTwoShot(OpContext& context) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  const int half = lane.Begin(context.fingerprint());
  const size_t region = std::min(kPieceBytes, lane.capacity() / 2);
  const size_t piece_elements = std::max<size_t>(1, region / element);
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  ReduceManyFn reduce = GetReduceManyFn(args.dtype, args.reduce_op);
  Inputs inputs(n);
  size_t done = 0;
  for (int piece = 0; done < args.count || piece == 0; ++piece) {
    const size_t count = std::min(piece_elements, args.count - done);
    // Everything fits one slot: one piece from the slot's start (as every rank decides alike).
    const size_t base = args.count <= piece_elements ? 0 : (piece & 1) * region;
    Blocks blocks = SplitEvenly(count, n);
    auto at = [&](int block) { return blocks.offsets[block] * element; };
    auto length = [&](int block) { return blocks.counts[block] * element; };
    char* mine = lane.Slot(rank, half) + base;
    const char* in = input + done * element;
    char* out = output + done * element;
    for (int block = 0; block < n; ++block) {
      if (block != rank) CopyIn(mine + at(block), in + at(block), length(block));
    }
    if (piece == 0) {
      COHORT_RETURN_IF_ERROR(Exchange(context, half));
    } else {
      COHORT_RETURN_IF_ERROR(context.LaneWait(lane.Publish()));
    }
    for (int peer = 0; peer < n; ++peer) {
      inputs[peer] = peer == rank ? in + at(rank) : lane.Slot(peer, half) + base + at(rank);
    }
    // Our slot's block `rank` holds none of the inputs: reduce into it.
    reduce(mine + at(rank), inputs.data(), n, blocks.counts[rank]);
    context.FinishAverage(mine + at(rank), blocks.counts[rank]);
    COHORT_RETURN_IF_ERROR(context.LaneWait(lane.Publish()));
    for (int block = 0; block < n; ++block) {
      CopyIn(out + at(block), lane.Slot(block, half) + base + at(block), length(block));
    }
    done += count;
  }
  return absl::OkStatus();
}

absl::Status LaneBroadcast(OpContext& context) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const size_t bytes = args.count * args.element_size();
  const int half = lane.Begin(context.fingerprint());
  const size_t staged = StagedBytes(args, context.size());
  const bool root = context.rank() == args.root;
  if (root) CopyIn(lane.Data(context.rank(), half, staged), args.input, bytes);
  COHORT_RETURN_IF_ERROR(Exchange(context, half));
  if (root) {
    if (args.output != nullptr) CopyIn(static_cast<char*>(args.output), args.input, bytes);
  } else {
    CopyIn(static_cast<char*>(args.output), lane.Data(args.root, half, staged), bytes);
  }
  return absl::OkStatus();
}

absl::Status LaneReduce(OpContext& context) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const int n = context.size();
  const int half = lane.Begin(context.fingerprint());
  const size_t staged = StagedBytes(args, context.size());
  CopyIn(lane.Data(context.rank(), half, staged), args.input, args.count * args.element_size());
  COHORT_RETURN_IF_ERROR(Exchange(context, half));
  if (context.rank() != args.root) return absl::OkStatus();
  Inputs inputs(n);
  for (int peer = 0; peer < n; ++peer) inputs[peer] = lane.Data(peer, half, staged);
  GetReduceManyFn(args.dtype, args.reduce_op)(args.output, inputs.data(), n, args.count);
  context.FinishAverage(args.output, args.count);
  return absl::OkStatus();
}

// Allgather and gather: everyone stages its block; everyone (or the root) copies them all.
absl::Status LaneGatherTo(OpContext& context, bool everyone) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  std::vector<size_t> counts = BlockCounts(args, n);
  std::vector<size_t> offsets = BlockOffsets(counts);
  const int half = lane.Begin(context.fingerprint());
  const size_t staged = StagedBytes(args, context.size());
  CopyIn(lane.Data(rank, half, staged), args.input, counts[rank] * element);
  COHORT_RETURN_IF_ERROR(Exchange(context, half));
  if (!everyone && rank != args.root) return absl::OkStatus();
  char* output = static_cast<char*>(args.output);
  for (int peer = 0; peer < n; ++peer) {
    CopyIn(output + offsets[peer] * element, lane.Data(peer, half, staged), counts[peer] * element);
  }
  return absl::OkStatus();
}

absl::Status LaneAllgather(OpContext& context) { return LaneGatherTo(context, true); }
absl::Status LaneGather(OpContext& context) { return LaneGatherTo(context, false); }

absl::Status LaneReduceScatter(OpContext& context) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  std::vector<size_t> counts = BlockCounts(args, n);
  std::vector<size_t> offsets = BlockOffsets(counts);
  const int half = lane.Begin(context.fingerprint());
  const size_t staged = StagedBytes(args, context.size());
  const size_t total = offsets[n - 1] + counts[n - 1];
  CopyIn(lane.Data(rank, half, staged), args.input, total * element);
  COHORT_RETURN_IF_ERROR(Exchange(context, half));
  Inputs inputs(n);
  for (int peer = 0; peer < n; ++peer) inputs[peer] = lane.Data(peer, half, staged) + offsets[rank] * element;
  GetReduceManyFn(args.dtype, args.reduce_op)(args.output, inputs.data(), n, counts[rank]);
  context.FinishAverage(args.output, counts[rank]);
  return absl::OkStatus();
}

absl::Status LaneScatter(OpContext& context) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  std::vector<size_t> counts = BlockCounts(args, n);
  std::vector<size_t> offsets = BlockOffsets(counts);
  const int half = lane.Begin(context.fingerprint());
  const size_t staged = StagedBytes(args, context.size());
  if (rank == args.root) {
    CopyIn(lane.Data(rank, half, staged), args.input, (offsets[n - 1] + counts[n - 1]) * element);
  }
  COHORT_RETURN_IF_ERROR(Exchange(context, half));
  CopyIn(static_cast<char*>(args.output), lane.Data(args.root, half, staged) + offsets[rank] * element,
         counts[rank] * element);
  return absl::OkStatus();
}

absl::Status LaneAlltoall(OpContext& context) {
  const OpArgs& args = context.args();
  shm::Lane& lane = Lane(context);
  const int n = context.size();
  const int rank = context.rank();
  const size_t block = args.count * args.element_size();
  const int half = lane.Begin(context.fingerprint());
  const size_t staged = StagedBytes(args, context.size());
  CopyIn(lane.Data(rank, half, staged), args.input, block * n);
  COHORT_RETURN_IF_ERROR(Exchange(context, half));
  char* output = static_cast<char*>(args.output);
  for (int peer = 0; peer < n; ++peer) {
    CopyIn(output + peer * block, lane.Data(peer, half, staged) + rank * block, block);
  }
  return absl::OkStatus();
}

absl::Status LaneBarrier(OpContext& context) {
  const int half = Lane(context).Begin(context.fingerprint());
  return Exchange(context, half);
}

// Costs: the lane moves the same bytes as the message algorithms of the same shape (one-shot,
// two-shot; a rooted or all-to-all exchange), through shared slots instead of the transport, so
// the models are theirs with a stage (a cache-line handshake) for each message round.
double OneShotCost(const OpArgs& args, const Tuning& tuning) {
  const LinkModel& link = tuning.intra;
  double bytes = static_cast<double>(args.count * args.element_size());
  double peers = tuning.size() - 1;
  return StageSeconds(tuning) + peers * bytes / link.bytes_per_second +
         peers * bytes / link.reduce_bytes_per_second;
}

double TwoShotCost(const OpArgs& args, const Tuning& tuning) {
  const LinkModel& link = tuning.intra;
  double bytes = static_cast<double>(args.count * args.element_size());
  double fraction = (tuning.size() - 1.0) / tuning.size();
  return 2 * StageSeconds(tuning) + 2 * fraction * bytes / link.bytes_per_second +
         fraction * bytes / link.reduce_bytes_per_second;
}

double StagedCost(const OpArgs& args, const Tuning& tuning) {
  double staged = static_cast<double>(StagedBytes(args, tuning.size()));
  return StageSeconds(tuning) + staged / tuning.intra.bytes_per_second;
}

}  // namespace

void RegisterLaneAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(
      Algorithm{"lane_one_shot", {OpType::kAllreduce}, Fits, OneShotCost, LaneAllreduceOneShot});
  registry.push_back(
      Algorithm{"lane_two_shot", {OpType::kAllreduce}, Streams, TwoShotCost, LaneAllreduceTwoShot});
  registry.push_back(Algorithm{"lane",
                               {OpType::kBroadcast, OpType::kReduce, OpType::kAllgather,
                                OpType::kGather, OpType::kReduceScatter, OpType::kScatter,
                                OpType::kAlltoall, OpType::kBarrier},
                               Fits, StagedCost, [](OpContext& context) {
                                 switch (context.args().op) {
                                   case OpType::kBroadcast:
                                     return LaneBroadcast(context);
                                   case OpType::kReduce:
                                     return LaneReduce(context);
                                   case OpType::kAllgather:
                                     return LaneAllgather(context);
                                   case OpType::kGather:
                                     return LaneGather(context);
                                   case OpType::kReduceScatter:
                                     return LaneReduceScatter(context);
                                   case OpType::kScatter:
                                     return LaneScatter(context);
                                   case OpType::kAlltoall:
                                     return LaneAlltoall(context);
                                   default:
                                     return LaneBarrier(context);
                                 }
                               }});
}

}  // namespace cohort
