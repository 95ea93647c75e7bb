#include "fpn/core/tensor.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <thread>
#include <vector>

namespace fpn {
namespace {

TEST(Shape, CountsElementsAndPrints) {
  const Shape shape{2, 3, 4, 5};
  EXPECT_EQ(shape.rank(), 4u);
  EXPECT_EQ(shape.numel(), 120);
  EXPECT_EQ(shape.str(), "[2, 3, 4, 5]");
  EXPECT_EQ(Shape({0, 7}).numel(), 0);
}

TEST(Shape, RejectsNegativeAndOverflow) {
  try {
    Shape{2, -1};
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "Shape: dimensions must be >= 0, got [2, -1]");
  }
  EXPECT_THROW((Shape{1LL << 40, 1LL << 40}), ShapeError);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6, 7}), ShapeError);
}

TEST(Tensor, ZeroFilledAlignedAndIndexedRowMajor) {
  Tensor<float> tensor(Shape{1, 2, 3, 4});
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(tensor.data()) % 64, 0u);
  for (float value : tensor.span()) EXPECT_EQ(value, 0.0f);
  tensor.at(0, 1, 2, 3) = 7.0f;
  EXPECT_EQ(tensor.data()[1 * 12 + 2 * 4 + 3], 7.0f);
}

TEST(Tensor, CopiesAreDeepMovesAreCheap) {
  Tensor<float> a(Shape{2, 2}, 1.5f);
  Tensor<float> b = a;
  b.at(0, 0) = 9.0f;
  EXPECT_EQ(a.at(0, 0), 1.5f);
  const float* storage = b.data();
  Tensor<float> c = std::move(b);
  EXPECT_EQ(c.data(), storage);
  EXPECT_EQ(c.at(0, 0), 9.0f);
}

// Large tensors take whole 2 MiB pages, carved on 64 KiB boundaries (detail::aligned_allocate);
// small ones 64-byte alignment.
// Under ASan, freeing either with the other's alignment is reported, so the moves and
// assignments below between the two kinds check that each storage keeps its own deleter.
TEST(Tensor, LargeStorageTakesWholeHugePagesAndKeepsValueSemantics) {
  const Shape large{3, 1024, 1024};  // 12 MiB
  Tensor<float> big(large, 2.5f);
#if defined(__linux__) && !defined(FPN_NO_HUGE_PAGES)
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(big.data()) % detail::pool_granularity, 0u);
#endif
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(big.data()) % detail::tensor_alignment, 0u);
  big.data()[large.numel() - 1] = -1.0f;
  Tensor<float> copy = big;
  EXPECT_NE(copy.data(), big.data());
  EXPECT_EQ(copy.data()[0], 2.5f);
  EXPECT_EQ(copy.data()[large.numel() - 1], -1.0f);
  Tensor<float> small(Shape{4}, 1.0f);
  small = std::move(copy);  // the small storage freed with its alignment
  EXPECT_EQ(small.numel(), large.numel());
  copy = Tensor<float>(Shape{2}, 3.0f);  // a moved-from tensor takes a small storage again
  EXPECT_EQ(copy.data()[1], 3.0f);
  big = copy;  // the huge-page storage freed with its alignment
  EXPECT_EQ(big.numel(), 2);
  // Just below the threshold: not whole huge pages (carved in 64 KiB steps), 64-byte aligned.
  Tensor<std::uint8_t> bytes(Shape{static_cast<std::int64_t>(detail::huge_page_min_bytes) - 1});
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(bytes.data()) % detail::tensor_alignment, 0u);
  EXPECT_EQ(bytes.data()[detail::huge_page_min_bytes - 2], 0);
}

#if defined(__linux__) && !defined(FPN_NO_HUGE_PAGES) && !defined(FPN_NO_BLOCK_CACHE)
// Large and mid-sized tensors are carved from huge-page regions (detail::HugeBlockCache): a freed
// tensor's range goes back to its region, merged with free neighbours; a new tensor takes the
// smallest free range that holds it; one that finds none maps a fresh region, after returning every
// region with nothing in use; release_cached_memory() returns every free page.
TEST(Tensor, TensorsAreCarvedFromFreedRegionsBestFitAndMerged) {
  auto& cache = detail::HugeBlockCache::instance();
  release_cached_memory();
  ASSERT_EQ(cache.cached_bytes(), 0u);
  constexpr std::int64_t mib = (1 << 20) / 4;  // floats in a MiB
  constexpr std::size_t mib_bytes = std::size_t{1} << 20;
  const auto at = [](const Tensor<float>& t) { return reinterpret_cast<std::uintptr_t>(t.data()); };
  std::uintptr_t ten = 0, six = 0;
  {
    const Tensor<float> map(Shape{10 * mib});  // a fresh region of five huge pages
    ten = at(map);
    EXPECT_EQ(ten % detail::huge_page_bytes, 0u);
  }
  EXPECT_EQ(cache.cached_bytes(), 10 * mib_bytes);
  {
    const auto a = Tensor<float>::uninitialized(Shape{4 * mib});    // whole pages: 4 MiB
    const auto b = Tensor<float>::uninitialized(Shape{mib + 1});    // mid-sized: 1 MiB + 64 KiB
    EXPECT_EQ(at(a), ten);                                          // both from the freed region
    EXPECT_EQ(at(b), ten + 4 * mib_bytes);
    EXPECT_EQ(cache.cached_bytes(), 10 * mib_bytes - 4 * mib_bytes - mib_bytes - 64 * 1024);
    const Tensor<float> zeros(Shape{6 * mib});  // no free range holds 6 MiB: a fresh region
    six = at(zeros);
    EXPECT_TRUE(six < ten || six >= ten + 10 * mib_bytes);
    EXPECT_EQ(zeros.data()[6 * mib - 1], 0.0f);  // zero-filled, as any tensor
  }
  EXPECT_EQ(cache.cached_bytes(), 16 * mib_bytes);  // both regions whole again
  {
    const auto c = Tensor<float>::uninitialized(Shape{5 * mib});  // 6 MiB: the smaller region
    EXPECT_EQ(at(c), six);
    const auto d = Tensor<float>::uninitialized(Shape{10 * mib});  // the other, merged whole
    EXPECT_EQ(at(d), ten);
    EXPECT_EQ(cache.cached_bytes(), 0u);
  }
  {
    // 16 MiB fits no free range: both regions (nothing in use) go back before it is mapped.
    Tensor<float> larger = Tensor<float>::uninitialized(Shape{16 * mib});
    EXPECT_EQ(cache.cached_bytes(), 0u);
    std::fill_n(larger.data(), larger.numel(), 7.0f);
  }
  EXPECT_EQ(cache.cached_bytes(), 16 * mib_bytes);
  {
    // Freed lower first: the upper range merges with the one below it (and the one above).
    std::optional<Tensor<float>> low(std::in_place, Shape{mib}), high(std::in_place, Shape{mib});
    const Tensor<float> keeper(Shape{mib});  // keeps the region in use
    const std::uintptr_t base = at(*low);
    ASSERT_EQ(at(*high), base + mib_bytes);
    ASSERT_EQ(at(keeper), base + 2 * mib_bytes);
    low.reset();
    high.reset();
    EXPECT_EQ(cache.cached_bytes(), 15 * mib_bytes);
    // Best fit: the 2 MiB below the keeper, one range again, not the 13 MiB above it.
    const auto two = Tensor<float>::uninitialized(Shape{2 * mib});
    EXPECT_EQ(at(two), base);
  }
  EXPECT_EQ(cache.cached_bytes(), 16 * mib_bytes);
  {
    const Tensor<float> kept(Shape{mib}, 2.5f);  // keeps the 16 MiB region in use
    release_cached_memory();  // the region stays; its free pages go back to the system
    EXPECT_EQ(kept.data()[mib - 1], 2.5f);
    const auto reused = Tensor<float>::uninitialized(Shape{4 * mib});  // from the returned pages:
    EXPECT_EQ(reused.data()[0], 0.0f);                                  // fresh, not the 7s
    EXPECT_EQ(reused.data()[4 * mib - 1], 0.0f);
  }
  release_cached_memory();
  EXPECT_EQ(cache.cached_bytes(), 0u);
}

// Giving the pool a range it did not give out, or one twice, aborts in every build instead of
// corrupting it.
TEST(TensorDeathTest, GivingBackForeignOrFreedMemoryAborts) {
  auto& cache = detail::HugeBlockCache::instance();
  constexpr std::size_t range = detail::pool_granularity;
  void* const first = cache.take(range);
  void* const second = cache.take(range);
  cache.give(first, range);
  const char* const message = "given back twice, or was not taken from fpn's pool";
  EXPECT_DEATH(cache.give(first, range), message);
  std::vector<unsigned char> foreign(range);
  EXPECT_DEATH(cache.give(foreign.data(), range), message);
  cache.give(second, range);
}

#if defined(FPN_ASAN)
// The pool keeps freed tensors' pages mapped, so under AddressSanitizer it poisons them: a read
// through a dangling pointer is still reported (large and mid-sized tensors alike).
TEST(TensorDeathTest, AReadOfAFreedPooledTensorIsReportedUnderAddressSanitizer) {
  for (const std::int64_t count : {std::int64_t{300000}, std::int64_t{3000000}}) {
    const float* dangling = nullptr;
    {
      const Tensor<float> freed(Shape{count});
      dangling = freed.data();
    }
    EXPECT_DEATH(std::printf("%f\n", static_cast<double>(*static_cast<const volatile float*>(dangling + 10))),
                 "use-after-poison");
  }
}
#endif

TEST(Tensor, AnArenaCarvesMidSizedTensorsOutOfSharedSlabsUntilTheLastIsFreed) {
  auto& cache = detail::HugeBlockCache::instance();
  release_cached_memory();
  constexpr std::int64_t kib = 1024 / 4;  // floats in a KiB
  std::optional<detail::SlabArena> arena(std::in_place);
  std::optional<Tensor<float>> a, b, c, small, large, kept;
  {
    const detail::SlabArenaScope scope(&*arena);
    a.emplace(Shape{1000 * kib});            // 1000 KiB, then 3900 KiB: the first slab
    b.emplace(Shape{3900 * kib + 3});        // (3 floats more: rounded up to 64 bytes)
    c.emplace(Shape{3500 * kib});            // 3500 KiB: no room left in it, a second slab
    small.emplace(Shape{16 * kib});          // below 64 KiB: the heap, as without an arena
    large.emplace(Shape{5 * 1024 * kib});    // 5 MiB: a huge-page block of its own
    kept.emplace(Shape{2000 * kib});         // first fit: back in the first slab, after b
  }
  const Tensor<float> outside(Shape{1000 * kib});  // no arena bound: not in a slab
  const auto at = [](const Tensor<float>& t) { return reinterpret_cast<std::uintptr_t>(t.data()); };
  EXPECT_EQ(at(*a) % detail::pool_granularity, 0u);  // a slab is carved from a region
  EXPECT_EQ(at(*b), at(*a) + 1000 * 1024);
  EXPECT_EQ(at(*kept), at(*b) + 3900 * 1024 + 64);
  EXPECT_EQ(at(*c) % detail::pool_granularity, 0u);
  EXPECT_NE(at(*c), at(*a));
  for (const Tensor<float>* t : {static_cast<const Tensor<float>*>(&*small), &outside}) {
    const bool in_a_slab = (at(*t) >= at(*a) && at(*t) < at(*a) + detail::SlabArena::slab_bytes) ||
                           (at(*t) >= at(*c) && at(*t) < at(*c) + detail::SlabArena::slab_bytes);
    EXPECT_FALSE(in_a_slab);
  }
  EXPECT_EQ(c->data()[0], 0.0f);  // zero-filled as any tensor
  EXPECT_EQ(c->data()[c->numel() - 1], 0.0f);
  // Each slab goes back when its last tensor (or the arena's reference) is gone, in any order.
  large.reset();
  const std::size_t before = cache.cached_bytes();
  // The 5 MiB block in whole huge pages, and the rest of the 2 MiB region `outside` (1000 KiB,
  // carved in 64 KiB steps) was carved from.
  EXPECT_EQ(before, (std::size_t{6} << 20) + (std::size_t{1} << 20));
  std::fill_n(kept->data(), kept->numel(), 2.5f);
  arena.reset();
  c.reset();
  EXPECT_EQ(cache.cached_bytes(), before + detail::SlabArena::slab_bytes);  // the second slab
  a.reset();
  b.reset();
  EXPECT_EQ(cache.cached_bytes(), before + detail::SlabArena::slab_bytes);  // `kept` holds the first
  EXPECT_EQ(kept->data()[kept->numel() - 1], 2.5f);
  kept.reset();
  EXPECT_EQ(cache.cached_bytes(), before + 2 * detail::SlabArena::slab_bytes);
  release_cached_memory();
}

TEST(Tensor, ThreadsSharingAnArenaGetDisjointStorage) {
  detail::SlabArena arena;
  constexpr int per_thread = 40;
  std::vector<Tensor<float>> made[2];
  auto work = [&](int which) {
    const detail::SlabArenaScope scope(&arena);
    for (int i = 0; i < per_thread; ++i) {
      made[which].push_back(Tensor<float>::uninitialized(Shape{(100 + 37 * i) * 256}));
      made[which].back().fill(static_cast<float>(which * 1000 + i));
    }
  };
  std::thread other(work, 1);
  work(0);
  other.join();
  for (int which = 0; which < 2; ++which) {
    for (int i = 0; i < per_thread; ++i) {
      const Tensor<float>& t = made[which][static_cast<std::size_t>(i)];
      ASSERT_EQ(t.data()[0], static_cast<float>(which * 1000 + i));
      ASSERT_EQ(t.data()[t.numel() - 1], static_cast<float>(which * 1000 + i));
    }
  }
}
#endif

TEST(Tensor, ViewsBorrowAndSliceTheBatch) {
  Tensor<float> tensor(Shape{3, 2, 2});
  for (int i = 0; i < 12; ++i) tensor.data()[i] = static_cast<float>(i);
  TensorView<const float> view = tensor;
  const auto second = view.slice0(1);
  EXPECT_EQ(second.shape(), (Shape{1, 2, 2}));
  EXPECT_EQ(second.at(0, 1, 0), 6.0f);
  EXPECT_EQ(second.data(), tensor.data() + 4);
}

TEST(Tensor, ReshapeKeepsElementsAndChecksCount) {
  Tensor<float> tensor(Shape{2, 6}, 3.0f);
  const float* storage = tensor.data();
  Tensor<float> reshaped = std::move(tensor).reshaped(Shape{3, 4});
  EXPECT_EQ(reshaped.data(), storage);
  try {
    (void)std::move(reshaped).reshaped(Shape{5});
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "Tensor::reshaped: element counts must match, got [3, 4] and [5]");
  }
}

TEST(Tensor, FromSpanChecksCount) {
  const std::vector<float> values{1, 2, 3};
  EXPECT_EQ(Tensor<float>::from_span(Shape{3}, values).at(2), 3.0f);
  EXPECT_THROW(Tensor<float>::from_span(Shape{2, 2}, values), ShapeError);
}

}  // namespace
}  // namespace fpn
