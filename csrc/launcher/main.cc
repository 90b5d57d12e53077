// cohortrun: the torchrun-compatible launcher. Parses the flags, validates COHORT_* settings,
// then runs this node's agent (agent.h) and exits with its code.
#include <cstdio>
#include <string>
#include <vector>

#include "common/config.h"
#include "launcher/agent.h"
#include "launcher/options.h"

int main(int argc, char** argv) {
  using namespace cohort::launcher;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto options = ParseLaunchOptions(args, CurrentEnvironment());
  if (!options.ok()) {
    std::fprintf(stderr, "cohortrun: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  if (options->sources.contains("help")) {
    std::fputs(Usage().c_str(), stdout);
    return 0;
  }
  absl::Status environment = cohort::config::ValidateEnvironment();
  if (!environment.ok()) {
    std::fprintf(stderr, "cohortrun: %s\n", std::string(environment.message()).c_str());
    return 2;
  }
  if (options->dry_run) {
    std::fputs(DescribeDryRun(*options).c_str(), stdout);
    return 0;
  }
  return RunAgent(*options);
}
