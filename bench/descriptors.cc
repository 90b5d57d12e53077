#include "bench/descriptors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "collectives/device/stream.h"
#include "collectives/types.h"

namespace cohort::bench {
namespace {

// The Works of one operation. Built by moving the Work in: `return {work}` copies it out of an
// initializer list (two atomic reference-count updates per call, measurable at 8 bytes).
Works Single(std::shared_ptr<Work> work) {
  Works works;
  works.push_back(std::move(work));
  return works;
}


// The largest input value for sums of `n` ranks: every partial sum must be an integer the type
// holds exactly (fp16: 2048, bf16: 256, fp32: 2^24), and integer averages must not wrap.
int MaxValue(const BenchParams& params, int n) {
  double limit = 7;
  if (params.op == ReduceOp::kSum || params.op == ReduceOp::kAvg) {
    switch (params.dtype) {
      case DataType::kFloat16:
        limit = 2048.0 / n;
        break;
      case DataType::kBFloat16:
        limit = 256.0 / n;
        break;
      case DataType::kFloat32:
        limit = 16777216.0 / n;
        break;
      case DataType::kInt8:
        limit = params.op == ReduceOp::kAvg ? 127.0 / n : 7;
        break;
      case DataType::kUInt8:
        limit = params.op == ReduceOp::kAvg ? 255.0 / n : 7;
        break;
      default:
        break;
    }
  }
  return static_cast<int>(std::clamp(limit, 1.0, 7.0));
}

// Data of collectives that move but do not reduce: any small integer is exact.
double Plain(int rank, size_t index) { return static_cast<double>((rank * 3 + index) % 7) + 1; }

// Wraps an exact integer to the type's width (two's complement), like the integer kernels do.
double Wrapped(double value, DataType type) {
  uint64_t bits = static_cast<uint64_t>(static_cast<int64_t>(value));
  switch (type) {
    case DataType::kInt8:
      return static_cast<int8_t>(bits);
    case DataType::kUInt8:
      return static_cast<uint8_t>(bits);
    case DataType::kInt32:
      return static_cast<int32_t>(bits);
    default:
      return value;
  }
}

bool Differs(double got, double want, DataType type, ReduceOp op) {
  if (IsFloatingPoint(type) && (op == ReduceOp::kAvg || op == ReduceOp::kProd)) {
    double tolerance = (type == DataType::kFloat16 || type == DataType::kBFloat16) ? 1e-2 : 1e-6;
    return !(std::fabs(got - want) <= tolerance * std::max(1.0, std::fabs(want)));
  }
  return got != want;  // NaN differs from everything
}

void Fill(std::vector<char>& buffer, DataType type, size_t count,
          const std::function<double(size_t)>& value) {
  buffer.assign(count * DataTypeSize(type) + 1, 0);
  for (size_t index = 0; index < count; ++index) {
    StoreElement(buffer.data(), type, index, value(index));
  }
}

double One(int) { return 1.0; }
double Ring(int n) { return n > 0 ? static_cast<double>(n - 1) / n : 0.0; }
double TwiceRing(int n) { return 2 * Ring(n); }

constexpr bool kWholeBuffer = false;
constexpr bool kPerRank = true;
constexpr int kRootData = 100;  // the "rank" whose Plain values a root sends

char* Element(std::vector<char>& buffer, DataType type, size_t index) {
  return buffer.data() + index * DataTypeSize(type);
}

char* ElementAt(char* buffer, DataType type, size_t index) {
  return buffer + index * DataTypeSize(type);
}

template <typename Options>
Options Common(const BenchParams& params) {
  Options options;
  options.algorithm = params.algorithm;
  options.blocking = params.blocking;
  options.memory = params.memory;
  options.stream = params.stream;
  return options;
}

const Collective kCollectives[] = {
    {"allreduce", true, false, TwiceRing, kWholeBuffer,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, [&](size_t i) { return InputValue(p, n, rank, i); });
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       auto o = Common<AllreduceOptions>(p);
       o.input = b.In();
       o.output = in_place ? b.In() : b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       o.op = p.op;
       return Single(comm.Allreduce(o));
     },
     [](Buffers& b, const BenchParams&, int, int, bool in_place) {
       return ResultRegion{in_place ? b.input.data() : b.output.data(), b.count};
     },
     [](const Buffers&, const BenchParams& p, int, int n, size_t i) {
       return ReducedValue(p, n, i);
     }},
    {"allgather", false, false, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, [&](size_t i) { return Plain(rank, i); });
       b.output.assign(count * n * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       size_t element = DataTypeSize(p.dtype);
       char* own = b.Out() + comm.rank() * b.count * element;
       if (in_place && b.count > 0) b.Copy(own, b.In(), b.count * element);
       auto o = Common<AllgatherOptions>(p);
       o.input = in_place ? own : b.In();
       o.output = b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       return Single(comm.Allgather(o));
     },
     [](Buffers& b, const BenchParams&, int, int n, bool) {
       return ResultRegion{b.output.data(), b.count * n};
     },
     [](const Buffers& b, const BenchParams&, int, int, size_t i) {
       return Plain(static_cast<int>(i / b.count), i % b.count);
     }},
    {"reduce_scatter", true, false, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count * n, [&](size_t i) { return InputValue(p, n, rank, i); });
       b.output.assign(count * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       auto o = Common<ReduceScatterOptions>(p);
       o.input = b.In();
       o.output = in_place ? ElementAt(b.In(), p.dtype, comm.rank() * b.count) : b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       o.op = p.op;
       return Single(comm.ReduceScatter(o));
     },
     [](Buffers& b, const BenchParams& p, int rank, int, bool in_place) {
       return ResultRegion{in_place ? Element(b.input, p.dtype, rank * b.count) : b.output.data(),
                           b.count};
     },
     [](const Buffers& b, const BenchParams& p, int rank, int n, size_t i) {
       return ReducedValue(p, n, rank * b.count + i);
     }},
    {"broadcast", false, true, One, kWholeBuffer,
     [](Buffers& b, const BenchParams& p, int rank, int, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count,
            [&](size_t i) { return Plain(rank == p.root ? kRootData : rank, i); });
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       auto o = Common<BroadcastOptions>(p);
       o.input = b.In();
       o.output = in_place ? b.In() : b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       o.root = p.root;
       return Single(comm.Broadcast(o));
     },
     [](Buffers& b, const BenchParams&, int, int, bool in_place) {
       return ResultRegion{in_place ? b.input.data() : b.output.data(), b.count};
     },
     [](const Buffers&, const BenchParams&, int, int, size_t i) { return Plain(kRootData, i); }},
    {"reduce", true, true, One, kWholeBuffer,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, [&](size_t i) { return InputValue(p, n, rank, i); });
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       auto o = Common<ReduceOptions>(p);
       o.input = b.In();
       o.output = in_place ? b.In() : b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       o.op = p.op;
       o.root = p.root;
       return Single(comm.Reduce(o));
     },
     [](Buffers& b, const BenchParams& p, int rank, int, bool in_place) {
       if (rank != p.root) return ResultRegion{};
       return ResultRegion{in_place ? b.input.data() : b.output.data(), b.count};
     },
     [](const Buffers&, const BenchParams& p, int, int n, size_t i) {
       return ReducedValue(p, n, i);
     }},
    {"alltoall", false, false, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       // Block d of rank r holds Plain(r, d * count + i).
       Fill(b.input, p.dtype, count * n, [&](size_t i) { return Plain(rank, i); });
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       auto o = Common<AlltoallOptions>(p);
       o.input = b.In();
       o.output = in_place ? b.In() : b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       return Single(comm.Alltoall(o));
     },
     [](Buffers& b, const BenchParams&, int, int n, bool in_place) {
       return ResultRegion{in_place ? b.input.data() : b.output.data(), b.count * n};
     },
     [](const Buffers& b, const BenchParams&, int rank, int, size_t i) {
       return Plain(static_cast<int>(i / b.count), rank * b.count + i % b.count);
     }},
    // Each rank sends its buffer to rank + 1 and receives from rank - 1 (nccl-tests'
    // sendrecv_perf). In place, the receive lands in the buffer the send reads, so a rank may
    // only receive once its own data has left: even ranks send first and then receive; odd ranks
    // copy their data aside, send the copy and receive at once. The time is then that of two
    // transfers one after the other (three for an odd number of ranks).
    {"sendrecv", false, false, One, kWholeBuffer,
     [](Buffers& b, const BenchParams& p, int rank, int, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, [&](size_t i) { return Plain(rank, i); });
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       const int n = comm.size();
       const int rank = comm.rank();
       SendOptions send = Common<SendOptions>(p);
       send.data = b.In();
       send.count = b.count;
       send.dtype = p.dtype;
       send.peer = (rank + 1) % n;
       RecvOptions recv = Common<RecvOptions>(p);
       recv.data = in_place ? b.In() : b.Out();
       recv.count = b.count;
       recv.dtype = p.dtype;
       recv.peer = (rank + n - 1) % n;
       if (n == 1) {
         // libcohort does not send to itself; a one-rank ring is a local copy, as in NCCL.
         if (!in_place && b.count > 0) {
           b.Copy(b.Out(), b.In(), b.count * DataTypeSize(p.dtype));
         }
         return {};
       }
       if (!in_place) {
         // Both at once, as MPI_Sendrecv: with -z 1 a blocking send first would wait for a peer
         // that itself waits in its send (any payload the channel does not buffer: rendezvous,
         // single-copy, a full socket). The sweep waits for both. The send goes first: on CUDA
         // buffers a receive holds its stream until its message arrived, and a send enqueued
         // behind it on that stream would never leave.
         send.blocking = recv.blocking = false;
         std::shared_ptr<Work> sent = comm.Send(send);
         return {std::move(sent), comm.Recv(recv)};
       }
       if (rank % 2 == 1) {
         send.data = b.CopyInputToScratch();
         send.blocking = recv.blocking = false;
         std::shared_ptr<Work> sent = comm.Send(send);
         return {std::move(sent), comm.Recv(recv)};
       }
       std::shared_ptr<Work> sent = comm.Send(send);
       if (!sent->Wait().ok()) return {sent};
       return {sent, comm.Recv(recv)};
     },
     [](Buffers& b, const BenchParams&, int, int, bool in_place) {
       return ResultRegion{in_place ? b.input.data() : b.output.data(), b.count};
     },
     [](const Buffers&, const BenchParams&, int rank, int n, size_t i) {
       return Plain((rank + n - 1) % n, i);
     }},
    {"gather", false, true, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, [&](size_t i) { return Plain(rank, i); });
       b.output.assign(count * n * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       size_t element = DataTypeSize(p.dtype);
       char* own = b.Out() + comm.rank() * b.count * element;
       if (in_place && comm.rank() == p.root && b.count > 0) {
         b.Copy(own, b.In(), b.count * element);
       }
       auto o = Common<GatherOptions>(p);
       o.input = in_place && comm.rank() == p.root ? own : b.In();
       o.output = b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       o.root = p.root;
       return Single(comm.Gather(o));
     },
     [](Buffers& b, const BenchParams& p, int rank, int n, bool) {
       if (rank != p.root) return ResultRegion{};
       return ResultRegion{b.output.data(), b.count * n};
     },
     [](const Buffers& b, const BenchParams&, int, int, size_t i) {
       return Plain(static_cast<int>(i / b.count), i % b.count);
     }},
    {"scatter", false, true, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count * n, [&](size_t i) { return Plain(kRootData, i); });
       b.output.assign(count * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) -> Works {
       auto o = Common<ScatterOptions>(p);
       o.input = b.In();
       o.output = in_place && comm.rank() == p.root
                      ? ElementAt(b.In(), p.dtype, comm.rank() * b.count)
                      : b.Out();
       o.count = b.count;
       o.dtype = p.dtype;
       o.root = p.root;
       return Single(comm.Scatter(o));
     },
     [](Buffers& b, const BenchParams& p, int rank, int, bool in_place) {
       bool own_block = in_place && rank == p.root;
       return ResultRegion{own_block ? Element(b.input, p.dtype, rank * b.count) : b.output.data(),
                           b.count};
     },
     [](const Buffers& b, const BenchParams&, int rank, int, size_t i) {
       return Plain(kRootData, rank * b.count + i);
     }},
};

}  // namespace

void Buffers::Copy(void* destination, const void* source, size_t bytes) {
  if (bytes == 0) return;
  if (stream == nullptr) {
    std::memcpy(destination, source, bytes);
    return;
  }
  // A failed enqueue shows in the operation that follows (its stream has failed).
  stream->CopyAsync(destination, source, bytes).IgnoreError();
}

char* Buffers::CopyInputToScratch() {
  if (device_input != nullptr) {
    Copy(device_scratch, device_input, input.size());
    return device_scratch;
  }
  scratch.assign(input.begin(), input.end());
  return scratch.data();
}

double InputValue(const BenchParams& params, int n, int rank, size_t index) {
  if (params.op == ReduceOp::kProd) {
    // One rank per element contributes a factor from 1 to 5: the product is exact everywhere.
    return rank == static_cast<int>(index % static_cast<size_t>(n))
               ? static_cast<double>(index % 5 + 1)
               : 1.0;
  }
  int max_value = MaxValue(params, n);
  return static_cast<double>((static_cast<size_t>(rank) * 3 + index) % max_value) + 1;
}

double ReducedValue(const BenchParams& params, int n, size_t index) {
  double result = InputValue(params, n, 0, index);
  for (int rank = 1; rank < n; ++rank) {
    double value = InputValue(params, n, rank, index);
    auto bits = [](double v) { return static_cast<int64_t>(v); };
    switch (params.op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        result += value;
        break;
      case ReduceOp::kProd:
        result *= value;
        break;
      case ReduceOp::kMin:
        result = std::min(result, value);
        break;
      case ReduceOp::kMax:
        result = std::max(result, value);
        break;
      case ReduceOp::kBand:
        result = static_cast<double>(bits(result) & bits(value));
        break;
      case ReduceOp::kBor:
        result = static_cast<double>(bits(result) | bits(value));
        break;
      case ReduceOp::kBxor:
        result = static_cast<double>(bits(result) ^ bits(value));
        break;
    }
  }
  if (params.op == ReduceOp::kAvg) {
    result = IsFloatingPoint(params.dtype) ? result / n : std::trunc(result / n);
  }
  return IsFloatingPoint(params.dtype) ? result : Wrapped(result, params.dtype);
}

size_t CountWrong(const Collective& collective, Buffers& buffers, const BenchParams& params,
                  int rank, int n, bool in_place) {
  ResultRegion region = collective.result(buffers, params, rank, n, in_place);
  // Only reducing collectives compare with a tolerance; moved data must arrive bit for bit.
  ReduceOp compare = collective.reduces ? params.op : ReduceOp::kSum;
  size_t wrong = 0;
  for (size_t index = 0; index < region.count; ++index) {
    double want = collective.expected(buffers, params, rank, n, index);
    if (Differs(LoadElement(region.data, params.dtype, index), want, params.dtype, compare)) {
      ++wrong;
    }
  }
  return wrong;
}

size_t CorruptResult(const Collective& collective, Buffers& buffers, const BenchParams& params,
                     int rank, int n, bool in_place, size_t elements) {
  ResultRegion region = collective.result(buffers, params, rank, n, in_place);
  size_t changed = std::min(elements, region.count);
  for (size_t index = 0; index < changed; ++index) {
    double want = collective.expected(buffers, params, rank, n, index);
    // Far enough from the expectation for every tolerance, and representable in every type.
    StoreElement(region.data, params.dtype, index, want >= 64 ? want - 32 : want + 32);
  }
  return changed;
}

const Collective* FindCollective(const std::string& name) {
  for (const Collective& collective : kCollectives) {
    if (name == collective.name) return &collective;
  }
  return nullptr;
}

std::vector<std::string> CollectiveNames() {
  std::vector<std::string> names;
  for (const Collective& collective : kCollectives) names.push_back(collective.name);
  return names;
}

}  // namespace cohort::bench
