// Direct allreduce among ranks that reach each other cheaply (one host, shared memory): every
// rank reduces straight from its peers' data instead of passing partial sums around a ring.
// One-shot: everyone receives everyone's whole buffer and reduces it (one step; small sizes).
// Two-shot: a direct reduce-scatter, then a direct allgather (two steps; large sizes). Inputs are
// reduced in rank order with ReduceMany (fp16/bf16 accumulate in fp32 and round once), so every
// rank computes bit-identical results.
#include <cstring>
#include <vector>

#include "collectives/algorithms/registry.h"
#include "collectives/algorithms/ring.h"
#include "collectives/reduce.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagOneShot = 8;
constexpr uint32_t kTagScatter = 9;
constexpr uint32_t kTagGather = 10;

// Reduces the inputs in rank order into `out` (which may be one of the inputs).
void ReduceInOrder(OpContext& context, char* out, const std::vector<const void*>& inputs,
                   size_t elements, char* spare) {
  const OpArgs& args = context.args();
  ReduceManyFn reduce = GetReduceManyFn(args.dtype, args.reduce_op);
  bool aliased = false;
  for (size_t i = 1; i < inputs.size(); ++i) aliased |= inputs[i] == out;
  char* target = aliased ? spare : out;  // ReduceMany may only write over inputs[0]
  reduce(target, inputs.data(), static_cast<int>(inputs.size()), elements);
  if (aliased) std::memcpy(out, target, elements * args.element_size());
  context.FinishAverage(out, elements);
}

absl::Status OneShot(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t bytes = args.count * args.element_size();
  char* scratch = context.Scratch(bytes * n);  // a slot per peer, plus room for aliasing
  std::vector<const void*> inputs(n);
  for (int peer = 0; peer < n; ++peer) {
    if (peer == rank) {
      inputs[peer] = args.input;
      continue;
    }
    inputs[peer] = scratch + bytes * peer;
    context.Recv(peer, kTagOneShot, scratch + bytes * peer, bytes);
  }
  for (int step = 1; step < n; ++step) {
    context.Send((rank + step) % n, kTagOneShot, args.input, bytes);
  }
  COHORT_RETURN_IF_ERROR(context.WaitAll());
  ReduceInOrder(context, static_cast<char*>(args.output), inputs, args.count,
                scratch + bytes * rank);
  return absl::OkStatus();
}

absl::Status TwoShot(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  Blocks blocks = SplitEvenly(args.count, n);
  const size_t mine = blocks.counts[rank] * element;
  char* scratch = context.Scratch(mine * (n + 1));
  // 1. Everyone sends me block `rank` of its input; I reduce it.
  std::vector<const void*> inputs(n);
  std::vector<Request*> receives(n, nullptr);
  for (int peer = 0; peer < n; ++peer) {
    inputs[peer] = peer == rank ? input + blocks.offsets[rank] * element : scratch + mine * peer;
    if (peer != rank) receives[peer] = context.Recv(peer, kTagScatter, scratch + mine * peer, mine);
  }
  for (int step = 1; step < n; ++step) {
    int peer = (rank + step) % n;
    context.Send(peer, kTagScatter, input + blocks.offsets[peer] * element,
                 blocks.counts[peer] * element);
  }
  for (int peer = 0; peer < n; ++peer) COHORT_RETURN_IF_ERROR(context.Wait(receives[peer]));
  // Every send of step 1 must have left before the output (maybe the input) is overwritten.
  COHORT_RETURN_IF_ERROR(context.WaitAll());
  char* own = output + blocks.offsets[rank] * element;
  ReduceInOrder(context, own, inputs, blocks.counts[rank], scratch + mine * n);
  // 2. Everyone gets every reduced block.
  for (int peer = 0; peer < n; ++peer) {
    if (peer == rank) continue;
    context.Recv(peer, kTagGather, output + blocks.offsets[peer] * element,
                 blocks.counts[peer] * element);
  }
  for (int step = 1; step < n; ++step) {
    context.Send((rank + step) % n, kTagGather, own, mine);
  }
  return context.WaitAll();
}

// A step waits for the peers to run: longer when the host's ranks outnumber its CPUs.
double OneShotCost(const OpArgs& args, const Tuning& tuning) {
  const int n = tuning.size();
  const LinkModel& link = tuning.flat();
  double bytes = static_cast<double>(OpBytes(args, n));
  return link.latency_seconds * OversubscriptionFactor(tuning) +
         (n - 1) * bytes / link.bytes_per_second +
         (n - 1) * bytes / link.reduce_bytes_per_second;
}

double TwoShotCost(const OpArgs& args, const Tuning& tuning) {
  const int n = tuning.size();
  const LinkModel& link = tuning.flat();
  double bytes = static_cast<double>(OpBytes(args, n));
  double fraction = static_cast<double>(n - 1) / n;
  return 2 * link.latency_seconds * OversubscriptionFactor(tuning) +
         2 * fraction * bytes / link.bytes_per_second +
         fraction * bytes / link.reduce_bytes_per_second;
}

// Direct exchanges suit ranks that share memory; across hosts the ring and hierarchy win.
bool OneHost(const OpArgs&, const Tuning& tuning) { return !tuning.multi_host(); }

}  // namespace

void RegisterShotAlgorithms(std::vector<Algorithm>& registry) {
  const char* needs = "every rank on one host";
  registry.push_back(
      Algorithm{"one_shot", {OpType::kAllreduce}, OneHost, OneShotCost, OneShot, needs});
  registry.push_back(
      Algorithm{"two_shot", {OpType::kAllreduce}, OneHost, TwoShotCost, TwoShot, needs});
}

}  // namespace cohort
