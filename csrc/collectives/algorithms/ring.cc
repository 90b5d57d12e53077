// Ring algorithms: allreduce as a pipelined reduce-scatter followed by a pipelined allgather,
// and the ring allgather and reduce-scatter on their own (equal or per-rank block sizes).
// Blocks are split into segments so that sending one segment overlaps reducing the previous.
#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>

#include "collectives/algorithms/ring.h"

#include "collectives/algorithms/registry.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr int kReceiveSlots = 4;  // segments received ahead of the reduction
constexpr uint32_t kTagReduceScatter = 1u << 20;
constexpr uint32_t kTagAllgather = 2u << 20;

int Mod(int value, int n) { return ((value % n) + n) % n; }

// The segments of `block` in order.
void AppendPieces(std::vector<Piece>& pieces, int step, int block, size_t block_elements,
                  size_t segment_elements) {
  for (size_t offset = 0; offset < block_elements; offset += segment_elements) {
    pieces.push_back({step, block, offset, std::min(segment_elements, block_elements - offset)});
  }
}

// Every rank, each host's ranks next to each other, so that only one ring edge per host
// crosses the network.
RingGroup World(const OpContext& context) {
  RingGroup group;
  for (const std::vector<int>& host : context.topology().hosts()) {
    for (int rank : host) {
      if (rank == context.rank()) group.index = static_cast<int>(group.ranks.size());
      group.ranks.push_back(rank);
    }
  }
  return group;
}

// Per-rank blocks renumbered by ring position (block k belongs to group.ranks[k]); offsets stay
// where the ranks' data are.
Blocks InRingOrder(const Blocks& by_rank, const RingGroup& group) {
  Blocks blocks;
  for (int rank : group.ranks) {
    blocks.counts.push_back(by_rank.counts[rank]);
    blocks.offsets.push_back(by_rank.offsets[rank]);
  }
  return blocks;
}

}  // namespace

Blocks SplitEvenly(size_t count, int parts) {
  Blocks blocks;
  blocks.counts.resize(parts);
  for (int i = 0; i < parts; ++i) {
    blocks.counts[i] = count / parts + (static_cast<size_t>(i) < count % parts ? 1 : 0);
  }
  blocks.offsets = BlockOffsets(blocks.counts);
  return blocks;
}

absl::Status RingReduceScatter(OpContext& context, const RingGroup& group, const char* input,
                               char* accumulate, char* final_out, const Blocks& blocks, int shift,
                               bool finish_average,
                               const std::function<void(const Piece&)>& on_final) {
  const int n = group.size();
  const int me = group.index;
  const size_t element = context.args().element_size();
  const size_t segment = context.segment_elements();
  const int right = group.right();
  const int left = group.left();
  const uint32_t tag = group.tag_base + kTagReduceScatter;

  std::vector<Piece> pieces;
  for (int step = 0; step < n - 1; ++step) {
    int block = Mod(me - step - 1 + shift, n);
    AppendPieces(pieces, step, block, blocks.counts[block], segment);
  }
  size_t max_piece = 0;
  for (const Piece& piece : pieces) max_piece = std::max(max_piece, piece.elements);
  char* slots = context.Scratch(kReceiveSlots * max_piece * element);

  // Step 0 sends our own input of the first block straight away.
  int first = Mod(me + shift, n);
  std::vector<Piece> first_pieces;
  AppendPieces(first_pieces, 0, first, blocks.counts[first], segment);
  for (const Piece& piece : first_pieces) {
    context.Send(right, tag, input + (blocks.offsets[piece.block] + piece.offset) * element,
                 piece.elements * element);
  }
  std::vector<Request*> receives(pieces.size(), nullptr);
  auto post = [&](size_t index) {
    const Piece& piece = pieces[index];
    receives[index] = context.Recv(left, tag, slots + (index % kReceiveSlots) * max_piece * element,
                                   piece.elements * element);
  };
  for (size_t index = 0; index < std::min<size_t>(kReceiveSlots, pieces.size()); ++index) {
    post(index);
  }
  for (size_t index = 0; index < pieces.size(); ++index) {
    COHORT_RETURN_IF_ERROR(context.Wait(receives[index]));
    const Piece& piece = pieces[index];
    size_t at = (blocks.offsets[piece.block] + piece.offset) * element;
    bool last_step = piece.step == n - 2;
    char* destination = (last_step ? final_out : accumulate) + at;
    context.Reduce(destination, input + at,
                   slots + (index % kReceiveSlots) * max_piece * element, piece.elements);
    if (index + kReceiveSlots < pieces.size()) post(index + kReceiveSlots);
    if (!last_step) {
      context.Send(right, tag, destination, piece.elements * element);
    } else {
      if (finish_average) context.FinishAverage(destination, piece.elements);
      on_final(piece);
    }
  }
  return absl::OkStatus();
}

absl::Status RingAllgather(OpContext& context, const RingGroup& group, const char* own_source,
                           char* output, const Blocks& blocks, int own, bool first_sends_done) {
  const int n = group.size();
  const size_t element = context.args().element_size();
  const size_t segment = context.segment_elements();
  const int right = group.right();
  const int left = group.left();
  const uint32_t tag = group.tag_base + kTagAllgather;

  std::vector<Piece> pieces;
  for (int step = 0; step < n - 1; ++step) {
    int block = Mod(own - step - 1, n);
    AppendPieces(pieces, step, block, blocks.counts[block], segment);
  }
  std::vector<Request*> receives;
  receives.reserve(pieces.size());
  for (const Piece& piece : pieces) {
    receives.push_back(context.Recv(
        left, tag, output + (blocks.offsets[piece.block] + piece.offset) * element,
        piece.elements * element));
  }
  if (!first_sends_done) {
    std::vector<Piece> own_pieces;
    AppendPieces(own_pieces, 0, own, blocks.counts[own], segment);
    for (const Piece& piece : own_pieces) {
      context.Send(right, tag, own_source + piece.offset * element, piece.elements * element);
    }
  }
  for (size_t index = 0; index < pieces.size(); ++index) {
    COHORT_RETURN_IF_ERROR(context.Wait(receives[index]));
    const Piece& piece = pieces[index];
    if (piece.step < n - 2) {
      context.Send(right, tag, output + (blocks.offsets[piece.block] + piece.offset) * element,
                   piece.elements * element);
    }
  }
  return absl::OkStatus();
}

absl::Status RingAllreduceInPlace(OpContext& context, const RingGroup& group, const char* input,
                                  char* buffer, size_t count, bool finish_average) {
  const int n = group.size();
  const size_t element = context.args().element_size();
  if (n == 1) {
    if (input != buffer && count > 0) std::memcpy(buffer, input, count * element);
    if (finish_average) context.FinishAverage(buffer, count);
    return absl::OkStatus();
  }
  Blocks blocks = SplitEvenly(count, n);
  RingGroup gather = group;
  // The final block's segments start the allgather as soon as they are reduced.
  auto forward = [&](const Piece& piece) {
    context.Send(group.right(), group.tag_base + kTagAllgather,
                 buffer + (blocks.offsets[piece.block] + piece.offset) * element,
                 piece.elements * element);
  };
  COHORT_RETURN_IF_ERROR(RingReduceScatter(context, group, input, buffer, buffer, blocks, 0,
                                           finish_average, forward));
  int own = Mod(group.index + 1, n);
  return RingAllgather(context, gather, buffer + blocks.offsets[own] * element, buffer, blocks,
                       own, /*first_sends_done=*/true);
}

namespace {

absl::Status RingAllreduce(OpContext& context) {
  const OpArgs& args = context.args();
  COHORT_RETURN_IF_ERROR(RingAllreduceInPlace(context, World(context),
                                              static_cast<const char*>(args.input),
                                              static_cast<char*>(args.output), args.count,
                                              /*finish_average=*/true));
  return context.WaitAll();
}

absl::Status RingAllgatherOp(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  Blocks blocks;
  blocks.counts = BlockCounts(args, n);
  blocks.offsets = args.displacements.empty() ? BlockOffsets(blocks.counts) : args.displacements;
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  char* own = output + blocks.offsets[rank] * element;
  if (n > 1) {
    RingGroup group = World(context);
    COHORT_RETURN_IF_ERROR(RingAllgather(context, group, input, output, InRingOrder(blocks, group),
                                         group.index, /*first_sends_done=*/false));
  }
  if (own != input && blocks.counts[rank] > 0) {
    std::memmove(own, input, blocks.counts[rank] * element);
  }
  return context.WaitAll();
}

absl::Status RingReduceScatterOp(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  Blocks blocks;
  blocks.counts = BlockCounts(args, n);
  blocks.offsets = BlockOffsets(blocks.counts);
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  if (n == 1) {
    if (input != output && blocks.counts[0] > 0) {
      std::memmove(output, input, blocks.counts[0] * element);
    }
    context.FinishAverage(output, blocks.counts[0]);
    return absl::OkStatus();
  }
  size_t total = blocks.offsets[n - 1] + blocks.counts[n - 1];
  // Partial sums need room of their own: the input must stay untouched.
  std::vector<char> accumulate(total * element);
  // `final_out` is indexed like the input: shift the output pointer by our block's offset.
  char* final_out = output - blocks.offsets[rank] * element;
  RingGroup group = World(context);
  COHORT_RETURN_IF_ERROR(RingReduceScatter(context, group, input, accumulate.data(), final_out,
                                           InRingOrder(blocks, group), -1,
                                           /*finish_average=*/true, [](const Piece&) {}));
  return context.WaitAll();
}

bool Always(const OpArgs&, const Tuning&) { return true; }

}  // namespace

void RegisterRingAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(Algorithm{
      "ring",
      {OpType::kAllreduce, OpType::kAllgather, OpType::kReduceScatter},
      Always,
      [](const OpArgs& args, const Tuning& tuning) {
        const int n = tuning.size();
        const LinkModel& link = tuning.flat();
        double bytes = static_cast<double>(OpBytes(args, n));
        double steps = n - 1;
        double fraction = steps / n;
        switch (args.op) {
          case OpType::kAllreduce:
            return 2 * steps * link.latency_seconds + 2 * fraction * bytes / link.bytes_per_second +
                   fraction * bytes / link.reduce_bytes_per_second;
          case OpType::kAllgather:
            return steps * link.latency_seconds + fraction * bytes / link.bytes_per_second;
          case OpType::kReduceScatter:
            return steps * link.latency_seconds + fraction * bytes / link.bytes_per_second +
                   fraction * bytes / link.reduce_bytes_per_second;
          default:
            return std::numeric_limits<double>::infinity();
        }
      },
      [](OpContext& context) {
        switch (context.args().op) {
          case OpType::kAllreduce: return RingAllreduce(context);
          case OpType::kAllgather: return RingAllgatherOp(context);
          case OpType::kReduceScatter: return RingReduceScatterOp(context);
          default: return UnservedOp("ring", context.args().op);
        }
      }});
}

}  // namespace cohort
