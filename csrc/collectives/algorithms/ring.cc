// Ring algorithms: allreduce as a pipelined reduce-scatter followed by a pipelined allgather,
// and the ring allgather and reduce-scatter on their own (equal or per-rank block sizes).
// Blocks are split into segments so that sending one segment overlaps reducing the previous.
#include <algorithm>
#include <cstring>
#include <functional>

#include "collectives/algorithms/registry.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr int kReceiveSlots = 4;  // segments received ahead of the reduction
constexpr uint32_t kTagReduceScatter = 1u << 20;
constexpr uint32_t kTagAllgather = 2u << 20;

int Mod(int value, int n) { return ((value % n) + n) % n; }

struct Piece {
  int step;
  int block;
  size_t offset;    // elements from the start of the block
  size_t elements;
};

// The segments of `block` in order.
void AppendPieces(std::vector<Piece>& pieces, int step, int block, size_t block_elements,
                  size_t segment_elements) {
  for (size_t offset = 0; offset < block_elements; offset += segment_elements) {
    pieces.push_back({step, block, offset, std::min(segment_elements, block_elements - offset)});
  }
}

struct Blocks {
  std::vector<size_t> counts;
  std::vector<size_t> offsets;
};

// Reduce-scatter around the ring. At step s rank r sends block (r - s + shift) and receives
// block (r - s - 1 + shift), reducing it with its own input; after n-1 steps rank r holds the
// full reduction of block (r + 1 + shift), written to `final_out` (indexed like `input`).
// Partial sums go to `accumulate` (indexed like `input`; may be `input`'s output alias).
// `on_final` runs for each finished segment of the final block.
absl::Status RingReduceScatter(OpContext& context, const char* input, char* accumulate,
                               char* final_out, const Blocks& blocks, int shift,
                               const std::function<void(const Piece&)>& on_final) {
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = context.args().element_size();
  const size_t segment = context.segment_elements();
  const int right = Mod(rank + 1, n);
  const int left = Mod(rank - 1, n);

  std::vector<Piece> pieces;
  for (int step = 0; step < n - 1; ++step) {
    int block = Mod(rank - step - 1 + shift, n);
    AppendPieces(pieces, step, block, blocks.counts[block], segment);
  }
  size_t max_piece = 0;
  for (const Piece& piece : pieces) max_piece = std::max(max_piece, piece.elements);
  char* slots = context.Scratch(kReceiveSlots * max_piece * element);

  // Step 0 sends our own input of the first block straight away.
  int first = Mod(rank + shift, n);
  std::vector<Piece> first_pieces;
  AppendPieces(first_pieces, 0, first, blocks.counts[first], segment);
  for (const Piece& piece : first_pieces) {
    context.Send(right, kTagReduceScatter,
                 input + (blocks.offsets[piece.block] + piece.offset) * element,
                 piece.elements * element);
  }
  std::vector<Request*> receives(pieces.size(), nullptr);
  auto post = [&](size_t index) {
    const Piece& piece = pieces[index];
    receives[index] = context.Recv(left, kTagReduceScatter,
                                   slots + (index % kReceiveSlots) * max_piece * element,
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
      context.Send(right, kTagReduceScatter, destination, piece.elements * element);
    } else {
      context.FinishAverage(destination, piece.elements);
      on_final(piece);
    }
  }
  return absl::OkStatus();
}

// Allgather around the ring into `output`. Rank r starts with block `own` (its data at
// `own_source`, in place or not) and at step s forwards block (own - s) and receives block
// (own - s - 1). `first_sends_done` says the caller already sent block `own` (pipelined).
absl::Status RingAllgather(OpContext& context, const char* own_source, char* output,
                           const Blocks& blocks, int own, bool first_sends_done) {
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = context.args().element_size();
  const size_t segment = context.segment_elements();
  const int right = Mod(rank + 1, n);
  const int left = Mod(rank - 1, n);

  std::vector<Piece> pieces;
  for (int step = 0; step < n - 1; ++step) {
    int block = Mod(own - step - 1, n);
    AppendPieces(pieces, step, block, blocks.counts[block], segment);
  }
  std::vector<Request*> receives;
  receives.reserve(pieces.size());
  for (const Piece& piece : pieces) {
    receives.push_back(context.Recv(
        left, kTagAllgather, output + (blocks.offsets[piece.block] + piece.offset) * element,
        piece.elements * element));
  }
  if (!first_sends_done) {
    std::vector<Piece> own_pieces;
    AppendPieces(own_pieces, 0, own, blocks.counts[own], segment);
    for (const Piece& piece : own_pieces) {
      context.Send(right, kTagAllgather, own_source + piece.offset * element,
                   piece.elements * element);
    }
  }
  for (size_t index = 0; index < pieces.size(); ++index) {
    COHORT_RETURN_IF_ERROR(context.Wait(receives[index]));
    const Piece& piece = pieces[index];
    if (piece.step < n - 2) {
      context.Send(right, kTagAllgather,
                   output + (blocks.offsets[piece.block] + piece.offset) * element,
                   piece.elements * element);
    }
  }
  return absl::OkStatus();
}

Blocks SplitEvenly(size_t count, int n) {
  Blocks blocks;
  blocks.counts.resize(n);
  for (int i = 0; i < n; ++i) {
    blocks.counts[i] = count / n + (static_cast<size_t>(i) < count % n ? 1 : 0);
  }
  blocks.offsets = BlockOffsets(blocks.counts);
  return blocks;
}

absl::Status RingAllreduce(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const size_t element = args.element_size();
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  if (n == 1) {
    if (input != output && args.count > 0) std::memcpy(output, input, args.count * element);
    context.FinishAverage(output, args.count);
    return absl::OkStatus();
  }
  Blocks blocks = SplitEvenly(args.count, n);
  const int rank = context.rank();
  const int right = Mod(rank + 1, n);
  // The final block's segments start the allgather as soon as they are reduced.
  auto forward = [&](const Piece& piece) {
    context.Send(right, kTagAllgather,
                 output + (blocks.offsets[piece.block] + piece.offset) * element,
                 piece.elements * element);
  };
  COHORT_RETURN_IF_ERROR(RingReduceScatter(context, input, output, output, blocks, 0, forward));
  int own = Mod(rank + 1, n);
  COHORT_RETURN_IF_ERROR(RingAllgather(context, output + blocks.offsets[own] * element, output,
                                       blocks, own, /*first_sends_done=*/true));
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
    COHORT_RETURN_IF_ERROR(RingAllgather(context, input, output, blocks, rank, false));
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
  COHORT_RETURN_IF_ERROR(RingReduceScatter(context, input, accumulate.data(), final_out, blocks,
                                           -1, [](const Piece&) {}));
  return context.WaitAll();
}

bool Always(const OpArgs&, int) { return true; }

}  // namespace

void RegisterRingAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(Algorithm{
      "ring",
      {OpType::kAllreduce, OpType::kAllgather, OpType::kReduceScatter},
      Always,
      [](const OpArgs& args, int n, const LinkModel& link) {
        double bytes = static_cast<double>(OpBytes(args, n));
        double steps = n - 1;
        double fraction = steps / n;
        switch (args.op) {
          case OpType::kAllreduce:
            return 2 * steps * link.latency_seconds + 2 * fraction * bytes / link.bytes_per_second +
                   fraction * bytes / link.reduce_bytes_per_second;
          case OpType::kAllgather:
            return steps * link.latency_seconds + fraction * bytes / link.bytes_per_second;
          default:
            return steps * link.latency_seconds + fraction * bytes / link.bytes_per_second +
                   fraction * bytes / link.reduce_bytes_per_second;
        }
      },
      [](OpContext& context) {
        switch (context.args().op) {
          case OpType::kAllreduce: return RingAllreduce(context);
          case OpType::kAllgather: return RingAllgatherOp(context);
          default: return RingReduceScatterOp(context);
        }
      }});
}

}  // namespace cohort
