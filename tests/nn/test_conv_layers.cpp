// nn::Conv2d's memory-saving forms against its plain forward(): the banded 3x3 conv (the FPN's
// output convs and the RPN's conv on large levels) and the in-place 1x1 conv (the FPN's lateral on
// a map of its own width).
#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "../support/fixtures.hpp"
#include "fpn/nn/conv.hpp"

namespace fpn::nn {
namespace {

using fpn::testing::tensors_close;

Tensor<float> random_map(Shape shape, unsigned seed) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal;
  Tensor<float> map = Tensor<float>::uninitialized(shape);
  for (float& v : map.span()) v = normal(random);
  return map;
}

const WeightReader& synthetic() {
  static const WeightReader reader(std::make_shared<SyntheticWeights>());
  return reader;
}

// Bands of 5 rows over 23 rows (the last band 3 rows), an odd width, ReLU: the assembled bands
// equal the whole-map conv (a band of 7 rows runs im2col, the whole map Winograd: equal to float
// rounding), also when each band is written back over the rows it read.
TEST(Conv2dBands, AssembleTheWholeMapConv) {
  const Conv2d conv = Conv2d::load_with_bias(synthetic(), "conv", {16, 16, 3, 1, 1, true});
  const Tensor<float> input = random_map(Shape{1, 16, 23, 19}, 3);
  const Tensor<float> whole = conv.forward(input);

  Tensor<float> assembled(whole.shape());
  Tensor<float> in_place = input;
  std::vector<std::int64_t> firsts;
  conv.forward_bands(input, [&](std::int64_t first, std::int64_t rows, const Tensor<float>& band) {
    firsts.push_back(first);
    EXPECT_EQ(band.shape(), (Shape{1, 16, rows + 2, 19}));
    store_band_rows(band, first, rows, assembled);
  }, 5);
  EXPECT_EQ(firsts, (std::vector<std::int64_t>{0, 5, 10, 15, 20}));
  EXPECT_TRUE(tensors_close(assembled, whole, 1e-5));

  conv.forward_bands(in_place, [&](std::int64_t first, std::int64_t rows, const Tensor<float>& band) {
    store_band_rows(band, first, rows, in_place);
  }, 5);
  EXPECT_TRUE(tensors_close(in_place, whole, 1e-5));

  // Rows per band from the budget: a map this small is one band.
  int bands = 0;
  conv.forward_bands(input, [&](std::int64_t, std::int64_t rows, const Tensor<float>&) {
    ++bands;
    EXPECT_EQ(rows, 23);
  });
  EXPECT_EQ(bands, 1);
}

TEST(Conv2dInPlace, OneByOneEqualsForward) {
  const Conv2d conv = Conv2d::load_with_bias(synthetic(), "lateral", {24, 24, 1, 1, 0, false});
  Tensor<float> map = random_map(Shape{2, 24, 30, 17}, 4);
  const Tensor<float> expected = conv.forward(map);
  conv.forward_in_place(map);
  EXPECT_TRUE(tensors_close(map, expected, 1e-6));
}

}  // namespace
}  // namespace fpn::nn
