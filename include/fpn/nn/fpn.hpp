// The top-down pathway (torchvision's FeaturePyramidNetwork + LastLevelMaxPool):
//   inner_i = 1x1 lateral conv of C_i; from the top, inner_i += nearest-resize(inner_{i+1}) to
//   inner_i's exact size; P_i = 3x3 output conv of inner_i; P6 = max_pool(P5, kernel 1, stride 2).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/resnet.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/max_pool2d.hpp"
#include "fpn/ops/upsample.hpp"

namespace fpn::nn {

// P2..P6, each [N, channels, H_i, W_i]. levels[0] is P2 (stride 4) ... levels[4] is P6 (stride 64).
struct FeaturePyramid {
  static constexpr int first_level = 2;
  static constexpr int num_levels = 5;
  std::array<Tensor<float>, num_levels> levels;

  // level: 2..6.
  const Tensor<float>& p(int level) const { return levels[static_cast<std::size_t>(level - first_level)]; }
};

template <int OutChannels>
class FPN {
  static_assert(OutChannels >= 1, "FPN: the output width must be positive");

 public:
  static constexpr std::int64_t out_channels = OutChannels;

  // fpn: a reader scoped to "backbone.fpn."; in_channels: C2..C5 widths.
  static FPN load(const WeightReader& fpn, const std::array<std::int64_t, 4>& in_channels) {
    FPN net;
    for (std::size_t i = 0; i < 4; ++i) {
      const std::string index = std::to_string(i);
      net.lateral_[i] = Conv2d::load_with_bias(fpn.child("inner_blocks." + index), "0",
                                               {in_channels[i], out_channels, 1, 1, 0, false});
      net.output_[i] = Conv2d::load_with_bias(fpn.child("layer_blocks." + index), "0",
                                              {out_channels, out_channels, 3, 1, 1, false});
    }
    return net;
  }

  FeaturePyramid forward(const StageOutputs& stages) const {
    StageOutputs copy = stages;
    return forward(std::move(copy));
  }

  // As above, releasing each stage map once its lateral conv has read it: at P2 only C2, the
  // sums of two levels and P3..P5 are held.
  FeaturePyramid forward(StageOutputs&& stages) const {
    FeaturePyramid pyramid;
    Tensor<float> inner = merge(3, stages[3], nullptr);
    stages[3] = Tensor<float>();
    pyramid.levels[3] = output_[3].forward(inner);
    for (std::size_t index = 3; index-- > 0;) {
      inner = merge(index, stages[index], &inner);
      stages[index] = Tensor<float>();
      pyramid.levels[index] = output_[index].forward(inner);
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
