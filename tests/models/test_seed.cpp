// The FPN paper's recall experiment as composed types (models/seed.hpp) against their PyTorch
// references (tools/fpn_tools/seed_models.py) on the trained seed models, stage by stage
// (tools/fixtures/seed.py): the neck's levels, the proposals in the resized image, and the whole
// network from 8-bit pixels to proposals in the original image.
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "../support/detection_lists.hpp"
#include "../support/detections.hpp"
#include "../support/fixtures.hpp"
#include "fpn/core/detail/json.hpp"
#include "fpn/models/seed.hpp"

namespace fpn {
namespace {

using fpn::testing::match_detections;
using fpn::testing::MatchCriteria;
using fpn::testing::our_list;
using fpn::testing::reference_list;

io::SafeTensors open_fixture(const std::string& file) {
  return io::SafeTensors::open(std::string(FPN_FIXTURE_DIR) + "/" + file);
}

std::vector<std::string> level_names(const io::SafeTensors& weights) {
  std::vector<std::string> names;
  detail::JsonReader reader(weights.metadata().at("levels"), "levels");
  reader.begin_array();
  while (reader.next_item()) names.push_back(reader.read_string());
  reader.finish();
  return names;
}

// Proposals against the reference's: every difference explained as a near-tie at a cut (per-level
// top-k, NMS at 0.7, the top-1000), and rare, as the torchvision detector tests ask.
// equal_scores: the pathway without laterals makes maps of repeated values (nearest-upsampled
// from above), so several locations share a logit exactly; which of them torch.topk and NMS keep
// is the order of equal scores, which torch leaves unspecified. Those count as ties, and what NMS
// keeps differently around them (a different box of the tie suppresses different neighbours) is
// bounded at 1% of the proposals.
void check_proposals(const char* what, const io::SafeTensors& f, const char* boxes_name,
                     const char* scores_name, const nn::Proposals& proposals, bool equal_scores) {
  SCOPED_TRACE(what);
  const auto reference = reference_list(f, boxes_name, scores_name, "");
  MatchCriteria criteria;
  criteria.score_thresh = -1;
  criteria.nms_thresh = 0.7;
  criteria.max_count = 1000;
  criteria.per_label_nms = false;
  criteria.equal_score_ties = equal_scores;
  const auto report = match_detections(reference, our_list(proposals.boxes, proposals.scores, {}), criteria);
  EXPECT_GE(report.pairs.size(), reference.size() * 99 / 100) << report.summary();
  EXPECT_GE(reference.size(), 100U) << "too few proposals to test anything";
  EXPECT_LE(report.failures.size(), equal_scores ? reference.size() / 100 : 0U) << report.summary();
  std::cout << "[ " << what << " ] " << report.pairs.size() << "/" << reference.size()
            << " matched, " << report.ties.size() << " near-ties, " << report.failures.size()
            << " unexplained\n";
}

template <typename Network>
void check_variant(const std::string& variant, const std::string& case_name,
                   std::size_t expected_levels, bool equal_scores = false) {
  const io::SafeTensors f = open_fixture("seed_" + variant + "_" + case_name + ".safetensors");
  const io::SafeTensors weights_file = open_fixture(f.metadata().at("weights"));
  // Loading checks that the type reads every tensor of the file and nothing else: the ablated
  // pathways have no laterals or output convs where torchvision's module has nn.Identity.
  const Network net = Network::load(nn::WeightReader(weights_file));
  EXPECT_EQ(net.params().transform.min_size, std::stoll(f.metadata().at("min_size")));
  EXPECT_EQ(net.params().transform.max_size, std::stoll(f.metadata().at("max_size")));

  std::vector<std::uint8_t> rgb;
  const nn::PreprocessedImage image = fpn::testing::fixture_image(f, net.params().transform, rgb);
  ASSERT_FALSE(::testing::Test::HasFailure());

  const nn::FeaturePyramid pyramid = net.backbone().forward(image.tensor);
  const std::vector<std::string> names = level_names(weights_file);
  ASSERT_EQ(pyramid.size(), expected_levels);
  ASSERT_EQ(names.size(), expected_levels);
  for (std::size_t level = 0; level < names.size(); ++level) {
    SCOPED_TRACE(names[level]);
    const Tensor<float> reference = f.load_float("feature." + names[level]);
    EXPECT_TRUE(fpn::testing::tensors_close(pyramid.levels[level], reference, 1e-4));
    std::cout << "[ features  ] " << variant << " " << case_name << " " << names[level]
              << ": relative max error "
              << fpn::testing::relative_max_error(pyramid.levels[level], reference) << "\n";
  }

  check_proposals("proposals", f, "proposals", "proposal_scores", net.propose(pyramid, image),
                  equal_scores);
  const nn::ImageView view{rgb.data(), image.original_height, image.original_width};
  check_proposals("whole network", f, "boxes", "proposal_scores", net.propose(view), equal_scores);
}

TEST(SeedProposals, FPNLandscapeMatchesReference) { check_variant<SeedFPN>("fpn", "landscape", 5); }
TEST(SeedProposals, FPNPortraitMatchesReference) { check_variant<SeedFPN>("fpn", "portrait", 5); }
TEST(SeedProposals, C4LandscapeMatchesReference) { check_variant<SeedC4>("c4", "landscape", 1); }
TEST(SeedProposals, C4PortraitMatchesReference) { check_variant<SeedC4>("c4", "portrait", 1); }
TEST(SeedProposals, P2LandscapeMatchesReference) { check_variant<SeedP2>("p2", "landscape", 1); }
TEST(SeedProposals, P2PortraitMatchesReference) { check_variant<SeedP2>("p2", "portrait", 1); }
TEST(SeedProposals, TopDownNoLateralLandscapeMatchesReference) {
  check_variant<SeedTopDownNoLateral>("topdown_no_lateral", "landscape", 5, true);
}
TEST(SeedProposals, TopDownNoLateralPortraitMatchesReference) {
  check_variant<SeedTopDownNoLateral>("topdown_no_lateral", "portrait", 5, true);
}
TEST(SeedProposals, LateralNoTopDownLandscapeMatchesReference) {
  check_variant<SeedLateralNoTopDown>("lateral_no_topdown", "landscape", 5);
}
TEST(SeedProposals, LateralNoTopDownPortraitMatchesReference) {
  check_variant<SeedLateralNoTopDown>("lateral_no_topdown", "portrait", 5);
}

// The composition's shapes, from the types alone.
static_assert(SeedFPNBackbone::num_levels == 5);
static_assert(SeedC4Backbone::num_levels == 1 && SeedC4Backbone::used_stages == 3);
static_assert(SeedP2Backbone::num_levels == 1);
static_assert(SeedTopDownNoLateralBackbone::num_levels == 5);

TEST(SeedProposals, TheVariantsPyramidsAreNamedAndStridedAsTheirStages) {
  const io::SafeTensors f = open_fixture("seed_c4_landscape.safetensors");
  const Tensor<float> tensor = f.load_float("tensor");
  const io::SafeTensors c4 = open_fixture("seed_model_c4.safetensors");
  const nn::FeaturePyramid one = SeedC4Backbone::load(nn::WeightReader(c4), nn::LoadOptions{.check_arch = false})
                                     .forward(tensor);
  ASSERT_EQ(one.size(), 1U);
  EXPECT_EQ(one.names[0], "0");
  EXPECT_EQ(one.strides[0], 16);
  EXPECT_EQ(one.levels[0].dim(2), (tensor.dim(2) + 15) / 16);
  const io::SafeTensors p2 = open_fixture("seed_model_p2.safetensors");
  const nn::FeaturePyramid finest = SeedP2Backbone::load(nn::WeightReader(p2), nn::LoadOptions{.check_arch = false})
                                        .forward(tensor);
  ASSERT_EQ(finest.size(), 1U);
  EXPECT_EQ(finest.strides[0], 4);
  EXPECT_EQ(finest.levels[0].dim(3), tensor.dim(3) / 4);
}

TEST(SeedProposals, AFileOfAnotherVariantIsRefused) {
  const io::SafeTensors fpn_file = open_fixture("seed_model_fpn.safetensors");
  const nn::WeightReader reader(fpn_file);
  EXPECT_THROW(SeedC4::load(reader), WeightError);  // its "arch" is seed_fpn
  // Without the arch check the tensors still decide: C4 reads no layer4, no P2, P3 laterals...
  EXPECT_THROW(SeedC4::load(reader, nn::LoadOptions{.check_arch = false}), WeightError);
  // ... and the pathway without laterals finds three it does not read.
  EXPECT_THROW(SeedTopDownNoLateral::load(reader, nn::LoadOptions{.check_arch = false}), WeightError);
  const io::SafeTensors no_lateral = open_fixture("seed_model_topdown_no_lateral.safetensors");
  EXPECT_THROW(SeedFPN::load(nn::WeightReader(no_lateral), nn::LoadOptions{.check_arch = false}), WeightError);
}

TEST(SeedProposals, AnAbsentConnectionOrStageIsAnErrorNotUndefined) {
  const io::SafeTensors file = open_fixture("seed_model_topdown_no_lateral.safetensors");
  const auto net = SeedTopDownNoLateral::load(nn::WeightReader(file));
  const auto& neck = net.backbone().neck();
  EXPECT_THROW((void)neck.lateral(0), ArgumentError);
  EXPECT_NO_THROW((void)neck.lateral(3));
  // A level beyond the four inputs, and a map that is not one image where no lateral stands.
  EXPECT_THROW((void)neck.lateral(4), ArgumentError);
  EXPECT_THROW((void)neck.output(4), ArgumentError);
  const Tensor<float> c2(Shape{1, 16, 8, 8});
  EXPECT_THROW((void)neck.lateral_from(4, c2), ArgumentError);
  EXPECT_THROW((void)neck.lateral_from(0, Tensor<float>(Shape{16, 8, 8})), ShapeError);
  const Tensor<float> zeros = neck.lateral_from(0, c2);
  EXPECT_EQ(zeros.shape(), Shape({1, 64, 8, 8}));
  const io::SafeTensors p2_file = open_fixture("seed_model_p2.safetensors");
  const auto p2 = SeedP2::load(nn::WeightReader(p2_file));
  EXPECT_THROW((void)p2.backbone().neck().output(1), ArgumentError);
  const io::SafeTensors c4_file = open_fixture("seed_model_c4.safetensors");
  const auto c4 = SeedC4::load(nn::WeightReader(c4_file));
  const Tensor<float> map(Shape{1, 64, 4, 4});
  EXPECT_THROW((void)c4.backbone().body().forward_stage(3, map), ArgumentError);
}

TEST(SeedProposals, BadParamsAreRefusedBeforeAnythingChanges) {
  const io::SafeTensors file = open_fixture("seed_model_fpn.safetensors");
  auto net = SeedFPN::load(nn::WeightReader(file));
  EXPECT_EQ(net.params().rpn.pre_nms_top_n, 1000);
  EXPECT_EQ(net.anchors().sizes.size(), 5U);
  EXPECT_FLOAT_EQ(net.anchors().sizes[0][0], 16.0f);
  ProposalParams bad = net.params();
  bad.rpn.nms_thresh = 1.5f;
  EXPECT_THROW(net.set_params(bad), ArgumentError);
  bad = net.params();
  bad.transform.min_size = 0;
  EXPECT_THROW(net.set_params(bad), ArgumentError);
  EXPECT_EQ(net.params().transform.min_size, 320);
  EXPECT_FLOAT_EQ(net.params().rpn.nms_thresh, 0.7f);
}

}  // namespace
}  // namespace fpn
