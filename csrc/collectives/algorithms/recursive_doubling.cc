// Recursive doubling allreduce for latency-bound sizes: log2(n) rounds of whole-buffer
// exchanges with partner rank ^ 2^k. A world that is not a power of two first folds its extra
// ranks into their partners and hands them the result at the end.
#include <cmath>
#include <cstring>

#include "collectives/algorithms/registry.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagFold = 1;
constexpr uint32_t kTagExchange = 2;
constexpr uint32_t kTagUnfold = 3;

int LargestPowerOfTwoAtMost(int n) {
  int power = 1;
  while (power * 2 <= n) power *= 2;
  return power;
}

absl::Status RecursiveDoublingAllreduce(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t bytes = args.count * args.element_size();
  char* output = static_cast<char*>(args.output);
  if (args.input != args.output && bytes > 0) std::memcpy(output, args.input, bytes);
  if (n == 1 || bytes == 0) {
    context.FinishAverage(output, args.count);
    return absl::OkStatus();
  }
  const int power = LargestPowerOfTwoAtMost(n);
  const int extra = n - power;
  char* incoming = context.Scratch(bytes);
  if (rank >= power) {
    context.Send(rank - power, kTagFold, output, bytes);
    COHORT_RETURN_IF_ERROR(context.Wait(context.Recv(rank - power, kTagUnfold, output, bytes)));
    return context.WaitAll();
  }
  if (rank < extra) {
    COHORT_RETURN_IF_ERROR(context.Wait(context.Recv(rank + power, kTagFold, incoming, bytes)));
    context.Reduce(output, output, incoming, args.count);
  }
  for (int mask = 1; mask < power; mask <<= 1) {
    int partner = rank ^ mask;
    Request* receive = context.Recv(partner, kTagExchange, incoming, bytes);
    Request* send = context.Send(partner, kTagExchange, output, bytes);
    COHORT_RETURN_IF_ERROR(context.Wait(receive));
    COHORT_RETURN_IF_ERROR(context.Wait(send));
    // The lower rank's data first, so both partners compute bit-identical results.
    if (partner < rank) {
      context.Reduce(output, incoming, output, args.count);
    } else {
      context.Reduce(output, output, incoming, args.count);
    }
  }
  context.FinishAverage(output, args.count);
  if (rank < extra) context.Send(rank + power, kTagUnfold, output, bytes);
  return context.WaitAll();
}

}  // namespace

void RegisterRecursiveDoublingAlgorithms(std::vector<Algorithm>& registry) {
  registry.push_back(Algorithm{
      "recursive_doubling",
      {OpType::kAllreduce},
      [](const OpArgs&, const Tuning&) { return true; },
      [](const OpArgs& args, const Tuning& tuning) {
        const int n = tuning.size();
        const LinkModel& link = tuning.flat();
        double bytes = static_cast<double>(OpBytes(args, n));
        int power = LargestPowerOfTwoAtMost(n);
        double rounds = std::log2(static_cast<double>(power)) + (power < n ? 2 : 0);
        return rounds * (link.latency_seconds + bytes / link.bytes_per_second +
                         bytes / link.reduce_bytes_per_second);
      },
      RecursiveDoublingAllreduce});
}

}  // namespace cohort
