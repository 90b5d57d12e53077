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
#include <cmath>
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

// What the stage two-shot adds to one-shot's costs. With more ranks on the host than CPUs a
// stage waits until each rank of a CPU ran in turn (OversubscriptionFactor): 4 ranks on 2 cores
// measured one-shot faster than two-shot up to 16-32 KiB there, against ~1 KiB with a CPU each.
double ExtraStageSeconds(const Tuning& tuning) {
  const double factor = OversubscriptionFactor(tuning);
  return factor > 1 ? factor * tuning.intra.latency_seconds : StageSeconds(tuning);
}

void CopyIn(char* to, const void* from, size_t bytes) {
  if (bytes > 0 && to != from) std::memcpy(to, from, bytes);
}

// A few bytes (at most a lane line's inline data) without a call into the C library: two
// overlapping fixed-size copies cover every length from one to twice their size.
inline void CopyFew(char* to, const char* from, size_t bytes) {
  if (bytes >= 8) {
    std::memcpy(to, from, 8);
    std::memcpy(to + bytes - 8, from + bytes - 8, 8);
  } else if (bytes >= 4) {
    std::memcpy(to, from, 4);
    std::memcpy(to + bytes - 4, from + bytes - 4, 4);
  } else {
    for (size_t i = 0; i < bytes; ++i) to[i] = from[i];
  }
}
static_assert(shm::Lane::kInlineBytes <= 16);

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
        staged(StagedBytes(args, n)),
        half(lane.Begin(context.fingerprint(), staged)) {}

  // Where `peer` stages this call's bytes (this rank's own included).
  char* Of(int peer) const { return lane.Data(peer, half, staged); }
  // A rank's slot in this call's half (the two-shot's pieces).
  char* Slot(int peer) const { return lane.Slot(peer, half); }

  // Publishes what this rank staged and waits for every rank; after the first: checks that every
  // rank runs this very collective.
  absl::Status Exchange(bool first = true) {
    absl::Status waited = context.LaneWait(lane.Publish());
    lane.WakeSleepers();  // the last rank to publish wakes those asleep (see lane.h)
    COHORT_RETURN_IF_ERROR(waited);
    return first ? CheckCalls() : absl::OkStatus();
  }

  // Reduces `count` elements at byte `offset` of every rank's staged bytes, in rank order, into
  // `out`, and finishes an average. Two ranks take the two-input kernel the context holds (the
  // same loop ReduceMany runs for two).
  void ReduceAll(void* out, size_t offset, size_t count) const {
    if (n == 2) {
      context.Reduce(out, Of(0) + offset, Of(1) + offset, count);
    } else {
      Inputs inputs(n);
      for (int peer = 0; peer < n; ++peer) inputs[peer] = Of(peer) + offset;
      GetReduceManyFn(args.dtype, args.reduce_op)(out, inputs.data(), n, count);
    }
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
    for (int peer = 0; peer < n; ++peer) {
      if (peer != rank && !lane.SameCall(peer)) return Mismatch(peer);
    }
    return absl::OkStatus();
  }

  [[gnu::noinline]] absl::Status Mismatch(int peer) const {
    const Fingerprint& mine = context.fingerprint();
    Fingerprint theirs = lane.Call(peer, half);
    return absl::FailedPreconditionError(absl::StrCat(
        "collective mismatch: rank ", peer, " runs ", theirs.Describe(), " #", theirs.sequence,
        " while this rank runs ", mine.Describe(), " #", mine.sequence,
        "; every rank must issue the same collectives, with the same sizes, in the same order"));
  }

  OpContext& context;
  shm::Lane& lane;
  const OpArgs& args;
  const int n;
  const int rank;
  const size_t element;
  const size_t staged;  // bytes each rank stages (decided alike on every rank)
  const int half;       // of the lane this call uses (taken at construction)
};

absl::Status LaneAllreduceOneShot(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  if (call.staged <= shm::Lane::kInlineBytes) {
    CopyFew(call.Of(call.rank), static_cast<const char*>(args.input), call.staged);
  } else {
    CopyIn(call.Of(call.rank), args.input, call.staged);
  }
  COHORT_RETURN_IF_ERROR(call.Exchange());
  call.ReduceAll(args.output, 0, args.count);
  return absl::OkStatus();
}

// Reduce-scatter then allgather through the slots. A rank stages only the blocks its peers
// reduce, reduces its own block into its slot (where the peers fetch it) and copies out. Large
// buffers go in pieces of at most kPieceBytes, so a piece is reduced and copied out while it is
// still in cache, and every stage after the first does two jobs: it says "piece k is reduced"
// and "piece k+1 is staged". One synchronisation per piece (plus one), not two: each is a
// moment both ranks must be running, which on a busy host is what costs.
//
// Pieces rotate through three regions of the slot. Between stages S(k) and S(k+1) a rank
// reduces piece k (reading the peers' region k%3, writing its own block there), stages piece k+1
// into region (k+1)%3 and, after S(k+1), copies piece k out of every region k%3. Staging k+2
// overwrites region (k+2)%3 = (k-1)%3 after S(k+1): every rank read that region last while
// copying out piece k-1, before it published S(k+1).
constexpr size_t kPieceBytes = 256 << 10;
constexpr int kRegions = 3;

// Out of place, a result larger than this rank's share of the last-level cache (every rank holds
// an input and an output) would not stay there anyway: streaming it out saves reading each
// output line before it is written, a third of the memory traffic (1.5x at 64 MiB on an AMD EPYC,
// where 4 MiB was 1.3x slower streamed). In place, the lines written were just read: no gain.
bool StreamsResult(const OpArgs& args, int n) {
  if (args.input == args.output) return false;
  static const size_t cache = LastLevelCacheBytes();
  return args.count * args.element_size() > cache / (2 * static_cast<size_t>(n));
}

// One piece of the two-shot: `count` elements from element `first`, staged at byte `base` of
// each slot, split into per-rank blocks of whole cache lines (the last ones shorter or empty).
struct Part {
  Part(size_t k, size_t piece_elements, size_t total, size_t region, size_t element, int n)
      : first(k * piece_elements),
        count(std::min(piece_elements, total - std::min(total, first))),
        base((k % kRegions) * region),
        element(element) {
    const size_t line = std::max<size_t>(1, 64 / element);
    block = ((count + n - 1) / n + line - 1) / line * line;
  }
  size_t Offset(int rank) const { return std::min(count, rank * block); }
  size_t Count(int rank) const { return std::min(count, (rank + 1) * block) - Offset(rank); }
  size_t At(int rank) const { return Offset(rank) * element; }         // bytes into the piece
  size_t Length(int rank) const { return Count(rank) * element; }

  size_t first;
  size_t count;
  size_t base;
  size_t element;
  size_t block = 0;  // elements per rank
};

absl::Status LaneAllreduceTwoShot(OpContext& context) {
  LaneCall call(context);
  const OpArgs& args = call.args;
  const int n = call.n;
  const int rank = call.rank;
  const size_t element = call.element;
  const size_t region = std::min(kPieceBytes, call.lane.capacity() / kRegions / 64 * 64);
  const size_t piece_elements = std::max<size_t>(1, region / element);
  const size_t pieces = std::max<size_t>(1, (args.count + piece_elements - 1) / piece_elements);
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  ReduceManyFn reduce = GetReduceManyFn(args.dtype, args.reduce_op);
  const bool stream = StreamsResult(args, n);
  StreamCopyFn stream_copy = GetStreamCopyFn();
  Inputs inputs(n);
  auto part = [&](size_t k) { return Part(k, piece_elements, args.count, region, element, n); };
  // Copies the blocks of piece `p` that the peers reduce into this rank's slot.
  auto stage = [&](const Part& p) {
    char* mine = call.Slot(rank) + p.base;
    const char* in = input + p.first * element;
    for (int block = 0; block < n; ++block) {
      if (block != rank) CopyIn(mine + p.At(block), in + p.At(block), p.Length(block));
    }
  };
  Part current = part(0);
  stage(current);
  COHORT_RETURN_IF_ERROR(call.Exchange(/*first=*/true));
  for (size_t k = 0; k < pieces; ++k) {
    // Piece k: our own input's block and the peers' staged copies of it, reduced into our slot's
    // block `rank` (which holds none of the inputs).
    char* own = call.Slot(rank) + current.base + current.At(rank);
    const char* in = input + current.first * element;
    for (int peer = 0; peer < n; ++peer) {
      inputs[peer] = peer == rank ? in + current.At(rank)
                                  : call.Slot(peer) + current.base + current.At(rank);
    }
    reduce(own, inputs.data(), n, current.Count(rank));
    context.FinishAverage(own, current.Count(rank));
    const Part next = part(k + 1);  // empty past the last piece
    if (k + 1 < pieces) stage(next);
    COHORT_RETURN_IF_ERROR(call.Exchange(/*first=*/false));
    char* out = output + current.first * element;
    for (int block = 0; block < n; ++block) {
      if (stream) {
        stream_copy(out + current.At(block), call.Slot(block) + current.base + current.At(block),
                    current.Length(block));
        continue;
      }
      CopyIn(out + current.At(block), call.Slot(block) + current.base + current.At(block),
             current.Length(block));
    }
    current = next;
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
// the models are theirs with a stage (a cache-line handshake) for each message round, and each
// byte copied once (into the slot, where the peers read it) where a message copies it twice
// (into a ring and out of it): twice the intra copy rate.
double LaneBytesPerSecond(const Tuning& tuning) { return 2 * tuning.intra.bytes_per_second; }

double OneShotCost(const OpArgs& args, const Tuning& tuning) {
  double bytes = static_cast<double>(args.count * args.element_size());
  double peers = tuning.size() - 1;
  return StageSeconds(tuning) + peers * bytes / LaneBytesPerSecond(tuning) +
         peers * bytes / tuning.intra.reduce_bytes_per_second;
}

// A stage per piece and one more; the second stage is what one-shot saves.
double TwoShotCost(const OpArgs& args, const Tuning& tuning) {
  double bytes = static_cast<double>(args.count * args.element_size());
  double fraction = (tuning.size() - 1.0) / tuning.size();
  double pieces = std::ceil(bytes / static_cast<double>(kPieceBytes));
  return StageSeconds(tuning) * std::max(1.0, pieces) + ExtraStageSeconds(tuning) +
         2 * fraction * bytes / LaneBytesPerSecond(tuning) +
         fraction * bytes / tuning.intra.reduce_bytes_per_second;
}

double StagedCost(const OpArgs& args, const Tuning& tuning) {
  double staged = static_cast<double>(StagedBytes(args, tuning.size()));
  return StageSeconds(tuning) + staged / LaneBytesPerSecond(tuning);
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
