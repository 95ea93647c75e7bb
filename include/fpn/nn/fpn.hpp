// The top-down pathway (torchvision's FeaturePyramidNetwork + LastLevelMaxPool):
//   inner_i = 1x1 lateral conv of C_i; from the top, inner_i += nearest-resize(inner_{i+1}) to
//   inner_i's exact size; P_i = 3x3 output conv of inner_i; P6 = max_pool(P5, kernel 1, stride 2).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/resnet.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/elementwise.hpp"
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
    FeaturePyramid pyramid;
    Tensor<float> inner = lateral_[3].forward(stages[3]);
    pyramid.levels[3] = output_[3].forward(inner);
    for (int i = 2; i >= 0; --i) {
      const auto index = static_cast<std::size_t>(i);
      Tensor<float> lateral = lateral_[index].forward(stages[index]);
      ops::add_inplace(lateral.view(), ops::upsample_nearest(inner, lateral.dim(2), lateral.dim(3)));
      inner = std::move(lateral);
      pyramid.levels[index] = output_[index].forward(inner);
    }
    pyramid.levels[4] = ops::max_pool2d(pyramid.levels[3], ops::MaxPool2dParams{1, 2, 0});
    return pyramid;
  }

  const Conv2d& lateral(std::size_t index) const { return lateral_[index]; }
  const Conv2d& output(std::size_t index) const { return output_[index]; }

 private:
  std::array<Conv2d, 4> lateral_;
  std::array<Conv2d, 4> output_;
};

}  // namespace fpn::nn
