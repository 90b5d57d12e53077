// Microbenchmark of the transports' point-to-point path: two ranks of the protocol (threads
// of this process) exchange tagged messages through TCP loopback, or through the shared-memory
// rings (and single-copy reads for large messages) that ranks on one host use. Latency is a
// ping-pong (the half round trip is reported as half_rtt_us); bandwidth streams messages to a
// sink with a window of 8 in flight and counts the payload bytes.
//
//   cohort-micro-transport --benchmark_filter='shm/latency'
//
// Both ranks poll their transport for a while and then sleep in the kernel until data arrives;
// on a machine with fewer than two free cores the wake-ups show in the latencies.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/in_memory_bootstrap.h"
#include "collectives/transport/protocol.h"

namespace cohort {
namespace {

constexpr uint32_t kControlTag = 1;
constexpr uint32_t kDataTag = 2;
constexpr int kWindow = 8;

enum class Mode : uint64_t { kStop = 0, kPingPong = 1, kSink = 2 };

struct Control {
  uint64_t mode = 0;
  uint64_t bytes = 0;
  uint64_t count = 0;
};

void Prepare(Request& request, int peer, uint32_t tag, void* data, size_t length) {
  request = Request{};
  request.peer = peer;
  request.header.kind = static_cast<uint8_t>(FrameKind::kPointToPoint);
  request.header.tag = tag;
  request.data = static_cast<char*>(data);
  request.length = length;
}

// Progresses `transport` until `request` completes: polls for a while, then waits in the kernel
// (the doorbell futex or epoll) like the engine does when ranks outnumber free cores, so that a
// rank spinning without a core of its own does not starve its peer. Aborts the program on a
// transport error (a benchmark has no way to report one mid-loop).
void Complete(Protocol& transport, const Request& request) {
  for (int polls = 0; !request.complete; ++polls) {
    absl::Status status = transport.Progress(polls < 2000 ? 0 : 1);
    if (!status.ok()) {
      std::fprintf(stderr, "transport failed: %s\n", std::string(status.message()).c_str());
      std::abort();
    }
  }
}

void Send(Protocol& transport, int peer, uint32_t tag, const void* data, size_t length) {
  Request request;
  Prepare(request, peer, tag, const_cast<void*>(data), length);
  transport.PostSend(&request);
  Complete(transport, request);
}

void Recv(Protocol& transport, int peer, uint32_t tag, void* data, size_t length) {
  Request request;
  Prepare(request, peer, tag, data, length);
  transport.PostRecv(&request);
  Complete(transport, request);
}

// Rank 1: answers rank 0's commands until told to stop.
void Echo(Protocol& transport) {
  std::vector<char> buffer;
  while (true) {
    Control control;
    Recv(transport, 0, kControlTag, &control, sizeof(control));
    if (control.mode == static_cast<uint64_t>(Mode::kStop)) return;
    buffer.resize(std::max<size_t>(control.bytes, 1));
    if (control.mode == static_cast<uint64_t>(Mode::kPingPong)) {
      for (uint64_t i = 0; i < control.count; ++i) {
        Recv(transport, 0, kDataTag, buffer.data(), control.bytes);
        Send(transport, 0, kDataTag, buffer.data(), control.bytes);
      }
    } else {
      std::vector<Request> window(kWindow);
      uint64_t posted = 0, done = 0;
      while (done < control.count) {
        while (posted < control.count && posted - done < kWindow) {
          Prepare(window[posted % kWindow], 0, kDataTag, buffer.data(), control.bytes);
          transport.PostRecv(&window[posted % kWindow]);
          ++posted;
        }
        Complete(transport, window[done % kWindow]);
        ++done;
      }
      char ack = 1;
      Send(transport, 0, kControlTag, &ack, 1);
    }
  }
}

// Two connected ranks and the echo thread of rank 1.
class Link {
 public:
  explicit Link(bool shared_memory) {
    auto state = std::make_shared<InMemoryBootstrap::State>();
    ProtocolOptions options;
    options.prefix = shared_memory ? "micro-shm" : "micro-tcp";
    options.transports = {shared_memory ? ChannelKind::kSharedMemory : ChannelKind::kTcp};
    options.transports_forced = true;
    options.host_id = "micro";
    options.host_name = "micro";
    options.timeout = absl::Seconds(30);
    std::unique_ptr<Protocol> transports[2];
    std::thread connect1([&] {
      InMemoryBootstrap bootstrap(state);
      auto created = Protocol::Create(bootstrap, 1, 2, options);
      if (created.ok()) transports[1] = std::move(*created);
    });
    InMemoryBootstrap bootstrap(state);
    auto created = Protocol::Create(bootstrap, 0, 2, options);
    connect1.join();
    if (!created.ok() || transports[1] == nullptr) {
      std::fprintf(
          stderr, "cannot connect two ranks: %s\n",
          created.ok() ? "rank 1 failed" : std::string(created.status().message()).c_str());
      std::abort();
    }
    self_ = std::move(*created);
    peer_ = std::move(transports[1]);
    echo_ = std::thread([this] { Echo(*peer_); });
  }
  ~Link() {
    Control stop{static_cast<uint64_t>(Mode::kStop), 0, 0};
    Send(*self_, 1, kControlTag, &stop, sizeof(stop));
    echo_.join();
    self_->Close(true, Deadline::In(absl::Seconds(5)));
    peer_->Close(true, Deadline::In(absl::Seconds(5)));
  }
  Protocol& self() { return *self_; }

 private:
  std::unique_ptr<Protocol> self_, peer_;
  std::thread echo_;
};

// Made on first use, closed by main before it returns.
std::unique_ptr<Link> links[2];

Link& GetLink(bool shared_memory) {
  auto& link = links[shared_memory ? 1 : 0];
  if (link == nullptr) link = std::make_unique<Link>(shared_memory);
  return *link;
}

void BM_Latency(benchmark::State& state, bool shared_memory) {
  Protocol& transport = GetLink(shared_memory).self();
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<char> buffer(std::max<size_t>(bytes, 1), 7);
  Control control{static_cast<uint64_t>(Mode::kPingPong), bytes,
                  static_cast<uint64_t>(state.max_iterations)};
  Send(transport, 1, kControlTag, &control, sizeof(control));
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    Send(transport, 1, kDataTag, buffer.data(), bytes);
    Recv(transport, 1, kDataTag, buffer.data(), bytes);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state.counters["half_rtt_us"] = seconds / static_cast<double>(state.iterations()) / 2 * 1e6;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * bytes);
}

void BM_Bandwidth(benchmark::State& state, bool shared_memory) {
  Protocol& transport = GetLink(shared_memory).self();
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<char> buffer(bytes, 7);
  Control control{static_cast<uint64_t>(Mode::kSink), bytes,
                  static_cast<uint64_t>(state.max_iterations)};
  Send(transport, 1, kControlTag, &control, sizeof(control));
  std::vector<Request> window(kWindow);
  int64_t posted = 0, done = 0;
  for (auto _ : state) {
    if (posted - done == kWindow) {
      Complete(transport, window[done % kWindow]);
      ++done;
    }
    Prepare(window[posted % kWindow], 1, kDataTag, buffer.data(), bytes);
    transport.PostSend(&window[posted % kWindow]);
    ++posted;
  }
  while (done < posted) {
    Complete(transport, window[done % kWindow]);
    ++done;
  }
  char ack = 0;
  Recv(transport, 1, kControlTag, &ack, 1);  // the sink has every byte
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
}

void RegisterAll() {
  for (bool shared_memory : {false, true}) {
    const std::string kind = shared_memory ? "shm" : "tcp";
    benchmark::RegisterBenchmark(("transport/" + kind + "/latency").c_str(), BM_Latency,
                                 shared_memory)
        ->Arg(8)
        ->Arg(4096)
        ->Arg(65536)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("transport/" + kind + "/bandwidth").c_str(), BM_Bandwidth,
                                 shared_memory)
        ->Arg(64 << 10)
        ->Arg(1 << 20)
        ->Arg(16 << 20)
        ->UseRealTime();
  }
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  cohort::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  for (auto& link : cohort::links) link.reset();
  benchmark::Shutdown();
  return 0;
}
