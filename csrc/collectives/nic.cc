#include "collectives/nic.h"

#include <arpa/inet.h>
#include <hwloc.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/status.h"
#include "common/json_fields.h"

#if COHORT_HAVE_IBVERBS
#include <infiniband/verbs.h>
#endif

namespace cohort {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The first line of a small sysfs file, trimmed; empty when unreadable (sysfs answers EINVAL
// for some attributes of a link that is down).
std::string ReadLine(const fs::path& path) {
  std::ifstream file(path);
  std::string line;
  if (!file || !std::getline(file, line)) return "";
  return std::string(absl::StripAsciiWhitespace(line));
}

std::vector<fs::path> SortedEntries(const fs::path& directory) {
  std::vector<fs::path> entries;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(directory, error)) entries.push_back(entry.path());
  std::sort(entries.begin(), entries.end());
  return entries;
}

// "0000:3b:00.0"
bool IsPciAddress(const std::string& text) {
  if (text.size() != 12 || text[4] != ':' || text[7] != ':' || text[10] != '.') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11}) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(text[i]))) return false;
  }
  return true;
}

// The PCI function a device sits on: the last PCI address on its canonical sysfs path (a
// virtio device sits below one, a physical function is one).
std::string PciFunction(const fs::path& device) {
  std::error_code error;
  fs::path canonical = fs::canonical(device, error);
  if (error) return "";
  std::string found;
  for (const fs::path& part : canonical) {
    if (IsPciAddress(part.string())) found = part.string();
  }
  return found;
}

int NumaNodeCount(const std::string& sysfs_root, int* only) {
  int count = 0;
  for (const fs::path& path : SortedEntries(fs::path(sysfs_root) / "devices/system/node")) {
    std::string name = path.filename().string();
    int index = 0;
    if (absl::StartsWith(name, "node") && absl::SimpleAtoi(name.substr(4), &index)) {
      if (count++ == 0) *only = index;
    }
  }
  return count;
}

}  // namespace

const RdmaPort* RdmaDevice::Port(int port) const {
  for (const RdmaPort& entry : ports) {
    if (entry.port == port) return &entry;
  }
  return nullptr;
}

const NicInfo* HostNics::Interface(const std::string& name) const {
  for (const NicInfo& nic : interfaces) {
    if (nic.name == name) return &nic;
  }
  return nullptr;
}

const RdmaDevice* HostNics::Rdma(const std::string& name) const {
  for (const RdmaDevice& device : rdma) {
    if (device.name == name) return &device;
  }
  return nullptr;
}

absl::StatusOr<NicOptions> NicOptions::Parse(const std::string& interfaces,
                                             const std::string& rdma) {
  NicOptions options;
  COHORT_ASSIGN_OR_RETURN(options.interfaces,
                          NameFilter::Parse(interfaces, false, "COHORT_SOCKET_IFNAME"));
  COHORT_ASSIGN_OR_RETURN(options.rdma, NameFilter::Parse(rdma, true, "COHORT_IB_HCA"));
  return options;
}

absl::StatusOr<NicOptions> NicOptions::FromEnvironment() {
  COHORT_ASSIGN_OR_RETURN(std::string interfaces, config::GetString("COHORT_SOCKET_IFNAME"));
  COHORT_ASSIGN_OR_RETURN(std::string rdma, config::GetString("COHORT_IB_HCA"));
  return Parse(interfaces, rdma);
}

NicSource::NicSource(std::string sysfs_root) : sysfs_root_(std::move(sysfs_root)) {}

std::map<std::string, std::vector<std::string>> NicSource::Addresses() const {
  std::map<std::string, std::vector<std::string>> addresses;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return addresses;
  for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {};
    auto* address = reinterpret_cast<sockaddr_in*>(entry->ifa_addr);
    if (inet_ntop(AF_INET, &address->sin_addr, text, sizeof(text)) == nullptr) continue;
    std::string name = entry->ifa_name;
    addresses[name.substr(0, name.find(':'))].push_back(text);
  }
  freeifaddrs(list);
  return addresses;
}

std::vector<NicInfo> NicSource::Interfaces() const {
  std::map<std::string, std::vector<std::string>> addresses = Addresses();
  std::vector<NicInfo> interfaces;
  for (const fs::path& path : SortedEntries(fs::path(sysfs_root_) / "class/net")) {
    NicInfo nic;
    nic.name = path.filename().string();
    nic.state = ReadLine(path / "operstate");
    int64_t flags = 0, type = 0, mtu = 0, dev_port = 0;
    std::string flags_text = ReadLine(path / "flags");
    if (absl::StartsWith(flags_text, "0x")) flags_text = flags_text.substr(2);
    if (!absl::SimpleHexAtoi(flags_text, &flags)) flags = 0;
    // Missing or unreadable files read as 0 (clang insists the result is looked at).
    if (!absl::SimpleAtoi(ReadLine(path / "type"), &type)) type = 0;
    if (!absl::SimpleAtoi(ReadLine(path / "mtu"), &mtu)) mtu = 0;
    nic.mtu = static_cast<int>(mtu);
    if (!absl::SimpleAtoi(ReadLine(path / "speed"), &nic.speed_mbps) || nic.speed_mbps <= 0) {
      nic.speed_mbps = -1;
    }
    // lo and dummies say "unknown" however healthy they are; their carrier tells.
    nic.up = (flags & IFF_UP) != 0 &&
             (nic.state == "up" || (nic.state == "unknown" && ReadLine(path / "carrier") == "1"));
    nic.loopback = (flags & IFF_LOOPBACK) != 0 || type == 772;  // ARPHRD_LOOPBACK
    std::error_code error;
    nic.virtual_device = !fs::exists(path / "device", error);
    if (!nic.virtual_device) {
      nic.pci = PciFunction(path / "device");
      std::vector<fs::path> rdma = SortedEntries(path / "device/infiniband");
      if (!rdma.empty()) {
        nic.rdma_device = rdma.front().filename().string();
        if (!absl::SimpleAtoi(ReadLine(path / "dev_port"), &dev_port)) dev_port = 0;
        nic.rdma_port = static_cast<int>(dev_port) + 1;
      }
    }
    auto found = addresses.find(nic.name);
    if (found != addresses.end()) nic.ipv4 = found->second;
    interfaces.push_back(std::move(nic));
  }
  return interfaces;
}

std::vector<RdmaDevice> NicSource::RdmaDevices(bool* verbs) const {
  std::vector<RdmaDevice> result;
#if COHORT_HAVE_IBVERBS
  *verbs = true;
  int count = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  if (devices == nullptr) return result;
  for (int i = 0; i < count; ++i) {
    RdmaDevice device;
    device.name = ibv_get_device_name(devices[i]);
    ibv_context* context = ibv_open_device(devices[i]);
    if (context == nullptr) {
      device.error = absl::StrCat("cannot open the device: ", std::strerror(errno));
      result.push_back(std::move(device));
      continue;
    }
    ibv_device_attr attributes{};
    int query = ibv_query_device(context, &attributes);
    if (query != 0) {
      device.error = absl::StrCat("cannot query the device: ", std::strerror(query));
    } else {
      for (int port = 1; port <= attributes.phys_port_cnt; ++port) {
        ibv_port_attr port_attributes{};
        if (ibv_query_port(context, static_cast<uint8_t>(port), &port_attributes) != 0) continue;
        RdmaPort entry;
        entry.port = port;
        entry.state = ibv_port_state_str(port_attributes.state);
        entry.active = port_attributes.state == IBV_PORT_ACTIVE;
        entry.link_layer =
            port_attributes.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
        entry.active_speed = port_attributes.active_speed;
        entry.active_width = port_attributes.active_width;
        entry.gbps = InfinibandGbps(entry.active_speed, entry.active_width);
        device.ports.push_back(std::move(entry));
      }
    }
    ibv_close_device(context);
    result.push_back(std::move(device));
  }
  ibv_free_device_list(devices);
  std::sort(result.begin(), result.end(),
            [](const RdmaDevice& a, const RdmaDevice& b) { return a.name < b.name; });
#else
  *verbs = false;
#endif
  return result;
}

std::map<std::string, int> NicSource::DeviceNumaNodes() const {
  int only = 0;
  if (NumaNodeCount(sysfs_root_, &only) > 1) {
    if (sysfs_root_ != "/sys") return {};  // hwloc reads this machine, not a made-up one
    // PCI locality does not change while a process runs; loading hwloc's I/O objects takes
    // tens of milliseconds, so once per process.
    static const std::map<std::string, int> nodes = HwlocDeviceNumaNodes();
    return nodes;
  }
  std::map<std::string, int> nodes;
  for (const char* kind : {"class/net", "class/infiniband"}) {
    for (const fs::path& path : SortedEntries(fs::path(sysfs_root_) / kind)) {
      std::error_code error;
      if (fs::exists(path / "device", error)) nodes[path.filename().string()] = only;
    }
  }
  return nodes;
}

std::map<std::string, int> HwlocDeviceNumaNodes(const std::string& xml) {
  std::map<std::string, int> nodes;
  hwloc_topology_t topology;
  if (hwloc_topology_init(&topology) != 0) return nodes;
  hwloc_topology_set_io_types_filter(topology, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  bool ready = xml.empty() || hwloc_topology_set_xmlbuffer(topology, xml.c_str(),
                                                           static_cast<int>(xml.size() + 1)) == 0;
  if (ready && hwloc_topology_load(topology) == 0) {
    hwloc_obj_t device = nullptr;
    while ((device = hwloc_get_next_osdev(topology, device)) != nullptr) {
      if (device->name == nullptr || (device->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK &&
                                      device->attr->osdev.type != HWLOC_OBJ_OSDEV_OPENFABRICS)) {
        continue;
      }
      hwloc_obj_t parent = hwloc_get_non_io_ancestor_obj(topology, device);
      int node = -1;
      if (parent != nullptr && parent->nodeset != nullptr &&
          hwloc_bitmap_weight(parent->nodeset) == 1) {
        node = hwloc_bitmap_first(parent->nodeset);
      }
      nodes[device->name] = node;
    }
  }
  hwloc_topology_destroy(topology);
  return nodes;
}

HostNics DiscoverNics(const NicSource& source, const NicOptions& options) {
  HostNics nics;
  nics.interfaces = source.Interfaces();
  nics.rdma = source.RdmaDevices(&nics.verbs);
  std::map<std::string, int> nodes = source.DeviceNumaNodes();
  auto node_of = [&nodes](const std::string& name) {
    auto found = nodes.find(name);
    return found == nodes.end() ? -1 : found->second;
  };
  for (RdmaDevice& device : nics.rdma) {
    device.numa_node = node_of(device.name);
    for (RdmaPort& port : device.ports) port.allowed = options.rdma.Matches(device.name, port.port);
  }
  for (NicInfo& nic : nics.interfaces) {
    nic.numa_node = node_of(nic.name);
    if (nic.numa_node < 0 && !nic.rdma_device.empty()) {
      const RdmaDevice* device = nics.Rdma(nic.rdma_device);
      if (device != nullptr) nic.numa_node = device->numa_node;
    }
    // NCCL leaves docker bridges out unless asked for them.
    nic.allowed = options.interfaces.empty() ? !absl::StartsWith(nic.name, "docker")
                                             : options.interfaces.Matches(nic.name);
  }
  return nics;
}

NicChoice ChooseNic(const HostNics& nics, int numa_node, int spread) {
  auto near = [numa_node](int node) { return numa_node >= 0 && node == numa_node; };
  auto usable_port = [&nics](const std::string& device_name, int port) -> const RdmaPort* {
    const RdmaDevice* device = nics.Rdma(device_name);
    const RdmaPort* entry = device == nullptr ? nullptr : device->Port(port);
    return entry != nullptr && entry->active && entry->allowed ? entry : nullptr;
  };
  // Lower keys are better: loopback, off the rank's node, no RDMA, slower.
  auto key = [&](const NicInfo& nic) {
    return std::make_tuple(nic.loopback, !near(nic.numa_node),
                           usable_port(nic.rdma_device, nic.rdma_port) == nullptr,
                           -std::max<int64_t>(nic.speed_mbps, 0));
  };
  NicChoice choice;
  std::vector<const NicInfo*> best;
  for (const NicInfo& nic : nics.interfaces) {
    if (!nic.allowed || !nic.up || nic.ipv4.empty()) continue;
    if (!best.empty() && key(nic) > key(*best.front())) continue;
    if (!best.empty() && key(nic) < key(*best.front())) best.clear();
    best.push_back(&nic);  // interfaces come by name, so the turns are in name order
  }
  if (!best.empty()) {
    const NicInfo& nic = *best[static_cast<size_t>(std::max(spread, 0)) % best.size()];
    choice.interface = nic.name;
    choice.ip = nic.ipv4.front();
    if (usable_port(nic.rdma_device, nic.rdma_port) != nullptr) {
      choice.rdma_device = nic.rdma_device;
      choice.rdma_port = nic.rdma_port;
      return choice;
    }
  }
  using PortKey = std::tuple<bool, double>;
  std::vector<std::pair<const RdmaDevice*, const RdmaPort*>> ports;
  PortKey best_port{true, 0};
  for (const RdmaDevice& device : nics.rdma) {
    for (const RdmaPort& port : device.ports) {
      if (!port.active || !port.allowed) continue;
      PortKey port_key{!near(device.numa_node), -port.gbps};
      if (!ports.empty() && port_key > best_port) continue;
      if (ports.empty() || port_key < best_port) ports.clear();
      best_port = port_key;
      ports.emplace_back(&device, &port);
    }
  }
  if (!ports.empty()) {
    const auto& [device, port] = ports[static_cast<size_t>(std::max(spread, 0)) % ports.size()];
    choice.rdma_device = device->name;
    choice.rdma_port = port->port;
  }
  return choice;
}

double InfinibandGbps(int active_speed, int active_width) {
  double lane = 0;
  switch (active_speed) {
    case 1: lane = 2.5; break;        // SDR
    case 2: lane = 5.0; break;        // DDR
    case 4: lane = 10.0; break;       // QDR
    case 8: lane = 10.3125; break;    // FDR10
    case 16: lane = 14.0625; break;   // FDR
    case 32: lane = 25.78125; break;  // EDR
    case 64: lane = 50.0; break;      // HDR
    case 128: lane = 100.0; break;    // NDR
    default: return 0;
  }
  int lanes = 0;
  switch (active_width) {
    case 1: lanes = 1; break;
    case 2: lanes = 4; break;
    case 4: lanes = 8; break;
    case 8: lanes = 12; break;
    case 16: lanes = 2; break;
    default: return 0;
  }
  return lane * lanes;
}

const char* InfinibandWidthName(int active_width) {
  switch (active_width) {
    case 1: return "1X";
    case 2: return "4X";
    case 4: return "8X";
    case 8: return "12X";
    case 16: return "2X";
  }
  return "?";
}

const char* InfinibandSpeedName(int active_speed) {
  switch (active_speed) {
    case 1: return "SDR";
    case 2: return "DDR";
    case 4: return "QDR";
    case 8: return "FDR10";
    case 16: return "FDR";
    case 32: return "EDR";
    case 64: return "HDR";
    case 128: return "NDR";
  }
  return "?";
}

json NicsToJson(const HostNics& nics) {
  json interfaces = json::array();
  for (const NicInfo& nic : nics.interfaces) {
    interfaces.push_back({{"name", nic.name},
                          {"state", nic.state},
                          {"speed_mbps", nic.speed_mbps},
                          {"mtu", nic.mtu},
                          {"virtual", nic.virtual_device},
                          {"ipv4", nic.ipv4},
                          {"up", nic.up},
                          {"loopback", nic.loopback},
                          {"numa_node", nic.numa_node},
                          {"pci", nic.pci},
                          {"rdma_device", nic.rdma_device},
                          {"rdma_port", nic.rdma_port},
                          {"allowed", nic.allowed}});
  }
  json devices = json::array();
  for (const RdmaDevice& device : nics.rdma) {
    json ports = json::array();
    for (const RdmaPort& port : device.ports) {
      ports.push_back({{"port", port.port},
                       {"state", port.state},
                       {"active", port.active},
                       {"link_layer", port.link_layer},
                       {"speed_gbps", port.gbps},
                       {"active_speed", port.active_speed},
                       {"active_width", port.active_width},
                       {"allowed", port.allowed}});
    }
    json entry = {{"name", device.name}, {"numa_node", device.numa_node}, {"ports", ports}};
    if (!device.error.empty()) entry["error"] = device.error;
    devices.push_back(std::move(entry));
  }
  return {{"nics", interfaces}, {"rdma", {{"library", nics.verbs}, {"devices", devices}}}};
}

absl::StatusOr<HostNics> NicsFromJson(const json& document) {
  // A peer of the same build wrote it; anything else is another job on the same store.
  try {
    HostNics nics;
    for (const json& entry : document.at("nics")) {
      NicInfo nic;
      nic.name = entry.at("name").get<std::string>();
      nic.state = entry.at("state").get<std::string>();
      nic.speed_mbps = JsonInteger(entry, "speed_mbps", -1, INT64_MAX);
      nic.mtu = JsonInt(entry, "mtu");
      nic.virtual_device = entry.at("virtual").get<bool>();
      nic.ipv4 = entry.at("ipv4").get<std::vector<std::string>>();
      nic.up = entry.at("up").get<bool>();
      nic.loopback = entry.at("loopback").get<bool>();
      nic.numa_node = JsonInt(entry, "numa_node");
      nic.pci = entry.at("pci").get<std::string>();
      nic.rdma_device = entry.at("rdma_device").get<std::string>();
      nic.rdma_port = JsonInt(entry, "rdma_port");
      nic.allowed = entry.at("allowed").get<bool>();
      nics.interfaces.push_back(std::move(nic));
    }
    const json& rdma = document.at("rdma");
    nics.verbs = rdma.at("library").get<bool>();
    for (const json& entry : rdma.at("devices")) {
      RdmaDevice device;
      device.name = entry.at("name").get<std::string>();
      device.numa_node = JsonInt(entry, "numa_node");
      device.error = entry.value("error", "");
      for (const json& port_entry : entry.at("ports")) {
        RdmaPort port;
        port.port = JsonInt(port_entry, "port");
        port.state = port_entry.at("state").get<std::string>();
        port.active = port_entry.at("active").get<bool>();
        port.link_layer = port_entry.at("link_layer").get<std::string>();
        port.gbps = JsonNumber(port_entry, "speed_gbps");
        port.active_speed = JsonInt(port_entry, "active_speed");
        port.active_width = JsonInt(port_entry, "active_width");
        port.allowed = port_entry.at("allowed").get<bool>();
        device.ports.push_back(std::move(port));
      }
      nics.rdma.push_back(std::move(device));
    }
    return nics;
  } catch (const std::exception& error) {
    return absl::DataLossError(absl::StrCat("malformed NIC list: ", error.what()));
  }
}

}  // namespace cohort
