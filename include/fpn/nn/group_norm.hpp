// GroupNorm at run time as a norm policy: torchvision's Conv2dNormActivation with
// norm_layer=GroupNorm (RetinaNet v2's and FCOS's heads: GroupNorm(32, 256), then ReLU).
// Unlike BatchNorm, GroupNorm normalises by each image's own statistics, so it cannot be folded
// into the conv at load: the block is a conv without bias, then ops::group_norm_in_place with
// the block's activation fused into it.
//
//   MaskHead<256, 256, GroupNorm<32>>      // a mask head whose four conv blocks use GroupNorm
#pragma once

#include <cstdint>
#include <string_view>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/activation.hpp"
#include "fpn/ops/group_norm.hpp"

namespace fpn::nn {

// conv (no bias) -> GroupNorm(groups, eps, affine) -> activation.
class ConvGroupNorm {
 public:
  ConvGroupNorm() = default;

  // block: a reader scoped to "<block>."; reads "0.weight" (the conv) and "1.weight", "1.bias"
  // (the GroupNorm's affine map). spec.activation runs after the norm.
  static ConvGroupNorm load(const WeightReader& block, ConvSpec spec, std::int64_t groups,
                            float eps = 1e-5f) {
    if (groups < 1 || spec.out_channels % groups != 0) {
      fpn::detail::throw_argument_error(
          "ConvGroupNorm::load", "the conv's " + std::to_string(spec.out_channels) +
                                     " output channels must split into " + std::to_string(groups) +
                                     " groups");
    }
    ConvGroupNorm layer;
    layer.activation_ = spec.activation;
    ConvSpec conv_spec = spec;
    conv_spec.activation = ops::Activation::identity;
    layer.conv_ = Conv2d::load_without_bias(block, "0", conv_spec);
    const WeightReader norm = block.child("1");
    layer.weight_ = norm.load("weight", Shape{spec.out_channels});
    layer.bias_ = norm.load("bias", Shape{spec.out_channels});
    layer.groups_ = groups;
    layer.eps_ = eps;
    return layer;
  }

  // input: [N, in_channels, H, W]; returns [N, out_channels, H', W'].
  Tensor<float> forward(TensorView<const float> input) const {
    Tensor<float> y = conv_.forward(input);
    ops::group_norm_in_place<float>(y.view(), groups_, weight_, bias_, eps_, activation_);
    return y;
  }

  const ConvSpec& spec() const { return conv_.spec(); }
  const Conv2d& conv() const { return conv_; }
  std::int64_t groups() const { return groups_; }
  ops::Activation activation() const { return activation_; }

 private:
  Conv2d conv_;
  Tensor<float> weight_, bias_;
  std::int64_t groups_ = 1;
  float eps_ = 1e-5f;
  ops::Activation activation_ = ops::Activation::identity;
};

// norm_layer=partial(GroupNorm, Groups): torch.nn.GroupNorm's eps 1e-5, affine.
template <int Groups = 32>
struct GroupNorm {
  static_assert(Groups >= 1, "GroupNorm: the number of groups must be positive");
  static constexpr std::string_view name = "GroupNorm";
  static constexpr int groups = Groups;
  static ConvGroupNorm load(const WeightReader& block, ConvSpec spec) {
    return ConvGroupNorm::load(block, spec, Groups);
  }
};

}  // namespace fpn::nn
