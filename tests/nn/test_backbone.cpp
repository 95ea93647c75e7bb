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
    EXPECT_TRUE(tensors_close(pyramid.p(level), reference, feature_tolerance));
    if (pyramid.p(level).shape() == reference.shape()) {
      worst = std::max(worst, fpn::testing::relative_max_error(pyramid.p(level), reference));
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
