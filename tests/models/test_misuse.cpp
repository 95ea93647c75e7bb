// The public API under misuse: every DetectorParams field is range-checked, the anchors are fixed
// at load, batches are refused where one image is assumed, masks and labels are bounds-checked,
// weights load strictly, and the weights' metadata (arch, num_classes, class_names, sizes) is
// the library's to read. Each case asserts the error's type and message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../support/expect_error.hpp"
#include "../support/fixtures.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/shapes_demo.hpp"
#include "fpn/models/two_stage_detector.hpp"

namespace fpn {
namespace {

const std::string demo_path =
    std::string(FPN_SOURCE_DIR) + "/examples/data/demo_shapes_maskrcnn.safetensors";

// The demo model's Faster R-CNN: its file holds it whole, plus the mask branch.
using FasterShapesDemo = TwoStageDetector<ShapesDemoBackbone, RoiHeads<nn::BoxHead<64, 256>>>;

using fpn::testing::expect_error;

template <typename Error, typename Call>
void expect_error_containing(Call call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "expected " << parts.front();
  } catch (const Error& error) {
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos)
          << error.what() << "\n  does not contain: " << part;
    }
  } catch (const std::exception& error) {
    ADD_FAILURE() << "wrong exception type: " << error.what();
  }
}

const MaskRCNNShapesDemo& demo() {
  static const MaskRCNNShapesDemo detector = MaskRCNNShapesDemo::load(demo_path);
  return detector;
}

// A file's tensors (as float) and metadata, to be edited and parsed back in memory.
struct EditableWeights {
  std::vector<std::pair<std::string, Tensor<float>>> tensors;
  std::map<std::string, std::string> metadata;

  static EditableWeights of(const io::SafeTensors& file) {
    EditableWeights result;
    for (const io::TensorInfo& info : file.tensors()) {
      result.tensors.emplace_back(info.name, file.load_float(info.name));
    }
    result.metadata = file.metadata();
    return result;
  }
  io::SafeTensors parse(const std::string& name) const {
    std::vector<std::pair<std::string, TensorView<const float>>> views;
    for (const auto& [tensor_name, tensor] : tensors) views.emplace_back(tensor_name, tensor);
    const std::string bytes = io::to_safetensors_bytes(views, metadata);
    return io::SafeTensors::parse({bytes.begin(), bytes.end()}, name);
  }
};

const EditableWeights& demo_weights() {
  static const EditableWeights weights = EditableWeights::of(io::SafeTensors::open(demo_path));
  return weights;
}

// An RGB image of a gradient with a bright disc and a dark square, deterministic per seed.
std::vector<std::uint8_t> scene(std::int64_t height, std::int64_t width, int seed) {
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(height * width * 3));
  const double cx = width * (0.3 + 0.1 * seed), cy = height * 0.4, radius = height * 0.2;
  for (std::int64_t y = 0; y < height; ++y) {
    for (std::int64_t x = 0; x < width; ++x) {
      std::uint8_t* pixel = rgb.data() + (y * width + x) * 3;
      const bool disc = std::hypot(double(x) - cx, double(y) - cy) < radius;
      const bool square = x > width * 0.6 && x < width * 0.85 && y > height * 0.5 && y < height * 0.8;
      for (int c = 0; c < 3; ++c) {
        pixel[c] = static_cast<std::uint8_t>(disc ? 230 - 40 * c : square ? 20 + 30 * c
                                                                          : (x + 2 * y + 50 * c) % 200);
      }
    }
  }
  return rgb;
}

// ---- 1. every DetectorParams field is checked, at load and at set_params --------------------

TEST(Misuse, EveryDetectorParamsFieldIsChecked) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    void (*edit)(DetectorParams&, float nan, float inf);
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](DetectorParams& p, float, float) { p.rpn.pre_nms_top_n = -1; },
       "DetectorParams.rpn.pre_nms_top_n must be an integer >= 1, got -1"},
      {[](DetectorParams& p, float, float) { p.rpn.post_nms_top_n = 0; },
       "DetectorParams.rpn.post_nms_top_n must be an integer >= 1, got 0"},
      {[](DetectorParams& p, float nan, float) { p.rpn.nms_thresh = nan; },
       "DetectorParams.rpn.nms_thresh must be a number in [0, 1], got nan"},
      {[](DetectorParams& p, float, float) { p.rpn.score_thresh = 1.5f; },
       "DetectorParams.rpn.score_thresh must be a number in [0, 1], got 1.5"},
      {[](DetectorParams& p, float, float inf) { p.rpn.min_size = inf; },
       "DetectorParams.rpn.min_size must be a finite number >= 0, got inf"},
      {[](DetectorParams& p, float, float) { p.rpn.min_size = -1.0f; },
       "DetectorParams.rpn.min_size must be a finite number >= 0, got -1"},
      {[](DetectorParams& p, float, float) { p.roi_heads.score_thresh = -0.1f; },
       "DetectorParams.roi_heads.score_thresh must be a number in [0, 1], got -0.1"},
      {[](DetectorParams& p, float, float) { p.roi_heads.nms_thresh = 2.0f; },
       "DetectorParams.roi_heads.nms_thresh must be a number in [0, 1], got 2"},
      {[](DetectorParams& p, float, float) { p.roi_heads.detections_per_img = -1; },
       "DetectorParams.roi_heads.detections_per_img must be an integer >= 1, got -1"},
      {[](DetectorParams& p, float, float) { p.transform.min_size = 0; },
       "DetectorParams.transform.min_size must be an integer in [1, 8192], got 0"},
      {[](DetectorParams& p, float, float) { p.transform.max_size = 1 << 20; },
       "DetectorParams.transform.max_size must be an integer in [1, 8192], got 1048576"},
      {[](DetectorParams& p, float, float) { p.transform.size_divisible = 0; },
       "DetectorParams.transform.size_divisible must be an integer in [1, 1024], got 0"},
      {[](DetectorParams& p, float, float inf) { p.transform.mean[1] = -inf; },
       "DetectorParams.transform.mean[1] must be a finite number, got -inf"},
      {[](DetectorParams& p, float, float) { p.transform.stddev[2] = 0.0f; },
       "DetectorParams.transform.stddev[2] must be a finite number > 0, got 0"},
      {[](DetectorParams& p, float, float) { p.box_pooling = static_cast<nn::RoiPooling>(7); },
       "DetectorParams.box_pooling must be RoiPooling::align or RoiPooling::max, got 7"},
  };
  MaskRCNNShapesDemo detector = demo();
  const DetectorParams before = detector.params();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    DetectorParams params;
    c.edit(params, nan, inf);
    expect_error<ArgumentError>([&] { detector.set_params(params); }, c.message);
    expect_error<ArgumentError>([&] { (void)MaskRCNNShapesDemo::load(demo_path, params); },
                                c.message);
  }
  // A refused set_params changes nothing.
  EXPECT_EQ(detector.params().transform.min_size, before.transform.min_size);
  EXPECT_EQ(detector.params().rpn.pre_nms_top_n, before.rpn.pre_nms_top_n);
  EXPECT_EQ(detector.params().roi_heads.detections_per_img, before.roi_heads.detections_per_img);
}

TEST(Misuse, RpnSetParamsIsChecked) {
  const io::SafeTensors file = io::SafeTensors::open(demo_path);
  auto rpn = nn::RegionProposalNetwork<64>::load(nn::WeightReader(file).child("rpn"));
  nn::RpnParams params;
  params.pre_nms_top_n = -1;
  expect_error<ArgumentError>([&] { rpn.set_params(params); },
                              "RpnParams.pre_nms_top_n must be an integer >= 1, got -1");
  EXPECT_EQ(rpn.params().pre_nms_top_n, 1000);
  expect_error<ArgumentError>(
      [&] { (void)nn::RegionProposalNetwork<64>::load(nn::WeightReader(file).child("rpn"), params); },
      "RpnParams.pre_nms_top_n must be an integer >= 1, got -1");
}

// ---- 2. anchors are the loaded model's --------------------------------------------------------

template <typename Params>
concept has_rpn_anchors = requires(Params params) { params.rpn.anchors; };

TEST(Misuse, AnchorsAreFixedAtLoadAndCheckedAgainstTheHead) {
  DetectorLoadOptions options;
  options.anchors = nn::AnchorParams{};
  options.anchors->aspect_ratios = {0.5f, 1.0f, 2.0f, 4.0f};
  expect_error<WeightError>(
      [&] { (void)MaskRCNNShapesDemo::load(demo_path, options); },
      "safetensors: '" + demo_path +
          "': \"rpn.head.cls_logits.weight\" expected [4, 64, 1, 1], got [3, 64, 1, 1] (the RPN "
          "head predicts one objectness per anchor of a cell; the anchors give 4)");
  options = {};
  options.anchors = nn::AnchorParams{{{32}, {64}}, {0.5f, 1.0f, 2.0f}};
  expect_error<ArgumentError>(
      [&] { (void)MaskRCNNShapesDemo::load(demo_path, options); },
      "DetectorLoadOptions.anchors.sizes must be one list of sizes per pyramid level (5), got 2 "
      "lists");
  options.anchors = nn::AnchorParams{};
  options.anchors->sizes[2] = {-128.0f};
  expect_error<ArgumentError>(
      [&] { (void)MaskRCNNShapesDemo::load(demo_path, options); },
      "DetectorLoadOptions.anchors.sizes[2][0] must be a finite number > 0, got -128");
  options.anchors = nn::AnchorParams{};
  options.anchors->sizes[3] = {128.0f, 256.0f};
  expect_error<ArgumentError>(
      [&] { (void)MaskRCNNShapesDemo::load(demo_path, options); },
      "DetectorLoadOptions.anchors.sizes[3] must be as many sizes as level 0 (1, at least 1: the "
      "RPN head is shared across levels), got 2 sizes");
  // Two sizes on every level make six anchors per cell, for a head trained with three.
  options.anchors = nn::AnchorParams{{{16, 32}, {32, 64}, {64, 128}, {128, 256}, {256, 512}}, {0.5f, 1.0f, 2.0f}};
  expect_error<WeightError>(
      [&] { (void)MaskRCNNShapesDemo::load(demo_path, options); },
      "safetensors: '" + demo_path +
          "': \"rpn.head.cls_logits.weight\" expected [6, 64, 1, 1], got [3, 64, 1, 1] (the RPN "
          "head predicts one objectness per anchor of a cell; the anchors give 6)");
  options.anchors = nn::AnchorParams{};
  options.anchors->aspect_ratios.clear();
  expect_error<ArgumentError>(
      [&] { (void)MaskRCNNShapesDemo::load(demo_path, options); },
      "DetectorLoadOptions.anchors.aspect_ratios must be at least one ratio, got none");

  // Other sizes with the head's three ratios load, and stay the detector's.
  options = {};
  options.anchors = nn::AnchorParams{{{16}, {32}, {64}, {128}, {256}}, {0.5f, 1.0f, 2.0f}};
  const MaskRCNNShapesDemo detector = MaskRCNNShapesDemo::load(demo_path, options);
  EXPECT_EQ(detector.anchors().sizes, options.anchors->sizes);
  // Unset, they are the backbone's: torchvision's one size per level, 32 to 512.
  EXPECT_EQ(demo().anchors().sizes, (std::vector<std::vector<float>>{{32}, {64}, {128}, {256}, {512}}));
  static_assert(!has_rpn_anchors<DetectorParams>, "the anchors are not a run-time parameter");
}

// ---- 4. batches are refused where one image is assumed; several images run one by one ---------

TEST(Misuse, BatchesAreRefused) {
  const MaskRCNNShapesDemo& detector = demo();
  const Tensor<float> batch(Shape{2, 3, 64, 64});
  expect_error<ShapeError>(
      [&] { (void)detector.backbone().forward(batch); },
      "BackboneWithFPN::forward: image must be [1, 3, H, W] (one image; run a batch image by "
      "image), got [2, 3, 64, 64]");
  expect_error<ShapeError>(
      [&] { (void)detector.backbone().forward(Tensor<float>(Shape{2, 3, 64, 64})); },
      "BackboneWithFPN::forward: image must be [1, 3, H, W] (one image; run a batch image by "
      "image), got [2, 3, 64, 64]");
  expect_error<ShapeError>(
      [&] {
        detector.backbone().neck().output(0).forward_bands(
            Tensor<float>(Shape{2, 64, 8, 8}), [](std::int64_t, std::int64_t, const Tensor<float>&) {});
      },
      "Conv2d::forward_bands: input must be [1, 64, H, W] (one image; run a batch image by "
      "image), got [2, 64, 8, 8]");
  nn::StageOutputs stages = detector.backbone().body().forward(batch);  // the body takes batches
  EXPECT_EQ(stages[0].shape(), (Shape{2, 16, 16, 16}));
  expect_error<ShapeError>(
      [&] { (void)detector.backbone().neck().forward(stages); },
      "FPN::forward: stage 0 must be [1, 16, H, W] (one image; run a batch image by image), got "
      "[2, 16, 16, 16]");

  nn::PreprocessedImage image{Tensor<float>(Shape{2, 3, 64, 64}), 64, 64, 64, 64};
  expect_error<ShapeError>(
      [&] { (void)detector.detect(image); },
      "TwoStageDetector::detect: image.tensor must be [1, 3, H, W] (one image; run a batch image "
      "by image), got [2, 3, 64, 64]");
  nn::FeaturePyramid pyramid;
  for (std::size_t level = 0; level < 5; ++level) {
    const std::int64_t side = std::max<std::int64_t>(16 >> level, 1);
    pyramid.push_back(level < 4 ? std::to_string(level) : "pool", 4 << level,
                      Tensor<float>(Shape{2, 64, side, side}));
  }
  expect_error<ShapeError>(
      [&] { (void)detector.propose(pyramid, image); },
      "TwoStageDetector::propose: image.tensor must be [1, 3, H, W] (one image; run a batch "
      "image by image), got [2, 3, 64, 64]");
  image.tensor = Tensor<float>(Shape{1, 3, 64, 64});
  expect_error<ShapeError>(
      [&] { (void)detector.propose(pyramid, image); },
      "RegionProposalNetwork::forward: level 0 must be [1, 64, H, W] (one image; run a batch image by "
      "image), got [2, 64, 16, 16]");
  expect_error<ShapeError>(
      [&] { (void)detector.detect_boxes(pyramid, Tensor<float>(Shape{1, 4}), image); },
      "MultiScaleRoIAlign: level 0 must be [1, 64, H, W] (one image; run a batch image by image), got "
      "[2, 64, 16, 16]");
}

void expect_same(const Detections& a, const Detections& b) {
  ASSERT_EQ(a.items.size(), b.items.size());
  EXPECT_EQ(a.image_height, b.image_height);
  EXPECT_EQ(a.image_width, b.image_width);
  for (std::size_t i = 0; i < a.items.size(); ++i) {
    EXPECT_EQ(a.items[i].box, b.items[i].box);
    EXPECT_EQ(a.items[i].label, b.items[i].label);
    EXPECT_EQ(a.items[i].score, b.items[i].score);
    ASSERT_TRUE(a.items[i].mask && b.items[i].mask);
    EXPECT_EQ(a.items[i].mask->probabilities, b.items[i].mask->probabilities);
  }
}

TEST(Misuse, SeveralImagesGiveTheirSingleResults) {
  const MaskRCNNShapesDemo& detector = demo();
  const std::vector<std::uint8_t> first = scene(120, 160, 0);
  const std::vector<std::uint8_t> second = scene(90, 200, 1);
  const std::vector<nn::ImageView> images = {
      {first.data(), 120, 160}, {second.data(), 90, 200}, {first.data(), 120, 160}};
  const std::vector<Detections> results = detector.detect(images);
  ASSERT_EQ(results.size(), 3u);
  for (std::size_t i = 0; i < images.size(); ++i) {
    SCOPED_TRACE(i);
    expect_same(results[i], detector.detect(images[i]));
  }
  expect_same(results[0], results[2]);
  EXPECT_TRUE(detector.detect(std::span<const nn::ImageView>{}).empty());
}

// ---- 6. masks and labels ----------------------------------------------------------------------

TEST(Misuse, MaskAccessIsBoundsChecked) {
  PastedMask mask;
  mask.x0 = 10;
  mask.y0 = 5;
  mask.width = 4;
  mask.height = 3;
  mask.probabilities.assign(12, 0.9f);
  EXPECT_EQ(mask.binary(8, 14).size(), 8u * 14u);
  expect_error<ShapeError>(
      [&] { (void)mask.binary(7, 14); },
      "PastedMask::binary: the image size must be at least [8, 14] (the mask covers rows 5..8 "
      "and columns 10..14), got [7, 14]");
  expect_error<ShapeError>(
      [&] { (void)mask.binary(8, 2); },
      "PastedMask::binary: the image size must be at least [8, 14] (the mask covers rows 5..8 "
      "and columns 10..14), got [8, 2]");
  EXPECT_EQ(mask.at(-3, 1000), 0.0f);
  EXPECT_EQ(mask.at(6, 11), 0.9f);
  mask.probabilities.resize(5);
  expect_error<ArgumentError>(
      [&] { (void)mask.at(6, 11); },
      "PastedMask::at: a mask at (x0 10, y0 5) of 3x4 needs x0, y0 >= 0 and height * width "
      "probabilities, got 5");
}

TEST(Misuse, MaskLabelsAreRangeChecked) {
  const MaskRCNNShapesDemo& detector = demo();
  const std::vector<std::uint8_t> rgb = scene(64, 64, 0);
  const nn::PreprocessedImage image =
      nn::preprocess(nn::ImageView{rgb.data(), 64, 64}, detector.params().transform);
  const nn::FeaturePyramid pyramid = detector.backbone().forward(image.tensor);
  Tensor<float> boxes(Shape{2, 4});
  for (std::int64_t i = 0; i < 2; ++i) {
    boxes.at(i, 2) = 100.0f;
    boxes.at(i, 3) = 100.0f;
  }
  EXPECT_EQ(detector.predict_masks(pyramid, boxes, {1, 5}, image).shape(), (Shape{2, 28, 28}));
  expect_error<ArgumentError>(
      [&] { (void)detector.predict_masks(pyramid, boxes, {1, 6}, image); },
      "predict_masks: labels[1] must be a class index in [0, 6), got 6");
  expect_error<ArgumentError>(
      [&] { (void)detector.predict_masks(pyramid, boxes, {-1, 2}, image); },
      "predict_masks: labels[0] must be a class index in [0, 6), got -1");
}

// ---- 7. strict loading ------------------------------------------------------------------------

TEST(Misuse, ExtraTensorsAreRefusedUnlessAllowed) {
  EditableWeights weights = demo_weights();
  weights.tensors.emplace_back("roi_heads.extra.weight", Tensor<float>(Shape{2, 2}));
  weights.tensors.emplace_back("rpn.extra.bias", Tensor<float>(Shape{3}));
  const io::SafeTensors file = weights.parse("extra.safetensors");
  expect_error<WeightError>(
      [&] { (void)MaskRCNNShapesDemo::load(nn::WeightReader(file)); },
      "safetensors: 'extra.safetensors': 2 tensors not read by maskrcnn_shapes_demo "
      "(\"roi_heads.extra.weight\", \"rpn.extra.bias\"): weights of another architecture? "
      "(allow_unused skips them)");
  DetectorLoadOptions options;
  options.allow_unused = true;
  const MaskRCNNShapesDemo detector = MaskRCNNShapesDemo::load(nn::WeightReader(file), options);
  EXPECT_EQ(detector.num_classes(), 6);
  // The backbone alone checks only its own prefix: the heads are not its business.
  EXPECT_NO_THROW((void)ShapesDemoBackbone::load(nn::WeightReader(file)));
}

TEST(Misuse, FasterRCNNTakesItsMaskRCNNFileOnlyWhenAllowed) {
  static_assert(FasterShapesDemo::arch == "fasterrcnn_shapes_demo");
  expect_error<WeightError>(
      [&] { (void)FasterShapesDemo::load(demo_path); },
      "safetensors: '" + demo_path +
          "' is for maskrcnn_shapes_demo (its \"arch\" metadata), not fasterrcnn_shapes_demo");
  DetectorLoadOptions options;
  options.allow_unused = true;
  const FasterShapesDemo faster = FasterShapesDemo::load(demo_path, options);
  const std::vector<std::uint8_t> rgb = scene(120, 160, 0);
  const Detections boxes = faster.detect(nn::ImageView{rgb.data(), 120, 160});
  const Detections masks = demo().detect(nn::ImageView{rgb.data(), 120, 160});
  ASSERT_EQ(boxes.items.size(), masks.items.size());
  for (std::size_t i = 0; i < boxes.items.size(); ++i) EXPECT_EQ(boxes.items[i].box, masks.items[i].box);

  // Without the arch metadata, strictness alone names the mask branch's tensors.
  EditableWeights weights = demo_weights();
  weights.metadata.erase("arch");
  const io::SafeTensors file = weights.parse("no_arch.safetensors");
  expect_error_containing<WeightError>(
      [&] { (void)FasterShapesDemo::load(nn::WeightReader(file)); },
      {"safetensors: 'no_arch.safetensors': 12 tensors not read by fasterrcnn_shapes_demo (\"",
       "roi_heads.mask_", ", ...): weights of another architecture?"});
}

// Hides the "arch" metadata of a fixture: the strictness of a load must catch another depth on
// its own.
class WithoutArch final : public nn::WeightSource {
 public:
  explicit WithoutArch(const io::SafeTensors& file) : inner_(file) {}
  Tensor<float> load(const std::string& name, const Shape& expected) const override {
    return inner_.load(name, expected);
  }
  bool contains(const std::string& name) const override { return inner_.contains(name); }
  std::optional<std::string> metadata(const std::string& key) const override {
    return key == "arch" ? std::nullopt : inner_.metadata(key);
  }
  std::string describe() const override { return inner_.describe(); }
  std::optional<std::vector<std::string>> names() const override { return inner_.names(); }

 private:
  nn::SafeTensorsSource inner_;
};

TEST(Misuse, WeightsOfAnotherDepthAreRefused) {
  const io::SafeTensors& r50 = testing::fixture("det_model_maskrcnn_resnet50_fpn");
  const io::SafeTensors& r101 = testing::fixture("det_model_maskrcnn_resnet101_fpn");
  // With the metadata: the arch names the other backbone.
  expect_error_containing<WeightError>(
      [&] { (void)nn::ResNetFPN<18>::load(nn::WeightReader(r50)); },
      {"is for maskrcnn_resnet50_fpn (its \"arch\" metadata), whose backbone is not resnet18_fpn"});
  expect_error_containing<WeightError>(
      [&] { (void)MaskRCNNResNet101FPN::load(nn::WeightReader(r50)); },
      {"is for maskrcnn_resnet50_fpn (its \"arch\" metadata), not maskrcnn_resnet101_fpn"});
  // Without it: 101 -> 50 leaves layer3's extra blocks unread, 50 -> 101 misses them, 50 -> 18
  // has other shapes.
  auto without_arch = [](const io::SafeTensors& file) {
    return nn::WeightReader(std::make_shared<WithoutArch>(file));
  };
  expect_error_containing<WeightError>(
      [&] { (void)nn::ResNetFPN<50>::load(without_arch(r101)); },
      {"255 tensors under \"backbone.\" not read by resnet50_fpn (\"backbone.body.layer3."});
  expect_error_containing<WeightError>(
      [&] { (void)MaskRCNNResNet50FPN::load(without_arch(r101)); },
      {"255 tensors not read by maskrcnn_resnet50_fpn (\"backbone.body.layer3."});
  expect_error_containing<WeightError>(
      [&] { (void)nn::ResNetFPN<101>::load(without_arch(r50)); },
      {"has no tensor \"backbone.body.layer3.6.conv1.weight\""});
  expect_error_containing<WeightError>(
      [&] { (void)nn::ResNetFPN<18>::load(without_arch(r50)); },
      {"\"backbone.body.layer1.0.conv1.weight\" expected [64, 64, 3, 3], got [64, 64, 1, 1]"});
}

// ---- 8. the library reads the weights' metadata -----------------------------------------------

TEST(Misuse, DemoModelUsesItsMetadata) {
  static_assert(MaskRCNNShapesDemo::arch == "maskrcnn_shapes_demo");
  static_assert(MaskRCNNResNet50FPN::arch == "maskrcnn_resnet50_fpn");
  static_assert(FasterRCNNResNet101FPN::arch == "fasterrcnn_resnet101_fpn");
  const MaskRCNNShapesDemo& detector = demo();
  EXPECT_EQ(detector.params().transform.min_size, 320);
  EXPECT_EQ(detector.params().transform.max_size, 512);
  EXPECT_EQ(detector.default_params().transform.min_size, 320);
  EXPECT_EQ(detector.num_classes(), 6);
  EXPECT_EQ(detector.class_names(),
            (std::vector<std::string>{"__background__", "circle", "square", "triangle", "star",
                                      "ring"}));
  // Explicitly passed params win over the metadata.
  const MaskRCNNShapesDemo explicit_params = MaskRCNNShapesDemo::load(demo_path, DetectorParams{});
  EXPECT_EQ(explicit_params.params().transform.min_size, 800);
  EXPECT_EQ(explicit_params.params().transform.max_size, 1333);
  EXPECT_EQ(explicit_params.default_params().transform.min_size, 320);
}

TEST(Misuse, ArchMismatchIsRefused) {
  expect_error<WeightError>(
      [&] { (void)MaskRCNNResNet18FPN::load(demo_path); },
      "safetensors: '" + demo_path +
          "' is for maskrcnn_shapes_demo (its \"arch\" metadata), not maskrcnn_resnet18_fpn");
  EditableWeights weights = demo_weights();
  weights.metadata["arch"] = "maskrcnn_resnet50_fpn";
  const io::SafeTensors file = weights.parse("r50.safetensors");
  expect_error<WeightError>(
      [&] { (void)MaskRCNNShapesDemo::load(nn::WeightReader(file)); },
      "safetensors: 'r50.safetensors' is for maskrcnn_resnet50_fpn (its \"arch\" metadata), not "
      "maskrcnn_shapes_demo");
}

TEST(Misuse, BadMetadataIsNamed) {
  struct Case {
    std::string key, value, message;
  };
  const std::vector<Case> cases = {
      {"min_size", "0",
       "safetensors: 'meta.safetensors': metadata min_size must be an integer in [1, 8192], got "
       "\"0\""},
      {"max_size", "1333.5",
       "safetensors: 'meta.safetensors': metadata max_size must be an integer in [1, 8192], got "
       "\"1333.5\""},
      {"num_classes", "1",
       "safetensors: 'meta.safetensors': metadata num_classes must be an integer in [2, 1048576], "
       "got \"1\""},
      {"class_names", "{\"a\": 1}",
       "safetensors: 'meta.safetensors': metadata class_names must be a JSON list of strings, got "
       "'{\"a\": 1}'"},
      {"class_names", "[\"__background__\", \"circle\"]",
       "safetensors: 'meta.safetensors': metadata class_names has 2 names, expected one per class "
       "(6, background included)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key + " = " + c.value);
    EditableWeights weights = demo_weights();
    weights.metadata[c.key] = c.value;
    const io::SafeTensors file = weights.parse("meta.safetensors");
    expect_error<WeightError>([&] { (void)MaskRCNNShapesDemo::load(nn::WeightReader(file)); },
                              c.message);
  }
}

}  // namespace
}  // namespace fpn
