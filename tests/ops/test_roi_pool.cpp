#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "fpn/ops/roi_pool.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

// [1, 1, 4, 4] holding 0 .. 15 in row-major order.
Tensor<float> arange_map() {
  Tensor<float> map(Shape{1, 1, 4, 4});
  for (std::int64_t i = 0; i < 16; ++i) map.data()[i] = static_cast<float>(i);
  return map;
}

Tensor<float> pool(const Tensor<float>& features, std::vector<float> box, RoiPoolParams params) {
  return roi_pool(features, Tensor<float>::from_span(Shape{1, 5}, box), params);
}

TEST(RoiPool, MatchesTorchOnSeededCases) {
  const auto& file = fixture("ops_roi");
  const int cases = std::stoi(file.metadata().at("roi_pool.cases"));
  ASSERT_GE(cases, 5);
  for (int index = 0; index < cases; ++index) {
    const std::string key = "roi_pool." + std::to_string(index) + ".";
    SCOPED_TRACE(key);
    const auto params = file.load_float(key + "params");
    const RoiPoolParams pooling{static_cast<std::int64_t>(params.at(0)),
                                static_cast<std::int64_t>(params.at(1)), params.at(2)};
    const auto output =
        roi_pool(file.load_float(key + "features"), file.load_float(key + "boxes"), pooling);
    EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 1e-5));
  }
}

TEST(RoiPool, MaxOfEachBinByHand) {
  // Corners are inclusive: [0, 3] spans 4 pixels, so each of the 2 x 2 bins is a 2 x 2 quadrant.
  const auto quadrants = pool(arange_map(), {0, 0, 0, 3, 3}, {2, 2, 1.0});
  EXPECT_EQ(quadrants.span()[0], 5.0f);
  EXPECT_EQ(quadrants.span()[1], 7.0f);
  EXPECT_EQ(quadrants.span()[2], 13.0f);
  EXPECT_EQ(quadrants.span()[3], 15.0f);
  // round() goes half away from zero: [0.5, 2.5] -> pixels 1 .. 3 (banker's rounding gives 0 .. 2).
  EXPECT_EQ(pool(arange_map(), {0, 0.5f, 0.5f, 2.5f, 2.5f}, {1, 1, 1.0}).span()[0], 15.0f);
  // The same ROI in image pixels at spatial_scale 1/4.
  EXPECT_EQ(pool(arange_map(), {0, 2, 2, 10, 10}, {1, 1, 0.25}).span()[0], 15.0f);
  // A malformed ROI (x2 < x1) becomes the single pixel at its start.
  EXPECT_EQ(pool(arange_map(), {0, 2, 2, 0, 0}, {1, 1, 1.0}).span()[0], 10.0f);
}

TEST(RoiPool, EmptyBinsAreZeroEvenForNegativeMaps) {
  const Tensor<float> negative(Shape{1, 2, 4, 4}, -5.0f);
  const auto outside = pool(negative, {0, 10, 10, 20, 20}, {2, 2, 1.0});
  for (float value : outside.span()) EXPECT_EQ(value, 0.0f);
  const auto inside = pool(negative, {0, 0, 0, 3, 3}, {3, 3, 1.0});
  for (float value : inside.span()) EXPECT_EQ(value, -5.0f);
}

TEST(RoiPool, RejectsBadInputsWithClearMessages) {
  const Tensor<float> features(Shape{1, 3, 8, 8});
  try {
    (void)roi_pool(features, Tensor<float>(Shape{3, 4}), RoiPoolParams{});
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "roi_pool: boxes must be [R, 5], got [3, 4]");
  }
  try {
    (void)roi_pool(features, Tensor<float>(Shape{1, 5}), RoiPoolParams{7, -1, 1.0});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "roi_pool: output size must be positive, got 7 x -1");
  }
  try {
    (void)pool(features, {-1, 0, 0, 4, 4}, RoiPoolParams{});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "roi_pool: boxes[0] has batch index -1, but features has 1 image");
  }
}

}  // namespace
}  // namespace fpn::ops
