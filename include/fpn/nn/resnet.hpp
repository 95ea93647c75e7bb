// The bottom-up pathway: torchvision's ResNet (v1.5: the stride sits on the 3x3 conv of a
// Bottleneck) with FrozenBatchNorm2d folded into every conv, returning C2..C5 (layer1..layer4).
//
//   using ResNet50 = ResNet<Bottleneck, 64, 3, 4, 6, 3>;   // block, base width, blocks per stage
//
// The base width is a template parameter so narrower networks (the demo model) are types too.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/max_pool2d.hpp"

namespace fpn::nn {

namespace detail {

// The shortcut of a block: identity, or a strided 1x1 conv + BN ("downsample.0", "downsample.1")
// when the block changes resolution or width.
inline Conv2d load_downsample(const WeightReader& block, std::int64_t in_channels,
                              std::int64_t out_channels, int stride) {
  return Conv2d::load_folded(block, "downsample.0", "downsample.1",
                             {in_channels, out_channels, 1, stride, 0});
}

}  // namespace detail

// ResNet-18/34 block: 3x3 (stride) -> 3x3, expansion 1.
class BasicBlock {
 public:
  static constexpr int expansion = 1;

  static BasicBlock load(const WeightReader& block, std::int64_t in_channels,
                         std::int64_t planes, int stride) {
    BasicBlock b;
    b.conv1_ = Conv2d::load_folded(block, "conv1", "bn1", {in_channels, planes, 3, stride, 1, ops::Activation::relu});
    b.conv2_ = Conv2d::load_folded(block, "conv2", "bn2", {planes, planes, 3, 1, 1});
    b.has_downsample_ = stride != 1 || in_channels != planes * expansion;
    if (b.has_downsample_) b.downsample_ = detail::load_downsample(block, in_channels, planes, stride);
    return b;
  }

  // The second conv adds into the shortcut's map (the downsample's output, or x itself).
  Tensor<float> forward(const Tensor<float>& x) const {
    Tensor<float> out = has_downsample_ ? downsample_.forward(x) : x;
    conv2_.forward_add_into(conv1_.forward(x), out, ops::Activation::relu);
    return out;
  }

  // As above, and x's map becomes the output of an identity block: no copy of it is made.
  Tensor<float> forward(Tensor<float>&& x) const {
    if (has_downsample_) return forward(std::as_const(x));
    Tensor<float> out = std::move(x);
    conv2_.forward_add_into(conv1_.forward(out), out, ops::Activation::relu);
    return out;
  }

  // Multiply-adds for an input of height x width.
  std::int64_t macs(std::int64_t height, std::int64_t width) const {
    const std::int64_t out_h = conv1_.output_size(height), out_w = conv1_.output_size(width);
    return conv1_.macs(height, width) + conv2_.macs(out_h, out_w) +
           (has_downsample_ ? downsample_.macs(height, width) : 0);
  }

 private:
  Conv2d conv1_, conv2_, downsample_;
  bool has_downsample_ = false;
};

// ResNet-50/101 block: 1x1 -> 3x3 (stride) -> 1x1 (x4 channels), expansion 4.
class Bottleneck {
 public:
  static constexpr int expansion = 4;

  static Bottleneck load(const WeightReader& block, std::int64_t in_channels,
                         std::int64_t planes, int stride) {
    Bottleneck b;
    b.conv1_ = Conv2d::load_folded(block, "conv1", "bn1", {in_channels, planes, 1, 1, 0, ops::Activation::relu});
    b.conv2_ = Conv2d::load_folded(block, "conv2", "bn2", {planes, planes, 3, stride, 1, ops::Activation::relu});
    b.conv3_ = Conv2d::load_folded(block, "conv3", "bn3",
                                   {planes, planes * expansion, 1, 1, 0});
    b.has_downsample_ = stride != 1 || in_channels != planes * expansion;
    if (b.has_downsample_) {
      b.downsample_ = detail::load_downsample(block, in_channels, planes * expansion, stride);
    }
    return b;
  }

  // The last 1x1 conv adds into the shortcut's map (the downsample's output, or x itself), so a
  // block holds its input, the shortcut and two maps of `planes` channels, never a second map of
  // the output's width; the shortcut is made once conv1's map is gone.
  Tensor<float> forward(const Tensor<float>& x) const {
    const Tensor<float> inner = conv2_.forward(conv1_.forward(x));  // conv1's map goes here
    Tensor<float> out = has_downsample_ ? downsample_.forward(x) : x;
    conv3_.forward_add_into(inner, out, ops::Activation::relu);
    return out;
  }

  // As above, and x's map becomes the output of an identity block: no copy of it is made.
  Tensor<float> forward(Tensor<float>&& x) const {
    if (has_downsample_) return forward(std::as_const(x));
    Tensor<float> out = std::move(x);
    const Tensor<float> inner = conv2_.forward(conv1_.forward(out));
    conv3_.forward_add_into(inner, out, ops::Activation::relu);
    return out;
  }

  // Multiply-adds for an input of height x width.
  std::int64_t macs(std::int64_t height, std::int64_t width) const {
    const std::int64_t out_h = conv2_.output_size(height), out_w = conv2_.output_size(width);
    return conv1_.macs(height, width) + conv2_.macs(height, width) + conv3_.macs(out_h, out_w) +
           (has_downsample_ ? downsample_.macs(height, width) : 0);
  }

 private:
  Conv2d conv1_, conv2_, conv3_, downsample_;
  bool has_downsample_ = false;
};

template <typename T>
concept residual_block = requires(const WeightReader& reader, const T& block, const Tensor<float>& x) {
  { T::expansion } -> std::convertible_to<int>;
  { T::load(reader, std::int64_t{}, std::int64_t{}, int{}) } -> std::same_as<T>;
  { block.forward(x) } -> std::same_as<Tensor<float>>;
};

// C2..C5 of one image batch, each [N, stage_channels[i], H / 2^(i+2), W / 2^(i+2)] (rounded up).
using StageOutputs = std::array<Tensor<float>, 4>;

template <residual_block Block, int BaseWidth, int... BlocksPerStage>
class ResNet {
  static_assert(sizeof...(BlocksPerStage) == 4, "ResNet: give the block count of all 4 stages");
  static_assert(((BlocksPerStage >= 1) && ...), "ResNet: every stage needs at least one block");
  static_assert(BaseWidth >= 1, "ResNet: the base width must be positive");

 public:
  using block_type = Block;
  static constexpr std::array<int, 4> blocks_per_stage{BlocksPerStage...};
  static constexpr std::int64_t stem_channels = BaseWidth;
  static constexpr std::size_t num_stages = 4;
  // Nominal strides of layer1..layer4's maps (C2..C5).
  static constexpr std::array<std::int64_t, 4> stage_strides{4, 8, 16, 32};
  // Output channels of layer1..layer4, the FPN's input widths.
  static constexpr std::array<std::int64_t, 4> stage_channels{
      BaseWidth * Block::expansion, 2 * BaseWidth * Block::expansion,
      4 * BaseWidth * Block::expansion, 8 * BaseWidth * Block::expansion};

  // body: a reader scoped to the ResNet's parameters ("backbone.body."). stages: how many stages
  // to load, from layer1 (torchvision's IntermediateLayerGetter stops after the last returned
  // layer, so a body returning layer3 has no layer4 in its file); forward_stage runs only those.
  static ResNet load(const WeightReader& body, std::size_t stages = 4) {
    if (stages < 1 || stages > 4) {
      fpn::detail::throw_argument_error("ResNet::load", "stages must be 1 to 4, got " + std::to_string(stages));
    }
    ResNet net;
    net.stem_ = Conv2d::load_folded(body, "conv1", "bn1", {3, stem_channels, 7, 2, 3, ops::Activation::relu});
    std::int64_t in_channels = stem_channels;
    for (std::size_t stage = 0; stage < stages; ++stage) {
      const std::int64_t planes = BaseWidth << stage;
      const WeightReader layer = body.child("layer" + std::to_string(stage + 1));
      for (int index = 0; index < blocks_per_stage[stage]; ++index) {
        const int stride = (stage > 0 && index == 0) ? 2 : 1;
        net.stages_[stage].push_back(
            Block::load(layer.child(std::to_string(index)), in_channels, planes, stride));
        in_channels = planes * Block::expansion;
      }
    }
    return net;
  }

  // image: [N, 3, H, W] (normalised); returns C2..C5.
  StageOutputs forward(TensorView<const float> image) const {
    StageOutputs outputs;
    outputs[0] = forward_stage(0, forward_stem(image));
    for (std::size_t stage = 1; stage < 4; ++stage) {
      outputs[stage] = forward_stage(stage, outputs[stage - 1]);
    }
    return outputs;
  }

  // conv1 + bn1 + relu + 3x3/2 max pool: [N, 3, H, W] -> [N, BaseWidth, ~H/4, ~W/4].
  Tensor<float> forward_stem(TensorView<const float> image) const {
    return ops::max_pool2d(stem_.forward(image), ops::MaxPool2dParams{3, 2, 1});
  }

  // One stage, 0 (layer1) to 3 (layer4). Each block's output moves into the next block, which
  // may reuse its map.
  Tensor<float> forward_stage(std::size_t stage, const Tensor<float>& input) const {
    if (stage >= 4 || stages_[stage].empty()) {
      fpn::detail::throw_argument_error("ResNet::forward_stage",
                                        "stage " + std::to_string(stage) + " is not loaded (" +
                                            std::to_string(loaded_stages()) + " of 4 are)");
    }
    Tensor<float> x = stages_[stage].front().forward(input);
    for (std::size_t index = 1; index < stages_[stage].size(); ++index) {
      x = stages_[stage][index].forward(std::move(x));
    }
    return x;
  }

  // Multiply-adds of the stem, and of stage `stage` for its input of height x width.
  std::int64_t stem_macs(std::int64_t height, std::int64_t width) const {
    return stem_.macs(height, width);
  }
  std::int64_t stage_macs(std::size_t stage, std::int64_t height, std::int64_t width) const {
    std::int64_t total = 0;
    for (std::size_t index = 0; index < stages_[stage].size(); ++index) {
      total += stages_[stage][index].macs(height, width);
      if (index == 0 && stage > 0) {  // the first block of stages 2-4 halves the resolution
        height = (height + 1) / 2;
        width = (width + 1) / 2;
      }
    }
    return total;
  }

  std::size_t loaded_stages() const {
    std::size_t count = 0;
    while (count < 4 && !stages_[count].empty()) ++count;
    return count;
  }

  const Conv2d& stem() const { return stem_; }
  const std::vector<Block>& stage(std::size_t index) const { return stages_[index]; }

 private:
  Conv2d stem_;
  std::array<std::vector<Block>, 4> stages_;
};

using ResNet18 = ResNet<BasicBlock, 64, 2, 2, 2, 2>;
using ResNet34 = ResNet<BasicBlock, 64, 3, 4, 6, 3>;
using ResNet50 = ResNet<Bottleneck, 64, 3, 4, 6, 3>;
using ResNet101 = ResNet<Bottleneck, 64, 3, 4, 23, 3>;

}  // namespace fpn::nn
