// nn::Conv2d's memory-saving forms against its plain forward(): the banded 3x3 conv (the FPN's
// output convs and the RPN's conv on large levels) and the in-place 1x1 conv (the FPN's lateral on
// a map of its own width).
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/group_norm.hpp"
#include "fpn/nn/rpn.hpp"

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

// The GroupNorm norm policy loads torchvision's Conv2dNormActivation(norm_layer=GroupNorm) by
// its names (a bias-free conv, the norm's affine map) and runs conv -> GroupNorm -> ReLU as it
// does, on an input with a mean offset.
TEST(GroupNormPolicy, MatchesTorchvisionsConvNormActivationBlock) {
  const auto& file = fpn::testing::fixture("conv_group_norm");
  const WeightReader reader(file);
  const WeightReader scope = reader.child("block");
  const ConvGroupNorm block = GroupNorm<8>::load(scope, {16, 32, 3, 1, 1, ops::Activation::relu});
  scope.check_all_read("the block");  // the conv's weight and the norm's weight and bias
  EXPECT_EQ(block.groups(), 8);
  EXPECT_TRUE(tensors_close(block.forward(file.load_float("input")), file.load_float("output"), 1e-5));
  static_assert(block_norm<GroupNorm<32>> && !conv_norm<GroupNorm<32>>,
                "GroupNorm is a head's norm, not one the FPN's banded convs can take");
  try {
    (void)GroupNorm<5>::load(reader.child("block"), {16, 32, 3, 1, 1});
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "ConvGroupNorm::load: the conv's 32 output channels must split into 5 groups");
  }
}

// Two and three stacked 3x3 convs streamed row band by row band (the RPN head's convs, v2's
// conv_depth 2) equal the convs applied to whole maps, for bands of 1 row, of 4, of uneven
// remainders and of the whole map, on maps of 1, 2 and 23 rows: every output row arrives once,
// in order.
TEST(ConvRowStream, StackedConvsEqualTheWholeMapConvs) {
  const Conv2d first = Conv2d::load_with_bias(synthetic(), "a", {16, 16, 3, 1, 1, ops::Activation::relu});
  const Conv2d second = Conv2d::load_with_bias(synthetic(), "b", {16, 16, 3, 1, 1, ops::Activation::relu});
  const Conv2d third = Conv2d::load_with_bias(synthetic(), "c", {16, 16, 3, 1, 1});
  for (const std::int64_t height : {1, 2, 23}) {
    const Tensor<float> input = random_map(Shape{1, 16, height, 19}, 5);
    const Tensor<float> two = second.forward(first.forward(input));
    const Tensor<float> three = third.forward(two);
    for (const std::int64_t band_rows : {1, 4, 7, 23}) {
      SCOPED_TRACE(::testing::Message() << "height " << height << ", bands of " << band_rows);
      Tensor<float> streamed_two(two.shape()), streamed_three(three.shape());
      std::int64_t expected_first = 0;
      detail::ConvRowStream to_third(third, height);
      to_third.set_output([&](std::int64_t row, std::int64_t rows, const Tensor<float>& band) {
        EXPECT_EQ(row, expected_first);
        expected_first += rows;
        store_band_rows(band, row, rows, streamed_three);
      });
      detail::ConvRowStream to_second(second, height);
      to_second.set_output([&](std::int64_t row, std::int64_t rows, const Tensor<float>& band) {
        store_band_rows(band, row, rows, streamed_two);
        to_third.push(row, rows, band);
      });
      first.forward_bands(input, [&](std::int64_t row, std::int64_t rows, const Tensor<float>& band) {
        to_second.push(row, rows, band);
      }, band_rows);
      EXPECT_EQ(expected_first, height);
      EXPECT_TRUE(tensors_close(streamed_two, two, 1e-5));
      EXPECT_TRUE(tensors_close(streamed_three, three, 1e-5));
    }
  }
  detail::ConvRowStream stream(first, 5);
  stream.set_output([](std::int64_t, std::int64_t, const Tensor<float>&) {});
  try {
    stream.push(2, 1, random_map(Shape{1, 16, 3, 4}, 1));
    FAIL();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(), "ConvRowStream::push: rows must arrive in order, 0 next of 5, got rows 2 .. 3");
  }
}

// Bands of 5 rows over 23 rows (the last band 3 rows), an odd width, ReLU: the assembled bands
// equal the whole-map conv (a band of 7 rows runs im2col, the whole map Winograd: equal to float
// rounding), also when each band is written back over the rows it read.
TEST(Conv2dBands, AssembleTheWholeMapConv) {
  const Conv2d conv = Conv2d::load_with_bias(synthetic(), "conv", {16, 16, 3, 1, 1, ops::Activation::relu});
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
  const Conv2d conv = Conv2d::load_with_bias(synthetic(), "lateral", {24, 24, 1, 1, 0});
  Tensor<float> map = random_map(Shape{2, 24, 30, 17}, 4);
  const Tensor<float> expected = conv.forward(map);
  conv.forward_in_place(map);
  EXPECT_TRUE(tensors_close(map, expected, 1e-6));
}

// forward_bands cuts its bands from image 0: a batch is refused in every build, as is a conv it
// cannot band (it used to be an FPN_ASSERT, compiled out in Release: a batch of two identical
// images gave another P2 than one).
TEST(Conv2dBands, RefuseBatchesAndOtherConvs) {
  const Conv2d conv = Conv2d::load_with_bias(synthetic(), "conv", {16, 16, 3, 1, 1});
  const auto ignore = [](std::int64_t, std::int64_t, const Tensor<float>&) {};
  try {
    conv.forward_bands(Tensor<float>(Shape{2, 16, 8, 8}), ignore);
    ADD_FAILURE();
  } catch (const ShapeError& error) {
    EXPECT_STREQ(error.what(),
                 "Conv2d::forward_bands: input must be [1, 16, H, W] (one image; run a batch "
                 "image by image), got [2, 16, 8, 8]");
  }
  const Conv2d strided = Conv2d::load_with_bias(synthetic(), "strided", {16, 16, 3, 2, 1});
  try {
    strided.forward_bands(Tensor<float>(Shape{1, 16, 8, 8}), ignore);
    ADD_FAILURE();
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(),
                 "Conv2d::forward_bands: needs a 3x3 conv with stride 1 and padding 1, got kernel "
                 "3, stride 2, padding 1");
  }
}

// Every load is recorded, by the reader and its children: what is left is what a strict load
// refuses.
TEST(WeightReader, RecordsWhatWasRead) {
  Tensor<float> weight(Shape{2, 3, 1, 1});
  Tensor<float> bias(Shape{2});
  const std::string bytes = io::to_safetensors_bytes(
      {{"a.conv.weight", weight}, {"a.conv.bias", bias}, {"a.extra", bias}, {"b.other", bias}});
  const auto file = io::SafeTensors::parse({bytes.begin(), bytes.end()}, "w.safetensors");
  const WeightReader root(file);
  (void)Conv2d::load_with_bias(root.child("a"), "conv", {3, 2, 1});
  EXPECT_EQ(root.unread(), (std::vector<std::string>{"a.extra", "b.other"}));
  EXPECT_EQ(root.child("a").unread(), (std::vector<std::string>{"a.extra"}));
  try {
    root.child("a").check_all_read("the test");
    ADD_FAILURE();
  } catch (const WeightError& error) {
    EXPECT_STREQ(error.what(),
                 "safetensors: 'w.safetensors': 1 tensor under \"a.\" not read by the test "
                 "(\"a.extra\"): weights of another architecture? (allow_unused skips them)");
  }
  EXPECT_TRUE(WeightReader(std::make_shared<SyntheticWeights>()).unread().empty());
}

#if defined(__linux__) && !defined(FPN_NO_HUGE_PAGES)
// A model's mid-sized weights (64 KiB to 4 MiB), read through a reader and its children, fill
// huge-page slabs one after another (detail::SlabArena) and keep their values; smaller ones and
// tensors made outside a load come from the heap.
TEST(WeightReader, PacksMidSizedWeightsIntoSharedSlabs) {
  const WeightReader root(std::make_shared<SyntheticWeights>());
  const Tensor<float> first = root.child("layer1").load("weight", Shape{256, 64, 3, 3});
  const Tensor<float> second = root.child("layer2").load("weight", Shape{128, 256, 1, 1});
  const Tensor<float> tiny = root.load("bias", Shape{256});
  const Tensor<float> expected = SyntheticWeights().load("layer2.weight", Shape{128, 256, 1, 1});
  const auto at = [](const Tensor<float>& t) { return reinterpret_cast<std::uintptr_t>(t.data()); };
  EXPECT_EQ(at(first) % fpn::detail::pool_granularity, 0u);  // a slab carved from a region
  EXPECT_EQ(at(second), at(first) + static_cast<std::uintptr_t>(first.numel()) * sizeof(float));
  EXPECT_NE(at(tiny), at(second) + static_cast<std::uintptr_t>(second.numel()) * sizeof(float));
  ASSERT_EQ(second.numel(), expected.numel());
  for (std::int64_t i = 0; i < second.numel(); ++i) ASSERT_EQ(second.data()[i], expected.data()[i]);
}
#endif

}  // namespace
}  // namespace fpn::nn
