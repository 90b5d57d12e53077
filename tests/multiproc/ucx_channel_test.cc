// The UCX channel on its own, below any protocol: ranks as forked processes, each with a
// UcxChannel and a small FrameSink written here. Frames in order at every size (eager and
// rendezvous), deferred payloads claimed later, a killed peer reported within seconds, a hello
// with the wrong secret refused (and frames from its endpoint too), DropRequests leaving no
// buffer in use, and a clean close that delivers what was sent. Each runs over UCX_TLS=tcp and
// UCX_TLS=sm; the whole suite skips, saying so, in a build without UCX.
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collectives/transport/channel.h"
#include "collectives/transport/ucx/channel.h"
#include "collectives/transport/window.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/multiproc.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

// What a rank's channel delivered, and where payloads go.
class TestSink : public FrameSink {
 public:
  struct Frame {
    int peer;
    FrameHeader header;
    uint64_t deferred_id;
    bool landed = false;
  };
  // Payloads of frames with this tag from `peer` land in `buffer`; other frames are deferred.
  void Expect(int peer, uint32_t tag, char* buffer) { buffers_[{peer, tag}] = buffer; }

  absl::StatusOr<Landing> OnFrame(int peer, const FrameHeader& header,
                                  uint64_t deferred_id) override {
    frames.push_back({peer, header, deferred_id});
    auto it = buffers_.find({peer, header.tag});
    Landing landing;
    landing.token = reinterpret_cast<void*>(frames.size());  // index + 1
    if (header.kind == static_cast<uint8_t>(FrameKind::kAbort)) {
      abort_text.assign(header.length, '\0');
      landing.data = abort_text.data();
    } else if (it != buffers_.end()) {
      landing.data = it->second;
    }
    return landing;
  }
  absl::Status OnPayload(int peer, void* token) override {
    (void)peer;
    frames[reinterpret_cast<size_t>(token) - 1].landed = true;
    ++payloads;
    return absl::OkStatus();
  }
  absl::Status OnPeerClosed(int peer, const std::string& why) override {
    closed[peer] = why;
    for (const Frame& frame : frames) {
      if (frame.peer == peer && frame.header.kind == static_cast<uint8_t>(FrameKind::kGoodbye)) {
        return absl::OkStatus();
      }
    }
    return absl::UnavailableError(absl::StrCat("lost rank ", peer, ": ", why));
  }

  int Count(int peer, FrameKind kind) const {
    int count = 0;
    for (const Frame& frame : frames) {
      count += frame.peer == peer && frame.header.kind == static_cast<uint8_t>(kind);
    }
    return count;
  }

  std::vector<Frame> frames;
  int payloads = 0;
  std::map<int, std::string> closed;
  std::string abort_text;

 private:
  std::map<std::pair<int, uint32_t>, char*> buffers_;
};

// One rank's channel, connected to every other rank.
struct Rank {
  TestSink sink;
  std::unique_ptr<ucx::UcxChannel> channel;
  std::vector<PeerRecord> records;
  ChannelSetup setup;
  absl::Status connected;
};

std::unique_ptr<Rank> MakeRank(Bootstrap& bootstrap, int rank, int size,
                               const std::string& secret = "the-secret",
                               absl::Duration timeout = absl::Seconds(30)) {
  auto result = std::make_unique<Rank>();
  result->setup.bootstrap = &bootstrap;
  result->setup.prefix = "ucxtest";
  result->setup.rank = rank;
  result->setup.size = size;
  result->setup.secret = secret;
  result->setup.sink = &result->sink;
  result->setup.deadline = Deadline::In(timeout);
  auto channel = ucx::UcxChannel::Create(result->setup, ucx::UcxOptions{});
  if (!channel.ok()) {
    ADD_FAILURE() << channel.status();
    return nullptr;
  }
  result->channel = std::move(*channel);
  PeerRecord self;
  self.rank = rank;
  self.host_id = "this-host";
  self.host_name = absl::StrCat("host", rank);
  self.pid = getpid();
  self.order = {ChannelKind::kUcx};
  self.order_forced = true;
  self.offers[static_cast<int>(ChannelKind::kUcx)] = result->channel->Offer();
  EXPECT_TRUE(absl::StartsWith(self.offer(ChannelKind::kUcx), "rdma=0 addr="))
      << self.offer(ChannelKind::kUcx);
  EXPECT_TRUE(bootstrap.Set(absl::StrCat("ucxtest/record/", rank), self.Serialize()).ok());
  std::vector<int> peers;
  for (int peer = 0; peer < size; ++peer) {
    auto text = bootstrap.Get(absl::StrCat("ucxtest/record/", peer), absl::Seconds(30));
    if (!text.ok()) {
      ADD_FAILURE() << text.status();
      return nullptr;
    }
    auto record = PeerRecord::Parse(*text);
    EXPECT_TRUE(record.ok()) << record.status();
    result->records.push_back(*record);
    if (peer != rank) {
      EXPECT_EQ(*ChooseChannel(self, *record), ChannelKind::kUcx);
      peers.push_back(peer);
    }
  }
  result->setup.records = &result->records;
  result->connected = result->channel->Connect(result->setup, peers);
  return result;
}

// Polls (sleeping on the event fd when nothing moves) until `done` or the timeout; the last
// error of Poll is kept in *status.
template <typename Done>
bool PollUntil(Rank& rank, Done done, absl::Duration timeout = absl::Seconds(30),
               absl::Status* status = nullptr) {
  Deadline deadline = Deadline::In(timeout);
  while (!done()) {
    if (deadline.Expired()) return false;
    bool moved = false;
    absl::Status polled = rank.channel->Poll(&moved);
    if (!polled.ok()) {
      if (status == nullptr) {
        ADD_FAILURE() << polled;
        return false;
      }
      *status = polled;
    }
    if (!moved && rank.channel->PrepareToSleep()) {
      pollfd descriptor = {rank.channel->event_fd(), POLLIN, 0};
      ::poll(&descriptor, 1, deadline.RemainingMillis(20));
    }
  }
  return true;
}

void Barrier(Bootstrap& bootstrap, const std::string& name, int size) {
  ASSERT_TRUE(bootstrap.Add(absl::StrCat("ucxtest/barrier/", name), 1).ok());
  for (int round = 0; round < 30000; ++round) {
    auto count = bootstrap.Add(absl::StrCat("ucxtest/barrier/", name), 0);
    ASSERT_TRUE(count.ok());
    if (*count >= size) return;
    usleep(1000);
  }
  FAIL() << "barrier " << name << " timed out";
}

char Pattern(int from, uint32_t tag, size_t index) {
  return static_cast<char>((from * 131 + tag * 31 + index * 7 + (index >> 12)) & 0xff);
}

Request MakeSend(int peer, uint32_t tag, std::vector<char>& buffer) {
  Request request;
  request.direction = Request::Direction::kSend;
  request.peer = peer;
  request.header.kind = static_cast<uint8_t>(FrameKind::kPointToPoint);
  request.header.tag = tag;
  request.data = buffer.data();
  request.length = buffer.size();
  return request;
}

class UcxChannelTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!ucx::Built()) {
      GTEST_SKIP() << "this build has no UCX (libucx-dev was not found at configure time)";
    }
  }
  // Every rank runs over the parameter's UCX transports (set in the rank's process only).
  testing::RankBody WithTls(testing::RankBody body) {
    std::string tls = GetParam();
    return [tls, body](int rank, int size, Bootstrap& bootstrap) {
      setenv("UCX_TLS", tls.c_str(), 1);
      body(rank, size, bootstrap);
    };
  }
};

// Every rank sends every other rank frames from 0 bytes to 64 MiB (eager and rendezvous, mixed
// with runs of small ones); each receiver sees them in send order with the right bytes.
TEST_P(UcxChannelTest, FramesArriveInOrderAtEverySize) {
  testing::RunRanks(3, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size);
    ASSERT_NE(self, nullptr);
    ASSERT_TRUE(self->connected.ok()) << self->connected;
    std::vector<size_t> sizes;
    for (size_t bytes : {size_t{8}, size_t{0}, size_t{1000}, size_t{64} << 10, size_t{1} << 20,
                         size_t{8} << 20, size_t{64} << 20}) {
      sizes.push_back(bytes);
      for (int small = 0; small < 20; ++small) sizes.push_back(8 + small * 40);
    }
    // Receive buffers for every frame from every peer, named by tag.
    std::map<std::pair<int, uint32_t>, std::vector<char>> inbound;
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      for (uint32_t tag = 0; tag < sizes.size(); ++tag) {
        auto& buffer = inbound[{peer, tag}];
        buffer.assign(sizes[tag], 0);
        self->sink.Expect(peer, tag, buffer.data());
      }
    }
    std::vector<std::vector<char>> outbound(sizes.size());
    std::vector<Request> sends;
    sends.reserve(sizes.size() * size);
    for (uint32_t tag = 0; tag < sizes.size(); ++tag) {
      outbound[tag].resize(sizes[tag]);
      for (size_t i = 0; i < sizes[tag]; ++i) outbound[tag][i] = Pattern(rank, tag, i);
    }
    for (uint32_t tag = 0; tag < sizes.size(); ++tag) {
      for (int peer = 0; peer < size; ++peer) {
        if (peer == rank) continue;
        sends.push_back(MakeSend(peer, tag, outbound[tag]));
        ASSERT_TRUE(self->channel->Send(&sends.back()).ok());
      }
    }
    const size_t expected = sizes.size() * (size - 1);
    ASSERT_TRUE(PollUntil(*self, [&] {
      bool sent = true;
      for (const Request& send : sends) sent = sent && send.complete;
      return sent && self->sink.payloads == static_cast<int>(expected);
    })) << "payloads " << self->sink.payloads << " of " << expected;
    for (int peer = 0; peer < size; ++peer) EXPECT_FALSE(self->channel->HasPendingSends(peer));
    // Per peer, tags in send order; every payload intact.
    std::map<int, uint32_t> next;
    for (const TestSink::Frame& frame : self->sink.frames) {
      // Copies: the header is packed, and EXPECT_EQ binds references (misaligned fields).
      const uint32_t tag = frame.header.tag;
      const uint64_t length = frame.header.length;
      EXPECT_EQ(tag, next[frame.peer]++) << "from rank " << frame.peer;
      EXPECT_EQ(length, sizes[tag]);
      EXPECT_TRUE(frame.landed);
    }
    for (auto& [key, buffer] : inbound) {
      for (size_t i = 0; i < buffer.size(); ++i) {
        if (buffer[i] != Pattern(key.first, key.second, i)) {
          ADD_FAILURE() << "payload " << key.second << " from rank " << key.first
                        << " differs at byte " << i << " of " << buffer.size();
          break;
        }
      }
    }
    Barrier(bootstrap, "done", size);
    self->channel->Close(/*clean=*/true, Deadline::In(absl::Seconds(5)));
  }));
}

// Frames nobody has a buffer for stay with the channel (eager data and rendezvous descriptors)
// until Claim, in any order; the sender's rendezvous completes only then.
TEST_P(UcxChannelTest, DeferredFramesLandWhenClaimed) {
  testing::RunRanks(2, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size);
    ASSERT_NE(self, nullptr);
    ASSERT_TRUE(self->connected.ok()) << self->connected;
    const std::vector<size_t> sizes = {8, 4096, size_t{16} << 20, 100, size_t{64} << 20};
    if (rank == 0) {
      std::vector<std::vector<char>> outbound(sizes.size());
      std::vector<Request> sends;
      sends.reserve(sizes.size());
      for (uint32_t tag = 0; tag < sizes.size(); ++tag) {
        outbound[tag].resize(sizes[tag]);
        for (size_t i = 0; i < sizes[tag]; ++i) outbound[tag][i] = Pattern(0, tag, i);
        sends.push_back(MakeSend(1, tag, outbound[tag]));
        ASSERT_TRUE(self->channel->Send(&sends.back()).ok());
      }
      ASSERT_TRUE(PollUntil(*self, [&] {
        bool sent = true;
        for (const Request& send : sends) sent = sent && send.complete;
        return sent;
      }));
    } else {
      ASSERT_TRUE(PollUntil(*self, [&] { return self->sink.frames.size() == sizes.size(); }));
      // Announced, nothing landed; a while later, still nothing.
      PollUntil(*self, [] { return false; }, absl::Milliseconds(200));
      EXPECT_EQ(self->sink.payloads, 0);
      std::vector<std::vector<char>> inbound(sizes.size());
      for (int index = static_cast<int>(sizes.size()) - 1; index >= 0; --index) {
        const TestSink::Frame& frame = self->sink.frames[index];
        inbound[index].assign(frame.header.length, 0);
        ASSERT_TRUE(self->channel
                        ->Claim(0, frame.deferred_id, inbound[index].data(),
                                reinterpret_cast<void*>(static_cast<size_t>(index) + 1))
                        .ok());
      }
      EXPECT_FALSE(self->channel->Claim(0, 12345678, inbound[0].data(), nullptr).ok());
      ASSERT_TRUE(PollUntil(*self, [&] { return self->sink.payloads == 5; }));
      for (uint32_t tag = 0; tag < sizes.size(); ++tag) {
        for (size_t i = 0; i < sizes[tag]; ++i) {
          if (inbound[tag][i] != Pattern(0, tag, i)) {
            ADD_FAILURE() << "claimed payload " << tag << " differs at byte " << i;
            break;
          }
        }
      }
    }
    Barrier(bootstrap, "done", size);
    self->channel->Close(/*clean=*/true, Deadline::In(absl::Seconds(5)));
  }));
}

// A peer killed while a large send to it is in flight: the survivor hears of it through
// OnPeerClosed within seconds, sleeping on the event fd meanwhile.
TEST_P(UcxChannelTest, KilledPeerIsReportedWithinSeconds) {
  testing::RankGroup group;
  group.Start(2, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size);
    ASSERT_NE(self, nullptr);
    ASSERT_TRUE(self->connected.ok()) << self->connected;
    if (rank == 1) {
      // Take the announcement (deferred), then die holding it.
      ASSERT_TRUE(PollUntil(*self, [&] { return !self->sink.frames.empty(); }));
      ASSERT_TRUE(bootstrap.Set("ucxtest/dying", "1").ok());
      kill(getpid(), SIGKILL);
    }
    std::vector<char> payload(size_t{32} << 20, 'x');
    Request send = MakeSend(1, 7, payload);
    ASSERT_TRUE(self->channel->Send(&send).ok());
    ASSERT_TRUE(bootstrap.Get("ucxtest/dying", absl::Seconds(30)).ok());
    auto start = std::chrono::steady_clock::now();
    absl::Status status;
    ASSERT_TRUE(PollUntil(*self, [&] { return !self->sink.closed.empty(); }, absl::Seconds(20),
                          &status));
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 3.0) << "the loss of rank 1 took " << seconds << " s to notice";
    EXPECT_EQ(self->sink.closed.count(1), 1u);
    EXPECT_FALSE(status.ok());  // no goodbye: the sink's verdict is an error, returned by Poll
    EXPECT_FALSE(send.complete);
    fprintf(stderr, "rank 0 learned of the loss in %.3f s: %s\n", seconds,
            self->sink.closed[1].c_str());
    self->channel->DropRequests();
    self->channel->Close(/*clean=*/false, Deadline::In(absl::Seconds(1)));
  }));
  std::vector<testing::RankExit> exits = group.Join(absl::Seconds(60));
  EXPECT_TRUE(exits[0].ok()) << "rank 0 exit code " << exits[0].exit_code;
  EXPECT_EQ(exits[1].signal, SIGKILL);
}

// A rank with the wrong secret: its hello is refused (the other side's Connect times out naming
// it), and frames it sends anyway are refused, never delivered.
TEST_P(UcxChannelTest, WrongSecretIsRefused) {
  testing::RunRanks(2, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size, rank == 1 ? "not-the-secret" : "the-secret",
                         absl::Seconds(2));
    ASSERT_NE(self, nullptr);
    ASSERT_FALSE(self->connected.ok());
    EXPECT_THAT(std::string(self->connected.message()),
                HasSubstr(absl::StrCat("waiting for ranks ", 1 - rank,
                                       " to prove the communicator secret")));
    if (rank == 1) {
      std::vector<char> small(64, 's'), large(size_t{4} << 20, 'l');
      Request first = MakeSend(0, 1, small), second = MakeSend(0, 2, large);
      ASSERT_TRUE(self->channel->Send(&first).ok());
      ASSERT_TRUE(self->channel->Send(&second).ok());
      // The eager frame goes out; the refused rendezvous ends (UCX completes it with the
      // receiver's rejection) rather than hanging.
      PollUntil(*self, [&] { return first.complete; }, absl::Seconds(5));
      EXPECT_TRUE(first.complete);
      ASSERT_TRUE(bootstrap.Set("ucxtest/sent", "1").ok());
      ASSERT_TRUE(bootstrap.Get("ucxtest/checked", absl::Seconds(30)).ok());
    } else {
      ASSERT_TRUE(bootstrap.Get("ucxtest/sent", absl::Seconds(30)).ok());
      PollUntil(*self, [] { return false; }, absl::Milliseconds(500));
      EXPECT_TRUE(self->sink.frames.empty()) << "a frame from an unproven endpoint was delivered";
      ASSERT_TRUE(bootstrap.Set("ucxtest/checked", "1").ok());
    }
    self->channel->Close(/*clean=*/false, Deadline::In(absl::Milliseconds(200)));
  }));
}

// DropRequests while a 64 MiB payload is moving each way: afterwards neither buffer is touched
// (both are unmapped, so a stray read or write by UCX would kill the rank), no payload is
// reported, and the channel still closes.
TEST_P(UcxChannelTest, DropRequestsLeavesNoBufferInUse) {
  testing::RunRanks(2, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size);
    ASSERT_NE(self, nullptr);
    ASSERT_TRUE(self->connected.ok()) << self->connected;
    const size_t bytes = size_t{64} << 20;
    auto map = [&] {
      void* memory =
          mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      EXPECT_NE(memory, MAP_FAILED);
      std::memset(memory, 'p', bytes);
      return static_cast<char*>(memory);
    };
    char* outbound = map();
    char* inbound = map();
    const int peer = 1 - rank;
    self->sink.Expect(peer, 3, inbound);
    Request send;
    send.peer = peer;
    send.header.kind = static_cast<uint8_t>(FrameKind::kPointToPoint);
    send.header.tag = 3;
    send.data = outbound;
    send.length = bytes;
    ASSERT_TRUE(self->channel->Send(&send).ok());
    absl::Status status;
    ASSERT_TRUE(PollUntil(
        *self, [&] { return !self->sink.frames.empty() || !self->sink.closed.empty(); },
        absl::Seconds(30), &status));
    self->channel->DropRequests();
    const int payloads = self->sink.payloads;
    ASSERT_EQ(munmap(outbound, bytes), 0);
    ASSERT_EQ(munmap(inbound, bytes), 0);
    PollUntil(*self, [] { return false; }, absl::Milliseconds(300), &status);
    EXPECT_EQ(self->sink.payloads, payloads) << "a payload landed after DropRequests";
    Barrier(bootstrap, "dropped", size);
    self->channel->Close(/*clean=*/false, Deadline::In(absl::Milliseconds(500)));
  }));
}

// A clean close right after a large send: the flush delivers it and the goodbye follows; the
// peer's verdict on the end of the endpoint is then "clean"; both closes return promptly.
TEST_P(UcxChannelTest, CleanCloseDeliversThenSaysGoodbye) {
  testing::RunRanks(2, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size);
    ASSERT_NE(self, nullptr);
    ASSERT_TRUE(self->connected.ok()) << self->connected;
    const size_t bytes = size_t{16} << 20;
    if (rank == 0) {
      std::vector<char> payload(bytes);
      for (size_t i = 0; i < bytes; ++i) payload[i] = Pattern(0, 9, i);
      Request send = MakeSend(1, 9, payload);
      ASSERT_TRUE(self->channel->Send(&send).ok());
      auto start = std::chrono::steady_clock::now();
      self->channel->Close(/*clean=*/true, Deadline::In(absl::Seconds(5)));
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_TRUE(send.complete) << "Close returned before the payload was taken";
      EXPECT_LT(seconds, 3.0);
      ASSERT_TRUE(bootstrap.Set("ucxtest/closed", "1").ok());
    } else {
      std::vector<char> inbound(bytes, 0);
      self->sink.Expect(0, 9, inbound.data());
      ASSERT_TRUE(PollUntil(*self, [&] {
        return self->sink.Count(0, FrameKind::kGoodbye) == 1 && self->sink.payloads == 2;
      }));
      ASSERT_EQ(self->sink.frames.size(), 2u);
      EXPECT_EQ(self->sink.frames[0].header.tag, 9u);
      for (size_t i = 0; i < bytes; ++i) {
        if (inbound[i] != Pattern(0, 9, i)) {
          ADD_FAILURE() << "payload differs at byte " << i;
          break;
        }
      }
      ASSERT_TRUE(bootstrap.Get("ucxtest/closed", absl::Seconds(30)).ok());
      auto start = std::chrono::steady_clock::now();
      self->channel->Close(/*clean=*/true, Deadline::In(absl::Seconds(5)));
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_LT(seconds, 3.0);
    }
  }));
}

// Abort: the peer gets the abort frame with its reason before the endpoint goes.
TEST_P(UcxChannelTest, AbortFrameCarriesTheReason) {
  testing::RunRanks(2, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size);
    ASSERT_NE(self, nullptr);
    ASSERT_TRUE(self->connected.ok()) << self->connected;
    if (rank == 0) {
      self->channel->Abort("rank 0 failed on purpose", Deadline::In(absl::Seconds(2)));
      ASSERT_TRUE(bootstrap.Get("ucxtest/heard", absl::Seconds(30)).ok());
      self->channel->Close(/*clean=*/false, Deadline::In(absl::Milliseconds(500)));
    } else {
      absl::Status status;
      ASSERT_TRUE(PollUntil(*self, [&] { return self->sink.Count(0, FrameKind::kAbort) == 1 &&
                                                self->sink.payloads == 1; },
                            absl::Seconds(30), &status));
      EXPECT_EQ(self->sink.abort_text, "rank 0 failed on purpose");
      ASSERT_TRUE(bootstrap.Set("ucxtest/heard", "1").ok());
      self->channel->Close(/*clean=*/false, Deadline::In(absl::Milliseconds(500)));
    }
  }));
}

// The window: rank 0 registers a buffer (twice: the second time a hit of the cache), describes
// it in-band, and rank 1 puts pieces into it, each followed by a signal; rank 0 waits for each
// signal and finds the piece in place (a signal never overtakes the puts before it). Then the
// buffer is unmapped and mapped again: its registration is dropped and made anew.
TEST_P(UcxChannelTest, WindowPutsLandBeforeTheirSignals) {
  testing::RunRanks(2, WithTls([](int rank, int size, Bootstrap& bootstrap) {
    auto self = MakeRank(bootstrap, rank, size);
    ASSERT_NE(self, nullptr);
    ASSERT_TRUE(self->connected.ok()) << self->connected;
    const int peer = 1 - rank;
    Window* window = self->channel->window(peer);
    ASSERT_NE(window, nullptr);
    const size_t piece = 200 << 10, pieces = 8, bytes = piece * pieces;
    if (rank == 0) {
      char* buffer = static_cast<char*>(
          mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      ASSERT_NE(buffer, MAP_FAILED);
      std::memset(buffer, 0, bytes);
      auto registration = window->Register(buffer, bytes, MemoryKind::kHost);
      ASSERT_TRUE(registration.ok()) << registration.status();
      auto again = window->Register(buffer + piece, piece, MemoryKind::kHost);
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(*again, *registration) << "a range inside a registered one is registered anew";
      RemoteBuffer remote{reinterpret_cast<uint64_t>(buffer), bytes, (*registration)->key};
      std::string text = remote.Serialize();
      std::vector<char> frame(text.begin(), text.end());
      Request send = MakeSend(1, 1, frame);
      ASSERT_TRUE(self->channel->Send(&send).ok());
      const uint64_t base = window->SignalValue(0);
      for (size_t k = 0; k < pieces; ++k) {
        ASSERT_TRUE(PollUntil(*self, [&] { return window->SignalValue(0) >= base + k + 1; }));
        for (size_t i = 0; i < piece; ++i) {
          if (buffer[k * piece + i] != Pattern(1, k, i)) {
            ADD_FAILURE() << "piece " << k << " differs at byte " << i << " when its signal came";
            break;
          }
        }
      }
      ASSERT_TRUE(bootstrap.Set("ucxtest/signalled", "1").ok());
      // Unmapped and mapped again at the same address: a new registration, not the cached one.
      ASSERT_EQ(munmap(buffer, bytes), 0);
      char* fresh = static_cast<char*>(mmap(buffer, bytes, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                                            -1, 0));
      ASSERT_EQ(fresh, buffer) << "could not map the same address again";
      auto renewed = window->Register(fresh, bytes, MemoryKind::kHost);
      ASSERT_TRUE(renewed.ok());
      EXPECT_NE(*renewed, *registration) << "the registration of unmapped memory was reused";
      munmap(fresh, bytes);
    } else {
      std::vector<char> text(4096);
      self->sink.Expect(0, 1, nullptr);
      ASSERT_TRUE(PollUntil(*self, [&] { return !self->sink.frames.empty(); }));
      const TestSink::Frame& frame = self->sink.frames[0];
      text.resize(frame.header.length);
      ASSERT_TRUE(self->channel->Claim(0, frame.deferred_id, text.data(), reinterpret_cast<void*>(1)).ok());
      ASSERT_TRUE(PollUntil(*self, [&] { return self->sink.payloads == 1; }));
      auto remote = RemoteBuffer::Parse(std::string(text.begin(), text.end()));
      ASSERT_TRUE(remote.ok()) << remote.status();
      std::vector<std::vector<char>> data(pieces, std::vector<char>(piece));
      std::vector<Request> puts(pieces);
      for (size_t k = 0; k < pieces; ++k) {
        for (size_t i = 0; i < piece; ++i) data[k][i] = Pattern(1, k, i);
        ASSERT_TRUE(window->Put(0, *remote, k * piece, data[k].data(), piece, &puts[k]).ok());
        ASSERT_TRUE(window->Signal(0, 0).ok());
      }
      ASSERT_TRUE(PollUntil(*self, [&] {
        for (const Request& put : puts) {
          if (!put.complete) return false;
        }
        return !self->channel->HasPendingSends(0);
      }));
      // Signals follow their flushes in progress: keep progressing until rank 0 has them all.
      int looks = 0;
      ASSERT_TRUE(PollUntil(*self, [&] {
        return ++looks % 64 == 0 && bootstrap.Get("ucxtest/signalled", absl::ZeroDuration()).ok();
      }));
    }
    Barrier(bootstrap, "done", size);
    self->channel->Close(/*clean=*/true, Deadline::In(absl::Seconds(5)));
  }));
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxChannelTest, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

}  // namespace
}  // namespace cohort
