// A neck's extra-level policy: the levels an FPN adds above its top stage, torchvision's
// ExtraFPNBlock (ops/feature_pyramid_network.py), as a type parameter of nn::FPN:
//
//   FPN<256>                                        // LastLevelMaxPool: "pool" (R-CNN, MobileNetV3)
//   FPN<256, BiasOnly, LastLevelP6P7<FromP5>>        // "p6", "p7" from P5 (RetinaNet v1, FCOS)
//   FPN<256, BiasOnly, LastLevelP6P7<FromC5>>        // "p6", "p7" from C5 (RetinaNet v2)
//
// torchvision decides P5 or C5 by LastLevelP6P7(in_channels, out_channels)'s in == out; here the
// source is named in the type, and the widths follow from it.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/activation.hpp"
#include "fpn/ops/elementwise.hpp"
#include "fpn/ops/max_pool2d.hpp"

namespace fpn::nn {

// An extra-level policy. levels: how many levels it appends; reads_stage: whether it reads the
// top stage map (C5) rather than the top pyramid level, which the backbone then keeps alive.
// load(extra_blocks, top stage width, out width) reads "<fpn>.extra_blocks.*";
// append(pyramid, top stage or null) appends its levels.
template <typename T>
concept extra_levels = requires(const WeightReader& reader, const T& block, FeaturePyramid& pyramid,
                                const Tensor<float>* stage) {
  { T::levels } -> std::convertible_to<std::size_t>;
  { T::reads_stage } -> std::convertible_to<bool>;
  { T::load(reader, std::int64_t{}, std::int64_t{}) } -> std::same_as<T>;
  { block.append(pyramid, stage) } -> std::same_as<void>;
};

// No extra levels: the pyramid is the pathway's own levels.
struct NoExtraLevels {
  static constexpr std::size_t levels = 0;
  static constexpr bool reads_stage = false;

  static NoExtraLevels load(const WeightReader&, std::int64_t, std::int64_t) { return {}; }
  void append(FeaturePyramid&, const Tensor<float>*) const {}
};

// max_pool2d(P_top, kernel 1, stride 2), i.e. every other pixel, named "pool".
struct LastLevelMaxPool {
  static constexpr std::size_t levels = 1;
  static constexpr bool reads_stage = false;

  static LastLevelMaxPool load(const WeightReader&, std::int64_t, std::int64_t) { return {}; }

  void append(FeaturePyramid& pyramid, const Tensor<float>*) const {
    pyramid.push_back("pool", 2 * pyramid.strides.back(), forward(pyramid.levels.back()));
  }

  static Tensor<float> forward(TensorView<const float> top) {
    return ops::max_pool2d(top, ops::MaxPool2dParams{1, 2, 0});
  }
};

enum class P6P7Source { p5, c5 };
inline constexpr P6P7Source FromP5 = P6P7Source::p5;
inline constexpr P6P7Source FromC5 = P6P7Source::c5;

// P6 = conv3x3/2(x), P7 = conv3x3/2(relu(P6)) with x = P5 or C5, named "p6", "p7"; weights
// "extra_blocks.p6.{weight,bias}", "extra_blocks.p7.{weight,bias}".
template <P6P7Source Source>
class LastLevelP6P7 {
 public:
  static constexpr std::size_t levels = 2;
  static constexpr bool reads_stage = Source == P6P7Source::c5;

  static LastLevelP6P7 load(const WeightReader& extra_blocks, std::int64_t stage_channels,
                            std::int64_t out_channels) {
    LastLevelP6P7 block;
    const std::int64_t in = reads_stage ? stage_channels : out_channels;
    block.p6_ = Conv2d::load_with_bias(extra_blocks, "p6", {in, out_channels, 3, 2, 1});
    block.p7_ = Conv2d::load_with_bias(extra_blocks, "p7", {out_channels, out_channels, 3, 2, 1});
    return block;
  }

  void append(FeaturePyramid& pyramid, const Tensor<float>* stage) const {
    if (reads_stage && stage == nullptr) {
      fpn::detail::throw_argument_error("LastLevelP6P7::append", "P6 from C5 needs the top stage map");
    }
    const std::int64_t stride = pyramid.strides.back();
    Tensor<float> p6 = p6_.forward(reads_stage ? stage->view() : pyramid.levels.back().view());
    Tensor<float> p7 = p7_.forward(ops::relu<float>(p6));
    pyramid.push_back("p6", 2 * stride, std::move(p6));
    pyramid.push_back("p7", 4 * stride, std::move(p7));
  }

  const Conv2d& p6() const { return p6_; }
  const Conv2d& p7() const { return p7_; }

 private:
  Conv2d p6_, p7_;
};

}  // namespace fpn::nn
