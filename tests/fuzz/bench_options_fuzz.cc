// cohort-bench's command line (nccl-tests' flags, the validate flags) and its value parsers
// (types, reduce ops, COHORT_BENCH_CORRUPT): one argument per line after the program name.
#include <string>

#include "bench/options.h"
#include "fuzz_input.h"

using namespace cohort;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = fuzz::Text(data, size);
  fuzz::ArgsAndEnvironment input = fuzz::SplitLines(text);
  std::vector<std::string> argv = {"cohort-bench"};
  argv.insert(argv.end(), input.args.begin(), input.args.end());
  (void)bench::ParseCommand(argv);
  std::vector<std::string> skipped;
  (void)bench::ParseTypes(text, &skipped);
  (void)bench::ParseOps(text, &skipped);
  int rank = 0;
  size_t elements = 0;
  (void)bench::ParseCorrupt(text, &rank, &elements);
  return 0;
}
