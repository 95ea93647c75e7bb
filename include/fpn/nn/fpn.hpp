// The top-down pathway (torchvision's FeaturePyramidNetwork + LastLevelMaxPool):
//   inner_i = 1x1 lateral conv of C_i; from the top, inner_i += nearest-resize(inner_{i+1}) to
//   inner_i's exact size; P_i = 3x3 output conv of inner_i; P6 = max_pool(P5, kernel 1, stride 2).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/resnet.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/max_pool2d.hpp"
#include "fpn/ops/upsample.hpp"

namespace fpn::nn {

// P2..P6 of one image, each [1, channels, H_i, W_i]. levels[0] is P2 (stride 4) ... levels[4] is P6 (stride 64).
struct FeaturePyramid {
  static constexpr int first_level = 2;
  static constexpr int num_levels = 5;
  std::array<Tensor<float>, num_levels> levels;

  // level: 2..6.
  const Tensor<float>& p(int level) const { return levels[static_cast<std::size_t>(level - first_level)]; }
};

// Norm: how each lateral and output conv block is loaded (nn/norm.hpp): BiasOnly for
// torchvision's default FPN (v1 detectors), FoldedBatchNorm for norm_layer=BatchNorm2d (v2).
template <int OutChannels, typename Norm = BiasOnly>
class FPN {
  static_assert(OutChannels >= 1, "FPN: the output width must be positive");
  static_assert(conv_norm<Norm>,
                "FPN: Norm must be a norm policy (nn::conv_norm, e.g. nn::BiasOnly or "
                "nn::FoldedBatchNorm) with a static Conv2d load(const WeightReader&, ConvSpec)");

 public:
  static constexpr std::int64_t out_channels = OutChannels;
  using norm_type = Norm;

  // fpn: a reader scoped to "backbone.fpn."; in_channels: C2..C5 widths.
  static FPN load(const WeightReader& fpn, const std::array<std::int64_t, 4>& in_channels) {
    FPN net;
    for (std::size_t i = 0; i < 4; ++i) {
      const std::string index = std::to_string(i);
      net.lateral_[i] = Norm::load(fpn.child("inner_blocks." + index),
                                   {in_channels[i], out_channels, 1, 1, 0, false});
      net.output_[i] = Norm::load(fpn.child("layer_blocks." + index),
                                  {out_channels, out_channels, 3, 1, 1, false});
    }
    return net;
  }

  FeaturePyramid forward(const StageOutputs& stages) const {
    StageOutputs copy = stages;
    return forward(std::move(copy));
  }

  // As above, with the stage maps' memory: each stage map is released once its lateral has read
  // it (or becomes the lateral, when the widths agree).
  FeaturePyramid forward(StageOutputs&& stages) const {
    for (std::size_t index = 0; index < 4; ++index) {
      fpn::detail::check_single_image("FPN::forward", fpn::detail::numbered("C", static_cast<std::int64_t>(index) + 2),
                                      stages[index].shape().dims(),
                                      lateral_[index].spec().in_channels);
    }
    std::array<Tensor<float>, 4> laterals;
    for (std::size_t index = 4; index-- > 0;) {
      laterals[index] = lateral_in(index, std::move(stages[index]));
    }
    return top_down(std::move(laterals));
  }

  // The top-down pathway from the four lateral maps, in their memory: from the top, each sum is
  // added (nearest-resized) into the lateral below, then its 3x3 output conv overwrites it band by
  // band (Conv2d::forward_bands). At P2 only P2's sum, P3..P5 and two bands of rows are held.
  FeaturePyramid top_down(std::array<Tensor<float>, 4>&& laterals) const {
    for (std::size_t index = 0; index < 4; ++index) {
      fpn::detail::check_single_image("FPN::top_down", fpn::detail::numbered("lateral ", static_cast<std::int64_t>(index)),
                                      laterals[index].shape().dims(), out_channels);
    }
    FeaturePyramid pyramid;
    for (std::size_t index = 4; index-- > 0;) {
      if (index > 0) ops::add_upsampled_nearest_inplace(laterals[index - 1].view(), laterals[index].view());
      output_in_place(index, laterals[index]);
      pyramid.levels[index] = std::move(laterals[index]);
    }
    pyramid.levels[4] = extra_level(pyramid.levels[3]);
    return pyramid;
  }

  // The top-down sum at level index (0 = C2): lateral(stage) + nearest-resize(upper) to the
  // lateral's own size; upper is the level above's sum, or null at the top.
  Tensor<float> merge(std::size_t index, const Tensor<float>& stage, const Tensor<float>* upper) const {
    Tensor<float> inner = lateral_[index].forward(stage);
    if (upper != nullptr) ops::add_upsampled_nearest_inplace(inner.view(), upper->view());
    return inner;
  }

  // P6 from P5: LastLevelMaxPool, max_pool2d(kernel 1, stride 2), i.e. every other pixel.
  static Tensor<float> extra_level(const Tensor<float>& p5) {
    return ops::max_pool2d(p5, ops::MaxPool2dParams{1, 2, 0});
  }

  // The lateral conv of a stage map it owns: in place when the widths agree.
  Tensor<float> lateral_in(std::size_t index, Tensor<float> stage) const {
    if (lateral_[index].spec().in_channels != out_channels) return lateral_[index].forward(stage);
    lateral_[index].forward_in_place(stage);
    return stage;
  }

  // P_i over its own sum's map, band by band.
  void output_in_place(std::size_t index, Tensor<float>& inner) const {
    output_[index].forward_bands(inner.view(), [&](std::int64_t first, std::int64_t rows,
                                                   const Tensor<float>& band) {
      store_band_rows(band, first, rows, inner);
    });
  }

  // Multiply-adds of level index's lateral and output convs for a stage map of height x width.
  std::int64_t level_macs(std::size_t index, std::int64_t height, std::int64_t width) const {
    return lateral_[index].macs(height, width) + output_[index].macs(height, width);
  }

  const Conv2d& lateral(std::size_t index) const { return lateral_[index]; }
  const Conv2d& output(std::size_t index) const { return output_[index]; }

 private:
  std::array<Conv2d, 4> lateral_;
  std::array<Conv2d, 4> output_;
};

}  // namespace fpn::nn
