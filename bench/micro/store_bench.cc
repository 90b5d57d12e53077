// Microbenchmark of the store (elastic/store): round trips of one client to a StoreServer in
// this process over TCP loopback, with the job-token handshake done once - set, get, add,
// compare_set, wait on a key that exists, delete, list, ping - and the same ops from several
// clients at once (one per benchmark thread), as the ranks of a job hit it at start-up.
//
//   cohort-micro-store --benchmark_filter='store/get'
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "elastic/store/store_client.h"
#include "elastic/store/store_server.h"

namespace cohort {
namespace {

std::unique_ptr<store::StoreServer> server;  // started by main, stopped before it returns

std::unique_ptr<store::StoreClient> Connect() {
  store::StoreClientOptions options;
  options.host = "127.0.0.1";
  options.port = server->port();
  options.token = "micro-store-token";
  options.job_id = "micro-store";
  auto client = store::StoreClient::Connect(options);
  if (!client.ok()) {
    std::fprintf(stderr, "store client: %s\n", std::string(client.status().message()).c_str());
    std::abort();
  }
  return std::move(*client);
}

// A benchmark cannot report an error mid-loop: a failed op ends the program with its reason.
void Check(const absl::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "store op failed: %s\n", std::string(status.message()).c_str());
    std::abort();
  }
}
template <typename T>
void Check(const absl::StatusOr<T>& result) {
  Check(result.status());
}

enum class Op { kSet, kGet, kAdd, kCompareSet, kWait, kDelete, kList, kPing };

void BM_Store(benchmark::State& state, Op op) {
  auto client = Connect();
  const std::string value(static_cast<size_t>(state.range(0)), 'v');
  // Each thread its own keys, so that contention is on the server, not on one key.
  const std::string key = "bench/" + std::to_string(state.thread_index()) + "/key";
  Check(client->Set(key, value));
  Check(client->Set(key + "/counter", "0"));
  for (int i = 0; i < 16; ++i) Check(client->Set(key + "/list/" + std::to_string(i), "x"));
  int64_t round = 0;
  for (auto _ : state) {
    switch (op) {
      case Op::kSet:
        Check(client->Set(key, value));
        break;
      case Op::kGet:
        Check(client->Get(key));
        break;
      case Op::kAdd:
        Check(client->Add(key + "/counter", 1));
        break;
      case Op::kCompareSet: {
        // Alternates the stored value, so every call swaps.
        std::string from = round % 2 == 0 ? value : "other";
        std::string to = round % 2 == 0 ? "other" : value;
        Check(client->CompareSet(key, from, to));
        break;
      }
      case Op::kWait:
        Check(client->Wait({key}));
        break;
      case Op::kDelete:
        Check(client->Set(key + "/gone", "x"));
        Check(client->Delete(key + "/gone"));
        break;
      case Op::kList:
        Check(client->List(key + "/list/"));
        break;
      case Op::kPing:
        Check(client->Ping());
        break;
    }
    ++round;
  }
  state.SetItemsProcessed(state.iterations());
  if (op == Op::kSet || op == Op::kGet) {
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
  }
}

void RegisterAll() {
  struct Entry {
    const char* name;
    Op op;
  };
  const Entry entries[] = {{"store/set", Op::kSet},   {"store/get", Op::kGet},
                           {"store/add", Op::kAdd},   {"store/compare_set", Op::kCompareSet},
                           {"store/wait", Op::kWait}, {"store/set_then_delete", Op::kDelete},
                           {"store/list", Op::kList}, {"store/ping", Op::kPing}};
  for (const Entry& entry : entries) {
    auto* benchmark = benchmark::RegisterBenchmark(entry.name, BM_Store, entry.op)->Arg(64);
    if (entry.op == Op::kSet || entry.op == Op::kGet) benchmark->Arg(64 << 10)->Arg(4 << 20);
    benchmark->Threads(1)->Threads(4)->UseRealTime();
  }
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  cohort::store::StoreServerOptions options;
  options.host = "127.0.0.1";
  options.token = "micro-store-token";
  options.job_id = "micro-store";
  auto server = cohort::store::StoreServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "store server: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  cohort::server = std::move(*server);
  cohort::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  cohort::server.reset();
  benchmark::Shutdown();
  return 0;
}
