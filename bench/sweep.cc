#include "bench/sweep.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/device_buffers.h"
#include "bench/progress.h"
#include "bench/run_info.h"
#include "collectives/op_args.h"
#include "collectives/reduce.h"
#include "common/status.h"

namespace cohort::bench {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// Combines one value per rank into the one every rank sees: -a's rule, or a plain op.
absl::Status Combine(Communicator& comm, std::vector<double>& values, Average average) {
  if (values.empty()) return absl::OkStatus();
  if (average == Average::kRank0) {
    BroadcastOptions options;
    options.input = values.data();
    options.output = values.data();
    options.count = values.size();
    options.dtype = DataType::kFloat64;
    options.root = 0;
    return comm.Broadcast(options)->Wait();
  }
  AllreduceOptions options;
  options.input = values.data();
  options.output = values.data();
  options.count = values.size();
  options.dtype = DataType::kFloat64;
  options.op = average == Average::kMin   ? ReduceOp::kMin
               : average == Average::kMax ? ReduceOp::kMax
                                          : ReduceOp::kSum;
  COHORT_RETURN_IF_ERROR(comm.Allreduce(options)->Wait());
  if (average == Average::kMean) {
    for (double& value : values) value /= comm.size();
  }
  return absl::OkStatus();
}

absl::Status WaitAll(const Works& works) {
  for (const auto& work : works) COHORT_RETURN_IF_ERROR(work->Wait());
  return absl::OkStatus();
}

// A failed operation leaves later ones in flight on buffers this sweep is about to free: fail
// them all (the communicator is unusable after an error anyway) and wait until they let go.
absl::Status AbortAndDrain(Communicator& comm, const std::vector<Works>& works,
                           absl::Status status) {
  comm.Abort(status);
  for (const Works& iteration : works) {
    for (const auto& work : iteration) {
      if (work != nullptr) (void)work->Wait();
    }
  }
  return status;
}

std::string SizeText(size_t bytes) {
  if (bytes >= (size_t{1} << 30) && bytes % (size_t{1} << 30) == 0) {
    return absl::StrCat(bytes >> 30, " GiB");
  }
  if (bytes >= (size_t{1} << 20) && bytes % (size_t{1} << 20) == 0) {
    return absl::StrCat(bytes >> 20, " MiB");
  }
  if (bytes >= 1024 && bytes % 1024 == 0) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes, " B");
}

// The algorithm a row runs, for the JSON report: --algo's, else what the communicator would pick
// (COHORT_ALGO or the tuner) for this size. `count` is what the sweep passes (per rank for the
// collectives of per-rank blocks). Empty for sendrecv, which is a send and a receive.
std::string RowAlgorithm(const Communicator& comm, const Collective& collective,
                         const BenchParams& params, size_t count) {
  if (!params.algorithm.empty()) return params.algorithm;
  for (OpType op : {OpType::kAllreduce, OpType::kBroadcast, OpType::kReduce, OpType::kAllgather,
                    OpType::kReduceScatter, OpType::kAlltoall, OpType::kGather, OpType::kScatter}) {
    if (std::string(collective.name) != OpTypeName(op)) continue;
    OpArgs args;
    args.op = op;
    args.count = count;
    args.dtype = params.dtype;
    args.reduce_op = params.op;
    args.root = collective.rooted ? params.root : -1;
    args.memory = params.memory;
    return comm.ChosenAlgorithm(args);
  }
  return "";
}

struct Column {
  const Collective& collective;
  const SweepOptions& options;
  const BenchParams& params;
  Progress& progress;
  std::string label;
  DeviceMirror* device = nullptr;  // -d cuda: where the buffers live
};

absl::StatusOr<ColumnResult> Measure(Communicator& comm, const Column& column, size_t count,
                                     size_t bytes, bool in_place) {
  const Collective& collective = column.collective;
  const SweepOptions& options = column.options;
  BenchParams params = column.params;
  params.blocking = options.blocking;
  const int n = comm.size();
  const int rank = comm.rank();
  const std::string what =
      absl::StrCat(column.label, " ", SizeText(bytes), in_place ? " in-place" : " out-of-place");
  Buffers buffers;
  collective.prepare(buffers, params, rank, n, count);
  if (column.device != nullptr) COHORT_RETURN_IF_ERROR(column.device->Upload(buffers));
  column.progress.Update(absl::StrCat(what, ": warm-up"), true);
  for (int i = 0; i < options.warmup; ++i) {
    COHORT_RETURN_IF_ERROR(WaitAll(collective.run(comm, buffers, params, in_place)));
  }
  COHORT_RETURN_IF_ERROR(comm.Barrier()->Wait());

  // Each operation records when it completed (on the thread that completes it), so the time of
  // iteration i is its completion minus the later of the previous completion and its issue.
  const int iterations = options.iterations;
  constexpr int kMaxWorks = 2;
  // Shared with the completion callbacks, which may outlive this function when it fails.
  auto completed = std::make_shared<std::vector<std::atomic<int64_t>>>(iterations * kMaxWorks);
  for (auto& slot : *completed) slot.store(0);
  std::vector<int64_t> issued(iterations, 0);
  std::vector<int64_t> returned(iterations, 0);  // an operation with no Work is done by then
  std::vector<Works> works(iterations);
  const int64_t start = NowNanos();
  int64_t previous_return = start;
  const bool timed = options.iteration_times;
  for (int i = 0; i < iterations; ++i) {
    if (options.blocking) {
      // Blocking calls return finished: an iteration runs from the previous one's return to its
      // own (one clock read per iteration, when iterations are timed).
      absl::Status status = WaitAll(collective.run(comm, buffers, params, in_place));
      if (timed) {
        issued[i] = previous_return;
        returned[i] = previous_return = NowNanos();
      }
      if (!status.ok()) return AbortAndDrain(comm, works, status);
      continue;
    }
    issued[i] = NowNanos();
    works[i] = collective.run(comm, buffers, params, in_place);
    returned[i] = NowNanos();
    for (size_t j = 0; j < works[i].size() && j < kMaxWorks; ++j) {
      works[i][j]->OnCompletion([completed, index = i * kMaxWorks + j](const absl::Status&) {
        (*completed)[index].store(NowNanos());
      });
    }
  }
  for (int i = 0; i < iterations && !options.blocking; ++i) {
    absl::Status status = WaitAll(works[i]);
    if (!status.ok()) return AbortAndDrain(comm, works, status);
    column.progress.Update(absl::StrCat(what, ": iteration ", i + 1, "/", iterations));
  }
  const int64_t end = NowNanos();

  std::vector<double> per_iteration(timed || !options.blocking ? iterations : 0);
  int64_t previous = start;
  for (int i = 0; i < static_cast<int>(per_iteration.size()); ++i) {
    int64_t done = works[i].empty() || options.blocking ? returned[i] : 0;
    for (size_t j = 0; j < works[i].size() && j < kMaxWorks && !options.blocking; ++j) {
      std::atomic<int64_t>& slot = (*completed)[i * kMaxWorks + j];
      // Complete() marks the work done before it runs callbacks; the stamp follows at once.
      auto give_up = Clock::now() + std::chrono::milliseconds(100);
      while (slot.load() == 0 && Clock::now() < give_up) std::this_thread::yield();
      done = std::max(done, slot.load() != 0 ? slot.load() : end);
    }
    int64_t began = std::max(previous, issued[i]);
    per_iteration[i] = static_cast<double>(std::max<int64_t>(done - began, 0)) / 1e3;  // us
    previous = std::max(previous, done);
  }
  std::vector<double> total = {static_cast<double>(end - start) / 1e3 / std::max(1, iterations)};
  COHORT_RETURN_IF_ERROR(Combine(comm, total, options.average));
  COHORT_RETURN_IF_ERROR(Combine(comm, per_iteration, options.average));

  ColumnResult result;
  result.microseconds = total[0];
  result.algbw = total[0] > 0 ? static_cast<double>(bytes) / (total[0] * 1e-6) / 1e9 : 0;
  result.busbw = result.algbw * collective.bus_factor(n);
  result.iterations = Summarize(per_iteration);

  for (int check = 0; check < options.check; ++check) {
    column.progress.Update(absl::StrCat(what, ": checking"), true);
    collective.prepare(buffers, params, rank, n, count);
    if (column.device != nullptr) COHORT_RETURN_IF_ERROR(column.device->Upload(buffers));
    COHORT_RETURN_IF_ERROR(WaitAll(collective.run(comm, buffers, params, in_place)));
    if (column.device != nullptr) COHORT_RETURN_IF_ERROR(column.device->Download(buffers));
    if (rank == options.corrupt_rank) {
      CorruptResult(collective, buffers, params, rank, n, in_place, options.corrupt_elements);
    }
    std::vector<double> wrong = {
        static_cast<double>(CountWrong(collective, buffers, params, rank, n, in_place))};
    AllreduceOptions sum;
    sum.input = wrong.data();
    sum.output = wrong.data();
    sum.count = 1;
    sum.dtype = DataType::kFloat64;
    COHORT_RETURN_IF_ERROR(comm.Allreduce(sum)->Wait());
    result.checked = true;
    result.wrong = static_cast<size_t>(wrong[0]);
    if (result.wrong > 0) break;
  }
  return result;
}

// nccl-tests' time format: fewer decimals as the time grows.
std::string TimeText(double microseconds) {
  if (microseconds >= 10000.0) return absl::StrFormat("%7.0f", microseconds);
  if (microseconds >= 100.0) return absl::StrFormat("%7.1f", microseconds);
  return absl::StrFormat("%7.2f", microseconds);
}

std::string ColumnText(const ColumnResult& column) {
  std::string wrong = column.checked ? absl::StrFormat("%5d", column.wrong) : "  N/A";
  return absl::StrFormat("  %7s  %6.2f  %6.2f  %5s", TimeText(column.microseconds), column.algbw,
                         column.busbw, wrong);
}

void PrintHeader(FILE* out, const Communicator& comm, const Collective& collective,
                 const SweepOptions& options) {
  std::fprintf(out,
               "# cohort-bench %s: nranks %d minBytes %zu maxBytes %zu step: %s warmup iters: %d "
               "iters: %d validation: %d\n",
               collective.name, comm.size(), options.min_bytes, options.max_bytes,
               options.step_factor > 1 ? absl::StrFormat("%g(factor)", options.step_factor).c_str()
                                       : absl::StrFormat("%zu(bytes)", options.step_bytes).c_str(),
               options.warmup, options.iterations, options.check);
  std::vector<std::string> skipped = options.skipped_types;
  if (collective.reduces) {
    skipped.insert(skipped.end(), options.skipped_ops.begin(), options.skipped_ops.end());
  }
  if (!skipped.empty()) {
    std::fprintf(out, "# skipped (libcohort has no such type or op): %s\n",
                 absl::StrJoin(skipped, ", ").c_str());
  }
  if (options.blocking) {
    std::fprintf(out, "# Blocking Enabled: wait for completion after each collective\n");
  }
  const char* averages[] = {"rank 0's time", "the mean of the ranks' times",
                            "the fastest rank's time", "the slowest rank's time"};
  std::fprintf(out, "# %s\n", comm.DescribeLinks().c_str());
  std::fprintf(out, "# time: %s (-a %d)\n#\n# Using devices\n",
               averages[static_cast<int>(options.average)], static_cast<int>(options.average));
  const Topology& topology = comm.topology();
  for (int rank = 0; rank < topology.size(); ++rank) {
    const RankPlace& place = topology.place(rank);
    std::fprintf(out,
                 "#  Rank %2d Group  0 on %10s local rank %2d device %s numa %d cpus %s nic %s\n",
                 rank, place.host_name.c_str(), place.local_rank,
                 options.params.memory == MemoryKind::kCuda ? "cuda" : "cpu", place.numa_node,
                 place.cpus.empty() ? "?" : place.cpus.c_str(),
                 place.nic.interface.empty() ? "-" : place.nic.interface.c_str());
  }
  std::fprintf(out, "#\n");
  std::fprintf(out,
               "# %10s  %12s  %8s  %6s  %6s           out-of-place                       "
               "in-place          \n",
               "", "", "", "", "");
  std::fprintf(out, "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s %6s  %7s  %6s  %6s %6s\n", "size",
               "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
               "algbw", "busbw", "#wrong");
  std::fprintf(out, "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %5s  %7s  %6s  %6s  %5s\n", "(B)",
               "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)",
               "");
  std::fflush(out);
}

}  // namespace

const char* TableTypeName(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return "float";
    case DataType::kFloat64:
      return "double";
    case DataType::kFloat16:
      return "half";
    case DataType::kBFloat16:
      return "bfloat16";
    case DataType::kInt8:
      return "int8";
    case DataType::kUInt8:
      return "uint8";
    case DataType::kInt32:
      return "int32";
    case DataType::kInt64:
      return "int64";
    case DataType::kBool:
      return "bool";
  }
  return "?";
}

absl::StatusOr<SweepResult> RunSweep(Communicator& comm, const Collective& collective,
                                     const SweepOptions& options, FILE* out) {
  const int n = comm.size();
  const bool print = comm.rank() == 0 && out != nullptr;
  Progress progress(options.progress && comm.rank() == 0);
  if (print) PrintHeader(out, comm, collective, options);

  std::vector<DataType> dtypes = options.dtypes;
  if (dtypes.empty()) dtypes.push_back(options.params.dtype);
  std::vector<ReduceOp> ops = options.ops;
  if (ops.empty() || !collective.reduces) ops = {options.params.op};

  SweepResult result;
  for (int peer = 0; peer < n; ++peer) {
    if (peer != comm.rank()) result.channels.push_back(ChannelKindName(comm.channel_kind(peer)));
  }
  // -d cuda: every rank's buffers on its GPU, or (where any rank has none) the sweep is skipped.
  std::unique_ptr<DeviceMirror> device;
  BenchParams base = options.params;
  if (base.memory == MemoryKind::kCuda) {
    const int local_rank = comm.topology().place(comm.rank()).local_rank;
    absl::StatusOr<std::unique_ptr<DeviceMirror>> opened =
        options.fake_device ? DeviceMirror::OpenFake(local_rank) : DeviceMirror::Open(local_rank);
    double usable = opened.ok() ? 1 : 0;
    AllreduceOptions all;
    all.input = &usable;
    all.output = &usable;
    all.count = 1;
    all.dtype = DataType::kFloat64;
    all.op = ReduceOp::kMin;
    COHORT_RETURN_IF_ERROR(comm.Allreduce(all)->Wait());
    if (usable == 0) {
      result.skipped = opened.ok() ? std::string("another rank has no usable CUDA device")
                                   : std::string(opened.status().message());
      if (print) std::fprintf(out, "# SKIP -d cuda: %s\n", result.skipped.c_str());
      return result;
    }
    device = std::move(*opened);
    base.stream = device->stream();
  }
  double bandwidth_sum = 0;
  int bandwidth_columns = 0;
  for (DataType dtype : dtypes) {
    for (ReduceOp op : ops) {
      BenchParams params = base;
      params.dtype = dtype;
      params.op = op;
      if (collective.reduces) {
        absl::Status supported = CheckReduceSupported(dtype, op);
        if (!supported.ok()) {
          if (dtypes.size() * ops.size() == 1) return supported;
          if (print) {
            std::fprintf(out, "# skipped %s %s: not supported by the reduce kernels\n",
                         TableTypeName(dtype), ReduceOpName(op));
          }
          continue;
        }
      }
      const size_t element = DataTypeSize(dtype);
      Column column{
          collective, options, params, progress,
          absl::StrCat("[", collective.name, " ", TableTypeName(dtype),
                       collective.reduces ? absl::StrCat(" ", ReduceOpName(op)) : "", "]"),
          device.get()};
      for (size_t bytes = options.min_bytes; bytes <= options.max_bytes;) {
        const size_t blocks = collective.per_rank_blocks ? static_cast<size_t>(n) : 1;
        size_t count = bytes / element / blocks;
        size_t used = count * element * blocks;  // sizes not divisible are rounded down
        RowResult row;
        row.bytes = used;
        row.count = used / element;
        row.dtype = dtype;
        row.op = op;
        row.root = collective.rooted ? params.root : -1;
        COHORT_ASSIGN_OR_RETURN(row.out_of_place, Measure(comm, column, count, used, false));
        COHORT_ASSIGN_OR_RETURN(row.in_place, Measure(comm, column, count, used, true));
        // After the runs: a device sweep's choice exists once the device side is prepared.
        row.algorithm = RowAlgorithm(comm, collective, params, count);
        result.wrong += row.out_of_place.wrong + row.in_place.wrong;
        bandwidth_sum += row.out_of_place.busbw + row.in_place.busbw;
        bandwidth_columns += 2;
        if (print) {
          progress.Clear();
          std::fprintf(out, "%12zu  %12zu  %8s  %6s  %6d%s%s\n", row.bytes, row.count,
                       TableTypeName(dtype), collective.reduces ? ReduceOpName(op) : "none",
                       row.root, ColumnText(row.out_of_place).c_str(),
                       ColumnText(row.in_place).c_str());
          std::fflush(out);
        }
        result.rows.push_back(row);
        size_t next = options.step_factor > 1
                          ? static_cast<size_t>(static_cast<double>(bytes) * options.step_factor)
                          : bytes + options.step_bytes;
        if (next <= bytes) break;
        bytes = next;
      }
    }
  }
  progress.Clear();
  result.average_bus_bandwidth = bandwidth_columns > 0 ? bandwidth_sum / bandwidth_columns : 0;
  result.bandwidth_ok =
      options.min_bus_bandwidth < 0 || result.average_bus_bandwidth >= options.min_bus_bandwidth;
  result.exit_code = (result.wrong > 0 || !result.bandwidth_ok) ? 7 : 0;
  if (print) {
    std::fprintf(out, "# Out of bounds values : %zu %s\n", result.wrong,
                 result.wrong == 0 ? "OK" : "FAILED");
    std::fprintf(out, "# Avg bus bandwidth    : %g %s\n", result.average_bus_bandwidth,
                 options.min_bus_bandwidth < 0 ? ""
                 : result.bandwidth_ok
                     ? "OK"
                     : absl::StrFormat("FAILED (below COHORT_BENCH_MIN_BW=%g GB/s)",
                                       options.min_bus_bandwidth)
                           .c_str());
    std::fprintf(out, "#\n");
    std::fflush(out);
  }
  return result;
}

nlohmann::json SweepJson(const Collective& collective, const SweepOptions& options,
                         const SweepResult& result, int nranks, const Topology& topology,
                         const std::vector<std::string>& argv) {
  using nlohmann::json;
  auto column = [](const ColumnResult& c) {
    json value = {{"time_us", c.microseconds},
                  {"algbw_gbps", c.algbw},
                  {"busbw_gbps", c.busbw},
                  {"wrong", c.checked ? json(c.wrong) : json(nullptr)},
                  {"iterations", StatsJson(c.iterations, "us")}};
    return value;
  };
  json rows = json::array();
  for (const RowResult& row : result.rows) {
    rows.push_back({{"size", row.bytes},
                    {"count", row.count},
                    {"type", TableTypeName(row.dtype)},
                    {"redop", collective.reduces ? ReduceOpName(row.op) : "none"},
                    {"root", row.root},
                    {"algorithm", row.algorithm},
                    {"out_of_place", column(row.out_of_place)},
                    {"in_place", column(row.in_place)}});
  }
  json hosts = json::array();
  for (const auto& ranks : topology.hosts()) {
    hosts.push_back({{"name", topology.place(ranks.front()).host_name}, {"ranks", ranks}});
  }
  json document = {
      {"tool", "cohort-bench"},
      {"kind", "sweep"},
      {"command", argv},
      {"collective", collective.name},
      {"nranks", nranks},
      {"hosts", hosts},
      {"channels", result.channels},
      {"options",
       {{"minbytes", options.min_bytes},
        {"maxbytes", options.max_bytes},
        {"stepbytes", options.step_bytes},
        {"stepfactor", options.step_factor},
        {"iters", options.iterations},
        {"warmup_iters", options.warmup},
        {"check", options.check},
        {"blocking", options.blocking},
        {"average", static_cast<int>(options.average)},
        {"algorithm", options.params.algorithm},
        {"memory", MemoryKindName(options.params.memory)},
        {"min_bus_bandwidth_gbps",
         options.min_bus_bandwidth < 0 ? json(nullptr) : json(options.min_bus_bandwidth)}}},
      {"results", rows},
      {"skipped", result.skipped.empty() ? json(nullptr) : json(result.skipped)},
      {"out_of_bounds", result.wrong},
      {"avg_bus_bandwidth_gbps", result.average_bus_bandwidth},
      {"bandwidth_ok", result.bandwidth_ok},
      {"exit_code", result.exit_code},
  };
  document.update(RunInfo());
  return document;
}

}  // namespace cohort::bench
