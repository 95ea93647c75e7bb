// The bottom-up pathway of torchvision's fasterrcnn_mobilenet_v3_large_fpn: MobileNetV3-Large's
// `features` (Howard et al. 2019, https://arxiv.org/abs/1905.02244, Table 1; torchvision's
// models/mobilenetv3.py with width 1, dilated=False, reduced_tail=False), every BatchNorm folded
// into the conv before it, run stage by stage for nn::BackboneWithFPN.
//
//   features[0]      stem: 3x3/2 conv 3 -> 16, hardswish
//   features[1..15]  InvertedResidual blocks (mobilenet_v3_large_blocks)
//   features[16]     1x1 conv 160 -> 960, hardswish
//
// Stages follow torchvision's _mobilenet_extractor, whose stage_indices are 0, the strided
// blocks and the last layer: [0, 2, 4, 7, 13, 16]. forward_stem is features[0]; stage k (1-based,
// as Stages<...> and torchvision's returned_layers number them) runs features[stage_indices[k - 1]
// + 1 .. stage_indices[k]]. torchvision's returned_layers [num_stages - 2, num_stages - 1] = [4, 5]
// are features[13] (160 channels) and features[16] (960), both at stride 32: stage 4 ends with the
// block that makes stride 32, not before it.
//
// BatchNorm eps, a trap: mobilenetv3.py's default norm is BatchNorm2d(eps=0.001), but the
// detector's builder (_fasterrcnn_mobilenet_v3_large_fpn) passes its own norm_layer (nn.BatchNorm2d
// untrained, FrozenBatchNorm2d with weights), both eps 1e-5, and never calls overwrite_eps(model,
// 0.0) as the ResNet-50 v1 COCO builders do. So a detector file loads with the reader's eps (1e-5
// unless its metadata says otherwise): converting torchvision's COCO MobileNetV3 checkpoints with
// --frozen-bn-eps 0.0 would be wrong, and so would eps 0.001. The standalone classifier
// mobilenet_v3_large (norm_layer None) is the one case of eps 0.001: load(reader, 0.001f).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/anchors.hpp"
#include "fpn/nn/backbone.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/activation.hpp"
#include "fpn/ops/depthwise_conv2d.hpp"
#include "fpn/ops/squeeze_excitation.hpp"

namespace fpn::nn {

// torchvision's _make_divisible (from the TF MobileNet code): value rounded to the nearest
// multiple of divisor, at least divisor, and not more than 10% below value.
constexpr std::int64_t make_divisible(double value, std::int64_t divisor = 8) {
  std::int64_t rounded =
      static_cast<std::int64_t>(value + static_cast<double>(divisor) / 2.0) / divisor * divisor;
  if (rounded < divisor) rounded = divisor;
  if (static_cast<double>(rounded) < 0.9 * value) rounded += divisor;
  return rounded;
}

// One row of torchvision's InvertedResidualConfig table (dilation 1, width multiplier 1).
struct InvertedResidualConfig {
  std::int64_t in_channels;
  int kernel;  // of the depthwise conv: 3 or 5, padding kernel / 2
  std::int64_t expanded_channels;
  std::int64_t out_channels;
  bool squeeze_excitation;
  ops::Activation activation;  // "RE" relu or "HS" hardswish, after expand and depthwise
  int stride;                  // of the depthwise conv

  // ops.SqueezeExcitation's squeeze width as InvertedResidual builds it.
  constexpr std::int64_t squeeze_channels() const {
    return make_divisible(static_cast<double>(expanded_channels / 4));
  }
  // A residual add when the block keeps both resolution and width.
  constexpr bool residual() const { return stride == 1 && in_channels == out_channels; }
  // No expand conv when the block does not widen (the first block): "block.0" is the depthwise.
  constexpr bool expands() const { return expanded_channels != in_channels; }
};

// _mobilenet_v3_conf("mobilenet_v3_large"): features[1..15].
inline constexpr std::array<InvertedResidualConfig, 15> mobilenet_v3_large_blocks = [] {
  constexpr auto RE = ops::Activation::relu;
  constexpr auto HS = ops::Activation::hardswish;
  return std::array<InvertedResidualConfig, 15>{{
      {16, 3, 16, 16, false, RE, 1},
      {16, 3, 64, 24, false, RE, 2},  // C1
      {24, 3, 72, 24, false, RE, 1},
      {24, 5, 72, 40, true, RE, 2},  // C2
      {40, 5, 120, 40, true, RE, 1},
      {40, 5, 120, 40, true, RE, 1},
      {40, 3, 240, 80, false, HS, 2},  // C3
      {80, 3, 200, 80, false, HS, 1},
      {80, 3, 184, 80, false, HS, 1},
      {80, 3, 184, 80, false, HS, 1},
      {80, 3, 480, 112, true, HS, 1},
      {112, 3, 672, 112, true, HS, 1},
      {112, 5, 672, 160, true, HS, 2},  // C4
      {160, 5, 960, 160, true, HS, 1},
      {160, 5, 960, 160, true, HS, 1},
  }};
}();

// A depthwise conv (groups == channels) followed by a BatchNorm, folded, with an activation
// epilogue: the middle of an inverted residual block.
class DepthwiseConv2d {
 public:
  DepthwiseConv2d() = default;

  // "<conv_name>.weight" [C, 1, k, k] and "<bn_name>.*", folded as Conv2d::load_folded folds: a
  // depthwise weight is a conv weight with one input channel per output channel, so the same
  // float32 arithmetic (and the reader's eps) applies, row by row.
  static DepthwiseConv2d load_folded(const WeightReader& weights, std::string_view conv_name,
                                     std::string_view bn_name, std::int64_t channels, int kernel,
                                     int stride, ops::Activation activation) {
    DepthwiseConv2d conv;
    conv.folded_ = Conv2d::load_folded(weights, conv_name, bn_name,
                                       {1, channels, kernel, stride, kernel / 2, activation});
    return conv;
  }

  // input: [N, C, H, W]; returns [N, C, H', W'].
  Tensor<float> forward(TensorView<const float> input) const {
    const ConvSpec& spec = folded_.spec();
    return ops::depthwise_conv2d(
        input, folded_.weight(), folded_.bias(),
        ops::DepthwiseConv2dParams{spec.stride, spec.padding, spec.activation});
  }

  std::int64_t channels() const { return folded_.spec().out_channels; }
  std::int64_t output_size(std::int64_t size) const { return folded_.output_size(size); }
  // Multiply-adds for an input of height x width: k * k per output value.
  std::int64_t macs(std::int64_t height, std::int64_t width) const {
    return folded_.macs(height, width);
  }

 private:
  Conv2d folded_;  // weight [C, 1, k, k], spec {1, C, k, stride, k / 2, activation}
};

// ops.SqueezeExcitation as MobileNetV3 uses it: fc1 (C -> S), relu, fc2 (S -> C), hardsigmoid.
class SqueezeExcitation {
 public:
  SqueezeExcitation() = default;

  // "fc1.weight" [S, C, 1, 1], "fc1.bias" [S], "fc2.weight" [C, S, 1, 1], "fc2.bias" [C].
  static SqueezeExcitation load(const WeightReader& weights, std::int64_t channels,
                                std::int64_t squeeze_channels) {
    SqueezeExcitation layer;
    layer.fc1_weight_ = weights.load("fc1.weight", Shape{squeeze_channels, channels, 1, 1});
    layer.fc1_bias_ = weights.load("fc1.bias", Shape{squeeze_channels});
    layer.fc2_weight_ = weights.load("fc2.weight", Shape{channels, squeeze_channels, 1, 1});
    layer.fc2_bias_ = weights.load("fc2.bias", Shape{channels});
    return layer;
  }

  // x: [N, C, H, W], rescaled per image and channel in place.
  void forward_in_place(Tensor<float>& x) const {
    ops::squeeze_excitation_in_place<float>(
        x.view(), {fc1_weight_.view(), fc1_bias_.view(), fc2_weight_.view(), fc2_bias_.view()});
  }

  // Multiply-adds of the two fully connected layers (the mean and the rescale, one operation
  // per value each, are not counted).
  std::int64_t macs() const { return 2 * fc1_weight_.numel(); }

 private:
  Tensor<float> fc1_weight_, fc1_bias_, fc2_weight_, fc2_bias_;
};

// torchvision's InvertedResidual: [expand 1x1 + BN + act] -> depthwise kxk + BN + act -> [SE] ->
// project 1x1 + BN, plus the input when stride 1 and in == out. Parameters under "block.<j>.",
// j counting the layers present: "block.<j>.0.weight" (conv), "block.<j>.1.*" (BN),
// "block.<j>.fc1.*" (SE).
class InvertedResidual {
 public:
  static InvertedResidual load(const WeightReader& module, const InvertedResidualConfig& config) {
    InvertedResidual block;
    block.config_ = config;
    const WeightReader layers = module.child("block");
    int index = 0;
    auto next = [&] { return layers.child(std::to_string(index++)); };
    if (config.expands()) {
      block.expand_ = Conv2d::load_folded(
          next(), "0", "1",
          {config.in_channels, config.expanded_channels, 1, 1, 0, config.activation});
    }
    block.depthwise_ =
        DepthwiseConv2d::load_folded(next(), "0", "1", config.expanded_channels, config.kernel,
                                     config.stride, config.activation);
    if (config.squeeze_excitation) {
      block.squeeze_excitation_ =
          SqueezeExcitation::load(next(), config.expanded_channels, config.squeeze_channels());
    }
    block.project_ = Conv2d::load_folded(next(), "0", "1",
                                         {config.expanded_channels, config.out_channels, 1, 1, 0});
    return block;
  }

  // x: [N, in, H, W]; returns [N, out, H', W'].
  Tensor<float> forward(const Tensor<float>& x) const {
    const Tensor<float> inner = inner_map(x);
    if (!config_.residual()) return project_.forward(inner);
    Tensor<float> out = x;
    project_.forward_add_into(inner, out, ops::Activation::identity);
    return out;
  }

  // As above, consuming x: a residual block adds into x's map (no copy of it), another releases
  // x as soon as the expand conv has read it.
  Tensor<float> forward(Tensor<float>&& x) const {
    if (config_.residual()) {
      Tensor<float> out = std::move(x);
      project_.forward_add_into(inner_map(out), out, ops::Activation::identity);
      return out;
    }
    Tensor<float> inner;
    if (config_.expands()) {
      const Tensor<float> expanded = expand_.forward(x);
      x = Tensor<float>();
      inner = depthwise_.forward(expanded);
    } else {
      inner = depthwise_.forward(x);
      x = Tensor<float>();
    }
    return project_.forward(excite(std::move(inner)));
  }

  // Multiply-adds for an input of height x width.
  std::int64_t macs(std::int64_t height, std::int64_t width) const {
    const std::int64_t out_h = depthwise_.output_size(height),
                       out_w = depthwise_.output_size(width);
    return (config_.expands() ? expand_.macs(height, width) : 0) + depthwise_.macs(height, width) +
           (config_.squeeze_excitation ? squeeze_excitation_.macs() : 0) +
           project_.macs(out_h, out_w);
  }

  const InvertedResidualConfig& config() const { return config_; }

 private:
  Tensor<float> excite(Tensor<float> map) const {
    if (config_.squeeze_excitation) squeeze_excitation_.forward_in_place(map);
    return map;
  }
  // expand -> depthwise -> SE: the map the project conv reads.
  Tensor<float> inner_map(const Tensor<float>& x) const {
    return config_.expands() ? excite(depthwise_.forward(expand_.forward(x)))
                             : excite(depthwise_.forward(x));
  }

  InvertedResidualConfig config_{};
  Conv2d expand_;
  DepthwiseConv2d depthwise_;
  SqueezeExcitation squeeze_excitation_;
  Conv2d project_;
};

class MobileNetV3Large {
 public:
  static constexpr std::int64_t stem_channels = 16;
  // features[16]: 6x the last block's width, torchvision's lastconv_output_channels.
  static constexpr std::int64_t last_channels = 6 * mobilenet_v3_large_blocks.back().out_channels;
  static constexpr std::size_t num_features = mobilenet_v3_large_blocks.size() + 2;
  static constexpr std::size_t num_stages = 5;

  // _mobilenet_extractor's stage_indices: 0, the strided blocks' features index, the last.
  static constexpr std::array<std::size_t, num_stages + 1> stage_indices = [] {
    std::array<std::size_t, num_stages + 1> indices{};
    std::size_t count = 0;
    indices[count++] = 0;
    for (std::size_t block = 0; block < mobilenet_v3_large_blocks.size(); ++block) {
      if (mobilenet_v3_large_blocks[block].stride > 1) indices[count++] = block + 1;
    }
    indices[count] = num_features - 1;
    return indices;
  }();
  static_assert(stage_indices == std::array<std::size_t, 6>{0, 2, 4, 7, 13, 16},
                "MobileNetV3Large: torchvision's stage_indices for mobilenet_v3_large");

  // The width and nominal stride of each stage's last map (features[stage_indices[k]]).
  static constexpr std::array<std::int64_t, num_stages> stage_channels = [] {
    std::array<std::int64_t, num_stages> widths{};
    for (std::size_t stage = 0; stage < num_stages; ++stage) {
      const std::size_t last = stage_indices[stage + 1];
      widths[stage] = last == num_features - 1 ? last_channels
                                               : mobilenet_v3_large_blocks[last - 1].out_channels;
    }
    return widths;
  }();
  static constexpr std::array<std::int64_t, num_stages> stage_strides = [] {
    std::array<std::int64_t, num_stages> strides{};
    std::int64_t stride = 2;  // the stem
    std::size_t stage = 0;
    for (std::size_t feature = 1; feature < num_features; ++feature) {
      if (feature - 1 < mobilenet_v3_large_blocks.size())
        stride *= mobilenet_v3_large_blocks[feature - 1].stride;
      if (feature == stage_indices[stage + 1]) strides[stage++] = stride;
    }
    return strides;
  }();
  static_assert(stage_channels == std::array<std::int64_t, 5>{24, 40, 80, 160, 960});
  static_assert(stage_strides == std::array<std::int64_t, 5>{4, 8, 16, 32, 32});

  // body: a reader scoped to "backbone.body" (the IntermediateLayerGetter over `features`, whose
  // names are the features' indices: "0.0.weight", "4.block.2.fc1.weight", "16.1.running_var").
  // Every BatchNorm folds with body.batch_norm_eps() (see the header comment).
  static MobileNetV3Large load(const WeightReader& body) {
    MobileNetV3Large net;
    net.stem_ = Conv2d::load_folded(body.child("0"), "0", "1",
                                    {3, stem_channels, 3, 2, 1, ops::Activation::hardswish});
    net.blocks_.reserve(mobilenet_v3_large_blocks.size());
    for (std::size_t block = 0; block < mobilenet_v3_large_blocks.size(); ++block) {
      net.blocks_.push_back(InvertedResidual::load(body.child(std::to_string(block + 1)),
                                                   mobilenet_v3_large_blocks[block]));
    }
    net.last_ = Conv2d::load_folded(body.child(std::to_string(num_features - 1)), "0", "1",
                                    {mobilenet_v3_large_blocks.back().out_channels, last_channels,
                                     1, 1, 0, ops::Activation::hardswish});
    return net;
  }

  // As above with an explicit BatchNorm eps for every layer, e.g. 0.001 for the `features` of
  // torchvision's classifier mobilenet_v3_large (read through body = reader.child("features")).
  static MobileNetV3Large load(const WeightReader& body, float batch_norm_eps) {
    WeightReader scoped = body;  // shares the record of names read
    scoped.set_batch_norm_eps(batch_norm_eps);
    return load(scoped);
  }

  // image: [N, 3, H, W] normalised; returns every stage's map, finest first.
  std::array<Tensor<float>, num_stages> forward(TensorView<const float> image) const {
    std::array<Tensor<float>, num_stages> maps;
    maps[0] = forward_stage(0, forward_stem(image));
    for (std::size_t stage = 1; stage < num_stages; ++stage)
      maps[stage] = forward_stage(stage, maps[stage - 1]);
    return maps;
  }

  // features[0]: [N, 3, H, W] -> [N, 16, ceil(H / 2), ceil(W / 2)].
  Tensor<float> forward_stem(TensorView<const float> image) const { return stem_.forward(image); }

  // Stage `index` (0-based: 0 is Stages<1>): features[stage_indices[index] + 1 ..
  // stage_indices[index + 1]] on the previous stage's map (or the stem's). Each block's output
  // moves into the next, which may reuse its map.
  Tensor<float> forward_stage(std::size_t index, const Tensor<float>& previous) const {
    check_stage("MobileNetV3Large::forward_stage", index);
    std::size_t feature = stage_indices[index] + 1;
    Tensor<float> x = run_feature(feature, previous);
    for (++feature; feature <= stage_indices[index + 1]; ++feature)
      x = run_feature(feature, std::move(x));
    return x;
  }

  // Multiply-adds of the stem for an image of height x width, and of stage `index` for its input
  // of height x width (FLOPs are twice these).
  std::int64_t stem_macs(std::int64_t height, std::int64_t width) const {
    return stem_.macs(height, width);
  }
  std::int64_t stage_macs(std::size_t index, std::int64_t height, std::int64_t width) const {
    check_stage("MobileNetV3Large::stage_macs", index);
    std::int64_t total = 0;
    for (std::size_t feature = stage_indices[index] + 1; feature <= stage_indices[index + 1];
         ++feature) {
      if (feature == num_features - 1) {
        total += last_.macs(height, width);
        continue;
      }
      const InvertedResidual& block = blocks_[feature - 1];
      total += block.macs(height, width);
      const int stride = block.config().stride;
      height = (height + stride - 1) / stride;
      width = (width + stride - 1) / stride;
    }
    return total;
  }

  const Conv2d& stem() const { return stem_; }
  const std::vector<InvertedResidual>& blocks() const { return blocks_; }
  const Conv2d& last() const { return last_; }

 private:
  static void check_stage(std::string_view where, std::size_t index) {
    if (index >= num_stages) {
      fpn::detail::throw_argument_error(
          where, fpn::detail::numbered("stage must be 0 .. 4 (num_stages - 1), got ",
                                       static_cast<std::int64_t>(index)));
    }
  }

  template <typename Map>
  Tensor<float> run_feature(std::size_t feature, Map&& x) const {
    if (feature == num_features - 1) return last_.forward(x);
    return blocks_[feature - 1].forward(std::forward<Map>(x));
  }

  Conv2d stem_;
  std::vector<InvertedResidual> blocks_;
  Conv2d last_;
};

// torchvision's fasterrcnn_mobilenet_v3_large_fpn backbone: an FPN over stages 4 and 5
// (returned_layers [4, 5], torchvision's keys "0" and "1", both stride 32) with LastLevelMaxPool's
// "pool" at stride 64. The 320 variant (fasterrcnn_mobilenet_v3_large_320_fpn) has the same
// backbone; only its transform sizes and RPN settings differ.
using MobileNetV3LargeFPN = BackboneWithFPN<MobileNetV3Large, FPN<256>, Stages<4, 5>>;

template <>
inline constexpr std::string_view backbone_arch<MobileNetV3LargeFPN> = "mobilenet_v3_large_fpn";

// torchvision's anchors for this backbone (_fasterrcnn_mobilenet_v3_large_fpn): all five sizes on
// each of its three levels, ((32, 64, 128, 256, 512),) * 3, ratios 0.5, 1, 2, so 15 per
// location; MobileNetV3LargeFPN::default_anchors() returns them.
inline AnchorParams mobilenet_v3_large_fpn_anchors() {
  AnchorParams params;
  params.sizes.assign(MobileNetV3LargeFPN::num_levels, std::vector<float>{32, 64, 128, 256, 512});
  params.aspect_ratios = {0.5f, 1.0f, 2.0f};
  return params;
}

template <>
struct builder_anchors<MobileNetV3LargeFPN> {
  static AnchorParams get() { return mobilenet_v3_large_fpn_anchors(); }
};

}  // namespace fpn::nn
