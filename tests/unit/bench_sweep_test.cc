// cohort-bench's sweep engine on real communicators (ranks as threads of this process over an
// in-memory bootstrap): the printed table has nccl-tests' columns and footer, every collective's
// exact check counts zero wrong elements, a deliberately corrupted result is counted element by
// element (exit code 7), COHORT_BENCH_MIN_BW fails the run, and the JSON report parses with
// per-iteration statistics, the machine, commit and format version, and each row's algorithm.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/descriptors.h"
#include "bench/run_info.h"
#include "bench/sweep.h"
#include "collectives/device/fake_backend.h"
#include "collectives/in_memory_bootstrap.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cohort::bench {
namespace {

struct RankRun {
  absl::StatusOr<SweepResult> result = absl::UnknownError("not run");
  std::string output;  // rank 0's table
  nlohmann::json json;
};

// Runs `collective` on `n` ranks (threads); rank 0 prints into a buffer. `backend`: the device
// backend of the communicators (for -d cuda on the fake one).
std::vector<RankRun> Sweep(int n, const std::string& collective, const SweepOptions& options,
                           std::shared_ptr<device::DeviceBackend> backend = nullptr) {
  static int generation = 0;
  auto state = std::make_shared<InMemoryBootstrap::State>();
  const std::string name = "bench-sweep-test-" + std::to_string(++generation);
  std::vector<RankRun> runs(n);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank) {
    threads.emplace_back([&, rank] {
      InMemoryBootstrap bootstrap(state);
      CommOptions comm_options;
      comm_options.name = name;
      comm_options.timeout = absl::Seconds(60);
      if (backend != nullptr) comm_options.device_backend = backend;
      auto comm = Communicator::Create(bootstrap, rank, n, comm_options);
      if (!comm.ok()) {
        runs[rank].result = comm.status();
        return;
      }
      char* text = nullptr;
      size_t length = 0;
      FILE* out = rank == 0 ? open_memstream(&text, &length) : nullptr;
      runs[rank].result = RunSweep(**comm, *FindCollective(collective), options, out);
      if (out != nullptr) {
        std::fclose(out);
        runs[rank].output.assign(text, length);
        std::free(text);
      }
      if (runs[rank].result.ok()) {
        runs[rank].json = SweepJson(*FindCollective(collective), options, *runs[rank].result, n,
                                    (*comm)->topology(), {"cohort-bench", collective});
      }
    });
  }
  for (auto& thread : threads) thread.join();
  return runs;
}

SweepOptions Small() {
  SweepOptions options;
  options.min_bytes = 64;
  options.max_bytes = 16384;
  options.step_factor = 16;  // 64, 1024, 16384
  options.iterations = 3;
  options.warmup = 1;
  return options;
}

std::vector<std::string> DataLines(const std::string& text) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!line.empty() && line[0] != '#') lines.emplace_back(line);
  }
  return lines;
}

std::vector<std::string> Fields(const std::string& line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

TEST(BenchSweep, TableHasNcclTestsColumnsAndFooter) {
  auto runs = Sweep(2, "allreduce", Small());
  ASSERT_TRUE(runs[0].result.ok()) << runs[0].result.status();
  ASSERT_TRUE(runs[1].result.ok()) << runs[1].result.status();
  const std::string& text = runs[0].output;
  EXPECT_NE(text.find("#       size         count      type   redop    root     time   algbw   "
                      "busbw #wrong     time   algbw   busbw #wrong"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("out-of-place"), std::string::npos);
  EXPECT_NE(text.find("in-place"), std::string::npos);
  std::vector<std::string> lines = DataLines(text);
  ASSERT_EQ(lines.size(), 3u) << text;
  const size_t sizes[] = {64, 1024, 16384};
  double busbw_sum = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<std::string> fields = Fields(lines[i]);
    ASSERT_EQ(fields.size(), 13u) << lines[i];
    EXPECT_EQ(fields[0], std::to_string(sizes[i]));
    EXPECT_EQ(fields[1], std::to_string(sizes[i] / 4));
    EXPECT_EQ(fields[2], "float");
    EXPECT_EQ(fields[3], "sum");
    EXPECT_EQ(fields[4], "-1");
    for (int column : {5, 6, 7, 9, 10, 11}) {
      double value = -1;
      EXPECT_TRUE(absl::SimpleAtod(fields[column], &value)) << lines[i];
      EXPECT_GE(value, 0) << lines[i];
    }
    EXPECT_EQ(fields[8], "0");
    EXPECT_EQ(fields[12], "0");
    // busbw = algbw * 2 (n - 1) / n = algbw for 2 ranks.
    EXPECT_EQ(fields[6], fields[7]);
    const SweepResult& result = *runs[0].result;
    busbw_sum += result.rows[i].out_of_place.busbw + result.rows[i].in_place.busbw;
  }
  EXPECT_NE(text.find("# Out of bounds values : 0 OK\n"), std::string::npos) << text;
  char footer[64];
  std::snprintf(footer, sizeof(footer), "# Avg bus bandwidth    : %g \n", busbw_sum / 6);
  EXPECT_NE(text.find(footer), std::string::npos) << text << "\nexpected: " << footer;
  EXPECT_EQ(runs[0].result->exit_code, 0);
  EXPECT_EQ(runs[1].result->exit_code, 0);
}

TEST(BenchSweep, NoCheckPrintsNotAvailable) {
  SweepOptions options = Small();
  options.check = 0;
  options.max_bytes = 64;
  auto runs = Sweep(2, "allgather", options);
  ASSERT_TRUE(runs[0].result.ok()) << runs[0].result.status();
  std::vector<std::string> lines = DataLines(runs[0].output);
  ASSERT_EQ(lines.size(), 1u);
  std::vector<std::string> fields = Fields(lines[0]);
  ASSERT_EQ(fields.size(), 13u);
  EXPECT_EQ(fields[3], "none");
  EXPECT_EQ(fields[8], "N/A");
  EXPECT_EQ(fields[12], "N/A");
  EXPECT_TRUE(runs[0].json["results"][0]["out_of_place"]["wrong"].is_null());
}

// Every collective, several types and ops, 3 ranks (odd: sendrecv in place takes its longest
// path) - the exact checks must find nothing wrong.
class EveryCollective : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryCollective, ExactCheckFindsNothingWrong) {
  SweepOptions options = Small();
  options.max_bytes = 1024;
  options.params.root = 1;
  options.dtypes = {DataType::kFloat32, DataType::kBFloat16, DataType::kInt8, DataType::kInt64};
  options.ops = {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMax, ReduceOp::kAvg};
  auto runs = Sweep(3, GetParam(), options);
  for (const RankRun& run : runs) {
    ASSERT_TRUE(run.result.ok()) << run.result.status();
    EXPECT_EQ(run.result->wrong, 0u) << runs[0].output;
    EXPECT_EQ(run.result->exit_code, 0);
  }
  const Collective& collective = *FindCollective(GetParam());
  size_t combinations = collective.reduces ? 16 : 4;
  EXPECT_EQ(runs[0].result->rows.size(), combinations * 2);
}

// A result corrupted on one rank after the operation: #wrong counts exactly the changed
// elements in each column, the footer says FAILED and the exit code is 7.
TEST_P(EveryCollective, CorruptedResultIsCounted) {
  const Collective& collective = *FindCollective(GetParam());
  SweepOptions options = Small();
  options.min_bytes = 1024;
  options.max_bytes = 1024;
  options.params.root = 2;
  options.corrupt_rank = 2;  // the root, which has a result in every collective
  options.corrupt_elements = 3;
  auto runs = Sweep(3, GetParam(), options);
  for (const RankRun& run : runs) {
    ASSERT_TRUE(run.result.ok()) << run.result.status();
    EXPECT_EQ(run.result->wrong, 6u) << runs[0].output;  // 3 per column
    EXPECT_EQ(run.result->exit_code, 7);
  }
  std::vector<std::string> lines = DataLines(runs[0].output);
  ASSERT_EQ(lines.size(), 1u);
  std::vector<std::string> fields = Fields(lines[0]);
  ASSERT_EQ(fields.size(), 13u);
  EXPECT_EQ(fields[8], "3") << collective.name;
  EXPECT_EQ(fields[12], "3") << collective.name;
  EXPECT_NE(runs[0].output.find("# Out of bounds values : 6 FAILED"), std::string::npos);
  EXPECT_EQ(runs[0].json["out_of_bounds"], 6);
  EXPECT_EQ(runs[0].json["exit_code"], 7);
}

// -d cuda on the fake device backend: every collective on "device" buffers (a FakeStream per rank,
// a fake device each, so the device group serves what it can and the rest is staged), through the
// descriptors' device copies: results are checked after they came back from the "device".
TEST_P(EveryCollective, DeviceBuffersOnTheFakeBackend) {
  SweepOptions options = Small();
  options.max_bytes = 1024;
  options.params.root = 1;
  options.params.memory = MemoryKind::kCuda;
  options.fake_device = true;
  options.dtypes = {DataType::kFloat32, DataType::kInt64};
  options.ops = {ReduceOp::kSum, ReduceOp::kMax};
  options.corrupt_rank = 1;  // the root: it has a result in every collective
  options.corrupt_elements = 2;
  auto runs = Sweep(3, GetParam(), options, std::make_shared<device::FakeDeviceBackend>());
  const Collective& collective = *FindCollective(GetParam());
  const size_t rows = (collective.reduces ? 4 : 2) * 2;
  for (const RankRun& run : runs) {
    ASSERT_TRUE(run.result.ok()) << run.result.status();
    EXPECT_EQ(run.result->wrong, rows * 2 * 2) << runs[0].output;  // 2 per column, no more
  }
  EXPECT_NE(runs[0].output.find("device cuda"), std::string::npos);
  EXPECT_EQ(runs[0].json["options"]["memory"], "cuda");
  ASSERT_EQ(runs[0].result->rows.size(), rows);
  for (const RowResult& row : runs[0].result->rows) {
    if (GetParam() != "sendrecv") {
      EXPECT_EQ(row.algorithm.rfind("device_", 0), 0u) << row.algorithm;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, EveryCollective, ::testing::ValuesIn(CollectiveNames()),
                         [](const auto& info) { return info.param; });

TEST(BenchSweep, BandwidthBelowMinimumFails) {
  SweepOptions options = Small();
  options.max_bytes = 64;
  options.min_bus_bandwidth = 1e6;  // GB/s: nothing reaches it
  auto runs = Sweep(2, "broadcast", options);
  ASSERT_TRUE(runs[0].result.ok()) << runs[0].result.status();
  EXPECT_EQ(runs[0].result->wrong, 0u);
  EXPECT_FALSE(runs[0].result->bandwidth_ok);
  EXPECT_EQ(runs[0].result->exit_code, 7);
  EXPECT_EQ(runs[1].result->exit_code, 7);
  EXPECT_NE(runs[0].output.find("FAILED (below COHORT_BENCH_MIN_BW=1e+06 GB/s)"), std::string::npos)
      << runs[0].output;

  options.min_bus_bandwidth = 0;
  runs = Sweep(2, "broadcast", options);
  ASSERT_TRUE(runs[0].result.ok()) << runs[0].result.status();
  EXPECT_EQ(runs[0].result->exit_code, 0);
  EXPECT_NE(runs[0].output.find("# Avg bus bandwidth    : "), std::string::npos);
}

TEST(BenchSweep, JsonHasPerIterationStatistics) {
  SweepOptions options = Small();
  options.iterations = 7;
  options.average = Average::kMax;
  auto runs = Sweep(2, "reduce_scatter", options);
  ASSERT_TRUE(runs[0].result.ok()) << runs[0].result.status();
  // Through text, as a reader of the -J file would see it.
  nlohmann::json report = nlohmann::json::parse(runs[0].json.dump(2));
  EXPECT_EQ(report["collective"], "reduce_scatter");
  EXPECT_EQ(report["nranks"], 2);
  EXPECT_EQ(report["options"]["average"], 3);
  EXPECT_EQ(report["options"]["iters"], 7);
  ASSERT_EQ(report["results"].size(), 3u);
  for (const auto& row : report["results"]) {
    EXPECT_EQ(row["type"], "float");
    EXPECT_EQ(row["redop"], "sum");
    for (const char* column : {"out_of_place", "in_place"}) {
      const auto& c = row[column];
      const auto& it = c["iterations"];
      EXPECT_EQ(it["samples"], 7);
      double min = it["min_us"], p50 = it["p50_us"], p99 = it["p99_us"], max = it["max_us"];
      EXPECT_LE(min, p50);
      EXPECT_LE(p50, p99);
      EXPECT_LE(p99, max);
      EXPECT_GE(it["cv"].get<double>(), 0);
      EXPECT_GT(c["time_us"].get<double>(), 0);
      EXPECT_EQ(c["wrong"], 0);
      // busbw of reduce_scatter on 2 ranks: algbw * (n - 1) / n.
      EXPECT_NEAR(c["busbw_gbps"].get<double>(), c["algbw_gbps"].get<double>() / 2, 1e-9);
    }
  }
  EXPECT_EQ(report["out_of_bounds"], 0);
  EXPECT_EQ(report["exit_code"], 0);
  EXPECT_DOUBLE_EQ(report["avg_bus_bandwidth_gbps"].get<double>(),
                   runs[0].result->average_bus_bandwidth);
}

// The report page reads where and how a sweep ran, and refuses another format version.
TEST(BenchSweep, JsonSaysWhereWhatAndWhichAlgorithmRan) {
  setenv("COHORT_TUNER_PROBE", "0", 1);     // kept: how the run was configured
  setenv("COHORT_JOB_TOKEN", "s3cret", 1);  // left out: a secret
  setenv("COHORT_STORE_ADDR", "h:1", 1);    // left out: the job's identity
  auto runs = Sweep(2, "allreduce", Small());
  SweepOptions forced = Small();
  forced.params.algorithm = "ring";
  auto ring = Sweep(2, "allreduce", forced);
  auto sendrecv = Sweep(2, "sendrecv", Small());
  unsetenv("COHORT_TUNER_PROBE");
  unsetenv("COHORT_JOB_TOKEN");
  unsetenv("COHORT_STORE_ADDR");
  ASSERT_TRUE(runs[0].result.ok()) << runs[0].result.status();
  ASSERT_TRUE(ring[0].result.ok()) << ring[0].result.status();
  ASSERT_TRUE(sendrecv[0].result.ok()) << sendrecv[0].result.status();
  const nlohmann::json& report = runs[0].json;
  EXPECT_EQ(report["kind"], "sweep");
  EXPECT_EQ(report["format_version"], kReportFormatVersion);
  EXPECT_FALSE(report["machine"]["host"].get<std::string>().empty());
  EXPECT_GT(report["machine"]["cores"].get<int>(), 0);
  EXPECT_TRUE(report["machine"]["cpu_model"].is_string());
  EXPECT_TRUE(report["machine"]["os"].is_string());
  EXPECT_EQ(report["commit"], BuildCommit());
  EXPECT_FALSE(report["commit"].get<std::string>().empty());
  EXPECT_TRUE(std::regex_match(report["date"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
      << report["date"];
  EXPECT_EQ(report["environment"]["COHORT_TUNER_PROBE"], "0");
  EXPECT_FALSE(report["environment"].contains("COHORT_JOB_TOKEN"));
  EXPECT_FALSE(report["environment"].contains("COHORT_STORE_ADDR"));
  EXPECT_EQ(report["command"], nlohmann::json({"cohort-bench", "allreduce"}));
  ASSERT_EQ(report["channels"].size(), 1u);  // rank 0's channel to rank 1
  EXPECT_TRUE(report["channels"][0] == "shm" || report["channels"][0] == "tcp") << report["channels"];
  for (const auto& row : report["results"]) {
    std::string algorithm = row["algorithm"];
    EXPECT_FALSE(algorithm.empty() || algorithm == "none") << row["size"];
  }
  for (const auto& row : ring[0].json["results"]) EXPECT_EQ(row["algorithm"], "ring");
  for (const auto& row : sendrecv[0].json["results"]) EXPECT_EQ(row["algorithm"], "");
}

TEST(BenchSweep, EveryRankReportsTheSameTimes) {
  SweepOptions options = Small();
  for (Average average : {Average::kRank0, Average::kMean, Average::kMin, Average::kMax}) {
    options.average = average;
    auto runs = Sweep(3, "allgather", options);
    ASSERT_TRUE(runs[0].result.ok()) << runs[0].result.status();
    for (const RankRun& run : runs) {
      ASSERT_TRUE(run.result.ok()) << run.result.status();
      for (size_t i = 0; i < run.result->rows.size(); ++i) {
        EXPECT_DOUBLE_EQ(run.result->rows[i].out_of_place.microseconds,
                         runs[0].result->rows[i].out_of_place.microseconds);
        EXPECT_DOUBLE_EQ(run.result->rows[i].in_place.iterations.p50,
                         runs[0].result->rows[i].in_place.iterations.p50);
      }
    }
  }
}

}  // namespace
}  // namespace cohort::bench
