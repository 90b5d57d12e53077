// Collectives through the lane (transport/shm/lane.h): when every rank lives on one host, each
// writes what its peers need into its own shared slot, publishes a stage, waits until every rank
// did, and reads straight from the peers' slots. No messages, no matching: one synchronisation
// for small operations, two for the large allreduce. Every entry serves an operation only when
// the bytes a rank stages fit in a slot, a condition every rank evaluates the same way.
//
// Reductions read the inputs in rank order with ReduceMany (fp16/bf16 accumulate in fp32), so
// every rank computes bit-identical results.
#include "collectives/transport/shm/lane.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "collectives/algorithms/registry.h"
#include "collectives/algorithms/ring.h"
#include "collectives/reduce.h"
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

void CopyIn(char* to, const void* from, size_t bytes) {
  if (bytes > 0 && to != from) std::memcpy(to, from, bytes);
}

// One lane collective: starting it takes the next half; then each rank stages its bytes, they
// meet (Exchange), and each reads what it needs from every rank's staged bytes (Of).
struct LaneCall {
  explicit LaneCall(OpContext& context)
      : context(context),
        lane(*context.lane()),
        args(context.args()),
        n(context.size()),
        rank(context.rank()),
        element(args.element_size()),
        half(lane.Begin(context.fingerprint())),
        staged(StagedBytes(args, n)) {}

  // Where `peer` stages this call's bytes (this rank's own included).
  char* Of(int peer) const { return lane.Data(peer, half, staged); }
  // A rank's slot in this call's half (the two-shot's pieces).
  char* Slot(int peer) const { return lane.Slot(peer, half); }

  // Publishes what this rank staged and waits for every rank; after the first: checks that every
  // rank runs this very collective.
  absl::Status Exchange(bool first = true) {
    COHORT_RETURN_IF_ERROR(context.LaneWait(lane.Publish()));
    return first ? CheckCalls() : absl::OkStatus();
  }

  // Reduces `count` elements at byte `offset` of every rank's staged bytes, in rank order, into
  // `out`, and finishes an average.
  void ReduceAll(void* out, size_t offset, size_t count) const {
    Inputs inputs(n);
    for (int peer = 0; peer < n; ++peer) inputs[peer] = Of(peer) + offset;
    GetReduceManyFn(args.dtype, args.reduce_op)(out, inputs.data(), n, count);
    context.FinishAverage(out, count);
  }

  // Per-rank blocks of allgather, gather, reduce_scatter and scatter, in elements.
  size_t Count(int peer) const { return args.counts.empty() ? args.count : args.counts[peer]; }
  size_t Offset(int peer) const {
    if (args.counts.empty()) return args.count * peer;
    size_t offset = 0;
    for (int before = 0; before < peer; ++before) offset += args.counts[before];
    return offset;
  }

  absl::Status CheckCalls() const {
    const Fingerprint& mine = context.fingerprint();
    for (int peer = 0; peer < n; ++peer) {
      if (peer == rank) continue;
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

  OpContext& context;
  shm::Lane& lane;
  const OpArgs& args;
  const int n;
  const int rank;
  const size_t element;
  const int half;       // of the lane this call uses (taken at construction)
  const size_t staged;  // bytes each rank stages (decided alike on every rank)
};

absl::Status LaneAllreduceOneShot(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  CopyIn(call.Of(call.rank), args.input, args.count * call.element);
  COHORT_RETURN_IF_ERROR(call.Exchange());
  call.ReduceAll(args.output, 0, args.count);
  return absl::OkStatus();
}

// Reduce-scatter then allgather through the slots. A rank stages only the blocks its peers
// reduce, reduces its own block into its slot (where the peers fetch it) and copies out. Large
// buffers go in pieces of at most kPieceBytes, alternating between two regions of the slot, so a
// piece is reduced and copied out while it is still in cache, and a rank may stage the next
// piece while its peers still copy out the last one.
constexpr size_t kPieceBytes = 256 << 10;

absl::Status LaneAllreduceTwoShot(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  const int n = call.n;
  const int rank = call.rank;
  const size_t element = call.element;
  const size_t region = std::min(kPieceBytes, call.lane.capacity() / 2);
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
    char* mine = call.Slot(rank) + base;
    const char* in = input + done * element;
    char* out = output + done * element;
    for (int block = 0; block < n; ++block) {
      if (block != rank) CopyIn(mine + at(block), in + at(block), length(block));
    }
    COHORT_RETURN_IF_ERROR(call.Exchange(/*first=*/piece == 0));
    for (int peer = 0; peer < n; ++peer) {
      inputs[peer] = peer == rank ? in + at(rank) : call.Slot(peer) + base + at(rank);
    }
    // Our slot's block `rank` holds none of the inputs: reduce into it.
    reduce(mine + at(rank), inputs.data(), n, blocks.counts[rank]);
    context.FinishAverage(mine + at(rank), blocks.counts[rank]);
    COHORT_RETURN_IF_ERROR(call.Exchange(/*first=*/false));
    for (int block = 0; block < n; ++block) {
      CopyIn(out + at(block), call.Slot(block) + base + at(block), length(block));
    }
    done += count;
  }
  return absl::OkStatus();
}

absl::Status LaneBroadcast(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  const size_t bytes = args.count * call.element;
  const bool root = call.rank == args.root;
  if (root) CopyIn(call.Of(call.rank), args.input, bytes);
  COHORT_RETURN_IF_ERROR(call.Exchange());
  if (root) {
    if (args.output != nullptr) CopyIn(static_cast<char*>(args.output), args.input, bytes);
  } else {
    CopyIn(static_cast<char*>(args.output), call.Of(args.root), bytes);
  }
  return absl::OkStatus();
}

absl::Status LaneReduce(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  CopyIn(call.Of(call.rank), args.input, args.count * call.element);
  COHORT_RETURN_IF_ERROR(call.Exchange());
  if (call.rank == args.root) call.ReduceAll(args.output, 0, args.count);
  return absl::OkStatus();
}

// Allgather and gather: everyone stages its block; everyone (or the root) copies them all.
absl::Status LaneGatherTo(OpContext& context, bool everyone) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  CopyIn(call.Of(call.rank), args.input, call.Count(call.rank) * call.element);
  COHORT_RETURN_IF_ERROR(call.Exchange());
  if (!everyone && call.rank != args.root) return absl::OkStatus();
  char* output = static_cast<char*>(args.output);
  size_t offset = 0;
  for (int peer = 0; peer < call.n; ++peer) {
    const size_t bytes = call.Count(peer) * call.element;
    CopyIn(output + offset, call.Of(peer), bytes);
    offset += bytes;
  }
  return absl::OkStatus();
}

absl::Status LaneAllgather(OpContext& context) { return LaneGatherTo(context, true); }
absl::Status LaneGather(OpContext& context) { return LaneGatherTo(context, false); }

absl::Status LaneReduceScatter(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  CopyIn(call.Of(call.rank), args.input, call.Offset(call.n) * call.element);
  COHORT_RETURN_IF_ERROR(call.Exchange());
  call.ReduceAll(args.output, call.Offset(call.rank) * call.element, call.Count(call.rank));
  return absl::OkStatus();
}

absl::Status LaneScatter(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  if (call.rank == args.root)
    CopyIn(call.Of(call.rank), args.input, call.Offset(call.n) * call.element);
  COHORT_RETURN_IF_ERROR(call.Exchange());
  CopyIn(static_cast<char*>(args.output),
         call.Of(args.root) + call.Offset(call.rank) * call.element,
         call.Count(call.rank) * call.element);
  return absl::OkStatus();
}

absl::Status LaneAlltoall(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  const size_t block = args.count * call.element;
  CopyIn(call.Of(call.rank), args.input, block * call.n);
  COHORT_RETURN_IF_ERROR(call.Exchange());
  char* output = static_cast<char*>(args.output);
  for (int peer = 0; peer < call.n; ++peer) {
    CopyIn(output + peer * block, call.Of(peer) + call.rank * block, block);
  }
  return absl::OkStatus();
}

absl::Status LaneBarrier(OpContext& context) {
  LaneCall call(context);
  return call.Exchange();
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
  const char* kFitsNeeds =
      "every rank on one host with the shared-memory lane (COHORT_SHM not 0) and the call's "
      "bytes within its slot (COHORT_SHM_LANE_BYTES)";
  registry.push_back(
      Algorithm{"lane_one_shot", {OpType::kAllreduce}, Fits, OneShotCost, LaneAllreduceOneShot,
                kFitsNeeds});
  registry.push_back(
      Algorithm{"lane_two_shot", {OpType::kAllreduce}, Streams, TwoShotCost, LaneAllreduceTwoShot,
                "every rank on one host with the shared-memory lane (COHORT_SHM not 0, "
                "COHORT_SHM_LANE_BYTES at least 4K)"});
  registry.push_back(
      Algorithm{"lane",
                {OpType::kBroadcast, OpType::kReduce, OpType::kAllgather, OpType::kGather,
                 OpType::kReduceScatter, OpType::kScatter, OpType::kAlltoall, OpType::kBarrier},
                Fits,
                StagedCost,
                [](OpContext& context) {
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
                    case OpType::kBarrier:
                      return LaneBarrier(context);
                    default:
                      return UnservedOp("lane", context.args().op);
                  }
                },
                kFitsNeeds});
}

}  // namespace cohort
