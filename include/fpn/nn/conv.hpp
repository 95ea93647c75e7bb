// Conv2d: a convolution layer with its weights loaded and, for conv + FrozenBatchNorm2d pairs,
// the normalisation folded in at load time:
//   y = (conv(x, W) - mean) * gamma / sqrt(var + eps) + beta = conv(x, W * s) + (beta - mean * s)
// with s = gamma * rsqrt(var + eps) computed in float32 as FrozenBatchNorm2d does.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fpn/core/errors.hpp"
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
  ops::Activation activation = ops::Activation::identity;
};

// Stores rows 1 .. rows of a band from Conv2d::forward_bands (or of a map computed from one,
// [1, C, rows + 2, W]) as rows first .. first + rows - 1 of target [1, C, H, W].
inline void store_band_rows(TensorView<const float> band, std::int64_t first, std::int64_t rows,
                            TensorView<float> target) {
  if (target.rank() != 4 || band.rank() != 4 || target.dim(0) != 1 || band.dim(0) != 1 ||
      band.dim(1) != target.dim(1) || band.dim(3) != target.dim(3) || first < 0 || rows < 0 ||
      rows + 2 > band.dim(2) || first + rows > target.dim(2)) {
    fpn::detail::throw_shape_mismatch(
        "store_band_rows", "rows " + std::to_string(first) + " .. " + std::to_string(first + rows) +
                               " of a band [1, C, >= rows + 2, W] into a map [1, C, H, W]",
        band.shape().dims(), target.shape().dims());
  }
  const std::int64_t width = target.dim(3);
  const std::int64_t band_plane = band.dim(2) * width, plane = target.dim(2) * width;
  for (std::int64_t c = 0; c < band.dim(1); ++c) {
    std::copy_n(band.data() + c * band_plane + width, rows * width,
                target.data() + c * plane + first * width);
  }
}

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

  // A conv without bias: "<name>.weight" only (a conv followed by a norm that is not folded).
  static Conv2d load_without_bias(const WeightReader& weights, std::string_view name, ConvSpec spec) {
    Conv2d conv(spec);
    conv.weight_ = weights.child(name).load("weight", conv.weight_shape());
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
    if (a.in_channels != b.in_channels || a.kernel != b.kernel || a.stride != b.stride ||
        a.padding != b.padding || a.activation != b.activation) {
      fpn::detail::throw_argument_error(
          "Conv2d::concatenate", "both convs need the same input width and geometry, got " +
                                     std::to_string(a.in_channels) + " and " +
                                     std::to_string(b.in_channels) + " input channels, kernels " +
                                     std::to_string(a.kernel) + " and " + std::to_string(b.kernel));
    }
    Conv2d conv({a.in_channels, a.out_channels + b.out_channels, a.kernel, a.stride, a.padding, a.activation});
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

  // target = activation(target + conv(input)), in place (ops::conv2d_add_into): a residual block's last
  // conv added to its shortcut. `activation` replaces the spec's, which applies before any sum.
  void forward_add_into(TensorView<const float> input, Tensor<float>& target,
                        ops::Activation activation) const {
    ops::Conv2dParams sum_params = params();
    sum_params.activation = activation;
    ops::conv2d_add_into(input, weight_, bias_, sum_params, target.view());
  }

  // A 1x1 stride-1 conv with as many outputs as inputs, written over its input map (FPN's lateral
  // on a 256-channel C2): no second map of the same size.
  void forward_in_place(Tensor<float>& map) const {
    if (spec_.kernel != 1 || spec_.stride != 1 || spec_.padding != 0 ||
        spec_.in_channels != spec_.out_channels) {
      fpn::detail::throw_argument_error(
          "Conv2d::forward_in_place", "needs a 1x1 stride-1 conv with as many outputs as inputs, got " +
                                          std::to_string(spec_.in_channels) + " -> " +
                                          std::to_string(spec_.out_channels) + ", kernel " +
                                          std::to_string(spec_.kernel));
    }
    ops::conv2d_1x1_in_place(map.view(), weight_, bias_, spec_.activation);
  }

  // Bands of rows of this 3x3, stride-1, padding-1 conv's output over a [1, C, H, W] map, each
  // computed from a copy of the input rows it needs, so no full-size output map exists.
  // visit(first, rows, band): band is [1, Cout, rows + 2, W]; its rows 1 .. rows are output rows
  // first .. first + rows - 1 (its first and last rows are scratch). visit may overwrite input
  // rows [first, first + rows): the row above the next band is copied before visit is called.
  // band_rows: rows per band, or 0 for as many as fit band_budget_bytes (at least 8).
  static constexpr std::int64_t band_budget_bytes = 8 << 20;

  template <typename Visit>
  void forward_bands(TensorView<const float> input, Visit&& visit, std::int64_t band_rows = 0) const {
    if (spec_.kernel != 3 || spec_.stride != 1 || spec_.padding != 1) {
      fpn::detail::throw_argument_error(
          "Conv2d::forward_bands", "needs a 3x3 conv with stride 1 and padding 1, got kernel " +
                                       std::to_string(spec_.kernel) + ", stride " +
                                       std::to_string(spec_.stride) + ", padding " +
                                       std::to_string(spec_.padding));
    }
    // Bands are cut from image 0's planes: a batch would silently lose its other images.
    fpn::detail::check_single_image("Conv2d::forward_bands", "input", input.shape().dims(),
                                    spec_.in_channels);
    const std::int64_t channels = input.dim(1), height = input.dim(2), width = input.dim(3);
    const std::int64_t row_bytes = channels * width * static_cast<std::int64_t>(sizeof(float));
    if (band_rows <= 0) band_rows = band_budget_bytes / std::max<std::int64_t>(row_bytes, 1);
    band_rows = std::clamp<std::int64_t>(band_rows, 1, std::max<std::int64_t>(height, 1));
    if (height == 0) return;
    std::vector<float> above(static_cast<std::size_t>(channels * width), 0.0f);  // zero padding
    Tensor<float> band_input = Tensor<float>::uninitialized(Shape{(band_rows + 2) * channels * width});
    for (std::int64_t first = 0; first < height; first += band_rows) {
      const std::int64_t rows = std::min(band_rows, height - first);
      const std::int64_t plane = (rows + 2) * width;
      for (std::int64_t c = 0; c < channels; ++c) {
        const float* source = input.data() + c * height * width;
        float* target = band_input.data() + c * plane;
        std::copy_n(above.data() + c * width, width, target);
        std::copy_n(source + first * width, rows * width, target + width);
        float* below = target + (rows + 1) * width;
        if (first + rows < height) {
          std::copy_n(source + (first + rows) * width, width, below);
        } else {
          std::fill_n(below, width, 0.0f);
        }
        std::copy_n(source + (first + rows - 1) * width, width, above.data() + c * width);
      }
      const Tensor<float> band = forward(
          TensorView<const float>(band_input.data(), Shape{1, channels, rows + 2, width}));
      visit(first, rows, band);
    }
  }

  const ConvSpec& spec() const { return spec_; }
  const Tensor<float>& weight() const { return weight_; }
  const Tensor<float>& bias() const { return bias_; }
  ops::Conv2dParams params() const { return {spec_.stride, spec_.padding, spec_.activation}; }

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
