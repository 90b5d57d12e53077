// cohortrun's command line and environment detection: torchrun's flags in both spellings,
// PET_* variables, Slurm/dstack/Open MPI environments (flags win), malformed input, Slurm's
// compressed node lists, --redirects/--tee, and the failure summary's error-file parsing.
#include <cstdio>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launcher/options.h"
#include "launcher/summary.h"

namespace cohort::launcher {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<LaunchOptions> Parse(std::vector<std::string> args,
                                    std::map<std::string, std::string> environment = {}) {
  return ParseLaunchOptions(args, environment);
}

TEST(LauncherOptions, BothSpellingsAndInlineValues) {
  auto dashed = Parse({"--nproc-per-node", "3", "--nnodes=2:4", "--rdzv-endpoint", "h:1",
                       "--max-restarts", "2", "--node-rank", "1", "train.py", "--lr", "0.1"});
  ASSERT_TRUE(dashed.ok()) << dashed.status();
  auto snake = Parse({"--nproc_per_node=3", "--nnodes", "2:4", "--rdzv_endpoint=h:1",
                      "--max_restarts", "2", "--node_rank=1", "train.py", "--lr", "0.1"});
  ASSERT_TRUE(snake.ok()) << snake.status();
  for (const LaunchOptions* options : {&*dashed, &*snake}) {
    EXPECT_EQ(options->nproc_per_node, 3);
    EXPECT_EQ(options->min_nodes, 2);
    EXPECT_EQ(options->max_nodes, 4);
    EXPECT_EQ(options->rdzv_endpoint, "h:1");
    EXPECT_EQ(options->max_restarts, 2);
    EXPECT_EQ(options->settings.max_restarts, 2);
    EXPECT_EQ(options->node_rank, 1);
    EXPECT_EQ(options->training_script, "train.py");
    EXPECT_THAT(options->script_args, ElementsAre("--lr", "0.1"));
  }
}

TEST(LauncherOptions, TorchrunDefaults) {
  auto options = Parse({"train.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->nproc_per_node, 1);
  EXPECT_EQ(options->min_nodes, 1);
  EXPECT_EQ(options->max_nodes, 1);
  EXPECT_EQ(options->rdzv_backend, "c10d");
  EXPECT_EQ(options->rdzv_id, "none");
  EXPECT_EQ(options->role, "default");
  EXPECT_EQ(options->max_restarts, 0);
  EXPECT_EQ(options->rdzv_endpoint, "localhost:0");
  EXPECT_THAT(options->signals_to_handle, ElementsAre("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"));
  EXPECT_EQ(options->settings.heartbeat_interval, absl::Seconds(1));
  EXPECT_EQ(options->settings.heartbeat_timeout, absl::Seconds(5));
}

TEST(LauncherOptions, ScriptArgumentsAreNotFlags) {
  auto options = Parse({"--no-python", "-m", "prog", "--nnodes", "x", "-r", "9"});
  ASSERT_FALSE(options.ok());  // -m with --no-python
  options = Parse({"--no-python", "prog", "--nnodes", "x", "-r", "9"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->no_python);
  EXPECT_THAT(options->script_args, ElementsAre("--nnodes", "x", "-r", "9"));
}

TEST(LauncherOptions, PetVariablesAndFlagsWin) {
  std::map<std::string, std::string> environment = {
      {"PET_NPROC_PER_NODE", "5"}, {"PET_NNODES", "1:3"}, {"PET_RDZV_ENDPOINT", "a:7"},
      {"PET_STANDALONE", "0"}, {"PET_MAX_RESTARTS", "4"}};
  auto options = Parse({"--nproc-per-node", "2", "train.py"}, environment);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->nproc_per_node, 2);
  EXPECT_EQ(options->sources.at("nproc-per-node"), "flag");
  EXPECT_EQ(options->max_nodes, 3);
  EXPECT_EQ(options->sources.at("nnodes"), "PET_NNODES");
  EXPECT_EQ(options->rdzv_endpoint, "a:7");
  EXPECT_EQ(options->max_restarts, 4);
  EXPECT_FALSE(options->standalone);
}

TEST(LauncherOptions, SlurmEnvironment) {
  std::map<std::string, std::string> environment = {
      {"SLURM_JOB_ID", "4242"}, {"SLURM_NNODES", "3"}, {"SLURM_NODEID", "2"},
      {"SLURM_JOB_NODELIST", "gpu-a[07-09],cpu1"}};
  auto options = Parse({"train.py"}, environment);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->scheduler, "Slurm");
  EXPECT_EQ(options->min_nodes, 3);
  EXPECT_EQ(options->max_nodes, 3);
  EXPECT_EQ(options->node_rank, 2);
  EXPECT_EQ(options->rdzv_id, "4242");
  EXPECT_EQ(options->rdzv_endpoint, "gpu-a07:29400");
  EXPECT_EQ(options->sources.at("nnodes"), "Slurm");
  // Flags win over Slurm.
  options = Parse({"--nnodes", "1", "--rdzv-id", "mine", "train.py"}, environment);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->max_nodes, 1);
  EXPECT_EQ(options->rdzv_id, "mine");
}

TEST(LauncherOptions, DstackEnvironment) {
  std::map<std::string, std::string> environment = {
      {"DSTACK_NODES_NUM", "2"}, {"DSTACK_NODE_RANK", "1"}, {"DSTACK_MASTER_NODE_IP", "10.0.0.5"},
      {"DSTACK_GPUS_PER_NODE", "8"}, {"DSTACK_RUN_ID", "run-9"}};
  auto options = Parse({"train.py"}, environment);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->scheduler, "dstack");
  EXPECT_EQ(options->max_nodes, 2);
  EXPECT_EQ(options->node_rank, 1);
  EXPECT_EQ(options->nproc_per_node, 8);
  EXPECT_EQ(options->rdzv_endpoint, "10.0.0.5:29400");
  EXPECT_EQ(options->rdzv_id, "run-9");
}

TEST(LauncherOptions, OpenMpiEnvironment) {
  std::map<std::string, std::string> environment = {
      {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "3"}, {"MASTER_ADDR", "head"}};
  auto options = Parse({"train.py"}, environment);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->scheduler, "Open MPI");
  EXPECT_EQ(options->max_nodes, 4);
  EXPECT_EQ(options->node_rank, 3);
  EXPECT_EQ(options->rdzv_endpoint, "head:29400");
}

TEST(LauncherOptions, StandaloneOverridesRendezvous) {
  auto options = Parse({"--standalone", "--rdzv-endpoint", "x:1", "--rdzv-id", "y", "t.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->rdzv_endpoint, "localhost:0");
  EXPECT_NE(options->rdzv_id, "y");
  EXPECT_EQ(options->max_nodes, 1);
}

TEST(LauncherOptions, StaticBackendUsesMasterAddress) {
  auto options = Parse({"--rdzv-backend", "static", "--nnodes", "2", "--master-addr", "10.1.1.1",
                        "--master-port", "1234", "t.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->settings.static_ranks);
  EXPECT_EQ(options->node_rank, 0);
  // MASTER_PORT stays the workers' (their torch store binds it); the store takes the next.
  EXPECT_EQ(options->rdzv_endpoint, "10.1.1.1:1235");
  EXPECT_EQ(options->master_port, 1234);
  auto defaults = Parse({"--rdzv-backend", "static", "--nnodes", "2", "--node-rank", "1", "t.py"});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->rdzv_endpoint, "127.0.0.1:29500");  // torchrun's default address
  EXPECT_FALSE(defaults->master_port_given);
  auto elastic = Parse({"--rdzv-backend", "static", "--nnodes", "1:2", "t.py"});
  ASSERT_FALSE(elastic.ok());
  EXPECT_THAT(elastic.status().message(), HasSubstr("fixed --nnodes"));
}

TEST(LauncherOptions, MalformedInputSaysWhatIsAccepted) {
  struct Case {
    std::vector<std::string> args;
    std::string expected;
  } cases[] = {
      {{"--bogus", "t.py"}, "unknown flag \"--bogus\""},
      {{"--nnodes", "0", "t.py"}, "MIN:MAX"},
      {{"--nnodes", "3:2", "t.py"}, "MIN:MAX"},
      {{"--nproc-per-node", "many", "t.py"}, "auto, cpu or gpu"},
      {{"--max-restarts", "-1", "t.py"}, "an integer from 0"},
      {{"--rdzv-backend", "zookeeper", "t.py"}, "c10d, static or etcd"},
      {{"--rdzv-backend", "etcd-v2", "t.py"}, "use --rdzv-backend etcd (the v3 API)"},
      {{"--rdzv-backend", "etcd", "--nnodes", "2", "t.py"}, "needs --rdzv-endpoint: etcd's client URLs"},
      {{"--redirects", "7", "t.py"}, "0 (none), 1 (stdout)"},
      {{"--tee", "0:9", "t.py"}, "rank:mask"},
      {{"--rdzv-conf", "join_timeout=soon", "t.py"}, "Accepted keys"},
      {{"--rdzv-conf", "colour=blue", "t.py"}, "unknown key \"colour\""},
      {{"--signals-to-handle", "SIGFOO", "t.py"}, "signal names"},
      {{"--node-label", "rack", "t.py"}, "key=value"},
      {{"--monitor-interval", "0", "t.py"}, "more than 0"},
      {{"--nnodes", "2", "t.py"}, "--rdzv-endpoint"},
      {{"--nnodes"}, "needs a value"},
      {{"--nproc-per-node", "2"}, "missing the training script"},
      {{"--standalone=maybe", "t.py"}, "true/false"},
  };
  for (const Case& c : cases) {
    auto options = Parse(c.args);
    ASSERT_FALSE(options.ok()) << c.args[0];
    EXPECT_EQ(options.status().code() == absl::StatusCode::kInvalidArgument ||
                  options.status().code() == absl::StatusCode::kUnimplemented,
              true);
    EXPECT_THAT(options.status().message(), HasSubstr(c.expected)) << c.args[0];
  }
}

TEST(LauncherOptions, EtcdBackend) {
  auto options = Parse({"--rdzv-backend", "etcd-v3", "--nnodes", "2:4", "--rdzv-endpoint",
                        "http://e0:2379, e1:2379,https://e2:2379", "--rdzv-conf",
                        "user=cohort,cacert=/ca.pem", "t.py"},
                       {{"COHORT_ETCD_PASSWORD", "secret"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->rdzv_backend, "etcd");
  EXPECT_THAT(options->settings.etcd.endpoints,
              ::testing::ElementsAre("http://e0:2379", "e1:2379", "https://e2:2379"));
  EXPECT_EQ(options->settings.etcd.user, "cohort");
  EXPECT_EQ(options->settings.etcd.password, "secret");
  EXPECT_EQ(options->settings.etcd.ca_file, "/ca.pem");
  // --rdzv-conf password= wins over the environment.
  options = Parse({"--rdzv-backend", "etcd", "--rdzv-endpoint", "e0:2379", "--rdzv-conf",
                   "password=given", "t.py"},
                  {{"COHORT_ETCD_PASSWORD", "secret"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->settings.etcd.password, "given");
  // Slurm's first host is where an embedded store would run, not where etcd does.
  auto slurm = Parse({"--rdzv-backend", "etcd", "t.py"},
                     {{"SLURM_JOB_ID", "7"}, {"SLURM_NNODES", "2"}, {"SLURM_NODEID", "0"},
                      {"SLURM_JOB_NODELIST", "n[1-2]"}});
  ASSERT_FALSE(slurm.ok());
  EXPECT_THAT(slurm.status().message(), HasSubstr("needs --rdzv-endpoint"));
}

TEST(LauncherOptions, RendezvousConf) {
  auto options = Parse({"--rdzv-conf",
                        "join_timeout=7,last_call_timeout=250ms,heartbeat_interval=0.5,"
                        "heartbeat_timeout=3s,read_timeout=9,is_host=false",
                        "t.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->settings.join_timeout, absl::Seconds(7));
  EXPECT_EQ(options->settings.last_call_timeout, absl::Milliseconds(250));
  EXPECT_EQ(options->settings.heartbeat_interval, absl::Milliseconds(500));
  EXPECT_EQ(options->settings.heartbeat_timeout, absl::Seconds(3));
  EXPECT_EQ(options->settings.read_timeout, absl::Seconds(9));
  EXPECT_EQ(options->is_host, 0);
  options = Parse({"--rdzv-conf", "keep_alive_interval=2,keep_alive_max_attempt=4", "t.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->settings.heartbeat_timeout, absl::Seconds(8));
  EXPECT_FALSE(Parse({"--rdzv-conf", "heartbeat_interval=5,heartbeat_timeout=2", "t.py"}).ok());
}

TEST(LauncherOptions, OnFailure) {
  auto options = Parse({"train.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->on_failure, "restart");  // torchrun's behaviour is the default
  EXPECT_FALSE(options->settings.shrink_on_failure);
  EXPECT_EQ(options->sources.at("on-failure"), "default");

  options = Parse({"--on-failure", "shrink", "train.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->on_failure, "shrink");
  EXPECT_TRUE(options->settings.shrink_on_failure);
  options = Parse({"--on_failure=SHRINK", "train.py"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->settings.shrink_on_failure);

  // COHORT_ON_FAILURE sets the default; PET_ON_FAILURE and the flag win over it.
  options = Parse({"train.py"}, {{"COHORT_ON_FAILURE", "shrink"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->on_failure, "shrink");
  EXPECT_EQ(options->sources.at("on-failure"), "COHORT_ON_FAILURE");
  options = Parse({"train.py"}, {{"COHORT_ON_FAILURE", "shrink"}, {"PET_ON_FAILURE", "restart"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->on_failure, "restart");
  EXPECT_EQ(options->sources.at("on-failure"), "PET_ON_FAILURE");
  options = Parse({"--on-failure", "restart", "train.py"}, {{"COHORT_ON_FAILURE", "shrink"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(options->settings.shrink_on_failure);
  options = Parse({"train.py"}, {{"COHORT_ON_FAILURE", ""}});  // empty: unset
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->on_failure, "restart");

  // A bad value names where it came from and what is accepted.
  options = Parse({"--on-failure", "ignore", "train.py"});
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(), HasSubstr("--on-failure \"ignore\" is not valid"));
  EXPECT_THAT(options.status().message(), HasSubstr("restart"));
  EXPECT_THAT(options.status().message(), HasSubstr("shrink"));
  options = Parse({"train.py"}, {{"COHORT_ON_FAILURE", "grow"}});
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(), HasSubstr("COHORT_ON_FAILURE \"grow\" is not valid"));
  options = Parse({"--on-failure"});
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(), HasSubstr("--on-failure needs a value"));

  EXPECT_THAT(Usage(), HasSubstr("--on-failure V"));
  EXPECT_THAT(Usage(), HasSubstr("COHORT_ON_FAILURE"));
}

TEST(LauncherOptions, StreamSpecs) {
  auto all = ParseStreamSpec("3", "redirects");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->For(0), 3);
  EXPECT_EQ(all->For(7), 3);
  auto per_rank = ParseStreamSpec("0:1,2:2", "tee");
  ASSERT_TRUE(per_rank.ok());
  EXPECT_EQ(per_rank->For(0), 1);
  EXPECT_EQ(per_rank->For(1), 0);
  EXPECT_EQ(per_rank->For(2), 2);
}

TEST(LauncherOptions, NprocPerNodeWords) {
  auto cpu = ResolveNprocPerNode("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_GE(*cpu, 1);
  auto automatic = ResolveNprocPerNode("auto");
  ASSERT_TRUE(automatic.ok());
  EXPECT_GE(*automatic, 1);
  EXPECT_FALSE(ResolveNprocPerNode("0").ok());
}

TEST(SlurmNodelist, Expands) {
  auto hosts = ExpandSlurmNodelist("node[01-03,7],gpu-a1,rack[1-2]-n[8-9]");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_THAT(*hosts, ElementsAre("node01", "node02", "node03", "node7", "gpu-a1", "rack1-n8",
                                  "rack1-n9", "rack2-n8", "rack2-n9"));
  auto single = ExpandSlurmNodelist("solo");
  ASSERT_TRUE(single.ok());
  EXPECT_THAT(*single, ElementsAre("solo"));
  EXPECT_FALSE(ExpandSlurmNodelist("node[1-").ok());
  EXPECT_FALSE(ExpandSlurmNodelist("node[3-1]").ok());
  // Found by tests/fuzz/launcher_options_fuzz: bracket groups multiply, and ranges add up; a
  // list naming more hosts than any cluster has is refused instead of filling memory.
  auto multiplied = ExpandSlurmNodelist("a[0-99999][0-99999]");
  ASSERT_FALSE(multiplied.ok());
  EXPECT_THAT(std::string(multiplied.status().message()), HasSubstr("more than 100000 hosts"));
  EXPECT_FALSE(ExpandSlurmNodelist("a[0-60000,0-60000]").ok());
  EXPECT_EQ(ExpandSlurmNodelist("a[0-99][0-999]")->size(), 100000u);
}

TEST(FailureSummary, ReadsRecordErrorFileAndNamesFirstFailure) {
  std::string path = ::testing::TempDir() + "/launcher_error.json";
  {
    std::ofstream file(path);
    file << R"({"message": {"message": "ValueError: bad batch", "extraInfo": {"py_callstack": )"
         << R"("Traceback (most recent call last):\n  File \"train.py\", line 3\nValueError: bad batch\n", )"
         << R"("timestamp": "1700000000"}}})";
  }
  elastic::WorkerFailure recorded;
  recorded.host = "node-b";
  recorded.rank = 5;
  recorded.local_rank = 1;
  recorded.pid = 77;
  recorded.exit_code = 1;
  recorded.time_ms = 1700000000500;
  FillFromErrorFile(path, &recorded);
  EXPECT_EQ(recorded.error_file, path);
  EXPECT_EQ(recorded.message, "ValueError: bad batch");
  EXPECT_THAT(recorded.traceback, HasSubstr("line 3"));

  elastic::WorkerFailure killed;
  killed.host = "node-a";
  killed.rank = 2;
  killed.pid = 99;
  killed.exit_code = -9;
  killed.time_ms = 1700000000100;  // earlier: the root cause
  FillFromErrorFile(path + ".missing", &killed);
  EXPECT_EQ(killed.error_file, "<N/A>");
  EXPECT_EQ(killed.message, "Signal 9 (SIGKILL) received by PID 99");

  std::string summary = FormatSummary("train.py FAILED", {recorded, killed}, "no restarts left");
  size_t root = summary.find("Root Cause (first observed failure):");
  ASSERT_NE(root, std::string::npos);
  EXPECT_NE(summary.find("host      : node-a", root), std::string::npos) << summary;
  EXPECT_NE(summary.find("exitcode  : -9 (pid: 99)", root), std::string::npos) << summary;
  EXPECT_LT(summary.find("host      : node-b"), root) << summary;  // listed among the others
  EXPECT_THAT(summary, HasSubstr("ValueError: bad batch"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace cohort::launcher
