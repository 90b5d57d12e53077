// Microbenchmark of the CPU reduce kernels (collectives/reduce.h) on arrays far larger than the
// last-level cache, next to memcpy of the same size measured by the same binary, so a kernel's
// bandwidth reads as a fraction of what this machine's memory can do.
//
//   cohort-micro-reduce --benchmark_filter='float32/sum|memcpy'
//
// Each line also reports of_memcpy: its bytes per CPU second over memcpy's, measured by this
// binary (best of five copies of the same size), so the ratio holds on a busy machine too.
//
// Bytes per second count the bytes the program asks to move: 3 x size for a reduction (two
// reads, one write) and 2 x size for memcpy (one read, one write). Write-allocate traffic is not
// counted on either side; memcpy in glibc avoids it for large copies with streaming stores.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "collectives/reduce.h"
#include "collectives/types.h"

namespace cohort {
namespace {

// 64 MiB per array: with three arrays, several times the 35 MiB L3 of our test machines.
constexpr size_t kBytes = size_t{64} << 20;

struct FreeDeleter {
  void operator()(void* pointer) const { std::free(pointer); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// Page-aligned and written once, so page faults and zero-page mappings are out of the timing.
// The fill is a small value (1.0, 1 or true) so products stay finite and nothing is denormal,
// which would measure microcode assists instead of bandwidth.
Buffer MakeBuffer(DataType type, size_t bytes) {
  Buffer buffer(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)));
  const size_t size = DataTypeSize(type);
  uint8_t one[8] = {};
  switch (type) {
    case DataType::kFloat32: {
      const float value = 1.0f;
      std::memcpy(one, &value, size);
      break;
    }
    case DataType::kFloat64: {
      const double value = 1.0;
      std::memcpy(one, &value, size);
      break;
    }
    case DataType::kFloat16: {
      const uint16_t value = 0x3C00;
      std::memcpy(one, &value, size);
      break;
    }
    case DataType::kBFloat16: {
      const uint16_t value = 0x3F80;
      std::memcpy(one, &value, size);
      break;
    }
    default:
      one[0] = 1;  // little-endian 1 for every integer width, and true for bool
      break;
  }
  for (size_t offset = 0; offset + size <= bytes; offset += size) {
    std::memcpy(buffer.get() + offset, one, size);
  }
  return buffer;
}

// This thread's CPU seconds: the clock Google Benchmark's bytes_per_second uses (without
// UseRealTime), which leaves out the time other processes of a busy machine take the core.
double CpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// memcpy's bytes per second (2 x size per copy) on arrays of the same size, measured once by
// this binary (best of five, CPU time): every benchmark reports its own bandwidth as a fraction
// of it (of_memcpy), so "float32 sum at >= 80% of memcpy" reads off one line.
double MemcpyBytesPerSecond() {
  static const double measured = [] {
    Buffer source = MakeBuffer(DataType::kUInt8, kBytes);
    Buffer destination = MakeBuffer(DataType::kUInt8, kBytes);
    double best = 0;
    for (int i = 0; i < 5; ++i) {
      double start = CpuSeconds();
      std::memcpy(destination.get(), source.get(), kBytes);
      benchmark::ClobberMemory();
      best = std::max(best, 2.0 * static_cast<double>(kBytes) / (CpuSeconds() - start));
    }
    return best;
  }();
  return measured;
}

// Times a benchmark's loop in CPU seconds and reports bytes / seconds / memcpy's rate.
class OfMemcpy {
 public:
  OfMemcpy() {
    MemcpyBytesPerSecond();  // the reference first, outside the timed loop
    start_ = CpuSeconds();
  }
  void Report(benchmark::State& state, double bytes) const {
    double seconds = CpuSeconds() - start_;
    if (seconds > 0) state.counters["of_memcpy"] = bytes / seconds / MemcpyBytesPerSecond();
  }

 private:
  double start_ = 0;
};

void BM_Memcpy(benchmark::State& state) {
  Buffer source = MakeBuffer(DataType::kUInt8, kBytes);
  Buffer destination = MakeBuffer(DataType::kUInt8, kBytes);
  OfMemcpy of_memcpy;
  for (auto _ : state) {
    std::memcpy(destination.get(), source.get(), kBytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * kBytes);
  of_memcpy.Report(state, static_cast<double>(state.iterations()) * 2 * kBytes);
}

// out = op(a, b); with `in_place`, a = op(a, b), the common case in ring algorithms.
void BM_Reduce(benchmark::State& state, DataType type, ReduceOp op, ReduceIsa isa, bool in_place) {
  const ReduceFn fn = GetReduceFn(type, op, isa);
  const size_t count = kBytes / DataTypeSize(type);
  Buffer a = MakeBuffer(type, kBytes);
  Buffer b = MakeBuffer(type, kBytes);
  Buffer out = in_place ? nullptr : MakeBuffer(type, kBytes);
  uint8_t* destination = in_place ? a.get() : out.get();
  OfMemcpy of_memcpy;
  for (auto _ : state) {
    fn(destination, a.get(), b.get(), count);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 3 * kBytes);
  of_memcpy.Report(state, static_cast<double>(state.iterations()) * 3 * kBytes);
}

// out = op(inputs...), out == inputs[0]: (num_inputs + 1) x size bytes per call.
void BM_ReduceMany(benchmark::State& state, DataType type, ReduceOp op, ReduceIsa isa,
                   int num_inputs) {
  const ReduceManyFn fn = GetReduceManyFn(type, op, isa);
  const size_t count = kBytes / DataTypeSize(type);
  std::vector<Buffer> buffers;
  std::vector<const void*> inputs;
  for (int k = 0; k < num_inputs; ++k) {
    buffers.push_back(MakeBuffer(type, kBytes));
    inputs.push_back(buffers.back().get());
  }
  OfMemcpy of_memcpy;
  for (auto _ : state) {
    fn(buffers[0].get(), inputs.data(), num_inputs, count);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * (num_inputs + 1) * kBytes);
  of_memcpy.Report(state, static_cast<double>(state.iterations()) * (num_inputs + 1) * kBytes);
}

constexpr DataType kTypes[] = {DataType::kFloat32,  DataType::kFloat64, DataType::kFloat16,
                               DataType::kBFloat16, DataType::kInt8,    DataType::kUInt8,
                               DataType::kInt32,    DataType::kInt64,   DataType::kBool};
constexpr ReduceOp kOps[] = {ReduceOp::kSum,  ReduceOp::kProd, ReduceOp::kMin, ReduceOp::kMax,
                             ReduceOp::kBand, ReduceOp::kBor,  ReduceOp::kBxor};  // avg is sum

void RegisterAll() {
  benchmark::RegisterBenchmark("memcpy", BM_Memcpy)->Unit(benchmark::kMillisecond);
  const ReduceIsa best = BestReduceIsa();
  // Every supported pair at the level the library picks on this CPU.
  for (DataType type : kTypes) {
    for (ReduceOp op : kOps) {
      if (!CheckReduceSupported(type, op).ok()) continue;
      const std::string name = std::string("reduce/") + DataTypeName(type) + "/" + ReduceOpName(op);
      benchmark::RegisterBenchmark(name.c_str(), BM_Reduce, type, op, best, false)
          ->Unit(benchmark::kMillisecond);
    }
  }
  // The headline kernels at every level, and in place.
  for (DataType type : {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16}) {
    for (int level = 0; level < kNumReduceIsas; ++level) {
      const auto isa = static_cast<ReduceIsa>(level);
      if (!ReduceIsaAvailable(isa)) continue;
      for (bool in_place : {false, true}) {
        const std::string name = std::string("reduce_isa/") + DataTypeName(type) + "/sum/" +
                                 ReduceIsaName(isa) + (in_place ? "/in_place" : "/out_of_place");
        benchmark::RegisterBenchmark(name.c_str(), BM_Reduce, type, ReduceOp::kSum, isa, in_place)
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  for (DataType type : {DataType::kFloat32, DataType::kBFloat16}) {
    for (int num_inputs : {2, 4, 8}) {
      const std::string name = std::string("reduce_many/") + DataTypeName(type) + "/sum/" +
                               std::to_string(num_inputs) + "_inputs";
      benchmark::RegisterBenchmark(name.c_str(), BM_ReduceMany, type, ReduceOp::kSum, best,
                                   num_inputs)
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  cohort::RegisterAll();
  benchmark::AddCustomContext("reduce_isa", cohort::ReduceIsaName(cohort::BestReduceIsa()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
