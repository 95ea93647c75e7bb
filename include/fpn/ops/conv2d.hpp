// 2-D convolution (square kernel, stride and zero padding; dilation 1, groups 1) on Eigen's GEMM,
// with the bias and an optional ReLU applied while the output tile is still in cache.
//
// Output pixels are computed in tiles: a tile's patches are gathered into a small column buffer
// (im2col of at most `column_budget_bytes`), then one GEMM writes the tile's columns of the output.
// A full-image im2col would be huge (a 3x3 conv over P2 of an 800x1216 image needs ~560 MB);
// the tile keeps it to a few MB that stay in cache. 1x1 stride-1 convs need no gather at all.
//
// 3x3 stride-1 padding-1 convs with enough channels and pixels (most of a Mask R-CNN's FLOPs) run
// Winograd F(2x2, 3x3) instead (ops/winograd.hpp): 2.25x fewer multiplies for the same result
// to float rounding.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "fpn/core/detail/parallel.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/winograd.hpp"

namespace fpn::ops {

// How conv2d computes: automatic picks Winograd for the 3x3 stride-1 padding-1 convs where it is
// faster; the others force one path (winograd only for those convs), for tests and benchmarks.
enum class Conv2dAlgorithm { automatic, im2col, winograd };

struct Conv2dParams {
  int stride = 1;
  int padding = 0;
  bool relu = false;  // apply max(0, x) after the bias
  Conv2dAlgorithm algorithm = Conv2dAlgorithm::automatic;
};

namespace detail {

template <typename T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Column buffers above this size are split into tiles of output pixels.
inline constexpr std::int64_t column_budget_bytes = 4 << 20;

// Below these sizes automatic 3x3 convs stay on im2col. Winograd's fixed cost per call is the
// filter transform (16 Cout Cin values), so the break-even is a pixel count nearly independent of
// the channels. On one core (bench/bench_conv.cpp), 256 -> 256 channels: 1.65x slower at 8x8,
// 1.15x faster at 14x14 and 13x19, 1.9-2x from 50x76 up; 16 -> 16 channels 1.6x at 100x152.
inline constexpr std::int64_t winograd_min_channels = 16;
inline constexpr std::int64_t winograd_min_pixels = 144;

inline std::int64_t conv_output_size(std::int64_t input, std::int64_t kernel, int stride,
                                     int padding) {
  return (input + 2 * padding - kernel) / stride + 1;
}

// Gathers the patches of output pixels [first, first + count) of one image into
// columns: [Cin * kernel * kernel, count], rows ordered (channel, ky, kx) like a PyTorch weight.
template <typename T>
void gather_patches(const T* image, std::int64_t channels, std::int64_t height, std::int64_t width,
                    int kernel, int stride, int padding, std::int64_t output_width,
                    std::int64_t first, std::int64_t count, T* columns) {
  const std::int64_t rows = channels * kernel * kernel;
  FPN_OMP(omp parallel for schedule(static) if (rows * count > (1 << 16)))
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::int64_t kx = row % kernel;
    const std::int64_t ky = (row / kernel) % kernel;
    const std::int64_t channel = row / (kernel * kernel);
    const T* plane = image + channel * height * width;
    T* out = columns + row * count;
    std::int64_t index = first;
    const std::int64_t end = first + count;
    while (index < end) {
      const std::int64_t oy = index / output_width;
      const std::int64_t ox_begin = index % output_width;
      const std::int64_t ox_end = std::min(output_width, ox_begin + (end - index));
      const std::int64_t iy = oy * stride - padding + ky;
      if (iy < 0 || iy >= height) {
        std::fill(out, out + (ox_end - ox_begin), T{});
        out += ox_end - ox_begin;
      } else {
        const T* line = plane + iy * width;
        for (std::int64_t ox = ox_begin; ox < ox_end; ++ox) {
          const std::int64_t ix = ox * stride - padding + kx;
          *out++ = (ix >= 0 && ix < width) ? line[ix] : T{};
        }
      }
      index += ox_end - ox_begin;
    }
  }
}

// out[c, :] = relu?(out[c, :] + bias[c]) over a block of columns of a [Cout, pixels] map.
template <typename Block, typename T>
void bias_relu_epilogue(Block&& block, const T* bias, bool relu) {
  for (Eigen::Index row = 0; row < block.rows(); ++row) {
    auto line = block.row(row);
    if (bias != nullptr) line.array() += bias[row];
    if (relu) line = line.cwiseMax(T{0});
  }
}

inline bool winograd_applies(int kernel, Conv2dParams params) {
  return kernel == 3 && params.stride == 1 && params.padding == 1;
}

// Whether Winograd beats im2col + GEMM: enough pixels to amortise the per-call filter transform,
// and at least 16 channels each way (its 16 GEMMs have depth Cin and height Cout; no detector
// layer is thinner, so thinner convs keep the im2col path they were tested on).
inline bool winograd_pays(std::int64_t batch, std::int64_t in_channels, std::int64_t out_channels,
                          std::int64_t height, std::int64_t width) {
  return in_channels >= winograd_min_channels && out_channels >= winograd_min_channels &&
         batch * height * width >= winograd_min_pixels;
}

// The convolution itself on raw, validated buffers; weights are [Cout, Cin * k * k] row-major.
template <typename T>
void conv2d_into(const T* input, std::int64_t batch, std::int64_t in_channels, std::int64_t height,
                 std::int64_t width, const T* weights, std::int64_t out_channels, int kernel,
                 const T* bias, Conv2dParams params, T* output) {
  if (winograd_applies(kernel, params) &&
      (params.algorithm == Conv2dAlgorithm::winograd ||
       (params.algorithm == Conv2dAlgorithm::automatic &&
        winograd_pays(batch, in_channels, out_channels, height, width)))) {
    winograd_f2x3_into(input, batch, in_channels, height, width, weights, out_channels, bias,
                       params.relu, output);
    return;
  }
  const std::int64_t out_height = conv_output_size(height, kernel, params.stride, params.padding);
  const std::int64_t out_width = conv_output_size(width, kernel, params.stride, params.padding);
  const std::int64_t pixels = out_height * out_width;
  const std::int64_t depth = in_channels * kernel * kernel;
  const Eigen::Map<const RowMajorMatrix<T>> weight_matrix(weights, out_channels, depth);
  const bool pointwise = kernel == 1 && params.stride == 1 && params.padding == 0;

  std::int64_t tile = pixels;
  if (!pointwise) {
    tile = std::max<std::int64_t>(
        64, column_budget_bytes / static_cast<std::int64_t>(sizeof(T) * std::max<std::int64_t>(depth, 1)));
    tile = std::min(tile, pixels);
  }
  std::vector<T> columns(pointwise ? 0 : static_cast<std::size_t>(depth * tile));

  for (std::int64_t n = 0; n < batch; ++n) {
    const T* image = input + n * in_channels * height * width;
    Eigen::Map<RowMajorMatrix<T>> out(output + n * out_channels * pixels, out_channels, pixels);
    for (std::int64_t first = 0; first < pixels; first += tile) {
      const std::int64_t count = std::min(tile, pixels - first);
      auto out_block = out.middleCols(first, count);
      if (pointwise) {
        const Eigen::Map<const RowMajorMatrix<T>, 0, Eigen::OuterStride<>> in_block(
            image + first, depth, count, Eigen::OuterStride<>(pixels));
        out_block.noalias() = weight_matrix * in_block;
      } else {
        gather_patches(image, in_channels, height, width, kernel, params.stride, params.padding,
                       out_width, first, count, columns.data());
        const Eigen::Map<const RowMajorMatrix<T>> column_matrix(columns.data(), depth, count);
        out_block.noalias() = weight_matrix * column_matrix;
      }
      bias_relu_epilogue(out_block, bias, params.relu);
    }
  }
}

inline void check_conv_params(std::string_view where, Conv2dParams params) {
  if (params.stride < 1 || params.padding < 0) {
    fpn::detail::throw_argument_error(
        where, "stride must be >= 1 and padding >= 0, got stride " +
                   std::to_string(params.stride) + " and padding " + std::to_string(params.padding));
  }
}

inline void check_conv_algorithm(std::string_view where, int kernel, Conv2dParams params) {
  if (params.algorithm == Conv2dAlgorithm::winograd && !winograd_applies(kernel, params)) {
    fpn::detail::throw_argument_error(
        where, "the winograd algorithm needs kernel 3, stride 1 and padding 1, got kernel " +
                   std::to_string(kernel) + ", stride " + std::to_string(params.stride) +
                   " and padding " + std::to_string(params.padding));
  }
}

}  // namespace detail

// input:  [N, Cin, H, W]; weight: [Cout, Cin, k, k]; bias: [Cout] or empty (no bias)
// returns [N, Cout, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1]
template <typename T = float>
Tensor<T> conv2d(std::type_identity_t<TensorView<const T>> input,
                 std::type_identity_t<TensorView<const T>> weight,
                 std::type_identity_t<TensorView<const T>> bias, Conv2dParams params = {}) {
  using fpn::detail::throw_shape_error;
  if (input.rank() != 4) throw_shape_error("conv2d", "input", "[N, C, H, W]", input.shape().dims());
  if (weight.rank() != 4 || weight.dim(2) != weight.dim(3) || weight.dim(1) != input.dim(1)) {
    throw_shape_error("conv2d", "weight",
                      "[Cout, " + std::to_string(input.dim(1)) + ", k, k] for input " +
                          input.shape().str(),
                      weight.shape().dims());
  }
  const bool has_bias = bias.numel() > 0 && bias.data() != nullptr;
  if (has_bias && (bias.rank() != 1 || bias.dim(0) != weight.dim(0))) {
    throw_shape_error("conv2d", "bias", "[" + std::to_string(weight.dim(0)) + "]",
                      bias.shape().dims());
  }
  detail::check_conv_params("conv2d", params);
  const int kernel = static_cast<int>(weight.dim(2));
  detail::check_conv_algorithm("conv2d", kernel, params);
  if (input.dim(2) + 2 * params.padding < kernel || input.dim(3) + 2 * params.padding < kernel) {
    throw_shape_error("conv2d", "input",
                      "at least " + std::to_string(kernel) + "x" + std::to_string(kernel) +
                          " after padding",
                      input.shape().dims());
  }
  const std::int64_t out_height =
      detail::conv_output_size(input.dim(2), kernel, params.stride, params.padding);
  const std::int64_t out_width =
      detail::conv_output_size(input.dim(3), kernel, params.stride, params.padding);
  auto output = Tensor<T>::uninitialized(Shape{input.dim(0), weight.dim(0), out_height, out_width});
  detail::conv2d_into(input.data(), input.dim(0), input.dim(1), input.dim(2), input.dim(3),
                      weight.data(), weight.dim(0), kernel, has_bias ? bias.data() : nullptr,
                      params, output.data());
  return output;
}

// Without bias.
template <typename T = float>
Tensor<T> conv2d(std::type_identity_t<TensorView<const T>> input,
                 std::type_identity_t<TensorView<const T>> weight, Conv2dParams params = {}) {
  return conv2d<T>(input, weight, TensorView<const T>(), params);
}

}  // namespace fpn::ops
