// cohortrun's command line: torchrun's flags in both spellings (--nproc-per-node and
// --nproc_per_node), each also settable as PET_<NAME>, then values detected from the scheduler
// (Slurm, dstack, Open MPI) for what neither gave. Flags always win. Used by main.cc and the
// agent; --dry-run prints the result.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "elastic/rendezvous.h"

namespace cohort::launcher {

// Redirect/tee masks per local rank: bit 1 stdout, bit 2 stderr (torchrun's Std).
struct StreamSpec {
  int all = 0;                 // applies to ranks without an entry
  std::map<int, int> per_rank;
  int For(int local_rank) const {
    auto it = per_rank.find(local_rank);
    return it == per_rank.end() ? all : it->second;
  }
};

struct LaunchOptions {
  // --nnodes N|MIN:MAX
  int min_nodes = 1;
  int max_nodes = 1;
  // --nproc-per-node N|auto|cpu|gpu, resolved to a count.
  std::string nproc_per_node_text = "1";
  int nproc_per_node = 1;
  int node_rank = -1;  // -1: not given
  std::string rdzv_backend = "c10d";
  std::string rdzv_endpoint;  // empty: not given
  std::string rdzv_id = "none";
  std::string rdzv_conf;
  bool standalone = false;
  int max_restarts = 0;
  // --on-failure restart|shrink (or COHORT_ON_FAILURE): what a failed worker or a lost node does
  // to the job. restart (torchrun's way): every worker stops and a new generation starts.
  // shrink: it is removed from the job and the survivors go on (settings.shrink_on_failure).
  std::string on_failure = "restart";
  double monitor_interval_seconds = 0.1;
  std::string start_method = "spawn";  // accepted for compatibility; workers are always exec'd
  std::string role = "default";
  std::string master_addr = "127.0.0.1";
  bool master_addr_given = false;
  int master_port = 29500;
  bool master_port_given = false;
  std::string local_addr;
  std::string log_dir;
  StreamSpec redirects;
  StreamSpec tee;
  std::vector<int> local_ranks_filter;  // empty: every local rank on the console
  bool no_python = false;
  bool module = false;
  bool run_path = false;
  std::vector<std::string> signals_to_handle = {"SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"};
  std::map<std::string, std::string> node_labels;  // --node-label key=value (repeatable)
  std::string log_line_prefix_template = "[${host}:${rank}] ";
  bool dry_run = false;

  std::string training_script;
  std::vector<std::string> script_args;

  // Rendezvous settings derived from --nnodes, --rdzv-conf and --max-restarts.
  elastic::RendezvousSettings settings;
  int is_host = -1;  // --rdzv-conf is_host: -1 decide from the endpoint

  // Where each value came from ("flag", "PET_NNODES", "Slurm", "default"), for --dry-run.
  std::map<std::string, std::string> sources;
  // Which scheduler environment was detected ("Slurm", "dstack", "Open MPI", "none").
  std::string scheduler = "none";
};

// Parses argv (without argv[0]) with `environment` (name -> value) standing for the process
// environment. A malformed or unknown flag is an InvalidArgument error that names it and what
// is accepted.
absl::StatusOr<LaunchOptions> ParseLaunchOptions(const std::vector<std::string>& args,
                                                 const std::map<std::string, std::string>& environment);

// The process environment as a map.
std::map<std::string, std::string> CurrentEnvironment();

// cohortrun --help.
std::string Usage();

// Expands Slurm's compressed host lists: "node[01-03,7],gpu-a1" -> node01 node02 node03 node7
// gpu-a1; several bracket groups in one name multiply out.
absl::StatusOr<std::vector<std::string>> ExpandSlurmNodelist(const std::string& nodelist);

// Parses --redirects / --tee: "3" or "0:1,1:2" (local rank:mask).
absl::StatusOr<StreamSpec> ParseStreamSpec(const std::string& text, const std::string& flag);

// The number of workers --nproc-per-node asks for on this host (auto, cpu and gpu resolved).
absl::StatusOr<int> ResolveNprocPerNode(const std::string& text);

}  // namespace cohort::launcher
