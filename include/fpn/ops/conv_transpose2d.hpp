// Transposed convolution whose kernel equals its stride (no padding), as the mask head's 2x2
// stride-2 "conv5_mask" upsampler: output windows never overlap, so it is one GEMM
// [Cout * k * k, Cin] x [Cin, H * W] followed by a scatter into the k-times larger map.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/activation.hpp"

namespace fpn::ops {

// input: [N, Cin, H, W]; weight: [Cin, Cout, k, k] (PyTorch's layout); bias: [Cout] or empty;
// stride == k. returns [N, Cout, k * H, k * W], then the activation.
template <typename T = float>
Tensor<T> conv_transpose2d(std::type_identity_t<TensorView<const T>> input,
                           std::type_identity_t<TensorView<const T>> weight,
                           std::type_identity_t<TensorView<const T>> bias, int stride,
                           Activation activation = Activation::identity) {
  using fpn::detail::throw_shape_error;
  if (input.rank() != 4) {
    throw_shape_error("conv_transpose2d", "input", "[N, C, H, W]", input.shape().dims());
  }
  if (weight.rank() != 4 || weight.dim(0) != input.dim(1) || weight.dim(2) != stride ||
      weight.dim(3) != stride) {
    throw_shape_error("conv_transpose2d", "weight",
                      "[" + std::to_string(input.dim(1)) + ", Cout, " + std::to_string(stride) +
                          ", " + std::to_string(stride) + "] (kernel equal to the stride)",
                      weight.shape().dims());
  }
  const std::int64_t in_channels = input.dim(1);
  const std::int64_t out_channels = weight.dim(1);
  const bool has_bias = bias.numel() > 0 && bias.data() != nullptr;
  if (has_bias && (bias.rank() != 1 || bias.dim(0) != out_channels)) {
    throw_shape_error("conv_transpose2d", "bias", "[" + std::to_string(out_channels) + "]",
                      bias.shape().dims());
  }
  const std::int64_t k = stride;
  const std::int64_t height = input.dim(2);
  const std::int64_t width = input.dim(3);
  const std::int64_t pixels = height * width;
  const std::int64_t taps = out_channels * k * k;

  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  // weight viewed as [Cin, Cout * k * k]; its transpose maps input channels to (cout, dy, dx).
  const Eigen::Map<const Matrix> weight_matrix(weight.data(), in_channels, taps);
  auto output = Tensor<T>::uninitialized(Shape{input.dim(0), out_channels, k * height, k * width});
  const std::int64_t out_width = k * width;
  // One image per task (the mask head's batch of ROIs), each with its own product matrix.
  fpn::detail::SlotScratch<T> scratch(static_cast<std::size_t>(taps * pixels));
  fpn::detail::parallel_for(input.dim(0), [&](std::int64_t n, int slot) {
    const Eigen::Map<const Matrix> image(input.data() + n * in_channels * pixels, in_channels,
                                         pixels);
    Eigen::Map<Matrix> products(scratch.get(slot), taps, pixels);
    products.noalias() = weight_matrix.transpose() * image;
    T* out = output.data() + n * out_channels * k * k * pixels;
    for (std::int64_t channel = 0; channel < out_channels; ++channel) {
      const T offset = has_bias ? bias.data()[channel] : T{};
      T* plane = out + channel * k * k * pixels;
      for (std::int64_t dy = 0; dy < k; ++dy) {
        for (std::int64_t dx = 0; dx < k; ++dx) {
          const T* source = products.data() + ((channel * k + dy) * k + dx) * pixels;
          for (std::int64_t y = 0; y < height; ++y) {
            T* line = plane + (k * y + dy) * out_width + dx;
            for (std::int64_t x = 0; x < width; ++x) {
              const T value = source[y * width + x] + offset;
              line[k * x] = activate(activation, value);
            }
          }
        }
      }
    }
  });
  return output;
}

}  // namespace fpn::ops
