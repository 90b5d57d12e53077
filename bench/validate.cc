#include "bench/validate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/descriptors.h"
#include "bench/inventory.h"
#include "bench/progress.h"
#include "bench/run_info.h"
#include "bench/stats.h"
#include "collectives/reduce.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace cohort::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// What one node measured of one pair in one round: its own sending direction, and the latency
// when it is the lower node of the pair.
struct HalfSample {
  int round = 0;
  bool repairing = false;
  bool confirming = false;
  int self = 0;
  int peer = 0;
  double bandwidth = -1;  // self -> peer, GB/s
  double latency_us = -1;
  std::string error;
};

json HalfJson(const HalfSample& s) {
  return {{"round", s.round},
          {"repairing", s.repairing},
          {"confirming", s.confirming},
          {"self", s.self},
          {"peer", s.peer},
          {"bandwidth", s.bandwidth},
          {"latency_us", s.latency_us},
          {"error", s.error}};
}

HalfSample HalfFromJson(const json& j) {
  HalfSample s;
  s.round = j.value("round", 0);
  s.repairing = j.value("repairing", false);
  s.confirming = j.value("confirming", false);
  s.self = j.value("self", 0);
  s.peer = j.value("peer", 0);
  s.bandwidth = j.value("bandwidth", -1.0);
  s.latency_us = j.value("latency_us", -1.0);
  s.error = j.value("error", "");
  return s;
}

// Point-to-point messages of one pair on the leaders' communicator, each bounded by `timeout`.
class Pair {
 public:
  Pair(Communicator& comm, int peer, absl::Duration timeout)
      : comm_(comm), peer_(peer), timeout_(timeout) {}

  std::shared_ptr<Work> Send(const void* data, size_t bytes) {
    SendOptions options;
    options.data = data;
    options.count = bytes;
    options.peer = peer_;
    options.timeout = timeout_;
    return comm_.Send(options);
  }
  std::shared_ptr<Work> Recv(void* data, size_t bytes) {
    RecvOptions options;
    options.data = data;
    options.count = bytes;
    options.peer = peer_;
    options.timeout = timeout_;
    return comm_.Recv(options);
  }
  absl::Status SendNow(const void* data, size_t bytes) { return Send(data, bytes)->Wait(); }
  absl::Status RecvNow(void* data, size_t bytes) { return Recv(data, bytes)->Wait(); }

 private:
  Communicator& comm_;
  int peer_;
  absl::Duration timeout_;
};

// Half a round trip of 8 bytes: the median of `iterations` after a few warm-up ones. The lower
// node sends first and measures; the other echoes.
absl::StatusOr<double> MeasureLatency(Pair& pair, bool first, int iterations) {
  uint64_t message = 0;
  std::vector<double> trips;
  const int warmup = 5;
  for (int i = 0; i < warmup + iterations; ++i) {
    if (first) {
      auto start = Clock::now();
      COHORT_RETURN_IF_ERROR(pair.SendNow(&message, sizeof(message)));
      COHORT_RETURN_IF_ERROR(pair.RecvNow(&message, sizeof(message)));
      if (i >= warmup) trips.push_back(Seconds(start) * 1e6 / 2);
    } else {
      COHORT_RETURN_IF_ERROR(pair.RecvNow(&message, sizeof(message)));
      COHORT_RETURN_IF_ERROR(pair.SendNow(&message, sizeof(message)));
    }
  }
  return first ? Median(trips) : -1.0;
}

// The sender tells the receiver what comes next: `count` messages of `bytes`; count 0 ends.
struct Control {
  uint64_t bytes = 0;
  uint64_t count = 0;
  uint64_t probe = 0;  // 1: a probe (one message), the sender decides what follows
};

// One direction of the bandwidth test. The sender probes with growing messages until one takes
// 10 ms (or reaches max_bytes), then streams enough of them back to back to last `seconds`; the
// receiver acknowledges each probe and the stream with one byte. Returns GB/s at the sender.
absl::StatusOr<double> MeasureBandwidth(Pair& pair, bool sending, const ValidateOptions& options,
                                        std::vector<char>& buffer) {
  char ack = 0;
  if (!sending) {
    while (true) {
      Control control;
      COHORT_RETURN_IF_ERROR(pair.RecvNow(&control, sizeof(control)));
      if (control.count == 0) return -1.0;
      if (buffer.size() < control.bytes) buffer.resize(control.bytes);
      Works works;
      for (uint64_t i = 0; i < control.count; ++i)
        works.push_back(pair.Recv(buffer.data(), control.bytes));
      for (const auto& work : works) COHORT_RETURN_IF_ERROR(work->Wait());
      COHORT_RETURN_IF_ERROR(pair.SendNow(&ack, 1));
    }
  }
  size_t bytes = std::min<size_t>(64 << 10, options.p2p_max_bytes);
  double seconds = 0;
  while (true) {
    Control control{bytes, 1, 1};
    if (buffer.size() < bytes) buffer.resize(bytes, 1);
    COHORT_RETURN_IF_ERROR(pair.SendNow(&control, sizeof(control)));
    auto start = Clock::now();
    COHORT_RETURN_IF_ERROR(pair.SendNow(buffer.data(), bytes));
    COHORT_RETURN_IF_ERROR(pair.RecvNow(&ack, 1));
    seconds = Seconds(start);
    if (seconds >= 0.01 || bytes >= options.p2p_max_bytes) break;
    bytes = std::min(bytes * 4, options.p2p_max_bytes);
  }
  double estimate = static_cast<double>(bytes) / std::max(seconds, 1e-9);
  uint64_t count = static_cast<uint64_t>(std::clamp(
      std::ceil(options.p2p_seconds * estimate / static_cast<double>(bytes)), 1.0, 4096.0));
  Control control{bytes, count, 0};
  COHORT_RETURN_IF_ERROR(pair.SendNow(&control, sizeof(control)));
  auto start = Clock::now();
  Works works;
  for (uint64_t i = 0; i < count; ++i) works.push_back(pair.Send(buffer.data(), bytes));
  for (const auto& work : works) COHORT_RETURN_IF_ERROR(work->Wait());
  COHORT_RETURN_IF_ERROR(pair.RecvNow(&ack, 1));
  double elapsed = Seconds(start);
  Control end{0, 0, 0};
  COHORT_RETURN_IF_ERROR(pair.SendNow(&end, sizeof(end)));
  return static_cast<double>(count * bytes) / elapsed / 1e9;
}

// Both directions and the latency of one pair; `self` < `peer` decides who goes first.
HalfSample MeasurePair(Communicator& comm, int self, int peer, const ValidateOptions& options,
                       std::vector<char>& buffer) {
  HalfSample sample;
  sample.self = self;
  sample.peer = peer;
  Pair pair(comm, peer, options.timeout);
  const bool lower = self < peer;
  auto latency = MeasureLatency(pair, lower, options.latency_iterations);
  if (!latency.ok()) {
    sample.error = absl::StrCat("latency test: ", latency.status().message());
    return sample;
  }
  sample.latency_us = *latency;
  for (bool sending : {lower, !lower}) {
    auto bandwidth = MeasureBandwidth(pair, sending, options, buffer);
    if (!bandwidth.ok()) {
      sample.error = absl::StrCat("bandwidth test: ", bandwidth.status().message());
      return sample;
    }
    if (sending) sample.bandwidth = *bandwidth;
  }
  return sample;
}

// This thread's CPU seconds: time it actually ran, so a busy machine's preemptions stay out.
double CpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// The node's memory bandwidth: bytes copied per CPU second, best of eight copies of 32 MiB
// (larger than most last-level cache slices). Measured twice in a run, in turns (below); the
// better one counts.
class MemcpyMeter {
 public:
  MemcpyMeter() : source_(kBytes, 1), target_(kBytes, 0) {}
  double Measure() {
    for (int i = 0; i < 8; ++i) {
      double start = CpuSeconds();
      std::memcpy(target_.data(), source_.data(), kBytes);
      asm volatile("" : : "r"(target_.data()) : "memory");
      double seconds = CpuSeconds() - start;
      if (seconds > 0) best_ = std::max(best_, static_cast<double>(kBytes) / seconds / 1e9);
    }
    return best_;
  }
  double best() const { return best_; }

 private:
  static constexpr size_t kBytes = size_t{32} << 20;
  std::vector<char> source_, target_;
  double best_ = 0;
};

// A fixed amount of local work, the same on every rank: a chain of dependent floating-point
// operations. Each waits for the one before, so its time is a number of core clock cycles -
// the core's own speed (a throttled or slow core shows) - and neither memory, caches nor a busy
// sibling hyperthread change it. One sample is about a tenth of a millisecond, far shorter than
// a scheduler time slice, so the fastest of many samples holds even where ranks outnumber cores.
class FixedWork {
 public:
  double SampleMicros() {
    auto start = Clock::now();
    double x = value_;
    for (int i = 0; i < kChain; ++i) {
      x = x * 0.999999 + 1e-6;
      asm volatile("" : "+x"(x));  // keeps the chain: the compiler may not fold or vectorize it
    }
    value_ = x;
    return Seconds(start) * 1e6;
  }

 private:
  static constexpr int kChain = 20000;
  double value_ = 1.0;
};

// The straggler check's steps: 40 samples of fixed work with short pauses between them (so the
// ranks of an oversubscribed node get turns to run alone), then an allreduce of every rank.
class Straggler {
 public:
  Straggler(Communicator& world, int rank, absl::Duration timeout)
      : world_(world), rank_(rank), timeout_(timeout), data_(16384, 1.0f) {
    work_.SampleMicros();
  }

  absl::Status Run(int steps) {
    AllreduceOptions step;
    step.input = data_.data();
    step.output = data_.data();
    step.count = data_.size();
    step.timeout = timeout_;
    for (int i = 0; i < steps; ++i) {
      double step_compute = 0;
      for (int sample = 0; sample < 40; ++sample) {
        double micros = work_.SampleMicros();
        step_compute += micros;
        fastest_ = fastest_ < 0 ? micros : std::min(fastest_, micros);
        std::this_thread::sleep_for(std::chrono::microseconds(100 + 37 * ((rank_ + sample) % 7)));
      }
      computes_.push_back(step_compute);
      auto start = Clock::now();
      COHORT_RETURN_IF_ERROR(world_.Allreduce(step)->Wait());
      waits_.push_back(Seconds(start) * 1e6);
    }
    return absl::OkStatus();
  }
  double fastest() const { return fastest_; }
  const std::vector<double>& computes() const { return computes_; }
  const std::vector<double>& waits() const { return waits_; }

 private:
  Communicator& world_;
  const int rank_;
  const absl::Duration timeout_;
  FixedWork work_;
  std::vector<float> data_;
  double fastest_ = -1;
  std::vector<double> computes_, waits_;
};

// The largest of every rank's `value`.
absl::StatusOr<double> Max(Communicator& comm, double value, absl::Duration timeout) {
  AllreduceOptions options;
  options.input = &value;
  options.output = &value;
  options.count = 1;
  options.dtype = DataType::kFloat64;
  options.op = ReduceOp::kMax;
  options.timeout = timeout;
  COHORT_RETURN_IF_ERROR(comm.Allreduce(options)->Wait());
  return value;
}

// Times `iterations` float32 sum allreduces of `bytes` after one warm-up. Returns the fastest
// iteration, as the slowest rank saw it: on a shared machine one descheduled rank stretches a
// single iteration, while a slow link or node slows every one of them.
absl::StatusOr<double> TimeAllreduce(Communicator& comm, size_t bytes, int iterations,
                                     const std::string& algorithm, absl::Duration timeout) {
  const size_t count = std::max<size_t>(bytes / sizeof(float), 1);
  std::vector<float> input(count, 1.0f), output(count);
  AllreduceOptions options;
  options.input = input.data();
  options.output = output.data();
  options.count = count;
  options.algorithm = algorithm;
  options.timeout = timeout;
  COHORT_RETURN_IF_ERROR(comm.Allreduce(options)->Wait());
  BarrierOptions barrier;
  barrier.timeout = timeout;
  COHORT_RETURN_IF_ERROR(comm.Barrier(barrier)->Wait());
  double seconds = -1;
  for (int i = 0; i < std::max(1, iterations); ++i) {
    auto start = Clock::now();
    COHORT_RETURN_IF_ERROR(comm.Allreduce(options)->Wait());
    seconds = seconds < 0 ? Seconds(start) : std::min(seconds, Seconds(start));
  }
  return Max(comm, seconds, timeout);
}

absl::Status Barrier(Communicator& comm, absl::Duration timeout) {
  BarrierOptions options;
  options.timeout = timeout;
  return comm.Barrier(options)->Wait();
}

// Memory bandwidth in turns: the nodes measure in up to four slots (node index modulo the slot
// count), a barrier between slots. Nodes that share one machine's memory (virtual machines,
// containers, the namespace test bed) would otherwise measure each other's copies.
absl::Status MeasureMemcpyInTurns(Communicator& world, MemcpyMeter* meter, int node,
                                  int node_count, absl::Duration timeout) {
  const int slots = std::min(4, node_count);
  for (int slot = 0; slot < slots; ++slot) {
    if (meter != nullptr && node % slots == slot) meter->Measure();
    COHORT_RETURN_IF_ERROR(Barrier(world, timeout));
  }
  return absl::OkStatus();
}

double BusFactor(int n) { return n > 1 ? 2.0 * (n - 1) / n : 0; }

// The pairs whose best measurements so far look slow next to the others (bandwidth below
// threshold x the median link, or latency above median / threshold + slack): they are measured
// again before anyone is blamed. `bandwidth[a * n + b]` is a -> b in GB/s (0: not measured),
// `latency[a * n + b]` the half round trip for a < b (0: not measured).
std::vector<std::pair<int, int>> SuspiciousPairs(int n, const std::vector<double>& bandwidth,
                                                 const std::vector<double>& latency,
                                                 double threshold, double slack_us) {
  std::vector<std::pair<int, int>> links;
  std::vector<double> bandwidths, latencies;
  for (int a = 0; a < n; ++a) {
    for (int b = a + 1; b < n; ++b) {
      double ab = bandwidth[a * n + b], ba = bandwidth[b * n + a];
      if (ab <= 0 || ba <= 0) continue;
      links.emplace_back(a, b);
      bandwidths.push_back(std::min(ab, ba));
      if (latency[a * n + b] > 0) latencies.push_back(latency[a * n + b]);
    }
  }
  const double median_bandwidth = Median(bandwidths);
  const double median_latency = Median(latencies);
  std::vector<std::pair<int, int>> suspicious;
  for (const auto& [a, b] : links) {
    double link_bandwidth = std::min(bandwidth[a * n + b], bandwidth[b * n + a]);
    double link_latency = latency[a * n + b];
    if (link_bandwidth < threshold * median_bandwidth ||
        (link_latency > 0 && link_latency > median_latency / threshold + slack_us)) {
      suspicious.emplace_back(a, b);
    }
  }
  return suspicious;
}

// Rounds of disjoint pairs covering `pairs` (greedy, in order).
std::vector<std::vector<std::pair<int, int>>> DisjointRounds(
    std::vector<std::pair<int, int>> pairs) {
  std::vector<std::vector<std::pair<int, int>>> rounds;
  while (!pairs.empty()) {
    std::vector<std::pair<int, int>> round, rest;
    std::set<int> busy;
    for (const auto& pair : pairs) {
      if (busy.count(pair.first) == 0 && busy.count(pair.second) == 0) {
        busy.insert(pair.first);
        busy.insert(pair.second);
        round.push_back(pair);
      } else {
        rest.push_back(pair);
      }
    }
    rounds.push_back(round);
    pairs = rest;
  }
  return rounds;
}

}  // namespace

std::vector<std::vector<std::pair<int, int>>> RoundRobin(int n) {
  std::vector<std::vector<std::pair<int, int>>> rounds;
  if (n < 2) return rounds;
  const int players = n % 2 == 0 ? n : n + 1;  // the extra one is "resting"
  const int fixed = players - 1;
  for (int round = 0; round < players - 1; ++round) {
    std::vector<std::pair<int, int>> pairs;
    auto add = [&](int x, int y) {
      if (x >= n || y >= n) return;
      pairs.emplace_back(std::min(x, y), std::max(x, y));
    };
    add(fixed, round);
    for (int i = 1; i < players / 2; ++i) {
      add((round + i) % fixed, (round - i + fixed) % fixed);
    }
    std::sort(pairs.begin(), pairs.end());
    rounds.push_back(pairs);
  }
  return rounds;
}

std::vector<std::pair<int, int>> RandomPairing(int n, uint64_t seed) {
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 generator(seed);
  std::shuffle(order.begin(), order.end(), generator);
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i + 1 < n; i += 2) {
    pairs.emplace_back(std::min(order[i], order[i + 1]), std::max(order[i], order[i + 1]));
  }
  std::sort(pairs.begin(), pairs.end());
  return pairs;
}

absl::StatusOr<int> RunValidate(Communicator& world, Bootstrap& bootstrap,
                                const std::string& prefix, const ValidateOptions& options,
                                FILE* out, const std::string& json_path) {
  const auto started = Clock::now();
  const Topology& topology = world.topology();
  const int rank = world.rank();
  const int size = world.size();
  const auto& hosts = topology.hosts();
  const int node_count = static_cast<int>(hosts.size());
  const int node = topology.place(rank).host;
  const int local_rank = topology.place(rank).local_rank;
  const int local_size = static_cast<int>(hosts[node].size());
  const bool leader = local_rank == 0;
  const absl::Duration timeout = options.timeout;
  auto key = [&](const std::string& name) { return absl::StrCat(prefix, "/validate/", name); };
  // Results travel through the store; waiting for them may take as long as every phase.
  const absl::Duration gather_timeout = timeout * 4 + absl::Seconds(30);

  // Rank 0 shows which phase runs, on a terminal.
  Progress progress(rank == 0 && out != nullptr);
  progress.Update("validate: reading the expectations", true);

  // The expectations, read at rank 0 only (the file need not exist on the other nodes).
  Expectations expectations;
  if (rank == 0) {
    std::string problem;
    if (!options.expect_path.empty()) {
      auto loaded = LoadExpectations(options.expect_path);
      if (loaded.ok()) {
        expectations = *loaded;
      } else {
        problem = std::string(loaded.status().message());
      }
    }
    if (options.threshold > 0) expectations.threshold = options.threshold;
    COHORT_RETURN_IF_ERROR(bootstrap.Set(key("expect"), problem));
    if (!problem.empty()) {
      std::fprintf(stderr, "cohort-bench validate: %s\n", problem.c_str());
      return 2;
    }
  } else {
    COHORT_ASSIGN_OR_RETURN(std::string problem, bootstrap.Get(key("expect"), gather_timeout));
    if (!problem.empty()) return 2;
  }
  // Every rank needs the relative thresholds to pick the links to measure again.
  double threshold = expectations.threshold, slack_us = expectations.latency_slack_us;
  if (rank == 0) {
    COHORT_RETURN_IF_ERROR(
        bootstrap.Set(key("thresholds"), absl::StrCat(threshold, " ", slack_us)));
  } else {
    COHORT_ASSIGN_OR_RETURN(std::string text, bootstrap.Get(key("thresholds"), gather_timeout));
    std::vector<std::string> parts = absl::StrSplit(text, ' ');
    if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &threshold) ||
        !absl::SimpleAtod(parts[1], &slack_us)) {
      return absl::InternalError(absl::StrCat("malformed thresholds \"", text, "\" in the store"));
    }
  }
  uint64_t seed = options.seed;
  if (rank == 0) {
    if (seed == 0) seed = std::random_device()() | 1;
    COHORT_RETURN_IF_ERROR(bootstrap.Set(key("seed"), std::to_string(seed)));
  } else {
    COHORT_ASSIGN_OR_RETURN(std::string text, bootstrap.Get(key("seed"), gather_timeout));
    seed = std::stoull(text);
  }

  // One communicator per node with several ranks, and one of the nodes' first ranks.
  progress.Update("validate: connecting the nodes' communicators", true);
  std::unique_ptr<Communicator> node_comm, leaders;
  if (local_size > 1) {
    CommOptions comm_options;
    comm_options.name = absl::StrCat(prefix, "-node", node);
    COHORT_ASSIGN_OR_RETURN(node_comm,
                            Communicator::Create(bootstrap, local_rank, local_size, comm_options));
  }
  if (leader && node_count > 1) {
    CommOptions comm_options;
    comm_options.name = absl::StrCat(prefix, "-leaders");
    COHORT_ASSIGN_OR_RETURN(leaders,
                            Communicator::Create(bootstrap, node, node_count, comm_options));
  }

  // Inventory, then memory bandwidth in turns.
  json node_result;
  COHORT_RETURN_IF_ERROR(Barrier(world, timeout));
  progress.Update("validate: inventory and memcpy", true);
  std::unique_ptr<MemcpyMeter> memcpy_meter;
  if (leader) {
    node_result["inventory"] = CollectInventory();
    memcpy_meter = std::make_unique<MemcpyMeter>();
  }
  COHORT_RETURN_IF_ERROR(
      MeasureMemcpyInTurns(world, memcpy_meter.get(), node, node_count, timeout));

  // Stragglers: steps of fixed local work, each followed by an allreduce that waits for the
  // slowest rank; half now and half after the network tests, so that one busy moment of the
  // machine cannot make a rank look slow.
  COHORT_RETURN_IF_ERROR(Barrier(world, timeout));
  progress.Update("validate: straggler check (1 of 2)", true);
  Straggler straggler(world, rank, timeout);
  COHORT_RETURN_IF_ERROR(straggler.Run((options.straggler_steps + 1) / 2));

  // Point to point between nodes: round-robin rounds, then random re-pairings; the pairs of a
  // round run at the same time, and a barrier separates rounds.
  COHORT_RETURN_IF_ERROR(Barrier(world, timeout));
  std::vector<std::vector<std::pair<int, int>>> rounds = RoundRobin(node_count);
  const int round_robin = static_cast<int>(rounds.size());
  if (node_count > 2) {
    for (int i = 0; i < options.repairings; ++i) {
      rounds.push_back(RandomPairing(node_count, seed + static_cast<uint64_t>(i)));
    }
  }
  json halves = json::array();
  std::vector<double> best_bandwidth(static_cast<size_t>(node_count) * node_count, 0.0);
  std::vector<double> best_latency(static_cast<size_t>(node_count) * node_count, 0.0);
  std::vector<char> buffer;
  std::string broken;
  int round_index = 0;
  auto run_round = [&](const std::vector<std::pair<int, int>>& pairs, bool repairing,
                       bool confirming, const std::string& what) {
    progress.Update(absl::StrCat("validate: point to point, ", what), true);
    if (broken.empty()) {
      absl::Status synced = Barrier(*leaders, timeout);
      if (!synced.ok()) broken = std::string(synced.message());
    }
    for (const auto& [a, b] : pairs) {
      if (a != node && b != node) continue;
      int peer = a == node ? b : a;
      HalfSample sample;
      if (broken.empty()) {
        sample = MeasurePair(*leaders, node, peer, options, buffer);
        if (!sample.error.empty()) broken = sample.error;
      } else {
        sample.self = node;
        sample.peer = peer;
        sample.error = absl::StrCat("not measured: an earlier measurement failed: ", broken);
      }
      sample.round = round_index;
      sample.repairing = repairing;
      sample.confirming = confirming;
      if (sample.bandwidth > 0) {
        double& best = best_bandwidth[node * node_count + peer];
        best = std::max(best, sample.bandwidth);
      }
      if (sample.latency_us > 0) {
        double& best = best_latency[std::min(node, peer) * node_count + std::max(node, peer)];
        best = best > 0 ? std::min(best, sample.latency_us) : sample.latency_us;
      }
      halves.push_back(HalfJson(sample));
    }
    ++round_index;
  };
  if (leaders != nullptr) {
    for (size_t round = 0; round < rounds.size(); ++round) {
      bool repairing = static_cast<int>(round) >= round_robin;
      run_round(rounds[round], repairing, false,
                absl::StrCat("round ", round + 1, " of ", rounds.size(),
                             repairing ? " (random re-pairing)" : ""));
    }
  }
  // Links that look slow are measured again (up to --confirmations times) and judged by their
  // best measurement, so that a moment of contention does not blame a healthy link. Every rank
  // takes part in the decisions (on the world communicator), the nodes' first ranks measure.
  int confirmation_rounds = 0;
  for (int pass = 0; pass < options.confirmations && node_count > 2; ++pass) {
    COHORT_ASSIGN_OR_RETURN(double any_broken, Max(world, broken.empty() ? 0 : 1, timeout));
    if (any_broken > 0) break;
    std::vector<std::pair<int, int>> suspicious;
    if (leaders != nullptr) {
      // Every node's row of best figures, combined: each entry has one writer, the rest are 0.
      std::vector<double> bandwidth = best_bandwidth, latency = best_latency;
      for (std::vector<double>* matrix : {&bandwidth, &latency}) {
        AllreduceOptions combine;
        combine.input = matrix->data();
        combine.output = matrix->data();
        combine.count = matrix->size();
        combine.dtype = DataType::kFloat64;
        combine.op = ReduceOp::kMax;
        combine.timeout = timeout;
        absl::Status combined = leaders->Allreduce(combine)->Wait();
        if (!combined.ok() && broken.empty()) broken = std::string(combined.message());
      }
      if (broken.empty()) {
        suspicious = SuspiciousPairs(node_count, bandwidth, latency, threshold, slack_us);
      }
    }
    COHORT_ASSIGN_OR_RETURN(double count,
                            Max(world, static_cast<double>(suspicious.size()), timeout));
    if (count == 0) break;
    if (leaders != nullptr) {
      for (const auto& pairs : DisjointRounds(suspicious)) {
        run_round(pairs, false, true,
                  absl::StrCat("measuring ", suspicious.size(), " slow-looking links again (",
                               pass + 1, " of ", options.confirmations, ")"));
        ++confirmation_rounds;
      }
    }
  }
  COHORT_RETURN_IF_ERROR(Barrier(world, timeout));

  // Allreduce inside each node, all nodes at once.
  progress.Update("validate: intra-node allreduce", true);
  if (node_comm != nullptr) {
    COHORT_ASSIGN_OR_RETURN(double seconds, TimeAllreduce(*node_comm, options.intra_bytes,
                                                          options.iterations, "", timeout));
    if (leader) {
      node_result["intra_busbw_gbps"] =
          static_cast<double>(options.intra_bytes) / seconds / 1e9 * BusFactor(local_size);
    }
  }
  COHORT_RETURN_IF_ERROR(Barrier(world, timeout));
  progress.Update("validate: straggler check (2 of 2)", true);
  COHORT_RETURN_IF_ERROR(straggler.Run(options.straggler_steps / 2));
  COHORT_RETURN_IF_ERROR(
      MeasureMemcpyInTurns(world, memcpy_meter.get(), node, node_count, timeout));
  if (leader) node_result["memcpy_gbps"] = memcpy_meter->best();
  json rank_result = {{"rank", rank},
                      {"node", node},
                      {"compute_best_us", straggler.fastest()},
                      {"compute_median_us", Median(straggler.computes())},
                      {"wait_median_us", Median(straggler.waits())}};
  if (leader) {
    node_result["halves"] = halves;
    COHORT_RETURN_IF_ERROR(bootstrap.Set(key(absl::StrCat("node/", node)), node_result.dump()));
  }
  COHORT_RETURN_IF_ERROR(bootstrap.Set(key(absl::StrCat("rank/", rank)), rank_result.dump()));

  // Rank 0 gathers the nodes' results and sizes the cluster allreduce to take about 0.1 s at the
  // slowest node's best link.
  Measurements m;
  if (rank == 0) {
    m.rounds = round_robin;
    m.repairings = static_cast<int>(rounds.size()) - round_robin;
    m.confirmation_rounds = confirmation_rounds;
    m.intra_bytes = options.intra_bytes;
    std::map<std::tuple<int, int, int>, PairSample> samples;  // (round, a, b)
    for (int index = 0; index < node_count; ++index) {
      m.nodes.push_back(topology.place(hosts[index].front()).host_name);
      m.ranks_per_node.push_back(static_cast<int>(hosts[index].size()));
      COHORT_ASSIGN_OR_RETURN(std::string text,
                              bootstrap.Get(key(absl::StrCat("node/", index)), gather_timeout));
      json result = json::parse(text);
      m.inventory.push_back(result.value("inventory", json::object()));
      m.memcpy_gbps.push_back(result.value("memcpy_gbps", -1.0));
      m.intra_busbw_gbps.push_back(result.value("intra_busbw_gbps", -1.0));
      for (const json& half_json : result.value("halves", json::array())) {
        HalfSample half = HalfFromJson(half_json);
        int a = std::min(half.self, half.peer), b = std::max(half.self, half.peer);
        PairSample& sample = samples[{half.round, a, b}];
        sample.a = a;
        sample.b = b;
        sample.round = half.round;
        sample.repairing = half.repairing;
        sample.confirming = half.confirming;
        (half.self == a ? sample.bandwidth_ab : sample.bandwidth_ba) = half.bandwidth;
        if (half.latency_us >= 0) sample.latency_us = half.latency_us;
        if (!half.error.empty() && sample.error.empty()) {
          sample.error =
              absl::StrCat(topology.place(hosts[half.self].front()).host_name, ": ", half.error);
        }
      }
    }
    for (auto& [where, sample] : samples) m.samples.push_back(sample);
    size_t bytes = options.allreduce_bytes;
    if (bytes == 0) {
      double slowest = -1;
      for (const PairSample& sample : m.samples) {
        for (double bandwidth : {sample.bandwidth_ab, sample.bandwidth_ba}) {
          if (bandwidth > 0) slowest = slowest < 0 ? bandwidth : std::min(slowest, bandwidth);
        }
      }
      for (double busbw : m.intra_busbw_gbps) {  // one node: its own allreduce's pace
        if (slowest < 0 && busbw > 0) slowest = busbw;
      }
      if (slowest < 0) slowest = 1.0;
      double target = 0.1 * slowest * 1e9 / std::max(BusFactor(size), 1.0);
      bytes = static_cast<size_t>(std::clamp(target, 64.0 * 1024, 64.0 * 1024 * 1024));
    }
    bytes = std::max<size_t>(bytes / (4 * size) * (4 * size), 4 * size);
    COHORT_RETURN_IF_ERROR(bootstrap.Set(key("cluster_bytes"), std::to_string(bytes)));
    m.cluster_bytes = bytes;
  }
  COHORT_ASSIGN_OR_RETURN(std::string bytes_text,
                          bootstrap.Get(key("cluster_bytes"), gather_timeout));
  const size_t cluster_bytes = std::stoull(bytes_text);
  double cluster_seconds = -1;
  progress.Update(absl::StrCat("validate: cluster allreduce (", options.cluster_algorithm, ", ",
                               cluster_bytes, " bytes)"),
                  true);
  // Judged against the slowest node's best link; when it falls short, rank 0 asks for up to two
  // more tries (the best counts), as for the links.
  double slowest_link = -1;
  if (rank == 0) {
    for (const NodeVerdict& verdict : Judge(m, expectations).nodes) {
      if (verdict.p2p_gbps > 0) {
        slowest_link =
            slowest_link < 0 ? verdict.p2p_gbps : std::min(slowest_link, verdict.p2p_gbps);
      }
    }
  }
  for (int attempt = 0; size > 1 && attempt < 3; ++attempt) {
    COHORT_ASSIGN_OR_RETURN(double seconds, TimeAllreduce(world, cluster_bytes, options.iterations,
                                                          options.cluster_algorithm, timeout));
    cluster_seconds = cluster_seconds < 0 ? seconds : std::min(cluster_seconds, seconds);
    const std::string retry_key = key(absl::StrCat("cluster_retry/", attempt));
    std::string retry = "0";
    if (rank == 0) {
      double busbw = static_cast<double>(cluster_bytes) / cluster_seconds / 1e9 * BusFactor(size);
      if (attempt < 2 && slowest_link > 0 && busbw < threshold * slowest_link) retry = "1";
      COHORT_RETURN_IF_ERROR(bootstrap.Set(retry_key, retry));
    } else {
      COHORT_ASSIGN_OR_RETURN(retry, bootstrap.Get(retry_key, gather_timeout));
    }
    if (retry != "1") break;
  }

  if (rank == 0) {
    for (int other = 0; other < size; ++other) {
      COHORT_ASSIGN_OR_RETURN(std::string text,
                              bootstrap.Get(key(absl::StrCat("rank/", other)), gather_timeout));
      json result = json::parse(text);
      RankTiming timing;
      timing.rank = result.value("rank", other);
      timing.node = result.value("node", 0);
      timing.compute_best_us = result.value("compute_best_us", -1.0);
      timing.compute_median_us = result.value("compute_median_us", -1.0);
      timing.wait_median_us = result.value("wait_median_us", -1.0);
      m.ranks.push_back(timing);
    }
    if (cluster_seconds > 0) {
      m.cluster_algorithm = options.cluster_algorithm;
      m.cluster_time_us = cluster_seconds * 1e6;
      m.cluster_busbw_gbps =
          static_cast<double>(cluster_bytes) / cluster_seconds / 1e9 * BusFactor(size);
    }
    m.seconds = Seconds(started);
    Report report = Judge(m, expectations);
    progress.Clear();
    if (out != nullptr) PrintReport(out, m, report, expectations);
    if (!json_path.empty()) {
      json document = ReportJson(m, report, expectations);
      document["seed"] = seed;
      document["kind"] = "validate";
      document["command"] = options.argv;
      document.update(RunInfo());
      std::ofstream file(json_path);
      file << document.dump(2) << "\n";
      if (!file) {
        std::fprintf(stderr, "cohort-bench validate: cannot write %s\n", json_path.c_str());
      }
    }
    COHORT_RETURN_IF_ERROR(bootstrap.Set(key("exit"), std::to_string(report.exit_code)));
    return report.exit_code;
  }
  COHORT_ASSIGN_OR_RETURN(std::string exit_text, bootstrap.Get(key("exit"), gather_timeout));
  return std::stoi(exit_text);
}

}  // namespace cohort::bench
