// cohort-config: prints the COHORT_* variable registry (--markdown generates docs/config.md) and
// checks the current environment against it (--check).
#include <cstdio>
#include <cstring>

#include "common/config.h"

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--markdown") == 0) {
    std::fputs(cohort::config::Markdown().c_str(), stdout);
    return 0;
  }
  if (argc == 2 && std::strcmp(argv[1], "--check") == 0) {
    absl::Status status = cohort::config::ValidateEnvironment();
    if (!status.ok()) {
      std::fprintf(stderr, "cohort-config: %s\n", std::string(status.message()).c_str());
      return 2;
    }
    std::puts("environment OK");
    return 0;
  }
  if (argc == 1 || (argc == 2 && std::strcmp(argv[1], "--help") == 0)) {
    std::puts("usage: cohort-config [--markdown | --check]\n\nVariables:");
    for (const auto& variable : cohort::config::Registry()) {
      std::printf("  %-30s default %-8s %s\n    accepts %s\n", variable.name,
                  variable.default_value[0] ? variable.default_value : "(unset)", variable.doc,
                  cohort::config::Accepted(variable).c_str());
    }
    return 0;
  }
  std::fprintf(stderr, "cohort-config: unknown argument \"%s\"; accepted: --markdown, --check, --help\n",
               argv[1]);
  return 2;
}
