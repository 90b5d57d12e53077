// Every collective x data type x reduce op x size x in/out-of-place, on 1 to 8 forked ranks,
// checked element by element against a reference computed locally. Segments are shrunk to
// 4 KiB so that multi-segment pipelines run on small buffers; a separate case moves 64 MiB.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <numeric>
#include <string>
#include <tuple>

#include "collectives/algorithms/registry.h"
#include "collectives/communicator.h"
#include "collectives/transport/channel.h"
#include "collectives/transport/ucx/options.h"
#include "gtest/gtest.h"
#include "support/data.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using testing::InputValue;
using testing::Load;
using testing::Reference;
using testing::Tolerance;

const std::vector<size_t> kSizes = {0, 1, 7, 1031, 12289};

std::string Label(DataType type, ReduceOp op, size_t count, bool in_place) {
  return std::string(DataTypeName(type)) + "/" + ReduceOpName(op) + "/" + std::to_string(count) +
         (in_place ? "/in-place" : "/out-of-place");
}

// Compares `count` elements at `buffer` with `expected(index)`; reports the first mismatch.
template <typename Expected>
void ExpectElements(const char* what, const void* buffer, DataType type, size_t count,
                    ReduceOp op, Expected expected, const std::string& label) {
  for (size_t index = 0; index < count; ++index) {
    double want = expected(index);
    double got = Load(buffer, type, index);
    if (std::fabs(got - want) > Tolerance(type, op, want)) {
      ADD_FAILURE() << what << " " << label << ": element " << index << " is " << got
                    << ", expected " << want;
      return;
    }
  }
}

std::vector<size_t> VariableCounts(size_t count, int size) {
  std::vector<size_t> counts(size);
  for (int rank = 0; rank < size; ++rank) counts[rank] = (count * (rank + 1)) % (count + 3);
  return counts;
}

struct Runner {
  Communicator& comm;
  std::string algorithm;  // forced on every call (empty: the tuner's choice)
  int rank() const { return comm.rank(); }
  int size() const { return comm.size(); }

  // The call succeeded, and ran the forced algorithm (or one the tuner chose).
  void Check(const std::shared_ptr<Work>& work, const std::string& label) {
    absl::Status status = work->Wait();
    ASSERT_TRUE(status.ok()) << label << ": " << status;
    if (!algorithm.empty()) {
      EXPECT_EQ(work->algorithm(), algorithm) << label;
    } else if (work->op() != OpType::kSend && work->op() != OpType::kRecv) {
      EXPECT_FALSE(work->algorithm().empty()) << label;
    }
  }

  void Allreduce(DataType type, ReduceOp op, size_t count, bool in_place) {
    std::string label = Label(type, op, count, in_place);
    auto input = testing::MakeInput(type, op, rank(), count);
    std::vector<char> output(input.size(), 0x5a);
    AllreduceOptions options;
    options.input = input.data();
    options.output = in_place ? input.data() : output.data();
    options.count = count;
    options.dtype = type;
    options.op = op;
    options.algorithm = algorithm;
    Check(comm.Allreduce(options), label);
    ExpectElements("allreduce", options.output, type, count, op,
                   [&](size_t i) { return Reference(type, op, size(), i); }, label);
    if (!in_place) {
      ExpectElements("allreduce input", input.data(), type, count, op,
                     [&](size_t i) { return InputValue(type, op, rank(), i); }, label);
    }
  }

  void Broadcast(DataType type, size_t count, bool in_place) {
    for (int root : {0, size() - 1}) {
      std::string label = Label(type, ReduceOp::kSum, count, in_place) + "/root" +
                          std::to_string(root);
      auto input = testing::MakeInput(type, ReduceOp::kSum, rank() == root ? 1000 : rank(), count);
      std::vector<char> output(input.size(), 0);
      BroadcastOptions options;
      options.input = input.data();
      options.output = in_place ? input.data() : output.data();
      options.count = count;
      options.dtype = type;
      options.root = root;
      options.algorithm = algorithm;
      Check(comm.Broadcast(options), label);
      ExpectElements("broadcast", options.output, type, count, ReduceOp::kSum,
                     [&](size_t i) { return InputValue(type, ReduceOp::kSum, 1000, i); }, label);
    }
  }

  void Reduce(DataType type, ReduceOp op, size_t count, bool in_place) {
    int root = static_cast<int>(count % size());
    std::string label = Label(type, op, count, in_place) + "/root" + std::to_string(root);
    auto input = testing::MakeInput(type, op, rank(), count);
    std::vector<char> output(input.size(), 0);
    ReduceOptions options;
    options.algorithm = algorithm;
    options.input = input.data();
    options.output = in_place ? input.data() : output.data();
    options.count = count;
    options.dtype = type;
    options.op = op;
    options.root = root;
    Check(comm.Reduce(options), label);
    if (rank() == root) {
      ExpectElements("reduce", options.output, type, count, op,
                     [&](size_t i) { return Reference(type, op, size(), i); }, label);
    } else if (!in_place) {
      ExpectElements("reduce non-root input", input.data(), type, count, op,
                     [&](size_t i) { return InputValue(type, op, rank(), i); }, label);
    }
  }

  void Allgather(DataType type, size_t count, bool in_place, bool variable) {
    std::string label = Label(type, ReduceOp::kSum, count, in_place) + (variable ? "/v" : "");
    std::vector<size_t> counts =
        variable ? VariableCounts(count, size()) : std::vector<size_t>(size(), count);
    std::vector<size_t> offsets(size(), 0);
    for (int r = 1; r < size(); ++r) offsets[r] = offsets[r - 1] + counts[r - 1];
    size_t total = offsets[size() - 1] + counts[size() - 1];
    size_t element = DataTypeSize(type);
    std::vector<char> output(total * element + 1, 0);
    auto mine = testing::MakeInput(type, ReduceOp::kSum, rank(), counts[rank()]);
    const void* input = mine.data();
    if (in_place) {
      std::memcpy(output.data() + offsets[rank()] * element, mine.data(), counts[rank()] * element);
      input = output.data() + offsets[rank()] * element;
    }
    AllgatherOptions options;
    options.input = input;
    options.output = output.data();
    options.count = count;
    if (variable) options.counts = counts;
    options.dtype = type;
    options.algorithm = algorithm;
    Check(comm.Allgather(options), label);
    for (int r = 0; r < size(); ++r) {
      ExpectElements("allgather", output.data() + offsets[r] * element, type, counts[r],
                     ReduceOp::kSum, [&](size_t i) { return InputValue(type, ReduceOp::kSum, r, i); },
                     label + "/block" + std::to_string(r));
    }
  }

  void ReduceScatter(DataType type, ReduceOp op, size_t count, bool in_place, bool variable) {
    std::string label = Label(type, op, count, in_place) + (variable ? "/v" : "");
    std::vector<size_t> counts =
        variable ? VariableCounts(count, size()) : std::vector<size_t>(size(), count);
    std::vector<size_t> offsets(size(), 0);
    for (int r = 1; r < size(); ++r) offsets[r] = offsets[r - 1] + counts[r - 1];
    size_t total = offsets[size() - 1] + counts[size() - 1];
    size_t element = DataTypeSize(type);
    auto input = testing::MakeInput(type, op, rank(), total);
    std::vector<char> output(counts[rank()] * element + 1, 0);
    ReduceScatterOptions options;
    options.input = input.data();
    options.output = in_place ? input.data() + offsets[rank()] * element : output.data();
    options.count = count;
    if (variable) options.counts = counts;
    options.dtype = type;
    options.op = op;
    options.algorithm = algorithm;
    Check(comm.ReduceScatter(options), label);
    size_t base = offsets[rank()];
    ExpectElements("reduce_scatter", options.output, type, counts[rank()], op,
                   [&](size_t i) { return Reference(type, op, size(), base + i); }, label);
  }

  void Alltoall(DataType type, size_t count, bool in_place, bool variable) {
    std::string label = Label(type, ReduceOp::kSum, count, in_place) + (variable ? "/v" : "");
    size_t element = DataTypeSize(type);
    // Rank s sends (count + s + d) % (count + 2) elements to rank d in the variable case.
    auto amount = [&](int from, int to) {
      return variable ? (count + from + 2 * to) % (count + 2) : count;
    };
    if (in_place && variable) return;  // in place needs equal splits
    std::vector<size_t> send_counts(size()), recv_counts(size());
    for (int peer = 0; peer < size(); ++peer) {
      send_counts[peer] = amount(rank(), peer);
      recv_counts[peer] = amount(peer, rank());
    }
    size_t send_total = std::accumulate(send_counts.begin(), send_counts.end(), size_t{0});
    size_t recv_total = std::accumulate(recv_counts.begin(), recv_counts.end(), size_t{0});
    // Element i of the block for peer d holds value(rank, d * 100003 + i).
    std::vector<char> input(send_total * element + 1);
    size_t at = 0;
    for (int peer = 0; peer < size(); ++peer) {
      for (size_t i = 0; i < send_counts[peer]; ++i) {
        testing::Store(input.data(), type, at++, InputValue(type, ReduceOp::kSum, rank(), peer * 100003 + i));
      }
    }
    std::vector<char> output(recv_total * element + 1, 0);
    AlltoallOptions options;
    options.algorithm = algorithm;
    options.input = input.data();
    options.output = in_place ? input.data() : output.data();
    options.count = count;
    if (variable) {
      options.send_counts = send_counts;
      options.recv_counts = recv_counts;
    }
    options.dtype = type;
    Check(comm.Alltoall(options), label);
    at = 0;
    for (int peer = 0; peer < size(); ++peer) {
      ExpectElements("alltoall", static_cast<char*>(options.output) + at * element, type,
                     recv_counts[peer], ReduceOp::kSum,
                     [&](size_t i) { return InputValue(type, ReduceOp::kSum, peer, rank() * 100003 + i); },
                     label + "/from" + std::to_string(peer));
      at += recv_counts[peer];
    }
  }

  void Gather(DataType type, size_t count, bool in_place) {
    int root = size() - 1;
    std::string label = Label(type, ReduceOp::kSum, count, in_place);
    size_t element = DataTypeSize(type);
    auto mine = testing::MakeInput(type, ReduceOp::kSum, rank(), count);
    std::vector<char> output(count * size() * element + 1, 0);
    const void* input = mine.data();
    if (in_place && rank() == root) {
      std::memcpy(output.data() + rank() * count * element, mine.data(), count * element);
      input = output.data() + rank() * count * element;
    }
    GatherOptions options;
    options.algorithm = algorithm;
    options.input = input;
    options.output = output.data();
    options.count = count;
    options.dtype = type;
    options.root = root;
    Check(comm.Gather(options), label);
    if (rank() != root) return;
    for (int r = 0; r < size(); ++r) {
      ExpectElements("gather", output.data() + r * count * element, type, count, ReduceOp::kSum,
                     [&](size_t i) { return InputValue(type, ReduceOp::kSum, r, i); }, label);
    }
  }

  void Scatter(DataType type, size_t count, bool in_place) {
    int root = 0;
    std::string label = Label(type, ReduceOp::kSum, count, in_place);
    size_t element = DataTypeSize(type);
    std::vector<char> input(count * size() * element + 1, 0);
    if (rank() == root) {
      for (size_t i = 0; i < count * size(); ++i) {
        testing::Store(input.data(), type, i, InputValue(type, ReduceOp::kSum, 77, i));
      }
    }
    std::vector<char> output(count * element + 1, 0);
    ScatterOptions options;
    options.algorithm = algorithm;
    options.input = input.data();
    options.output = (in_place && rank() == root) ? input.data() : output.data();
    options.count = count;
    options.dtype = type;
    options.root = root;
    Check(comm.Scatter(options), label);
    size_t base = rank() * count;
    ExpectElements("scatter", options.output, type, count, ReduceOp::kSum,
                   [&](size_t i) { return InputValue(type, ReduceOp::kSum, 77, base + i); }, label);
  }

  void SendRecv(DataType type, size_t count) {
    // A ring of sends: each rank sends to the right and receives from the left, both posted
    // before either is waited for (large messages would otherwise deadlock).
    if (size() == 1) return;
    std::string label = Label(type, ReduceOp::kSum, count, false);
    int right = (rank() + 1) % size();
    int left = (rank() + size() - 1) % size();
    auto input = testing::MakeInput(type, ReduceOp::kSum, rank(), count);
    std::vector<char> output(input.size(), 0);
    RecvOptions receive;
    receive.data = output.data();
    receive.count = count;
    receive.dtype = type;
    receive.peer = rank() % 2 == 0 ? left : kAnySource;
    receive.tag = 9;
    SendOptions send;
    send.data = input.data();
    send.count = count;
    send.dtype = type;
    send.peer = right;
    send.tag = 9;
    auto receive_work = comm.Recv(receive);
    auto send_work = comm.Send(send);
    Check(send_work, label);
    Check(receive_work, label);
    EXPECT_EQ(receive_work->source_rank(), left) << label;
    ExpectElements("recv", output.data(), type, count, ReduceOp::kSum,
                   [&](size_t i) { return InputValue(type, ReduceOp::kSum, left, i); }, label);
  }
};

// How the ranks reach each other: all through shared memory (one host), all through TCP
// (COHORT_SHM=0), or several "hosts" (COHORT_HOST_ID) with shared memory inside and TCP
// between: two hosts of consecutive ranks (mixed), two hosts taking turns (interleaved: ranks
// 0, 2, 4 ... on one), three hosts of consecutive ranks (blocks3) or taking turns (hosts3).
int HostOf(const std::string& layout, int rank, int size) {
  if (layout == "mixed" || layout == "ucx_mixed") return rank * 2 / size;
  if (layout == "interleaved") return rank % 2;
  if (layout == "blocks3") return rank * 3 / size;
  if (layout == "hosts3") return rank % 3;
  return -1;
}

void SetLayout(const std::string& layout, int rank, int size) {
  if (layout == "tcp") setenv("COHORT_SHM", "0", 1);
  if (layout == "ucx") setenv("COHORT_TRANSPORTS", "ucx", 1);
  if (layout == "ucx_mixed") setenv("COHORT_TRANSPORTS", "shm,ucx", 1);
  int host = HostOf(layout, rank, size);
  if (host >= 0) setenv("COHORT_HOST_ID", ("host" + std::to_string(host)).c_str(), 1);
}

// The channel of every pair is the one the layout implies (the sweep must not pass by testing
// another channel than it names).
void ExpectChannels(const Communicator& comm, const std::string& layout) {
  for (int peer = 0; peer < comm.size(); ++peer) {
    if (peer == comm.rank()) continue;
    bool same_host = layout == "shm" ||
                     (layout != "tcp" && layout != "ucx" &&
                      HostOf(layout, peer, comm.size()) == HostOf(layout, comm.rank(), comm.size()));
    const ChannelKind across = layout.rfind("ucx", 0) == 0 ? ChannelKind::kUcx : ChannelKind::kTcp;
    EXPECT_EQ(comm.channel_kind(peer), same_host ? ChannelKind::kSharedMemory : across)
        << "layout " << layout << ", rank " << comm.rank() << ", peer " << peer;
  }
}

using Param = std::tuple<int, std::string, std::string>;

// The ops the sweep knows; a param names one, optionally followed by "_<algorithm>" to force it.
const char* const kSweepOps[] = {"allreduce",      "broadcast",       "reduce",    "allgatherv",
                                 "allgather",      "reduce_scatterv", "reduce_scatter",
                                 "alltoallv",      "alltoall",        "gather",    "scatter",
                                 "sendrecv",       "barrier"};

// "reduce_scatter_hierarchical" -> {"reduce_scatter", "hierarchical"}; "gather" -> {"gather", ""}.
std::pair<std::string, std::string> SplitOp(const std::string& name) {
  std::string op;  // the longest op the name starts with ("reduce_scatter", not "reduce")
  for (const char* known : kSweepOps) {
    std::string prefix = known;
    bool starts = name == prefix || name.rfind(prefix + "_", 0) == 0;
    if (starts && prefix.size() > op.size()) op = prefix;
  }
  if (op.empty() || op == name) return {name, ""};
  return {op, name.substr(op.size() + 1)};
}

// Whether `algorithm` can serve the sweep's calls of `op` on `world` ranks laid out as
// `layout`: what the registry's constraints say, written down independently so that a
// constraint that changes by accident shows up here.
bool Serves(const std::string& algorithm, const std::string& op, int world,
            const std::string& layout) {
  const bool one_host = layout == "shm" || layout == "tcp" || layout == "ucx";
  if (algorithm == "one_shot" || algorithm == "two_shot") return one_host;
  if (algorithm.rfind("lane", 0) == 0) return layout == "shm" && op != "alltoallv";
  if (algorithm == "hierarchical") {
    // More than one host, the same number of ranks (more than one) on each; equal blocks.
    const int hosts = layout == "mixed" || layout == "ucx_mixed" || layout == "interleaved" ? 2
                      : layout == "blocks3" || layout == "hosts3"  ? 3
                                                                   : 1;
    return hosts > 1 && world % hosts == 0 && world / hosts > 1 && op != "allgatherv" &&
           op != "reduce_scatterv";
  }
  return true;
}

// Runs every data type, size, reduce op and in/out-of-place case of `op` through `runner`.
void Sweep(Runner& runner, const std::string& op) {
  for (DataType type : testing::AllDataTypes()) {
    for (size_t count : kSizes) {
      for (bool in_place : {false, true}) {
        if (op == "allreduce" || op == "reduce" || op.rfind("reduce_scatter", 0) == 0) {
          for (ReduceOp reduce_op : testing::ReduceOpsFor(type)) {
            if (op == "reduce") {
              runner.Reduce(type, reduce_op, count, in_place);
            } else if (op == "reduce_scatter" || op == "reduce_scatterv") {
              runner.ReduceScatter(type, reduce_op, count, in_place, op == "reduce_scatterv");
            } else {
              runner.Allreduce(type, reduce_op, count, in_place);
            }
            if (::testing::Test::HasFatalFailure()) return;
          }
        } else if (op == "broadcast") {
          runner.Broadcast(type, count, in_place);
        } else if (op == "allgather" || op == "allgatherv") {
          runner.Allgather(type, count, in_place, op == "allgatherv");
        } else if (op == "alltoall" || op == "alltoallv") {
          runner.Alltoall(type, count, in_place, op == "alltoallv");
        } else if (op == "gather") {
          runner.Gather(type, count, in_place);
        } else if (op == "scatter") {
          runner.Scatter(type, count, in_place);
        } else if (op == "sendrecv" && !in_place) {
          runner.SendRecv(type, count);
        } else if (op == "barrier" && type == DataType::kFloat32 && !in_place) {
          BarrierOptions options;
          options.algorithm = runner.algorithm;
          runner.Check(runner.comm.Barrier(options), "barrier");
        }
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

// A forced algorithm that cannot serve the call fails it, naming the algorithm and why (and
// the communicator stays usable).
void ExpectRefused(Runner& runner, const std::string& op) {
  std::vector<char> input(64 * 8 * runner.size()), output(input.size());
  std::shared_ptr<Work> work;
  const size_t count = 4;
  if (op == "allreduce") {
    AllreduceOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    options.algorithm = runner.algorithm;
    work = runner.comm.Allreduce(options);
  } else if (op == "broadcast") {
    BroadcastOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    options.algorithm = runner.algorithm;
    work = runner.comm.Broadcast(options);
  } else if (op == "reduce") {
    ReduceOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    options.algorithm = runner.algorithm;
    work = runner.comm.Reduce(options);
  } else if (op == "allgather" || op == "allgatherv") {
    AllgatherOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    if (op == "allgatherv") options.counts.assign(runner.size(), count);
    options.algorithm = runner.algorithm;
    work = runner.comm.Allgather(options);
  } else if (op == "reduce_scatter" || op == "reduce_scatterv") {
    ReduceScatterOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    if (op == "reduce_scatterv") options.counts.assign(runner.size(), count);
    options.algorithm = runner.algorithm;
    work = runner.comm.ReduceScatter(options);
  } else if (op == "alltoall" || op == "alltoallv") {
    AlltoallOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    if (op == "alltoallv") {
      options.send_counts.assign(runner.size(), count);
      options.recv_counts.assign(runner.size(), count);
    }
    options.algorithm = runner.algorithm;
    work = runner.comm.Alltoall(options);
  } else if (op == "gather") {
    GatherOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    options.algorithm = runner.algorithm;
    work = runner.comm.Gather(options);
  } else if (op == "scatter") {
    ScatterOptions options;
    options.input = input.data(), options.output = output.data(), options.count = count;
    options.algorithm = runner.algorithm;
    work = runner.comm.Scatter(options);
  } else {
    BarrierOptions options;
    options.algorithm = runner.algorithm;
    work = runner.comm.Barrier(options);
  }
  absl::Status status = work->Wait();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("forced algorithm \"" + runner.algorithm + "\" cannot serve"),
            absl::string_view::npos)
      << status;
  EXPECT_NE(status.message().find("it needs"), absl::string_view::npos) << status;
}

class CollectiveTest : public ::testing::TestWithParam<Param> {};

TEST_P(CollectiveTest, MatchesReference) {
  auto [world, name, layout] = GetParam();
  if (world == 1 && layout != "shm") GTEST_SKIP() << "one rank has no peers";
  if (world == 2 && (layout == "mixed" || layout == "ucx_mixed")) {
    GTEST_SKIP() << "two ranks on two hosts is the tcp (ucx) case";
  }
  if (layout.rfind("ucx", 0) == 0 && !ucx::Built()) {
    GTEST_SKIP() << "this build has no UCX (libucx-dev was not found at configure time)";
  }
  auto [op, algorithm] = SplitOp(name);
  const bool serves = algorithm.empty() || Serves(algorithm, op, world, layout);
  testing::RunRanks(world, [op = op, algorithm = algorithm, layout = layout, serves](
                               int rank, int size, Bootstrap& bootstrap) mutable {
    setenv("COHORT_CHUNK_BYTES", "4096", 1);
    SetLayout(layout, rank, size);
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "sweep"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    ExpectChannels(**comm, layout);
    Runner runner{**comm, algorithm};
    if (serves) {
      Sweep(runner, op);
    } else {
      ExpectRefused(runner, op);
    }
    if (::testing::Test::HasFailure()) return;
    // Everything above ran on one communicator, in order; a barrier closes the sweep.
    absl::Status status = (*comm)->Barrier()->Wait();
    EXPECT_TRUE(status.ok()) << status;
  });
}

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return std::get<1>(info.param) + "_" + std::to_string(std::get<0>(info.param)) + "ranks_" +
         std::get<2>(info.param);
}

// Every op with the tuner's choice, on 1 to 8 ranks and every layout.
INSTANTIATE_TEST_SUITE_P(
    Worlds, CollectiveTest,
    ::testing::Combine(::testing::Values(1, 2, 3, 4, 5, 8),
                       ::testing::Values("allreduce", "broadcast", "reduce", "allgather",
                                         "allgatherv", "reduce_scatter", "reduce_scatterv",
                                         "alltoall", "alltoallv", "gather", "scatter",
                                         "sendrecv", "barrier"),
                       ::testing::Values("shm", "tcp", "mixed", "ucx", "ucx_mixed")),
    ParamName);

// Every registered algorithm forced for every op it implements (ForcedSweepCoversTheRegistry
// checks the list against the registry), on 3 and 4 ranks (odd and power-of-two shapes) in
// every layout: where it serves, it runs and is checked; elsewhere it must refuse.
const std::vector<std::string> kForced = {
    "allreduce_ring",          "allgather_ring",         "reduce_scatter_ring",
    "allgatherv_ring",         "reduce_scatterv_ring",   "allreduce_recursive_doubling",
    "broadcast_tree",          "reduce_tree",            "alltoall_pairwise",
    "alltoallv_pairwise",      "gather_linear",          "scatter_linear",
    "barrier_dissemination",   "allreduce_hierarchical", "allgather_hierarchical",
    "reduce_scatter_hierarchical", "broadcast_hierarchical", "allgatherv_hierarchical",
    "allreduce_one_shot",      "allreduce_two_shot",     "allreduce_lane_one_shot",
    "allreduce_lane_two_shot", "broadcast_lane",         "reduce_lane",
    "allgather_lane",          "gather_lane",            "reduce_scatter_lane",
    "scatter_lane",            "alltoall_lane",          "alltoallv_lane",
    "barrier_lane",
};

INSTANTIATE_TEST_SUITE_P(Forced, CollectiveTest,
                         ::testing::Combine(::testing::Values(3, 4), ::testing::ValuesIn(kForced),
                                            ::testing::Values("shm", "tcp", "mixed")),
                         ParamName);

TEST(Registry, ForcedSweepCoversTheRegistry) {
  for (const Algorithm& algorithm : Algorithms()) {
    // Device algorithms serve CUDA memory only: device_collectives_test forces them.
    if (!algorithm.ServesMemory(MemoryKind::kHost)) continue;
    for (OpType op : algorithm.ops) {
      std::string name = std::string(OpTypeName(op)) + "_" + algorithm.name;
      EXPECT_NE(std::find(kForced.begin(), kForced.end(), name), kForced.end())
          << "the forced sweep does not run " << algorithm.name << " for " << OpTypeName(op)
          << " (add \"" << name << "\" to kForced)";
    }
  }
}

// The hierarchical algorithms on the other host layouts they accept: hosts whose ranks are not
// consecutive, and three hosts (the rails then forward what they receive).
std::vector<Param> HierarchyParams() {
  std::vector<Param> params;
  for (std::string op : {"allreduce_hierarchical", "broadcast_hierarchical",
                         "allgather_hierarchical", "reduce_scatter_hierarchical"}) {
    params.emplace_back(4, op, "interleaved");
    params.emplace_back(6, op, "blocks3");
    params.emplace_back(6, op, "hosts3");
  }
  return params;
}

INSTANTIATE_TEST_SUITE_P(
    Hierarchy, CollectiveTest, ::testing::ValuesIn(HierarchyParams()),
    [](const ::testing::TestParamInfo<Param>& info) {
      return std::get<1>(info.param) + "_" + std::to_string(std::get<0>(info.param)) + "ranks_" +
             std::get<2>(info.param);
    });

// 64 MiB through the default pipeline, in place and not, with the tuner's choice.
class LargeTest : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(LargeTest, Allreduce64MiB) {
  auto [world, layout] = GetParam();
  testing::RunRanks(world, [layout = layout](int rank, int size, Bootstrap& bootstrap) {
    SetLayout(layout, rank, size);
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "large"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    Runner runner{**comm, ""};
    const size_t count = (64u << 20) / sizeof(float);
    runner.Allreduce(DataType::kFloat32, ReduceOp::kSum, count, false);
    runner.Allreduce(DataType::kFloat32, ReduceOp::kSum, count, true);
    // The pipelined hierarchy (8 chunks at this size) where there are hosts to span.
    if (layout == "mixed") runner.algorithm = "hierarchical";
    runner.Allreduce(DataType::kFloat32, ReduceOp::kAvg, count, false);
    runner.algorithm = "";
    runner.ReduceScatter(DataType::kFloat32, ReduceOp::kSum, count / size, false, false);
    runner.Allgather(DataType::kFloat32, count / size, false, false);
    runner.Broadcast(DataType::kFloat32, count / 4, false);
    if (layout == "shm" || layout == "tcp") return;
    // The other hierarchies, in chunks at this size (in place too).
    runner.algorithm = "hierarchical";
    runner.ReduceScatter(DataType::kFloat32, ReduceOp::kAvg, count / size, false, false);
    runner.ReduceScatter(DataType::kFloat32, ReduceOp::kSum, count / size, true, false);
    runner.Allgather(DataType::kFloat32, count / size, false, false);
    runner.Allgather(DataType::kFloat32, count / size, true, false);
    runner.Broadcast(DataType::kFloat32, count / 4 + 3, false);
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, LargeTest,
                         ::testing::Values(std::make_tuple(2, "shm"), std::make_tuple(2, "tcp"),
                                           std::make_tuple(4, "mixed")));

// Three hosts taking turns, buffers of a few chunks: the rails forward chunk after chunk.
TEST(HierarchyTest, ChunksOnThreeHosts) {
  testing::RunRanks(6, [](int rank, int size, Bootstrap& bootstrap) {
    SetLayout("hosts3", rank, size);
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "chunks"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    Runner runner{**comm, "hierarchical"};
    const size_t count = (12u << 20) / sizeof(float) + 5;
    runner.Allreduce(DataType::kFloat32, ReduceOp::kSum, count, false);
    runner.ReduceScatter(DataType::kFloat32, ReduceOp::kSum, count / size, true, false);
    runner.Allgather(DataType::kFloat32, count / size, false, false);
    runner.Broadcast(DataType::kFloat32, count, true);
  });
}

}  // namespace
}  // namespace cohort

namespace cohort {
namespace {

// With measured link models every rank still makes the same choices (rank 0's figures are used
// by all): collectives across two "hosts" stay correct.
TEST(Tuner, ProbedModelsAgreeOnEveryRank) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    setenv("COHORT_TUNER_PROBE", "1", 1);
    SetLayout("mixed", rank, size);
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "probe"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    Runner runner{**comm, ""};
    for (size_t count : {size_t{1}, size_t{4099}, size_t{1} << 20}) {
      runner.Allreduce(DataType::kFloat32, ReduceOp::kSum, count, false);
    }
  });
}

}  // namespace
}  // namespace cohort

namespace cohort {
namespace {

OpArgs Args(OpType op, size_t count) {
  OpArgs args;
  args.op = op;
  args.count = count;
  args.root = 0;
  return args;
}

// COHORT_ALGO=hierarchical forces the hierarchy for every op it serves on two hosts of two
// ranks, but not for the v variants; with a network much slower than shared memory the tuner
// takes it for large buffers on its own (not broadcast, which the tree serves as well there).
TEST(Tuner, HierarchyForcedAndChosen) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    SetLayout("mixed", rank, size);
    setenv("COHORT_ALGO", "hierarchical", 1);
    auto forced = Communicator::Create(bootstrap, rank, size, {.name = "forced"});
    ASSERT_TRUE(forced.ok()) << forced.status();
    for (OpType op : {OpType::kAllreduce, OpType::kAllgather, OpType::kReduceScatter,
                      OpType::kBroadcast}) {
      EXPECT_EQ((*forced)->ChosenAlgorithm(Args(op, 5)), "hierarchical") << OpTypeName(op);
    }
    // The v variants it implements but cannot serve: forced, they fail the call saying why.
    std::vector<float> input(16), output(16);
    AllgatherOptions allgatherv;
    allgatherv.input = input.data();
    allgatherv.output = output.data();
    allgatherv.counts = {1, 2, 3, 4};
    absl::Status status = (*forced)->Allgather(allgatherv)->Wait();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find("forced algorithm \"hierarchical\" cannot serve this "
                                    "allgather of 40 bytes with per-rank counts"),
              absl::string_view::npos)
        << status;
    // The ops it does not implement are the tuner's; the communicator is still usable.
    auto barrier = (*forced)->Barrier();
    EXPECT_TRUE(barrier->Wait().ok());
    EXPECT_NE(barrier->algorithm(), "hierarchical");
    unsetenv("COHORT_ALGO");

    std::string models = "/tmp/cohort-hierarchy-models." + std::to_string(getpid());
    FILE* file = fopen(models.c_str(), "w");
    ASSERT_NE(file, nullptr);
    fputs("intra 2 8 8\ninter 50 0.25 8\n", file);
    fclose(file);
    setenv("COHORT_TOPO_FILE", models.c_str(), 1);
    auto tuned = Communicator::Create(bootstrap, rank, size, {.name = "tuned"});
    unlink(models.c_str());
    ASSERT_TRUE(tuned.ok()) << tuned.status();
    for (OpType op : {OpType::kAllreduce, OpType::kAllgather, OpType::kReduceScatter}) {
      EXPECT_EQ((*tuned)->ChosenAlgorithm(Args(op, 16 << 20)), "hierarchical") << OpTypeName(op);
    }
    // On two hosts the tree already sends each host the buffer once.
    EXPECT_EQ((*tuned)->ChosenAlgorithm(Args(OpType::kBroadcast, 16 << 20)), "tree");
  });
}

}  // namespace
}  // namespace cohort
