// What a node has, for `cohort-bench validate`: cores (online and usable by this process), NUMA
// nodes, memory, the CPU model, network interfaces (state, speed, MTU, IPv4 addresses), RDMA
// devices and their ports (libibverbs: state, speed, width, link layer) and GPUs when present.
// Collected by each node's first rank; compared across nodes by the verdict (verdict.h).
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace cohort::bench {

// The inventory of this host, as JSON (the schema is in docs/bench.md).
nlohmann::json CollectInventory();

// "model name" of /proc/cpuinfo ("AMD EPYC 7B13"); empty when unknown.
std::string CpuModel();

// Gb/s of an InfiniBand port from ibv_port_attr's active_speed and active_width codes (0 when
// a code is unknown).
double InfinibandGbps(int active_speed, int active_width);

}  // namespace cohort::bench
