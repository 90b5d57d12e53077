// Hierarchical allreduce across hosts: a reduce-scatter among the ranks of each host (shared
// memory), then one allreduce per local rank across hosts, all in parallel (one "rail" per local
// rank, each moving 1/m of the data), then an allgather inside each host. Every host sends S
// bytes over its network link, against 2(n-1)/n S for a flat ring. Large buffers go in chunks,
// pipelined: while one chunk crosses the network, the next is reduced inside the host.
#include <algorithm>
#include <cstring>
#include <deque>
#include <memory>

#include "collectives/algorithms/registry.h"
#include "collectives/algorithms/ring.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagHostGroup = 3u << 24;
constexpr uint32_t kTagRail = 4u << 24;
constexpr uint32_t kTagChunkStride = 1u << 16;  // chunks' frames never match each other
constexpr size_t kMinChunkBytes = 4 << 20;
constexpr int kMaxChunks = 8;
constexpr int kDepth = 1;  // chunks whose rails may be in flight while the next is reduced

// A ring allreduce in place over the rail that advances only when polled, so that the host's
// own work can run while its data cross the network. Segments pipeline as in the ring.
class RailAllreduce {
 public:
  RailAllreduce(OpContext& context, const RingGroup& rail, char* buffer, size_t count)
      : context_(context), rail_(rail), buffer_(buffer) {
    const int n = rail.size();
    const size_t element = context.args().element_size();
    blocks_ = SplitEvenly(count, n);
    const size_t segment = context.segment_elements();
    auto append = [&](std::vector<Piece>& pieces, int step, int block) {
      for (size_t offset = 0; offset < blocks_.counts[block]; offset += segment) {
        pieces.push_back({step, block, offset, std::min(segment, blocks_.counts[block] - offset)});
      }
    };
    for (int step = 0; step < n - 1; ++step) {
      append(reduce_pieces_, step, Mod(rail.index - step - 1, n));
      append(gather_pieces_, step, Mod(rail.index - step, n));  // received at gather step
    }
    size_t slot_bytes = 0;
    for (const Piece& piece : reduce_pieces_) slot_bytes += piece.elements * element;
    incoming_.resize(slot_bytes + 1);
    // Everything is posted now; the data land in `incoming_` (partial sums) or in place.
    size_t at = 0;
    for (const Piece& piece : reduce_pieces_) {
      reduce_receives_.push_back(context.Recv(rail.left(), rail.tag_base + 1,
                                              incoming_.data() + at, piece.elements * element));
      reduce_at_.push_back(at);
      at += piece.elements * element;
    }
    for (const Piece& piece : gather_pieces_) {
      gather_receives_.push_back(context.Recv(rail.left(), rail.tag_base + 2, Where(piece),
                                              piece.elements * element));
    }
    std::vector<Piece> first;
    append(first, 0, Mod(rail.index, n));
    for (const Piece& piece : first) {
      context.Send(rail.right(), rail.tag_base + 1, Where(piece), piece.elements * element);
    }
  }

  // Advances as far as arrived data allow; true when this rank's part is done.
  bool Poll() {
    const int n = rail_.size();
    const size_t element = context_.args().element_size();
    while (next_reduce_ < reduce_pieces_.size() && reduce_receives_[next_reduce_]->complete) {
      const Piece& piece = reduce_pieces_[next_reduce_];
      char* target = Where(piece);
      context_.Reduce(target, target, incoming_.data() + reduce_at_[next_reduce_], piece.elements);
      if (piece.step < n - 2) {
        context_.Send(rail_.right(), rail_.tag_base + 1, target, piece.elements * element);
      } else {
        context_.FinishAverage(target, piece.elements);
        context_.Send(rail_.right(), rail_.tag_base + 2, target, piece.elements * element);
      }
      ++next_reduce_;
    }
    while (next_gather_ < gather_pieces_.size() && gather_receives_[next_gather_]->complete) {
      const Piece& piece = gather_pieces_[next_gather_];
      if (piece.step < n - 2) {
        context_.Send(rail_.right(), rail_.tag_base + 2, Where(piece), piece.elements * element);
      }
      ++next_gather_;
    }
    return next_reduce_ == reduce_pieces_.size() && next_gather_ == gather_pieces_.size();
  }

 private:
  static int Mod(int value, int n) { return ((value % n) + n) % n; }
  char* Where(const Piece& piece) const {
    return buffer_ + (blocks_.offsets[piece.block] + piece.offset) * context_.args().element_size();
  }

  OpContext& context_;
  RingGroup rail_;
  char* buffer_;
  Blocks blocks_;
  std::vector<Piece> reduce_pieces_;
  std::vector<Piece> gather_pieces_;
  std::vector<Request*> reduce_receives_;
  std::vector<Request*> gather_receives_;
  std::vector<size_t> reduce_at_;
  std::vector<char> incoming_;
  size_t next_reduce_ = 0;
  size_t next_gather_ = 0;
};

bool Applies(const OpArgs&, const Tuning& tuning) {
  return tuning.multi_host() && tuning.topology->Uniform() &&
         tuning.topology->hosts()[0].size() > 1;
}

double Cost(const OpArgs& args, const Tuning& tuning) {
  const auto& hosts = tuning.topology->hosts();
  double m = static_cast<double>(hosts[0].size());
  double h = static_cast<double>(hosts.size());
  double bytes = static_cast<double>(OpBytes(args, tuning.size()));
  const LinkModel& intra = tuning.intra;
  const LinkModel& inter = tuning.inter;
  double inside = 2 * (m - 1) * intra.latency_seconds +
                  2 * (m - 1) / m * bytes / intra.bytes_per_second +
                  (m - 1) / m * bytes / intra.reduce_bytes_per_second;
  // The m rails share the host's link: together they move 2(h-1)/h S through it.
  double across = 2 * (h - 1) * inter.latency_seconds +
                  2 * (h - 1) / h * bytes / inter.bytes_per_second +
                  (h - 1) / h * bytes / m / inter.reduce_bytes_per_second;
  return inside + across;
}

absl::Status HierarchicalAllreduce(OpContext& context) {
  const OpArgs& args = context.args();
  const Topology& topology = context.topology();
  const RankPlace& place = topology.place(context.rank());
  const size_t element = args.element_size();
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  const std::vector<int>& host = topology.hosts()[place.host];
  const int m = static_cast<int>(host.size());
  const int own = place.local_rank;

  // Chunks of at least kMinChunkBytes, at most kMaxChunks of them.
  size_t bytes = args.count * element;
  int chunks = static_cast<int>(std::clamp<size_t>(bytes / kMinChunkBytes, 1, kMaxChunks));
  Blocks chunk_blocks = SplitEvenly(args.count, chunks);

  struct InFlight {
    int chunk;
    Blocks blocks;
    std::unique_ptr<RailAllreduce> rail;
  };
  std::deque<InFlight> in_flight;
  auto host_group = [&](int chunk) {
    RingGroup group;
    group.ranks = host;
    group.index = own;
    group.tag_base = kTagHostGroup + static_cast<uint32_t>(chunk) * kTagChunkStride;
    return group;
  };
  // 3. Inside the host: every block of a chunk whose rails are done goes to every local rank.
  auto finish = [&](InFlight& flight) -> absl::Status {
    char* base = output + chunk_blocks.offsets[flight.chunk] * element;
    return RingAllgather(context, host_group(flight.chunk),
                         base + flight.blocks.offsets[own] * element, base, flight.blocks, own,
                         /*first_sends_done=*/false);
  };
  // Every local rank must run its host-group steps in the same order (they wait for each
  // other), whatever the network does: chunk c's allgather always follows chunk c+kDepth's
  // reduce-scatter, after waiting for chunk c's rails.
  auto finish_oldest = [&]() -> absl::Status {
    InFlight& oldest = in_flight.front();
    while (!oldest.rail->Poll()) {
      for (InFlight& flight : in_flight) flight.rail->Poll();
      COHORT_RETURN_IF_ERROR(context.ProgressOnce());
    }
    COHORT_RETURN_IF_ERROR(finish(oldest));
    in_flight.pop_front();
    return absl::OkStatus();
  };
  for (int chunk = 0; chunk < chunks; ++chunk) {
    size_t offset = chunk_blocks.offsets[chunk] * element;
    Blocks blocks = SplitEvenly(chunk_blocks.counts[chunk], m);
    // 1. Inside the host: local rank i ends with block i of this chunk reduced over the host.
    COHORT_RETURN_IF_ERROR(RingReduceScatter(context, host_group(chunk), input + offset,
                                             output + offset, output + offset, blocks, -1,
                                             /*finish_average=*/false, [](const Piece&) {}));
    // 2. Across hosts, one rail per local rank, in flight while the next chunk is reduced.
    RingGroup rail;
    for (const std::vector<int>& other : topology.hosts()) rail.ranks.push_back(other[own]);
    rail.index = place.host;
    rail.tag_base = kTagRail + static_cast<uint32_t>(chunk) * kTagChunkStride;
    char* own_block = output + offset + blocks.offsets[own] * element;
    in_flight.push_back({chunk, blocks,
                         std::make_unique<RailAllreduce>(context, rail, own_block,
                                                         blocks.counts[own])});
    if (static_cast<int>(in_flight.size()) > kDepth) COHORT_RETURN_IF_ERROR(finish_oldest());
  }
  while (!in_flight.empty()) COHORT_RETURN_IF_ERROR(finish_oldest());
  return context.WaitAll();
}

}  // namespace

void RegisterHierarchicalAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(
      Algorithm{"hierarchical", {OpType::kAllreduce}, Applies, Cost, HierarchicalAllreduce});
}

}  // namespace cohort
