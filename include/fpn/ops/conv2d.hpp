// 2-D convolution (square kernel, stride and zero padding; dilation 1, groups 1) on a GEMM (fpn's
// panel kernel for float, Eigen's for other types), with the bias and an optional ReLU applied
// while the output tile is still in cache.
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

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/detail/gemm.hpp"
#include "fpn/core/detail/panel_gemm.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/activation.hpp"
#include "fpn/ops/winograd.hpp"

namespace fpn::ops {

// How conv2d computes: automatic picks Winograd for the 3x3 stride-1 padding-1 convs where it is
// faster; the others force one path (winograd only for those convs), for tests and benchmarks.
enum class Conv2dAlgorithm { automatic, im2col, winograd };

struct Conv2dParams {
  int stride = 1;
  int padding = 0;
  Activation activation = Activation::identity;  // applied after the bias
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

// Output panels (of 64 pixels) per task of the float panel path: each slice of the weight is
// read once for all of them.
inline constexpr int conv_panels_per_task = 4;

// Float convolutions run on the panel kernel (conv2d_panels_into); Eigen's GEMM serves the other
// element types. Against Eigen on 2 threads (bench/bench_conv.cpp and A/Bs of fpn_detect): 3x3
// stride-2 convs 2-3x, 1x1 convs 64 -> 256 1.3x and 256 -> 1024 1.8x; the reducing 1x1 convs of
// the bottlenecks (1024 -> 256) were 0.8x while their input was copied into panels, and are ahead
// since the kernel reads a 1x1 conv's input map in place (Faster R-CNN R50-FPN's detect call 5%
// faster).

// Output pixels per tile for a GEMM of the given depth: as many columns as fit
// column_budget_bytes (at least 64), at most the map's pixels.
template <typename T>
std::int64_t column_tile(std::int64_t pixels, std::int64_t depth) {
  const auto column_bytes = static_cast<std::int64_t>(sizeof(T)) * std::max<std::int64_t>(depth, 1);
  return std::min(pixels, std::max<std::int64_t>(64, column_budget_bytes / column_bytes));
}

inline std::int64_t conv_output_size(std::int64_t input, std::int64_t kernel, int stride,
                                     int padding) {
  return (input + 2 * padding - kernel) / stride + 1;
}

// Gathers the patches of output pixels [first, first + count) of one image into
// columns: [Cin * kernel * kernel, count] with row stride row_stride (count if 0), rows ordered
// (channel, ky, kx) like a PyTorch weight.
template <typename T>
void gather_patches(const T* image, std::int64_t channels, std::int64_t height, std::int64_t width,
                    int kernel, int stride, int padding, std::int64_t output_width,
                    std::int64_t first, std::int64_t count, T* columns, std::int64_t row_stride = 0) {
  if (row_stride == 0) row_stride = count;
  const std::int64_t rows = channels * kernel * kernel;
  fpn::detail::parallel_for_if(rows * count > (1 << 16), rows, [&](std::int64_t row, int) {
    const std::int64_t kx = row % kernel;
    const std::int64_t ky = (row / kernel) % kernel;
    const std::int64_t channel = row / (kernel * kernel);
    const T* plane = image + channel * height * width;
    T* out = columns + row * row_stride;
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
  });
}

// out[c, :] = activation(out[c, :] + bias[c]) over a block of columns of a [Cout, pixels] map.
template <typename Block, typename T>
void bias_activation_epilogue(Block&& block, const T* bias, Activation activation) {
  for (Eigen::Index row = 0; row < block.rows(); ++row) {
    auto line = block.row(row);
    if (bias != nullptr) line.array() += bias[row];
    activate_line(activation, line);
  }
}

inline bool winograd_applies(int kernel, Conv2dParams params) {
  return kernel == 3 && params.stride == 1 && params.padding == 1;
}

// With at least this many tiles, threads take whole tiles, each GEMM sequential; with fewer, the
// tiles run in turn, each GEMM split across the threads. A size, not a thread count, decides.
inline constexpr std::int64_t min_parallel_tiles = 4;

// Whether Winograd beats im2col + GEMM: enough pixels to amortise the per-call filter transform,
// and at least 16 channels each way (its 16 GEMMs have depth Cin and height Cout; no detector
// layer is thinner, so thinner convs keep the im2col path they were tested on).
inline bool winograd_pays(std::int64_t batch, std::int64_t in_channels, std::int64_t out_channels,
                          std::int64_t height, std::int64_t width) {
  return in_channels >= winograd_min_channels && out_channels >= winograd_min_channels &&
         batch * height * width >= winograd_min_pixels;
}

// Runs compute_tile(index, scratch of scratch_size values, split) for every tile. With enough
// tiles each thread takes whole tiles, its GEMMs sequential (split false): no barrier per tile.
// Otherwise the few tiles run in turn, each GEMM split across the threads (split true). The
// scratch is uninitialised: compute_tile writes it before reading it.
template <typename T, typename ComputeTile>
void run_tiles(std::int64_t total_tiles, std::size_t scratch_size, const ComputeTile& compute_tile) {
  fpn::detail::SlotScratch<T> scratch(scratch_size, fpn::detail::ScratchFill::uninitialized);
  if (total_tiles >= min_parallel_tiles) {
    fpn::detail::parallel_for(total_tiles, [&](std::int64_t index, int slot) {
      compute_tile(index, scratch.get(slot), false);
    });
    return;
  }
  for (std::int64_t index = 0; index < total_tiles; ++index) compute_tile(index, scratch.get(0), true);
}

// The float convolution on fpn's panel kernel (core/detail/panel_gemm.hpp): output pixels in
// panels of 64, each one task: its patches copied into a [Cin k k][64] panel (a 1x1 conv's
// panels are read in place from its input map, but for an image's last, partial one), multiplied
// by the weight as stored ([Cout, Cin k k]) straight into the output, then the bias and
// activation while those columns are in cache. No column buffer, no re-packing of the weight,
// and every output computed the same way at any thread count.
inline void conv2d_panels_into(const float* input, std::int64_t batch, std::int64_t in_channels,
                               std::int64_t height, std::int64_t width, const float* weights,
                               std::int64_t out_channels, int kernel, const float* bias,
                               Conv2dParams params, float* output, bool accumulate) {
  using fpn::detail::panel_width;
  const std::int64_t out_height = conv_output_size(height, kernel, params.stride, params.padding);
  const std::int64_t out_width = conv_output_size(width, kernel, params.stride, params.padding);
  const std::int64_t pixels = out_height * out_width;
  const std::int64_t depth = in_channels * kernel * kernel;
  const bool pointwise = kernel == 1 && params.stride == 1 && params.padding == 0;
  const std::int64_t panels_per_image = fpn::detail::panel_count(pixels);
  const std::int64_t tasks_per_image = (panels_per_image + conv_panels_per_task - 1) / conv_panels_per_task;
  const std::int64_t tasks = batch * tasks_per_image;
  // Per thread: its panels, and an output tile for an image's last, partial panel.
  fpn::detail::SlotScratch<float> scratch(
      static_cast<std::size_t>((conv_panels_per_task * depth + out_channels) * panel_width),
      fpn::detail::ScratchFill::uninitialized);
  const bool worth_threads = tasks > 1 && out_channels * depth * pixels * batch >= (1 << 20);
  fpn::detail::parallel_for_if(worth_threads, tasks, [&](std::int64_t task, int slot) {
    const std::int64_t n = task / tasks_per_image;
    const std::int64_t first = (task % tasks_per_image) * conv_panels_per_task * panel_width;
    const std::int64_t columns = std::min(conv_panels_per_task * panel_width, pixels - first);
    const int count = static_cast<int>(fpn::detail::panel_count(columns));
    float* panels = scratch.get(slot);
    float* edge = panels + conv_panels_per_task * depth * panel_width;
    const float* image = input + n * in_channels * height * width;
    float* out = output + n * out_channels * pixels + first;
    float* targets[conv_panels_per_task];
    std::int64_t strides[conv_panels_per_task];
    if (pointwise && columns == count * panel_width) {
      // A 1x1 conv's panels are 64 columns of the input map itself: read in place, no copy.
      for (int p = 0; p < count; ++p) {
        targets[p] = out + p * panel_width;
        strides[p] = pixels;
      }
      fpn::detail::panel_multiply(out_channels, depth, weights, depth,
                                  fpn::detail::PanelLayout::in_place(image + first, pixels), count,
                                  targets, strides, accumulate);
      bias_activation_epilogue(Eigen::Map<RowMajorMatrix<float>, 0, Eigen::OuterStride<>>(
                                   out, out_channels, columns, Eigen::OuterStride<>(pixels)),
                               bias, params.activation);
      return;
    }
    for (int p = 0; p < count; ++p) {
      const std::int64_t start = p * panel_width;
      const std::int64_t valid = std::min(panel_width, columns - start);
      float* panel = panels + p * depth * panel_width;
      if (pointwise) {
        fpn::detail::pack_panels(image + first + start, depth, valid, pixels, panel);
      } else {
        gather_patches(image, in_channels, height, width, kernel, params.stride, params.padding,
                       out_width, first + start, valid, panel, panel_width);
        fpn::detail::zero_panel_tail(panel, depth, valid);
      }
      targets[p] = out + start;
      strides[p] = pixels;
      if (valid < panel_width) {  // only an image's last panel: through the edge tile
        if (accumulate) {
          for (std::int64_t c = 0; c < out_channels; ++c) {
            std::copy_n(out + start + c * pixels, valid, edge + c * panel_width);
          }
        }
        targets[p] = edge;
        strides[p] = panel_width;
      }
    }
    fpn::detail::panel_multiply(out_channels, depth, weights, depth, panels, count, targets, strides,
                                accumulate);
    const std::int64_t last = (count - 1) * panel_width;
    if (targets[count - 1] == edge) {
      for (std::int64_t c = 0; c < out_channels; ++c) {
        std::copy_n(edge + c * panel_width, columns - last, out + last + c * pixels);
      }
    }
    bias_activation_epilogue(Eigen::Map<RowMajorMatrix<float>, 0, Eigen::OuterStride<>>(
                                 out, out_channels, columns, Eigen::OuterStride<>(pixels)),
                             bias, params.activation);
  });
}

// The convolution itself on raw, validated buffers; weights are [Cout, Cin * k * k] row-major.
// accumulate: output holds a map to add the convolution to, before the bias and ReLU.
template <typename T>
void conv2d_into(const T* input, std::int64_t batch, std::int64_t in_channels, std::int64_t height,
                 std::int64_t width, const T* weights, std::int64_t out_channels, int kernel,
                 const T* bias, Conv2dParams params, T* output, bool accumulate = false) {
  if (winograd_applies(kernel, params) &&
      (params.algorithm == Conv2dAlgorithm::winograd ||
       (params.algorithm == Conv2dAlgorithm::automatic &&
        winograd_pays(batch, in_channels, out_channels, height, width)))) {
    if (!accumulate) {
      winograd_f2x3_into(input, batch, in_channels, height, width, weights, out_channels, bias,
                         params.activation, output);
      return;
    }
    // Winograd writes whole tiles: the sum goes through a temporary map.
    const std::int64_t count = batch * out_channels * height * width;
    auto sum = Tensor<T>::uninitialized(Shape{count});
    winograd_f2x3_into(input, batch, in_channels, height, width, weights, out_channels,
                       static_cast<const T*>(nullptr), Activation::identity, sum.data());
    Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(output, count) +=
        Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(sum.data(), count);
    for (std::int64_t n = 0; n < batch; ++n) {
      bias_activation_epilogue(Eigen::Map<RowMajorMatrix<T>>(output + n * out_channels * height * width,
                                                       out_channels, height * width),
                         bias, params.activation);
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    conv2d_panels_into(input, batch, in_channels, height, width, weights, out_channels, kernel,
                       bias, params, output, accumulate);
    return;
  }
  const std::int64_t out_height = conv_output_size(height, kernel, params.stride, params.padding);
  const std::int64_t out_width = conv_output_size(width, kernel, params.stride, params.padding);
  const std::int64_t pixels = out_height * out_width;
  const std::int64_t depth = in_channels * kernel * kernel;
  const Eigen::Map<const RowMajorMatrix<T>> weight_matrix(weights, out_channels, depth);
  const bool pointwise = kernel == 1 && params.stride == 1 && params.padding == 0;

  // Tiles of output pixels whose columns (gathered patches, or for a 1x1 conv the input itself)
  // fit the budget: Eigen packs a GEMM's whole right-hand side, so a whole-map 1x1 conv over C2
  // would pack 60 MB.
  const std::int64_t tile = column_tile<T>(pixels, depth);
  const std::int64_t tiles_per_image = (pixels + tile - 1) / tile;
  const std::int64_t total_tiles = batch * tiles_per_image;

  // One tile: its columns, one GEMM (split across the threads when `split`), the bias and ReLU
  // while the output is in cache.
  auto compute_tile = [&](std::int64_t index, T* columns, bool split) {
    const std::int64_t n = index / tiles_per_image;
    const std::int64_t first = (index % tiles_per_image) * tile;
    const std::int64_t count = std::min(tile, pixels - first);
    const T* image = input + n * in_channels * height * width;
    Eigen::Map<RowMajorMatrix<T>, 0, Eigen::OuterStride<>> out_block(
        output + n * out_channels * pixels + first, out_channels, count,
        Eigen::OuterStride<>(pixels));
    auto multiply = [&](const auto& right) {
      if (split) {
        fpn::detail::parallel_gemm(out_block, weight_matrix, right, accumulate,
                                   [&](auto&& block, std::int64_t first_row, std::int64_t) {
                                     bias_activation_epilogue(block, bias ? bias + first_row : nullptr,
                                                        params.activation);
                                   });
        return;
      }
      if (accumulate) {
        out_block.noalias() += weight_matrix * right;
      } else {
        out_block.noalias() = weight_matrix * right;
      }
      bias_activation_epilogue(out_block, bias, params.activation);
    };
    if (pointwise) {
      multiply(Eigen::Map<const RowMajorMatrix<T>, 0, Eigen::OuterStride<>>(
          image + first, depth, count, Eigen::OuterStride<>(pixels)));
    } else {
      gather_patches(image, in_channels, height, width, kernel, params.stride, params.padding,
                     out_width, first, count, columns);
      multiply(Eigen::Map<const RowMajorMatrix<T>>(columns, depth, count));
    }
  };
  const auto columns_size = static_cast<std::size_t>(pointwise ? 0 : depth * tile);

  run_tiles<T>(total_tiles, columns_size, compute_tile);
}

inline void check_conv_params(std::string_view where, Conv2dParams params) {
  if (params.stride < 1 || params.padding < 0) {
    fpn::detail::throw_argument_error(
        where, "stride must be >= 1 and padding >= 0, got stride " +
                   std::to_string(params.stride) + " and padding " + std::to_string(params.padding));
  }
  if (!is_valid(params.activation)) {
    fpn::detail::throw_argument_error(
        where, "activation must be an ops::Activation enumerator, got " +
                   std::to_string(static_cast<int>(params.activation)));
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

// Validates conv2d's arguments; returns whether there is a bias, the kernel size and the output
// shape.
struct Conv2dCall {
  bool has_bias;
  int kernel;
  Shape output;
};

template <typename T>
Conv2dCall check_conv2d(std::string_view where, TensorView<const T> input,
                        TensorView<const T> weight, TensorView<const T> bias,
                        Conv2dParams params) {
  using fpn::detail::throw_shape_error;
  if (input.rank() != 4) throw_shape_error(where, "input", "[N, C, H, W]", input.shape().dims());
  if (weight.rank() != 4 || weight.dim(2) != weight.dim(3) || weight.dim(1) != input.dim(1)) {
    throw_shape_error(where, "weight",
                      "[Cout, " + std::to_string(input.dim(1)) + ", k, k] for input " +
                          input.shape().str(),
                      weight.shape().dims());
  }
  const bool has_bias = bias.numel() > 0 && bias.data() != nullptr;
  if (has_bias && (bias.rank() != 1 || bias.dim(0) != weight.dim(0))) {
    throw_shape_error(where, "bias", "[" + std::to_string(weight.dim(0)) + "]",
                      bias.shape().dims());
  }
  check_conv_params(where, params);
  const int kernel = static_cast<int>(weight.dim(2));
  check_conv_algorithm(where, kernel, params);
  if (input.dim(2) + 2 * params.padding < kernel || input.dim(3) + 2 * params.padding < kernel) {
    throw_shape_error(where, "input",
                      "at least " + std::to_string(kernel) + "x" + std::to_string(kernel) +
                          " after padding",
                      input.shape().dims());
  }
  const std::int64_t out_height = conv_output_size(input.dim(2), kernel, params.stride, params.padding);
  const std::int64_t out_width = conv_output_size(input.dim(3), kernel, params.stride, params.padding);
  return {has_bias, kernel, Shape{input.dim(0), weight.dim(0), out_height, out_width}};
}

}  // namespace detail

// input:  [N, Cin, H, W]; weight: [Cout, Cin, k, k]; bias: [Cout] or empty (no bias)
// returns [N, Cout, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1]
template <typename T = float>
Tensor<T> conv2d(std::type_identity_t<TensorView<const T>> input,
                 std::type_identity_t<TensorView<const T>> weight,
                 std::type_identity_t<TensorView<const T>> bias, Conv2dParams params = {}) {
  const auto [has_bias, kernel, shape] = detail::check_conv2d("conv2d", input, weight, bias, params);
  auto output = Tensor<T>::uninitialized(shape);
  detail::conv2d_into(input.data(), input.dim(0), input.dim(1), input.dim(2), input.dim(3),
                      weight.data(), weight.dim(0), kernel, has_bias ? bias.data() : nullptr,
                      params, output.data());
  return output;
}

// output = activation(output + conv(input, weight) + bias), in place: a residual block's last conv
// added to its shortcut without a second full-size map. output: [N, Cout, H', W'] as conv2d
// returns. The sum is rounded in another order than conv2d followed by add_inplace (the shortcut
// joins before the bias), so results may differ in the last bit.
template <typename T = float>
void conv2d_add_into(std::type_identity_t<TensorView<const T>> input,
                     std::type_identity_t<TensorView<const T>> weight,
                     std::type_identity_t<TensorView<const T>> bias, Conv2dParams params,
                     std::type_identity_t<TensorView<T>> output) {
  const auto [has_bias, kernel, expected] = detail::check_conv2d("conv2d_add_into", input, weight,
                                                                 bias, params);
  if (!(output.shape() == expected)) {
    fpn::detail::throw_shape_error("conv2d_add_into", "output", expected.str(),
                                   output.shape().dims());
  }
  detail::conv2d_into(input.data(), input.dim(0), input.dim(1), input.dim(2), input.dim(3),
                      weight.data(), weight.dim(0), kernel, has_bias ? bias.data() : nullptr,
                      params, output.data(), true);
}

// map = activation(conv1x1(map, weight) + bias), in place, for a weight [C, C, 1, 1] (as many
// outputs as inputs): each tile of pixels is computed into scratch, then copied over its input.
template <typename T = float>
void conv2d_1x1_in_place(std::type_identity_t<TensorView<T>> map,
                         std::type_identity_t<TensorView<const T>> weight,
                         std::type_identity_t<TensorView<const T>> bias, Activation activation) {
  const auto [has_bias, kernel, shape] =
      detail::check_conv2d("conv2d_1x1_in_place", TensorView<const T>(map), weight, bias,
                           Conv2dParams{1, 0, activation});
  if (kernel != 1 || !(shape == map.shape())) {
    fpn::detail::throw_shape_error("conv2d_1x1_in_place", "weight",
                                   "[" + std::to_string(map.dim(1)) + ", " +
                                       std::to_string(map.dim(1)) + ", 1, 1]",
                                   weight.shape().dims());
  }
  const std::int64_t channels = map.dim(1);
  const std::int64_t pixels = map.dim(2) * map.dim(3);
  const std::int64_t tile = detail::column_tile<T>(pixels, channels);
  const std::int64_t tiles_per_image = pixels == 0 ? 0 : (pixels + tile - 1) / tile;
  const std::int64_t total_tiles = map.dim(0) * tiles_per_image;
  const Eigen::Map<const detail::RowMajorMatrix<T>> weight_matrix(weight.data(), channels, channels);
  const T* bias_data = has_bias ? bias.data() : nullptr;
  auto compute_tile = [&](std::int64_t index, T* scratch, bool split) {
    const std::int64_t first = (index % tiles_per_image) * tile;
    const std::int64_t count = std::min(tile, pixels - first);
    T* image = map.data() + (index / tiles_per_image) * channels * pixels;
    Eigen::Map<detail::RowMajorMatrix<T>, 0, Eigen::OuterStride<>> columns(
        image + first, channels, count, Eigen::OuterStride<>(pixels));
    Eigen::Map<detail::RowMajorMatrix<T>> result(scratch, channels, count);
    auto epilogue = [&](auto&& block, std::int64_t first_row, std::int64_t) {
      detail::bias_activation_epilogue(block, bias_data ? bias_data + first_row : nullptr, activation);
    };
    if (split) {
      fpn::detail::parallel_gemm(result, weight_matrix, columns, false, epilogue);
    } else {
      result.noalias() = weight_matrix * columns;
      epilogue(result, 0, 0);
    }
    columns = result;
  };
  detail::run_tiles<T>(total_tiles, static_cast<std::size_t>(channels * tile), compute_tile);
}

// Without bias.
template <typename T = float>
Tensor<T> conv2d(std::type_identity_t<TensorView<const T>> input,
                 std::type_identity_t<TensorView<const T>> weight, Conv2dParams params = {}) {
  return conv2d<T>(input, weight, TensorView<const T>(), params);
}

}  // namespace fpn::ops
