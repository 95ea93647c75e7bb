// examples/common/coco.hpp: torchvision's COCO category table, and COCO RLE masks as pycocotools
// writes them.
//
// The expected strings were derived by hand from pycocotools' common/maskApi.c (rleEncode and
// rleToString; Debian 12 has no pycocotools to run), as each case's comment shows, and checked
// once against a line-by-line Python transliteration of those two C functions. Reminders for
// reading the derivations: counts are column-major runs starting with 0s; each count is written
// in 5-bit groups, low first, a group + 32 when more follow, + 48 for the character ('0' is 48,
// 'P' is 80, '`' is 96); from the fourth count on, the difference to the count two before is
// written instead, and a negative difference stops once the rest is all sign bits.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/coco.hpp"

namespace fpn::examples {
namespace {

using Mask = std::vector<std::uint8_t>;

// One hand-made mask (row-major) with its counts and pycocotools string.
struct KnownMask {
  const char* name;
  std::int64_t height;
  std::int64_t width;
  Mask mask;
  RleCounts counts;
  std::string text;
};

Mask column(std::int64_t zeros_then, std::int64_t ones, std::int64_t zeros = 0) {
  Mask mask(static_cast<std::size_t>(zeros_then), 0);
  mask.insert(mask.end(), static_cast<std::size_t>(ones), 1);
  mask.insert(mask.end(), static_cast<std::size_t>(zeros), 0);
  return mask;
}

std::vector<KnownMask> known_masks() {
  std::vector<KnownMask> cases;
  // 0 1 1    column-major: 0 0 | 1 0 | 1 1 -> runs 2 zeros, 1 one, 1 zero, 2 ones.
  // 0 0 1    '2' '1' '1', then the fourth count as 2 - counts[1] = 1 -> '1'.
  cases.push_back({"two_by_three", 2, 3, {0, 1, 1, 0, 0, 1}, {2, 1, 1, 2}, "2111"});
  // The first pixel set: the leading run of zeros is empty.
  cases.push_back({"starts_with_one", 1, 3, {1, 1, 0}, {0, 2, 1}, "021"});
  // Empty and full masks.
  cases.push_back({"all_zero", 2, 2, {0, 0, 0, 0}, {4}, "4"});
  cases.push_back({"all_one", 3, 3, Mask(9, 1), {0, 9}, "09"});
  // A 100x1 column, rows 40..99 set. 40 = 8 + 1 * 32: group 8 with more -> 8 + 32 + 48 = 'X',
  // then 1 -> '1'. 60 = 28 + 1 * 32: group 28 has bit 16 set, so it continues while the rest (1)
  // is not -1 -> 28 + 32 + 48 = 'l', then '1'.
  cases.push_back({"two_digit_counts", 100, 1, column(40, 60), {40, 60}, "X1l1"});
  // A 10x3 mask whose column-major runs are 5 zeros, 20 ones, 1 zero, 4 ones. The fourth count is
  // written as 4 - 20 = -16: group -16 & 31 = 16, rest -16 >> 5 = -1, which ends a negative
  // group -> 16 + 48 = '@'. 20 has bit 16 set, so it needs a second group: 'd' (20 + 32 + 48), '0'.
  // clang-format off
  const Mask ten_by_three = {0, 1, 1,
                             0, 1, 1,
                             0, 1, 1,
                             0, 1, 1,
                             0, 1, 1,
                             1, 1, 0,
                             1, 1, 1,
                             1, 1, 1,
                             1, 1, 1,
                             1, 1, 1};
  // clang-format on
  cases.push_back({"negative_delta", 10, 3, ten_by_three, {5, 20, 1, 4}, "5d01@"});
  // A 400x1 column: 200 ones, 100 zeros, 100 ones. 200 = 8 + 6 * 32 -> 'X' '6'; 100 = 4 + 3 * 32
  // -> 'T' '3'; the fourth as 100 - 200 = -100: group 28 with rest -4 -> 28 + 32 + 48 = 'l',
  // group -4 & 31 = 28 with rest -1 -> 'L'.
  Mask bands = column(0, 200, 100);
  bands.insert(bands.end(), 100, 1);
  cases.push_back({"large_negative_delta", 400, 1, bands, {0, 200, 100, 100}, "0X6T3lL"});
  // 100000 = 0 + 32 * (21 + 32 * (1 + 32 * 3)): 'P' (0 + 32 + 48), 'e' (21 + 32 + 48; bit 16
  // set, rest 97 not -1), 'Q' (1 + 32 + 48), '3'. Then 3 -> '3', and 99990 - 100000 = -10:
  // group 22 with rest -1 -> 22 + 48 = 'F'.
  Mask long_runs(7, 0);
  long_runs.insert(long_runs.end(), 100000, 1);
  long_runs.insert(long_runs.end(), 3, 0);
  long_runs.insert(long_runs.end(), 99990, 1);
  cases.push_back({"long_runs", 200000, 1, long_runs, {7, 100000, 3, 99990}, "7PeQ33F"});
  return cases;
}

TEST(CocoRle, EncodesKnownMasksAsPycocotools) {
  for (const KnownMask& known : known_masks()) {
    SCOPED_TRACE(known.name);
    const RleCounts counts = rle_encode(known.mask, known.height, known.width);
    EXPECT_EQ(counts, known.counts);
    EXPECT_EQ(rle_to_string(counts), known.text);
    EXPECT_EQ(rle_from_string(known.text), known.counts);
    EXPECT_EQ(rle_decode(known.counts, known.height, known.width), known.mask);
  }
}

TEST(CocoRle, EncodesColumnMajor) {
  // The transpose of a mask has different runs: only the column-major reading is COCO's.
  // 1 1 0   columns: 1 0 | 1 0 | 0 1 -> 0 zeros, 1 one, 1 zero, 1 one, 2 zeros, 1 one.
  // 0 0 1
  EXPECT_EQ(rle_encode(Mask{1, 1, 0, 0, 0, 1}, 2, 3), (RleCounts{0, 1, 1, 1, 2, 1}));
  // Counts of a zero-sized mask, as rleEncode gives: one empty run.
  EXPECT_EQ(rle_encode(Mask{}, 0, 5), RleCounts{0});
  EXPECT_EQ(rle_to_string(RleCounts{0}), "0");
}

TEST(CocoRle, RoundTripsRandomMasks) {
  std::mt19937 random(20240511);
  for (int trial = 0; trial < 40; ++trial) {
    const std::int64_t height = 1 + static_cast<std::int64_t>(random() % 70);
    const std::int64_t width = 1 + static_cast<std::int64_t>(random() % 70);
    // Blobs (discs) on some trials, salt-and-pepper on others: long and short runs, positive and
    // negative deltas.
    Mask mask(static_cast<std::size_t>(height * width), 0);
    const bool blobs = trial % 2 == 0;
    const double cy = static_cast<double>(random() % height);
    const double cx = static_cast<double>(random() % width);
    const double radius = 1.0 + static_cast<double>(random() % 40);
    for (std::int64_t y = 0; y < height; ++y) {
      for (std::int64_t x = 0; x < width; ++x) {
        const double dy = static_cast<double>(y) - cy;
        const double dx = static_cast<double>(x) - cx;
        mask[static_cast<std::size_t>(y * width + x)] =
            blobs ? (dy * dy + dx * dx < radius * radius) : (random() % 3 == 0);
      }
    }
    SCOPED_TRACE(std::to_string(height) + "x" + std::to_string(width));
    const RleCounts counts = rle_encode(mask, height, width);
    std::uint64_t total = 0;
    for (std::uint32_t count : counts) total += count;
    EXPECT_EQ(total, static_cast<std::uint64_t>(height * width));
    const std::string text = rle_to_string(counts);
    for (char c : text) EXPECT_TRUE(c >= '0' && c <= 'o') << text;
    EXPECT_EQ(rle_from_string(text), counts);
    EXPECT_EQ(rle_decode(counts, height, width), mask);
  }
}

TEST(CocoRle, RefusesInconsistentInput) {
  try {
    rle_encode(Mask(5, 0), 2, 3);
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "rle_encode: a 2x3 mask needs 6 values, got 5");
  }
  try {
    rle_decode(RleCounts{2, 3}, 2, 3);
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "rle_decode: counts sum to 5, expected 2 * 3 = 6");
  }
  try {
    rle_from_string("2 1");
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "rle_from_string: character 1 (' ') is outside '0'..'o'");
  }
  try {
    rle_from_string("2X");  // 'X' promises another group
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "rle_from_string: the string ends inside count 1");
  }
  try {
    rle_from_string("@");  // -16 as a first count
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "rle_from_string: count 0 is -16, outside 0..2^32 - 1");
  }
}

TEST(CocoCategories, MatchesTorchvisionTable) {
  EXPECT_EQ(coco_category_names.size(), 91u);
  EXPECT_EQ(coco_category_name(0), "__background__");
  EXPECT_EQ(coco_category_name(1), "person");
  EXPECT_EQ(coco_category_name(3), "car");
  EXPECT_EQ(coco_category_name(12), "N/A");
  EXPECT_EQ(coco_category_name(13), "stop sign");
  EXPECT_EQ(coco_category_name(44), "bottle");
  EXPECT_EQ(coco_category_name(62), "chair");
  EXPECT_EQ(coco_category_name(72), "tv");
  EXPECT_EQ(coco_category_name(90), "toothbrush");
  EXPECT_EQ(coco_category_name(91), std::nullopt);
  EXPECT_EQ(coco_category_name(-1), std::nullopt);
  // COCO's 80 classes, the 10 ids in 1..90 that COCO left unused, and the background.
  int unused = 0;
  for (std::string_view name : coco_category_names) unused += name == "N/A";
  EXPECT_EQ(unused, 10);
}

}  // namespace
}  // namespace fpn::examples
