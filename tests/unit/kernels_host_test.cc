// The CUDA kernels' per-thread bodies (kernels/elementwise.h) run on the CPU: every simulated
// thread of a grid in turn, which computes what the grid computes because no two threads touch
// the same element. Checks the work split (head, 16-byte packs, unrolled grid-stride, tail), the
// element semantics of every (data type, reduce op) pair against reduce.cc, ReduceMany, average,
// cast and strided copy. Runs without CUDA; tests/gpu/kernels_test.cu checks the compiled kernels
// on a GPU against the same reference.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/reduce.h"
#include "kernels/elementwise.h"
#include "support/kernel_data.h"

namespace cohort {
// gtest prints parameters with these (found by argument lookup) instead of as byte dumps.
void PrintTo(DataType type, std::ostream* os) { *os << DataTypeName(type); }
void PrintTo(ReduceOp op, std::ostream* os) { *os << ReduceOpName(op); }
}  // namespace cohort

namespace cohort::cuda {
namespace {

using ::cohort::testing::CompareKernelElements;
using ::cohort::testing::KernelBytes;
using ::cohort::testing::kKernelOps;
using ::cohort::testing::kKernelTypes;
using ::cohort::testing::RandomKernelData;

// Grids as the launcher might make them: one thread, a partial warp, several blocks' worth.
constexpr size_t kThreadCounts[] = {1, 3, 64, 1000};
// 0 and 1, shorter than a pack, a pack and a tail, several unrolled steps with a tail.
constexpr size_t kSizes[] = {0, 1, 7, 16, 1000, 4099};

// A 64-byte aligned buffer addressed `offset` elements in, so tests pick the alignment.
// memcpy, except that 0 bytes from an empty vector (whose data() is null) is no call at all.
void CopyBytes(void* to, const void* from, size_t bytes) {
  if (bytes > 0) std::memcpy(to, from, bytes);
}

class Buffer {
 public:
  Buffer(size_t bytes, size_t offset_bytes)
      : storage_(static_cast<uint8_t*>(std::aligned_alloc(64, RoundUp(bytes + offset_bytes + 64)))),
        data_(storage_.get() + offset_bytes) {}
  uint8_t* data() const { return data_; }

 private:
  static size_t RoundUp(size_t bytes) { return (bytes + 63) / 64 * 64; }
  struct Free {
    void operator()(uint8_t* pointer) const { std::free(pointer); }
  };
  std::unique_ptr<uint8_t, Free> storage_;
  uint8_t* data_;
};

template <class Body, class Args>
void RunGrid(const Body& body, const Args& args, size_t threads) {
  for (size_t thread = 0; thread < threads; ++thread) body(args, thread, threads);
}

// Runs out = op(a, b) through ReduceThread over `threads` simulated threads.
void SimulateReduce(DataType type, ReduceOp op, void* out, const void* a, const void* b,
                    size_t count, size_t threads) {
  const bool served = VisitReduce(type, op, [&]<DataType kType, class Op>() {
    const ReduceArgs args = MakeReduceArgs<kType>(out, a, b, count);
    RunGrid([](const ReduceArgs& x, size_t t, size_t n) { ReduceThread<kType, Op>(x, t, n); }, args,
            threads);
  });
  ASSERT_TRUE(served) << DataTypeName(type) << " " << ReduceOpName(op);
}

TEST(KernelsHostTest, ServesExactlyTheCpuTablesPairs) {
  for (DataType type : kKernelTypes) {
    for (ReduceOp op : kKernelOps) {
      const bool served = VisitReduce(type, op, []<DataType, class>() {});
      EXPECT_EQ(served, CheckReduceSupported(type, op).ok())
          << DataTypeName(type) << " " << ReduceOpName(op);
    }
  }
}

TEST(KernelsHostTest, SplitPacksWhenPointersAgree) {
  alignas(16) float a[64];
  alignas(16) float b[64];
  const size_t four[] = {4, 4};
  const void* aligned[] = {a, b};
  Split split = SplitForPacks(aligned, four, 2, 30, 4);
  EXPECT_EQ(split.head, 0u);
  EXPECT_EQ(split.packs, 7u);
  EXPECT_EQ(split.edges(), 2u);
  EXPECT_EQ(split.EdgeIndex(0), 28u);
  EXPECT_EQ(split.EdgeIndex(1), 29u);
  // Both one element in: three scalar elements reach the boundary.
  const void* shifted[] = {a + 1, b + 1};
  split = SplitForPacks(shifted, four, 2, 30, 4);
  EXPECT_EQ(split.head, 3u);
  EXPECT_EQ(split.packs, 6u);
  EXPECT_EQ(split.EdgeIndex(2), 2u);
  EXPECT_EQ(split.EdgeIndex(3), 27u);
  // Disagreeing offsets: everything scalar.
  const void* mixed[] = {a, b + 1};
  split = SplitForPacks(mixed, four, 2, 30, 4);
  EXPECT_EQ(split.packs, 0u);
  EXPECT_EQ(split.edges(), 30u);
  // Not even element-aligned (a float at an odd byte address): scalar.
  const void* odd[] = {reinterpret_cast<const char*>(a) + 1, b};
  EXPECT_EQ(SplitForPacks(odd, four, 2, 30, 4).packs, 0u);
}

class KernelsReduceTest : public ::testing::TestWithParam<std::tuple<DataType, ReduceOp>> {};

// Out of place, in place (out == a, out == b), with all pointers aligned, all one element in
// (a scalar head), and with disagreeing alignments (all scalar), for every size and grid.
TEST_P(KernelsReduceTest, MatchesCpuKernels) {
  const auto [type, op] = GetParam();
  if (!CheckReduceSupported(type, op).ok()) GTEST_SKIP() << "not a supported pair";
  const ReduceFn cpu = GetReduceFn(type, op, ReduceIsa::kBaseline);
  ASSERT_NE(cpu, nullptr);
  const size_t size = DataTypeSize(type);
  std::mt19937_64 rng(static_cast<uint64_t>(type) * 131 + static_cast<uint64_t>(op));
  for (size_t count : kSizes) {
    const KernelBytes a = RandomKernelData(type, count, rng);
    const KernelBytes b = RandomKernelData(type, count, rng);
    KernelBytes expected(count * size);
    cpu(expected.data(), a.data(), b.data(), count);
    struct Offsets {
      size_t out, a, b;
    };
    for (const Offsets offsets : {Offsets{0, 0, 0}, Offsets{1, 1, 1}, Offsets{0, 1, 0}}) {
      for (size_t threads : kThreadCounts) {
        const std::string where = absl::StrCat("count ", count, ", ", threads, " threads, offsets ",
                                               offsets.out, "/", offsets.a, "/", offsets.b);
        Buffer out(count * size, offsets.out * size);
        Buffer in_a(count * size, offsets.a * size);
        Buffer in_b(count * size, offsets.b * size);
        CopyBytes(in_a.data(), a.data(), a.size());
        CopyBytes(in_b.data(), b.data(), b.size());
        SimulateReduce(type, op, out.data(), in_a.data(), in_b.data(), count, threads);
        EXPECT_EQ(CompareKernelElements(type, expected.data(), out.data(), count), "")
            << where << ", out of place";
        SimulateReduce(type, op, in_a.data(), in_a.data(), in_b.data(), count, threads);
        EXPECT_EQ(CompareKernelElements(type, expected.data(), in_a.data(), count), "")
            << where << ", out == a";
        CopyBytes(in_a.data(), a.data(), a.size());
        SimulateReduce(type, op, in_b.data(), in_a.data(), in_b.data(), count, threads);
        EXPECT_EQ(CompareKernelElements(type, expected.data(), in_b.data(), count), "")
            << where << ", out == b";
      }
    }
  }
}

// Three and five inputs (rounded once), the output being a separate buffer or the first input.
TEST_P(KernelsReduceTest, ReduceManyMatchesCpuKernels) {
  const auto [type, op] = GetParam();
  if (!CheckReduceSupported(type, op).ok()) GTEST_SKIP() << "not a supported pair";
  const ReduceManyFn cpu = GetReduceManyFn(type, op, ReduceIsa::kBaseline);
  const size_t size = DataTypeSize(type);
  std::mt19937_64 rng(static_cast<uint64_t>(type) * 7 + static_cast<uint64_t>(op));
  for (int num_inputs : {3, 5}) {
    for (size_t count : {size_t{1}, size_t{37}, size_t{4099}}) {
      std::vector<KernelBytes> data;
      std::vector<const void*> inputs;
      for (int k = 0; k < num_inputs; ++k) data.push_back(RandomKernelData(type, count, rng));
      for (const KernelBytes& input : data) inputs.push_back(input.data());
      KernelBytes expected(count * size);
      cpu(expected.data(), inputs.data(), num_inputs, count);
      for (size_t threads : {size_t{1}, size_t{64}}) {
        for (bool in_place : {false, true}) {
          std::vector<Buffer> buffers;
          std::vector<const void*> pointers;
          for (int k = 0; k < num_inputs; ++k) {
            buffers.emplace_back(count * size, 0);
            std::memcpy(buffers.back().data(), data[k].data(), data[k].size());
            pointers.push_back(buffers.back().data());
          }
          Buffer separate(count * size, 0);
          void* out = in_place ? buffers[0].data() : separate.data();
          VisitReduce(type, op, [&]<DataType kType, class Op>() {
            const ReduceManyArgs args =
                MakeReduceManyArgs<kType>(out, pointers.data(), num_inputs, count);
            RunGrid([](const ReduceManyArgs& x, size_t t,
                       size_t n) { ReduceManyThread<kType, Op>(x, t, n); },
                    args, threads);
          });
          EXPECT_EQ(CompareKernelElements(type, expected.data(), static_cast<uint8_t*>(out), count),
                    "")
              << num_inputs << " inputs, count " << count << ", " << threads << " threads"
              << (in_place ? ", out == inputs[0]" : "");
        }
      }
    }
  }
}

std::string PairName(const ::testing::TestParamInfo<std::tuple<DataType, ReduceOp>>& info) {
  return absl::StrCat(DataTypeName(std::get<0>(info.param)), "_",
                      ReduceOpName(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(AllPairs, KernelsReduceTest,
                         ::testing::Combine(::testing::ValuesIn(kKernelTypes),
                                            ::testing::ValuesIn(kKernelOps)),
                         PairName);

TEST(KernelsHostTest, ScaleMatchesCpuAverage) {
  std::mt19937_64 rng(5);
  for (DataType type : kKernelTypes) {
    if (type == DataType::kBool) continue;
    for (int64_t divisor : {int64_t{3}, int64_t{-1}, int64_t{0}, int64_t{7}, int64_t{-4}}) {
      for (size_t offset : {size_t{0}, size_t{1}}) {
        const size_t count = 1001;
        const KernelBytes data = RandomKernelData(type, count, rng);
        KernelBytes expected = data;
        ScaleForAverage(expected.data(), type, count, divisor, ReduceIsa::kBaseline);
        Buffer buffer(data.size(), offset * DataTypeSize(type));
        std::memcpy(buffer.data(), data.data(), data.size());
        VisitType(type, [&]<DataType kType>() {
          const ScaleArgs args = MakeScaleArgs<kType>(buffer.data(), count, divisor);
          RunGrid([](const ScaleArgs& x, size_t t, size_t n) { ScaleThread<kType>(x, t, n); }, args,
                  64);
        });
        EXPECT_EQ(CompareKernelElements(type, expected.data(), buffer.data(), count), "")
            << DataTypeName(type) << " / " << divisor << ", offset " << offset;
      }
    }
  }
}

// Every (to, from) pair on values both types hold (small integers, halves and quarters where the
// source is floating, negative only where both are signed), against LoadElement / StoreElement.
TEST(KernelsHostTest, CastMatchesElementConversions) {
  auto is_signed = [](DataType type) {
    return type != DataType::kUInt8 && type != DataType::kBool;
  };
  for (DataType from : kKernelTypes) {
    for (DataType to : kKernelTypes) {
      const size_t count = 531;
      Buffer in(count * DataTypeSize(from), DataTypeSize(from));  // one element in: a scalar head
      for (size_t i = 0; i < count; ++i) {
        double value = static_cast<double>(i % 100);
        if (from == DataType::kBool) value = i % 3 == 0 ? 0 : 1;
        if (IsFloatingPoint(from) && i % 4 == 1) value += 0.5;
        if (IsFloatingPoint(from) && i % 4 == 2) value += 0.25;
        if (is_signed(from) && is_signed(to) && i % 2 == 1) value = -value;
        StoreElement(in.data(), from, i, value);
      }
      KernelBytes expected(count * DataTypeSize(to));
      for (size_t i = 0; i < count; ++i) {
        StoreElement(expected.data(), to, i, LoadElement(in.data(), from, i));
      }
      for (size_t out_offset : {size_t{1}, size_t{0}}) {
        Buffer out(count * DataTypeSize(to), out_offset * DataTypeSize(to));
        VisitType(to, [&]<DataType kTo>() {
          VisitType(from, [&]<DataType kFrom>() {
            const CastArgs args = MakeCastArgs<kTo, kFrom>(out.data(), in.data(), count);
            RunGrid([](const CastArgs& x, size_t t, size_t n) { CastThread<kTo, kFrom>(x, t, n); },
                    args, 64);
          });
        });
        EXPECT_EQ(CompareKernelElements(to, expected.data(), out.data(), count), "")
            << DataTypeName(from) << " -> " << DataTypeName(to) << ", out offset " << out_offset;
      }
    }
  }
}

TEST(KernelsHostTest, MergeDimsJoinsContiguousDimensions) {
  CopyArgs args{};
  const int64_t sizes[] = {2, 1, 3, 4};
  const int64_t contiguous[] = {12, 12, 4, 1};
  ASSERT_TRUE(MergeDims(sizes, contiguous, contiguous, 4, args));
  EXPECT_EQ(args.dims, 1);
  EXPECT_EQ(args.sizes[0], 24);
  EXPECT_EQ(args.count, 24u);
  // A transposed 3 x 4 read into a contiguous 3 x 4: two dimensions remain.
  const int64_t matrix[] = {3, 4};
  const int64_t row_major[] = {4, 1};
  const int64_t column_major[] = {1, 3};
  ASSERT_TRUE(MergeDims(matrix, row_major, column_major, 2, args));
  EXPECT_EQ(args.dims, 2);
  EXPECT_EQ(args.out_strides[1], 1);
  EXPECT_EQ(args.in_strides[1], 3);
  const int64_t empty[] = {3, 0};
  ASSERT_TRUE(MergeDims(empty, row_major, row_major, 2, args));
  EXPECT_EQ(args.count, 0u);
}

// Copies between layouts (a transpose, a padded 3-d slice, a broadcast read with stride 0) for
// element sizes that take each word width, and 12-byte elements that become 3 words each.
TEST(KernelsHostTest, StridedCopyMatchesNaiveCopy) {
  struct Case {
    std::vector<int64_t> sizes, out_strides, in_strides;
    size_t in_elements, out_elements;
  };
  const Case cases[] = {
      {{3, 4}, {4, 1}, {1, 3}, 12, 12},              // transpose
      {{2, 3, 5}, {15, 5, 1}, {56, 8, 1}, 112, 30},  // padded rows and planes
      {{4, 6}, {6, 1}, {0, 1}, 6, 24},               // one row read four times
      {{5, 7}, {1, 5}, {7, 1}, 35, 35},              // transpose the other way
  };
  for (size_t element : {size_t{1}, size_t{2}, size_t{4}, size_t{8}, size_t{12}, size_t{16}}) {
    for (const Case& c : cases) {
      Buffer in(c.in_elements * element, 0);
      for (size_t i = 0; i < c.in_elements * element; ++i)
        in.data()[i] = static_cast<uint8_t>(i * 7 + 1);
      Buffer out(c.out_elements * element, 0);
      std::memset(out.data(), 0, c.out_elements * element);
      KernelBytes expected(c.out_elements * element, 0);
      const int dims = static_cast<int>(c.sizes.size());
      size_t total = 1;
      for (int64_t size : c.sizes) total *= static_cast<size_t>(size);
      for (size_t linear = 0; linear < total; ++linear) {
        size_t rest = linear;
        int64_t out_offset = 0;
        int64_t in_offset = 0;
        for (int d = dims - 1; d >= 0; --d) {
          const auto coordinate = static_cast<int64_t>(rest % c.sizes[d]);
          rest /= c.sizes[d];
          out_offset += coordinate * c.out_strides[d];
          in_offset += coordinate * c.in_strides[d];
        }
        std::memcpy(expected.data() + out_offset * element, in.data() + in_offset * element,
                    element);
      }
      CopyArgs args{};
      size_t word = 0;
      ASSERT_TRUE(PrepareStridedCopy(out.data(), c.out_strides.data(), in.data(),
                                     c.in_strides.data(), c.sizes.data(), dims, element, args,
                                     word));
      EXPECT_EQ(element % word, 0u);
      auto run = [&]<typename Word>() {
        RunGrid([](const CopyArgs& x, size_t t,
                   size_t n) { StridedCopyThread<Word, uint32_t>(x, t, n); },
                args, 37);
      };
      switch (word) {
        case 1:
          run.operator()<uint8_t>();
          break;
        case 2:
          run.operator()<uint16_t>();
          break;
        case 4:
          run.operator()<uint32_t>();
          break;
        case 8:
          run.operator()<uint64_t>();
          break;
        default:
          run.operator()<Word16>();
          break;
      }
      EXPECT_EQ(std::memcmp(expected.data(), out.data(), expected.size()), 0)
          << "element " << element << " bytes, sizes[0] " << c.sizes[0] << ", word " << word;
    }
  }
}

}  // namespace
}  // namespace cohort::cuda
