// Algorithms where every rank talks to its peers directly: pairwise alltoall (equal or
// per-peer counts), linear gather and scatter at the root, and the dissemination barrier.
#include <cmath>
#include <cstring>

#include "collectives/algorithms/registry.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace cohort {
namespace {

constexpr uint32_t kTagAlltoall = 5;
constexpr uint32_t kTagRooted = 6;
constexpr uint32_t kTagBarrier = 7;

absl::Status PairwiseAlltoall(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  std::vector<size_t> send_counts = BlockCounts(args, n);
  std::vector<size_t> recv_counts =
      args.recv_counts.empty() ? std::vector<size_t>(n, args.count) : args.recv_counts;
  std::vector<size_t> send_offsets =
      args.displacements.empty() ? BlockOffsets(send_counts) : args.displacements;
  std::vector<size_t> recv_offsets =
      args.recv_displacements.empty() ? BlockOffsets(recv_counts) : args.recv_displacements;
  const char* input = static_cast<const char*>(args.input);
  char* output = static_cast<char*>(args.output);
  // In place (input == output): our own sends read blocks that receives would overwrite, so
  // stage the input.
  if (input == output && n > 1) {
    size_t total = send_offsets[n - 1] + send_counts[n - 1];
    char* copy = context.Scratch(total * element);
    std::memcpy(copy, input, total * element);
    input = copy;
  }
  for (int step = 1; step < n; ++step) {
    int from = (rank - step + n) % n;
    context.Recv(from, kTagAlltoall, output + recv_offsets[from] * element,
                 recv_counts[from] * element);
  }
  for (int step = 1; step < n; ++step) {
    int to = (rank + step) % n;
    context.Send(to, kTagAlltoall, input + send_offsets[to] * element, send_counts[to] * element);
  }
  if (send_counts[rank] != recv_counts[rank]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "alltoall on rank ", rank, " sends ", send_counts[rank], " elements to itself but expects ",
        recv_counts[rank], "; the send and receive counts for a rank's own block must match"));
  }
  if (recv_counts[rank] > 0) {
    std::memmove(output + recv_offsets[rank] * element, input + send_offsets[rank] * element,
                 recv_counts[rank] * element);
  }
  return context.WaitAll();
}

absl::Status LinearGather(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  std::vector<size_t> counts = BlockCounts(args, n);
  std::vector<size_t> offsets = args.displacements.empty() ? BlockOffsets(counts) : args.displacements;
  if (rank != args.root) {
    context.Send(args.root, kTagRooted, args.input, counts[rank] * element);
    return context.WaitAll();
  }
  char* output = static_cast<char*>(args.output);
  for (int peer = 0; peer < n; ++peer) {
    if (peer == rank) continue;
    context.Recv(peer, kTagRooted, output + offsets[peer] * element, counts[peer] * element);
  }
  if (output + offsets[rank] * element != args.input && counts[rank] > 0) {
    std::memmove(output + offsets[rank] * element, args.input, counts[rank] * element);
  }
  return context.WaitAll();
}

absl::Status LinearScatter(OpContext& context) {
  const OpArgs& args = context.args();
  const int n = context.size();
  const int rank = context.rank();
  const size_t element = args.element_size();
  std::vector<size_t> counts = BlockCounts(args, n);
  std::vector<size_t> offsets = args.displacements.empty() ? BlockOffsets(counts) : args.displacements;
  if (rank != args.root) {
    COHORT_RETURN_IF_ERROR(context.Wait(
        context.Recv(args.root, kTagRooted, args.output, counts[rank] * element)));
    return absl::OkStatus();
  }
  const char* input = static_cast<const char*>(args.input);
  for (int peer = 0; peer < n; ++peer) {
    if (peer == rank) continue;
    context.Send(peer, kTagRooted, input + offsets[peer] * element, counts[peer] * element);
  }
  if (input + offsets[rank] * element != args.output && counts[rank] > 0) {
    std::memmove(args.output, input + offsets[rank] * element, counts[rank] * element);
  }
  return context.WaitAll();
}

absl::Status DisseminationBarrier(OpContext& context) {
  const int n = context.size();
  const int rank = context.rank();
  for (int distance = 1; distance < n; distance <<= 1) {
    Request* receive = context.Recv((rank - distance + n) % n, kTagBarrier, nullptr, 0);
    context.Send((rank + distance) % n, kTagBarrier, nullptr, 0);
    COHORT_RETURN_IF_ERROR(context.Wait(receive));
  }
  return context.WaitAll();
}

double LinearCost(const OpArgs& args, const Tuning& tuning) {
  const int n = tuning.size();
  const LinkModel& link = tuning.flat();
  return (n - 1) * link.latency_seconds +
         static_cast<double>(OpBytes(args, n)) * (n - 1) / n / link.bytes_per_second;
}

}  // namespace

void RegisterDirectAlgorithms(std::vector<Algorithm>& registry) {
  auto always = [](const OpArgs&, const Tuning&) { return true; };
  registry.push_back(Algorithm{"pairwise", {OpType::kAlltoall}, always, LinearCost,
                               PairwiseAlltoall});
  registry.push_back(Algorithm{"linear",
                               {OpType::kGather, OpType::kScatter},
                               always,
                               LinearCost,
                               [](OpContext& context) {
                                 switch (context.args().op) {
                                   case OpType::kGather:
                                     return LinearGather(context);
                                   case OpType::kScatter:
                                     return LinearScatter(context);
                                   default:
                                     return UnservedOp("linear", context.args().op);
                                 }
                               }});
  registry.push_back(Algorithm{"dissemination",
                               {OpType::kBarrier},
                               always,
                               [](const OpArgs&, const Tuning& tuning) {
                                 const int n = tuning.size();
                                 const LinkModel& link = tuning.flat();
                                 return std::ceil(std::log2(std::max(2, n))) * link.latency_seconds;
                               },
                               DisseminationBarrier});
}

}  // namespace cohort
