// Every collective x data type x reduce op x size x in/out-of-place, on 1 to 8 forked ranks,
// checked element by element against a reference computed locally. Segments are shrunk to
// 4 KiB so that multi-segment pipelines run on small buffers; a separate case moves 64 MiB.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <tuple>

#include "collectives/communicator.h"
#include "collectives/transport/channel.h"
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
  std::string algorithm;
  int rank() const { return comm.rank(); }
  int size() const { return comm.size(); }

  void Check(const std::shared_ptr<Work>& work, const std::string& label) {
    absl::Status status = work->Wait();
    ASSERT_TRUE(status.ok()) << label << ": " << status;
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
  if (layout == "mixed") return rank * 2 / size;
  if (layout == "interleaved") return rank % 2;
  if (layout == "blocks3") return rank * 3 / size;
  if (layout == "hosts3") return rank % 3;
  return -1;
}

void SetLayout(const std::string& layout, int rank, int size) {
  if (layout == "tcp") setenv("COHORT_SHM", "0", 1);
  int host = HostOf(layout, rank, size);
  if (host >= 0) setenv("COHORT_HOST_ID", ("host" + std::to_string(host)).c_str(), 1);
}

// The channel of every pair is the one the layout implies (the sweep must not pass by testing
// another channel than it names).
void ExpectChannels(const Communicator& comm, const std::string& layout) {
  for (int peer = 0; peer < comm.size(); ++peer) {
    if (peer == comm.rank()) continue;
    bool same_host = layout == "shm" ||
                     (layout != "tcp" && HostOf(layout, peer, comm.size()) ==
                                             HostOf(layout, comm.rank(), comm.size()));
    EXPECT_EQ(comm.channel_kind(peer), same_host ? ChannelKind::kSharedMemory : ChannelKind::kTcp)
        << "layout " << layout << ", rank " << comm.rank() << ", peer " << peer;
  }
}

using Param = std::tuple<int, std::string, std::string>;

class CollectiveTest : public ::testing::TestWithParam<Param> {};

TEST_P(CollectiveTest, MatchesReference) {
  auto [world, op, layout] = GetParam();
  if (world == 1 && layout != "shm") GTEST_SKIP() << "one rank has no peers";
  if (world == 2 && layout == "mixed") GTEST_SKIP() << "two ranks on two hosts is the tcp case";
  testing::RunRanks(world, [op = op, layout = layout](int rank, int size,
                                                      Bootstrap& bootstrap) mutable {
    setenv("COHORT_CHUNK_BYTES", "4096", 1);
    SetLayout(layout, rank, size);
    auto comm = Communicator::Create(bootstrap, rank, size, {.name = "sweep"});
    ASSERT_TRUE(comm.ok()) << comm.status();
    ExpectChannels(**comm, layout);
    Runner runner{**comm, ""};
    // allreduce_<algorithm> and <op>_hierarchical force it where it applies (the tuner's choice
    // elsewhere).
    if (op.rfind("allreduce_", 0) == 0 && op != "allreduce_auto") runner.algorithm = op.substr(10);
    const std::string kHierarchical = "_hierarchical";
    if (op.size() > kHierarchical.size() && op.ends_with(kHierarchical)) {
      runner.algorithm = "hierarchical";
      op = op.substr(0, op.size() - kHierarchical.size());
    }
    for (DataType type : testing::AllDataTypes()) {
      for (size_t count : kSizes) {
        for (bool in_place : {false, true}) {
          if (op.rfind("allreduce", 0) == 0 || op == "reduce" || op.rfind("reduce_scatter", 0) == 0) {
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
          }
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
    // Everything above ran on one communicator, in order; a barrier closes the sweep.
    absl::Status status = (*comm)->Barrier()->Wait();
    EXPECT_TRUE(status.ok()) << status;
  });
}

INSTANTIATE_TEST_SUITE_P(
    Worlds, CollectiveTest,
    ::testing::Combine(::testing::Values(1, 2, 3, 4, 5, 8),
                       ::testing::Values("allreduce_auto", "allreduce_ring",
                                         "allreduce_recursive_doubling", "allreduce_one_shot",
                                         "allreduce_two_shot", "allreduce_hierarchical",
                                         "broadcast", "broadcast_hierarchical", "reduce",
                                         "allgather", "allgather_hierarchical", "allgatherv",
                                         "reduce_scatter", "reduce_scatter_hierarchical",
                                         "reduce_scatterv", "alltoall", "alltoallv", "gather",
                                         "scatter", "sendrecv"),
                       ::testing::Values("shm", "tcp", "mixed")),
    [](const ::testing::TestParamInfo<Param>& info) {
      return std::get<1>(info.param) + "_" + std::to_string(std::get<0>(info.param)) + "ranks_" +
             std::get<2>(info.param);
    });

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
    runner.algorithm = "hierarchical";
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
    OpArgs variable = Args(OpType::kAllgather, 0);
    variable.counts = {1, 2, 3, 4};
    EXPECT_NE((*forced)->ChosenAlgorithm(variable), "hierarchical");
    variable.op = OpType::kReduceScatter;
    EXPECT_NE((*forced)->ChosenAlgorithm(variable), "hierarchical");
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
