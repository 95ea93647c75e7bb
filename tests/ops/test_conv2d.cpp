#include "fpn/ops/conv2d.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "../support/fixtures.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

int case_count(const std::string& op) {
  return std::stoi(fixture("ops_dense").metadata().at(op));
}

TEST(Conv2d, MatchesTorchOnSeededShapes) {
  const auto& file = fixture("ops_dense");
  const int cases = case_count("conv");
  ASSERT_GE(cases, 7);
  for (int index = 0; index < cases; ++index) {
    const std::string key = "conv/" + std::to_string(index) + "/";
    SCOPED_TRACE(key);
    const auto input = file.load_float(key + "input");
    const auto weight = file.load_float(key + "weight");
    const auto params = file.load_float(key + "params");
    const Conv2dParams conv{static_cast<int>(params.at(0)), static_cast<int>(params.at(1)),
                            params.at(2) != 0.0f ? Activation::relu : Activation::identity};
    const Tensor<float> output =
        file.contains(key + "bias") ? conv2d(input, weight, file.load_float(key + "bias"), conv)
                                    : conv2d(input, weight, conv);
    EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 1e-5));
  }
}

// A direct 7-loop convolution: the hand-derived definition the GEMM path must reproduce.
Tensor<double> naive_conv(const Tensor<double>& input, const Tensor<double>& weight, int stride,
                          int padding) {
  const auto n = input.dim(0), cin = input.dim(1), h = input.dim(2), w = input.dim(3);
  const auto cout = weight.dim(0), k = weight.dim(2);
  const auto oh = (h + 2 * padding - k) / stride + 1, ow = (w + 2 * padding - k) / stride + 1;
  Tensor<double> out(Shape{n, cout, oh, ow});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t x = 0; x < ow; ++x) {
          double sum = 0;
          for (int64_t ci = 0; ci < cin; ++ci)
            for (int64_t ky = 0; ky < k; ++ky)
              for (int64_t kx = 0; kx < k; ++kx) {
                const int64_t iy = y * stride - padding + ky, ix = x * stride - padding + kx;
                if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                  sum += input.at(b, ci, iy, ix) * weight.at(co, ci, ky, kx);
              }
          out.at(b, co, y, x) = sum;
        }
  return out;
}

TEST(Conv2d, DoublePrecisionMatchesNaiveDefinitionWithManyTiles) {
  // 1024 * 9 rows of doubles exceed the column budget at 64 columns: 17 tiles over 37 x 29.
  std::mt19937 random(7);
  std::normal_distribution<double> normal;
  Tensor<double> input(Shape{1, 1024, 37, 29});
  Tensor<double> weight(Shape{3, 1024, 3, 3});
  for (double& v : input.span()) v = normal(random);
  for (double& v : weight.span()) v = normal(random);
  for (const int stride : {1, 2}) {
    const auto expected = naive_conv(input, weight, stride, 1);
    const auto actual = conv2d<double>(input, weight, Conv2dParams{stride, 1});
    ASSERT_EQ(actual.shape(), expected.shape());
    for (int64_t i = 0; i < expected.numel(); ++i) {
      ASSERT_NEAR(actual.data()[i], expected.data()[i], 1e-9) << "at " << i;
    }
  }
}

TEST(Conv2d, RejectsMismatchedShapesWithClearMessages) {
  const Tensor<float> input(Shape{1, 3, 8, 8});
  try {
    (void)conv2d(input, Tensor<float>(Shape{4, 5, 3, 3}), Conv2dParams{});
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "conv2d: weight must be [Cout, 3, k, k] for input [1, 3, 8, 8], got [4, 5, 3, 3]");
  }
  try {
    (void)conv2d(input, Tensor<float>(Shape{4, 3, 3, 3}), Tensor<float>(Shape{5}), Conv2dParams{});
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "conv2d: bias must be [4], got [5]");
  }
  try {
    (void)conv2d(Tensor<float>(Shape{3, 8, 8}), Tensor<float>(Shape{4, 3, 3, 3}), Conv2dParams{});
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "conv2d: input must be [N, C, H, W], got [3, 8, 8]");
  }
  try {
    (void)conv2d(input, Tensor<float>(Shape{4, 3, 3, 3}), Conv2dParams{0, 1});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(),
                 "conv2d: stride must be >= 1 and padding >= 0, got stride 0 and padding 1");
  }
  EXPECT_THROW((void)conv2d(Tensor<float>(Shape{1, 3, 2, 2}), Tensor<float>(Shape{4, 3, 7, 7}),
                            Conv2dParams{}),
               ShapeError);
}

// conv2d_add_into: output = relu?(output + conv + bias) by the hand-derived definition, on every
// path: 1x1 over many tiles (threads take tiles), a batch of small maps (the mask head's shape),
// 3x3 on im2col and on Winograd (through a temporary), strided 3x3.
TEST(Conv2d, AddIntoAddsTheConvolutionToTheMapThenBiasAndRelu) {
  std::mt19937 random(11);
  std::normal_distribution<double> normal;
  struct Case {
    std::int64_t batch, in_channels, out_channels, height, width;
    int kernel, stride, padding;
    Conv2dAlgorithm algorithm;
    bool relu;
  };
  const Case cases[] = {
      {1, 700, 5, 64, 40, 1, 1, 0, Conv2dAlgorithm::automatic, true},
      {6, 20, 18, 14, 14, 3, 1, 1, Conv2dAlgorithm::im2col, true},
      {2, 17, 19, 13, 11, 3, 1, 1, Conv2dAlgorithm::winograd, false},
      {1, 9, 4, 15, 12, 3, 2, 1, Conv2dAlgorithm::automatic, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("batch " + std::to_string(c.batch) + ", kernel " + std::to_string(c.kernel) +
                 ", stride " + std::to_string(c.stride));
    Tensor<double> input(Shape{c.batch, c.in_channels, c.height, c.width});
    Tensor<double> weight(Shape{c.out_channels, c.in_channels, c.kernel, c.kernel});
    Tensor<double> bias(Shape{c.out_channels});
    for (Tensor<double>* t : {&input, &weight, &bias}) {
      for (double& v : t->span()) v = normal(random);
    }
    const Tensor<double> conv = naive_conv(input, weight, c.stride, c.padding);
    Tensor<double> output(conv.shape());
    for (double& v : output.span()) v = normal(random);
    Tensor<double> expected = output;
    const std::int64_t plane = conv.dim(2) * conv.dim(3);
    for (std::int64_t i = 0; i < conv.numel(); ++i) {
      const double sum = expected.data()[i] + conv.data()[i] + bias.data()[(i / plane) % c.out_channels];
      expected.data()[i] = c.relu ? std::max(sum, 0.0) : sum;
    }
    conv2d_add_into<double>(input, weight, bias,
                            Conv2dParams{c.stride, c.padding,
                                         c.relu ? Activation::relu : Activation::identity,
                                         c.algorithm},
                            output);
    for (std::int64_t i = 0; i < expected.numel(); ++i) {
      ASSERT_NEAR(output.data()[i], expected.data()[i], 1e-9) << "at " << i;
    }
  }
}

// The float path on fpn's panel kernel: pixel counts that are not multiples of its 64-pixel
// panels or 256-pixel tasks, batches, stride 2, accumulation into the output, and 1x1 convs whose
// whole panels are read in place from the input map (deeper than one 256-deep slice, reducing,
// with and without an image's partial last panel); against the definition in double, within
// float rounding.
TEST(Conv2d, FloatPanelPathMatchesTheDefinitionAtEveryEdge) {
  std::mt19937 random(13);
  std::normal_distribution<float> normal;
  struct Case {
    std::int64_t batch, in_channels, out_channels, height, width;
    int kernel, stride, padding;
    bool add_into;
  };
  const Case cases[] = {
      {2, 5, 7, 23, 29, 3, 2, 1, false},  {1, 3, 13, 17, 19, 1, 1, 0, true},
      {1, 16, 20, 23, 29, 3, 1, 1, true}, {2, 9, 70, 8, 8, 1, 1, 0, false},
      {1, 300, 11, 5, 7, 3, 1, 1, false}, {1, 64, 16, 9, 30, 1, 1, 0, true},
      {2, 40, 9, 16, 16, 1, 1, 0, true},  {1, 300, 20, 12, 48, 1, 1, 0, false},
      {3, 70, 33, 10, 13, 1, 1, 0, true}, {1, 1024, 7, 8, 8, 1, 1, 0, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("batch " + std::to_string(c.batch) + ", " + std::to_string(c.in_channels) + " -> " +
                 std::to_string(c.out_channels) + ", kernel " + std::to_string(c.kernel) +
                 ", stride " + std::to_string(c.stride));
    Tensor<float> input(Shape{c.batch, c.in_channels, c.height, c.width});
    Tensor<float> weight(Shape{c.out_channels, c.in_channels, c.kernel, c.kernel});
    Tensor<float> bias(Shape{c.out_channels});
    for (Tensor<float>* t : {&input, &weight, &bias}) {
      for (float& v : t->span()) v = normal(random);
    }
    Tensor<double> input64(input.shape()), weight64(weight.shape());
    std::copy_n(input.data(), input.numel(), input64.data());
    std::copy_n(weight.data(), weight.numel(), weight64.data());
    const Tensor<double> conv = naive_conv(input64, weight64, c.stride, c.padding);
    Tensor<float> output(conv.shape());
    for (float& v : output.span()) v = normal(random);
    std::vector<double> expected(static_cast<std::size_t>(conv.numel()));
    const std::int64_t plane = conv.dim(2) * conv.dim(3);
    for (std::int64_t i = 0; i < conv.numel(); ++i) {
      const double sum = (c.add_into ? output.data()[i] : 0.0) + conv.data()[i] +
                         bias.data()[(i / plane) % c.out_channels];
      expected[static_cast<std::size_t>(i)] = std::max(sum, 0.0);
    }
    const Conv2dParams params{c.stride, c.padding, Activation::relu, Conv2dAlgorithm::im2col};
    if (c.add_into) {
      conv2d_add_into<float>(input, weight, bias, params, output);
    } else {
      output = conv2d<float>(input, weight, bias, params);
    }
    ASSERT_EQ(output.shape(), conv.shape());
    const double tolerance = 2e-6 * static_cast<double>(c.in_channels * c.kernel * c.kernel);
    for (std::int64_t i = 0; i < conv.numel(); ++i) {
      ASSERT_NEAR(output.data()[i], expected[static_cast<std::size_t>(i)], tolerance) << "at " << i;
    }
  }
}

TEST(Conv2d, AddIntoRefusesAnOutputOfTheWrongShape) {
  Tensor<float> output(Shape{1, 4, 8, 7});
  try {
    conv2d_add_into<float>(Tensor<float>(Shape{1, 3, 8, 8}), Tensor<float>(Shape{4, 3, 3, 3}),
                           Tensor<float>(), Conv2dParams{1, 1}, output);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "conv2d_add_into: output must be [1, 4, 8, 8], got [1, 4, 8, 7]");
  }
}

// conv2d_1x1_in_place: the hand-derived 1x1 conv with bias and ReLU, over several tiles.
TEST(Conv2d, OneByOneInPlaceMatchesTheNaiveDefinition) {
  std::mt19937 random(13);
  std::normal_distribution<double> normal;
  Tensor<double> map(Shape{2, 300, 61, 37});  // 4 MB of columns hold 1747 pixels: 2 tiles each
  Tensor<double> weight(Shape{300, 300, 1, 1});
  Tensor<double> bias(Shape{300});
  for (Tensor<double>* t : {&map, &weight, &bias}) {
    for (double& v : t->span()) v = normal(random);
  }
  const Tensor<double> conv = naive_conv(map, weight, 1, 0);
  conv2d_1x1_in_place<double>(map, weight, bias, Activation::relu);
  const std::int64_t plane = 61 * 37;
  for (std::int64_t i = 0; i < conv.numel(); ++i) {
    const double expected = std::max(conv.data()[i] + bias.data()[(i / plane) % 300], 0.0);
    ASSERT_NEAR(map.data()[i], expected, 1e-9) << "at " << i;
  }
  try {
    Tensor<float> wide(Shape{1, 3, 4, 4});
    conv2d_1x1_in_place<float>(wide, Tensor<float>(Shape{5, 3, 1, 1}), Tensor<float>(),
                               Activation::identity);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "conv2d_1x1_in_place: weight must be [3, 3, 1, 1], got [5, 3, 1, 1]");
  }
}

// Every activation epilogue, on the GEMM path (7x7 stride 2, 1x1) and on Winograd (3x3 stride 1),
// equals the conv without activation followed by the activation's own definition, element by
// element: the epilogue adds no rounding of its own.
TEST(Conv2d, ActivationEpilogueEqualsTheActivationAfterTheConv) {
  std::mt19937 random(21);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  struct Case {
    std::int64_t channels, height, width;
    int kernel, stride, padding;
    Conv2dAlgorithm algorithm;
  };
  for (const Case c : {Case{3, 17, 23, 7, 2, 3, Conv2dAlgorithm::im2col},
                       Case{16, 9, 13, 1, 1, 0, Conv2dAlgorithm::im2col},
                       Case{32, 19, 21, 3, 1, 1, Conv2dAlgorithm::winograd}}) {
    Tensor<float> input(Shape{1, c.channels, c.height, c.width});
    Tensor<float> weight(Shape{24, c.channels, c.kernel, c.kernel});
    Tensor<float> bias(Shape{24});
    for (Tensor<float>* t : {&input, &weight, &bias}) {
      for (float& v : t->span()) v = normal(random);
    }
    const Tensor<float> plain =
        conv2d(input, weight, bias, Conv2dParams{c.stride, c.padding, Activation::identity, c.algorithm});
    for (const Activation activation : {Activation::relu, Activation::hardswish, Activation::hardsigmoid}) {
      SCOPED_TRACE(std::string(activation_name(activation)) + " kernel " + std::to_string(c.kernel));
      const Tensor<float> fused =
          conv2d(input, weight, bias, Conv2dParams{c.stride, c.padding, activation, c.algorithm});
      ASSERT_EQ(fused.shape(), plain.shape());
      std::int64_t changed = 0;
      for (std::int64_t i = 0; i < plain.numel(); ++i) {
        ASSERT_EQ(fused.data()[i], activate(activation, plain.data()[i])) << "at " << i;
        changed += fused.data()[i] != plain.data()[i];
      }
      EXPECT_GT(changed, plain.numel() / 4);  // the activation did act
    }
  }
}

// Hand-derived values of torch's formulas, at the kinks and away from them.
TEST(Activation, MatchesTheDefinitionsAtTheKinks) {
  EXPECT_EQ(activate(Activation::hardswish, -3.0f), 0.0f);
  EXPECT_EQ(activate(Activation::hardswish, 3.0f), 3.0f);
  EXPECT_EQ(activate(Activation::hardswish, 1.0f), 1.0f * 4.0f / 6.0f);
  EXPECT_EQ(activate(Activation::hardswish, -1.5f), -1.5f * 1.5f / 6.0f);
  EXPECT_EQ(activate(Activation::hardsigmoid, 0.0f), 0.5f);
  EXPECT_EQ(activate(Activation::hardsigmoid, -4.0f), 0.0f);
  EXPECT_EQ(activate(Activation::hardsigmoid, 4.0f), 1.0f);
  EXPECT_EQ(activate(Activation::relu, -0.5f), 0.0f);
  EXPECT_EQ(activate(Activation::identity, -0.5f), -0.5f);
  EXPECT_FALSE(is_valid(static_cast<Activation>(7)));
}

}  // namespace
}  // namespace fpn::ops
