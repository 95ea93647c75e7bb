// torchvision's MobileNetV3-Large FPN detectors (fasterrcnn_mobilenet_v3_large_fpn and its 320
// variant) against torchvision, stage by stage, on seeded weights whose every BatchNorm2d is
// calibrated on one image (tools/fixtures/detector_mobilenet.py): the feature pyramid "0", "1",
// "pool", the proposals, the ROI heads' detections from torchvision's proposals, and the whole
// pipeline from 8-bit pixels. Each case runs at its builder's own defaults (sizes, RPN score
// threshold, the 320 variant's 150 proposals), which are checked here too.
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "../support/detection_lists.hpp"
#include "../support/detections.hpp"
#include "../support/fixtures.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/models/faster_rcnn_mobilenet.hpp"

namespace fpn {
namespace {

using fpn::testing::match_detections;
using fpn::testing::our_list;
using fpn::testing::reference_list;
using fpn::testing::MatchCriteria;
using fpn::testing::ScoredBox;

constexpr std::string_view mobilenet_arch = "fasterrcnn_mobilenet_v3_large_fpn";
constexpr std::string_view mobilenet_320_arch = "fasterrcnn_mobilenet_v3_large_320_fpn";
static_assert(FasterRCNNMobileNetV3LargeFPN::arch == mobilenet_arch);
static_assert(FasterRCNNMobileNetV3Large320FPN::arch == mobilenet_320_arch);
static_assert(!FasterRCNNMobileNetV3LargeFPN::has_mask);

// The seeded weights give ~100 detections (tools/fixtures/detector_mobilenet.py); fewer than this
// would test little.
constexpr std::size_t min_detections = 20;

std::string fixture_path(const std::string& file) { return std::string(FPN_FIXTURE_DIR) + "/" + file; }

io::SafeTensors open_fixture(const std::string& file) { return io::SafeTensors::open(fixture_path(file)); }

std::string weights_file(std::string_view arch) { return "det_model_" + std::string(arch) + ".safetensors"; }

std::vector<ScoredBox> our_list(const Detections& detections) {
  std::vector<ScoredBox> list;
  for (const Detection& d : detections.items) list.push_back({d.box, d.score, d.label});
  return list;
}

// One fixture case on detector type Detector, loaded with its builder's default params.
template <typename Detector>
void check_case(const std::string& name) {
  const io::SafeTensors f = open_fixture("detector_" + name + ".safetensors");
  ASSERT_EQ(f.metadata().at("arch"), Detector::arch);
  const io::SafeTensors weights = open_fixture(f.metadata().at("weights"));
  const Detector detector = Detector::load(nn::WeightReader(weights));
  const DetectorParams& params = detector.params();
  // The fixture ran torchvision's builder at its own sizes; ours must be the same defaults.
  ASSERT_EQ(params.transform.min_size, std::stoll(f.metadata().at("min_size")));
  ASSERT_EQ(params.transform.max_size, std::stoll(f.metadata().at("max_size")));

  // The image as torchvision saw it.
  std::vector<std::uint8_t> rgb;
  const nn::PreprocessedImage image = fpn::testing::fixture_image(f, params.transform, rgb);
  const nn::ImageView view{rgb.data(), image.original_height, image.original_width};
  ASSERT_FALSE(::testing::Test::HasFailure());

  // Stage 0: the pyramid, under torchvision's keys ("0" and "1" share stride 32), to 1e-4 of
  // each level's scale.
  const nn::FeaturePyramid pyramid = detector.backbone().forward(image.tensor);
  ASSERT_EQ(pyramid.size(), std::size_t{3});
  for (std::size_t level = 0; level < pyramid.size(); ++level) {
    SCOPED_TRACE("level " + pyramid.names[level]);
    const Tensor<float> reference = f.load_float("feature." + pyramid.names[level]);
    EXPECT_TRUE(fpn::testing::tensors_close(pyramid.levels[level], reference, 1e-4));
    std::cout << "[ features  ] " << name << " " << pyramid.names[level] << ": relative max error "
              << fpn::testing::relative_max_error(pyramid.levels[level], reference) << "\n";
  }

  {  // Stage 1: proposals. Per-level top-k, NMS at 0.7, the score threshold and the top-n cut
     // each make near-ties.
    SCOPED_TRACE("proposals");
    const nn::Proposals proposals = detector.propose(pyramid, image);
    const auto reference = reference_list(f, "proposals", "proposal_scores", "");
    MatchCriteria criteria;
    criteria.score_thresh = params.rpn.score_thresh;  // 0.05 for both builders
    criteria.nms_thresh = params.rpn.nms_thresh;
    criteria.max_count = static_cast<std::size_t>(params.rpn.post_nms_top_n);
    criteria.per_label_nms = false;  // proposals carry levels, not labels; look at all
    const auto report =
        match_detections(reference, our_list(proposals.boxes, proposals.scores, {}), criteria);
    // Pre-NMS top-k cuts per level are invisible in the output, so a few proposals may differ;
    // they must be rare.
    EXPECT_GE(report.pairs.size(), reference.size() * 99 / 100) << report.summary();
    std::cout << "[ proposals ] " << name << ": " << report.pairs.size() << "/" << reference.size()
              << " matched, " << report.ties.size() << " near-ties, " << report.failures.size()
              << " unexplained\n";
  }

  {  // Stage 2: ROI heads from torchvision's own proposals, in resized-image pixels.
    SCOPED_TRACE("roi heads");
    const nn::BoxDetections boxes = detector.detect_boxes(pyramid, f.load_float("proposals"), image);
    const auto reference = reference_list(f, "roi_boxes", "roi_scores", "roi_labels");
    const auto report =
        match_detections(reference, our_list(boxes.boxes, boxes.scores, boxes.labels), MatchCriteria{});
    EXPECT_TRUE(report.failures.empty()) << report.summary();
    EXPECT_GE(reference.size(), min_detections) << "too few detections to test anything";
    std::cout << "[ roi heads ] " << name << ": " << report.summary() << "\n";
  }

  {  // Stage 3: the whole pipeline from pixels, boxes in original-image pixels.
    SCOPED_TRACE("end to end");
    const Detections detections = detector.detect(view);
    const auto reference = reference_list(f, "boxes", "scores", "labels");
    const auto report = match_detections(reference, our_list(detections), MatchCriteria{});
    EXPECT_TRUE(report.failures.empty()) << report.summary();
    EXPECT_GE(reference.size(), min_detections) << "too few detections to test anything";
    EXPECT_GE(detections.items.size(), min_detections);
    std::cout << "[ detect    ] " << name << ": " << reference.size() << " torchvision, "
              << detections.items.size() << " fpn: " << report.summary() << "\n";
  }
}

TEST(MobileNetDetector, MobileNetV3LargeFPNLandscapeMatchesTorchvision) {
  check_case<FasterRCNNMobileNetV3LargeFPN>("mnv3_landscape");
}
TEST(MobileNetDetector, MobileNetV3LargeFPNPortraitMatchesTorchvision) {
  check_case<FasterRCNNMobileNetV3LargeFPN>("mnv3_portrait");
}
TEST(MobileNetDetector, MobileNetV3Large320FPNLandscapeMatchesTorchvision) {
  check_case<FasterRCNNMobileNetV3Large320FPN>("mnv3_320_landscape");
}
TEST(MobileNetDetector, MobileNetV3Large320FPNPortraitMatchesTorchvision) {
  check_case<FasterRCNNMobileNetV3Large320FPN>("mnv3_320_portrait");
}

// torchvision's builders' keyword defaults (faster_rcnn.py): FasterRCNN's, with
// rpn_score_thresh=0.05 for both and, for the 320 variant, min_size=320, max_size=640,
// rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=150. The fixture also records them as
// torchvision's model has them ("builder.*" metadata).
struct BuilderDefaults {
  std::int64_t min_size, max_size, pre_nms_top_n, post_nms_top_n;
};

template <typename Detector>
void check_default_params(const std::string& fixture_case, const BuilderDefaults& expected) {
  const io::SafeTensors f = open_fixture("detector_" + fixture_case + ".safetensors");
  const io::SafeTensors weights = open_fixture(weights_file(Detector::arch));
  const Detector detector = Detector::load(nn::WeightReader(weights));
  const DetectorParams& params = detector.default_params();
  EXPECT_EQ(params.transform.min_size, expected.min_size);
  EXPECT_EQ(params.transform.max_size, expected.max_size);
  EXPECT_EQ(params.transform.size_divisible, 32);
  EXPECT_EQ(params.rpn.pre_nms_top_n, expected.pre_nms_top_n);
  EXPECT_EQ(params.rpn.post_nms_top_n, expected.post_nms_top_n);
  EXPECT_FLOAT_EQ(params.rpn.score_thresh, 0.05f);
  EXPECT_FLOAT_EQ(params.rpn.nms_thresh, 0.7f);
  EXPECT_FLOAT_EQ(params.rpn.min_size, 1e-3f);
  EXPECT_FLOAT_EQ(params.roi_heads.score_thresh, 0.05f);
  EXPECT_FLOAT_EQ(params.roi_heads.nms_thresh, 0.5f);
  EXPECT_EQ(params.roi_heads.detections_per_img, 100);
  EXPECT_EQ(params.box_pooling, nn::RoiPooling::align);
  // What torchvision's model had when the fixture ran.
  const auto& metadata = f.metadata();
  EXPECT_EQ(params.transform.min_size, std::stoll(metadata.at("builder.min_size")));
  EXPECT_EQ(params.transform.max_size, std::stoll(metadata.at("builder.max_size")));
  EXPECT_EQ(params.rpn.pre_nms_top_n, std::stoll(metadata.at("builder.rpn_pre_nms_top_n")));
  EXPECT_EQ(params.rpn.post_nms_top_n, std::stoll(metadata.at("builder.rpn_post_nms_top_n")));
  EXPECT_FLOAT_EQ(params.rpn.score_thresh, std::stof(metadata.at("builder.rpn_score_thresh")));
  EXPECT_FLOAT_EQ(params.rpn.nms_thresh, std::stof(metadata.at("builder.rpn_nms_thresh")));
  EXPECT_FLOAT_EQ(params.roi_heads.score_thresh, std::stof(metadata.at("builder.box_score_thresh")));
  EXPECT_FLOAT_EQ(params.roi_heads.nms_thresh, std::stof(metadata.at("builder.box_nms_thresh")));
  EXPECT_EQ(params.roi_heads.detections_per_img, std::stoll(metadata.at("builder.box_detections_per_img")));
  EXPECT_EQ(detector.num_classes(), 91);
  // 15 anchors per location on each of the three levels.
  ASSERT_EQ(detector.anchors().sizes.size(), std::size_t{3});
  for (const auto& sizes : detector.anchors().sizes) EXPECT_EQ(sizes, (std::vector<float>{32, 64, 128, 256, 512}));
  EXPECT_EQ(detector.anchors().aspect_ratios, (std::vector<float>{0.5f, 1.0f, 2.0f}));
}

TEST(MobileNetDetector, MobileNetV3LargeFPNDefaultParamsAreTheBuilders) {
  check_default_params<FasterRCNNMobileNetV3LargeFPN>("mnv3_landscape", {800, 1333, 1000, 1000});
}
TEST(MobileNetDetector, MobileNetV3Large320FPNDefaultParamsAreTheBuilders) {
  check_default_params<FasterRCNNMobileNetV3Large320FPN>("mnv3_320_landscape", {320, 640, 150, 150});
}

// The two builders share every weight name and shape; only the file's "arch" metadata keeps one
// from loading as the other.
template <typename Detector>
void expect_arch_mismatch(std::string_view stored) {
  const std::string path = fixture_path(weights_file(stored));
  const io::SafeTensors weights = io::SafeTensors::open(path);
  try {
    (void)Detector::load(nn::WeightReader(weights));
    ADD_FAILURE() << "expected a WeightError";
  } catch (const WeightError& error) {
    EXPECT_EQ(std::string(error.what()), "safetensors: '" + path + "' is for " + std::string(stored) +
                                             " (its \"arch\" metadata), not " + std::string(Detector::arch));
  }
}

TEST(MobileNetDetector, MobileNetV3Large320WeightsRefusedByTheOtherBuilder) {
  expect_arch_mismatch<FasterRCNNMobileNetV3LargeFPN>(mobilenet_320_arch);
  expect_arch_mismatch<FasterRCNNMobileNetV3Large320FPN>(mobilenet_arch);
}

}  // namespace
}  // namespace fpn
