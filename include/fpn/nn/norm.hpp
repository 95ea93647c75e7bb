// Norm policies: how a torchvision Conv2dNormActivation block ("<block>.0" the conv, "<block>.1"
// its norm layer) is loaded into one fpn Conv2d. A template parameter of every part built from
// such blocks (nn::FPN, nn::MaskHead, nn::ConvFCBoxHead), so that torchvision's norm_layer
// argument is a type:
//
//   FPN<256>                   // = FPN<256, BiasOnly>: v1's convs with their own bias
//   FPN<256, FoldedBatchNorm>  // v2 (norm_layer=BatchNorm2d): BN folded into the conv at load
//
// A norm that cannot be folded (GroupNorm's per-image statistics) loads as a layer of its own
// (nn::GroupNorm, nn/group_norm.hpp): the heads take any norm policy (block_norm), the FPN, whose
// convs run band by band, only those that end in a plain Conv2d (conv_norm).
#pragma once

#include <concepts>
#include <string_view>
#include <utility>

#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn::nn {

// norm_layer=None: "<block>.0.weight" and "<block>.0.bias".
struct BiasOnly {
  static constexpr std::string_view name = "BiasOnly";
  static Conv2d load(const WeightReader& block, ConvSpec spec) {
    return Conv2d::load_with_bias(block, "0", spec);
  }
};

// norm_layer=BatchNorm2d (eval) or FrozenBatchNorm2d: a bias-free "<block>.0.weight" and
// "<block>.1.{weight,bias,running_mean,running_var}", folded into a conv with bias
// (Conv2d::load_folded; eps is the weights' batch_norm_eps(), 1e-5 as BatchNorm2d's default).
struct FoldedBatchNorm {
  static constexpr std::string_view name = "FoldedBatchNorm";
  static Conv2d load(const WeightReader& block, ConvSpec spec) {
    return Conv2d::load_folded(block, "0", "1", spec);
  }
};

// A norm policy that folds: loads a conv block (a reader scoped to "<block>.") as one Conv2d,
// which can then run band by band or in place (the FPN needs this).
template <typename T>
concept conv_norm = requires(const WeightReader& block, ConvSpec spec) {
  { T::name } -> std::convertible_to<std::string_view>;
  { T::load(block, spec) } -> std::same_as<Conv2d>;
};

// A conv block as the heads use it: forward(input [N, Cin, H, W]) -> [N, Cout, H', W'].
template <typename T>
concept conv_block = requires(const T& block, TensorView<const float> input) {
  { block.forward(input) } -> std::same_as<Tensor<float>>;
};

// Any norm policy: loads a conv block as a layer of its own, a Conv2d for the folding policies
// or a conv with a run-time norm (nn::GroupNorm, nn/group_norm.hpp). The heads take these.
template <typename T>
concept block_norm = requires(const WeightReader& block, ConvSpec spec) {
  { T::name } -> std::convertible_to<std::string_view>;
  { T::load(block, spec) } -> conv_block;
};

// The layer a norm policy loads a block as.
template <block_norm Norm>
using norm_block_t = decltype(Norm::load(std::declval<const WeightReader&>(), std::declval<ConvSpec>()));

}  // namespace fpn::nn
