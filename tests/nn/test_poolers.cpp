// MultiScaleRoIAlign's level assignment and scales (hand-derived from poolers.py), and its RoIPool
// mode against ops::roi_pool on the assigned levels.
#include <gtest/gtest.h>

#include "fpn/nn/poolers.hpp"

namespace fpn::nn {
namespace {

TEST(MultiScaleRoIAlign, InfersPowerOfTwoScalesFromTheHeight) {
  // 200 / 799 = 0.2503 -> log2 -1.998 -> 2^-2; P5 25 / 799 -> 2^-5.
  EXPECT_EQ(MultiScaleRoIAlign::infer_scale(200, 799), 0.25f);
  EXPECT_EQ(MultiScaleRoIAlign::infer_scale(25, 799), 1.0f / 32.0f);
  // A 6-pixel-high image padded to 32: P2 is 8 high, 8 / 6 rounds to scale 1 (torchvision's quirk).
  EXPECT_EQ(MultiScaleRoIAlign::infer_scale(8, 6), 1.0f);
}

TEST(MultiScaleRoIAlign, AssignsLevelsByTheFpnPaperRule) {
  // k = floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped to [2, 5], minus k_min = 2.
  const std::vector<float> boxes{0, 0, 224, 224,    // sqrt(area) 224 -> P4
                                 0, 0, 112, 112,    // 112 -> P3
                                 0, 0, 111, 112,    // just under 112 -> P2
                                 0, 0, 448, 448,    // 448 -> P5
                                 0, 0, 4000, 4000,  // clamped to P5
                                 0, 0, 1, 1};       // clamped to P2
  const std::array<float, 4> scales{0.25f, 0.125f, 0.0625f, 0.03125f};
  const auto levels = MultiScaleRoIAlign::assign_levels(
      TensorView<const float>(boxes.data(), Shape{6, 4}), scales);
  EXPECT_EQ(levels, (std::vector<std::int64_t>{2, 1, 0, 3, 3, 0}));
}

TEST(MultiScaleRoIAlign, MaxPoolingModePoolsEachBoxFromItsLevel) {
  FeaturePyramid pyramid;
  const std::int64_t sizes[] = {64, 32, 16, 8, 4};
  for (std::size_t l = 0; l < 5; ++l) {
    pyramid.push_back(l < 4 ? std::to_string(l) : "pool", 4 << l, Tensor<float>(Shape{1, 3, sizes[l], sizes[l]}));
    for (std::int64_t i = 0; i < pyramid.levels[l].numel(); ++i) {
      pyramid.levels[l].data()[i] = static_cast<float>((i * 37 + static_cast<std::int64_t>(l) * 11) % 101);
    }
  }
  const std::vector<float> boxes{10, 12, 60, 50, 0, 0, 250, 240, 30, 40, 33, 44};
  const TensorView<const float> view(boxes.data(), Shape{3, 4});
  const MultiScaleRoIAlign pooler(7, 2, RoiPooling::max);
  const Tensor<float> pooled = pooler.forward(pyramid, view, 256);  // image 256 high: P2 is 1/4
  std::array<float, 4> scales{};
  for (std::size_t l = 0; l < 4; ++l) scales[l] = MultiScaleRoIAlign::infer_scale(sizes[l], 256);
  const auto levels = MultiScaleRoIAlign::assign_levels(view, scales);
  for (std::int64_t r = 0; r < 3; ++r) {
    const auto level = static_cast<std::size_t>(levels[static_cast<std::size_t>(r)]);
    const std::vector<float> roi{0, boxes[4 * r], boxes[4 * r + 1], boxes[4 * r + 2], boxes[4 * r + 3]};
    const Tensor<float> expected = ops::roi_pool(
        pyramid.levels[level], TensorView<const float>(roi.data(), Shape{1, 5}),
        ops::RoiPoolParams{7, 7, scales[level]});
    for (std::int64_t i = 0; i < expected.numel(); ++i) {
      ASSERT_EQ(pooled.data()[r * expected.numel() + i], expected.data()[i]) << "roi " << r;
    }
  }
  // sqrt(50 * 38) = 43.6 -> P2; sqrt(250 * 240) = 244.9 -> floor(4.13) = P4; 3 x 4 -> P2.
  EXPECT_EQ(levels, (std::vector<std::int64_t>{0, 2, 0}));
}

}  // namespace
}  // namespace fpn::nn
