// ResNet + FPN features against torchvision's model.backbone on seeded, calibrated weights.
#include <gtest/gtest.h>

#include "../support/fixtures.hpp"
#include "fpn/nn/backbone.hpp"

namespace fpn::nn {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

// Features must equal torchvision's to this relative error (max abs error / max abs value).
constexpr double feature_tolerance = 1e-4;

template <int Depth>
void check_case(const io::SafeTensors& expected) {
  const auto weights = io::SafeTensors::open(std::string(FPN_FIXTURE_DIR) + "/" +
                                             expected.metadata().at("weights"));
  const auto backbone = ResNetFPN<Depth>::load(WeightReader(weights));
  const Tensor<float> image = expected.load_float("image");

  const StageOutputs stages = backbone.body().forward(image);
  if (expected.contains("c2")) {
    for (int level = 2; level <= 5; ++level) {
      SCOPED_TRACE("C" + std::to_string(level));
      EXPECT_TRUE(tensors_close(stages[static_cast<std::size_t>(level - 2)],
                                expected.load_float("c" + std::to_string(level)),
                                feature_tolerance));
    }
  }
  const FeaturePyramid pyramid = backbone.neck().forward(stages);
  double worst = 0.0;
  for (int level = 2; level <= 6; ++level) {
    SCOPED_TRACE("P" + std::to_string(level));
    const Tensor<float> reference = expected.load_float("p" + std::to_string(level));
    EXPECT_TRUE(tensors_close(pyramid.levels[static_cast<std::size_t>(level - 2)], reference, feature_tolerance));
    if (pyramid.levels[static_cast<std::size_t>(level - 2)].shape() == reference.shape()) {
      worst = std::max(worst, fpn::testing::relative_max_error(pyramid.levels[static_cast<std::size_t>(level - 2)], reference));
    }
  }
  std::cout << "[ features ] " << expected.metadata().at("arch") << " "
            << image.shape().str() << ": worst P2..P6 relative error " << worst << "\n";
}

class BackboneMatchesTorchvision : public ::testing::TestWithParam<std::string> {};

TEST_P(BackboneMatchesTorchvision, C2ToC5AndP2ToP6) {
  const std::string name = GetParam();
  const auto& expected = fixture("backbone_" + name);
  const std::string depth = name.substr(1, name.find('_') - 1);
  if (depth == "18") {
    check_case<18>(expected);
  } else if (depth == "34") {
    check_case<34>(expected);
  } else if (depth == "50") {
    check_case<50>(expected);
  } else if (depth == "101") {
    check_case<101>(expected);
  } else {
    FAIL() << "unknown depth in case " << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, BackboneMatchesTorchvision,
                         ::testing::Values("r18_landscape", "r18_portrait", "r18_eps0",
                                           "r34_small", "r50_landscape", "r50_portrait",
                                           "r50_coco_size", "r101_small"));

// RetinaNet's necks: an FPN over C3..C5 (returned_layers [2, 3, 4]) with LastLevelP6P7 reading
// P5 (v1, FCOS) or C5 (v2), against torchvision's _resnet_fpn_extractor on seeded weights: level
// names, nominal strides and every map. Every tensor of the file is read.
template <P6P7Source Source>
void check_neck(const std::string& name) {
  using Backbone = BackboneWithFPN<ResNet18, FPN<256, BiasOnly, LastLevelP6P7<Source>>, Stages<2, 3, 4>>;
  static_assert(Backbone::num_levels == 5);
  static_assert(Backbone::taken_channels == std::array<std::int64_t, 3>{128, 256, 512});
  const auto& file = fixture("neck_" + name);
  const Backbone backbone = Backbone::load(WeightReader(file));
  const FeaturePyramid pyramid = backbone.forward(file.load_float("image"));
  EXPECT_EQ(pyramid.names, (std::vector<std::string>{"0", "1", "2", "p6", "p7"}));
  EXPECT_EQ(pyramid.strides, (std::vector<std::int64_t>{8, 16, 32, 64, 128}));
  EXPECT_EQ(pyramid.describe_names(), file.metadata().at("levels") == "0,1,2,p6,p7"
                                          ? "[0, 1, 2, p6, p7]"
                                          : "torchvision's levels: " + file.metadata().at("levels"));
  for (std::size_t level = 0; level < pyramid.size(); ++level) {
    SCOPED_TRACE(name + " level " + pyramid.names[level]);
    const Tensor<float> reference = file.load_float("level/" + pyramid.names[level]);
    EXPECT_TRUE(tensors_close(pyramid.levels[level], reference, feature_tolerance));
    EXPECT_EQ(&pyramid.at(pyramid.names[level]), &pyramid.levels[level]);
  }
}

TEST(Necks, RetinaNetP6P7FromP5MatchesTorchvision) { check_neck<FromP5>("p6p7_from_p5"); }
TEST(Necks, RetinaNetP6P7FromC5MatchesTorchvision) { check_neck<FromC5>("p6p7_from_c5"); }

// The same stage maps through forward_stages and FPN::forward (the path fpn_features takes) give
// the interleaved forward's pyramid, bit for bit.
TEST(Necks, StageMapsThroughTheNeckEqualTheInterleavedForward) {
  using Backbone = BackboneWithFPN<ResNet18, FPN<256, BiasOnly, LastLevelP6P7<FromC5>>, Stages<2, 3, 4>>;
  const auto& file = fixture("neck_p6p7_from_c5");
  const Backbone backbone = Backbone::load(WeightReader(file));
  const Tensor<float> image = file.load_float("image");
  const FeaturePyramid interleaved = backbone.forward(image);
  const FeaturePyramid separate = backbone.neck().forward(backbone.forward_stages(image));
  ASSERT_EQ(separate.names, interleaved.names);
  for (std::size_t level = 0; level < separate.size(); ++level) {
    EXPECT_TRUE(tensors_close(separate.levels[level], interleaved.levels[level], 0.0));
  }
  try {
    (void)separate.at("pool");
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "FeaturePyramid::at: no level named \"pool\"; the levels are [0, 1, 2, p6, p7]");
  }
}

// A file for one neck does not load into another: P6 from C5 reads 512 channels, from P5 256.
TEST(Necks, AnExtraLevelPolicyOfTheWrongSourceIsRefused) {
  using FromP5Backbone = BackboneWithFPN<ResNet18, FPN<256, BiasOnly, LastLevelP6P7<FromP5>>, Stages<2, 3, 4>>;
  const auto& file = fixture("neck_p6p7_from_c5");
  try {
    (void)FromP5Backbone::load(WeightReader(file));
    FAIL();
  } catch (const WeightError& error) {
    EXPECT_NE(std::string(error.what()).find("\"backbone.fpn.extra_blocks.p6.weight\" expected [256, 256, 3, 3], got [256, 512, 3, 3]"),
              std::string::npos)
        << error.what();
  }
}

TEST(Backbone, StageChannelsFollowTheBlockType) {
  static_assert(ResNet18::stage_channels == std::array<std::int64_t, 4>{64, 128, 256, 512});
  static_assert(ResNet50::stage_channels == std::array<std::int64_t, 4>{256, 512, 1024, 2048});
  using Narrow = ResNet<BasicBlock, 16, 1, 1, 1, 1>;
  static_assert(Narrow::stage_channels == std::array<std::int64_t, 4>{16, 32, 64, 128});
  EXPECT_EQ(ResNet101::blocks_per_stage[2], 23);
}

TEST(Backbone, MissingOrMisshapenWeightsNameTheTensor) {
  Tensor<float> wrong(Shape{64, 3, 3, 3});
  const std::string bytes = io::to_safetensors_bytes({{"backbone.body.conv1.weight", wrong}});
  const auto file = io::SafeTensors::parse({bytes.begin(), bytes.end()}, "bad.safetensors");
  try {
    (void)ResNetFPN<18>::load(WeightReader(file));
    FAIL();
  } catch (const WeightError& error) {
    EXPECT_STREQ(error.what(),
                 "safetensors: 'bad.safetensors': \"backbone.body.conv1.weight\" expected "
                 "[64, 3, 7, 7], got [64, 3, 3, 3]");
  }
  const std::string empty = io::to_safetensors_bytes({});
  const auto none = io::SafeTensors::parse({empty.begin(), empty.end()}, "empty.safetensors");
  try {
    (void)ResNetFPN<50>::load(WeightReader(none));
    FAIL();
  } catch (const WeightError& error) {
    EXPECT_STREQ(error.what(),
                 "safetensors: 'empty.safetensors' has no tensor \"backbone.body.conv1.weight\"");
  }
}

TEST(Backbone, BadEpsMetadataIsRefused) {
  const std::string bytes = io::to_safetensors_bytes({}, {{"frozen_bn_eps", "abc"}});
  const auto file = io::SafeTensors::parse({bytes.begin(), bytes.end()}, "m.safetensors");
  try {
    WeightReader reader(file);
    FAIL();
  } catch (const WeightError& error) {
    EXPECT_STREQ(error.what(),
                 "safetensors: 'm.safetensors': metadata frozen_bn_eps must be a number >= 0, got "
                 "\"abc\"");
  }
}

}  // namespace
}  // namespace fpn::nn
