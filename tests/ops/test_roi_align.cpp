#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "fpn/ops/roi_align.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

// [1, 1, 4, 4] holding x + 10 y: bilinear interpolation reproduces it exactly, so a bin's
// average is the value at the mean of its sampling points.
Tensor<float> linear_map() {
  Tensor<float> map(Shape{1, 1, 4, 4});
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) map.at(0, 0, y, x) = static_cast<float>(x + 10 * y);
  }
  return map;
}

float align_one_bin(const Tensor<float>& features, std::vector<float> box, RoiAlignParams params) {
  const auto boxes = Tensor<float>::from_span(Shape{1, 5}, box);
  return roi_align(features, boxes, params).at(0, 0, 0, 0);
}

TEST(RoiAlign, MatchesTorchOnSeededCases) {
  const auto& file = fixture("ops_roi");
  const int cases = std::stoi(file.metadata().at("roi_align.cases"));
  ASSERT_GE(cases, 18);
  for (int index = 0; index < cases; ++index) {
    const std::string key = "roi_align." + std::to_string(index) + ".";
    SCOPED_TRACE(key);
    const auto params = file.load_float(key + "params");
    RoiAlignParams align{static_cast<std::int64_t>(params.at(0)),
                         static_cast<std::int64_t>(params.at(1)), params.at(2),
                         static_cast<std::int64_t>(params.at(3)), params.at(4) != 0.0f};
    // Both layouts, each against torch.
    for (const auto layout : {RoiAlignParams::Layout::planar, RoiAlignParams::Layout::channels_last}) {
      SCOPED_TRACE(layout == RoiAlignParams::Layout::planar ? "planar" : "channels_last");
      align.layout = layout;
      const auto output =
          roi_align(file.load_float(key + "features"), file.load_float(key + "boxes"), align);
      EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 1e-5));
    }
  }
}

// The layouts sum the same terms in the same order per channel: on many boxes over a small map
// (where automatic picks channels_last) they agree to float rounding of the products.
TEST(RoiAlign, ChannelsLastEqualsPlanarOnManyBoxes) {
  Tensor<float> features(Shape{2, 24, 9, 13});
  for (std::int64_t i = 0; i < features.numel(); ++i) {
    features.data()[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  }
  Tensor<float> boxes(Shape{300, 5});
  for (std::int64_t r = 0; r < 300; ++r) {
    const float x = static_cast<float>((r * 7) % 50), y = static_cast<float>((r * 11) % 30);
    const float w = 1.0f + static_cast<float>((r * 13) % 40), h = 0.5f + static_cast<float>((r * 5) % 30);
    const float values[5] = {static_cast<float>(r % 2), x - 4.0f, y - 3.0f, x + w, y + h};
    std::copy_n(values, 5, boxes.data() + 5 * r);
  }
  for (const std::int64_t sampling : {std::int64_t{2}, std::int64_t{-1}}) {
    for (const bool aligned : {false, true}) {
      RoiAlignParams params{7, 7, 0.25, sampling, aligned};
      params.layout = RoiAlignParams::Layout::planar;
      const Tensor<float> planar = roi_align(features, boxes, params);
      params.layout = RoiAlignParams::Layout::channels_last;
      const Tensor<float> channels_last = roi_align(features, boxes, params);
      params.layout = RoiAlignParams::Layout::automatic;
      const Tensor<float> automatic = roi_align(features, boxes, params);
      EXPECT_TRUE(tensors_close(channels_last, planar, 1e-6));
      EXPECT_TRUE(tensors_close(automatic, planar, 1e-6));
    }
  }
}

TEST(RoiAlign, SamplesAtBinCentresByHand) {
  const auto map = linear_map();
  // Legacy: ROI [0.5, 2.5]^2, two samples per side at 1.0 and 2.0, mean (1.5, 1.5).
  EXPECT_FLOAT_EQ(align_one_bin(map, {0, 0.5f, 0.5f, 2.5f, 2.5f}, {1, 1, 1.0, 2, false}), 16.5f);
  // Aligned: the same box shifted by -0.5 pixel, samples at 0.5 and 1.5, mean (1, 1).
  EXPECT_FLOAT_EQ(align_one_bin(map, {0, 0.5f, 0.5f, 2.5f, 2.5f}, {1, 1, 1.0, 2, true}), 11.0f);
  // spatial_scale maps image pixels to map pixels: the same ROI given at 4x.
  EXPECT_FLOAT_EQ(align_one_bin(map, {0, 2, 2, 10, 10}, {1, 1, 0.25, 2, false}), 16.5f);
  // Adaptive grid: ceil(3 / 1) = 3 samples per side at 1.5, 2.5 and 3.5, the last within the
  // outer half pixel and so clamped onto the border at 3.
  const float clamped_mean = (1.5f + 2.5f + 3.0f) / 3.0f;
  EXPECT_NEAR(align_one_bin(map, {0, 1, 1, 4, 4}, {1, 1, 1.0, 0, false}),
              clamped_mean + 10.0f * clamped_mean, 1e-5f);
}

TEST(RoiAlign, LegacyModeStretchesTinyRoisAlignedModeEmptiesThem) {
  const auto map = linear_map();
  // A zero-size ROI at (1, 1) becomes [1, 2]^2 in legacy mode: samples at 1.25 and 1.75.
  EXPECT_FLOAT_EQ(align_one_bin(map, {0, 1, 1, 1, 1}, {1, 1, 1.0, 2, false}), 16.5f);
  // Aligned, the adaptive grid of a zero-size ROI has no samples and the bin is 0.
  EXPECT_EQ(align_one_bin(map, {0, 1, 1, 1, 1}, {1, 1, 1.0, -1, true}), 0.0f);
}

TEST(RoiAlign, PointsBeyondOnePixelOutsideContributeNothing) {
  const Tensor<float> ones(Shape{1, 1, 3, 3}, 1.0f);
  // Within one pixel of the border, samples are clamped onto it (weights still sum to 1).
  EXPECT_FLOAT_EQ(align_one_bin(ones, {0, -0.4f, -0.4f, 0.4f, 0.4f}, {1, 1, 1.0, 2, true}), 1.0f);
  // Two of the four samples lie beyond x = -1 and count as zeros: the mean is 1/2.
  EXPECT_FLOAT_EQ(align_one_bin(ones, {0, -2.5f, 0, 0.5f, 2}, {1, 1, 1.0, 2, true}), 0.5f);
  // Entirely beyond the map.
  EXPECT_EQ(align_one_bin(ones, {0, 10, 10, 20, 20}, {2, 2, 1.0, 2, false}), 0.0f);
}

TEST(RoiAlign, PicksTheBatchImageAndKeepsRoiOrder) {
  Tensor<float> features(Shape{2, 2, 5, 5});
  for (std::int64_t c = 0; c < 2; ++c) {
    for (std::int64_t i = 0; i < 25; ++i) {
      features.data()[c * 25 + i] = 1.0f + static_cast<float>(c);
      features.data()[50 + c * 25 + i] = 10.0f + static_cast<float>(c);
    }
  }
  const std::vector<float> rois{1, 0, 0, 4, 4, 0, 1, 1, 3, 3, 1, 2, 0, 3, 1};
  const auto output = roi_align(features, Tensor<float>::from_span(Shape{3, 5}, rois),
                                RoiAlignParams{2, 3, 1.0, 2, false});
  ASSERT_EQ(output.shape(), (Shape{3, 2, 2, 3}));
  for (std::int64_t i = 0; i < 6; ++i) {
    EXPECT_FLOAT_EQ(output.data()[i], 10.0f);
    EXPECT_FLOAT_EQ(output.data()[6 + i], 11.0f);
    EXPECT_FLOAT_EQ(output.data()[12 + i], 1.0f);
    EXPECT_FLOAT_EQ(output.data()[18 + i], 2.0f);
    EXPECT_FLOAT_EQ(output.data()[24 + i], 10.0f);
    EXPECT_FLOAT_EQ(output.data()[30 + i], 11.0f);
  }
}

TEST(RoiAlign, DoubleAndEmptyInputs) {
  Tensor<double> features(Shape{1, 1, 4, 4});
  for (std::int64_t i = 0; i < 16; ++i)
    features.data()[i] = static_cast<double>(i % 4 + 10 * (i / 4));
  const std::vector<double> box{0, 0.5, 0.5, 2.5, 2.5};
  const auto output = roi_align<double>(features, Tensor<double>::from_span(Shape{1, 5}, box),
                                        RoiAlignParams{1, 1, 1.0, 2, false});
  EXPECT_DOUBLE_EQ(output.at(0, 0, 0, 0), 16.5);

  const auto none = roi_align(Tensor<float>(Shape{1, 3, 4, 4}), Tensor<float>(Shape{0, 5}),
                              RoiAlignParams{7, 7, 0.25, 2, false});
  EXPECT_EQ(none.shape(), (Shape{0, 3, 7, 7}));
}

TEST(RoiAlign, RejectsBadInputsWithClearMessages) {
  const Tensor<float> features(Shape{2, 3, 8, 8});
  const Tensor<float> one_box(Shape{1, 5});
  try {
    (void)roi_align(features, Tensor<float>(Shape{12, 4}), RoiAlignParams{});
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "roi_align: boxes must be [R, 5], got [12, 4]");
  }
  try {
    (void)roi_align(Tensor<float>(Shape{3, 8, 8}), one_box, RoiAlignParams{});
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "roi_align: features must be [N, C, H, W], got [3, 8, 8]");
  }
  try {
    (void)roi_align(Tensor<float>(Shape{1, 3, 0, 5}), one_box, RoiAlignParams{});
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "roi_align: features must be [N, C, H, W] with H, W > 0, got [1, 3, 0, 5]");
  }
  try {
    (void)roi_align(features, one_box, RoiAlignParams{0, 7, 1.0, 2, false});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "roi_align: output size must be positive, got 0 x 7");
  }
  try {
    (void)roi_align(features, one_box, RoiAlignParams{7, 7, -0.25, 2, false});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "roi_align: spatial_scale must be positive and finite, got -0.25");
  }
  const std::vector<float> rois{1, 0, 0, 4, 4, 2, 0, 0, 4, 4};
  try {
    (void)roi_align(features, Tensor<float>::from_span(Shape{2, 5}, rois), RoiAlignParams{});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "roi_align: boxes[1] has batch index 2, but features has 2 images");
  }
}

}  // namespace
}  // namespace fpn::ops
