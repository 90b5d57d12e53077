// cohort-bench's command line: nccl-tests' flags for the collective sweeps (-b -e -i -f -n -w -c
// -z -o -d -r -a -T -J, with its type and op names and "all"), the validate flags, and the
// COHORT_BENCH_* variables. Parsed here, apart from main, so that tests can check it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/sweep.h"
#include "bench/validate.h"

namespace cohort::bench {

enum class Mode { kSweep, kTopo, kAlgos, kMemcpy, kValidate, kReport };

struct Command {
  Mode mode = Mode::kSweep;
  std::string collective;  // kSweep
  int nranks = 0;          // 0: one rank of a launched job (RANK, WORLD_SIZE, COHORT_STORE_ADDR)
  // --nranks: pin rank i to the i-th allowed CPU (as mpirun does by default for small jobs).
  enum class Bind { kAuto, kCore, kNone } bind = Bind::kAuto;
  SweepOptions sweep;
  ValidateOptions validate;
  std::string json_path;                          // -J: the JSON report (rank 0 writes it)
  std::string report_dir;                         // --report: rank 0's page (-J: DIR/NAME.json)
  std::vector<std::string> report_args;           // `cohort-bench report ARGS`, for report.py
  absl::Duration timeout = absl::ZeroDuration();  // -T: per operation; zero: COHORT_TIMEOUT
  std::optional<std::vector<ChannelKind>> transports;  // --transports; unset: COHORT_TRANSPORTS
  std::vector<std::string> argv;                  // as given, for reports
};

// Exit codes, as nccl-tests and the rest of cohort use them.
inline constexpr int kExitOk = 0;
inline constexpr int kExitVerdict = 1;  // validate: a node or link is SLOW or FAIL
inline constexpr int kExitUsage = 2;    // bad flag, value or variable
inline constexpr int kExitFailure = 3;  // could not run (store, connection, timeout)
inline constexpr int kExitWrong = 7;    // wrong results, or bandwidth below COHORT_BENCH_MIN_BW

// Parses argv (argv[0] is the program). An error names the flag, the value and what is accepted.
absl::StatusOr<Command> ParseCommand(const std::vector<std::string>& argv);

// Reads COHORT_BENCH_MIN_BW and COHORT_BENCH_CORRUPT into `command`.
absl::Status ApplyEnvironment(Command& command);

// nccl-tests' type names (int8 uint8 int32 uint32 int64 uint64 half float double bfloat16, and
// char, int, float16, float32, float64, bf16); "all" gives every type libcohort has, in
// nccl-tests' order. Types libcohort lacks (uint32, uint64, fp8) are an error naming them, or
// with "all" listed in `skipped`.
absl::StatusOr<std::vector<DataType>> ParseTypes(const std::string& text,
                                                 std::vector<std::string>* skipped);
// sum prod max min avg (nccl-tests' order for "all"), and band bor bxor.
absl::StatusOr<std::vector<ReduceOp>> ParseOps(const std::string& text,
                                               std::vector<std::string>* skipped);

// COHORT_BENCH_CORRUPT's value: "RANK" or "RANK:ELEMENTS".
absl::Status ParseCorrupt(const std::string& text, int* rank, size_t* elements);

void PrintUsage(FILE* out);

}  // namespace cohort::bench
