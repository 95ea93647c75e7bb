// max_pool2d, upsample_nearest, conv_transpose2d, linear, add and relu against torch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>

#include "../support/fixtures.hpp"
#include "fpn/ops/conv_transpose2d.hpp"
#include "fpn/ops/elementwise.hpp"
#include "fpn/ops/linear.hpp"
#include "fpn/ops/max_pool2d.hpp"
#include "fpn/ops/packed_linear.hpp"
#include "fpn/ops/upsample.hpp"

namespace fpn::ops {
namespace {

using fpn::testing::fixture;
using fpn::testing::tensors_close;

// Every case "<op>/<index>/" of the ops_dense fixture.
template <typename Check>
void for_each_case(const std::string& op, int minimum_cases, Check check) {
  fpn::testing::for_each_case("ops_dense", op, minimum_cases, check);
}

TEST(MaxPool2d, MatchesTorch) {
  for_each_case("max_pool", 4, [](const std::string& key, const io::SafeTensors& file) {
    const auto params = file.load_float(key + "params");
    const MaxPool2dParams pool{static_cast<int>(params.at(0)), static_cast<int>(params.at(1)),
                               static_cast<int>(params.at(2))};
    EXPECT_TRUE(tensors_close(max_pool2d(file.load_float(key + "input"), pool),
                              file.load_float(key + "output"), 0.0));
  });
}

// Every window's maximum, scanned as torch does, with NaN winning wherever it is in the window:
// the separable kernel (rows, then columns) must give the same at every kernel, stride, padding
// and edge.
TEST(MaxPool2d, EqualsTheWindowScanWithNaNsAndEdges) {
  std::mt19937 generator(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const MaxPool2dParams pool : {MaxPool2dParams{3, 2, 1}, MaxPool2dParams{1, 2, 0},
                                     MaxPool2dParams{2, 2, 0}, MaxPool2dParams{3, 1, 1},
                                     MaxPool2dParams{5, 3, 2}, MaxPool2dParams{4, 1, 2}}) {
    for (const auto& [height, width] : {std::pair{7, 9}, std::pair{8, 8}, std::pair{13, 5}}) {
      Tensor<float> input(Shape{2, 3, height, width});
      for (float& value : input.span()) value = uniform(generator);
      input.data()[5] = std::numeric_limits<float>::quiet_NaN();
      input.data()[input.numel() - 1] = std::numeric_limits<float>::quiet_NaN();
      input.data()[2 * height * width + width + 2] = std::numeric_limits<float>::quiet_NaN();
      const Tensor<float> output = max_pool2d(input, pool);
      const std::int64_t out_h = output.dim(2), out_w = output.dim(3);
      ASSERT_EQ(out_h, (height + 2 * pool.padding - pool.kernel) / pool.stride + 1);
      for (std::int64_t plane = 0; plane < 6; ++plane) {
        for (std::int64_t oy = 0; oy < out_h; ++oy) {
          for (std::int64_t ox = 0; ox < out_w; ++ox) {
            float best = -std::numeric_limits<float>::infinity();
            for (std::int64_t y = oy * pool.stride - pool.padding;
                 y < oy * pool.stride - pool.padding + pool.kernel; ++y) {
              for (std::int64_t x = ox * pool.stride - pool.padding;
                   x < ox * pool.stride - pool.padding + pool.kernel; ++x) {
                if (y < 0 || y >= height || x < 0 || x >= width) continue;
                const float value = input.data()[(plane * height + y) * width + x];
                if (value > best || std::isnan(value)) best = value;
              }
            }
            const float got = output.data()[(plane * out_h + oy) * out_w + ox];
            if (std::isnan(best)) {
              ASSERT_TRUE(std::isnan(got)) << plane << " " << oy << " " << ox;
            } else {
              ASSERT_EQ(got, best) << plane << " " << oy << " " << ox;
            }
          }
        }
      }
    }
  }
}

TEST(MaxPool2d, RejectsPaddingOverHalfTheKernel) {
  try {
    (void)max_pool2d(Tensor<float>(Shape{1, 1, 4, 4}), MaxPool2dParams{2, 2, 2});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(),
                 "max_pool2d: need kernel >= 1, stride >= 1 and 0 <= padding <= kernel / 2, got "
                 "kernel 2, stride 2, padding 2");
  }
}

TEST(UpsampleNearest, MatchesTorchIndexRuleOnOddSizes) {
  for_each_case("upsample", 5, [](const std::string& key, const io::SafeTensors& file) {
    const auto params = file.load_float(key + "params");
    const auto output = upsample_nearest(file.load_float(key + "input"),
                                         static_cast<int64_t>(params.at(0)),
                                         static_cast<int64_t>(params.at(1)));
    EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 0.0));
  });
}

TEST(UpsampleNearest, HandDerivedIndices) {
  // 3 -> 7: scale = 3/7 in float; floor(i * scale) for i = 0..6 is 0,0,0,1,1,2,2.
  Tensor<float> input(Shape{1, 1, 1, 3});
  for (int i = 0; i < 3; ++i) input.at(0, 0, 0, i) = static_cast<float>(i);
  const auto output = upsample_nearest(input, 1, 7);
  const float expected[] = {0, 0, 0, 1, 1, 2, 2};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(output.at(0, 0, 0, i), expected[i]);
}

// The fused top-down sum is the same single addition per element as upsampling then adding.
TEST(UpsampleNearest, AddUpsampledEqualsUpsampleThenAdd) {
  for (const auto& [rows, cols] : {std::pair{7, 10}, std::pair{8, 8}, std::pair{3, 5}}) {
    Tensor<float> source(Shape{2, 3, 3, 5});
    Tensor<float> target(Shape{2, 3, rows, cols});
    for (std::int64_t i = 0; i < source.numel(); ++i) source.data()[i] = 0.37f * float(i) - 4.1f;
    for (std::int64_t i = 0; i < target.numel(); ++i) target.data()[i] = 1.0f / float(i + 3);
    Tensor<float> expected = target;
    add_inplace(expected.view(), upsample_nearest(source, rows, cols));
    add_upsampled_nearest_inplace(target.view(), source.view());
    EXPECT_TRUE(tensors_close(target, expected, 0.0)) << rows << "x" << cols;
  }
  Tensor<float> target(Shape{1, 2, 4, 4});
  try {
    add_upsampled_nearest_inplace(target.view(), Tensor<float>(Shape{1, 3, 2, 2}).view());
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "add_upsampled_nearest_inplace: target must be [1, 3, H, W], got [1, 2, 4, 4]");
  }
}

TEST(ConvTranspose2d, MatchesTorch) {
  for_each_case("conv_transpose", 2, [](const std::string& key, const io::SafeTensors& file) {
    const int stride = static_cast<int>(file.load_float(key + "params").at(0));
    const auto output = conv_transpose2d(file.load_float(key + "input"),
                                         file.load_float(key + "weight"),
                                         file.load_float(key + "bias"), stride);
    EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 1e-5));
  });
}

TEST(ConvTranspose2d, RejectsKernelOtherThanStride) {
  try {
    (void)conv_transpose2d(Tensor<float>(Shape{1, 4, 3, 3}), Tensor<float>(Shape{4, 2, 3, 3}),
                           Tensor<float>(), 2);
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "conv_transpose2d: weight must be [4, Cout, 2, 2] (kernel equal to the stride), "
                 "got [4, 2, 3, 3]");
  }
}

TEST(Linear, MatchesTorch) {
  for_each_case("linear", 2, [](const std::string& key, const io::SafeTensors& file) {
    const auto output = linear(file.load_float(key + "input"), file.load_float(key + "weight"),
                               file.load_float(key + "bias"));
    EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 1e-5));
  });
}

TEST(Linear, PackedWeightMatchesTorch) {
  for_each_case("linear", 2, [](const std::string& key, const io::SafeTensors& file) {
    const PackedLinearWeight weight(file.load_float(key + "weight"));
    const auto output = linear(file.load_float(key + "input"), weight, file.load_float(key + "bias"));
    EXPECT_TRUE(tensors_close(output, file.load_float(key + "output"), 1e-5));
  });
}

// Every edge of the packed kernel: rows around its 6-row tiles and 288-row blocks, depth around
// its 256-long slices, outputs around the 64-wide panels; with and without bias, each activation.
// Reference: the sum in double.
TEST(Linear, PackedWeightMatchesTheDefinitionOnEveryTileEdge) {
  std::mt19937 generator(5);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const auto random = [&](Shape shape) {
    Tensor<float> tensor(shape);
    for (std::int64_t i = 0; i < tensor.numel(); ++i) tensor.data()[i] = uniform(generator);
    return tensor;
  };
  struct Case { std::int64_t rows, in, out; Activation activation; bool bias; };
  const Case cases[] = {{1, 1, 1, Activation::identity, true},     {5, 255, 63, Activation::relu, true},
                        {6, 256, 64, Activation::identity, false}, {7, 257, 65, Activation::hardswish, true},
                        {13, 600, 130, Activation::relu, false},   {289, 300, 70, Activation::hardsigmoid, true},
                        {300, 513, 129, Activation::relu, true}};
  for (const Case& c : cases) {
    const Tensor<float> x = random(Shape{c.rows, c.in});
    const Tensor<float> w = random(Shape{c.out, c.in});
    const Tensor<float> b = c.bias ? random(Shape{c.out}) : Tensor<float>();
    const Tensor<float> y = linear(x, PackedLinearWeight(w), b, c.activation);
    ASSERT_EQ(y.shape(), (Shape{c.rows, c.out}));
    for (std::int64_t r = 0; r < c.rows; ++r) {
      for (std::int64_t o = 0; o < c.out; ++o) {
        double sum = c.bias ? b.data()[o] : 0.0, magnitude = std::abs(sum);
        for (std::int64_t k = 0; k < c.in; ++k) {
          const double term = double{x.data()[r * c.in + k]} * w.data()[o * c.in + k];
          sum += term;
          magnitude += std::abs(term);
        }
        const double expected = activate(c.activation, sum);
        const double bound = 1e-6 * magnitude + 1e-6;  // ~16 float32 roundings of the terms' size
        ASSERT_NEAR(y.data()[r * c.out + o], expected, bound)
            << "rows " << c.rows << " in " << c.in << " out " << c.out << " at " << r << ", " << o;
      }
    }
  }
}

// A weight handed over (rvalue) is packed in place when `out` is a multiple of the panel width:
// the packing keeps the weight's storage (no second copy of the box head's fc6 at load) and is
// element for element the packing of a copy; other widths fall back to the copy.
TEST(Linear, PackedWeightTakenOverEqualsThePackedCopy) {
  std::mt19937 generator(9);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const auto& [out, in] : {std::pair<std::int64_t, std::int64_t>{64, 1}, {128, 257}, {192, 100},
                               {65, 33}, {3, 7}}) {
    Tensor<float> w(Shape{out, in});
    for (float& v : w.span()) v = uniform(generator);
    const PackedLinearWeight copied(w);
    Tensor<float> handed = w;
    const float* storage = handed.data();
    const PackedLinearWeight taken(std::move(handed));
    ASSERT_EQ(taken.panels(), copied.panels());
    EXPECT_EQ(taken.in_features(), in);
    EXPECT_EQ(taken.out_features(), out);
    EXPECT_EQ(taken.panel(0) == storage, out % PackedLinearWeight::panel_width == 0)
        << out << "x" << in;
    for (std::int64_t p = 0; p < copied.panels(); ++p) {
      ASSERT_TRUE(std::equal(copied.panel(p), copied.panel(p) + in * PackedLinearWeight::panel_width,
                             taken.panel(p)))
          << out << "x" << in << ", panel " << p;
    }
    // ... and the packing is the weight's transpose in panels.
    for (std::int64_t o = 0; o < out; ++o) {
      for (std::int64_t k = 0; k < in; ++k) {
        ASSERT_EQ(taken.panel(o / 64)[k * 64 + o % 64], w.data()[o * in + k]) << o << ", " << k;
      }
    }
  }
}

TEST(Linear, PackedWeightRejectsBadShapesWithClearMessages) {
  const PackedLinearWeight weight(Tensor<float>(Shape{3, 5}));
  EXPECT_EQ(weight.in_features(), 5);
  EXPECT_EQ(weight.out_features(), 3);
  const auto message = [](auto&& call) {
    try {
      call();
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([&] { (void)linear(Tensor<float>(Shape{2, 4}), weight, Tensor<float>()); }),
            "linear: input must be [N, 5], got [2, 4]");
  EXPECT_EQ(message([&] { (void)linear(Tensor<float>(Shape{2, 5}), weight, Tensor<float>(Shape{4})); }),
            "linear: bias must be [3], got [4]");
  EXPECT_EQ(message([&] { (void)linear(Tensor<float>(Shape{2, 5}), PackedLinearWeight(), Tensor<float>()); }),
            "linear: the packed weight is empty (default-constructed)");
  EXPECT_EQ(message([&] { (void)PackedLinearWeight(Tensor<float>(Shape{3})); }),
            "PackedLinearWeight: weight must be [out >= 1, in >= 1], got [3]");
}

TEST(Elementwise, AddAndReluByHand) {
  Tensor<float> a(Shape{2, 3});
  Tensor<float> b(Shape{2, 3});
  for (int i = 0; i < 6; ++i) {
    a.data()[i] = static_cast<float>(i) - 3.0f;
    b.data()[i] = 0.5f;
  }
  const auto sum = add(a, b);
  const auto rectified = relu(sum);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(sum.data()[i], static_cast<float>(i) - 2.5f);
    EXPECT_EQ(rectified.data()[i], std::max(0.0f, static_cast<float>(i) - 2.5f));
  }
  try {
    add_inplace(a.view(), Tensor<float>(Shape{3, 2}).view());
    FAIL();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(), "add: shapes must match, got [2, 3] and [3, 2]");
  }
}

}  // namespace
}  // namespace fpn::ops
