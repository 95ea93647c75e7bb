// MobileNetV3's ops against torch: depthwise_conv2d (with its activation epilogue),
// squeeze_excitation_in_place and the activations themselves; misuse messages; thread-count
// invariance.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include "../support/expect_error.hpp"
#include "../support/fixtures.hpp"
#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/activation.hpp"
#include "fpn/ops/depthwise_conv2d.hpp"
#include "fpn/ops/squeeze_excitation.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

// Every case "<op>/<index>/" of the ops_mobile fixture.
template <typename Check>
void for_each_case(const std::string& op, int minimum_cases, Check check) {
  fpn::testing::for_each_case("ops_mobile", op, minimum_cases, check);
}

Tensor<float> random_tensor(Shape shape, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal;
  auto tensor = Tensor<float>::uninitialized(shape);
  for (float& value : tensor.span()) value = normal(random) * scale;
  return tensor;
}

bool bitwise_equal(const Tensor<float>& lhs, const Tensor<float>& rhs) {
  return lhs.shape() == rhs.shape() &&
         std::memcmp(lhs.data(), rhs.data(), sizeof(float) * std::size_t(lhs.numel())) == 0;
}

// ---------------------------------------------------------------------------------------------
// depthwise_conv2d

TEST(DepthwiseConv2d, MatchesTorch) {
  for_each_case("depthwise", 31, [](const std::string& key, const io::SafeTensors& file) {
    const auto params = file.load_float(key + "params");
    const DepthwiseConv2dParams depthwise{static_cast<int>(params.at(0)),
                                          static_cast<int>(params.at(1)),
                                          static_cast<Activation>(static_cast<int>(params.at(2)))};
    const auto input = file.load_float(key + "input");
    const auto weight = file.load_float(key + "weight");
    const Tensor<float> output =
        params.at(3) != 0.0f
            ? depthwise_conv2d(input, weight, file.load_float(key + "bias"), depthwise)
            : depthwise_conv2d(input, weight, depthwise);
    EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 1e-5))
        << activation_name(depthwise.activation);
  });
}

// The definition, in double: every tap inside the image, then the bias.
Tensor<double> naive_depthwise(const Tensor<float>& input, const Tensor<float>& weight,
                               const Tensor<float>& bias, int stride, int padding) {
  const auto n = input.dim(0), c = input.dim(1), h = input.dim(2), w = input.dim(3);
  const auto k = weight.dim(2);
  const auto oh = (h + 2 * padding - k) / stride + 1, ow = (w + 2 * padding - k) / stride + 1;
  Tensor<double> out(Shape{n, c, oh, ow});
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t ch = 0; ch < c; ++ch)
      for (std::int64_t y = 0; y < oh; ++y)
        for (std::int64_t x = 0; x < ow; ++x) {
          double sum = bias.at(ch);
          for (std::int64_t ky = 0; ky < k; ++ky)
            for (std::int64_t kx = 0; kx < k; ++kx) {
              const std::int64_t iy = y * stride - padding + ky, ix = x * stride - padding + kx;
              if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                sum += double(input.at(b, ch, iy, ix)) * weight.at(ch, 0, ky, kx);
            }
          out.at(b, ch, y, x) = sum;
        }
  return out;
}

// Seeded shapes around the border and band logic (widths shorter than, equal to and longer than a
// vector; every padding up to past the kernel; strides 1 to 3), against the definition.
TEST(DepthwiseConv2d, MatchesDefinitionOnSeededShapes) {
  std::mt19937 random(7);
  std::uniform_int_distribution<int> size(1, 40);
  std::uint32_t seed = 1;
  for (int kernel : {1, 2, 3, 5, 7}) {
    for (int stride : {1, 2, 3}) {
      for (int padding = 0; padding <= kernel; ++padding) {
        const std::int64_t height = std::max(size(random), kernel);
        const std::int64_t width = std::max(size(random), kernel);
        SCOPED_TRACE(std::to_string(kernel) + "x" + std::to_string(kernel) + " stride " +
                     std::to_string(stride) + " padding " + std::to_string(padding) + " on " +
                     std::to_string(height) + "x" + std::to_string(width));
        const auto input = random_tensor(Shape{1, 3, height, width}, seed++);
        const auto weight = random_tensor(Shape{3, 1, kernel, kernel}, seed++);
        const auto bias = random_tensor(Shape{3}, seed++);
        const auto output = depthwise_conv2d(input, weight, bias, {stride, padding});
        const auto expected = naive_depthwise(input, weight, bias, stride, padding);
        ASSERT_TRUE(output.shape() == expected.shape());
        double max_error = 0.0;
        for (std::int64_t i = 0; i < output.numel(); ++i) {
          max_error = std::max(max_error, std::abs(output.data()[i] - expected.data()[i]));
        }
        EXPECT_LT(max_error, 1e-5 * kernel * kernel);
      }
    }
  }
}

TEST(DepthwiseConv2d, IntoWritesWhatItReturns) {
  const auto input = random_tensor(Shape{1, 24, 31, 45}, 1);
  const auto weight = random_tensor(Shape{24, 1, 5, 5}, 2);
  const auto bias = random_tensor(Shape{24}, 3);
  const DepthwiseConv2dParams params{2, 2, Activation::hardswish};
  const auto expected = depthwise_conv2d(input, weight, bias, params);
  Tensor<float> output(expected.shape(), -1.0f);
  depthwise_conv2d_into(input, weight, bias, params, output.view());
  EXPECT_TRUE(bitwise_equal(output, expected));
}

// Every path (stride 1 in place and its borders, the stride-2 ring, the general kernel) and
// channel bands split across tasks: results must not depend on which thread computed what.
TEST(DepthwiseConv2d, BitwiseIdenticalOnOneAndTwoThreads) {
  struct Case {
    std::int64_t channels, height, width;
    int kernel, stride;
    Activation activation;
  };
  const Case cases[] = {{16, 200, 120, 3, 1, Activation::relu},
                        {16, 200, 120, 3, 2, Activation::hardswish},
                        {40, 67, 51, 5, 1, Activation::hardsigmoid},
                        {40, 67, 51, 5, 2, Activation::identity},
                        {8, 90, 70, 7, 2, Activation::hardswish}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.kernel) + "x" + std::to_string(c.kernel) + " stride " +
                 std::to_string(c.stride));
    const auto input = random_tensor(Shape{1, c.channels, c.height, c.width}, 11, 2.0f);
    const auto weight = random_tensor(Shape{c.channels, 1, c.kernel, c.kernel}, 12, 0.3f);
    const auto bias = random_tensor(Shape{c.channels}, 13);
    const DepthwiseConv2dParams params{c.stride, c.kernel / 2, c.activation};
    Tensor<float> one_thread;
    {
      const ThreadLimit limit(1);
      one_thread = depthwise_conv2d(input, weight, bias, params);
    }
    const ThreadLimit limit(2);
    EXPECT_TRUE(bitwise_equal(depthwise_conv2d(input, weight, bias, params), one_thread));
  }
}

// Expects call() to throw Error type with exactly `message`.
using fpn::testing::expect_error;

TEST(DepthwiseConv2d, RejectsMisuseWithClearMessages) {
  const Tensor<float> input(Shape{1, 16, 8, 8});
  const Tensor<float> weight(Shape{16, 1, 3, 3});
  const Tensor<float> bias(Shape{16});
  const DepthwiseConv2dParams same{1, 1, Activation::relu};
  expect_error<ShapeError>(
      [&] {
        (void)depthwise_conv2d(Tensor<float>(Shape{16, 8, 8}), weight, bias, same);
      },
      "depthwise_conv2d: input must be [N, C, H, W], got [16, 8, 8]");
  expect_error<ShapeError>(  // a dense conv's weight
      [&] {
        (void)depthwise_conv2d(input, Tensor<float>(Shape{16, 16, 3, 3}), bias, same);
      },
      "depthwise_conv2d: weight must be [16, 1, k, k] (one filter per channel) for input "
      "[1, 16, 8, 8], got [16, 16, 3, 3]");
  expect_error<ShapeError>(  // another layer's channels
      [&] {
        (void)depthwise_conv2d(input, Tensor<float>(Shape{72, 1, 3, 3}), bias, same);
      },
      "depthwise_conv2d: weight must be [16, 1, k, k] (one filter per channel) for input "
      "[1, 16, 8, 8], got [72, 1, 3, 3]");
  expect_error<ShapeError>(  // not square
      [&] {
        (void)depthwise_conv2d(input, Tensor<float>(Shape{16, 1, 3, 5}), bias, same);
      },
      "depthwise_conv2d: weight must be [16, 1, k, k] (one filter per channel) for input "
      "[1, 16, 8, 8], got [16, 1, 3, 5]");
  expect_error<ShapeError>(
      [&] { (void)depthwise_conv2d(input, weight, Tensor<float>(Shape{72}), same); },
      "depthwise_conv2d: bias must be [16] or empty, got [72]");
  expect_error<ArgumentError>(
      [&] {
        (void)depthwise_conv2d(input, weight, bias, {0, 1, Activation::relu});
      },
      "depthwise_conv2d: stride must be >= 1 and padding >= 0, got stride 0 and padding 1");
  expect_error<ArgumentError>(
      [&] {
        (void)depthwise_conv2d(input, weight, bias, {2, -1, Activation::relu});
      },
      "depthwise_conv2d: stride must be >= 1 and padding >= 0, got stride 2 and padding -1");
  expect_error<ArgumentError>(
      [&] {
        (void)depthwise_conv2d(input, weight, bias, {1, 1, static_cast<Activation>(7)});
      },
      "depthwise_conv2d: activation must be identity, relu, hardswish or hardsigmoid, got the "
      "value 7");
  expect_error<ShapeError>(
      [&] {
        (void)depthwise_conv2d(Tensor<float>(Shape{1, 16, 2, 8}), Tensor<float>(Shape{16, 1, 5, 5}),
                               bias, {1, 1, Activation::relu});
      },
      "depthwise_conv2d: input must be at least 5x5 after padding 1, got [1, 16, 2, 8]");
}

TEST(DepthwiseConv2d, IntoRejectsAWrongOrOverlappingOutput) {
  const Tensor<float> input(Shape{1, 4, 8, 8});
  const Tensor<float> weight(Shape{4, 1, 3, 3});
  Tensor<float> output(Shape{1, 4, 8, 7});
  expect_error<ShapeError>(
      [&] {
        depthwise_conv2d_into(input, weight, Tensor<float>(), {1, 1}, output.view());
      },
      "depthwise_conv2d_into: output must be [1, 4, 8, 8], got [1, 4, 8, 7]");
  Tensor<float> map(Shape{1, 4, 8, 8});
  expect_error<ArgumentError>(
      [&] {
        depthwise_conv2d_into(map.view(), weight, Tensor<float>(), {1, 1}, map.view());
      },
      "depthwise_conv2d_into: output must not overlap the input");
}

// ---------------------------------------------------------------------------------------------
// squeeze_excitation_in_place

TEST(SqueezeExcitation, MatchesTorch) {
  for_each_case("squeeze_excitation", 4, [](const std::string& key, const io::SafeTensors& file) {
    auto x = file.load_float(key + "input");
    const auto fc1_weight = file.load_float(key + "fc1_weight");
    const auto fc1_bias = file.load_float(key + "fc1_bias");
    const auto fc2_weight = file.load_float(key + "fc2_weight");
    const auto fc2_bias = file.load_float(key + "fc2_bias");
    squeeze_excitation_in_place(x.view(), {fc1_weight, fc1_bias, fc2_weight, fc2_bias});
    EXPECT_TRUE(tensors_close(x, file.load_float(key + "output"), 2e-6));
  });
}

TEST(SqueezeExcitation, BitwiseIdenticalOnOneAndTwoThreads) {
  const auto input = random_tensor(Shape{1, 72, 100, 152}, 21);
  const auto fc1_weight = random_tensor(Shape{24, 72, 1, 1}, 22, 0.1f);
  const auto fc1_bias = random_tensor(Shape{24}, 23);
  const auto fc2_weight = random_tensor(Shape{72, 24, 1, 1}, 24, 0.2f);
  const auto fc2_bias = random_tensor(Shape{72}, 25);
  const SqueezeExcitationWeights<float> weights{fc1_weight, fc1_bias, fc2_weight, fc2_bias};
  Tensor<float> one_thread = input;
  {
    const ThreadLimit limit(1);
    squeeze_excitation_in_place(one_thread.view(), weights);
  }
  Tensor<float> two_threads = input;
  const ThreadLimit limit(2);
  squeeze_excitation_in_place(two_threads.view(), weights);
  EXPECT_TRUE(bitwise_equal(two_threads, one_thread));
}

TEST(SqueezeExcitation, RejectsMisuseWithClearMessages) {
  Tensor<float> x(Shape{1, 72, 13, 11});
  const Tensor<float> fc1_weight(Shape{24, 72, 1, 1});
  const Tensor<float> fc1_bias(Shape{24});
  const Tensor<float> fc2_weight(Shape{72, 24, 1, 1});
  const Tensor<float> fc2_bias(Shape{72});
  expect_error<ShapeError>(
      [&] {
        squeeze_excitation_in_place(
            x.view(), {Tensor<float>(Shape{24, 40, 1, 1}).view(), fc1_bias, fc2_weight, fc2_bias});
      },
      "squeeze_excitation_in_place: fc1_weight must be [S, 72, 1, 1] for x [1, 72, 13, 11], got "
      "[24, 40, 1, 1]");
  expect_error<ShapeError>(
      [&] {
        squeeze_excitation_in_place(
            x.view(), {fc1_weight, Tensor<float>(Shape{32}).view(), fc2_weight, fc2_bias});
      },
      "squeeze_excitation_in_place: fc1_bias must be [24], got [32]");
  expect_error<ShapeError>(
      [&] {
        squeeze_excitation_in_place(
            x.view(), {fc1_weight, fc1_bias, Tensor<float>(Shape{72, 32, 1, 1}).view(), fc2_bias});
      },
      "squeeze_excitation_in_place: fc2_weight must be [72, 24, 1, 1], got [72, 32, 1, 1]");
  expect_error<ShapeError>(
      [&] {
        squeeze_excitation_in_place(x.view(),
                                    {fc1_weight, fc1_bias, fc2_weight, Tensor<float>().view()});
      },
      "squeeze_excitation_in_place: fc2_bias must be [72], got [0]");
  Tensor<float> flat(Shape{72, 13});
  expect_error<ShapeError>(
      [&] {
        squeeze_excitation_in_place(flat.view(), {fc1_weight, fc1_bias, fc2_weight, fc2_bias});
      },
      "squeeze_excitation_in_place: x must be [N, C, H, W], got [72, 13]");
  Tensor<float> empty(Shape{1, 72, 0, 11});
  expect_error<ShapeError>(
      [&] {
        squeeze_excitation_in_place(empty.view(), {fc1_weight, fc1_bias, fc2_weight, fc2_bias});
      },
      "squeeze_excitation_in_place: x must be at least 1x1 (the mean of an empty map is "
      "undefined), got [1, 72, 0, 11]");
}

// ---------------------------------------------------------------------------------------------
// The activations: torch's own formulas, so equal to the bit (NaN for NaN).

bool same_float(float actual, float expected) {
  if (std::isnan(expected)) return std::isnan(actual);
  return std::bit_cast<std::uint32_t>(actual) == std::bit_cast<std::uint32_t>(expected);  // -0 too
}

TEST(Activation, MatchesTorchToTheBit) {
  const auto& file = fixture("ops_mobile");
  const auto input = file.load_float("activation/input");
  ASSERT_GT(input.numel(), 1000);
  for (Activation activation :
       {Activation::identity, Activation::relu, Activation::hardswish, Activation::hardsigmoid}) {
    const std::string name(activation_name(activation));
    SCOPED_TRACE(name);
    const auto expected = file.load_float("activation/" + name);
    Tensor<float> in_place = input;
    activate_in_place(activation, in_place.data(), in_place.numel());
    // One row of a row-major block, as a GEMM's epilogue passes it.
    Eigen::Matrix<float, 1, Eigen::Dynamic> line =
        Eigen::Map<const Eigen::Matrix<float, 1, Eigen::Dynamic>>(input.data(), input.numel());
    activate_line(activation, line);
    int scalar_mismatches = 0, in_place_mismatches = 0, line_mismatches = 0;
    for (std::int64_t i = 0; i < input.numel(); ++i) {
      const float x = input.data()[i], want = expected.data()[i];
      if (!same_float(activate(activation, x), want)) {
        if (++scalar_mismatches <= 3) ADD_FAILURE() << "activate(" << x << ") != " << want;
      }
      if (!same_float(in_place.data()[i], want)) {
        if (++in_place_mismatches <= 3) ADD_FAILURE() << "in place at " << x << " != " << want;
      }
      if (!same_float(line(i), want)) {
        if (++line_mismatches <= 3)
          ADD_FAILURE() << "line at " << x << ": " << line(i) << " != " << want;
      }
    }
  }
}

}  // namespace
}  // namespace fpn::ops
