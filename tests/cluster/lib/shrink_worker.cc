// cohort-shrink-worker: a training loop's skeleton over libcohort for the launcher's
// --on-failure tests (tests/cluster/launcher_*shrink*.sh), run by cohortrun --no-python.
//
//   cohort-shrink-worker --dir D [--steps 40] [--step-ms 100] [--timeout 30s] [tag...]
//
// Each step is a verified allreduce (every rank adds its job rank + 1, so the sum says which
// ranks took part). On a failed step: with COHORT_ON_FAILURE=shrink, the worker shrinks its
// communicator to the survivors (Communicator::Shrink, through cohortrun's worker store) and
// retries the step; otherwise it exits 1 and cohortrun restarts the job, which resumes at the
// last step rank 0 completed. A thread follows cohortrun's removal records in the worker store
// (common/membership.h) and removes those ranks from the communicator, as the torch backend
// does: a peer whose traffic vanished sends no FIN, so only the record ends a step waiting on it
// before the timeout. What the worker saw goes to files in D for the test to check:
//   start.<generation>.<rank>  "<time> <pid> <world size> <host>" when it started
//   steps.<generation>.<rank>  "<time> <step> <size>" per completed step
//   removal.<rank>             "<number>|<ranks>|<reason>" per removal record seen
//   shrunk.<rank>              "<time> <old size> <new size>" per shrink
//   progress                   the last step rank 0 completed (where a restart resumes)
// Times are CLOCK_REALTIME seconds, as `date +%s.%N` prints them.
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "collectives/communicator.h"
#include "common/membership.h"
#include "elastic/store/store_client.h"

namespace cohort {
namespace {

std::string Now() {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return absl::StrFormat("%d.%09d", now.tv_sec, now.tv_nsec);
}

std::string Env(const char* name, const std::string& fallback = "") {
  const char* value = std::getenv(name);
  return value == nullptr ? fallback : value;
}

void Append(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "shrink worker rank %s: %s\n", Env("RANK", "?").c_str(), what.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

absl::StatusOr<std::unique_ptr<store::StoreClient>> ConnectWorkerStore() {
  std::vector<std::string> parts = absl::StrSplit(Env("COHORT_STORE_ADDR"), ':');
  store::StoreClientOptions options;
  options.host = parts[0];
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &options.port)) {
    return absl::InvalidArgumentError("COHORT_STORE_ADDR is not host:port (run under cohortrun)");
  }
  options.token = Env("COHORT_JOB_TOKEN");
  options.job_id = Env("COHORT_JOB_ID", "default");
  options.connect_timeout = absl::Seconds(20);
  options.timeout = absl::Seconds(30);
  return store::StoreClient::Connect(options);
}

// The communicator the steps run on, swapped by a shrink; the removal watch reaches it here.
class Current {
 public:
  void Set(std::unique_ptr<Communicator> comm) {
    std::unique_ptr<Communicator> old;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      old = std::move(comm_);
      comm_ = std::move(comm);
      ApplyLocked();
    }
  }
  Communicator* get() {
    std::lock_guard<std::mutex> lock(mutex_);
    return comm_.get();
  }
  void Remove(const std::vector<int>& job_ranks, const std::string& reason) {
    std::lock_guard<std::mutex> lock(mutex_);
    removed_.insert(job_ranks.begin(), job_ranks.end());
    reason_ = reason;
    ApplyLocked();
  }

 private:
  // Removes every rank removed so far that the current communicator still has.
  void ApplyLocked() {
    if (comm_ == nullptr || removed_.empty()) return;
    std::vector<int> ranks;
    for (int rank = 0; rank < comm_->size(); ++rank) {
      if (removed_.contains(comm_->root_rank(rank))) ranks.push_back(rank);
    }
    if (!ranks.empty()) comm_->Remove(ranks, reason_);
  }

  std::mutex mutex_;
  std::unique_ptr<Communicator> comm_;
  std::set<int> removed_;
  std::string reason_;
};

int Main(int argc, char** argv) {
  std::string dir;
  int steps = 40;
  int step_ms = 100;
  absl::Duration timeout = absl::Seconds(30);
  for (int i = 1; i + 1 < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--dir")
      dir = argv[++i];
    else if (flag == "--steps")
      steps = std::atoi(argv[++i]);
    else if (flag == "--step-ms")
      step_ms = std::atoi(argv[++i]);
    else if (flag == "--timeout" && !absl::ParseDuration(argv[++i], &timeout))
      Die("bad --timeout");
  }
  if (dir.empty())
    Die("usage: cohort-shrink-worker --dir D [--steps N] [--step-ms M] [--timeout S]");
  const int rank = std::atoi(Env("RANK", "0").c_str());
  const int size = std::atoi(Env("WORLD_SIZE", "1").c_str());
  const std::string generation = Env("COHORT_GENERATION", "1");
  const bool shrink = Env("COHORT_ON_FAILURE") == "shrink";
  ConfigureProcess();
  Append(absl::StrCat(dir, "/start.", generation, ".", rank),
         absl::StrCat(Now(), " ", ::getpid(), " ", size, " ", Env("COHORT_HOST_ID")));

  auto bootstrap = ConnectWorkerStore();
  if (!bootstrap.ok()) Die(std::string(bootstrap.status().message()));
  auto watch_store = ConnectWorkerStore();
  if (!watch_store.ok()) Die(std::string(watch_store.status().message()));
  CommOptions options;
  options.name = absl::StrCat("shrinkjob-g", generation);
  options.timeout = timeout;
  auto created = Communicator::Create(**bootstrap, rank, size, options);
  if (!created.ok()) Die(absl::StrCat("create: ", created.status().message()));
  Current current;
  current.Set(std::move(*created));

  std::atomic<bool> stop{false};
  std::atomic<int> removals_seen{0};
  std::thread watch([&] {
    for (int number = 1; !stop.load();) {
      auto text = (*watch_store)->Get(membership::RemovalKey(number), absl::Milliseconds(200));
      if (!text.ok()) {
        // Not there yet (the get waited), or the store is unreachable: do not spin.
        if (text.status().code() != absl::StatusCode::kDeadlineExceeded) ::usleep(100'000);
        continue;
      }
      auto removal = membership::Decode(*text);
      if (!removal.ok()) Die(std::string(removal.status().message()));
      Append(absl::StrCat(dir, "/removal.", rank),
             absl::StrCat(number, "|", absl::StrJoin(removal->ranks, ","), "|", removal->reason));
      current.Remove(removal->ranks,
                     absl::StrCat("cohortrun removed rank(s) ", absl::StrJoin(removal->ranks, ", "),
                                  " from the job: ", removal->reason));
      removals_seen.store(number);
      ++number;
    }
  });

  int step = 0;
  if (generation != "1") {
    std::ifstream progress(dir + "/progress");
    if (progress >> step) ++step;
  }
  bool failed = false;
  const std::string steps_file = absl::StrCat(dir, "/steps.", generation, ".", rank);
  while (step < steps) {
    Communicator* comm = current.get();
    const int job_rank = comm->root_rank(comm->rank());
    std::vector<float> values(1024, static_cast<float>(job_rank + 1));
    AllreduceOptions allreduce;
    allreduce.input = values.data();
    allreduce.output = values.data();
    allreduce.count = values.size();
    absl::Status status = comm->Allreduce(allreduce)->Wait();
    if (status.ok()) {
      float expected = 0;
      for (int i = 0; i < comm->size(); ++i) expected += static_cast<float>(comm->root_rank(i) + 1);
      if (values.front() != expected || values.back() != expected) {
        Die(absl::StrCat("step ", step, ": allreduce gave ", values.front(), " instead of ",
                         expected));
      }
      Append(steps_file, absl::StrCat(Now(), " ", step, " ", comm->size()));
      if (job_rank == 0) {
        std::ofstream(dir + "/progress.tmp") << step << "\n";
        std::rename((dir + "/progress.tmp").c_str(), (dir + "/progress").c_str());
      }
      ++step;
      ::usleep(static_cast<useconds_t>(step_ms) * 1000);
      continue;
    }
    std::fprintf(stderr, "shrink worker rank %d: step %d failed: %s\n", job_rank, step,
                 std::string(status.message()).c_str());
    if (!shrink) {
      stop.store(true);
      watch.join();
      return 1;
    }
    failed = true;
    auto shrunk = comm->Shrink(**bootstrap);
    if (!shrunk.ok()) Die(absl::StrCat("shrink: ", shrunk.status().message()));
    Append(absl::StrCat(dir, "/shrunk.", rank),
           absl::StrCat(Now(), " ", comm->size(), " ", (*shrunk)->size()));
    current.Set(std::move(*shrunk));
  }
  // The test checks that the survivors saw the launcher's removal: wait for it a while.
  for (int i = 0; failed && removals_seen.load() == 0 && i < 200; ++i) ::usleep(50'000);
  stop.store(true);
  watch.join();
  std::printf("rank %d finished %d steps\n", rank, steps);
  return 0;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) { return cohort::Main(argc, argv); }
