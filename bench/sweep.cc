#include "bench/sweep.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace cohort::bench {
namespace {

// A reduction of one scalar across ranks through the communicator under test.
absl::StatusOr<double> AllreduceScalar(Communicator& comm, double value, ReduceOp op) {
  AllreduceOptions options;
  options.input = &value;
  options.output = &value;
  options.count = 1;
  options.dtype = DataType::kFloat64;
  options.op = op;
  COHORT_RETURN_IF_ERROR(comm.Allreduce(options)->Wait());
  return value;
}

struct Column {
  double microseconds = 0;
  double algbw = 0;
  double busbw = 0;
  size_t wrong = 0;
};

absl::StatusOr<Column> Measure(Communicator& comm, const Collective& collective,
                               const SweepOptions& options, size_t count, size_t bytes,
                               bool in_place) {
  const int n = comm.size();
  Buffers buffers;
  collective.prepare(buffers, options.params, comm.rank(), n, count);
  for (int i = 0; i < options.warmup; ++i) {
    COHORT_RETURN_IF_ERROR(collective.run(comm, buffers, options.params, in_place)->Wait());
  }
  COHORT_RETURN_IF_ERROR(comm.Barrier()->Wait());
  auto start = std::chrono::steady_clock::now();
  std::shared_ptr<Work> last;
  for (int i = 0; i < options.iterations; ++i) {
    last = collective.run(comm, buffers, options.params, in_place);
    if (options.blocking) COHORT_RETURN_IF_ERROR(last->Wait());
  }
  if (last != nullptr) COHORT_RETURN_IF_ERROR(last->Wait());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
                   std::max(1, options.iterations);
  // The slowest rank's time is the operation's time.
  COHORT_ASSIGN_OR_RETURN(seconds, AllreduceScalar(comm, seconds, ReduceOp::kMax));
  Column column;
  column.microseconds = seconds * 1e6;
  column.algbw = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
  column.busbw = column.algbw * collective.bus_factor(n);
  if (options.check) {
    collective.prepare(buffers, options.params, comm.rank(), n, count);
    COHORT_RETURN_IF_ERROR(collective.run(comm, buffers, options.params, in_place)->Wait());
    double wrong = static_cast<double>(
        collective.count_wrong(buffers, options.params, comm.rank(), n, in_place));
    COHORT_ASSIGN_OR_RETURN(wrong, AllreduceScalar(comm, wrong, ReduceOp::kSum));
    column.wrong = static_cast<size_t>(wrong);
  }
  return column;
}

std::string TimeText(double microseconds) {
  if (microseconds >= 1e7) return absl::StrFormat("%.0f", microseconds);
  if (microseconds >= 1e4) return absl::StrFormat("%.1f", microseconds);
  return absl::StrFormat("%.2f", microseconds);
}

}  // namespace

absl::StatusOr<SweepResult> RunSweep(Communicator& comm, const Collective& collective,
                                     const SweepOptions& options, FILE* out) {
  const int n = comm.size();
  const size_t element = DataTypeSize(options.params.dtype);
  const bool print = comm.rank() == 0 && out != nullptr;
  if (print) {
    std::fprintf(out, "# cohort-bench %s: %d ranks, %s%s%s, %zu to %zu bytes, %d iterations, %d warm-up%s\n",
                 collective.name, n, DataTypeName(options.params.dtype),
                 collective.reduces ? " " : "", collective.reduces ? ReduceOpName(options.params.op) : "",
                 options.min_bytes, options.max_bytes, options.iterations, options.warmup,
                 options.blocking ? ", blocking" : "");
    std::fprintf(out, "#\n");
    std::fprintf(out, "# %10s  %12s  %8s  %6s  %6s  %s  %s\n", "", "", "", "", "",
                 "         out-of-place          ", "          in-place           ");
    std::fprintf(out, "# %10s  %12s  %8s  %6s  %6s  %8s %7s %7s %6s  %8s %7s %7s %6s\n", "size",
                 "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
                 "algbw", "busbw", "#wrong");
    std::fprintf(out, "# %10s  %12s  %8s  %6s  %6s  %8s %7s %7s %6s  %8s %7s %7s %6s\n", "(B)",
                 "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)",
                 "(GB/s)", "");
    std::fflush(out);
  }
  SweepResult result;
  double bandwidth_sum = 0;
  int bandwidth_columns = 0;
  for (size_t bytes = options.min_bytes; bytes <= options.max_bytes;) {
    const size_t blocks = collective.per_rank_blocks ? static_cast<size_t>(n) : 1;
    size_t count = bytes / element / blocks;
    size_t used = count * element * blocks;  // sizes not divisible are rounded down
    COHORT_ASSIGN_OR_RETURN(Column out_of_place,
                            Measure(comm, collective, options, count, used, false));
    COHORT_ASSIGN_OR_RETURN(Column in_place, Measure(comm, collective, options, count, used, true));
    result.wrong += out_of_place.wrong + in_place.wrong;
    bandwidth_sum += out_of_place.busbw + in_place.busbw;
    bandwidth_columns += 2;
    if (print) {
      std::fprintf(out, "  %10zu  %12zu  %8s  %6s  %6d  %8s %7.3f %7.3f %6zu  %8s %7.3f %7.3f %6zu\n",
                   used, used / element, DataTypeName(options.params.dtype),
                   collective.reduces ? ReduceOpName(options.params.op) : "none",
                   collective.rooted ? options.params.root : -1,
                   TimeText(out_of_place.microseconds).c_str(), out_of_place.algbw,
                   out_of_place.busbw, out_of_place.wrong, TimeText(in_place.microseconds).c_str(),
                   in_place.algbw, in_place.busbw, in_place.wrong);
      std::fflush(out);
    }
    size_t next = options.step_factor > 1
                      ? static_cast<size_t>(static_cast<double>(bytes) * options.step_factor)
                      : bytes + options.step_bytes;
    if (next <= bytes) break;
    bytes = next;
  }
  result.average_bus_bandwidth = bandwidth_columns > 0 ? bandwidth_sum / bandwidth_columns : 0;
  if (print) {
    std::fprintf(out, "# Out of bounds values : %zu %s\n", result.wrong,
                 result.wrong == 0 ? "OK" : "ERROR");
    std::fprintf(out, "# Avg bus bandwidth    : %.4f\n#\n", result.average_bus_bandwidth);
    std::fflush(out);
  }
  return result;
}

}  // namespace cohort::bench
