// Surviving failures in place: a rank killed in the middle of a collective, the survivors
// shrink (agreeing through the store) and go on with correct results over the same channels;
// a voluntary shrink; Split by color and key; an abort that reaches every rank with its reason;
// the flight recorder's dumps of a failure.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collectives/communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Communicator> MustCreate(Bootstrap& bootstrap, int rank, int size,
                                         CommOptions options) {
  auto comm = Communicator::Create(bootstrap, rank, size, std::move(options));
  if (!comm.ok()) {
    ADD_FAILURE() << comm.status();
    return nullptr;
  }
  return std::move(*comm);
}

absl::Status Allreduce(Communicator& comm, std::vector<float>& data) {
  AllreduceOptions options;
  options.input = data.data();
  options.output = data.data();
  options.count = data.size();
  return comm.Allreduce(options)->Wait();
}

std::string TempDir(const std::string& name) {
  std::string dir = absl::StrCat(::testing::TempDir(), "/", name, "-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Waits until every rank got here, through the store: a collective would not do before a
// shrink, as a rank that leaves it first revokes the communicator while the others finish it.
void StoreBarrier(Bootstrap& bootstrap, const std::string& name, int rank, int size) {
  ASSERT_TRUE(bootstrap.Set(absl::StrCat(name, "/", rank), "1").ok());
  for (int other = 0; other < size; ++other) {
    ASSERT_TRUE(bootstrap.Get(absl::StrCat(name, "/", other), absl::Seconds(60)).ok());
  }
}

// Ranks keep running allreduces; rank 2 is killed during one; every survivor's error names it,
// then the survivors shrink and their allreduces are correct again.
void KillShrinkAndGoOn(std::vector<ChannelKind> transports, size_t count,
                       const std::string& trace_dir) {
  const int size = 4;
  testing::RankGroup group;
  group.Start(size, [&](int rank, int size, Bootstrap& bootstrap) {
    CommOptions options;
    options.name = "shrink";
    options.timeout = absl::Seconds(20);
    options.transports = transports;
    options.trace_dir = trace_dir;
    auto comm = MustCreate(bootstrap, rank, size, options);
    ASSERT_NE(comm, nullptr);
    std::vector<float> data(count, 1.0f);
    ASSERT_TRUE(Allreduce(*comm, data).ok());
    ASSERT_TRUE(bootstrap.Set(absl::StrCat("started/", rank), "1").ok());
    absl::Status status;
    for (int iteration = 0; iteration < 1000000 && status.ok(); ++iteration) {
      status = Allreduce(*comm, data);
    }
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()), HasSubstr("rank 2 ("));
    auto shrunk = comm->Shrink(bootstrap);
    ASSERT_TRUE(shrunk.ok()) << shrunk.status();
    Communicator& next = **shrunk;
    EXPECT_EQ(next.size(), 3);
    EXPECT_EQ(next.rank(), rank < 2 ? rank : rank - 1);
    EXPECT_EQ(next.name(), "shrink/shrink1");
    // The parent is revoked and says so.
    EXPECT_FALSE(comm->Barrier()->Wait().ok());
    for (int round = 0; round < 20; ++round) {
      std::vector<float> values(count, static_cast<float>(next.rank() + round));
      absl::Status again = Allreduce(next, values);
      ASSERT_TRUE(again.ok()) << again;
      const float expected = static_cast<float>(0 + 1 + 2 + 3 * round);
      ASSERT_EQ(values.front(), expected);
      ASSERT_EQ(values.back(), expected);
    }
    EXPECT_TRUE(next.Barrier()->Wait().ok());
  });
  Bootstrap& store = group.store();
  for (int rank = 0; rank < size; ++rank) {
    ASSERT_TRUE(store.Get(absl::StrCat("started/", rank), absl::Seconds(60)).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ASSERT_EQ(kill(group.pid(2), SIGKILL), 0);
  std::vector<testing::RankExit> exits = group.Join(absl::Seconds(60));
  EXPECT_EQ(exits[2].signal, SIGKILL);
  for (int rank : {0, 1, 3}) {
    EXPECT_TRUE(exits[rank].ok()) << "rank " << rank << " exit " << exits[rank].exit_code
                                  << " signal " << exits[rank].signal;
  }
}

TEST(Shrink, KilledRankSharedMemory) {
  KillShrinkAndGoOn({ChannelKind::kSharedMemory, ChannelKind::kTcp}, 1 << 16, "");
}

TEST(Shrink, KilledRankTcpLargeMessages) {
  KillShrinkAndGoOn({ChannelKind::kTcp}, 1 << 20, "");
}

TEST(Shrink, FailureDumpsTheFlightRecorder) {
  const std::string dir = TempDir("traces");
  KillShrinkAndGoOn({ChannelKind::kSharedMemory, ChannelKind::kTcp}, 4096, dir);
  for (int rank : {0, 1, 3}) {
    std::string text = ReadFile(absl::StrCat(dir, "/trace-rank", rank, "-shrink.json"));
    EXPECT_THAT(text, HasSubstr("\"kind\": \"trace\""));
    EXPECT_THAT(text, HasSubstr("\"reason\": \"error\""));
    EXPECT_THAT(text, HasSubstr("\"state\": \"done\""));
    EXPECT_THAT(text, HasSubstr("\"state\": \"failed\""));
    EXPECT_THAT(text, HasSubstr("\"op\": \"allreduce\""));
    EXPECT_THAT(text, HasSubstr("rank 2 ("));
    // Whom this rank knew had failed, for cohort-trace; the root rank maps a shrunk
    // communicator's ranks back.
    EXPECT_THAT(text, HasSubstr("\"failed_ranks\": [{\"rank\": 2, \"how\": \"lost\"}]"));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("\"root_rank\": ", rank, ",")));
  }
  EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir, "/trace-rank2-shrink.json")));
  std::filesystem::remove_all(dir);
}

TEST(Shrink, VoluntaryShrinkLeavesOutTheNamedRank) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, {.name = "voluntary"});
    ASSERT_NE(comm, nullptr);
    ASSERT_TRUE(comm->Barrier()->Wait().ok());
    StoreBarrier(bootstrap, "voluntary/ready", rank, size);
    if (rank == 1) {
      // Leaves once the others have their new communicator.
      ASSERT_TRUE(bootstrap.Get("shrunk", absl::Seconds(60)).ok());
      return;
    }
    ShrinkOptions options;
    options.exclude = {1};
    auto shrunk = comm->Shrink(bootstrap, options);
    ASSERT_TRUE(shrunk.ok()) << shrunk.status();
    EXPECT_EQ((*shrunk)->size(), 3);
    std::vector<float> values(1000, static_cast<float>(rank));
    ASSERT_TRUE(Allreduce(**shrunk, values).ok());
    EXPECT_EQ(values[0], 0.0f + 2.0f + 3.0f);
    if ((*shrunk)->rank() == 0) {
      ASSERT_TRUE(bootstrap.Set("shrunk", "1").ok());
    }
    ASSERT_TRUE((*shrunk)->Barrier()->Wait().ok());
  });
}

// A bootstrap whose reads of the shrink agreement are slow: its rank installs the child view
// well after the others, which already send to it.
class LateBootstrap final : public Bootstrap {
 public:
  explicit LateBootstrap(Bootstrap& inner) : inner_(inner) {}
  absl::Status Set(const std::string& key, const std::string& value) override {
    return inner_.Set(key, value);
  }
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override {
    Late(key);
    return inner_.Get(key, timeout);
  }
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override {
    for (const std::string& key : keys) Late(key);
    return inner_.Wait(keys, timeout);
  }
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override {
    return inner_.Add(key, delta);
  }
  absl::StatusOr<std::string> CompareSet(const std::string& key, const std::string& expected,
                                         const std::string& desired) override {
    return inner_.CompareSet(key, expected, desired);
  }

 private:
  static void Late(const std::string& key) {
    if (absl::StrContains(key, "/shrink/")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
  Bootstrap& inner_;
};

// The others finish the shrink first and start a 16 MiB allreduce over TCP while rank 3 is
// still agreeing (about 0.6 s late): the child view's frames reach rank 3's connections before
// it installs that view, and are read and land in order once it has; the results are right.
// (Frames of a newer view that a channel reads before the install are the connection set's
// unit tests' part: connection_set_test.)
TEST(Shrink, LateSurvivorGetsLargeFramesSentToItsChildView) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    CommOptions options;
    options.name = "late";
    options.timeout = absl::Seconds(20);
    options.transports = {ChannelKind::kTcp};
    auto comm = MustCreate(bootstrap, rank, size, options);
    ASSERT_NE(comm, nullptr);
    ASSERT_TRUE(comm->Barrier()->Wait().ok());
    StoreBarrier(bootstrap, "late/ready", rank, size);
    if (rank == 1) {
      ASSERT_TRUE(bootstrap.Get("late/done", absl::Seconds(60)).ok());
      return;
    }
    LateBootstrap late(bootstrap);
    ShrinkOptions shrink;
    shrink.exclude = {1};
    auto shrunk = comm->Shrink(rank == 3 ? static_cast<Bootstrap&>(late) : bootstrap, shrink);
    ASSERT_TRUE(shrunk.ok()) << shrunk.status();
    Communicator& next = **shrunk;
    for (size_t count : {size_t{1} << 22, size_t{100}, size_t{1} << 16}) {
      std::vector<float> values(count, static_cast<float>(next.rank() + 1));
      absl::Status status = Allreduce(next, values);
      ASSERT_TRUE(status.ok()) << status;
      ASSERT_EQ(values.front(), 6.0f) << count;
      ASSERT_EQ(values.back(), 6.0f) << count;
    }
    ASSERT_TRUE(next.Barrier()->Wait().ok());
    if (next.rank() == 0) {
      ASSERT_TRUE(bootstrap.Set("late/done", "1").ok());
    }
  });
}

TEST(Split, ByColorAndKey) {
  testing::RunRanks(4, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, {.name = "split"});
    ASSERT_NE(comm, nullptr);
    // Colors: even and odd ranks; keys reverse the order.
    auto part = comm->Split(bootstrap, rank % 2, -rank);
    ASSERT_TRUE(part.ok()) << part.status();
    ASSERT_NE(*part, nullptr);
    EXPECT_EQ((*part)->size(), 2);
    EXPECT_EQ((*part)->rank(), rank < 2 ? 1 : 0);
    std::vector<float> values(16, static_cast<float>(rank));
    ASSERT_TRUE(Allreduce(**part, values).ok());
    EXPECT_EQ(values[0], rank % 2 == 0 ? 0.0f + 2.0f : 1.0f + 3.0f);
    // A negative color joins no communicator; the parent still works.
    auto none = comm->Split(bootstrap, rank == 0 ? 0 : -1, 0);
    ASSERT_TRUE(none.ok()) << none.status();
    EXPECT_EQ(*none == nullptr, rank != 0);
    if (rank == 0) {
      EXPECT_EQ((*none)->size(), 1);
    }
    std::vector<float> all(8, 1.0f);
    ASSERT_TRUE(Allreduce(*comm, all).ok());
    EXPECT_EQ(all[0], 4.0f);
  });
}

TEST(Abort, ReachesEveryRankWithItsReason) {
  testing::RunRanks(3, [](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, {.name = "abort", .timeout = absl::Seconds(20)});
    ASSERT_NE(comm, nullptr);
    ASSERT_TRUE(comm->Barrier()->Wait().ok());
    if (rank == 0) {
      comm->Abort(absl::CancelledError("the user stops the job"));
      EXPECT_FALSE(comm->Barrier()->Wait().ok());
      return;
    }
    // Ranks 1 and 2 wait in an allreduce rank 0 never joins.
    std::vector<float> values(64, 1.0f);
    auto start = std::chrono::steady_clock::now();
    absl::Status status = Allreduce(*comm, values);
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()), HasSubstr("the user stops the job"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("rank 0 ("));
    EXPECT_LT(seconds, 10.0);
  });
}

TEST(FlightRecorder, DumpOnRequest) {
  const std::string dir = TempDir("request");
  testing::RunRanks(2, [&](int rank, int size, Bootstrap& bootstrap) {
    auto comm = MustCreate(bootstrap, rank, size, {.name = "dump", .trace_buffer = 8});
    ASSERT_NE(comm, nullptr);
    std::vector<float> values(32, 1.0f);
    for (int i = 0; i < 12; ++i) ASSERT_TRUE(Allreduce(*comm, values).ok());
    auto path = comm->DumpTrace(dir);
    ASSERT_TRUE(path.ok()) << path.status();
    std::string text = ReadFile(*path);
    EXPECT_THAT(text, HasSubstr("\"reason\": \"request\""));
    EXPECT_THAT(text, HasSubstr("\"buffer_size\": 8"));
    EXPECT_THAT(text, HasSubstr("\"dropped\": 4"));
    EXPECT_THAT(text, HasSubstr("\"sequence\": 12"));
    EXPECT_THAT(text, ::testing::Not(HasSubstr("\"sequence\": 4,")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("\"rank\": ", rank)));
  });
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cohort
