#include "bench/inventory.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "collectives/nic.h"

namespace cohort::bench {
namespace {

namespace fs = std::filesystem;

int NumaNodes() {
  int count = 0;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/sys/devices/system/node", error)) {
    std::string name = entry.path().filename().string();
    int index = 0;
    if (absl::StartsWith(name, "node") && absl::SimpleAtoi(name.substr(4), &index)) ++count;
  }
  return std::max(count, 1);
}

// The interfaces and RDMA devices the topology knows (collectives/nic.h), in its JSON; lo
// stays out, as every host has one.
nlohmann::json Network() {
  auto options = NicOptions::FromEnvironment();
  nlohmann::json network = NicsToJson(DiscoverNics(NicSource(), options.ok() ? *options
                                                                               : NicOptions()));
  nlohmann::json nics = nlohmann::json::array();
  for (const nlohmann::json& nic : network["nics"]) {
    if (!nic.value("loopback", false)) nics.push_back(nic);
  }
  network["nics"] = std::move(nics);
  return network;
}

nlohmann::json Gpus() {
  nlohmann::json gpus = nlohmann::json::array();
  std::error_code error;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator("/proc/driver/nvidia/gpus", error)) {
    entries.push_back(entry.path());
  }
  std::sort(entries.begin(), entries.end());
  for (const fs::path& path : entries) {
    std::ifstream file(path / "information");
    std::string line, model;
    while (std::getline(file, line)) {
      if (absl::StartsWith(line, "Model:")) {
        model = std::string(absl::StripAsciiWhitespace(line.substr(6)));
      }
    }
    gpus.push_back({{"bus", path.filename().string()}, {"model", model}});
  }
  return gpus;
}

}  // namespace

std::string CpuModel() {
  std::ifstream file("/proc/cpuinfo");
  std::string line;
  while (std::getline(file, line)) {
    if (absl::StartsWith(line, "model name")) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "";
}

nlohmann::json CollectInventory() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  int usable = sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : -1;
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  nlohmann::json network = Network();
  return {{"host", host},
          {"cpu_model", CpuModel()},
          {"cores", sysconf(_SC_NPROCESSORS_ONLN)},
          {"cores_usable", usable},
          {"numa_nodes", NumaNodes()},
          {"memory_bytes", static_cast<int64_t>(pages) * page_size},
          {"nics", network["nics"]},
          {"rdma", network["rdma"]},
          {"gpus", Gpus()}};
}

}  // namespace cohort::bench
