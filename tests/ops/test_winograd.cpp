#include <gtest/gtest.h>

#include <iostream>
#include <cmath>
#include <random>
#include <vector>

#include "../support/fixtures.hpp"
#include "fpn/ops/conv2d.hpp"
#include "fpn/ops/winograd.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

Activation activation_of(bool relu) { return relu ? Activation::relu : Activation::identity; }

// Winograd's transforms add a few roundings per output over im2col's; for unit-scale data the
// result must stay within this of the exact convolution, relative to the output's largest value.
constexpr double float_tolerance = 2e-6;

struct Case {
  std::int64_t batch, in_channels, out_channels, height, width;
  bool bias, relu;
};

// The 3x3 stride-1 padding-1 convolution by its definition, in double: the reference both
// float paths are measured against.
Tensor<double> naive_conv3x3(const Tensor<double>& input, const Tensor<double>& weight,
                             const Tensor<double>* bias, bool relu) {
  const auto n = input.dim(0), cin = input.dim(1), h = input.dim(2), w = input.dim(3);
  const auto cout = weight.dim(0);
  Tensor<double> out(Shape{n, cout, h, w});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          double sum = bias != nullptr ? bias->at(co) : 0.0;
          for (int64_t ci = 0; ci < cin; ++ci)
            for (int64_t ky = 0; ky < 3; ++ky)
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t iy = y - 1 + ky, ix = x - 1 + kx;
                if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                  sum += input.at(b, ci, iy, ix) * weight.at(co, ci, ky, kx);
              }
          out.at(b, co, y, x) = relu ? std::max(sum, 0.0) : sum;
        }
  return out;
}

template <typename To, typename From>
Tensor<To> cast(const Tensor<From>& tensor) {
  if (tensor.data() == nullptr) return {};  // "no bias" stays no bias
  Tensor<To> result(tensor.shape());
  for (int64_t i = 0; i < tensor.numel(); ++i) result.data()[i] = static_cast<To>(tensor.data()[i]);
  return result;
}

// max |actual - expected| / max |expected|, in double.
template <typename T>
double relative_error(const Tensor<T>& actual, const Tensor<double>& expected) {
  EXPECT_EQ(actual.shape(), expected.shape());
  double max_error = 0.0, max_value = 0.0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    max_error = std::max(max_error, std::abs(double(actual.data()[i]) - expected.data()[i]));
    max_value = std::max(max_value, std::abs(expected.data()[i]));
  }
  return max_error / std::max(max_value, 1e-30);
}

// Unit-normal inputs and biases; weights scaled by 1 / sqrt(fan-in) as trained layers are, so the
// outputs are unit-scale too. Drawn in float, so the float and double runs see the same numbers.
struct Problem {
  Tensor<float> input, weight, bias;
  Tensor<double> expected;

  Problem(const Case& shape, unsigned seed) {
    std::mt19937 random(seed);
    std::normal_distribution<float> normal;
    input = Tensor<float>(Shape{shape.batch, shape.in_channels, shape.height, shape.width});
    weight = Tensor<float>(Shape{shape.out_channels, shape.in_channels, 3, 3});
    for (float& v : input.span()) v = normal(random);
    const float scale = 1.0f / std::sqrt(float(shape.in_channels * 9));
    for (float& v : weight.span()) v = normal(random) * scale;
    if (shape.bias) {
      bias = Tensor<float>(Shape{shape.out_channels});
      for (float& v : bias.span()) v = normal(random);
    }
    const Tensor<double> bias_double = cast<double>(bias);
    expected = naive_conv3x3(cast<double>(input), cast<double>(weight),
                             shape.bias ? &bias_double : nullptr, shape.relu);
  }
};

const Case seeded_cases[] = {
    {1, 1, 1, 1, 1, true, false},       // a single pixel: one tile, three of its outputs dropped
    {1, 3, 5, 1, 1, false, true},       // a single pixel, several channels
    {2, 5, 7, 2, 3, true, false},       // map smaller than the kernel's reach, odd width
    {1, 17, 19, 7, 9, true, true},      // odd x odd, channels not multiples of 16
    {1, 33, 31, 16, 15, false, false},  // even x odd
    {3, 8, 16, 5, 6, true, true},       // odd x even, batch of 3
    {37, 40, 36, 14, 14, true, true},   // mask-head-like batch: blocks end mid-image
    {2, 300, 24, 29, 31, true, false},  // deep input: small blocks that end mid-row
    {1, 64, 40, 45, 67, false, true},   // several blocks over one odd-sized map
};

// The filter transform, done in chunks of filters, equals (G (x) G) vec(g) in double, rounded once,
// filter by filter and bit for bit: mixed signs and magnitudes, a partial last chunk.
TEST(Winograd, FilterTransformEqualsTheKroneckerProduct) {
  std::mt19937 generator(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::int64_t out_channels = 37, in_channels = 19;  // 703 filters: chunks of 256 and a tail
  std::vector<float> weights(static_cast<std::size_t>(out_channels * in_channels * 9));
  for (std::size_t i = 0; i < weights.size(); ++i) {
    weights[i] = normal(generator) * std::ldexp(1.0f, static_cast<int>(i % 13) - 6);
  }
  const std::int64_t filters = out_channels * in_channels;
  std::vector<float> transformed(static_cast<std::size_t>(16 * filters));
  detail::winograd_transform_filter(weights.data(), out_channels, in_channels, transformed.data());
  const Eigen::Matrix<double, 16, 9> kron = detail::winograd_filter_matrix();
  for (std::int64_t f = 0; f < filters; ++f) {
    Eigen::Matrix<double, 9, 1> g;
    for (int k = 0; k < 9; ++k) g(k) = weights[static_cast<std::size_t>(f * 9 + k)];
    const Eigen::Matrix<double, 16, 1> u = kron * g;
    for (int k = 0; k < 16; ++k) {
      ASSERT_EQ(transformed[static_cast<std::size_t>(k * filters + f)], static_cast<float>(u(k)))
          << "filter " << f << ", position " << k;
    }
  }
}

TEST(Winograd, FloatMatchesDoubleDefinitionOnSeededShapes) {
  double worst_winograd = 0.0, worst_im2col = 0.0;
  unsigned seed = 11;
  for (const Case& shape : seeded_cases) {
    SCOPED_TRACE(Shape({shape.batch, shape.in_channels, shape.height, shape.width}).str() + " -> " +
                 std::to_string(shape.out_channels) + (shape.bias ? " bias" : "") +
                 (shape.relu ? " relu" : ""));
    const Problem problem(shape, seed++);
    const Conv2dParams winograd{1, 1, activation_of(shape.relu), Conv2dAlgorithm::winograd};
    const Conv2dParams im2col{1, 1, activation_of(shape.relu), Conv2dAlgorithm::im2col};
    const Tensor<float> fast = conv2d(problem.input, problem.weight, problem.bias, winograd);
    const Tensor<float> reference = conv2d(problem.input, problem.weight, problem.bias, im2col);
    const double winograd_error = relative_error(fast, problem.expected);
    const double im2col_error = relative_error(reference, problem.expected);
    EXPECT_LE(winograd_error, float_tolerance);
    EXPECT_TRUE(tensors_close(fast, reference, 2 * float_tolerance));
    worst_winograd = std::max(worst_winograd, winograd_error);
    worst_im2col = std::max(worst_im2col, im2col_error);
  }
  std::cout << "[ winograd ] worst relative error vs double definition: winograd " << worst_winograd
            << ", im2col " << worst_im2col << "\n";
}

TEST(Winograd, DoublePrecisionMatchesDefinition) {
  unsigned seed = 101;
  for (const Case& shape : seeded_cases) {
    const Problem problem(shape, seed++);
    const Tensor<double> output = conv2d<double>(
        cast<double>(problem.input), cast<double>(problem.weight), cast<double>(problem.bias),
        Conv2dParams{1, 1, activation_of(shape.relu), Conv2dAlgorithm::winograd});
    EXPECT_LE(relative_error(output, problem.expected), 1e-14);
  }
}

TEST(Winograd, MatchesTorchFixtureConvs) {
  const auto& file = fixture("ops_dense");
  const int cases = std::stoi(file.metadata().at("conv"));
  int checked = 0;
  for (int index = 0; index < cases; ++index) {
    const std::string key = "conv/" + std::to_string(index) + "/";
    const auto weight = file.load_float(key + "weight");
    const auto params = file.load_float(key + "params");
    if (weight.dim(2) != 3 || params.at(0) != 1.0f || params.at(1) != 1.0f) continue;
    SCOPED_TRACE(key);
    const auto input = file.load_float(key + "input");
    const Conv2dParams conv{1, 1, activation_of(params.at(2) != 0.0f), Conv2dAlgorithm::winograd};
    const Tensor<float> output = file.contains(key + "bias")
                                     ? conv2d(input, weight, file.load_float(key + "bias"), conv)
                                     : conv2d(input, weight, conv);
    const auto expected = file.load_float(key + "output");
    EXPECT_TRUE(tensors_close(output, expected, 1e-5));
    std::cout << "[ winograd ] fixture " << key << " " << input.shape().str() << ": relative error "
              << fpn::testing::relative_max_error(output, expected) << "\n";
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

TEST(Winograd, AutomaticPicksWinogradOnlyWhereItPays) {
  const std::pair<Case, bool> cases[] = {
      {{2, 32, 24, 30, 41, true, true}, true},  // large enough
      {{1, 8, 24, 40, 40, true, true}, false},  // too few input channels
      {{1, 64, 64, 8, 8, true, true}, false},   // too few pixels
      {{4, 64, 64, 8, 8, true, true}, true},    // ... unless the batch brings them
  };
  for (const auto& [shape, expect_winograd] : cases) {
    const Problem problem(shape, 5);
    const bool pays = detail::winograd_pays(shape.batch, shape.in_channels, shape.out_channels,
                                            shape.height, shape.width);
    EXPECT_EQ(pays, expect_winograd);
    const auto run = [&](Conv2dAlgorithm algorithm) {
      return conv2d(problem.input, problem.weight, problem.bias,
                    Conv2dParams{1, 1, Activation::relu, algorithm});
    };
    const Tensor<float> automatic = run(Conv2dAlgorithm::automatic);
    const Tensor<float> chosen = run(pays ? Conv2dAlgorithm::winograd : Conv2dAlgorithm::im2col);
    EXPECT_TRUE(
        std::equal(automatic.span().begin(), automatic.span().end(), chosen.span().begin()));
  }
}

TEST(Winograd, RejectsConvsItCannotCompute) {
  const Tensor<float> input(Shape{1, 3, 8, 8});
  try {
    (void)conv2d(input, Tensor<float>(Shape{4, 3, 3, 3}),
                 Conv2dParams{2, 1, Activation::identity, Conv2dAlgorithm::winograd});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(),
                 "conv2d: the winograd algorithm needs kernel 3, stride 1 and padding 1, got "
                 "kernel 3, stride 2 and padding 1");
  }
  EXPECT_THROW((void)conv2d(input, Tensor<float>(Shape{4, 3, 1, 1}),
                            Conv2dParams{1, 0, Activation::identity, Conv2dAlgorithm::winograd}),
               ArgumentError);
}

}  // namespace
}  // namespace fpn::ops
