// Registered memory: the registration cache (reuse inside a registered range, least recently
// used eviction, invalidation when memory goes away, re-registration after it) and the in-band
// description of a peer's buffer.
#include "collectives/transport/window.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort {
namespace {

using ::testing::HasSubstr;

class CacheTest : public ::testing::Test {
 protected:
  RegistrationCache cache_{[this](uintptr_t base, size_t bytes, MemoryKind kind)
                               -> absl::StatusOr<std::shared_ptr<const Registration>> {
                             ++registered_;
                             if (fail_) return absl::UnavailableError("no more keys");
                             auto registration = std::make_shared<Registration>();
                             registration->base = base;
                             registration->bytes = bytes;
                             registration->kind = kind;
                             registration->key = "key" + std::to_string(registered_);
                             return registration;
                           },
                           /*capacity=*/2};
  int registered_ = 0;
  bool fail_ = false;
  std::vector<char> a_ = std::vector<char>(4096), b_ = std::vector<char>(4096),
                    c_ = std::vector<char>(4096);
};

TEST_F(CacheTest, ReusesARangeThatCoversTheBuffer) {
  auto whole = cache_.Get(a_.data(), 4096, MemoryKind::kHost);
  ASSERT_TRUE(whole.ok());
  auto inside = cache_.Get(a_.data() + 100, 1000, MemoryKind::kHost);
  ASSERT_TRUE(inside.ok());
  EXPECT_EQ(*inside, *whole);
  EXPECT_EQ(registered_, 1);
  EXPECT_EQ(cache_.hits(), 1u);
  // Past the registered end, or another kind of memory: a new registration.
  auto longer = cache_.Get(a_.data() + 100, 4096, MemoryKind::kHost);
  ASSERT_TRUE(longer.ok());
  EXPECT_NE((*longer)->key, (*whole)->key);
  auto device = cache_.Get(a_.data(), 10, MemoryKind::kCuda);
  ASSERT_TRUE(device.ok());
  EXPECT_EQ((*device)->kind, MemoryKind::kCuda);
  EXPECT_EQ(registered_, 3);
}

TEST_F(CacheTest, EvictsTheLeastRecentlyUsed) {
  ASSERT_TRUE(cache_.Get(a_.data(), 4096, MemoryKind::kHost).ok());
  ASSERT_TRUE(cache_.Get(b_.data(), 4096, MemoryKind::kHost).ok());
  ASSERT_TRUE(cache_.Get(a_.data(), 4096, MemoryKind::kHost).ok());  // a is now the most recent
  ASSERT_TRUE(cache_.Get(c_.data(), 4096, MemoryKind::kHost).ok());  // evicts b
  EXPECT_EQ(cache_.size(), 2u);
  EXPECT_EQ(cache_.evictions(), 1u);
  int before = registered_;
  ASSERT_TRUE(cache_.Get(a_.data(), 4096, MemoryKind::kHost).ok());
  EXPECT_EQ(registered_, before);  // still cached
  ASSERT_TRUE(cache_.Get(b_.data(), 4096, MemoryKind::kHost).ok());
  EXPECT_EQ(registered_, before + 1);  // had to be registered again
}

TEST_F(CacheTest, FreedMemoryIsRegisteredAnew) {
  auto first = cache_.Get(a_.data(), 4096, MemoryKind::kHost);
  ASSERT_TRUE(first.ok());
  std::shared_ptr<const Registration> held = *first;
  cache_.Invalidate(reinterpret_cast<uintptr_t>(a_.data()) + 10, 1);  // a range inside it went
  EXPECT_EQ(cache_.size(), 0u);
  auto second = cache_.Get(a_.data(), 4096, MemoryKind::kHost);
  ASSERT_TRUE(second.ok());
  EXPECT_NE((*second)->key, held->key);
  EXPECT_EQ(held->key, "key1");  // a holder keeps its registration alive
  // A range next to it, not overlapping, leaves it alone.
  cache_.Invalidate(reinterpret_cast<uintptr_t>(a_.data()) + 4096, 100);
  EXPECT_EQ(cache_.size(), 1u);
}

TEST_F(CacheTest, FailuresAreNotCached) {
  fail_ = true;
  EXPECT_FALSE(cache_.Get(a_.data(), 4096, MemoryKind::kHost).ok());
  fail_ = false;
  EXPECT_TRUE(cache_.Get(a_.data(), 4096, MemoryKind::kHost).ok());
  EXPECT_EQ(registered_, 2);
}

TEST(RemoteBuffer, RoundTripAndMalformed) {
  RemoteBuffer remote{0x7f0012345678, 1 << 20, std::string("\x00\x01\xfe", 3)};
  auto parsed = RemoteBuffer::Parse(remote.Serialize());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->address, remote.address);
  EXPECT_EQ(parsed->bytes, remote.bytes);
  EXPECT_EQ(parsed->key, remote.key);
  for (const char* text : {"", "1 2", "x 2 00", "1 2 0g", "1 2 abc"}) {
    auto bad = RemoteBuffer::Parse(text);
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("malformed window description"));
  }
}

}  // namespace
}  // namespace cohort
