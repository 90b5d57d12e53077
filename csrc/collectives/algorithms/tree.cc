// Binomial trees rooted at the op's root: broadcast (pipelined by segment down the tree) and
// reduce (children's partial results reduced segment by segment on the way up).
#include <cmath>
#include <cstring>
#include <vector>

#include "collectives/algorithms/registry.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagTree = 4;

struct TreeLinks {
  int parent = -1;            // real rank, -1 at the root
  std::vector<int> children;  // real ranks, largest subtree first
};

TreeLinks Binomial(int rank, int root, int n) {
  TreeLinks links;
  int relative = (rank - root + n) % n;
  int mask = 1;
  while (mask < n) {
    if (relative & mask) {
      links.parent = (relative - mask + root) % n;
      break;
    }
    mask <<= 1;
  }
  for (mask >>= 1; mask > 0; mask >>= 1) {
    if (relative + mask < n) links.children.push_back((relative + mask + root) % n);
  }
  return links;
}

double TreeCost(const OpArgs& args, const Tuning& tuning) {
  const int n = tuning.size();
  const LinkModel& link = tuning.flat();
  double bytes = static_cast<double>(OpBytes(args, n));
  double depth = std::ceil(std::log2(std::max(2, n)));
  double extra = args.op == OpType::kReduce ? bytes / link.reduce_bytes_per_second : 0.0;
  return depth * (link.latency_seconds + bytes / link.bytes_per_second + extra);
}

absl::Status TreeBroadcast(OpContext& context) {
  const OpArgs& args = context.args();
  const size_t element = args.element_size();
  const size_t bytes = args.count * element;
  const size_t segment = context.segment_elements() * element;
  TreeLinks links = Binomial(context.rank(), args.root, context.size());
  char* output = static_cast<char*>(args.output);
  const char* source = output;
  if (links.parent < 0) {
    source = static_cast<const char*>(args.input);
  }
  std::vector<Request*> receives;
  if (links.parent >= 0) {
    for (size_t offset = 0; offset < bytes; offset += segment) {
      receives.push_back(
          context.Recv(links.parent, kTagTree, output + offset, std::min(segment, bytes - offset)));
    }
  }
  size_t index = 0;
  for (size_t offset = 0; offset < bytes; offset += segment, ++index) {
    if (links.parent >= 0) COHORT_RETURN_IF_ERROR(context.Wait(receives[index]));
    for (int child : links.children) {
      context.Send(child, kTagTree, source + offset, std::min(segment, bytes - offset));
    }
  }
  if (links.parent < 0 && source != output && bytes > 0) std::memcpy(output, source, bytes);
  return context.WaitAll();
}

absl::Status TreeReduce(OpContext& context) {
  const OpArgs& args = context.args();
  const size_t element = args.element_size();
  const size_t bytes = args.count * element;
  const size_t segment_elements = context.segment_elements();
  TreeLinks links = Binomial(context.rank(), args.root, context.size());
  const char* input = static_cast<const char*>(args.input);
  const bool is_root = links.parent < 0;
  if (links.children.empty()) {
    if (is_root) {  // a world of one
      if (input != args.output && bytes > 0) std::memcpy(args.output, input, bytes);
      context.FinishAverage(args.output, args.count);
      return absl::OkStatus();
    }
    for (size_t offset = 0; offset < args.count; offset += segment_elements) {
      size_t elements = std::min(segment_elements, args.count - offset);
      context.Send(links.parent, kTagTree, input + offset * element, elements * element);
    }
    return context.WaitAll();
  }
  // Children's contributions land in scratch; the partial result goes to the output at the
  // root, to scratch elsewhere (a non-root's buffers are left as they were).
  char* scratch = context.Scratch(bytes * (links.children.size() + (is_root ? 0 : 1)));
  char* accumulate = is_root ? static_cast<char*>(args.output)
                             : scratch + bytes * links.children.size();
  std::vector<std::vector<Request*>> receives(links.children.size());
  for (size_t child = 0; child < links.children.size(); ++child) {
    for (size_t offset = 0; offset < args.count; offset += segment_elements) {
      size_t elements = std::min(segment_elements, args.count - offset);
      receives[child].push_back(context.Recv(links.children[child], kTagTree,
                                             scratch + child * bytes + offset * element,
                                             elements * element));
    }
  }
  size_t index = 0;
  for (size_t offset = 0; offset < args.count; offset += segment_elements, ++index) {
    size_t elements = std::min(segment_elements, args.count - offset);
    size_t at = offset * element;
    for (size_t child = 0; child < links.children.size(); ++child) {
      COHORT_RETURN_IF_ERROR(context.Wait(receives[child][index]));
      const char* left = child == 0 ? input + at : accumulate + at;
      context.Reduce(accumulate + at, left, scratch + child * bytes + at, elements);
    }
    if (is_root) {
      context.FinishAverage(accumulate + at, elements);
    } else {
      context.Send(links.parent, kTagTree, accumulate + at, elements * element);
    }
  }
  return context.WaitAll();
}

}  // namespace

void RegisterTreeAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(Algorithm{
      "tree",
      {OpType::kBroadcast, OpType::kReduce},
      [](const OpArgs&, const Tuning&) { return true; },
      TreeCost,
      [](OpContext& context) {
        switch (context.args().op) {
          case OpType::kBroadcast:
            return TreeBroadcast(context);
          case OpType::kReduce:
            return TreeReduce(context);
          default:
            return UnservedOp("tree", context.args().op);
        }
      }});
}

}  // namespace cohort
