// Nearest-neighbour resize to a target size, with torch's (legacy 'nearest') index rule from
// ATen/native/UpSample.h: identity for equal sizes, i >> 1 for exact doubling, otherwise
// min(floor(i * float(in / out)), in - 1) in float32. FPN's top-down pathway resizes to the
// lateral map's exact size, which is not 2x when an odd size was halved.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fpn/core/thread_pool.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::ops {

namespace detail {

inline std::int64_t nearest_source_index(std::int64_t output_index, std::int64_t input_size,
                                         std::int64_t output_size) {
  if (output_size == input_size) return output_index;
  if (output_size == 2 * input_size) return output_index >> 1;
  const float scale = static_cast<float>(input_size) / static_cast<float>(output_size);
  return std::min(static_cast<std::int64_t>(std::floor(static_cast<float>(output_index) * scale)),
                  input_size - 1);
}

inline std::vector<std::int64_t> nearest_source_indices(std::int64_t input_size,
                                                        std::int64_t output_size) {
  std::vector<std::int64_t> indices(static_cast<std::size_t>(output_size));
  for (std::int64_t i = 0; i < output_size; ++i) {
    indices[static_cast<std::size_t>(i)] = nearest_source_index(i, input_size, output_size);
  }
  return indices;
}

// For every element of the [planes, out_height, out_width] map at `out`: apply(element, the
// source element nearest-resize picks from the [planes, height, width] map at `in`).
template <typename T, typename U, typename Apply>
void for_each_nearest(const T* in, std::int64_t planes, std::int64_t height, std::int64_t width,
                      U* out, std::int64_t out_height, std::int64_t out_width, Apply apply) {
  const auto rows = nearest_source_indices(height, out_height);
  const auto cols = nearest_source_indices(width, out_width);
  fpn::detail::parallel_for_if(planes * out_height * out_width > (1 << 16), planes, [&](std::int64_t plane, int) {
    const T* source = in + plane * height * width;
    U* target = out + plane * out_height * out_width;
    for (std::int64_t y = 0; y < out_height; ++y) {
      const T* line = source + rows[static_cast<std::size_t>(y)] * width;
      for (std::int64_t x = 0; x < out_width; ++x) {
        apply(*target++, line[cols[static_cast<std::size_t>(x)]]);
      }
    }
  });
}

}  // namespace detail

// input: [N, C, H, W]; returns [N, C, out_height, out_width].
template <typename T = float>
Tensor<T> upsample_nearest(std::type_identity_t<TensorView<const T>> input,
                           std::int64_t out_height, std::int64_t out_width) {
  if (input.rank() != 4 || input.dim(2) == 0 || input.dim(3) == 0) {
    fpn::detail::throw_shape_error("upsample_nearest", "input", "[N, C, H, W] with H, W >= 1",
                                   input.shape().dims());
  }
  if (out_height < 1 || out_width < 1) {
    fpn::detail::throw_argument_error(
        "upsample_nearest", "output size must be at least 1x1, got " +
                                std::to_string(out_height) + "x" + std::to_string(out_width));
  }
  auto output = Tensor<T>::uninitialized(Shape{input.dim(0), input.dim(1), out_height, out_width});
  detail::for_each_nearest(input.data(), input.dim(0) * input.dim(1), input.dim(2), input.dim(3),
                           output.data(), out_height, out_width,
                           [](T& out, const T& in) { out = in; });
  return output;
}

// target += upsample_nearest(source, H, W), without the resized map: FPN's top-down sum.
// target: [N, C, H, W]; source: [N, C, h, w] with h, w >= 1. The same single float addition per
// element as add_inplace after upsample_nearest, so the result is identical.
template <typename T = float>
void add_upsampled_nearest_inplace(std::type_identity_t<TensorView<T>> target,
                                   std::type_identity_t<TensorView<const T>> source) {
  if (source.rank() != 4 || source.dim(2) == 0 || source.dim(3) == 0) {
    fpn::detail::throw_shape_error("add_upsampled_nearest_inplace", "source",
                                   "[N, C, H, W] with H, W >= 1", source.shape().dims());
  }
  if (target.rank() != 4 || target.dim(0) != source.dim(0) || target.dim(1) != source.dim(1)) {
    fpn::detail::throw_shape_error(
        "add_upsampled_nearest_inplace", "target",
        "[" + std::to_string(source.dim(0)) + ", " + std::to_string(source.dim(1)) + ", H, W]",
        target.shape().dims());
  }
  detail::for_each_nearest(source.data(), source.dim(0) * source.dim(1), source.dim(2),
                           source.dim(3), target.data(), target.dim(2), target.dim(3),
                           [](T& out, const T& in) { out += in; });
}

}  // namespace fpn::ops
