// RoIPool (Girshick, "Fast R-CNN", 2015): the maximum over each output bin of a ROI whose corners
// are rounded to whole feature-map pixels, exactly as torchvision 0.14's CPU kernel
// (csrc/ops/cpu/roi_pool_kernel.cpp) computes it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "fpn/core/thread_pool.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/roi_align.hpp"

namespace fpn::ops {

struct RoiPoolParams {
  std::int64_t output_height = 7;
  std::int64_t output_width = 7;
  // Feature-map pixels per input-image pixel, e.g. 1/16 for a stride-16 map.
  double spatial_scale = 1.0;
};

// features: [N, C, H, W]; boxes: [R, 5] (batch index, x1, y1, x2, y2) in input-image pixels
// returns:  [R, C, output_height, output_width]; a bin that covers no pixel of the map is 0
template <typename T = float>
Tensor<T> roi_pool(std::type_identity_t<TensorView<const T>> features,
                   std::type_identity_t<TensorView<const T>> boxes, RoiPoolParams params) {
  const detail::RoiInputSizes sizes = detail::check_roi_inputs(
      "roi_pool", features, boxes, params.output_height, params.output_width, params.spatial_scale);
  const std::int64_t output_height = params.output_height;
  const std::int64_t output_width = params.output_width;
  const T spatial_scale = static_cast<T>(params.spatial_scale);
  // torch starts every non-empty bin at -FLT_MAX, also for double.
  const T lowest = static_cast<T>(-std::numeric_limits<float>::max());
  Tensor<T> output =
      Tensor<T>::uninitialized(Shape{sizes.num_rois, sizes.channels, output_height, output_width});

  fpn::detail::parallel_for(sizes.num_rois, [&](std::int64_t n, int) {
    const T* roi = boxes.data() + 5 * n;
    const auto batch_index = static_cast<std::int64_t>(roi[0]);
    // Rounded half away from zero (std::round), as the kernel's round().
    const auto roi_start_w = static_cast<std::int64_t>(std::round(roi[1] * spatial_scale));
    const auto roi_start_h = static_cast<std::int64_t>(std::round(roi[2] * spatial_scale));
    const auto roi_end_w = static_cast<std::int64_t>(std::round(roi[3] * spatial_scale));
    const auto roi_end_h = static_cast<std::int64_t>(std::round(roi[4] * spatial_scale));
    // Both corners are inclusive; malformed ROIs become 1 x 1.
    const std::int64_t roi_width = std::max<std::int64_t>(roi_end_w - roi_start_w + 1, 1);
    const std::int64_t roi_height = std::max<std::int64_t>(roi_end_h - roi_start_h + 1, 1);
    const T bin_height = static_cast<T>(roi_height) / static_cast<T>(output_height);
    const T bin_width = static_cast<T>(roi_width) / static_cast<T>(output_width);

    for (std::int64_t ph = 0; ph < output_height; ++ph) {
      for (std::int64_t pw = 0; pw < output_width; ++pw) {
        const auto bin_start_h =
            static_cast<std::int64_t>(std::floor(static_cast<T>(ph) * bin_height));
        const auto bin_start_w =
            static_cast<std::int64_t>(std::floor(static_cast<T>(pw) * bin_width));
        const auto bin_end_h =
            static_cast<std::int64_t>(std::ceil(static_cast<T>(ph + 1) * bin_height));
        const auto bin_end_w =
            static_cast<std::int64_t>(std::ceil(static_cast<T>(pw + 1) * bin_width));
        const std::int64_t h_start =
            std::clamp<std::int64_t>(bin_start_h + roi_start_h, 0, sizes.height);
        const std::int64_t h_end =
            std::clamp<std::int64_t>(bin_end_h + roi_start_h, 0, sizes.height);
        const std::int64_t w_start =
            std::clamp<std::int64_t>(bin_start_w + roi_start_w, 0, sizes.width);
        const std::int64_t w_end =
            std::clamp<std::int64_t>(bin_end_w + roi_start_w, 0, sizes.width);
        const bool empty = h_end <= h_start || w_end <= w_start;

        for (std::int64_t c = 0; c < sizes.channels; ++c) {
          const T* map =
              features.data() + (batch_index * sizes.channels + c) * sizes.height * sizes.width;
          // NaN never wins the comparison, as in torch.
          T maximum = empty ? T(0) : lowest;
          for (std::int64_t h = h_start; h < h_end; ++h) {
            for (std::int64_t w = w_start; w < w_end; ++w) {
              if (map[h * sizes.width + w] > maximum) maximum = map[h * sizes.width + w];
            }
          }
          output.data()[((n * sizes.channels + c) * output_height + ph) * output_width + pw] =
              maximum;
        }
      }
    }
  });
  return output;
}

}  // namespace fpn::ops
