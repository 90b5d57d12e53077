// Ring algorithms: allreduce as a pipelined reduce-scatter followed by a pipelined allgather,
// and the ring allgather and reduce-scatter on their own (equal or per-rank block sizes).
// Blocks are split into segments so that sending one segment overlaps reducing the previous.
#include <algorithm>
#include <cstring>
#include <deque>
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

// How a ring moves its pieces, edge by edge. The edge to the right neighbour carries puts into
// its memory when their channel offers a window (transport/window.h), else messages; both ends
// of an edge decide alike, since the window of a pair exists for both of its ranks or for
// neither. Over a window, reduce-scatter pieces go into the receiver's slots (kReceiveSlots of
// them, reused: a slot is put into again only after its owner signalled it consumed it, a
// credit) and allgather pieces straight to their place in the receiver's output. The k-th piece
// a rank puts is the k-th its neighbour waits for, since both walk the same schedule. Windows
// are used only where every rank has the same layout (no per-rank displacements) and the
// group's part of the operation is large enough to pay for describing the buffers (one small
// frame per edge).
constexpr int kSignalData = 0;    // a reduce-scatter piece landed in one of our slots
constexpr int kSignalCredit = 1;  // the right neighbour consumed one of its slots
constexpr int kSignalGather = 2;  // an allgather piece landed in our output
constexpr uint32_t kTagWindow = 3u << 20;
constexpr size_t kWindowMinBytes = 256 << 10;

size_t Extent(const Blocks& blocks, size_t element) {
  size_t end = 0;
  for (size_t i = 0; i < blocks.counts.size(); ++i) {
    end = std::max(end, (blocks.offsets[i] + blocks.counts[i]) * element);
  }
  return end;
}

// Elements of the largest piece any member sends: the slot stride every member agrees on.
size_t LargestPiece(const Blocks& blocks, size_t segment) {
  size_t largest = 0;
  for (size_t count : blocks.counts) largest = std::max(largest, std::min(count, segment));
  return std::max<size_t>(largest, 1);
}

class RingEdges {
 public:
  RingEdges(OpContext& context, const RingGroup& group, const Blocks& blocks)
      : context_(context), group_(group), element_(context.args().element_size()) {
    const bool windows = group.size() > 1 && context.args().displacements.empty() &&
                         Extent(blocks, element_) >= kWindowMinBytes;
    out_ = windows ? context.window(group.right()) : nullptr;
    in_ = windows ? context.window(group.left()) : nullptr;
  }

  // Receive slots for reduce-scatter pieces from the left (`slot_bytes` each) and the output
  // allgather pieces land in (nullptr: not used by this call). Over windows, the left neighbour
  // is told where they are and we learn the right neighbour's.
  absl::Status Open(char* slots, size_t slot_bytes, char* output, size_t output_bytes) {
    const uint32_t tag = group_.tag_base + kTagWindow;
    slots_ = slots;
    slot_bytes_ = slot_bytes;
    output_ = output;
    if (in_ != nullptr) {
      if (slots != nullptr) {
        COHORT_RETURN_IF_ERROR(
            context_.Expose(*in_, group_.left(), tag, slots, kReceiveSlots * slot_bytes));
      }
      if (output != nullptr) {
        COHORT_RETURN_IF_ERROR(context_.Expose(*in_, group_.left(), tag, output, output_bytes));
      }
    }
    if (out_ != nullptr) {
      if (slots != nullptr) {
        COHORT_ASSIGN_OR_RETURN(right_slots_, context_.Learn(group_.right(), tag));
      }
      if (output != nullptr) {
        COHORT_ASSIGN_OR_RETURN(right_output_, context_.Learn(group_.right(), tag));
      }
    }
    return absl::OkStatus();
  }

  // Reduce-scatter, to the right: over a window the piece goes into the neighbour's next slot
  // as soon as that slot is free (Pump); else as a message.
  absl::Status SendPiece(const char* data, size_t bytes) {
    if (out_ == nullptr) {
      context_.Send(group_.right(), group_.tag_base + kTagReduceScatter, data, bytes);
      return absl::OkStatus();
    }
    pending_.push_back({data, bytes});
    return Pump();
  }
  // Reduce-scatter, from the left: `sizes` are the bytes of the pieces to come, in order.
  void ExpectPieces(std::vector<size_t> sizes) {
    piece_sizes_ = std::move(sizes);
    if (in_ != nullptr) return;
    receives_.assign(piece_sizes_.size(), nullptr);
    for (size_t j = 0; j < std::min<size_t>(kReceiveSlots, piece_sizes_.size()); ++j) PostPiece(j);
  }
  // Until piece j is in our slot j % kReceiveSlots (our own puts keep going meanwhile).
  absl::Status WaitPiece(size_t j) {
    if (in_ == nullptr) {
      return Until([&]() -> bool { return receives_[j]->complete; }, group_.left(),
                   "a reduce-scatter piece");
    }
    const uint64_t target = in_->expected(kSignalData) + j + 1;
    return Until([&] { return in_->SignalValue(kSignalData) >= target; }, group_.left(),
                 "a reduce-scatter piece through its window");
  }
  char* Slot(size_t j) const { return slots_ + (j % kReceiveSlots) * slot_bytes_; }
  // Piece j's slot may be filled again.
  absl::Status Consumed(size_t j) {
    ++received_;
    if (in_ == nullptr) {
      if (j + kReceiveSlots < piece_sizes_.size()) PostPiece(j + kReceiveSlots);
      return absl::OkStatus();
    }
    return in_->Signal(group_.left(), kSignalCredit);
  }
  // Until every queued piece went out.
  absl::Status Drain() {
    if (pending_.empty()) return absl::OkStatus();
    return Until([&] { return pending_.empty(); }, group_.right(), "room in its window");
  }

  // Allgather, to the right: the piece at `offset` of the output.
  absl::Status SendGather(size_t offset, const char* data, size_t bytes) {
    if (out_ == nullptr) {
      context_.Send(group_.right(), group_.tag_base + kTagAllgather, data, bytes);
      return absl::OkStatus();
    }
    COHORT_RETURN_IF_ERROR(context_.Put(*out_, group_.right(), right_output_, offset, data, bytes));
    return out_->Signal(group_.right(), kSignalGather);
  }
  // Allgather, from the left: the pieces to come as (offset, bytes) in the output, in order.
  void ExpectGathers(const std::vector<std::pair<size_t, size_t>>& spans) {
    gathers_ = spans.size();
    if (in_ != nullptr) return;
    gather_receives_.clear();
    for (const auto& [offset, bytes] : spans) {
      gather_receives_.push_back(context_.Recv(group_.left(), group_.tag_base + kTagAllgather,
                                               output_ + offset, bytes));
    }
  }
  absl::Status WaitGather(size_t j) {
    if (in_ == nullptr) return context_.Wait(gather_receives_[j]);
    const uint64_t target = in_->expected(kSignalGather) + j + 1;
    return Until([&] { return in_->SignalValue(kSignalGather) >= target; }, group_.left(),
                 "an allgather piece through its window");
  }

  // The signals this call consumed, and those still to come for it (credits for our last puts),
  // are counted so that the next call waits from there.
  void Close() {
    if (in_ != nullptr) {
      in_->expected(kSignalData) += received_;
      in_->expected(kSignalGather) += gathers_;
    }
    if (out_ != nullptr) out_->expected(kSignalCredit) += sent_;
  }

 private:
  struct Pending {
    const char* data;
    size_t bytes;
  };

  void PostPiece(size_t j) {
    receives_[j] = context_.Recv(group_.left(), group_.tag_base + kTagReduceScatter, Slot(j),
                                 piece_sizes_[j]);
  }

  absl::Status Pump() {
    while (!pending_.empty()) {
      // Credits of earlier calls may still be on their way: compare, never subtract.
      if (sent_ >= kReceiveSlots && out_->SignalValue(kSignalCredit) <
                                        out_->expected(kSignalCredit) + sent_ - kReceiveSlots + 1) {
        return absl::OkStatus();  // that slot is still being read
      }
      const Pending& next = pending_.front();
      COHORT_RETURN_IF_ERROR(context_.Put(*out_, group_.right(), right_slots_,
                                          (sent_ % kReceiveSlots) * slot_bytes_, next.data,
                                          next.bytes));
      COHORT_RETURN_IF_ERROR(out_->Signal(group_.right(), kSignalData));
      ++sent_;
      pending_.pop_front();
    }
    return absl::OkStatus();
  }

  template <typename Ready>
  absl::Status Until(Ready ready, int peer, const char* what) {
    return context_.WaitUntil(
        [&]() -> absl::StatusOr<bool> {
          if (!pending_.empty()) COHORT_RETURN_IF_ERROR(Pump());
          return ready();
        },
        peer, what);
  }

  OpContext& context_;
  const RingGroup& group_;
  const size_t element_;
  Window* out_ = nullptr;  // we put into the right neighbour through it, or messages
  Window* in_ = nullptr;   // the left neighbour puts into us through it (our signal words)
  char* slots_ = nullptr;
  size_t slot_bytes_ = 0;
  char* output_ = nullptr;
  RemoteBuffer right_slots_;
  RemoteBuffer right_output_;
  std::deque<Pending> pending_;
  std::vector<size_t> piece_sizes_;
  std::vector<Request*> receives_;         // reduce-scatter pieces over messages
  std::vector<Request*> gather_receives_;  // allgather pieces over messages
  size_t sent_ = 0;      // reduce-scatter pieces put
  size_t received_ = 0;  // reduce-scatter pieces consumed
  size_t gathers_ = 0;   // allgather pieces expected
};

// The reduce-scatter schedule over `edges` (opened with receive slots).
absl::Status ReduceScatterOver(OpContext& context, const RingGroup& group, RingEdges& edges,
                               const char* input, char* accumulate, char* final_out,
                               const Blocks& blocks, int shift, bool finish_average,
                               const std::function<absl::Status(const Piece&)>& on_final) {
  const int n = group.size();
  const int me = group.index;
  const size_t element = context.args().element_size();
  const size_t segment = context.segment_elements();
  std::vector<Piece> pieces;
  for (int step = 0; step < n - 1; ++step) {
    int block = Mod(me - step - 1 + shift, n);
    AppendPieces(pieces, step, block, blocks.counts[block], segment);
  }
  std::vector<size_t> sizes;
  for (const Piece& piece : pieces) sizes.push_back(piece.elements * element);
  edges.ExpectPieces(std::move(sizes));
  // Step 0 sends our own input of the first block straight away.
  int first = Mod(me + shift, n);
  std::vector<Piece> first_pieces;
  AppendPieces(first_pieces, 0, first, blocks.counts[first], segment);
  for (const Piece& piece : first_pieces) {
    COHORT_RETURN_IF_ERROR(
        edges.SendPiece(input + (blocks.offsets[piece.block] + piece.offset) * element,
                        piece.elements * element));
  }
  for (size_t index = 0; index < pieces.size(); ++index) {
    COHORT_RETURN_IF_ERROR(edges.WaitPiece(index));
    const Piece& piece = pieces[index];
    size_t at = (blocks.offsets[piece.block] + piece.offset) * element;
    bool last_step = piece.step == n - 2;
    char* destination = (last_step ? final_out : accumulate) + at;
    context.Reduce(destination, input + at, edges.Slot(index), piece.elements);
    COHORT_RETURN_IF_ERROR(edges.Consumed(index));
    if (!last_step) {
      COHORT_RETURN_IF_ERROR(edges.SendPiece(destination, piece.elements * element));
    } else {
      if (finish_average) context.FinishAverage(destination, piece.elements);
      COHORT_RETURN_IF_ERROR(on_final(piece));
    }
  }
  return edges.Drain();
}

// The allgather schedule over `edges` (opened with the output): member starts with block `own`
// (at `own_source`, or already sent by the caller when `own_source` is nullptr) and forwards
// what arrives.
absl::Status AllgatherOver(OpContext& context, const RingGroup& group, RingEdges& edges,
                           const char* own_source, char* output, const Blocks& blocks, int own) {
  const int n = group.size();
  const size_t element = context.args().element_size();
  const size_t segment = context.segment_elements();
  std::vector<Piece> pieces;
  for (int step = 0; step < n - 1; ++step) {
    int block = Mod(own - step - 1, n);
    AppendPieces(pieces, step, block, blocks.counts[block], segment);
  }
  std::vector<std::pair<size_t, size_t>> spans;
  for (const Piece& piece : pieces) {
    spans.emplace_back((blocks.offsets[piece.block] + piece.offset) * element,
                       piece.elements * element);
  }
  edges.ExpectGathers(spans);
  if (own_source != nullptr) {
    std::vector<Piece> own_pieces;
    AppendPieces(own_pieces, 0, own, blocks.counts[own], segment);
    for (const Piece& piece : own_pieces) {
      COHORT_RETURN_IF_ERROR(edges.SendGather((blocks.offsets[own] + piece.offset) * element,
                                              own_source + piece.offset * element,
                                              piece.elements * element));
    }
  }
  for (size_t index = 0; index < pieces.size(); ++index) {
    COHORT_RETURN_IF_ERROR(edges.WaitGather(index));
    if (pieces[index].step < n - 2) {
      COHORT_RETURN_IF_ERROR(
          edges.SendGather(spans[index].first, output + spans[index].first, spans[index].second));
    }
  }
  return absl::OkStatus();
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
  const size_t element = context.args().element_size();
  const size_t slot_elements = LargestPiece(blocks, context.segment_elements());
  char* slots = context.Scratch(kReceiveSlots * slot_elements * element);
  RingEdges edges(context, group, blocks);
  COHORT_RETURN_IF_ERROR(edges.Open(slots, slot_elements * element, nullptr, 0));
  COHORT_RETURN_IF_ERROR(ReduceScatterOver(context, group, edges, input, accumulate, final_out,
                                           blocks, shift, finish_average,
                                           [&](const Piece& piece) {
                                             on_final(piece);
                                             return absl::OkStatus();
                                           }));
  edges.Close();
  return absl::OkStatus();
}

absl::Status RingAllgather(OpContext& context, const RingGroup& group, const char* own_source,
                           char* output, const Blocks& blocks, int own, bool first_sends_done) {
  // Pieces the caller sent already went as messages: so must the rest of this call.
  RingEdges edges(context, group, first_sends_done ? Blocks{} : blocks);
  COHORT_RETURN_IF_ERROR(edges.Open(nullptr, 0, output, Extent(blocks, context.args().element_size())));
  COHORT_RETURN_IF_ERROR(AllgatherOver(context, group, edges,
                                       first_sends_done ? nullptr : own_source, output, blocks,
                                       own));
  edges.Close();
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
  const size_t slot_elements = LargestPiece(blocks, context.segment_elements());
  char* slots = context.Scratch(kReceiveSlots * slot_elements * element);
  RingEdges edges(context, group, blocks);
  COHORT_RETURN_IF_ERROR(
      edges.Open(slots, slot_elements * element, buffer, Extent(blocks, element)));
  // The final block's segments start the allgather as soon as they are reduced.
  auto forward = [&](const Piece& piece) {
    size_t at = (blocks.offsets[piece.block] + piece.offset) * element;
    return edges.SendGather(at, buffer + at, piece.elements * element);
  };
  COHORT_RETURN_IF_ERROR(ReduceScatterOver(context, group, edges, input, buffer, buffer, blocks, 0,
                                           finish_average, forward));
  COHORT_RETURN_IF_ERROR(
      AllgatherOver(context, group, edges, nullptr, buffer, blocks, Mod(group.index + 1, n)));
  edges.Close();
  return absl::OkStatus();
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
