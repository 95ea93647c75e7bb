// group_norm against torch.nn.GroupNorm (tools/fixtures/ops_group_norm.py) and by hand; its
// argument checks; bitwise-identical results at any thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../support/expect_error.hpp"
#include "../support/fixtures.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/group_norm.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::relative_max_error;
using fpn::testing::tensors_close;

struct FixtureCase {
  Tensor<float> input;
  Tensor<float> weight;  // empty when the case has none
  Tensor<float> bias;    // empty when the case has none
  std::int64_t groups;
  float eps;
  Activation activation;
  Tensor<float> output;        // torch in float32
  Tensor<float> output_exact;  // torch in float64, rounded to float32
};

FixtureCase load_case(const io::SafeTensors& file, const std::string& key) {
  const auto params = file.load_float(key + "params");
  FixtureCase c{file.load_float(key + "input"),
                params.at(2) != 0.0f ? file.load_float(key + "weight") : Tensor<float>(),
                params.at(3) != 0.0f ? file.load_float(key + "bias") : Tensor<float>(),
                static_cast<std::int64_t>(params.at(0)),
                params.at(1),
                static_cast<Activation>(static_cast<int>(params.at(4))),
                file.load_float(key + "output"),
                file.load_float(key + "output_exact")};
  return c;
}

// Calls check(key, case) for every case "group_norm/<index>/" of the fixture.
template <typename Check>
void for_each_case(Check check) {
  const auto& file = fixture("ops_group_norm");
  const int cases = std::stoi(file.metadata().at("group_norm"));
  ASSERT_GE(cases, 10);
  for (int index = 0; index < cases; ++index) {
    const std::string key = "group_norm/" + std::to_string(index) + "/";
    SCOPED_TRACE(key);
    check(key, load_case(file, key));
  }
}

bool bitwise_equal(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0;
}

// Statistics in double put each output within about one float rounding of the exact value
// (output_exact); against torch, which computes in float, the difference is torch's own error,
// which stays under 1e-5 relative unless the input's mean dwarfs its spread (the last case).
TEST(GroupNorm, MatchesTorch) {
  for_each_case([](const std::string& key, const FixtureCase& c) {
    const auto output = group_norm(c.input, c.groups, c.weight, c.bias, c.eps, c.activation);
    const double torch_error = relative_max_error(c.output, c.output_exact);
    std::printf("%s %s: vs torch %.3g, vs exact %.3g (torch vs exact %.3g)\n", key.c_str(),
                c.input.shape().str().c_str(), relative_max_error(output, c.output),
                relative_max_error(output, c.output_exact), torch_error);
    EXPECT_TRUE(tensors_close(output, c.output_exact, 2e-7));
    EXPECT_TRUE(tensors_close(output, c.output, 1e-5 + torch_error));
  });
}

TEST(GroupNorm, InPlaceEqualsValueReturning) {
  for_each_case([](const std::string&, const FixtureCase& c) {
    Tensor<float> in_place = c.input;
    group_norm_in_place(in_place.view(), c.groups, c.weight, c.bias, c.eps, c.activation);
    EXPECT_TRUE(bitwise_equal(
        in_place, group_norm(c.input, c.groups, c.weight, c.bias, c.eps, c.activation)));
  });
}

// x = [1, 2 | 3, 4] as [1, 2, 1, 2] (channel 0 holds 1, 2; channel 1 holds 3, 4).
// groups 1: mean 2.5, var (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; with eps 2.75, rstd = 1/2, so
// the normalised values are -0.75, -0.25, 0.25, 0.75. weight (2, -1), bias (0.5, 1):
// channel 0: 2 * (-0.75, -0.25) + 0.5 = (-1, 0); channel 1: -(0.25, 0.75) + 1 = (0.75, 0.25).
// groups 2: each channel alone, mean 1.5 or 3.5, var 0.25; with eps 0.75, rstd = 1, so both
// channels normalise to (-0.5, 0.5), and the affine map gives (-0.5, 1.5) and (1.5, 0.5).
// Every number is exact in float, and so is the result.
TEST(GroupNorm, HandDerived) {
  const Tensor<float> input =
      Tensor<float>::from_span(Shape{1, 2, 1, 2}, std::vector<float>{1, 2, 3, 4});
  const Tensor<float> weight = Tensor<float>::from_span(Shape{2}, std::vector<float>{2, -1});
  const Tensor<float> bias = Tensor<float>::from_span(Shape{2}, std::vector<float>{0.5f, 1});
  const auto expect = [](const Tensor<float>& actual, std::vector<float> expected) {
    ASSERT_EQ(actual.numel(), 4);
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(actual.data()[i], expected[static_cast<std::size_t>(i)]) << i;
  };
  expect(group_norm(input, 1, {}, {}, 2.75f), {-0.75f, -0.25f, 0.25f, 0.75f});
  expect(group_norm(input, 1, weight, bias, 2.75f), {-1, 0, 0.75f, 0.25f});
  expect(group_norm(input, 1, weight, bias, 2.75f, Activation::relu), {0, 0, 0.75f, 0.25f});
  expect(group_norm(input, 2, {}, {}, 0.75f), {-0.5f, 0.5f, -0.5f, 0.5f});
  expect(group_norm(input, 2, weight, bias, 0.75f), {-0.5f, 1.5f, 1.5f, 0.5f});
  // A constant group has variance 0: every value maps to the bias.
  const Tensor<float> constant(Shape{1, 2, 3, 3}, 7.25f);
  expect(group_norm(Tensor<float>(Shape{1, 2, 1, 2}, 7.25f), 1, weight, bias, 1e-5f),
         {0.5f, 0.5f, 1, 1});
  // Without an affine map they normalise to 0, up to the double rounding of mean * scale.
  const auto normalised = group_norm(constant, 2, {}, {}, 1e-5f);
  for (const float value : normalised.span()) EXPECT_NEAR(value, 0.0f, 1e-9f);
}

// Statistics are per image: the second image of a batch is normalised as if it were alone.
TEST(GroupNorm, BatchImagesAreIndependent) {
  std::mt19937 generator(7);
  std::normal_distribution<float> normal(1.0f, 3.0f);
  Tensor<float> batch(Shape{2, 8, 5, 6});
  for (float& value : batch.span()) value = normal(generator);
  const Tensor<float> weight(Shape{8}, 1.5f);
  const auto together = group_norm(batch, 4, weight, {}, 1e-5f, Activation::relu);
  for (std::int64_t n = 0; n < 2; ++n) {
    Tensor<float> single = Tensor<float>::from_span(
        Shape{1, 8, 5, 6}, std::span<const float>(batch.view().slice0(n).span()));
    const auto alone = group_norm(single, 4, weight, {}, 1e-5f, Activation::relu);
    EXPECT_EQ(std::memcmp(alone.data(), together.view().slice0(n).data(),
                          static_cast<std::size_t>(alone.numel()) * sizeof(float)),
              0)
        << "image " << n;
  }
}

TEST(GroupNorm, BitwiseIdenticalAtAnyThreadCount) {
  std::mt19937 generator(11);
  std::normal_distribution<float> normal(3.0f, 2.0f);
  // Planes large and small: tasks of one plane each, and tasks of many 1x1 planes.
  for (const Shape& shape : {Shape{1, 256, 50, 76}, Shape{2, 4096, 1, 1}, Shape{1, 64, 200, 1}}) {
    SCOPED_TRACE(shape.str());
    Tensor<float> input(shape);
    for (float& value : input.span()) value = normal(generator);
    Tensor<float> weight(Shape{shape[1]});
    Tensor<float> bias(Shape{shape[1]});
    for (float& value : weight.span()) value = normal(generator);
    for (float& value : bias.span()) value = normal(generator);
    const auto run = [&](int threads) {
      const ThreadLimit limit(threads);
      return group_norm(input, 32, weight, bias, 1e-5f, Activation::relu);
    };
    const auto reference = run(1);
    EXPECT_TRUE(bitwise_equal(run(2), reference));
    EXPECT_TRUE(bitwise_equal(run(3), reference));
  }
}

using fpn::testing::expect_error;

TEST(GroupNorm, RejectsMisuse) {
  const Tensor<float> input(Shape{1, 6, 4, 4});
  const Tensor<float> per_channel(Shape{6}, 1.0f);
  expect_error<ShapeError>([&] { (void)group_norm(input, 4, {}, {}, 1e-5f); },
                           "group_norm: input must be [N, C, H, W] with C divisible by groups (4), "
                           "got [1, 6, 4, 4]");
  expect_error<ArgumentError>([&] { (void)group_norm(input, 0, {}, {}, 1e-5f); },
                              "group_norm: groups must be >= 1, got 0");
  expect_error<ArgumentError>([&] { (void)group_norm(input, -2, {}, {}, 1e-5f); },
                              "group_norm: groups must be >= 1, got -2");
  expect_error<ShapeError>(
      [&] { (void)group_norm(input, 3, Tensor<float>(Shape{5}, 1.0f), per_channel, 1e-5f); },
      "group_norm: weight must be [6] (one per channel) or empty, got [5]");
  expect_error<ShapeError>(
      [&] {
        (void)group_norm(input, 3, per_channel, Tensor<float>(Shape{1, 6}, 0.0f), 1e-5f);
      },
      "group_norm: bias must be [6] (one per channel) or empty, got [1, 6]");
  expect_error<ArgumentError>([&] { (void)group_norm(input, 3, {}, {}, 0.0f); },
                              "group_norm: eps must be a finite number > 0, got 0");
  expect_error<ArgumentError>([&] { (void)group_norm(input, 3, {}, {}, -1e-5f); },
                              "group_norm: eps must be a finite number > 0, got -1e-05");
  expect_error<ArgumentError>(
      [&] { (void)group_norm(input, 3, {}, {}, std::numeric_limits<float>::quiet_NaN()); },
      "group_norm: eps must be a finite number > 0, got nan");
  expect_error<ArgumentError>(
      [&] { (void)group_norm(input, 3, {}, {}, std::numeric_limits<float>::infinity()); },
      "group_norm: eps must be a finite number > 0, got inf");
  expect_error<ArgumentError>(
      [&] { (void)group_norm(input, 3, {}, {}, 1e-5f, static_cast<Activation>(9)); },
      "group_norm: activation must be identity, relu, hardswish or hardsigmoid, got value 9");
  expect_error<ShapeError>(
      [&] {
        (void)group_norm(Tensor<float>(Shape{6, 4, 4}), 3, {}, {}, 1e-5f);
      },
      "group_norm: input must be [N, C, H, W], got [6, 4, 4]");
  // The in-place form checks the same, under its own name, and leaves x untouched.
  Tensor<float> x(Shape{1, 6, 2, 2}, 3.0f);
  expect_error<ShapeError>([&] { group_norm_in_place(x.view(), 4, {}, {}, 1e-5f); },
                           "group_norm_in_place: input must be [N, C, H, W] with C divisible by "
                           "groups (4), got [1, 6, 2, 2]");
  for (const float value : x.span()) EXPECT_EQ(value, 3.0f);
}

TEST(GroupNorm, EmptyMapsAreLeftAlone) {
  EXPECT_EQ(group_norm(Tensor<float>(Shape{0, 8, 4, 4}), 2, {}, {}, 1e-5f).numel(), 0);
  EXPECT_EQ(group_norm(Tensor<float>(Shape{1, 8, 0, 4}), 2, {}, {}, 1e-5f).numel(), 0);
}

}  // namespace
}  // namespace fpn::ops
