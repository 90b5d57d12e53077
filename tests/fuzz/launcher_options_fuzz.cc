// cohortrun's command line and the scheduler environments it reads (Slurm's SLURM_* with
// compressed node lists such as node[001-004,010], dstack's DSTACK_*, Kubeflow's PET_*, Open
// MPI's OMPI_*): one argument per line, NAME=VALUE lines as the environment (fuzz_input.h).
// The node-list expander, --redirects/--tee and --rdzv-conf parsers are fed the whole text too.
#include <string>

#include "elastic/rendezvous.h"
#include "fuzz_input.h"
#include "launcher/options.h"

using namespace cohort;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = fuzz::Text(data, size);
  fuzz::ArgsAndEnvironment input = fuzz::SplitLines(text);
  auto options = launcher::ParseLaunchOptions(input.args, input.environment);
  if (options.ok()) {
    if (options->min_nodes < 1 || options->max_nodes < options->min_nodes) __builtin_trap();
    if (options->nproc_per_node < 1) __builtin_trap();
  }
  auto hosts = launcher::ExpandSlurmNodelist(text);
  if (hosts.ok()) {
    for (const std::string& host : *hosts) {
      if (host.empty()) __builtin_trap();
    }
  }
  (void)launcher::ParseStreamSpec(text, "--redirects");
  elastic::RendezvousSettings settings;
  int is_host = -1;
  (void)elastic::ParseRendezvousConf(text, &settings, &is_host);
  return 0;
}
