// The rendezvous and coordinator messages as they come out of the store (JSON written by other
// agents): a node joining, a round's world, a generation's end, failure reports, and torchrun's
// --rdzv-conf. Whatever decodes must encode and decode back to the same record, and the world's
// rank arithmetic must not overflow (UBSan).
#include <string>

#include "elastic/rendezvous.h"
#include "fuzz_input.h"

using namespace cohort;
using namespace cohort::elastic;

namespace {

bool SameNode(const NodeInfo& a, const NodeInfo& b) {
  return a.node_id == b.node_id && a.host == b.host && a.address == b.address &&
         a.master_port == b.master_port && a.local_world_size == b.local_world_size &&
         a.role == b.role && a.node_rank == b.node_rank && a.labels == b.labels;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = fuzz::Text(data, size);
  if (auto node = DecodeNode(text); node.ok()) {
    auto again = DecodeNode(EncodeNode(*node));
    if (!again.ok() || !SameNode(*node, *again)) __builtin_trap();
  }
  if (auto world = DecodeWorld(text); world.ok()) {
    auto again = DecodeWorld(EncodeWorld(*world));
    if (!again.ok() || again->nodes.size() != world->nodes.size()) __builtin_trap();
    (void)world->world_size();
    for (size_t i = 0; i < world->nodes.size(); ++i) {
      (void)world->RankOffset(static_cast<int>(i));
      (void)world->RoleRankOffset(static_cast<int>(i));
      (void)world->RoleWorldSize(world->nodes[i].role);
    }
    (void)OrderNodes(world->nodes, /*static_ranks=*/false);
    (void)OrderNodes(world->nodes, /*static_ranks=*/true);
  }
  if (auto end = DecodeEnd(text); end.ok()) {
    auto again = DecodeEnd(EncodeEnd(*end));
    if (!again.ok() || again->reason != end->reason) __builtin_trap();
  }
  if (auto failures = DecodeFailures(text); failures.ok()) {
    auto again = DecodeFailures(EncodeFailures(*failures));
    if (!again.ok() || again->size() != failures->size()) __builtin_trap();
  }
  RendezvousSettings settings;
  int is_host = -1;
  (void)ParseRendezvousConf(text, &settings, &is_host);
  return 0;
}
