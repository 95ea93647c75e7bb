// Max pooling as torch.nn.functional.max_pool2d (ceil_mode=False, dilation 1): padded positions
// never win, so a window's maximum is taken over its in-image elements only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "fpn/core/thread_pool.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::ops {

struct MaxPool2dParams {
  int kernel = 1;
  int stride = 1;
  int padding = 0;
};

// input: [N, C, H, W]; returns [N, C, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1].
// The stem uses kernel 3, stride 2, padding 1; FPN's P6 (LastLevelMaxPool) kernel 1, stride 2.
template <typename T = float>
Tensor<T> max_pool2d(std::type_identity_t<TensorView<const T>> input, MaxPool2dParams params) {
  if (input.rank() != 4) {
    fpn::detail::throw_shape_error("max_pool2d", "input", "[N, C, H, W]", input.shape().dims());
  }
  // torch's own rule: padding at most half the kernel, so every window holds an element.
  if (params.kernel < 1 || params.stride < 1 || params.padding < 0 ||
      2 * params.padding > params.kernel) {
    fpn::detail::throw_argument_error(
        "max_pool2d", "need kernel >= 1, stride >= 1 and 0 <= padding <= kernel / 2, got kernel " +
                          std::to_string(params.kernel) + ", stride " +
                          std::to_string(params.stride) + ", padding " +
                          std::to_string(params.padding));
  }
  const std::int64_t height = input.dim(2);
  const std::int64_t width = input.dim(3);
  if (height + 2 * params.padding < params.kernel || width + 2 * params.padding < params.kernel) {
    fpn::detail::throw_shape_error("max_pool2d", "input",
                                   "at least the kernel size after padding", input.shape().dims());
  }
  const std::int64_t out_height = (height + 2 * params.padding - params.kernel) / params.stride + 1;
  const std::int64_t out_width = (width + 2 * params.padding - params.kernel) / params.stride + 1;
  auto output =
      Tensor<T>::uninitialized(Shape{input.dim(0), input.dim(1), out_height, out_width});
  const std::int64_t planes = input.dim(0) * input.dim(1);
  // Separable: each output row's window rows are reduced column by column into one row (a
  // vectorisable pass), then each output reads its kernel's columns of that row. Max is exact and
  // NaN wins in both passes, so this equals the 2-D window's scan.
  const auto take = [](T value, T best) { return (value > best || value != value) ? value : best; };
  fpn::detail::parallel_for_if(planes * out_height * out_width > (1 << 16), planes, [&](std::int64_t plane, int) {
    const T* in = input.data() + plane * height * width;
    T* out = output.data() + plane * out_height * out_width;
    std::vector<T> columns(static_cast<std::size_t>(width));
    for (std::int64_t oy = 0; oy < out_height; ++oy) {
      const std::int64_t y0 = std::max<std::int64_t>(oy * params.stride - params.padding, 0);
      const std::int64_t y1 =
          std::min<std::int64_t>(oy * params.stride - params.padding + params.kernel, height);
      std::copy_n(in + y0 * width, width, columns.data());
      for (std::int64_t y = y0 + 1; y < y1; ++y) {
        const T* row = in + y * width;
        for (std::int64_t x = 0; x < width; ++x) columns[x] = take(row[x], columns[x]);
      }
      for (std::int64_t ox = 0; ox < out_width; ++ox) {
        const std::int64_t x0 = std::max<std::int64_t>(ox * params.stride - params.padding, 0);
        const std::int64_t x1 =
            std::min<std::int64_t>(ox * params.stride - params.padding + params.kernel, width);
        T best = columns[x0];
        for (std::int64_t x = x0 + 1; x < x1; ++x) best = take(columns[x], best);
        out[oy * out_width + ox] = best;
      }
    }
  });
  return output;
}

}  // namespace fpn::ops
