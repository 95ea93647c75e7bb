// Conv2d: a convolution layer with its weights loaded and, for conv + FrozenBatchNorm2d pairs,
// the normalisation folded in at load time:
//   y = (conv(x, W) - mean) * gamma / sqrt(var + eps) + beta = conv(x, W * s) + (beta - mean * s)
// with s = gamma * rsqrt(var + eps) computed in float32 as FrozenBatchNorm2d does.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "fpn/core/tensor.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/conv2d.hpp"

namespace fpn::nn {

struct ConvSpec {
  std::int64_t in_channels;
  std::int64_t out_channels;
  int kernel;
  int stride = 1;
  int padding = 0;
  bool relu = false;
};

class Conv2d {
 public:
  Conv2d() = default;

  // A conv with its own bias: "<name>.weight", "<name>.bias".
  static Conv2d load_with_bias(const WeightReader& weights, std::string_view name, ConvSpec spec) {
    Conv2d conv(spec);
    const WeightReader scope = weights.child(name);
    conv.weight_ = scope.load("weight", conv.weight_shape());
    conv.bias_ = scope.load("bias", Shape{spec.out_channels});
    return conv;
  }

  // A bias-free conv "<conv_name>.weight" followed by FrozenBatchNorm2d "<bn_name>.*", folded.
  static Conv2d load_folded(const WeightReader& weights, std::string_view conv_name,
                            std::string_view bn_name, ConvSpec spec) {
    Conv2d conv(spec);
    conv.weight_ = weights.child(conv_name).load("weight", conv.weight_shape());
    const WeightReader bn = weights.child(bn_name);
    const Shape channels{spec.out_channels};
    const Tensor<float> gamma = bn.load("weight", channels);
    const Tensor<float> beta = bn.load("bias", channels);
    const Tensor<float> mean = bn.load("running_mean", channels);
    const Tensor<float> var = bn.load("running_var", channels);
    conv.bias_ = Tensor<float>(channels);
    const std::int64_t per_channel = conv.weight_.numel() / spec.out_channels;
    const float eps = weights.batch_norm_eps();
    for (std::int64_t c = 0; c < spec.out_channels; ++c) {
      const float scale = gamma.data()[c] * (1.0f / std::sqrt(var.data()[c] + eps));
      conv.bias_.data()[c] = beta.data()[c] - mean.data()[c] * scale;
      float* row = conv.weight_.data() + c * per_channel;
      for (std::int64_t i = 0; i < per_channel; ++i) row[i] *= scale;
    }
    return conv;
  }

  // One conv whose output channels are first's then second's: two heads that read the same map
  // (the RPN's objectness and deltas) then cost one GEMM. Both need the same input and geometry.
  static Conv2d concatenate(const Conv2d& first, const Conv2d& second) {
    const ConvSpec& a = first.spec_;
    const ConvSpec& b = second.spec_;
    FPN_ASSERT(a.in_channels == b.in_channels && a.kernel == b.kernel && a.stride == b.stride &&
               a.padding == b.padding && a.relu == b.relu);
    Conv2d conv({a.in_channels, a.out_channels + b.out_channels, a.kernel, a.stride, a.padding, a.relu});
    conv.weight_ = Tensor<float>::uninitialized(conv.weight_shape());
    std::copy_n(first.weight_.data(), first.weight_.numel(), conv.weight_.data());
    std::copy_n(second.weight_.data(), second.weight_.numel(), conv.weight_.data() + first.weight_.numel());
    conv.bias_ = Tensor<float>::uninitialized(Shape{conv.spec_.out_channels});
    std::copy_n(first.bias_.data(), a.out_channels, conv.bias_.data());
    std::copy_n(second.bias_.data(), b.out_channels, conv.bias_.data() + a.out_channels);
    return conv;
  }

  // input: [N, in_channels, H, W]; returns [N, out_channels, H', W'].
  Tensor<float> forward(TensorView<const float> input) const {
    return ops::conv2d(input, weight_, bias_, params());
  }

  // target = relu?(target + conv(input)), in place (ops::conv2d_add_into): a residual block's last
  // conv added to its shortcut. `relu` replaces the spec's, which applies before any sum.
  void forward_add_into(TensorView<const float> input, Tensor<float>& target, bool relu) const {
    ops::Conv2dParams sum_params = params();
    sum_params.relu = relu;
    ops::conv2d_add_into(input, weight_, bias_, sum_params, target.view());
  }

  const ConvSpec& spec() const { return spec_; }
  const Tensor<float>& weight() const { return weight_; }
  const Tensor<float>& bias() const { return bias_; }
  ops::Conv2dParams params() const { return {spec_.stride, spec_.padding, spec_.relu}; }

  // Output height or width for an input of `size`.
  std::int64_t output_size(std::int64_t size) const {
    return ops::detail::conv_output_size(size, spec_.kernel, spec_.stride, spec_.padding);
  }
  // Multiply-adds for an input of height x width (FLOPs are twice this).
  std::int64_t macs(std::int64_t height, std::int64_t width) const {
    return output_size(height) * output_size(width) * spec_.out_channels * spec_.in_channels *
           spec_.kernel * spec_.kernel;
  }

 private:
  explicit Conv2d(ConvSpec spec) : spec_(spec) {}
  Shape weight_shape() const {
    return Shape{spec_.out_channels, spec_.in_channels, spec_.kernel, spec_.kernel};
  }

  ConvSpec spec_{};
  Tensor<float> weight_;
  Tensor<float> bias_;
};

}  // namespace fpn::nn
