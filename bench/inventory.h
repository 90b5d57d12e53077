// What a node has, for `cohort-bench validate`: cores (online and usable by this process), NUMA
// nodes, memory, the CPU model, network interfaces and RDMA devices as the topology sees them
// (collectives/nic.h: state, speed, MTU, IPv4 addresses, NUMA node; ports' state, speed, link
// layer) and GPUs when present.
// Collected by each node's first rank; compared across nodes by the verdict (verdict.h).
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace cohort::bench {

// The inventory of this host, as JSON (the schema is in docs/bench.md).
nlohmann::json CollectInventory();

// "model name" of /proc/cpuinfo ("AMD EPYC 7B13"); empty when unknown.
std::string CpuModel();

}  // namespace cohort::bench
