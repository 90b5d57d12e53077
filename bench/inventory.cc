#include "bench/inventory.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
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

#if COHORT_BENCH_HAVE_IBVERBS
#include <infiniband/verbs.h>
#endif

namespace cohort::bench {
namespace {

namespace fs = std::filesystem;

// The first line of a small sysfs / procfs file, trimmed; empty when unreadable.
std::string ReadLine(const fs::path& path) {
  std::ifstream file(path);
  std::string line;
  if (!file || !std::getline(file, line)) return "";
  return std::string(absl::StripAsciiWhitespace(line));
}

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

nlohmann::json Nics() {
  std::map<std::string, std::vector<std::string>> addresses;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) == 0) {
    for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
      if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) continue;
      char text[INET_ADDRSTRLEN] = {};
      auto* address = reinterpret_cast<sockaddr_in*>(entry->ifa_addr);
      if (inet_ntop(AF_INET, &address->sin_addr, text, sizeof(text)) != nullptr) {
        addresses[entry->ifa_name].push_back(text);
      }
    }
    freeifaddrs(list);
  }
  nlohmann::json nics = nlohmann::json::array();
  std::error_code error;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator("/sys/class/net", error)) {
    entries.push_back(entry.path());
  }
  std::sort(entries.begin(), entries.end());
  for (const fs::path& path : entries) {
    std::string name = path.filename().string();
    if (name == "lo") continue;
    int64_t speed = -1, mtu = 0;
    // speed reads EINVAL while the link is down; -1 then means unknown.
    if (!absl::SimpleAtoi(ReadLine(path / "speed"), &speed)) speed = -1;
    if (!absl::SimpleAtoi(ReadLine(path / "mtu"), &mtu)) mtu = 0;
    nics.push_back({{"name", name},
                    {"state", ReadLine(path / "operstate")},
                    {"speed_mbps", speed},
                    {"mtu", mtu},
                    {"virtual", !fs::exists(path / "device")},
                    {"ipv4", addresses[name]}});
  }
  return nics;
}

nlohmann::json Rdma() {
  nlohmann::json rdma = {{"library", false}, {"devices", nlohmann::json::array()}};
#if COHORT_BENCH_HAVE_IBVERBS
  rdma["library"] = true;
  int count = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  if (devices == nullptr) return rdma;
  for (int i = 0; i < count; ++i) {
    nlohmann::json device = {{"name", ibv_get_device_name(devices[i])},
                             {"ports", nlohmann::json::array()}};
    ibv_context* context = ibv_open_device(devices[i]);
    if (context == nullptr) {
      device["error"] = "cannot open the device";
      rdma["devices"].push_back(device);
      continue;
    }
    ibv_device_attr attributes{};
    if (ibv_query_device(context, &attributes) == 0) {
      for (int port = 1; port <= attributes.phys_port_cnt; ++port) {
        ibv_port_attr port_attributes{};
        if (ibv_query_port(context, static_cast<uint8_t>(port), &port_attributes) != 0) continue;
        device["ports"].push_back(
            {{"port", port},
             {"state", ibv_port_state_str(port_attributes.state)},
             {"active", port_attributes.state == IBV_PORT_ACTIVE},
             {"speed_gbps",
              InfinibandGbps(port_attributes.active_speed, port_attributes.active_width)},
             {"link_layer",
              port_attributes.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand"}});
      }
    }
    ibv_close_device(context);
    rdma["devices"].push_back(device);
  }
  ibv_free_device_list(devices);
#endif
  return rdma;
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

double InfinibandGbps(int active_speed, int active_width) {
  double lane = 0;
  switch (active_speed) {
    case 1:
      lane = 2.5;
      break;  // SDR
    case 2:
      lane = 5.0;
      break;  // DDR
    case 4:
      lane = 10.0;
      break;  // QDR
    case 8:
      lane = 10.3125;
      break;  // FDR10
    case 16:
      lane = 14.0625;
      break;  // FDR
    case 32:
      lane = 25.78125;
      break;  // EDR
    case 64:
      lane = 50.0;
      break;  // HDR
    case 128:
      lane = 100.0;
      break;  // NDR
    default:
      return 0;
  }
  int lanes = 0;
  switch (active_width) {
    case 1:
      lanes = 1;
      break;
    case 2:
      lanes = 4;
      break;
    case 4:
      lanes = 8;
      break;
    case 8:
      lanes = 12;
      break;
    case 16:
      lanes = 2;
      break;
    default:
      return 0;
  }
  return lane * lanes;
}

nlohmann::json CollectInventory() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  int usable = sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : -1;
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  return {{"host", host},
          {"cpu_model", CpuModel()},
          {"cores", sysconf(_SC_NPROCESSORS_ONLN)},
          {"cores_usable", usable},
          {"numa_nodes", NumaNodes()},
          {"memory_bytes", static_cast<int64_t>(pages) * page_size},
          {"nics", Nics()},
          {"rdma", Rdma()},
          {"gpus", Gpus()}};
}

}  // namespace cohort::bench
