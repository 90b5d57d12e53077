// Ring building blocks over any group of ranks (the world, the ranks of one host, or one rank
// per host): a pipelined reduce-scatter and a pipelined allgather. The ring algorithms and the
// hierarchical ones are made of them.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "collectives/op_context.h"

namespace cohort {

// An ordered group of ranks and this rank's position in it; frames carry tags from `tag_base`.
struct RingGroup {
  std::vector<int> ranks;
  int index = 0;
  uint32_t tag_base = 0;
  int size() const { return static_cast<int>(ranks.size()); }
  int right() const { return ranks[(index + 1) % size()]; }
  int left() const { return ranks[(index + size() - 1) % size()]; }
};

// Element counts and offsets of the blocks a buffer is cut into, one per group member.
struct Blocks {
  std::vector<size_t> counts;
  std::vector<size_t> offsets;
};
Blocks SplitEvenly(size_t count, int parts);

struct Piece {
  int step;
  int block;
  size_t offset;    // elements from the start of the block
  size_t elements;
};

// Reduce-scatter around the group. At step s member i sends block (i - s + shift) and
// receives block (i - s - 1 + shift), reducing it with its own input; after size-1 steps member
// i holds the reduction over the group of block (i + 1 + shift), written to `final_out` (indexed
// like `input`). Partial sums go to `accumulate` (indexed like `input`). `on_final` runs for
// each finished segment of the final block; with `finish_average` the final block is divided
// by the world size first.
absl::Status RingReduceScatter(OpContext& context, const RingGroup& group, const char* input,
                               char* accumulate, char* final_out, const Blocks& blocks, int shift,
                               bool finish_average,
                               const std::function<void(const Piece&)>& on_final);

// Allgather around the group into `output`. Member i starts with block `own` (its data at
// `own_source`) and at step s forwards block (own - s) and receives block (own - s - 1).
// `first_sends_done`: the caller already sent block `own` (pipelined from a reduce-scatter).
absl::Status RingAllgather(OpContext& context, const RingGroup& group, const char* own_source,
                           char* output, const Blocks& blocks, int own, bool first_sends_done);

// Allreduce of `count` elements in place at `buffer` around the group (reduce-scatter then
// allgather, pipelined into each other).
absl::Status RingAllreduceInPlace(OpContext& context, const RingGroup& group, const char* input,
                                  char* buffer, size_t count, bool finish_average);

}  // namespace cohort
