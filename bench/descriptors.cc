#include "bench/descriptors.h"

#include <cmath>
#include <cstring>
#include <functional>

#include "collectives/types.h"

namespace cohort::bench {
namespace {

// Small integers: every reduction of them is exact in every type, so #wrong counts real errors.
double Value(int rank, size_t index) { return static_cast<double>((rank * 3 + index) % 7) + 1; }

void Fill(std::vector<char>& buffer, DataType type, size_t count, int rank, size_t base = 0) {
  buffer.assign(count * DataTypeSize(type) + 1, 0);
  for (size_t index = 0; index < count; ++index) {
    StoreElement(buffer.data(), type, index, Value(rank, base + index));
  }
}

double Reduced(ReduceOp op, int n, size_t index) {
  double result = Value(0, index);
  for (int rank = 1; rank < n; ++rank) {
    double value = Value(rank, index);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg: result += value; break;
      case ReduceOp::kProd: result *= value; break;
      case ReduceOp::kMin: result = std::min(result, value); break;
      case ReduceOp::kMax: result = std::max(result, value); break;
      case ReduceOp::kBand: result = static_cast<double>(static_cast<int64_t>(result) & static_cast<int64_t>(value)); break;
      case ReduceOp::kBor: result = static_cast<double>(static_cast<int64_t>(result) | static_cast<int64_t>(value)); break;
      case ReduceOp::kBxor: result = static_cast<double>(static_cast<int64_t>(result) ^ static_cast<int64_t>(value)); break;
    }
  }
  return op == ReduceOp::kAvg ? result / n : result;
}

// An exact integer result as the type stores it (two's complement wrap-around).
double Wrapped(double value, DataType type) {
  uint64_t bits = static_cast<uint64_t>(static_cast<int64_t>(value));
  switch (type) {
    case DataType::kInt8: return static_cast<int8_t>(bits);
    case DataType::kUInt8: return static_cast<uint8_t>(bits);
    case DataType::kInt32: return static_cast<int32_t>(bits);
    default: return value;
  }
}

bool Differs(double got, double want, DataType type, ReduceOp op) {
  if (!IsFloatingPoint(type)) {
    return got != Wrapped(op == ReduceOp::kAvg ? std::trunc(want) : want, type);
  }
  if (op == ReduceOp::kAvg || op == ReduceOp::kProd) {
    double tolerance = (type == DataType::kFloat16 || type == DataType::kBFloat16) ? 1e-2 : 1e-6;
    return std::fabs(got - want) > tolerance * std::max(1.0, std::fabs(want));
  }
  return got != want;
}

size_t CountWrong(const void* buffer, DataType type, size_t count,
                  const std::function<double(size_t)>& expected, ReduceOp op) {
  size_t wrong = 0;
  for (size_t index = 0; index < count; ++index) {
    if (Differs(LoadElement(buffer, type, index), expected(index), type, op)) ++wrong;
  }
  return wrong;
}

double One(int) { return 1.0; }
double Ring(int n) { return n > 0 ? static_cast<double>(n - 1) / n : 0.0; }
double TwiceRing(int n) { return 2 * Ring(n); }

constexpr bool kWholeBuffer = false;
constexpr bool kPerRank = true;

const Collective kCollectives[] = {
    {"allreduce", true, false, TwiceRing, kWholeBuffer,
     [](Buffers& b, const BenchParams& p, int rank, int, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, rank);
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) {
       AllreduceOptions o;
       o.input = b.input.data();
       o.output = in_place ? b.input.data() : b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.op = p.op;
       o.algorithm = p.algorithm;
       return comm.Allreduce(o);
     },
     [](const Buffers& b, const BenchParams& p, int, int n, bool in_place) {
       return CountWrong(in_place ? b.input.data() : b.output.data(), p.dtype, b.count,
                         [&](size_t i) { return Reduced(p.op, n, i); }, p.op);
     }},
    {"allgather", false, false, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, rank);
       b.output.assign(count * n * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) {
       size_t element = DataTypeSize(p.dtype);
       char* own = b.output.data() + comm.rank() * b.count * element;
       if (in_place && b.count > 0) std::memcpy(own, b.input.data(), b.count * element);
       AllgatherOptions o;
       o.input = in_place ? own : b.input.data();
       o.output = b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.algorithm = p.algorithm;
       return comm.Allgather(o);
     },
     [](const Buffers& b, const BenchParams& p, int, int n, bool) {
       return CountWrong(b.output.data(), p.dtype, b.count * n,
                         [&](size_t i) { return Value(static_cast<int>(i / b.count), i % b.count); },
                         ReduceOp::kSum);
     }},
    {"reduce_scatter", true, false, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count * n, rank);
       b.output.assign(count * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) {
       size_t element = DataTypeSize(p.dtype);
       ReduceScatterOptions o;
       o.input = b.input.data();
       o.output = in_place ? b.input.data() + comm.rank() * b.count * element : b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.op = p.op;
       o.algorithm = p.algorithm;
       return comm.ReduceScatter(o);
     },
     [](const Buffers& b, const BenchParams& p, int rank, int n, bool in_place) {
       size_t element = DataTypeSize(p.dtype);
       const char* result =
           in_place ? b.input.data() + rank * b.count * element : b.output.data();
       return CountWrong(result, p.dtype, b.count,
                         [&](size_t i) { return Reduced(p.op, n, rank * b.count + i); }, p.op);
     }},
    {"broadcast", false, true, One, kWholeBuffer,
     [](Buffers& b, const BenchParams& p, int rank, int, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, rank == p.root ? 100 : rank);
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) {
       BroadcastOptions o;
       o.input = b.input.data();
       o.output = in_place ? b.input.data() : b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.root = p.root;
       o.algorithm = p.algorithm;
       return comm.Broadcast(o);
     },
     [](const Buffers& b, const BenchParams& p, int, int, bool in_place) {
       return CountWrong(in_place ? b.input.data() : b.output.data(), p.dtype, b.count,
                         [&](size_t i) { return Value(100, i); }, ReduceOp::kSum);
     }},
    {"reduce", true, true, One, kWholeBuffer,
     [](Buffers& b, const BenchParams& p, int rank, int, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, rank);
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) {
       ReduceOptions o;
       o.input = b.input.data();
       o.output = in_place ? b.input.data() : b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.op = p.op;
       o.root = p.root;
       o.algorithm = p.algorithm;
       return comm.Reduce(o);
     },
     [](const Buffers& b, const BenchParams& p, int rank, int n, bool in_place) -> size_t {
       if (rank != p.root) return 0;
       return CountWrong(in_place ? b.input.data() : b.output.data(), p.dtype, b.count,
                         [&](size_t i) { return Reduced(p.op, n, i); }, p.op);
     }},
    {"alltoall", false, false, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       // Block d of rank r holds Value(r, d * count + i).
       Fill(b.input, p.dtype, count * n, rank);
       b.output.assign(b.input.size(), 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool in_place) {
       AlltoallOptions o;
       o.input = b.input.data();
       o.output = in_place ? b.input.data() : b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.algorithm = p.algorithm;
       return comm.Alltoall(o);
     },
     [](const Buffers& b, const BenchParams& p, int rank, int n, bool in_place) {
       return CountWrong(in_place ? b.input.data() : b.output.data(), p.dtype, b.count * n,
                         [&](size_t i) {
                           return Value(static_cast<int>(i / b.count), rank * b.count + i % b.count);
                         },
                         ReduceOp::kSum);
     }},
    {"gather", false, true, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int rank, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count, rank);
       b.output.assign(count * n * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool) {
       GatherOptions o;
       o.input = b.input.data();
       o.output = b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.root = p.root;
       o.algorithm = p.algorithm;
       return comm.Gather(o);
     },
     [](const Buffers& b, const BenchParams& p, int rank, int n, bool) -> size_t {
       if (rank != p.root) return 0;
       return CountWrong(b.output.data(), p.dtype, b.count * n,
                         [&](size_t i) { return Value(static_cast<int>(i / b.count), i % b.count); },
                         ReduceOp::kSum);
     }},
    {"scatter", false, true, Ring, kPerRank,
     [](Buffers& b, const BenchParams& p, int, int n, size_t count) {
       b.count = count;
       Fill(b.input, p.dtype, count * n, 100);
       b.output.assign(count * DataTypeSize(p.dtype) + 1, 0);
     },
     [](Communicator& comm, Buffers& b, const BenchParams& p, bool) {
       ScatterOptions o;
       o.input = b.input.data();
       o.output = b.output.data();
       o.count = b.count;
       o.dtype = p.dtype;
       o.root = p.root;
       o.algorithm = p.algorithm;
       return comm.Scatter(o);
     },
     [](const Buffers& b, const BenchParams& p, int rank, int, bool) {
       return CountWrong(b.output.data(), p.dtype, b.count,
                         [&](size_t i) { return Value(100, rank * b.count + i); }, ReduceOp::kSum);
     }},
};

}  // namespace

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
