// Hierarchical allreduce across hosts: a reduce-scatter among the ranks of each host (shared
// memory), then one allreduce per local rank across hosts, all in parallel (one "rail" per local
// rank, each moving 1/m of the data), then an allgather inside each host. Every host sends S
// bytes over its network link, against 2(n-1)/n S for a flat ring. Large buffers go in chunks,
// pipelined: while one chunk crosses the network, the next is reduced inside the host.
// Allgather, reduce_scatter and broadcast use the same hierarchy (see below).
#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>

#include "collectives/algorithms/registry.h"
#include "collectives/algorithms/ring.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagHostGroup = 3u << 24;
constexpr uint32_t kTagRail = 4u << 24;
constexpr uint32_t kTagRelay = 5u << 24;
constexpr uint32_t kTagChunkStride = 1u << 16;  // chunks' frames never match each other
constexpr size_t kMinChunkBytes = 4 << 20;
constexpr int kMaxChunks = 8;
constexpr int kDepth = 1;  // chunks whose rails may be in flight while the next is reduced
constexpr size_t kWindowMinBytes = 256 << 10;  // a rail's bytes from which it uses windows

// A ring allreduce in place over the rail that advances only when polled, so that the host's
// own work can run while its data cross the network. Segments pipeline as in the ring. Every
// receive's place is known at the start: partial sums land in `incoming_` (one place per piece,
// no reuse), allgather pieces in place. Where both neighbours' channels offer a window
// (transport/window.h) and the rail moves enough bytes, pieces are put straight into those
// places in the right neighbour's memory and signalled (two signal words per rail; rails of
// consecutive chunks alternate between two pairs, since two can be in flight), else sent as
// messages into receives posted at once.
class RailAllreduce {
 public:
  static constexpr int kFirstSignal = 3;  // ring.cc uses 0-2

  RailAllreduce(OpContext& context, const RingGroup& rail, char* buffer, size_t count,
                int parity)
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
    for (const Piece& piece : reduce_pieces_) {
      reduce_at_.push_back(slot_bytes);
      slot_bytes += piece.elements * element;
    }
    incoming_ = std::make_unique_for_overwrite<char[]>(slot_bytes + 1);
    data_signal_ = kFirstSignal + 2 * parity;
    gather_signal_ = data_signal_ + 1;
    if (count * element >= kWindowMinBytes && n > 1) {
      in_ = context.window(rail.left());
      out_ = context.window(rail.right());
      if (in_ == nullptr || out_ == nullptr) in_ = out_ = nullptr;
    }
    if (in_ != nullptr) {
      absl::Status exposed = context.Expose(*in_, rail.left(), rail.tag_base + 3,
                                            incoming_.get(), slot_bytes + 1);
      if (exposed.ok()) {
        exposed = context.Expose(*in_, rail.left(), rail.tag_base + 3, buffer, count * element);
      }
      if (!exposed.ok()) status_ = exposed;
      learn_slots_ = context.PostLearn(rail.right(), rail.tag_base + 3);
      learn_output_ = context.PostLearn(rail.right(), rail.tag_base + 3);
      data_base_ = in_->expected(data_signal_);
      gather_base_ = in_->expected(gather_signal_);
    } else {
      // Everything is posted now; the data land in `incoming_` (partial sums) or in place.
      for (size_t j = 0; j < reduce_pieces_.size(); ++j) {
        reduce_receives_.push_back(context.Recv(rail.left(), rail.tag_base + 1,
                                                incoming_.get() + reduce_at_[j],
                                                reduce_pieces_[j].elements * element));
      }
      for (const Piece& piece : gather_pieces_) {
        gather_receives_.push_back(
            context.Recv(rail.left(), rail.tag_base + 2, Where(piece), piece.elements * element));
      }
    }
    std::vector<Piece> first;
    append(first, 0, Mod(rail.index, n));
    for (const Piece& piece : first) SendReduce(Where(piece), piece.elements * element);
  }

  // Advances as far as arrived data allow; true when this rank's part is done (or it failed:
  // see status()).
  bool Poll() {
    if (!status_.ok()) return true;
    const int n = rail_.size();
    const size_t element = context_.args().element_size();
    Flush();
    while (next_reduce_ < reduce_pieces_.size() && Arrived(next_reduce_, true)) {
      const Piece& piece = reduce_pieces_[next_reduce_];
      char* target = Where(piece);
      context_.Reduce(target, target, incoming_.get() + reduce_at_[next_reduce_], piece.elements);
      if (piece.step < n - 2) {
        SendReduce(target, piece.elements * element);
      } else {
        context_.FinishAverage(target, piece.elements);
        SendGather(target, piece.elements * element);
      }
      ++next_reduce_;
    }
    while (next_gather_ < gather_pieces_.size() && Arrived(next_gather_, false)) {
      const Piece& piece = gather_pieces_[next_gather_];
      if (piece.step < n - 2) SendGather(Where(piece), piece.elements * element);
      ++next_gather_;
    }
    Flush();
    bool done = next_reduce_ == reduce_pieces_.size() &&
                next_gather_ == gather_pieces_.size() && queued_.empty();
    if (done && in_ != nullptr && !closed_) {
      in_->expected(data_signal_) += reduce_pieces_.size();
      in_->expected(gather_signal_) += gather_pieces_.size();
      closed_ = true;
    }
    return done || !status_.ok();
  }
  const absl::Status& status() const { return status_; }

 private:
  struct Queued {
    bool reduce;
    const char* data;
    size_t bytes;
  };

  static int Mod(int value, int n) { return ((value % n) + n) % n; }
  char* Where(const Piece& piece) const {
    return buffer_ + (blocks_.offsets[piece.block] + piece.offset) * context_.args().element_size();
  }
  bool Arrived(size_t j, bool reduce) const {
    if (in_ == nullptr) return (reduce ? reduce_receives_[j] : gather_receives_[j])->complete;
    return in_->SignalValue(reduce ? data_signal_ : gather_signal_) >=
           (reduce ? data_base_ : gather_base_) + j + 1;
  }
  void SendReduce(const char* data, size_t bytes) {
    if (out_ == nullptr) {
      context_.Send(rail_.right(), rail_.tag_base + 1, data, bytes);
    } else {
      queued_.push_back({true, data, bytes});
    }
  }
  void SendGather(const char* data, size_t bytes) {
    if (out_ == nullptr) {
      context_.Send(rail_.right(), rail_.tag_base + 2, data, bytes);
    } else {
      queued_.push_back({false, data, bytes});
    }
  }
  // Puts what is queued once the right neighbour's places are known: the k-th partial sum at
  // the k-th place of its `incoming_` (pieces of equal sizes in the same order on both ends),
  // allgather pieces at their place in its buffer.
  void Flush() {
    if (out_ == nullptr || queued_.empty() || !status_.ok()) return;
    if (!right_known_) {
      if (!learn_slots_.request->complete || !learn_output_.request->complete) return;
      auto slots = context_.Learned(learn_slots_);
      auto output = context_.Learned(learn_output_);
      if (!slots.ok() || !output.ok()) {
        status_ = slots.ok() ? output.status() : slots.status();
        return;
      }
      right_slots_ = *slots;
      right_output_ = *output;
      right_known_ = true;
    }
    for (const Queued& next : queued_) {
      absl::Status status;
      if (next.reduce) {
        status = context_.Put(*out_, rail_.right(), right_slots_, put_reduce_at_, next.data,
                              next.bytes);
        put_reduce_at_ += next.bytes;
        if (status.ok()) status = out_->Signal(rail_.right(), data_signal_);
      } else {
        status = context_.Put(*out_, rail_.right(), right_output_,
                              static_cast<size_t>(next.data - buffer_), next.data, next.bytes);
        if (status.ok()) status = out_->Signal(rail_.right(), gather_signal_);
      }
      if (!status.ok()) {
        status_ = status;
        return;
      }
    }
    queued_.clear();
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
  std::unique_ptr<char[]> incoming_;
  size_t next_reduce_ = 0;
  size_t next_gather_ = 0;
  // The window path.
  Window* in_ = nullptr;
  Window* out_ = nullptr;
  int data_signal_ = 0;
  int gather_signal_ = 0;
  uint64_t data_base_ = 0;
  uint64_t gather_base_ = 0;
  OpContext::PendingLearn learn_slots_;
  OpContext::PendingLearn learn_output_;
  bool right_known_ = false;
  RemoteBuffer right_slots_;
  RemoteBuffer right_output_;
  size_t put_reduce_at_ = 0;
  std::vector<Queued> queued_;
  bool closed_ = false;
  absl::Status status_;
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
    COHORT_RETURN_IF_ERROR(oldest.rail->status());
    COHORT_RETURN_IF_ERROR(finish(oldest));
    in_flight.pop_front();
    return absl::OkStatus();
  };
  for (int chunk = 0; chunk < chunks; ++chunk) {
    size_t offset = chunk_blocks.offsets[chunk] * element;
    Blocks blocks = SplitEvenly(chunk_blocks.counts[chunk], m);
    // 1. Inside the host: local rank i ends with block i of this chunk reduced over the host.
    // The rails in flight advance between its segments (a ring step waits on the host's peers;
    // a rail left alone would idle the network once its queued frames are out).
    COHORT_RETURN_IF_ERROR(RingReduceScatter(context, host_group(chunk), input + offset,
                                             output + offset, output + offset, blocks, -1,
                                             /*finish_average=*/false, [&](const Piece&) {
                                               for (InFlight& flight : in_flight)
                                                 flight.rail->Poll();
                                             }));
    // 2. Across hosts, one rail per local rank, in flight while the next chunk is reduced.
    RingGroup rail;
    for (const std::vector<int>& other : topology.hosts()) rail.ranks.push_back(other[own]);
    rail.index = place.host;
    rail.tag_base = kTagRail + static_cast<uint32_t>(chunk) * kTagChunkStride;
    char* own_block = output + offset + blocks.offsets[own] * element;
    in_flight.push_back(
        {chunk, blocks,
         std::make_unique<RailAllreduce>(context, rail, own_block, blocks.counts[own],
                                         chunk % 2)});
    if (static_cast<int>(in_flight.size()) > kDepth) COHORT_RETURN_IF_ERROR(finish_oldest());
  }
  while (!in_flight.empty()) COHORT_RETURN_IF_ERROR(finish_oldest());
  return context.WaitAll();
}

// ---------------------------------------------------------------------------------------------
// The same hierarchy for allgather, reduce_scatter and broadcast (equal blocks per rank). Rank
// (host k, local rank j) works on rail j, the j-th rank of every host. Per-rank blocks stay
// where the ranks' data are, so any host layout works, contiguous or not. Work is cut into
// chunks; the rail's frames are posted at once and advanced when polled, between the host-group
// steps, which every local rank of a host runs in the same order.

// The ranks of `host_index` as a ring; this rank is member `local`.
RingGroup HostGroup(const Topology& topology, int host_index, int local, uint32_t tag_base) {
  RingGroup group;
  group.ranks = topology.hosts()[host_index];
  group.index = local;
  group.tag_base = tag_base;
  return group;
}

// The `local`-th rank of every host, in host order; this rank is member `host_index`.
RingGroup RailOf(const Topology& topology, int host_index, int local, uint32_t tag_base) {
  RingGroup rail;
  for (const std::vector<int>& other : topology.hosts()) rail.ranks.push_back(other[local]);
  rail.index = host_index;
  rail.tag_base = tag_base;
  return rail;
}

int Wrap(int value, int n) { return ((value % n) + n) % n; }

// Chunks of an op moving `total_bytes` in all, per-rank blocks of `count` elements cut alike.
Blocks ChunksOf(size_t count, size_t total_bytes) {
  int chunks = static_cast<int>(std::clamp<size_t>(total_bytes / kMinChunkBytes, 1, kMaxChunks));
  return SplitEvenly(count, chunks);
}

// Host-group steps come in a fixed order; their tags cycle (a step's frames are all received
// before the next step starts, so only neighbours need distinct tags).
uint32_t HostStepTag(int step) {
  return kTagHostGroup + static_cast<uint32_t>(step % 64) * kTagChunkStride;
}

// A span of elements, `chunk` it belongs to, and where it sits (in elements).
struct Span {
  int step;
  int chunk;
  size_t offset;
  size_t elements;
};

void AppendSpans(std::vector<Span>& spans, int step, int chunk, size_t offset, size_t elements,
                 size_t segment) {
  for (size_t at = 0; at < elements; at += segment) {
    spans.push_back({step, chunk, offset + at, std::min(segment, elements - at)});
  }
}

// Ring allgather along the rail of every rank's whole block (all chunks, segment by segment):
// member k starts with its own block and at step s receives the block of host k-s-1 from the
// left, forwarding it unless it is the last.
class RailAllgather {
 public:
  RailAllgather(OpContext& context, const RingGroup& rail, int local, char* output, size_t count,
                const Blocks& chunks)
      : context_(context), rail_(rail) {
    const Topology& topology = context.topology();
    const size_t element = context.args().element_size();
    const size_t segment = context.segment_elements();
    const int h = rail.size();
    auto block = [&](int host, int chunk) {
      return static_cast<size_t>(topology.hosts()[host][local]) * count + chunks.offsets[chunk];
    };
    for (int step = 0; step < h - 1; ++step) {
      int source = Wrap(rail.index - step - 1, h);
      for (int chunk = 0; chunk < static_cast<int>(chunks.counts.size()); ++chunk) {
        AppendSpans(spans_, step, chunk, block(source, chunk), chunks.counts[chunk], segment);
      }
    }
    for (const Span& span : spans_) {
      receives_.push_back(context.Recv(rail.left(), rail.tag_base, output + span.offset * element,
                                       span.elements * element));
    }
    std::vector<Span> own;
    for (int chunk = 0; chunk < static_cast<int>(chunks.counts.size()); ++chunk) {
      AppendSpans(own, 0, chunk, block(rail.index, chunk), chunks.counts[chunk], segment);
    }
    for (const Span& span : own) {
      context.Send(rail.right(), rail.tag_base, output + span.offset * element,
                   span.elements * element);
    }
    output_ = output;
  }

  // Forwards what arrived; true once every span of (step, chunk) is in.
  bool Poll(int step, int chunk) {
    const size_t element = context_.args().element_size();
    while (next_ < spans_.size() && receives_[next_]->complete) {
      const Span& span = spans_[next_];
      if (span.step < rail_.size() - 2) {
        context_.Send(rail_.right(), rail_.tag_base, output_ + span.offset * element,
                      span.elements * element);
      }
      ++next_;
    }
    if (next_ == spans_.size()) return true;
    const Span& pending = spans_[next_];
    return pending.step > step || (pending.step == step && pending.chunk > chunk);
  }

 private:
  OpContext& context_;
  RingGroup rail_;
  char* output_ = nullptr;
  std::vector<Span> spans_;
  std::vector<Request*> receives_;
  size_t next_ = 0;
};

absl::Status HierarchicalAllgather(OpContext& context) {
  const OpArgs& args = context.args();
  const Topology& topology = context.topology();
  const RankPlace& place = topology.place(context.rank());
  const size_t element = args.element_size();
  const size_t count = args.count;
  const int h = static_cast<int>(topology.hosts().size());
  const int local = place.local_rank;
  char* output = static_cast<char*>(args.output);
  char* own = output + static_cast<size_t>(context.rank()) * count * element;
  if (own != args.input && count > 0) std::memmove(own, args.input, count * element);
  Blocks chunks = ChunksOf(count, count * element * static_cast<size_t>(context.size()));
  const int chunk_count = static_cast<int>(chunks.counts.size());

  // 1. Across hosts: every rank's block along its rail, in flight during the host steps.
  RailAllgather rail(context, RailOf(topology, place.host, local, kTagRail + 8), local, output,
                     count, chunks);
  // 2. Inside the host: the blocks of one host's ranks (the own host's first, then as the rail
  // brings them), chunk by chunk, from local rank i to all.
  int host_step = 0;
  for (int step = -1; step < h - 1; ++step) {
    int source = Wrap(place.host - step - 1, h);
    for (int chunk = 0; chunk < chunk_count; ++chunk) {
      if (step >= 0) {
        while (!rail.Poll(step, chunk)) COHORT_RETURN_IF_ERROR(context.ProgressOnce());
      }
      Blocks blocks;
      for (int rank : topology.hosts()[source]) {
        blocks.counts.push_back(chunks.counts[chunk]);
        blocks.offsets.push_back(static_cast<size_t>(rank) * count + chunks.offsets[chunk]);
      }
      COHORT_RETURN_IF_ERROR(
          RingAllgather(context, HostGroup(topology, place.host, local, HostStepTag(host_step++)),
                        output + blocks.offsets[local] * element, output, blocks, local,
                        /*first_sends_done=*/false));
      rail.Poll(step, chunk);
    }
  }
  while (!rail.Poll(h, 0)) COHORT_RETURN_IF_ERROR(context.ProgressOnce());
  return context.WaitAll();
}

// Ring reduce-scatter along the rail over host-reduced partial sums: member k sends the partial
// for host k-1 first and at step s receives the one for host k-s-2, adds its own and passes it
// on; at the last step that is its own host's block, which is final. A partial may go out only
// once the host step that made it is done (`Poll(steps_done)`).
class RailReduceScatter {
 public:
  // `partial` holds this rank's host-reduced blocks, indexed like the input (filled host step by
  // host step; UnitOf says which step fills what a rail step needs); `output` is this rank's.
  RailReduceScatter(OpContext& context, const RingGroup& rail, int local, char* partial,
                    char* output, size_t count, const Blocks& chunks)
      : context_(context), rail_(rail), partial_(partial), output_(output) {
    const Topology& topology = context.topology();
    const size_t element = context.args().element_size();
    const size_t segment = context.segment_elements();
    const int h = rail.size();
    own_offset_ = static_cast<size_t>(context.rank()) * count;
    chunk_count_ = static_cast<int>(chunks.counts.size());
    auto block = [&](int host, int chunk) {
      return static_cast<size_t>(topology.hosts()[host][local]) * count + chunks.offsets[chunk];
    };
    for (int chunk = 0; chunk < chunk_count_; ++chunk) {
      AppendSpans(first_, 0, chunk, block(Wrap(rail.index - 1, h), chunk), chunks.counts[chunk],
                  segment);
    }
    for (int step = 0; step < h - 1; ++step) {
      int target = Wrap(rail.index - step - 2, h);
      for (int chunk = 0; chunk < chunk_count_; ++chunk) {
        AppendSpans(spans_, step, chunk, block(target, chunk), chunks.counts[chunk], segment);
      }
    }
    size_t bytes = 0;
    for (const Span& span : spans_) bytes += span.elements * element;
    incoming_ = std::make_unique_for_overwrite<char[]>(bytes + 1);
    size_t at = 0;
    for (const Span& span : spans_) {
      receives_.push_back(
          context.Recv(rail.left(), rail.tag_base, incoming_.get() + at, span.elements * element));
      at_.push_back(at);
      at += span.elements * element;
    }
  }

  // Host steps run in this order: for host k-1, k-2, ..., k (own last), every chunk. Step s of
  // the rail needs the one for host k-s-2.
  int UnitOf(int step, int chunk) const { return (step + 1) * chunk_count_ + chunk; }

  // Advances as far as arrived data and `units_done` host steps allow; true when done.
  bool Poll(int units_done) {
    const int h = rail_.size();
    const size_t element = context_.args().element_size();
    while (next_first_ < first_.size() && first_[next_first_].chunk < units_done) {
      const Span& span = first_[next_first_++];
      context_.Send(rail_.right(), rail_.tag_base, partial_ + span.offset * element,
                    span.elements * element);
    }
    while (next_ < spans_.size() && receives_[next_]->complete &&
           UnitOf(spans_[next_].step, spans_[next_].chunk) < units_done) {
      const Span& span = spans_[next_];
      const char* incoming = incoming_.get() + at_[next_];
      if (span.step < h - 2) {
        char* target = partial_ + span.offset * element;
        context_.Reduce(target, target, incoming, span.elements);
        context_.Send(rail_.right(), rail_.tag_base, target, span.elements * element);
      } else {
        char* target = output_ + (span.offset - own_offset_) * element;
        context_.Reduce(target, partial_ + span.offset * element, incoming, span.elements);
        context_.FinishAverage(target, span.elements);
      }
      ++next_;
    }
    return next_first_ == first_.size() && next_ == spans_.size();
  }

 private:
  OpContext& context_;
  RingGroup rail_;
  char* partial_;
  char* output_;
  size_t own_offset_ = 0;
  int chunk_count_ = 1;
  std::vector<Span> first_;
  std::vector<Span> spans_;
  std::vector<Request*> receives_;
  std::vector<size_t> at_;
  std::unique_ptr<char[]> incoming_;
  size_t next_first_ = 0;
  size_t next_ = 0;
};

absl::Status HierarchicalReduceScatter(OpContext& context) {
  const OpArgs& args = context.args();
  const Topology& topology = context.topology();
  const RankPlace& place = topology.place(context.rank());
  const size_t element = args.element_size();
  const size_t count = args.count;
  const int h = static_cast<int>(topology.hosts().size());
  const int local = place.local_rank;
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  const size_t total = count * static_cast<size_t>(context.size());
  Blocks chunks = ChunksOf(count, total * element);
  const int chunk_count = static_cast<int>(chunks.counts.size());
  // Host partial sums, indexed like the input (the input stays untouched; the output may be in
  // it, and is written last).
  auto partial = std::make_unique_for_overwrite<char[]>(total * element + 1);

  RailReduceScatter rail(context, RailOf(topology, place.host, local, kTagRail + 7), local,
                         partial.get(), output, count, chunks);
  // 1. Inside the host, in the order the rail consumes them: the blocks headed for host k-1,
  // k-2, ..., then this host's own; local rank i ends with rank (host, i)'s block summed over
  // the host. 2. The rail sums them across hosts as they come.
  int units_done = 0;
  for (int step = -1; step < h - 1; ++step) {
    int target = Wrap(place.host - step - 2, h);
    for (int chunk = 0; chunk < chunk_count; ++chunk) {
      Blocks blocks;
      for (int rank : topology.hosts()[target]) {
        blocks.counts.push_back(chunks.counts[chunk]);
        blocks.offsets.push_back(static_cast<size_t>(rank) * count + chunks.offsets[chunk]);
      }
      COHORT_RETURN_IF_ERROR(RingReduceScatter(
          context, HostGroup(topology, place.host, local, HostStepTag(units_done)), input,
          partial.get(), partial.get(), blocks, -1, /*finish_average=*/false,
          [&](const Piece&) { rail.Poll(units_done); }));
      rail.Poll(++units_done);
    }
  }
  while (!rail.Poll(units_done)) COHORT_RETURN_IF_ERROR(context.ProgressOnce());
  return context.WaitAll();
}

// Broadcast: the root hands piece j of every chunk to local rank j of its host; rail j carries
// it host to host along a chain from the root's host; every host then allgathers its pieces,
// chunk by chunk, while later chunks still cross the network.
class Relay {
 public:
  Relay(OpContext& context, char* buffer, std::vector<Span> spans, int upstream,
        uint32_t upstream_tag, int downstream, uint32_t downstream_tag)
      : context_(context),
        buffer_(buffer),
        spans_(std::move(spans)),
        downstream_(downstream),
        downstream_tag_(downstream_tag) {
    const size_t element = context.args().element_size();
    if (upstream < 0) return;
    for (const Span& span : spans_) {
      receives_.push_back(context.Recv(upstream, upstream_tag, buffer + span.offset * element,
                                       span.elements * element));
    }
  }

  // Passes on what arrived; true once every span of `chunk` (and before) is in.
  bool Poll(int chunk) {
    const size_t element = context_.args().element_size();
    while (next_ < spans_.size() && (receives_.empty() || receives_[next_]->complete)) {
      const Span& span = spans_[next_];
      if (downstream_ >= 0) {
        context_.Send(downstream_, downstream_tag_, buffer_ + span.offset * element,
                      span.elements * element);
      }
      ++next_;
    }
    return next_ == spans_.size() || spans_[next_].chunk > chunk;
  }

 private:
  OpContext& context_;
  char* buffer_;
  std::vector<Span> spans_;
  std::vector<Request*> receives_;
  size_t next_ = 0;
  int downstream_;
  uint32_t downstream_tag_;
};

absl::Status HierarchicalBroadcast(OpContext& context) {
  const OpArgs& args = context.args();
  const Topology& topology = context.topology();
  const RankPlace& place = topology.place(context.rank());
  const RankPlace& root_place = topology.place(args.root);
  const size_t element = args.element_size();
  const int h = static_cast<int>(topology.hosts().size());
  const int m = static_cast<int>(topology.hosts()[place.host].size());
  const int local = place.local_rank;
  const bool is_root = context.rank() == args.root;
  char* output = static_cast<char*>(args.output);
  if (is_root && args.input != output && args.count > 0) {
    std::memcpy(output, args.input, args.count * element);
  }
  Blocks chunks = ChunksOf(args.count, args.count * element);
  const int chunk_count = static_cast<int>(chunks.counts.size());
  std::vector<Blocks> pieces;  // per chunk: one piece per local rank, offsets in the buffer
  for (int chunk = 0; chunk < chunk_count; ++chunk) {
    pieces.push_back(SplitEvenly(chunks.counts[chunk], m));
    for (size_t& offset : pieces.back().offsets) offset += chunks.offsets[chunk];
  }
  const size_t segment = context.segment_elements();
  auto spans_of = [&](int owner) {
    std::vector<Span> spans;
    for (int chunk = 0; chunk < chunk_count; ++chunk) {
      AppendSpans(spans, 0, chunk, pieces[chunk].offsets[owner], pieces[chunk].counts[owner],
                  segment);
    }
    return spans;
  };
  constexpr uint32_t kTagScatter = kTagRelay + 1;
  constexpr uint32_t kTagChain = kTagRelay + 2;
  if (is_root) {
    const std::vector<int>& host = topology.hosts()[place.host];
    for (int owner = 0; owner < m; ++owner) {
      if (owner == local) continue;
      for (const Span& span : spans_of(owner)) {
        context.Send(host[owner], kTagScatter, output + span.offset * element,
                     span.elements * element);
      }
    }
  }
  // The chain along rail `local` starts at the root's host.
  const int distance = Wrap(place.host - root_place.host, h);
  int upstream = -1;
  uint32_t upstream_tag = kTagChain;
  if (distance > 0) {
    upstream = topology.hosts()[Wrap(place.host - 1, h)][local];
  } else if (!is_root) {
    upstream = args.root;
    upstream_tag = kTagScatter;
  }
  int downstream = distance < h - 1 ? topology.hosts()[Wrap(place.host + 1, h)][local] : -1;
  Relay relay(context, output, spans_of(local), upstream, upstream_tag, downstream, kTagChain);
  for (int chunk = 0; chunk < chunk_count; ++chunk) {
    while (!relay.Poll(chunk)) COHORT_RETURN_IF_ERROR(context.ProgressOnce());
    COHORT_RETURN_IF_ERROR(
        RingAllgather(context, HostGroup(topology, place.host, local, HostStepTag(chunk)),
                      output + pieces[chunk].offsets[local] * element, output, pieces[chunk], local,
                      /*first_sends_done=*/false));
  }
  while (!relay.Poll(chunk_count)) COHORT_RETURN_IF_ERROR(context.ProgressOnce());
  return context.WaitAll();
}

// The pipelined hierarchies' costs, like the allreduce's: what crosses the host's link (the m
// rails share it) plus what moves inside the host, added (the overlap is not counted).
void HostShape(const Tuning& tuning, double* m, double* h) {
  *m = static_cast<double>(tuning.topology->hosts()[0].size());
  *h = static_cast<double>(tuning.topology->hosts().size());
}

double AllgatherCost(const OpArgs& args, const Tuning& tuning) {
  double m, h;
  HostShape(tuning, &m, &h);
  double bytes = static_cast<double>(OpBytes(args, tuning.size()));
  double inside = h * (m - 1) * tuning.intra.latency_seconds +
                  (m - 1) / m * bytes / tuning.intra.bytes_per_second;
  double across =
      (h - 1) * tuning.inter.latency_seconds + (h - 1) / h * bytes / tuning.inter.bytes_per_second;
  return inside + across;
}

double ReduceScatterCost(const OpArgs& args, const Tuning& tuning) {
  double m, h;
  HostShape(tuning, &m, &h);
  double bytes = static_cast<double>(OpBytes(args, tuning.size()));
  double inside = h * (m - 1) * tuning.intra.latency_seconds +
                  (m - 1) / m * bytes / tuning.intra.bytes_per_second +
                  (m - 1) / m * bytes / tuning.intra.reduce_bytes_per_second;
  double across = (h - 1) * tuning.inter.latency_seconds +
                  (h - 1) / h * bytes / tuning.inter.bytes_per_second +
                  (h - 1) / h * bytes / m / tuning.inter.reduce_bytes_per_second;
  return inside + across;
}

double BroadcastCost(const OpArgs& args, const Tuning& tuning) {
  double m, h;
  HostShape(tuning, &m, &h);
  double bytes = static_cast<double>(OpBytes(args, tuning.size()));
  // The binomial tree (whose model counts every hop as a network one) sends each host the
  // buffer once when there are two hosts, and small buffers in fewer hops than the chain: on the
  // namespace test bed (2 x 2 ranks, 2 Gbit/s) it was 2-4x faster up to 512 KiB and as fast at
  // 8 MiB. The tuner takes the hierarchy only where the chain saves network bytes (3 hosts or
  // more, the root's host then sends the buffer once instead of log2(hosts) times) on buffers
  // of a chunk or more; COHORT_ALGO=hierarchical still forces it anywhere.
  if (h < 3 || bytes < kMinChunkBytes) return std::numeric_limits<double>::infinity();
  // The root's host scatters, every host allgathers; the chain's hops pipeline by segment.
  double inside = 2 * (m - 1) * tuning.intra.latency_seconds +
                  2 * (m - 1) / m * bytes / tuning.intra.bytes_per_second;
  double across = (h - 1) * tuning.inter.latency_seconds + bytes / tuning.inter.bytes_per_second;
  return inside + across;
}

// Equal blocks only: the v variants go to the flat algorithms.
bool AppliesEqual(const OpArgs& args, const Tuning& tuning) {
  return Applies(args, tuning) && args.counts.empty() && args.displacements.empty();
}
}  // namespace

void RegisterHierarchicalAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(Algorithm{
      "hierarchical",
      {OpType::kAllreduce, OpType::kAllgather, OpType::kReduceScatter, OpType::kBroadcast},
      [](const OpArgs& args, const Tuning& tuning) {
        return args.op == OpType::kAllreduce || args.op == OpType::kBroadcast
                   ? Applies(args, tuning)
                   : AppliesEqual(args, tuning);
      },
      [](const OpArgs& args, const Tuning& tuning) {
        switch (args.op) {
          case OpType::kAllgather:
            return AllgatherCost(args, tuning);
          case OpType::kReduceScatter:
            return ReduceScatterCost(args, tuning);
          case OpType::kBroadcast:
            return BroadcastCost(args, tuning);
          case OpType::kAllreduce:
            return Cost(args, tuning);
          default:
            return std::numeric_limits<double>::infinity();
        }
      },
      [](OpContext& context) {
        switch (context.args().op) {
          case OpType::kAllgather:
            return HierarchicalAllgather(context);
          case OpType::kReduceScatter:
            return HierarchicalReduceScatter(context);
          case OpType::kBroadcast:
            return HierarchicalBroadcast(context);
          case OpType::kAllreduce:
            return HierarchicalAllreduce(context);
          default:
            return UnservedOp("hierarchical", context.args().op);
        }
      },
      "ranks on more than one host, the same number on every host and more than one per host "
      "(and equal blocks for allgather and reduce_scatter)"});
}

}  // namespace cohort
