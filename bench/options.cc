#include "bench/options.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "collectives/algorithms/registry.h"
#include "common/config.h"

namespace cohort::bench {
namespace {

struct TypeName {
  const char* name;
  bool supported;
  DataType type;
};

// nccl-tests' names first (the order of -d all), then aliases.
const TypeName kTypeNames[] = {
    {"int8", true, DataType::kInt8},       {"uint8", true, DataType::kUInt8},
    {"int32", true, DataType::kInt32},     {"uint32", false, DataType::kInt32},
    {"int64", true, DataType::kInt64},     {"uint64", false, DataType::kInt64},
    {"half", true, DataType::kFloat16},    {"float", true, DataType::kFloat32},
    {"double", true, DataType::kFloat64},  {"bfloat16", true, DataType::kBFloat16},
    {"fp8_e4m3", false, DataType::kUInt8}, {"fp8_e5m2", false, DataType::kUInt8},
    {"char", true, DataType::kInt8},       {"int", true, DataType::kInt32},
    {"float16", true, DataType::kFloat16}, {"float32", true, DataType::kFloat32},
    {"float64", true, DataType::kFloat64}, {"bf16", true, DataType::kBFloat16},
    {"f8e4m3", false, DataType::kUInt8},   {"f8e5m2", false, DataType::kUInt8},
};
constexpr int kNcclTestsTypes = 12;  // the first entries: what "all" walks through

struct OpName {
  const char* name;
  bool supported;
  ReduceOp op;
};

const OpName kOpNames[] = {
    {"sum", true, ReduceOp::kSum},   {"prod", true, ReduceOp::kProd},
    {"max", true, ReduceOp::kMax},   {"min", true, ReduceOp::kMin},
    {"avg", true, ReduceOp::kAvg},   {"mulsum", false, ReduceOp::kSum},
    {"band", true, ReduceOp::kBand}, {"bor", true, ReduceOp::kBor},
    {"bxor", true, ReduceOp::kBxor},
};
constexpr int kNcclTestsOps = 6;

absl::Status Fail(const std::string& message) { return absl::InvalidArgumentError(message); }

std::string TypeNamesText() {
  std::vector<std::string> names;
  for (const TypeName& entry : kTypeNames) {
    if (entry.supported) names.push_back(entry.name);
  }
  return absl::StrCat(absl::StrJoin(names, ", "), " or all");
}

}  // namespace

absl::StatusOr<std::vector<DataType>> ParseTypes(const std::string& text,
                                                 std::vector<std::string>* skipped) {
  std::string lower = absl::AsciiStrToLower(text);
  std::vector<DataType> types;
  if (lower == "all") {
    for (int i = 0; i < kNcclTestsTypes; ++i) {
      if (kTypeNames[i].supported) {
        types.push_back(kTypeNames[i].type);
      } else if (skipped != nullptr) {
        skipped->push_back(kTypeNames[i].name);
      }
    }
    return types;
  }
  for (const TypeName& entry : kTypeNames) {
    if (lower != entry.name) continue;
    if (!entry.supported) {
      return Fail(absl::StrCat("-d ", text, ": libcohort has no ", entry.name, " type; it accepts ",
                               TypeNamesText()));
    }
    return std::vector<DataType>{entry.type};
  }
  return Fail(absl::StrCat("-d got \"", text, "\"; it accepts ", TypeNamesText()));
}

absl::StatusOr<std::vector<ReduceOp>> ParseOps(const std::string& text,
                                               std::vector<std::string>* skipped) {
  std::string lower = absl::AsciiStrToLower(text);
  std::vector<ReduceOp> ops;
  if (lower == "all") {
    for (int i = 0; i < kNcclTestsOps; ++i) {
      if (kOpNames[i].supported) {
        ops.push_back(kOpNames[i].op);
      } else if (skipped != nullptr) {
        skipped->push_back(kOpNames[i].name);
      }
    }
    return ops;
  }
  for (const OpName& entry : kOpNames) {
    if (lower != entry.name) continue;
    if (!entry.supported) {
      return Fail(absl::StrCat("-o ", text,
                               ": libcohort has no pre-multiplied sum; it accepts sum, prod, "
                               "max, min, avg, band, bor, bxor or all"));
    }
    return std::vector<ReduceOp>{entry.op};
  }
  return Fail(absl::StrCat("-o got \"", text,
                           "\"; it accepts sum, prod, max, min, avg, band, bor, bxor or all"));
}

absl::Status ParseCorrupt(const std::string& text, int* rank, size_t* elements) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  int64_t count = 1;
  bool ok = (parts.size() == 1 || parts.size() == 2) && absl::SimpleAtoi(parts[0], rank) &&
            *rank >= 0 && (parts.size() == 1 || (absl::SimpleAtoi(parts[1], &count) && count > 0));
  if (!ok) {
    return Fail(absl::StrCat("COHORT_BENCH_CORRUPT=\"", text,
                             "\" is not valid: it accepts RANK or RANK:ELEMENTS (e.g. 1:3). Fix "
                             "or unset it."));
  }
  *elements = static_cast<size_t>(count);
  return absl::OkStatus();
}

absl::Status ApplyEnvironment(Command& command) {
  auto min_bw = config::GetString("COHORT_BENCH_MIN_BW");
  if (!min_bw.ok()) return min_bw.status();
  if (!min_bw->empty()) {
    double value = 0;
    if (!absl::SimpleAtod(*min_bw, &value) || value < 0) {
      return Fail(absl::StrCat("COHORT_BENCH_MIN_BW=\"", *min_bw,
                               "\" is not valid: it accepts a bandwidth in GB/s such as 10 or "
                               "2.5. Fix or unset it."));
    }
    command.sweep.min_bus_bandwidth = value;
  }
  auto corrupt = config::GetString("COHORT_BENCH_CORRUPT");
  if (!corrupt.ok()) return corrupt.status();
  if (!corrupt->empty()) {
    absl::Status status =
        ParseCorrupt(*corrupt, &command.sweep.corrupt_rank, &command.sweep.corrupt_elements);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<Command> ParseCommand(const std::vector<std::string>& argv) {
  Command command;
  command.argv = argv;
  if (argv.size() < 2) return Fail("no collective or subcommand given");
  const std::string& first = argv[1];
  if (first == "topo") {
    command.mode = Mode::kTopo;
  } else if (first == "algos") {
    command.mode = Mode::kAlgos;
  } else if (first == "memcpy") {
    command.mode = Mode::kMemcpy;
  } else if (first == "validate") {
    command.mode = Mode::kValidate;
  } else if (first == "report") {
    // Everything after "report" is python/cohort/report.py's to check (it names bad input).
    command.mode = Mode::kReport;
    command.report_args.assign(argv.begin() + 2, argv.end());
    return command;
  } else if (FindCollective(first) != nullptr) {
    command.collective = first;
  } else {
    return Fail(absl::StrCat("unknown collective or subcommand \"", first,
                             "\"; accepted: ", absl::StrJoin(CollectiveNames(), ", "),
                             ", validate, topo, algos, memcpy"));
  }
  SweepOptions& sweep = command.sweep;
  ValidateOptions& validate = command.validate;
  bool sweep_flags = command.mode == Mode::kSweep || command.mode == Mode::kMemcpy;
  bool validate_mode = command.mode == Mode::kValidate;
  std::string types_text, ops_text;
  for (size_t i = 2; i < argv.size(); ++i) {
    std::string flag = argv[i];
    std::string value;
    size_t equals = flag.find('=');
    if (absl::StartsWith(flag, "--") && equals != std::string::npos) {
      value = flag.substr(equals + 1);
      flag = flag.substr(0, equals);
    } else {
      if (i + 1 >= argv.size()) return Fail(absl::StrCat("flag ", flag, " needs a value"));
      value = argv[++i];
    }
    auto bad = [&](const std::string& accepted) {
      return Fail(absl::StrCat("flag ", flag, " got \"", value, "\"; it accepts ", accepted));
    };
    auto only = [&](bool allowed) -> absl::Status {
      if (allowed) return absl::OkStatus();
      return Fail(absl::StrCat("flag ", flag, " does not apply to ", first));
    };
    auto bytes = [&](size_t* target, int64_t minimum) -> absl::Status {
      auto parsed = config::ParseBytes(value);
      if (!parsed.ok() || *parsed < minimum) return bad("a size such as 8, 64K, 1M or 2G");
      *target = static_cast<size_t>(*parsed);
      return absl::OkStatus();
    };
    auto integer = [&](int* target, int64_t minimum, int64_t maximum) -> absl::Status {
      int64_t parsed = 0;
      if (!absl::SimpleAtoi(value, &parsed) || parsed < minimum || parsed > maximum) {
        return bad(absl::StrCat("an integer from ", minimum, " to ", maximum));
      }
      *target = static_cast<int>(parsed);
      return absl::OkStatus();
    };
    absl::Status status;
    if (flag == "--nranks") {
      status = integer(&command.nranks, 1, 512);
    } else if (flag == "--bind") {
      if (value == "auto") {
        command.bind = Command::Bind::kAuto;
      } else if (value == "core") {
        command.bind = Command::Bind::kCore;
      } else if (value == "none") {
        command.bind = Command::Bind::kNone;
      } else {
        status = bad("auto, core or none");
      }
    } else if (flag == "--tag") {
      // A label on the command line only (tests find their processes by it).
    } else if (flag == "-J" || flag == "--output_file" || flag == "--json") {
      command.json_path = value;
    } else if (flag == "--report") {
      status = only(command.mode == Mode::kSweep || validate_mode);
      if (status.ok() && value.empty()) status = bad("a folder for the report page");
      command.report_dir = value;
    } else if (flag == "-T" || flag == "--timeout") {
      int seconds = 0;
      status = integer(&seconds, 1, 86400);
      command.timeout = absl::Seconds(seconds);
      validate.timeout = absl::Seconds(seconds);
    } else if (flag == "-n" || flag == "--iters") {
      status = integer(validate_mode ? &validate.iterations : &sweep.iterations, 1, 1 << 20);
    } else if (flag == "--transports") {
      auto kinds = ParseChannelKinds(value);
      if (kinds.ok()) {
        command.transports = std::move(*kinds);
      } else {
        status = kinds.status();
      }
    } else if (flag == "--algo") {
      status = ValidateAlgorithmName(value);
      if (status.ok()) {
        sweep.params.algorithm = value;
        validate.cluster_algorithm = value;
      }
    } else if (flag == "-g" || flag == "--ngpus" || flag == "-t" || flag == "--nthreads") {
      if (value != "1") {
        status = bad("1 (cohort-bench runs one rank per process: use --nranks or a launcher)");
      }
    } else if (flag == "-b" || flag == "--minbytes") {
      status = only(sweep_flags);
      if (status.ok()) status = bytes(&sweep.min_bytes, 0);
    } else if (flag == "-e" || flag == "--maxbytes") {
      status = only(sweep_flags);
      if (status.ok()) status = bytes(&sweep.max_bytes, 0);
    } else if (flag == "-i" || flag == "--stepbytes") {
      status = only(sweep_flags);
      if (status.ok()) status = bytes(&sweep.step_bytes, 1);
    } else if (flag == "-f" || flag == "--stepfactor") {
      double real = 0;
      status = only(sweep_flags);
      if (status.ok() && (!absl::SimpleAtod(value, &real) || real < 1)) {
        status = bad("a factor of at least 1");
      }
      sweep.step_factor = real;
    } else if (flag == "-w" || flag == "--warmup_iters") {
      status = only(sweep_flags);
      if (status.ok()) status = integer(&sweep.warmup, 0, 1 << 20);
    } else if (flag == "-c" || flag == "--check") {
      status = only(sweep_flags);
      if (status.ok()) status = integer(&sweep.check, 0, 1000);
    } else if (flag == "-z" || flag == "--blocking") {
      int blocking = 0;
      status = only(sweep_flags);
      if (status.ok()) status = integer(&blocking, 0, 1);
      sweep.blocking = blocking == 1;
    } else if (flag == "-a" || flag == "--average") {
      int average = 1;
      status = only(sweep_flags);
      if (status.ok()) status = integer(&average, 0, 3);
      sweep.average = static_cast<Average>(average);
    } else if (flag == "-o" || flag == "--op") {
      status = only(sweep_flags);
      ops_text = value;
    } else if ((flag == "-d" || flag == "--device") &&
               (value == "cuda" || value == "host" || value == "cpu")) {
      // nccl-tests' -d is the data type; no type is called cuda or host, so -d also takes
      // where the buffers live.
      status = only(command.mode == Mode::kSweep);
      sweep.params.memory = value == "cuda" ? MemoryKind::kCuda : MemoryKind::kHost;
    } else if (flag == "--device") {
      status = bad("cuda or host");
    } else if (flag == "-d" || flag == "--datatype") {
      status = only(sweep_flags);
      types_text = value;
    } else if (flag == "-r" || flag == "--root") {
      status = only(sweep_flags);
      if (status.ok()) status = integer(&sweep.params.root, 0, 1 << 20);
    } else if (flag == "--expect") {
      status = only(validate_mode);
      validate.expect_path = value;
    } else if (flag == "--threshold") {
      status = only(validate_mode);
      if (status.ok() && (!absl::SimpleAtod(value, &validate.threshold) ||
                          validate.threshold <= 0 || validate.threshold > 1)) {
        status = bad("a fraction above 0 and at most 1, such as 0.8");
      }
    } else if (flag == "--p2p-seconds") {
      status = only(validate_mode);
      if (status.ok() && (!absl::SimpleAtod(value, &validate.p2p_seconds) ||
                          validate.p2p_seconds <= 0 || validate.p2p_seconds > 60)) {
        status = bad("seconds above 0 and at most 60, such as 0.25");
      }
    } else if (flag == "--p2p-max-bytes") {
      status = only(validate_mode);
      if (status.ok()) status = bytes(&validate.p2p_max_bytes, 1);
    } else if (flag == "--latency-iters") {
      status = only(validate_mode);
      if (status.ok()) status = integer(&validate.latency_iterations, 1, 100000);
    } else if (flag == "--repairings") {
      status = only(validate_mode);
      if (status.ok()) status = integer(&validate.repairings, 0, 1000);
    } else if (flag == "--confirmations") {
      status = only(validate_mode);
      if (status.ok()) status = integer(&validate.confirmations, 0, 100);
    } else if (flag == "--seed") {
      status = only(validate_mode);
      if (status.ok() && !absl::SimpleAtoi(value, &validate.seed)) status = bad("an integer");
    } else if (flag == "--intra-bytes") {
      status = only(validate_mode);
      if (status.ok()) status = bytes(&validate.intra_bytes, 4);
    } else if (flag == "--allreduce-bytes") {
      status = only(validate_mode);
      if (status.ok()) status = bytes(&validate.allreduce_bytes, 0);
    } else if (flag == "--steps") {
      status = only(validate_mode);
      if (status.ok()) status = integer(&validate.straggler_steps, 1, 100000);
    } else {
      status = Fail(absl::StrCat("unknown flag ", flag, "; run cohort-bench --help for the list"));
    }
    if (!status.ok()) return status;
  }
  if (!types_text.empty()) {
    auto types = ParseTypes(types_text, &sweep.skipped_types);
    if (!types.ok()) return types.status();
    sweep.dtypes = *types;
    sweep.params.dtype = types->front();
  }
  if (!ops_text.empty()) {
    auto ops = ParseOps(ops_text, &sweep.skipped_ops);
    if (!ops.ok()) return ops.status();
    sweep.ops = *ops;
    sweep.params.op = ops->front();
  }
  if (!command.report_dir.empty() && command.json_path.empty()) {
    command.json_path = absl::StrCat(command.report_dir, "/",
                                     validate_mode ? "validate" : command.collective, ".json");
  }
  if (sweep.min_bytes > sweep.max_bytes) {
    return Fail(absl::StrCat("-b (smallest size, ", sweep.min_bytes,
                             ") is larger than -e (largest size, ", sweep.max_bytes, ")"));
  }
  return command;
}

void PrintUsage(FILE* out) {
  std::fprintf(
      out,
      "usage: cohort-bench COLLECTIVE [--nranks N] [flags]      nccl-tests-style sweep\n"
      "       cohort-bench validate [--nranks N] [flags]        cluster health check\n"
      "       cohort-bench topo [--nranks N]                    hosts, local ranks and links\n"
      "       cohort-bench algos                                registered algorithms\n"
      "       cohort-bench memcpy [-e BYTES] [-n ITERS]         this machine's memcpy GB/s\n"
      "       cohort-bench report FILE... [-o DIR] [--text]     charts of -J reports\n"
      "\n"
      "COLLECTIVE: %s\n"
      "Without --nranks, cohort-bench is one rank of a launched job (RANK, WORLD_SIZE and\n"
      "COHORT_STORE_ADDR from cohortrun); run it on every node, e.g.\n"
      "  cohortrun --nnodes 4 --nproc-per-node 8 --rdzv-endpoint node0:29400 --no-python \\\n"
      "      cohort-bench allreduce -b 8 -e 1G -f 2\n"
      "\n"
      "Sweep flags (nccl-tests' meanings):\n"
      "  --nranks N                spawn N local ranks\n"
      "  --bind auto|core|none     pin spawned rank i to the i-th allowed CPU; auto (default):\n"
      "                            when there are at least N CPUs (as mpirun binds by default)\n"
      "  -b, --minbytes SIZE       smallest size (default 32M; suffixes K, M, G)\n"
      "  -e, --maxbytes SIZE       largest size (default 32M)\n"
      "  -i, --stepbytes SIZE      increment between sizes (default 1M)\n"
      "  -f, --stepfactor F        multiply sizes by F instead (default 1: use -i)\n"
      "  -n, --iters N             timed iterations per size (default 20)\n"
      "  -w, --warmup_iters N      untimed iterations first (default 5)\n"
      "  -c, --check N             checked runs per size and column (default 1; 0: #wrong N/A)\n"
      "  -z, --blocking 0|1        wait for each operation before the next (default 0)\n"
      "  -a, --average 0|1|2|3     reported time: rank 0's, mean, min or max of the ranks'\n"
      "                            (default 1)\n"
      "  -o, --op OP               sum, prod, max, min, avg, band, bor, bxor or all (default sum)\n"
      "  -d, --datatype TYPE       int8 uint8 int32 int64 half float double bfloat16 or all\n"
      "                            (default float; also char int float16 float32 float64 bf16)\n"
      "  -d, --device cuda|host    where the buffers live (default host); cuda: device memory\n"
      "                            of GPU (local rank modulo GPUs), skipped without a GPU;\n"
      "                            -d may be given twice (-d cuda -d half)\n"
      "  -r, --root R              root rank of rooted collectives (default 0)\n"
      "  -T, --timeout SECONDS     fail an operation that takes longer (default COHORT_TIMEOUT)\n"
      "  -J, --output_file FILE    write a JSON report (per-size per-iteration statistics)\n"
      "  --report DIR              write the JSON report and a page of charts there (report.html)\n"
      "  --algo NAME               force an algorithm (see `cohort-bench algos`)\n"
      "  --transports LIST         channel kinds in order, e.g. ucx or shm,tcp (COHORT_TRANSPORTS)\n"
      "  --tag TEXT                a label on the command line; ignored\n"
      "Exit codes: 0 ok, 2 bad usage, 3 could not run, 7 wrong results or average bus\n"
      "bandwidth below COHORT_BENCH_MIN_BW (GB/s).\n"
      "\n"
      "Validate flags:\n"
      "  --expect FILE             minima per link and node (JSON, see docs/bench.md)\n"
      "  --threshold F             flag what is below F x the cluster median (default 0.8)\n"
      "  --p2p-seconds S           timed transfer per pair and direction (default 0.25)\n"
      "  --p2p-max-bytes SIZE      largest message of the bandwidth test (default 16M)\n"
      "  --latency-iters N         round trips per pair (default 50)\n"
      "  --repairings N            random re-pairing rounds (default 2)\n"
      "  --confirmations N         passes re-measuring slow-looking links (default 2)\n"
      "  --seed N                  seed of the re-pairings (default random)\n"
      "  --intra-bytes SIZE        intra-node allreduce size (default 16M)\n"
      "  --allreduce-bytes SIZE    cluster allreduce size (default: ~0.1 s at the slowest link)\n"
      "  -n N                      timed allreduce iterations (default 5)\n"
      "  --steps N                 steps of the straggler check (default 12)\n"
      "  --algo NAME               cluster allreduce algorithm (default ring)\n"
      "  -T SECONDS                longest single wait (default 60)\n"
      "  -J FILE                   write the JSON report\n"
      "  --report DIR              write the JSON report and a page of charts there (report.html)\n"
      "Exit codes: 0 every node and link PASS, 1 something is SLOW or FAIL, 2 bad usage,\n"
      "3 could not run.\n",
      absl::StrJoin(CollectiveNames(), ", ").c_str());
}

}  // namespace cohort::bench
