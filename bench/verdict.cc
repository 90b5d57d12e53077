#include "bench/verdict.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/stats.h"

namespace cohort::bench {
namespace {

// A figure in a printf format chosen at run time (absl::StrFormat wants it at compile time).
std::string FormatFigure(const char* format, double value) {
  char text[64];
  std::snprintf(text, sizeof(text), format, value);
  return text;
}


using nlohmann::json;

std::string Gbps(double value) { return absl::StrFormat("%.3g GB/s", value); }
std::string Micros(double value) { return absl::StrFormat("%.3g us", value); }
std::string Percent(double fraction) { return absl::StrFormat("%.0f%%", fraction * 100); }

void Raise(Level& level, Level to) { level = std::max(level, to); }

std::string LinkName(const std::vector<std::string>& nodes, int a, int b) {
  return absl::StrCat(nodes[a], "-", nodes[b]);
}

absl::Status ReadNumber(const json& object, const char* key, double* target) {
  if (!object.contains(key)) return absl::OkStatus();
  const json& value = object.at(key);
  if (!value.is_number() || value.get<double>() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\" must be a non-negative number, not ", value.dump()));
  }
  *target = value.get<double>();
  return absl::OkStatus();
}

absl::Status CheckKeys(const json& object, const std::set<std::string>& known, const char* where) {
  if (!object.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
  }
  for (const auto& item : object.items()) {
    if (known.count(item.key()) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown key \"", item.key(), "\" in ", where,
                                                     "; accepted: ", absl::StrJoin(known, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Expectations::Link> ParseLink(const json& object, const std::string& where) {
  Expectations::Link link;
  absl::Status status = CheckKeys(object, {"min_bandwidth_gbps", "max_latency_us"}, where.c_str());
  if (status.ok()) status = ReadNumber(object, "min_bandwidth_gbps", &link.min_bandwidth_gbps);
  if (status.ok()) status = ReadNumber(object, "max_latency_us", &link.max_latency_us);
  if (!status.ok()) return status;
  return link;
}

absl::StatusOr<Expectations::Node> ParseNode(const json& object, const std::string& where) {
  Expectations::Node node;
  absl::Status status = CheckKeys(object,
                                  {"min_p2p_bandwidth_gbps", "max_latency_us", "min_memcpy_gbps",
                                   "min_intra_allreduce_busbw_gbps", "min_gpus"},
                                  where.c_str());
  double gpus = -1;
  if (status.ok())
    status = ReadNumber(object, "min_p2p_bandwidth_gbps", &node.min_p2p_bandwidth_gbps);
  if (status.ok()) status = ReadNumber(object, "max_latency_us", &node.max_latency_us);
  if (status.ok()) status = ReadNumber(object, "min_memcpy_gbps", &node.min_memcpy_gbps);
  if (status.ok()) {
    status =
        ReadNumber(object, "min_intra_allreduce_busbw_gbps", &node.min_intra_allreduce_busbw_gbps);
  }
  if (status.ok()) status = ReadNumber(object, "min_gpus", &gpus);
  if (!status.ok()) return status;
  node.min_gpus = static_cast<int>(gpus);
  return node;
}

// A per-name entry overrides the defaults it names.
Expectations::Link LinkExpectation(const Expectations& expectations, const std::string& a,
                                   const std::string& b) {
  Expectations::Link result = expectations.link;
  for (const std::string& key : {absl::StrCat(a, "-", b), absl::StrCat(b, "-", a)}) {
    auto found = expectations.links.find(key);
    if (found == expectations.links.end()) continue;
    if (found->second.min_bandwidth_gbps >= 0) {
      result.min_bandwidth_gbps = found->second.min_bandwidth_gbps;
    }
    if (found->second.max_latency_us >= 0) result.max_latency_us = found->second.max_latency_us;
  }
  return result;
}

Expectations::Node NodeExpectation(const Expectations& expectations, const std::string& name) {
  Expectations::Node result = expectations.node;
  auto found = expectations.nodes.find(name);
  if (found == expectations.nodes.end()) return result;
  const Expectations::Node& own = found->second;
  if (own.min_p2p_bandwidth_gbps >= 0) result.min_p2p_bandwidth_gbps = own.min_p2p_bandwidth_gbps;
  if (own.max_latency_us >= 0) result.max_latency_us = own.max_latency_us;
  if (own.min_memcpy_gbps >= 0) result.min_memcpy_gbps = own.min_memcpy_gbps;
  if (own.min_intra_allreduce_busbw_gbps >= 0) {
    result.min_intra_allreduce_busbw_gbps = own.min_intra_allreduce_busbw_gbps;
  }
  if (own.min_gpus >= 0) result.min_gpus = own.min_gpus;
  return result;
}

// A figure where more is better, against a minimum (when given) or the median. Returns the
// finding, or "" when it passes.
std::string CheckAtLeast(const char* what, double value, double minimum, double median,
                         double threshold, std::string (*format)(double)) {
  if (value < 0) return "";
  if (minimum >= 0) {
    if (value < minimum) {
      return absl::StrCat(what, " ", format(value), " is below the expected ", format(minimum));
    }
    return "";
  }
  if (median > 0 && value < threshold * median) {
    return absl::StrCat(what, " ", format(value), " is ", Percent(value / median),
                        " of the cluster median ", format(median));
  }
  return "";
}

// A latency, against a maximum (when given) or median / threshold + slack.
std::string CheckLatency(const char* what, double value, double maximum, double median,
                         const Expectations& expectations) {
  if (value < 0) return "";
  if (maximum >= 0) {
    if (value > maximum) {
      return absl::StrCat(what, " ", Micros(value), " is above the expected ", Micros(maximum));
    }
    return "";
  }
  if (median > 0 && value > median / expectations.threshold + expectations.latency_slack_us) {
    return absl::StrCat(what, " ", Micros(value), " is ", absl::StrFormat("%.1fx", value / median),
                        " the cluster median ", Micros(median));
  }
  return "";
}

std::vector<double> Present(const std::vector<double>& values) {
  std::vector<double> present;
  for (double value : values) {
    if (value >= 0) present.push_back(value);
  }
  return present;
}

// Inventory differences that make a node unfit: an interface or RDMA port that is up on most
// nodes but not on this one, a slower link speed than the others', fewer GPUs.
void CheckInventory(const Measurements& m, const Expectations& expectations,
                    std::vector<NodeVerdict>& nodes) {
  const int count = static_cast<int>(m.nodes.size());
  if (static_cast<int>(m.inventory.size()) != count) return;
  // name -> per node: state up?, speed
  struct Seen {
    std::vector<int> up;  // 1 up, 0 present but down, -1 absent
    std::vector<double> speed;
  };
  std::map<std::string, Seen> nics, ports;
  auto entry = [count](std::map<std::string, Seen>& map, const std::string& key) -> Seen& {
    auto [it, fresh] = map.try_emplace(key);
    if (fresh) {
      it->second.up.assign(count, -1);
      it->second.speed.assign(count, -1);
    }
    return it->second;
  };
  for (int node = 0; node < count; ++node) {
    const json& inventory = m.inventory[node];
    for (const json& nic : inventory.value("nics", json::array())) {
      // Bridges and tunnels (no device, no speed) come and go with containers; skip them.
      if (nic.value("virtual", false) && nic.value("speed_mbps", -1.0) <= 0) continue;
      Seen& seen = entry(nics, nic.value("name", "?"));
      seen.up[node] = nic.value("state", "") == "up" ? 1 : 0;
      seen.speed[node] = nic.value("speed_mbps", -1.0);
    }
    const json& rdma = inventory.value("rdma", json::object());
    for (const json& device : rdma.value("devices", json::array())) {
      for (const json& port : device.value("ports", json::array())) {
        Seen& seen =
            entry(ports, absl::StrCat(device.value("name", "?"), " port ", port.value("port", 0)));
        seen.up[node] = port.value("active", false) ? 1 : 0;
        seen.speed[node] = port.value("speed_gbps", -1.0);
      }
    }
  }
  auto judge = [&](const std::map<std::string, Seen>& map, const char* down_word,
                   const char* unit) {
    for (const auto& [name, seen] : map) {
      int up = static_cast<int>(std::count(seen.up.begin(), seen.up.end(), 1));
      if (2 * up < count) continue;  // up on a minority: a port the cluster does not use
      std::vector<double> speeds;
      for (int node = 0; node < count; ++node) {
        if (seen.up[node] == 1 && seen.speed[node] > 0) speeds.push_back(seen.speed[node]);
      }
      double median = Median(speeds);
      for (int node = 0; node < count; ++node) {
        if (seen.up[node] != 1) {
          Raise(nodes[node].level, Level::kFail);
          nodes[node].reasons.push_back(
              absl::StrCat(name, seen.up[node] < 0 ? " missing" : absl::StrCat(" ", down_word),
                           " (", up, " of ", count, " nodes have it up)"));
        } else if (median > 0 && seen.speed[node] > 0 &&
                   seen.speed[node] < expectations.threshold * median) {
          Raise(nodes[node].level, Level::kSlow);
          nodes[node].reasons.push_back(absl::StrFormat(
              "%s runs at %g %s, the others at %g %s", name, seen.speed[node], unit, median, unit));
        }
      }
    }
  };
  judge(nics, "down", "Mb/s");
  judge(ports, "not ACTIVE", "Gb/s");
  std::vector<double> gpu_counts;
  for (int node = 0; node < count; ++node) {
    gpu_counts.push_back(
        static_cast<double>(m.inventory[node].value("gpus", json::array()).size()));
  }
  double median_gpus = Median(gpu_counts);
  for (int node = 0; node < count; ++node) {
    int minimum = NodeExpectation(expectations, m.nodes[node]).min_gpus;
    double wanted = minimum >= 0 ? minimum : median_gpus;
    if (gpu_counts[node] < wanted) {
      Raise(nodes[node].level, Level::kFail);
      nodes[node].reasons.push_back(absl::StrFormat("%g GPUs, %s %g", gpu_counts[node],
                                                    minimum >= 0 ? "expected" : "the others have",
                                                    wanted));
    }
  }
}

}  // namespace

const char* LevelName(Level level) {
  switch (level) {
    case Level::kPass:
      return "PASS";
    case Level::kSlow:
      return "SLOW";
    case Level::kFail:
      return "FAIL";
  }
  return "?";
}

double LinkVerdict::bandwidth() const {
  if (bandwidth_ab < 0) return bandwidth_ba;
  if (bandwidth_ba < 0) return bandwidth_ab;
  return std::min(bandwidth_ab, bandwidth_ba);
}

absl::StatusOr<Expectations> ParseExpectations(const json& document) {
  Expectations expectations;
  absl::Status status = CheckKeys(
      document, {"threshold", "latency_slack_us", "link", "links", "node", "nodes", "cluster"},
      "the expectations");
  if (status.ok()) status = ReadNumber(document, "threshold", &expectations.threshold);
  if (status.ok()) {
    status = ReadNumber(document, "latency_slack_us", &expectations.latency_slack_us);
  }
  if (!status.ok()) return status;
  if (expectations.threshold <= 0 || expectations.threshold > 1) {
    return absl::InvalidArgumentError("\"threshold\" must be a fraction above 0 and at most 1");
  }
  if (document.contains("link")) {
    auto link = ParseLink(document.at("link"), "\"link\"");
    if (!link.ok()) return link.status();
    expectations.link = *link;
  }
  if (document.contains("links")) {
    status = CheckKeys(document.at("links"), {}, "\"links\"");
    for (const auto& item : document.at("links").items()) {
      auto link = ParseLink(item.value(), absl::StrCat("\"links\".\"", item.key(), "\""));
      if (!link.ok()) return link.status();
      expectations.links[item.key()] = *link;
    }
  }
  if (document.contains("node")) {
    auto node = ParseNode(document.at("node"), "\"node\"");
    if (!node.ok()) return node.status();
    expectations.node = *node;
  }
  if (document.contains("nodes")) {
    if (!document.at("nodes").is_object()) {
      return absl::InvalidArgumentError("\"nodes\" must be an object keyed by host name");
    }
    for (const auto& item : document.at("nodes").items()) {
      auto node = ParseNode(item.value(), absl::StrCat("\"nodes\".\"", item.key(), "\""));
      if (!node.ok()) return node.status();
      expectations.nodes[item.key()] = *node;
    }
  }
  if (document.contains("cluster")) {
    const json& cluster = document.at("cluster");
    status = CheckKeys(cluster, {"min_allreduce_busbw_gbps"}, "\"cluster\"");
    if (status.ok()) {
      status = ReadNumber(cluster, "min_allreduce_busbw_gbps",
                          &expectations.min_cluster_allreduce_busbw_gbps);
    }
    if (!status.ok()) return status;
  }
  return expectations;
}

absl::StatusOr<Expectations> LoadExpectations(const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read the expectations file ", path));
  json document = json::parse(file, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  if (document.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not valid JSON"));
  }
  auto expectations = ParseExpectations(document);
  if (!expectations.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", expectations.status().message()));
  }
  expectations->source = path;
  return expectations;
}

Report Judge(const Measurements& m, const Expectations& expectations) {
  Report report;
  const int count = static_cast<int>(m.nodes.size());
  const double threshold = expectations.threshold;
  report.nodes.resize(count);
  for (int node = 0; node < count; ++node) report.nodes[node].name = m.nodes[node];

  // Links: the best sample of each direction (a slow moment is not a slow link), the lowest
  // latency; failed measurements count only when no sample succeeded.
  std::map<std::pair<int, int>, LinkVerdict> links;
  std::map<std::pair<int, int>, std::string> errors;
  for (const PairSample& sample : m.samples) {
    auto key = std::make_pair(std::min(sample.a, sample.b), std::max(sample.a, sample.b));
    LinkVerdict& link = links[key];
    link.a = key.first;
    link.b = key.second;
    double ab = sample.a < sample.b ? sample.bandwidth_ab : sample.bandwidth_ba;
    double ba = sample.a < sample.b ? sample.bandwidth_ba : sample.bandwidth_ab;
    if (!sample.error.empty()) {
      errors[key] = sample.error;
      continue;
    }
    ++link.samples;
    link.bandwidth_ab = std::max(link.bandwidth_ab, ab);
    link.bandwidth_ba = std::max(link.bandwidth_ba, ba);
    if (sample.latency_us >= 0) {
      link.latency_us =
          link.latency_us < 0 ? sample.latency_us : std::min(link.latency_us, sample.latency_us);
    }
  }
  std::vector<double> link_bandwidths, link_latencies;
  for (auto& [key, link] : links) {
    if (link.samples > 0) {
      link_bandwidths.push_back(link.bandwidth());
      if (link.latency_us >= 0) link_latencies.push_back(link.latency_us);
    }
  }
  const double median_link_bandwidth = Median(link_bandwidths);
  const double median_link_latency = Median(link_latencies);

  // Each node's network figures: its best link and its lowest latency. A node with a bad NIC
  // has no good link; a good node keeps one even when some of its peers are bad.
  for (auto& [key, link] : links) {
    for (int end : {link.a, link.b}) {
      NodeVerdict& node = report.nodes[end];
      if (link.samples == 0) continue;
      node.p2p_gbps = std::max(node.p2p_gbps, link.bandwidth());
      if (link.latency_us >= 0) {
        node.latency_us =
            node.latency_us < 0 ? link.latency_us : std::min(node.latency_us, link.latency_us);
      }
    }
  }
  std::vector<double> node_p2p, node_latency;
  for (const NodeVerdict& node : report.nodes) {
    if (node.p2p_gbps >= 0) node_p2p.push_back(node.p2p_gbps);
    if (node.latency_us >= 0) node_latency.push_back(node.latency_us);
  }
  const double median_p2p = Median(node_p2p);
  const double median_latency = Median(node_latency);
  const double median_memcpy = Median(Present(m.memcpy_gbps));
  const double median_intra = Median(Present(m.intra_busbw_gbps));

  // Stragglers: a rank whose fastest sample of fixed work is below threshold x the median speed.
  std::vector<double> computes;
  for (const RankTiming& timing : m.ranks) {
    if (timing.compute_best_us > 0) computes.push_back(timing.compute_best_us);
  }
  const double median_compute = Median(computes);

  for (int index = 0; index < count; ++index) {
    NodeVerdict& node = report.nodes[index];
    const Expectations::Node expect = NodeExpectation(expectations, node.name);
    bool has_links = false, any_link_ok = false;
    for (const auto& [key, link] : links) {
      if (link.a != index && link.b != index) continue;
      has_links = true;
      if (link.samples > 0) any_link_ok = true;
    }
    if (has_links && !any_link_ok) {
      Raise(node.level, Level::kFail);
      node.p2p_culprit = true;
      node.reasons.push_back("no point-to-point measurement with any other node succeeded");
    }
    std::string finding = CheckAtLeast("p2p bandwidth (best link)", node.p2p_gbps,
                                       expect.min_p2p_bandwidth_gbps, median_p2p, threshold, Gbps);
    if (!finding.empty()) {
      Raise(node.level, Level::kSlow);
      node.p2p_culprit = true;
      node.reasons.push_back(finding);
    }
    finding = CheckLatency("p2p latency (best link)", node.latency_us, expect.max_latency_us,
                           median_latency, expectations);
    if (!finding.empty()) {
      Raise(node.level, Level::kSlow);
      node.p2p_culprit = true;
      node.reasons.push_back(finding);
    }
    if (index < static_cast<int>(m.memcpy_gbps.size())) {
      node.memcpy_gbps = m.memcpy_gbps[index];
      finding = CheckAtLeast("memcpy", node.memcpy_gbps, expect.min_memcpy_gbps, median_memcpy,
                             threshold, Gbps);
      if (!finding.empty()) {
        Raise(node.level, Level::kSlow);
        node.reasons.push_back(finding);
      }
    }
    if (index < static_cast<int>(m.intra_busbw_gbps.size())) {
      node.intra_busbw_gbps = m.intra_busbw_gbps[index];
      finding = CheckAtLeast("intra-node allreduce busbw", node.intra_busbw_gbps,
                             expect.min_intra_allreduce_busbw_gbps, median_intra, threshold, Gbps);
      if (!finding.empty()) {
        Raise(node.level, Level::kSlow);
        node.reasons.push_back(finding);
      }
    }
    for (const RankTiming& timing : m.ranks) {
      if (timing.node != index || timing.compute_best_us <= 0 || median_compute <= 0) continue;
      double ratio = median_compute / timing.compute_best_us;
      if (node.compute_ratio < 0 || ratio < node.compute_ratio) {
        node.compute_ratio = ratio;
        node.slowest_rank = timing.rank;
      }
    }
    if (node.compute_ratio >= 0 && node.compute_ratio < threshold) {
      Raise(node.level, Level::kSlow);
      node.reasons.push_back(absl::StrFormat(
          "rank %d is a straggler: its fastest sample of fixed work took %s, %s of the median "
          "rank's speed",
          node.slowest_rank, Micros(median_compute / node.compute_ratio),
          Percent(node.compute_ratio)));
    }
  }
  CheckInventory(m, expectations, report.nodes);

  for (auto& [key, link] : links) {
    const std::string name = LinkName(m.nodes, link.a, link.b);
    const Expectations::Link expect =
        LinkExpectation(expectations, m.nodes[link.a], m.nodes[link.b]);
    if (link.samples == 0) {
      Raise(link.level, Level::kFail);
      link.reasons.push_back(absl::StrCat("measurement failed: ", errors[key]));
    } else {
      std::string finding = CheckAtLeast("bandwidth", link.bandwidth(), expect.min_bandwidth_gbps,
                                         median_link_bandwidth, threshold, Gbps);
      if (!finding.empty()) {
        Raise(link.level, Level::kSlow);
        link.reasons.push_back(finding);
      }
      finding = CheckLatency("latency", link.latency_us, expect.max_latency_us, median_link_latency,
                             expectations);
      if (!finding.empty()) {
        Raise(link.level, Level::kSlow);
        link.reasons.push_back(finding);
      }
    }
    if (link.level != Level::kPass) {
      if (report.nodes[link.a].p2p_culprit) {
        link.explained_by = link.a;
      } else if (report.nodes[link.b].p2p_culprit) {
        link.explained_by = link.b;
      }
    }
    report.links.push_back(link);
  }

  // The whole cluster's ring: it moves at the pace of its slowest member, so it is judged
  // against the slowest node's best link (or the expected minimum).
  if (m.cluster_busbw_gbps >= 0) {
    double slowest = -1;
    for (const NodeVerdict& node : report.nodes) {
      if (node.p2p_gbps >= 0)
        slowest = slowest < 0 ? node.p2p_gbps : std::min(slowest, node.p2p_gbps);
    }
    if (expectations.min_cluster_allreduce_busbw_gbps >= 0) {
      if (m.cluster_busbw_gbps < expectations.min_cluster_allreduce_busbw_gbps) {
        report.cluster_level = Level::kSlow;
        report.cluster_reasons.push_back(
            absl::StrCat("allreduce busbw ", Gbps(m.cluster_busbw_gbps), " is below the expected ",
                         Gbps(expectations.min_cluster_allreduce_busbw_gbps)));
      }
    } else if (slowest > 0 && m.cluster_busbw_gbps < threshold * slowest) {
      report.cluster_level = Level::kSlow;
      report.cluster_reasons.push_back(
          absl::StrCat("allreduce busbw ", Gbps(m.cluster_busbw_gbps), " is ",
                       Percent(m.cluster_busbw_gbps / slowest), " of the slowest node's best link ",
                       Gbps(slowest), " (links are fine alone but not all at once)"));
    }
  }

  // Culprits: the nodes that are not PASS, the bad links no bad node explains, and the cluster
  // allreduce when nothing else explains it.
  std::vector<std::string> details;
  for (const NodeVerdict& node : report.nodes) {
    Raise(report.overall, node.level);
    if (node.level == Level::kPass) continue;
    report.culprits.push_back(node.name);
    details.push_back(absl::StrCat(node.name, " ", LevelName(node.level), " (",
                                   absl::StrJoin(node.reasons, "; "), ")"));
  }
  for (const LinkVerdict& link : report.links) {
    Raise(report.overall, link.level);
    if (link.level == Level::kPass || link.explained_by >= 0) continue;
    std::string name = LinkName(m.nodes, link.a, link.b);
    report.culprits.push_back(name);
    details.push_back(absl::StrCat("link ", name, " ", LevelName(link.level), " (",
                                   absl::StrJoin(link.reasons, "; "), ")"));
  }
  Raise(report.overall, report.cluster_level);
  if (report.cluster_level != Level::kPass && report.culprits.empty()) {
    report.culprits.push_back("cluster allreduce");
    details.push_back(absl::StrCat("cluster allreduce ", LevelName(report.cluster_level), " (",
                                   absl::StrJoin(report.cluster_reasons, "; "), ")"));
  }
  if (report.overall == Level::kPass) {
    report.summary = absl::StrFormat(
        "PASS: %d nodes, %d links, nothing below %s", count, static_cast<int>(report.links.size()),
        expectations.source.empty() ? absl::StrCat(Percent(threshold), " of the cluster median")
                                    : absl::StrCat("the expectations in ", expectations.source));
  } else {
    report.summary = absl::StrCat(LevelName(report.overall), ": ", absl::StrJoin(details, "; "));
  }
  report.exit_code = report.overall == Level::kPass ? 0 : 1;
  return report;
}

void PrintReport(FILE* out, const Measurements& m, const Report& report,
                 const Expectations& expectations) {
  const int count = static_cast<int>(m.nodes.size());
  int ranks = 0;
  for (int r : m.ranks_per_node) ranks += r;
  std::fprintf(
      out, "# cohort-bench validate: %d nodes, %d ranks, %s\n", count, ranks,
      expectations.source.empty()
          ? absl::StrCat("thresholds: ", Percent(expectations.threshold), " of the cluster median")
                .c_str()
          : absl::StrCat("thresholds from ", expectations.source).c_str());
  std::fprintf(out, "#\n# Inventory\n");
  std::fprintf(out, "#  %-16s %5s %5s %4s %8s  %s\n", "node", "ranks", "cores", "numa", "memory",
               "network / rdma / gpus");
  for (int node = 0; node < count && node < static_cast<int>(m.inventory.size()); ++node) {
    const json& inventory = m.inventory[node];
    std::vector<std::string> parts;
    for (const json& nic : inventory.value("nics", json::array())) {
      double speed = nic.value("speed_mbps", -1.0);
      parts.push_back(absl::StrCat(nic.value("name", "?"), " ", nic.value("state", "?"),
                                   speed > 0 ? absl::StrFormat(" %gMb/s", speed) : ""));
    }
    const json& rdma = inventory.value("rdma", json::object());
    for (const json& device : rdma.value("devices", json::array())) {
      for (const json& port : device.value("ports", json::array())) {
        parts.push_back(absl::StrFormat("%s:%d %s %gGb/s", device.value("name", "?"),
                                        port.value("port", 0), port.value("state", "?"),
                                        port.value("speed_gbps", 0.0)));
      }
    }
    if (rdma.value("devices", json::array()).empty()) {
      parts.push_back(rdma.value("library", false) ? "no rdma devices" : "rdma: not built");
    }
    size_t gpus = inventory.value("gpus", json::array()).size();
    parts.push_back(gpus > 0 ? absl::StrCat(gpus, " gpus") : "no gpus");
    std::fprintf(out, "#  %-16s %5d %5d %4d %6.0fGiB  %s\n", m.nodes[node].c_str(),
                 node < static_cast<int>(m.ranks_per_node.size()) ? m.ranks_per_node[node] : 0,
                 inventory.value("cores_usable", 0), inventory.value("numa_nodes", 0),
                 inventory.value("memory_bytes", 0.0) / double(1 << 30),
                 absl::StrJoin(parts, ", ").c_str());
  }

  if (count > 1) {
    std::map<std::pair<int, int>, double> bandwidth;  // (from, to)
    std::map<std::pair<int, int>, double> latency;
    for (const LinkVerdict& link : report.links) {
      bandwidth[{link.a, link.b}] = link.bandwidth_ab;
      bandwidth[{link.b, link.a}] = link.bandwidth_ba;
      latency[{link.a, link.b}] = latency[{link.b, link.a}] = link.latency_us;
    }
    auto matrix = [&](const char* title, const std::map<std::pair<int, int>, double>& values,
                      const char* format) {
      std::fprintf(out, "#\n# %s\n#  %-12s", title, "");
      for (int column = 0; column < count; ++column) {
        std::fprintf(out, " %10.10s", m.nodes[column].c_str());
      }
      std::fprintf(out, "\n");
      for (int row = 0; row < count; ++row) {
        std::fprintf(out, "#  %-12.12s", m.nodes[row].c_str());
        for (int column = 0; column < count; ++column) {
          auto found = values.find({row, column});
          if (row == column) {
            std::fprintf(out, " %10s", "-");
          } else if (found == values.end() || found->second < 0) {
            std::fprintf(out, " %10s", "failed");
          } else {
            std::fprintf(out, " %10s", FormatFigure(format, found->second).c_str());
          }
        }
        std::fprintf(out, "\n");
      }
    };
    if (count <= 32) {
      std::fprintf(out,
                   "#\n# Point to point: %d round-robin rounds + %d random re-pairings + %d "
                   "rounds re-measuring slow-looking links, the pairs of a round in parallel; "
                   "best sample of each pair\n",
                   m.rounds, m.repairings, m.confirmation_rounds);
      matrix("Bandwidth (GB/s; the row node sends to the column node)", bandwidth, "%.4g");
      matrix("Latency (us; half a round trip of 8 bytes)", latency, "%.4g");
    } else {
      std::fprintf(out, "#\n# Point to point: %d nodes, matrices left out (see the JSON report)\n",
                   count);
    }
  }

  std::fprintf(out, "#\n# Nodes\n#  %-16s %-7s %12s %10s %10s %12s %8s  %s\n", "node", "verdict",
               "p2p best", "latency", "memcpy", "intra ar", "compute", "findings");
  std::fprintf(out, "#  %-16s %-7s %12s %10s %10s %12s %8s\n", "", "", "(GB/s)", "(us)", "(GB/s)",
               "busbw(GB/s)", "(slowest)");
  auto figure = [](double value, const char* format) {
    return value < 0 ? std::string("-") : FormatFigure(format, value);
  };
  for (const NodeVerdict& node : report.nodes) {
    std::fprintf(out, "#  %-16s %-7s %12s %10s %10s %12s %8s  %s\n", node.name.c_str(),
                 LevelName(node.level), figure(node.p2p_gbps, "%.4g").c_str(),
                 figure(node.latency_us, "%.4g").c_str(), figure(node.memcpy_gbps, "%.4g").c_str(),
                 figure(node.intra_busbw_gbps, "%.4g").c_str(),
                 node.compute_ratio < 0 ? "-" : Percent(node.compute_ratio).c_str(),
                 node.reasons.empty() ? "" : absl::StrJoin(node.reasons, "; ").c_str());
  }
  if (!report.links.empty()) {
    int bad = 0;
    for (const LinkVerdict& link : report.links) bad += link.level != Level::kPass;
    std::fprintf(out, "#\n# Links: %d of %d pass\n", static_cast<int>(report.links.size()) - bad,
                 static_cast<int>(report.links.size()));
    for (const LinkVerdict& link : report.links) {
      if (link.level == Level::kPass) continue;
      std::fprintf(out, "#  %-24s %s  %s%s\n", LinkName(m.nodes, link.a, link.b).c_str(),
                   LevelName(link.level), absl::StrJoin(link.reasons, "; ").c_str(),
                   link.explained_by >= 0
                       ? absl::StrCat(" (explained by ", m.nodes[link.explained_by], ")").c_str()
                       : "");
    }
  }
  if (m.cluster_busbw_gbps >= 0) {
    std::fprintf(out,
                 "#\n# Cluster allreduce (%s, %d ranks, %zu bytes): %.2f us, busbw %s  %s%s%s\n",
                 m.cluster_algorithm.c_str(), ranks, m.cluster_bytes, m.cluster_time_us,
                 Gbps(m.cluster_busbw_gbps).c_str(), LevelName(report.cluster_level),
                 report.cluster_reasons.empty() ? "" : "  ",
                 absl::StrJoin(report.cluster_reasons, "; ").c_str());
  }
  std::fprintf(out, "#\n# Verdict: %s\n", LevelName(report.overall));
  std::fprintf(out, "# Culprits: %s\n",
               report.culprits.empty() ? "none" : absl::StrJoin(report.culprits, ", ").c_str());
  std::fprintf(out, "# Summary: %s\n", report.summary.c_str());
  std::fprintf(out, "# Took %.1f s\n#\n", m.seconds);
  std::fflush(out);
}

nlohmann::json ReportJson(const Measurements& m, const Report& report,
                          const Expectations& expectations) {
  auto number = [](double value) { return value < 0 ? json(nullptr) : json(value); };
  json nodes = json::array();
  for (size_t index = 0; index < report.nodes.size(); ++index) {
    const NodeVerdict& node = report.nodes[index];
    nodes.push_back({{"name", node.name},
                     {"verdict", LevelName(node.level)},
                     {"reasons", node.reasons},
                     {"ranks", index < m.ranks_per_node.size() ? m.ranks_per_node[index] : 0},
                     {"p2p_best_link_gbps", number(node.p2p_gbps)},
                     {"latency_us", number(node.latency_us)},
                     {"memcpy_gbps", number(node.memcpy_gbps)},
                     {"intra_allreduce_busbw_gbps", number(node.intra_busbw_gbps)},
                     {"compute_ratio", number(node.compute_ratio)},
                     {"slowest_rank", node.slowest_rank},
                     {"inventory", index < m.inventory.size() ? m.inventory[index] : json()}});
  }
  json links = json::array();
  for (const LinkVerdict& link : report.links) {
    links.push_back({{"a", m.nodes[link.a]},
                     {"b", m.nodes[link.b]},
                     {"verdict", LevelName(link.level)},
                     {"reasons", link.reasons},
                     {"bandwidth_ab_gbps", number(link.bandwidth_ab)},
                     {"bandwidth_ba_gbps", number(link.bandwidth_ba)},
                     {"latency_us", number(link.latency_us)},
                     {"samples", link.samples},
                     {"explained_by",
                      link.explained_by >= 0 ? json(m.nodes[link.explained_by]) : json(nullptr)}});
  }
  json samples = json::array();
  for (const PairSample& sample : m.samples) {
    samples.push_back({{"a", m.nodes[sample.a]},
                       {"b", m.nodes[sample.b]},
                       {"round", sample.round},
                       {"repairing", sample.repairing},
                       {"confirming", sample.confirming},
                       {"bandwidth_ab_gbps", number(sample.bandwidth_ab)},
                       {"bandwidth_ba_gbps", number(sample.bandwidth_ba)},
                       {"latency_us", number(sample.latency_us)},
                       {"error", sample.error.empty() ? json(nullptr) : json(sample.error)}});
  }
  json ranks = json::array();
  for (const RankTiming& timing : m.ranks) {
    ranks.push_back(
        {{"rank", timing.rank},
         {"node", timing.node < static_cast<int>(m.nodes.size()) ? json(m.nodes[timing.node])
                                                                 : json(nullptr)},
         {"compute_best_us", number(timing.compute_best_us)},
         {"compute_median_us", number(timing.compute_median_us)},
         {"wait_median_us", number(timing.wait_median_us)}});
  }
  return {
      {"tool", "cohort-bench validate"},
      {"verdict", LevelName(report.overall)},
      {"culprits", report.culprits},
      {"summary", report.summary},
      {"exit_code", report.exit_code},
      {"seconds", m.seconds},
      {"thresholds",
       {{"relative", expectations.threshold},
        {"latency_slack_us", expectations.latency_slack_us},
        {"expect_file", expectations.source.empty() ? json(nullptr) : json(expectations.source)}}},
      {"nodes", nodes},
      {"links", links},
      {"p2p",
       {{"rounds", m.rounds},
        {"repairings", m.repairings},
        {"confirmation_rounds", m.confirmation_rounds},
        {"samples", samples}}},
      {"ranks", ranks},
      {"intra_allreduce_bytes", m.intra_bytes},
      {"cluster_allreduce",
       {{"algorithm", m.cluster_algorithm},
        {"bytes", m.cluster_bytes},
        {"time_us", m.cluster_time_us},
        {"busbw_gbps", number(m.cluster_busbw_gbps)},
        {"verdict", LevelName(report.cluster_level)},
        {"reasons", report.cluster_reasons}}}};
}

}  // namespace cohort::bench
