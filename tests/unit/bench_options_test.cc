// cohort-bench's command line: nccl-tests' flags and names mean what they mean there, "all"
// walks nccl-tests' types and ops in its order and names what libcohort lacks, and every bad
// flag or value is an error naming the flag, the value and what is accepted.
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/options.h"
#include "gtest/gtest.h"

namespace cohort::bench {
namespace {

absl::StatusOr<Command> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "cohort-bench");
  return ParseCommand(args);
}

std::string Error(std::vector<std::string> args) {
  auto command = Parse(std::move(args));
  EXPECT_FALSE(command.ok());
  return command.ok() ? "" : std::string(command.status().message());
}

TEST(BenchOptions, NcclTestsFlags) {
  auto command =
      Parse({"allreduce", "-b", "8", "-e", "128M", "-f", "2",           "-n",       "7",    "-w",
             "2",         "-c", "0", "-z", "1",    "-o", "max",         "-d",       "half", "-r",
             "3",         "-a", "3", "-T", "9",    "-J", "/tmp/x.json", "--nranks", "4"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->mode, Mode::kSweep);
  EXPECT_EQ(command->collective, "allreduce");
  EXPECT_EQ(command->nranks, 4);
  const SweepOptions& sweep = command->sweep;
  EXPECT_EQ(sweep.min_bytes, 8u);
  EXPECT_EQ(sweep.max_bytes, size_t{128} << 20);
  EXPECT_EQ(sweep.step_factor, 2);
  EXPECT_EQ(sweep.iterations, 7);
  EXPECT_EQ(sweep.warmup, 2);
  EXPECT_EQ(sweep.check, 0);
  EXPECT_TRUE(sweep.blocking);
  EXPECT_EQ(sweep.params.op, ReduceOp::kMax);
  EXPECT_EQ(sweep.params.dtype, DataType::kFloat16);
  EXPECT_EQ(sweep.params.root, 3);
  EXPECT_EQ(sweep.average, Average::kMax);
  EXPECT_EQ(command->timeout, absl::Seconds(9));
  EXPECT_EQ(command->json_path, "/tmp/x.json");
}

// -d names the type as in nccl-tests, or where the buffers live (no type is called cuda).
TEST(BenchOptions, DeviceBuffers) {
  auto command = Parse({"allreduce", "-d", "cuda", "-d", "half"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->sweep.params.memory, MemoryKind::kCuda);
  EXPECT_EQ(command->sweep.params.dtype, DataType::kFloat16);
  command = Parse({"allgather", "--device", "host"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->sweep.params.memory, MemoryKind::kHost);
  EXPECT_EQ(Parse({"allgather"})->sweep.params.memory, MemoryKind::kHost);
  std::string error = Error({"allreduce", "--device", "gpu"});
  EXPECT_NE(error.find("--device"), std::string::npos) << error;
  EXPECT_NE(error.find("cuda or host"), std::string::npos) << error;
  error = Error({"validate", "-d", "cuda"});
  EXPECT_NE(error.find("does not apply to validate"), std::string::npos) << error;
}

TEST(BenchOptions, DefaultsAreNcclTests) {
  auto command = Parse({"alltoall"});
  ASSERT_TRUE(command.ok()) << command.status();
  const SweepOptions& sweep = command->sweep;
  EXPECT_EQ(sweep.min_bytes, size_t{32} << 20);
  EXPECT_EQ(sweep.max_bytes, size_t{32} << 20);
  EXPECT_EQ(sweep.step_bytes, size_t{1} << 20);
  EXPECT_EQ(sweep.iterations, 20);
  EXPECT_EQ(sweep.warmup, 5);
  EXPECT_EQ(sweep.check, 1);
  EXPECT_EQ(sweep.average, Average::kMean);
  EXPECT_EQ(sweep.params.dtype, DataType::kFloat32);
  EXPECT_EQ(sweep.params.op, ReduceOp::kSum);
  EXPECT_EQ(command->nranks, 0);
}

TEST(BenchOptions, LongFlagsWithEquals) {
  auto command = Parse({"broadcast", "--minbytes=1K", "--maxbytes", "1M", "--stepfactor=4",
                        "--datatype=bfloat16", "--root=1", "--output_file=r.json"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->sweep.min_bytes, 1024u);
  EXPECT_EQ(command->sweep.max_bytes, size_t{1} << 20);
  EXPECT_EQ(command->sweep.step_factor, 4);
  EXPECT_EQ(command->sweep.params.dtype, DataType::kBFloat16);
  EXPECT_EQ(command->sweep.params.root, 1);
  EXPECT_EQ(command->json_path, "r.json");
}

TEST(BenchOptions, NcclTestsTypeNames) {
  struct Case {
    const char* name;
    DataType type;
  } cases[] = {{"int8", DataType::kInt8},         {"char", DataType::kInt8},
               {"uint8", DataType::kUInt8},       {"int32", DataType::kInt32},
               {"int", DataType::kInt32},         {"int64", DataType::kInt64},
               {"half", DataType::kFloat16},      {"float16", DataType::kFloat16},
               {"float", DataType::kFloat32},     {"float32", DataType::kFloat32},
               {"double", DataType::kFloat64},    {"float64", DataType::kFloat64},
               {"bfloat16", DataType::kBFloat16}, {"BF16", DataType::kBFloat16}};
  for (const Case& c : cases) {
    auto types = ParseTypes(c.name, nullptr);
    ASSERT_TRUE(types.ok()) << c.name << ": " << types.status();
    ASSERT_EQ(types->size(), 1u);
    EXPECT_EQ(types->front(), c.type) << c.name;
  }
}

TEST(BenchOptions, AllTypesInNcclTestsOrderNamingTheMissingOnes) {
  std::vector<std::string> skipped;
  auto types = ParseTypes("all", &skipped);
  ASSERT_TRUE(types.ok());
  std::vector<DataType> expected = {DataType::kInt8,    DataType::kUInt8,   DataType::kInt32,
                                    DataType::kInt64,   DataType::kFloat16, DataType::kFloat32,
                                    DataType::kFloat64, DataType::kBFloat16};
  EXPECT_EQ(*types, expected);
  EXPECT_EQ(skipped, (std::vector<std::string>{"uint32", "uint64", "fp8_e4m3", "fp8_e5m2"}));
  auto command = Parse({"reduce", "-d", "all", "-o", "all"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->sweep.dtypes, expected);
  EXPECT_EQ(command->sweep.ops,
            (std::vector<ReduceOp>{ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMax, ReduceOp::kMin,
                                   ReduceOp::kAvg}));
  EXPECT_EQ(command->sweep.skipped_ops, (std::vector<std::string>{"mulsum"}));
}

TEST(BenchOptions, TypesAndOpsLibcohortLacksAreErrors) {
  EXPECT_NE(Error({"allreduce", "-d", "uint32"}).find("libcohort has no uint32 type"),
            std::string::npos);
  EXPECT_NE(Error({"allreduce", "-d", "fp8_e4m3"}).find("libcohort has no fp8_e4m3"),
            std::string::npos);
  EXPECT_NE(Error({"allreduce", "-o", "mulsum"}).find("pre-multiplied sum"), std::string::npos);
  EXPECT_NE(Error({"allreduce", "-d", "quad"}).find("-d got \"quad\"; it accepts int8"),
            std::string::npos);
  EXPECT_NE(Error({"allreduce", "-o", "xor"}).find("-o got \"xor\""), std::string::npos);
}

TEST(BenchOptions, BadFlagsNameFlagValueAndAccepted) {
  EXPECT_EQ(Error({"allreduce", "-n", "zero"}),
            "flag -n got \"zero\"; it accepts an integer from 1 to 1048576");
  EXPECT_EQ(Error({"allreduce", "-b", "lots"}),
            "flag -b got \"lots\"; it accepts a size such as 8, 64K, 1M or 2G");
  EXPECT_EQ(Error({"allreduce", "-f", "0.5"}),
            "flag -f got \"0.5\"; it accepts a factor of at least 1");
  EXPECT_EQ(Error({"allreduce", "-a", "4"}),
            "flag -a got \"4\"; it accepts an integer from 0 to 3");
  EXPECT_EQ(Error({"allreduce", "-z", "yes"}),
            "flag -z got \"yes\"; it accepts an integer from 0 to 1");
  EXPECT_EQ(Error({"allreduce", "-b", "2M", "-e", "1M"}),
            "-b (smallest size, 2097152) is larger than -e (largest size, 1048576)");
  EXPECT_EQ(Error({"allreduce", "-n"}), "flag -n needs a value");
  EXPECT_EQ(Error({"allreduce", "--frobnicate", "1"}),
            "unknown flag --frobnicate; run cohort-bench --help for the list");
  EXPECT_NE(Error({"allreduce", "-g", "8"}).find("one rank per process"), std::string::npos);
  EXPECT_NE(Error({"alreduce"}).find("unknown collective or subcommand \"alreduce\""),
            std::string::npos);
  EXPECT_NE(Error({"allreduce", "--algo", "nonesuch"}).find("nonesuch"), std::string::npos);
  EXPECT_EQ(Error({"allreduce", "--expect", "e.json"}),
            "flag --expect does not apply to allreduce");
  EXPECT_EQ(Error({"validate", "-b", "8"}), "flag -b does not apply to validate");
}

TEST(BenchOptions, Validate) {
  auto command = Parse({"validate", "--expect",
                        "e.json",   "--threshold",
                        "0.7",      "--p2p-seconds",
                        "0.5",      "--p2p-max-bytes",
                        "4M",       "--repairings",
                        "3",        "--seed",
                        "42",       "--intra-bytes",
                        "1M",       "--allreduce-bytes",
                        "2M",       "-n",
                        "9",        "--steps",
                        "4",        "--latency-iters",
                        "10",       "-T",
                        "30",       "-J",
                        "v.json"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->mode, Mode::kValidate);
  const ValidateOptions& v = command->validate;
  EXPECT_EQ(v.expect_path, "e.json");
  EXPECT_DOUBLE_EQ(v.threshold, 0.7);
  EXPECT_DOUBLE_EQ(v.p2p_seconds, 0.5);
  EXPECT_EQ(v.p2p_max_bytes, size_t{4} << 20);
  EXPECT_EQ(v.repairings, 3);
  EXPECT_EQ(v.seed, 42u);
  EXPECT_EQ(v.intra_bytes, size_t{1} << 20);
  EXPECT_EQ(v.allreduce_bytes, size_t{2} << 20);
  EXPECT_EQ(v.iterations, 9);
  EXPECT_EQ(v.straggler_steps, 4);
  EXPECT_EQ(v.latency_iterations, 10);
  EXPECT_EQ(v.timeout, absl::Seconds(30));
  EXPECT_EQ(command->json_path, "v.json");
  EXPECT_EQ(Error({"validate", "--threshold", "1.5"}),
            "flag --threshold got \"1.5\"; it accepts a fraction above 0 and at most 1, such as "
            "0.8");
}

TEST(BenchOptions, Report) {
  auto sweep = Parse({"allreduce", "--report", "out"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_EQ(sweep->report_dir, "out");
  EXPECT_EQ(sweep->json_path, "out/allreduce.json");  // without -J, the JSON goes beside the page
  auto validate = Parse({"validate", "-J", "v.json", "--report", "out"});
  ASSERT_TRUE(validate.ok()) << validate.status();
  EXPECT_EQ(validate->json_path, "v.json");
  EXPECT_EQ(Parse({"validate", "--report", "r"})->json_path, "r/validate.json");
  EXPECT_EQ(Error({"topo", "--report", "r"}), "flag --report does not apply to topo");
  // `report` passes everything on to report.py, which checks it.
  auto report = Parse({"report", "a.json", "--text", "-o", "x"});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->mode, Mode::kReport);
  EXPECT_EQ(report->report_args, (std::vector<std::string>{"a.json", "--text", "-o", "x"}));
}

TEST(BenchOptions, CorruptVariable) {
  int rank = -1;
  size_t elements = 0;
  ASSERT_TRUE(ParseCorrupt("2", &rank, &elements).ok());
  EXPECT_EQ(rank, 2);
  EXPECT_EQ(elements, 1u);
  ASSERT_TRUE(ParseCorrupt("0:17", &rank, &elements).ok());
  EXPECT_EQ(rank, 0);
  EXPECT_EQ(elements, 17u);
  for (const char* bad : {"", "x", "-1", "1:0", "1:2:3", "1:x"}) {
    absl::Status status = ParseCorrupt(bad, &rank, &elements);
    EXPECT_FALSE(status.ok()) << bad;
    EXPECT_NE(status.message().find("COHORT_BENCH_CORRUPT"), std::string::npos);
  }
}

TEST(BenchOptions, Environment) {
  auto command = Parse({"allreduce"});
  ASSERT_TRUE(command.ok());
  setenv("COHORT_BENCH_MIN_BW", "12.5", 1);
  setenv("COHORT_BENCH_CORRUPT", "1:4", 1);
  ASSERT_TRUE(ApplyEnvironment(*command).ok());
  EXPECT_DOUBLE_EQ(command->sweep.min_bus_bandwidth, 12.5);
  EXPECT_EQ(command->sweep.corrupt_rank, 1);
  EXPECT_EQ(command->sweep.corrupt_elements, 4u);
  setenv("COHORT_BENCH_MIN_BW", "fast", 1);
  absl::Status status = ApplyEnvironment(*command);
  EXPECT_EQ(status.message(),
            "COHORT_BENCH_MIN_BW=\"fast\" is not valid: it accepts a bandwidth in GB/s such as "
            "10 or 2.5. Fix or unset it.");
  unsetenv("COHORT_BENCH_MIN_BW");
  unsetenv("COHORT_BENCH_CORRUPT");
  auto fresh = Parse({"allreduce"});
  ASSERT_TRUE(ApplyEnvironment(*fresh).ok());
  EXPECT_LT(fresh->sweep.min_bus_bandwidth, 0);
  EXPECT_EQ(fresh->sweep.corrupt_rank, -1);
}

}  // namespace
}  // namespace cohort::bench

namespace cohort::bench {
namespace {

TEST(BenchOptionsTransports, ChannelListIsParsedAndBadOnesNamed) {
  auto command = ParseCommand({"cohort-bench", "sendrecv", "--transports", "ucx,tcp"});
  ASSERT_TRUE(command.ok()) << command.status();
  ASSERT_TRUE(command->transports.has_value());
  EXPECT_EQ(ChannelKindsText(*command->transports), "ucx,tcp");
  EXPECT_FALSE(ParseCommand({"cohort-bench", "sendrecv"})->transports.has_value());
  auto bad = ParseCommand({"cohort-bench", "sendrecv", "--transports", "ib"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("\"ib\""), std::string::npos);
}

}  // namespace
}  // namespace cohort::bench
