// The seed's segment-proposal network (FPN paper section 6.1) against PyTorch
// (tools/fpn_tools/seed_models.py, fixture tools/fixtures/seed.py, variant "segments"), stage by
// stage: the pyramid, the window MLPs' raw maps, the selected proposals and their masks pasted
// into the original image; then the API under misuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../support/detection_lists.hpp"
#include "../support/detections.hpp"
#include "../support/expect_error.hpp"
#include "../support/fixtures.hpp"
#include "fpn/models/seed.hpp"
#include "fpn/models/segment_proposal_network.hpp"
#include "fpn/nn/segment_proposals.hpp"

namespace fpn {
namespace {

using fpn::testing::match_detections;
using fpn::testing::MatchCriteria;
using fpn::testing::MatchReport;
using fpn::testing::our_list;
using fpn::testing::reference_list;

using SeedSegmentHead = nn::SegmentProposalHead<64>;

const io::SafeTensors& case_file() { return fpn::testing::fixture("seed_segments_landscape"); }
const io::SafeTensors& weights_file() {
  return fpn::testing::fixture("seed_model_segments");  // the fixture's copy of the weights
}
const SeedSegments& network() {
  static const SeedSegments net = SeedSegments::load(nn::WeightReader(weights_file()));
  return net;
}

constexpr int level_count = 5;
std::string level_name(int level) { return fpn::detail::numbered("p", level + 2); }

// The reference's pyramid with our names and strides: the later stages from PyTorch's own input.
nn::FeaturePyramid reference_pyramid(const nn::FeaturePyramid& ours) {
  nn::FeaturePyramid pyramid;
  for (int level = 0; level < level_count; ++level) {
    pyramid.push_back(ours.names[static_cast<std::size_t>(level)],
                      ours.strides[static_cast<std::size_t>(level)],
                      case_file().load_float("feature." + level_name(level)));
  }
  return pyramid;
}

// Proposal lists whose "label" is the group: a proposal must come from the same level and window.
std::vector<fpn::testing::ScoredBox> reference_proposals(const std::string& boxes) {
  return reference_list(case_file(), boxes, "scores", "groups");
}

MatchCriteria proposal_criteria() {
  MatchCriteria criteria;
  criteria.score_thresh = -1;  // no score threshold to tie at
  criteria.nms_thresh = 0.7;
  criteria.max_count = 1000;
  criteria.per_label_nms = false;  // one NMS over every level and window size
  return criteria;
}

// The pairs are in the same position where no near-tie swapped them.
std::size_t same_position(const MatchReport& report) {
  return static_cast<std::size_t>(
      std::count_if(report.pairs.begin(), report.pairs.end(),
                    [](const auto& pair) { return pair.first == pair.second; }));
}

TEST(SeedSegments, FeaturesMatchPyTorch) {
  const SeedSegments& net = network();
  std::vector<std::uint8_t> rgb;
  const nn::PreprocessedImage image =
      fpn::testing::fixture_image(case_file(), net.params().transform, rgb);
  EXPECT_EQ(net.params().transform.min_size, 320);
  EXPECT_EQ(net.params().transform.max_size, 512);
  const nn::FeaturePyramid pyramid = net.backbone().forward(image.tensor);
  // seed_models.SEGMENT_STRIDES, the nominal strides the windows are laid out at.
  EXPECT_EQ(pyramid.strides, (std::vector<std::int64_t>{4, 8, 16, 32, 64}));
  ASSERT_EQ(pyramid.size(), static_cast<std::size_t>(level_count));
  for (int level = 0; level < level_count; ++level) {
    SCOPED_TRACE(level_name(level));
    const Tensor<float> reference = case_file().load_float("feature." + level_name(level));
    const auto& ours = pyramid.levels[static_cast<std::size_t>(level)];
    EXPECT_TRUE(fpn::testing::tensors_close(ours, reference, 1e-4));
    std::cout << "[ features  ] " << level_name(level) << ": relative max error "
              << fpn::testing::relative_max_error(ours, reference) << "\n";
  }
}

TEST(SeedSegments, WindowMLPsMatchPyTorch) {
  const SeedSegments& net = network();
  for (int level = 0; level < level_count; ++level) {
    const Tensor<float> feature = case_file().load_float("feature." + level_name(level));
    for (std::size_t w = 0; w < SeedSegmentHead::num_windows; ++w) {
      const std::string suffix =
          level_name(level) + ".w" + std::to_string(SeedSegmentHead::window_sizes[w]);
      SCOPED_TRACE(suffix);
      const Tensor<float> head = net.head().forward_level(feature, w);
      const std::int64_t height = feature.dim(2), width = feature.dim(3), pixels = height * width;
      const TensorView<const float> objectness(head.data(), Shape{1, 1, height, width});
      const TensorView<const float> logits(head.data() + pixels, Shape{1, 196, height, width});
      const Tensor<float> reference_objectness = case_file().load_float("objectness." + suffix);
      const Tensor<float> reference_logits = case_file().load_float("mask_logits." + suffix);
      EXPECT_TRUE(fpn::testing::tensors_close(objectness, reference_objectness, 1e-4));
      EXPECT_TRUE(fpn::testing::tensors_close(logits, reference_logits, 1e-4));
      std::cout << "[ window mlp ] " << suffix << ": relative max error objectness "
                << fpn::testing::relative_max_error(objectness, reference_objectness) << ", masks "
                << fpn::testing::relative_max_error(logits, reference_logits) << "\n";
    }
  }
}

// The decoding from PyTorch's pyramid: boxes, scores and groups matched as proposals are (a
// near-tie in score at a top-k cut or in IoU at the NMS threshold may swap or replace one), and
// the matched proposals' windows and mask logits.
TEST(SeedSegments, SelectedSegmentsMatchPyTorch) {
  const SeedSegments& net = network();
  std::vector<std::uint8_t> rgb;
  const nn::PreprocessedImage image =
      fpn::testing::fixture_image(case_file(), net.params().transform, rgb);
  const nn::FeaturePyramid pyramid = reference_pyramid(net.backbone().forward(image.tensor));
  const nn::SegmentProposals proposals = net.propose(pyramid, image);

  const auto reference = reference_proposals("segment_boxes");
  ASSERT_EQ(reference.size(), 1000u);
  const MatchReport report =
      match_detections(reference, our_list(proposals.boxes, proposals.scores, proposals.groups),
                       proposal_criteria());
  EXPECT_TRUE(report.failures.empty()) << report.summary();
  EXPECT_GE(report.pairs.size(), reference.size() * 99 / 100) << report.summary();
  EXPECT_GE(same_position(report), reference.size() * 95 / 100);
  std::cout << "[ segments  ] " << report.pairs.size() << "/" << reference.size() << " matched, "
            << same_position(report) << " in the same position, " << report.ties.size()
            << " near-ties, " << report.failures.size() << " unexplained\n";

  const Tensor<float> windows = case_file().load_float("windows");
  const Tensor<float> logits = case_file().load_float("segment_mask_logits");
  const Tensor<float> reference_boxes = case_file().load_float("segment_boxes");
  const Tensor<float> reference_scores = case_file().load_float("scores");
  double worst_logit = 0, largest_logit = 0, worst_box = 0, worst_score = 0;
  for (const auto& [r, o] : report.pairs) {
    const auto ri = static_cast<std::int64_t>(r), oi = static_cast<std::int64_t>(o);
    for (std::int64_t c = 0; c < 4; ++c) {
      worst_box = std::max(worst_box,
                           double(std::abs(proposals.boxes.at(oi, c) - reference_boxes.at(ri, c))));
    }
    worst_score =
        std::max(worst_score, double(std::abs(proposals.scores.at(oi) - reference_scores.at(ri))));
    for (std::int64_t c = 0; c < 4; ++c) EXPECT_EQ(proposals.windows.at(oi, c), windows.at(ri, c));
    for (std::int64_t p = 0; p < 196; ++p) {
      const float expected = logits.data()[ri * 196 + p];
      worst_logit = std::max(
          worst_logit, double(std::abs(proposals.mask_logits.data()[oi * 196 + p] - expected)));
      largest_logit = std::max(largest_logit, double(std::abs(expected)));
    }
  }
  EXPECT_LE(worst_logit / largest_logit, 1e-4);
  std::cout << "[ segments  ] mask logits: relative max error " << worst_logit / largest_logit
            << "; boxes: max |difference| " << worst_box << " px; scores: " << worst_score << "\n";
}

// From 8-bit pixels to proposals in original-image pixels and their pasted masks.
TEST(SeedSegments, EndToEndMatchesPyTorch) {
  const SeedSegments& net = network();
  const Tensor<float> pixels = case_file().load_float("image");
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(pixels.numel()));
  for (std::int64_t i = 0; i < pixels.numel(); ++i)
    rgb[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(pixels.data()[i]);
  const std::int64_t height = pixels.dim(0), width = pixels.dim(1);
  const Segments segments = net.forward(nn::ImageView{rgb.data(), height, width});
  EXPECT_EQ(segments.image_height, height);
  EXPECT_EQ(segments.image_width, width);

  Tensor<float> boxes(Shape{static_cast<std::int64_t>(segments.items.size()), 4});
  Tensor<float> scores(Shape{static_cast<std::int64_t>(segments.items.size())});
  std::vector<std::int64_t> groups;
  for (std::size_t i = 0; i < segments.items.size(); ++i) {
    for (std::size_t c = 0; c < 4; ++c) boxes.at(i, c) = segments.items[i].box[c];
    scores.at(i) = segments.items[i].score;
    groups.push_back(segments.items[i].group);
  }
  const auto reference = reference_proposals("boxes");
  const MatchReport report =
      match_detections(reference, our_list(boxes, scores, groups), proposal_criteria());
  EXPECT_TRUE(report.failures.empty()) << report.summary();
  EXPECT_GE(report.pairs.size(), reference.size() * 99 / 100) << report.summary();
  std::cout << "[ end to end ] " << report.pairs.size() << "/" << reference.size() << " matched, "
            << same_position(report) << " in the same position, " << report.ties.size()
            << " near-ties, " << report.failures.size() << " unexplained\n";

  const Tensor<float> windows = case_file().load_float("windows_original");
  const Tensor<float> masks = case_file().load_float("masks");  // [100, H, W] 0/1
  ASSERT_EQ(masks.dim(1), height);
  ASSERT_EQ(masks.dim(2), width);
  double worst_iou = 1.0, worst_fraction = 0.0;
  std::size_t compared = 0;
  for (const auto& [r, o] : report.pairs) {
    for (std::size_t c = 0; c < 4; ++c) {
      EXPECT_EQ(segments.items[o].window[c],
                windows.at(static_cast<std::int64_t>(r), static_cast<std::int64_t>(c)));
    }
    if (r >= static_cast<std::size_t>(masks.dim(0))) continue;
    const std::vector<std::uint8_t> ours = segments.mask(o).binary(height, width);
    std::int64_t intersection = 0, union_count = 0, differing = 0;
    for (std::int64_t p = 0; p < height * width; ++p) {
      const bool a = masks.data()[static_cast<std::int64_t>(r) * height * width + p] > 0.5f;
      const bool b = ours[static_cast<std::size_t>(p)] != 0;
      intersection += a && b;
      union_count += a || b;
      differing += a != b;
    }
    const double iou = union_count == 0 ? 1.0 : double(intersection) / double(union_count);
    const double fraction = double(differing) / double(height * width);
    worst_iou = std::min(worst_iou, iou);
    worst_fraction = std::max(worst_fraction, fraction);
    EXPECT_GE(iou, 0.98) << "mask of " << fpn::testing::describe(reference[r]);
    EXPECT_LE(fraction, 1e-3) << "mask of " << fpn::testing::describe(reference[r]);
    ++compared;
  }
  EXPECT_GE(compared, 95u);
  std::cout << "[ masks     ] worst mask IoU " << worst_iou
            << ", worst fraction of differing pixels " << worst_fraction << " over " << compared
            << " masks\n";
}

// ---- misuse ------------------------------------------------------------------------------------

using fpn::testing::expect_error;

TEST(SeedSegmentsMisuse, ParamsAreRangeChecked) {
  const auto with = [](auto edit) {
    nn::SegmentProposalParams params;
    edit(params);
    return params;
  };
  expect_error<ArgumentError>([&] { nn::check_params(with([](auto& p) { p.pre_nms_top_n = 0; })); },
                              "SegmentProposalParams.pre_nms_top_n must be an integer >= 1, got 0");
  expect_error<ArgumentError>(
      [&] { nn::check_params(with([](auto& p) { p.post_nms_top_n = -3; })); },
      "SegmentProposalParams.post_nms_top_n must be an integer >= 1, got -3");
  expect_error<ArgumentError>(
      [&] { nn::check_params(with([](auto& p) { p.nms_thresh = std::nanf(""); })); },
      "SegmentProposalParams.nms_thresh must be a number in [0, 1], got nan");
  expect_error<ArgumentError>(
      [&] { nn::check_params(with([](auto& p) { p.min_size = -1.0f; })); },
      "SegmentProposalParams.min_size must be a finite number >= 0, got -1");

  // Through the network's set_params, and nothing changes when one field is wrong.
  SeedSegments net = network();
  SegmentNetworkParams params = net.params();
  params.segments.nms_thresh = 1.5f;
  expect_error<ArgumentError>(
      [&] { net.set_params(params); },
      "SegmentNetworkParams.segments.nms_thresh must be a number in [0, 1], got 1.5");
  EXPECT_EQ(net.params().segments.nms_thresh, 0.7f);
  EXPECT_EQ(net.head().params().nms_thresh, 0.7f);
  params = net.params();
  params.transform.min_size = 0;
  expect_error<ArgumentError>(
      [&] { net.set_params(params); },
      "SegmentNetworkParams.transform.min_size must be an integer in [1, 8192], got 0");
  // And at load.
  SegmentNetworkParams bad;
  bad.segments.post_nms_top_n = 0;
  expect_error<ArgumentError>(
      [&] { (void)SeedSegments::load(nn::WeightReader(weights_file()), bad); },
      "SegmentNetworkParams.segments.post_nms_top_n must be an integer >= 1, got 0");
}

TEST(SeedSegmentsMisuse, PyramidOfAnotherWidthOrShapeIsRefused) {
  const SeedSegmentHead& head = network().head();
  nn::FeaturePyramid narrow;
  narrow.push_back("0", 4, Tensor<float>(Shape{1, 32, 8, 8}));
  expect_error<ShapeError>(
      [&] { (void)head.forward(narrow, 32, 32); },
      "SegmentProposalHead::forward: level 0 must be [1, 64, H, W] (one image; run "
      "a batch image by image), got [1, 32, 8, 8]");
  nn::FeaturePyramid batch;
  batch.push_back("0", 4, Tensor<float>(Shape{2, 64, 8, 8}));
  expect_error<ShapeError>(
      [&] { (void)head.forward(batch, 32, 32); },
      "SegmentProposalHead::forward: level 0 must be [1, 64, H, W] (one image; run "
      "a batch image by image), got [2, 64, 8, 8]");
  expect_error<ArgumentError>([&] { (void)head.forward(nn::FeaturePyramid{}, 32, 32); },
                              "SegmentProposalHead::forward: the pyramid has no levels");
  nn::FeaturePyramid good;
  good.push_back("0", 4, Tensor<float>(Shape{1, 64, 8, 8}));
  expect_error<ArgumentError>(
      [&] { (void)head.forward(good, 0, 32); },
      "SegmentProposalHead::forward: the image size must be >= 1, got 0x32");
  nn::FeaturePyramid no_stride = good;
  no_stride.strides[0] = 0;
  expect_error<ArgumentError>(
      [&] { (void)head.forward(no_stride, 32, 32); },
      "SegmentProposalHead::forward: level 0 has stride 0, expected one in [1, 65536]");
  nn::FeaturePyramid unnamed = good;
  unnamed.names.clear();
  expect_error<ArgumentError>(
      [&] { (void)head.forward(unnamed, 32, 32); },
      "SegmentProposalHead::forward: a pyramid needs one name and one stride per level, got 1 "
      "levels, 0 names and 1 strides");
  expect_error<ArgumentError>(
      [&] { (void)head.forward_level(good.levels[0], 2); },
      "SegmentProposalHead::forward_level: window index must be < 2, got 2");
  // A zero map proposes (every mask logit is its bias): the shapes are right and the order holds.
  const nn::SegmentProposals proposals = head.forward(good, 32, 32);
  EXPECT_EQ(proposals.mask_logits.dim(1), 14);
  for (std::int64_t i = 1; i < proposals.scores.dim(0); ++i) {
    EXPECT_GE(proposals.scores.at(i - 1), proposals.scores.at(i));
  }
}

TEST(SeedSegmentsMisuse, StridesOtherThanTheFilesAreRefused) {
  const SeedSegments& net = network();
  std::vector<std::uint8_t> rgb(64 * 64 * 3, 128);
  const nn::PreprocessedImage image =
      nn::preprocess(nn::ImageView{rgb.data(), 64, 64}, net.params().transform);
  nn::FeaturePyramid pyramid = net.backbone().forward(image.tensor);
  pyramid.strides.back() = 128;
  expect_error<WeightError>(
      [&] { (void)net.propose(pyramid, image); },
      "SegmentProposalNetwork::propose: the head was trained on levels of strides [4, 8, 16, 32, "
      "64] (the file's \"strides\" metadata), the pyramid's are [4, 8, 16, 32, 128]");
}

TEST(SeedSegmentsMisuse, MasksAreBoundsChecked) {
  const SeedSegments& net = network();
  std::vector<std::uint8_t> rgb(48 * 64 * 3, 200);
  const Segments segments = net.forward(nn::ImageView{rgb.data(), 48, 64});
  const std::size_t count = segments.items.size();
  expect_error<ArgumentError>([&] { (void)segments.mask(count); },
                              "Segments::mask: index must be < " + std::to_string(count) +
                                  " with one M x M mask per segment, got index " +
                                  std::to_string(count) + " and masks [" + std::to_string(count) +
                                  ", 14, 14]");
  expect_error<ArgumentError>(
      [&] {
        (void)nn::paste_segment_mask(nullptr, 14, {0, 0, 1, 1}, 0, 10);
      },
      "paste_segment_mask: the mask side and the image size must be >= 1, got side 14 and image "
      "0x10");
  // A window beyond the image's bottom-right corner pastes nothing, and binary() takes it.
  std::vector<float> logits(196, 5.0f);
  const PastedMask outside =
      nn::paste_segment_mask(logits.data(), 14, {100, 100, 140, 140}, 48, 64);
  EXPECT_EQ(outside.width * outside.height, 0);
  const std::vector<std::uint8_t> empty = outside.binary(48, 64);
  EXPECT_EQ(std::count(empty.begin(), empty.end(), std::uint8_t{1}), 0);
}

// Adds a tensor name the network does not read to a file's list.
class WithExtraTensor final : public nn::WeightSource {
 public:
  explicit WithExtraTensor(const io::SafeTensors& file) : inner_(file) {}
  Tensor<float> load(const std::string& name, const Shape& expected) const override {
    return inner_.load(name, expected);
  }
  bool contains(const std::string& name) const override { return inner_.contains(name); }
  std::optional<std::string> metadata(const std::string& key) const override {
    return inner_.metadata(key);
  }
  std::string describe() const override { return "extra"; }
  std::optional<std::vector<std::string>> names() const override {
    auto names = inner_.names();
    names->push_back("segment_head.window9.hidden.weight");
    return names;
  }

 private:
  nn::SafeTensorsSource inner_;
};

TEST(SeedSegmentsMisuse, WeightsLoadStrictly) {
  const nn::WeightReader extra(std::make_shared<WithExtraTensor>(weights_file()));
  expect_error<WeightError>(
      [&] { (void)SeedSegments::load(extra); },
      "extra: 1 tensor not read by seed_segments "
      "(\"segment_head.window9.hidden.weight\"): weights of another architecture? "
      "(allow_unused skips them)");
  EXPECT_NO_THROW((void)SeedSegments::load(extra, nn::LoadOptions{.allow_unused = true}));
  // An RPN file is refused by its arch, and without that check by its tensors: no segment head.
  const std::string rpn_file = std::string(FPN_SOURCE_DIR) + "/examples/data/seed/fpn.safetensors";
  expect_error<WeightError>([&] { (void)SeedSegments::load(rpn_file); },
                            "safetensors: '" + rpn_file +
                                "' is for seed_fpn (its \"arch\" metadata), not seed_segments");
  try {
    (void)SeedSegments::load(rpn_file, nn::LoadOptions{.check_arch = false});
    ADD_FAILURE() << "an RPN file loaded as a segment network";
  } catch (const WeightError& error) {
    EXPECT_NE(std::string(error.what()).find("segment_head.window5.hidden.weight"),
              std::string::npos)
        << error.what();
  }
  // A head of other window sizes does not find its tensors.
  EXPECT_THROW((void)(nn::SegmentProposalHead<64, 128, 14, nn::WindowSizes<3>>::load(
                   nn::WeightReader(weights_file()).child("segment_head"))),
               WeightError);
}

}  // namespace
}  // namespace fpn
