#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "fpn/ops/nms.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using Indices = std::vector<std::int64_t>;

Tensor<float> boxes_of(std::vector<float> values) {
  return Tensor<float>::from_span(Shape{static_cast<std::int64_t>(values.size() / 4), 4}, values);
}

Tensor<float> scores_of(std::vector<float> values) {
  return Tensor<float>::from_span(Shape{static_cast<std::int64_t>(values.size())}, values);
}

// Index lists (and class ids) are stored as float32 in the fixture (exact below 2^24).
Indices indices_of(const Tensor<float>& stored) {
  return {stored.span().begin(), stored.span().end()};
}

double threshold_of(const std::string& key) {
  return std::stod(fixture("ops_roi").metadata().at(key + "iou_threshold"));
}

int case_count(const std::string& op) {
  return std::stoi(fixture("ops_roi").metadata().at(op + ".cases"));
}

TEST(Nms, KeepListsMatchTorch) {
  const auto& file = fixture("ops_roi");
  ASSERT_GE(case_count("nms"), 7);
  for (int index = 0; index < case_count("nms"); ++index) {
    const std::string key = "nms." + std::to_string(index) + ".";
    SCOPED_TRACE(key);
    EXPECT_EQ(
        nms(file.load_float(key + "boxes"), file.load_float(key + "scores"), threshold_of(key)),
        indices_of(file.load_float(key + "keep")));
  }
}

TEST(Nms, BatchedKeepListsMatchTorchOnBothPaths) {
  const auto& file = fixture("ops_roi");
  ASSERT_GE(case_count("batched_nms"), 6);
  bool saw_vanilla = false;
  bool saw_trick = false;
  for (int index = 0; index < case_count("batched_nms"); ++index) {
    const std::string key = "batched_nms." + std::to_string(index) + ".";
    SCOPED_TRACE(key);
    const auto boxes = file.load_float(key + "boxes");
    const Indices idxs = indices_of(file.load_float(key + "idxs"));
    const bool vanilla = boxes.numel() > detail::batched_nms_vanilla_above_elements;
    saw_vanilla |= vanilla;
    saw_trick |= !vanilla;
    EXPECT_EQ(batched_nms(boxes, file.load_float(key + "scores"), idxs, threshold_of(key)),
              indices_of(file.load_float(key + "keep")));
  }
  EXPECT_TRUE(saw_vanilla && saw_trick);
}

TEST(Nms, BatchedPathsAgreeExceptWhereTheCoordinateTrickLeaks) {
  const auto& file = fixture("ops_roi");
  for (int index = 0; index < 4; ++index) {
    const std::string key = "batched_nms." + std::to_string(index) + ".";
    SCOPED_TRACE(key);
    const auto boxes = file.load_float(key + "boxes");
    const auto scores = file.load_float(key + "scores");
    const Indices idxs = indices_of(file.load_float(key + "idxs"));
    EXPECT_EQ(detail::batched_nms_vanilla<float>(boxes, scores, idxs, threshold_of(key)),
              detail::batched_nms_coordinate_trick<float>(boxes, scores, idxs, threshold_of(key)));
  }
  // Class 1 is shifted by max + 1 = 11 on both axes, which moves [-10, -10, 0, 0] onto class 0's
  // box: the trick (what torch uses for few boxes) suppresses it across classes, vanilla does not.
  const auto boxes = boxes_of({0, 0, 10, 10, -10, -10, 0, 0, 2, 2, 8, 8});
  const auto scores = scores_of({0.9f, 0.8f, 0.7f});
  const Indices idxs{0, 1, 1};
  EXPECT_EQ(batched_nms(boxes, scores, idxs, 0.3), (Indices{0, 2}));
  EXPECT_EQ(detail::batched_nms_vanilla<float>(boxes, scores, idxs, 0.3), (Indices{0, 1, 2}));
}

TEST(Nms, SuppressesOnlyAboveTheThresholdComparedInDouble) {
  // IoU exactly 0.5 ([0, 4] vs [0, 2]) survives threshold 0.5; 3 / 10 in float is 0.3000000119,
  // above the double 0.3, so the second pair is suppressed at threshold 0.3 as in torch.
  const auto boxes = boxes_of({0, 0, 4, 1, 0, 0, 2, 1, 10, 0, 20, 1, 10, 0, 13, 1});
  const auto scores = scores_of({0.9f, 0.8f, 0.7f, 0.6f});
  EXPECT_EQ(nms(boxes, scores, 0.5), (Indices{0, 1, 2, 3}));
  EXPECT_EQ(nms(boxes, scores, 0.3), (Indices{0, 2}));
  EXPECT_EQ(nms(boxes, scores, 0.3000001), (Indices{0, 2, 3}));
}

TEST(Nms, EqualScoresVisitLowerIndexFirstAtAnySize) {
  // 40 copies of one box with one score (more than the 16 up to which torch's unstable sort is
  // stable by accident): the lowest index survives.
  std::vector<float> values;
  for (int i = 0; i < 40; ++i) values.insert(values.end(), {1, 1, 5, 5});
  const std::vector<float> equal(40, 0.5f);
  EXPECT_EQ(nms(boxes_of(values), scores_of(equal), 0.5), (Indices{0}));
  // Disjoint boxes with tied scores come out by decreasing score, then increasing index.
  std::vector<float> disjoint;
  std::vector<float> tied;
  for (int i = 0; i < 40; ++i) {
    disjoint.insert(disjoint.end(), {10.0f * i, 0, 10.0f * i + 5, 5});
    tied.push_back(i % 3 == 0 ? 0.25f : 0.75f);
  }
  Indices expected;
  for (int i = 0; i < 40; ++i) {
    if (i % 3 != 0) expected.push_back(i);
  }
  for (int i = 0; i < 40; i += 3) expected.push_back(i);
  EXPECT_EQ(nms(boxes_of(disjoint), scores_of(tied), 0.5), expected);
  EXPECT_EQ(batched_nms(boxes_of(disjoint), scores_of(tied), Indices(40, 0), 0.5), expected);
}

TEST(Nms, EmptyInputs) {
  EXPECT_TRUE(nms(Tensor<float>(Shape{0, 4}), Tensor<float>(Shape{0}), 0.5).empty());
  EXPECT_TRUE(batched_nms(Tensor<float>(Shape{0, 4}), Tensor<float>(Shape{0}), {}, 0.5).empty());
}

TEST(Nms, RejectsBadShapesWithClearMessages) {
  try {
    (void)nms(Tensor<float>(Shape{6, 5}), Tensor<float>(Shape{6}), 0.5);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "nms: boxes must be [N, 4], got [6, 5]");
  }
  try {
    (void)nms(Tensor<float>(Shape{6, 4}), Tensor<float>(Shape{6, 1}), 0.5);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "nms: scores must be [N], got [6, 1]");
  }
  try {
    (void)nms(Tensor<float>(Shape{6, 4}), Tensor<float>(Shape{5}), 0.5);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "nms: boxes and scores must have the same length, got [6, 4] and [5]");
  }
  try {
    (void)batched_nms(Tensor<float>(Shape{3, 4}), Tensor<float>(Shape{3}), Indices{0, 1}, 0.5);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "batched_nms: boxes and idxs must have the same length, got [3, 4] and [2]");
  }
}

}  // namespace
}  // namespace fpn::ops
