#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "fpn/ops/box_coder.hpp"
#include "fpn/ops/boxes.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

Tensor<float> boxes_of(std::vector<float> values) {
  return Tensor<float>::from_span(Shape{static_cast<std::int64_t>(values.size() / 4), 4}, values);
}

// Index lists are stored as float32 in the fixture (exact below 2^24).
std::vector<std::int64_t> indices_of(const Tensor<float>& stored) {
  return {stored.span().begin(), stored.span().end()};
}

TEST(BoxOps, AreaAndIouMatchTorch) {
  const auto& file = fixture("ops_roi");
  const auto boxes1 = file.load_float("box_iou.boxes1");
  const auto boxes2 = file.load_float("box_iou.boxes2");
  EXPECT_TRUE(tensors_close(box_area(boxes1), file.load_float("box_area.output"), 1e-6));
  EXPECT_TRUE(tensors_close(box_iou(boxes1, boxes2), file.load_float("box_iou.output"), 1e-6));
}

TEST(BoxOps, IouByHand) {
  const auto iou = box_iou(boxes_of({0, 0, 2, 2, 10, 10, 11, 11}),
                           boxes_of({1, 1, 3, 3, 0, 0, 2, 2, 0, 0, 1, 1}));
  ASSERT_EQ(iou.shape(), (Shape{2, 3}));
  EXPECT_FLOAT_EQ(iou.at(0, 0), 1.0f / 7.0f);  // overlap 1, union 4 + 4 - 1
  EXPECT_FLOAT_EQ(iou.at(0, 1), 1.0f);
  EXPECT_FLOAT_EQ(iou.at(0, 2), 0.25f);  // contained
  EXPECT_FLOAT_EQ(iou.at(1, 0), 0.0f);   // disjoint
  EXPECT_EQ(box_area(boxes_of({1, 2, 4, 7})).at(0), 15.0f);
}

TEST(BoxOps, ClipMatchesTorchForAnyLeadingShape) {
  const auto& file = fixture("ops_roi");
  for (const std::string key : {"clip", "clip3"}) {
    SCOPED_TRACE(key);
    const auto size = file.load_float(key + ".params");
    const auto clipped =
        clip_boxes_to_image(file.load_float(key + ".boxes"), static_cast<std::int64_t>(size.at(0)),
                            static_cast<std::int64_t>(size.at(1)));
    EXPECT_TRUE(tensors_close(clipped, file.load_float(key + ".output"), 0.0));
  }
  // x to [0, width = 5], y to [0, height = 3].
  const auto clipped = clip_boxes_to_image(boxes_of({-1, -2, 7, 9}), 3, 5);
  EXPECT_EQ(std::vector<float>(clipped.span().begin(), clipped.span().end()),
            (std::vector<float>{0, 0, 5, 3}));
}

TEST(BoxOps, RemoveSmallBoxesMatchesTorch) {
  const auto& file = fixture("ops_roi");
  const auto boxes = file.load_float("remove_small.boxes");
  const int cases = std::stoi(file.metadata().at("remove_small.cases"));
  for (int index = 0; index < cases; ++index) {
    const std::string key = "remove_small." + std::to_string(index) + ".";
    SCOPED_TRACE(key);
    const double min_size = file.load_float(key + "params").at(0);
    EXPECT_EQ(remove_small_boxes(boxes, min_size), indices_of(file.load_float(key + "keep")));
  }
  // A width of float(0.7) = 0.69999998 passes min_size 0.7: torch compares in float32.
  EXPECT_EQ(remove_small_boxes(boxes_of({0, 0, 0.7f, 0.7f, 0, 0, 0.69f, 5}), 0.7),
            (std::vector<std::int64_t>{0}));
}

TEST(BoxOps, RejectsBadShapesWithClearMessages) {
  try {
    (void)box_iou(boxes_of({0, 0, 1, 1}), Tensor<float>(Shape{3, 5}));
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "box_iou: boxes2 must be [N, 4], got [3, 5]");
  }
  try {
    (void)box_area(Tensor<float>(Shape{4}));
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "box_area: boxes must be [N, 4], got [4]");
  }
  try {
    (void)clip_boxes_to_image(Tensor<float>(Shape{2, 3, 5}), 10, 10);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "clip_boxes_to_image: boxes must be [..., 4], got [2, 3, 5]");
  }
  try {
    (void)clip_boxes_to_image(boxes_of({0, 0, 1, 1}), -1, 10);
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(),
                 "clip_boxes_to_image: image size must be >= 0, got height -1 and width 10");
  }
  try {
    (void)remove_small_boxes(Tensor<float>(Shape{2, 4, 1}), 1.0);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "remove_small_boxes: boxes must be [N, 4], got [2, 4, 1]");
  }
}

TEST(BoxCoder, DecodeMatchesTorchIncludingClampedDeltas) {
  const auto& file = fixture("ops_roi");
  const int cases = std::stoi(file.metadata().at("decode.cases"));
  ASSERT_GE(cases, 3);
  for (int index = 0; index < cases; ++index) {
    const std::string key = "decode." + std::to_string(index) + ".";
    SCOPED_TRACE(key);
    const auto weights = file.load_float(key + "params");
    const BoxCoder coder{{weights.at(0), weights.at(1), weights.at(2), weights.at(3)}};
    const auto decoded =
        coder.decode(file.load_float(key + "rel_codes"), file.load_float(key + "boxes"));
    EXPECT_TRUE(tensors_close(decoded, file.load_float(key + "output"), 1e-5));
  }
}

TEST(BoxCoder, DecodeByHand) {
  const auto reference = boxes_of({10, 20, 30, 60});  // centre (20, 40), size 20 x 40
  const BoxCoder box_head{{10, 10, 5, 5}};
  // Zero deltas give the reference box back; dx = 10 (weighted 1) moves it by one width;
  // dw = 5 log 2 (weighted log 2) doubles the width about the centre.
  const std::vector<float> codes{0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 5 * std::log(2.0f), 0};
  const auto decoded = box_head.decode(Tensor<float>::from_span(Shape{1, 12}, codes), reference);
  const std::vector<float> expected{10, 20, 30, 60, 30, 20, 50, 60, 0, 20, 40, 60};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(decoded.span()[i], expected[i], 1e-4) << "at " << i;
  }
  // dh = 100 is clamped to log(1000 / 16): the height grows 62.5 times, not e^100.
  const auto clamped = BoxCoder{}.decode(boxes_of({0, 0, 0, 100}), reference);
  EXPECT_NEAR(clamped.at(0, 3) - clamped.at(0, 1), 40.0f * 62.5f, 1e-2);
}

TEST(BoxCoder, RejectsBadShapesWithClearMessages) {
  const BoxCoder coder;
  try {
    (void)coder.decode(Tensor<float>(Shape{3, 6}), Tensor<float>(Shape{3, 4}));
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "BoxCoder::decode: rel_codes must be [N, 4 * K], got [3, 6]");
  }
  try {
    (void)coder.decode(Tensor<float>(Shape{3, 8}), Tensor<float>(Shape{3, 5}));
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "BoxCoder::decode: boxes must be [N, 4], got [3, 5]");
  }
  try {
    (void)coder.decode(Tensor<float>(Shape{3, 8}), Tensor<float>(Shape{2, 4}));
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "BoxCoder::decode: rel_codes and boxes must have the same number of rows, got "
                 "[3, 8] and [2, 4]");
  }
}

}  // namespace
}  // namespace fpn::ops
