// RoIAlign (He et al., "Mask R-CNN", 2017): average of bilinear samples on a regular grid in each
// output bin, computed exactly as torchvision 0.14's CPU kernel (csrc/ops/cpu/roi_align_kernel.cpp)
// does: the same sampling positions, pre-computed bilinear weights shared by all channels, the
// same float summation order and a division by the sample count at the end.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "fpn/core/thread_pool.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::ops {

struct RoiAlignParams {
  std::int64_t output_height = 7;
  std::int64_t output_width = 7;
  // Feature-map pixels per input-image pixel, e.g. 1/4 for a stride-4 level.
  double spatial_scale = 1.0;
  // Sampling points per bin side; <= 0 picks ceil(roi size / output size) per ROI (torchvision's
  // MultiScaleRoIAlign uses 2).
  std::int64_t sampling_ratio = -1;
  // true: shift boxes by -0.5 pixel so that samples line up with pixel centres (Detectron2's
  // ROIAlignV2). false: the legacy mode torchvision's detection models use, which also stretches
  // ROIs smaller than one pixel to 1 x 1.
  bool aligned = false;
  // How the samples read the map: planar reads each channel plane in turn (the reference kernel's
  // loop); channels_last first copies each image to [H, W, C] and reads all channels of a sample
  // neighbour as one contiguous vector. Same sums per channel in the same order. automatic picks
  // channels_last when the boxes read the map's pixels several times over (many boxes on a small
  // level: MobileNetV3-FPN's 25x38 maps under 1000 boxes), where the copy is cheap and the
  // planar kernel's scalar gathers dominate.
  enum class Layout { automatic, planar, channels_last };
  Layout layout = Layout::automatic;
};

namespace detail {

struct RoiInputSizes {
  std::int64_t num_rois;
  std::int64_t channels;
  std::int64_t height;
  std::int64_t width;
};

// Checks what roi_align and roi_pool share: features [N, C, H, W] with H, W > 0, boxes [R, 5],
// a positive output size, a positive finite spatial scale and every batch index in [0, N).
template <typename T>
RoiInputSizes check_roi_inputs(std::string_view where, TensorView<const T> features,
                               TensorView<const T> boxes, std::int64_t output_height,
                               std::int64_t output_width, double spatial_scale) {
  if (features.rank() != 4) {
    fpn::detail::throw_shape_error(where, "features", "[N, C, H, W]", features.shape().dims());
  }
  if (features.dim(2) == 0 || features.dim(3) == 0) {
    fpn::detail::throw_shape_error(where, "features", "[N, C, H, W] with H, W > 0",
                                   features.shape().dims());
  }
  if (boxes.rank() != 2 || boxes.dim(1) != 5) {
    fpn::detail::throw_shape_error(where, "boxes", "[R, 5]", boxes.shape().dims());
  }
  if (output_height <= 0 || output_width <= 0) {
    fpn::detail::throw_argument_error(where, "output size must be positive, got " +
                                                 std::to_string(output_height) + " x " +
                                                 std::to_string(output_width));
  }
  if (!(spatial_scale > 0.0) || !std::isfinite(spatial_scale)) {
    std::ostringstream message;
    message << "spatial_scale must be positive and finite, got " << spatial_scale;
    fpn::detail::throw_argument_error(where, message.str());
  }
  const std::int64_t images = features.dim(0);
  for (std::int64_t r = 0; r < boxes.dim(0); ++r) {
    // torch truncates the batch index to int, so (-1, N) is the range that lands in [0, N).
    const T batch_index = boxes.data()[5 * r];
    if (!(batch_index > T(-1) && batch_index < static_cast<T>(images))) {
      std::ostringstream message;
      message << "boxes[" << r << "] has batch index " << batch_index << ", but features has "
              << images << (images == 1 ? " image" : " images");
      fpn::detail::throw_argument_error(where, message.str());
    }
  }
  return {boxes.dim(0), features.dim(1), features.dim(2), features.dim(3)};
}

// One sampling point: its four neighbours' offsets in an H x W plane and their bilinear weights.
template <typename T>
struct BilinearSample {
  std::int64_t offsets[4];
  T weights[4];
};

// The bilinear sample at (y, x) as torchvision computes it: points more than one pixel outside
// the map contribute nothing, points in the outer half pixel are clamped onto the border.
template <typename T>
BilinearSample<T> bilinear_sample(T y, T x, std::int64_t height, std::int64_t width) {
  // Written as !(inside) so that NaN coordinates count as outside.
  if (!(y >= T(-1) && y <= static_cast<T>(height) && x >= T(-1) && x <= static_cast<T>(width))) {
    return {{0, 0, 0, 0}, {T(0), T(0), T(0), T(0)}};
  }
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  std::int64_t y_low = static_cast<std::int64_t>(y);
  std::int64_t x_low = static_cast<std::int64_t>(x);
  std::int64_t y_high = y_low + 1;
  std::int64_t x_high = x_low + 1;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  }
  const T ly = y - static_cast<T>(y_low);
  const T lx = x - static_cast<T>(x_low);
  // torch writes 1. - ly, a double subtraction rounded back to T.
  const T hy = static_cast<T>(1.0 - ly);
  const T hx = static_cast<T>(1.0 - lx);
  return {{y_low * width + x_low, y_low * width + x_high, y_high * width + x_low,
           y_high * width + x_high},
          {hy * hx, hy * lx, ly * hx, ly * lx}};
}

}  // namespace detail

// features: [N, C, H, W]; boxes: [R, 5] (batch index, x1, y1, x2, y2) in input-image pixels
// returns:  [R, C, output_height, output_width]
template <typename T = float>
Tensor<T> roi_align(std::type_identity_t<TensorView<const T>> features,
                    std::type_identity_t<TensorView<const T>> boxes, RoiAlignParams params) {
  const detail::RoiInputSizes sizes =
      detail::check_roi_inputs("roi_align", features, boxes, params.output_height,
                               params.output_width, params.spatial_scale);
  const std::int64_t output_height = params.output_height;
  const std::int64_t output_width = params.output_width;
  const std::int64_t plane = sizes.height * sizes.width;
  const std::int64_t output_plane = output_height * output_width;
  // The kernel receives spatial_scale as T.
  const T spatial_scale = static_cast<T>(params.spatial_scale);
  const T offset = params.aligned ? T(0.5) : T(0);
  Tensor<T> output =
      Tensor<T>::uninitialized(Shape{sizes.num_rois, sizes.channels, output_height, output_width});
  const T* input = features.data();
  const T* rois = boxes.data();
  T* result = output.data();

  // ROIs are visited top to bottom (each writes only its own output): neighbours read the same
  // rows of every channel plane, which keeps a large map's pages in the TLB and cache.
  std::vector<std::int64_t> order(static_cast<std::size_t>(sizes.num_rois));
  for (std::int64_t n = 0; n < sizes.num_rois; ++n) order[static_cast<std::size_t>(n)] = n;
  std::stable_sort(order.begin(), order.end(), [rois](std::int64_t a, std::int64_t b) {
    return std::pair(rois[5 * a], rois[5 * a + 2]) < std::pair(rois[5 * b], rois[5 * b + 2]);
  });

  // The layout: channels_last when the samples' neighbour reads (about 16 per bin) exceed four
  // reads of every pixel of the map.
  const std::int64_t images = features.dim(0);
  const bool channels_last =
      params.layout == RoiAlignParams::Layout::channels_last ||
      (params.layout == RoiAlignParams::Layout::automatic && sizes.channels >= 8 &&
       sizes.num_rois * output_plane * 16 >= 4 * images * plane);
  Tensor<T> transposed;  // [N, H, W, C] when channels_last
  if (channels_last) {
    transposed = Tensor<T>::uninitialized(Shape{images, sizes.height, sizes.width, sizes.channels});
    T* target = transposed.data();
    fpn::detail::parallel_for(images * sizes.height, [&](std::int64_t row, int) {
      const std::int64_t n = row / sizes.height, y = row % sizes.height;
      const T* source = input + n * sizes.channels * plane + y * sizes.width;
      T* line = target + row * sizes.width * sizes.channels;
      for (std::int64_t c = 0; c < sizes.channels; ++c) {
        const T* from = source + c * plane;
        for (std::int64_t x = 0; x < sizes.width; ++x) line[x * sizes.channels + c] = from[x];
      }
    });
  }
  fpn::detail::SlotScratch<T> sums_scratch(
      channels_last ? static_cast<std::size_t>(sizes.channels) : std::size_t{0});

  fpn::detail::parallel_for(sizes.num_rois, [&](std::int64_t index, int slot) {
    const std::int64_t n = order[static_cast<std::size_t>(index)];
    const T* roi = rois + 5 * n;
    const auto batch_index = static_cast<std::int64_t>(roi[0]);
    // No rounding of the scaled corners: this is what distinguishes RoIAlign from RoIPool.
    const T roi_start_w = roi[1] * spatial_scale - offset;
    const T roi_start_h = roi[2] * spatial_scale - offset;
    const T roi_end_w = roi[3] * spatial_scale - offset;
    const T roi_end_h = roi[4] * spatial_scale - offset;
    T roi_width = roi_end_w - roi_start_w;
    T roi_height = roi_end_h - roi_start_h;
    if (!params.aligned) {
      roi_width = std::max(roi_width, T(1));
      roi_height = std::max(roi_height, T(1));
    }
    const T bin_height = roi_height / static_cast<T>(output_height);
    const T bin_width = roi_width / static_cast<T>(output_width);
    // An aligned ROI of zero (or negative) size gets an empty grid and outputs zeros.
    const std::int64_t grid_h =
        params.sampling_ratio > 0
            ? params.sampling_ratio
            : static_cast<std::int64_t>(std::ceil(roi_height / static_cast<T>(output_height)));
    const std::int64_t grid_w =
        params.sampling_ratio > 0
            ? params.sampling_ratio
            : static_cast<std::int64_t>(std::ceil(roi_width / static_cast<T>(output_width)));
    const std::int64_t samples_per_bin =
        std::max<std::int64_t>(grid_h, 0) * std::max<std::int64_t>(grid_w, 0);
    const T count = static_cast<T>(std::max<std::int64_t>(grid_h * grid_w, 1));

    // Sampling points of every bin, shared by all channels.
    std::vector<detail::BilinearSample<T>> samples;
    samples.reserve(static_cast<std::size_t>(samples_per_bin * output_plane));
    for (std::int64_t ph = 0; ph < output_height; ++ph) {
      for (std::int64_t pw = 0; pw < output_width; ++pw) {
        for (std::int64_t iy = 0; iy < grid_h; ++iy) {
          const T y =
              roi_start_h + static_cast<T>(ph) * bin_height +
              static_cast<T>(static_cast<float>(iy) + 0.5f) * bin_height / static_cast<T>(grid_h);
          for (std::int64_t ix = 0; ix < grid_w; ++ix) {
            const T x =
                roi_start_w + static_cast<T>(pw) * bin_width +
                static_cast<T>(static_cast<float>(ix) + 0.5f) * bin_width / static_cast<T>(grid_w);
            samples.push_back(detail::bilinear_sample(y, x, sizes.height, sizes.width));
          }
        }
      }
    }

    if (channels_last) {
      // Every channel of a bin at once: per channel the same terms, summed in the same order.
      const std::int64_t channels = sizes.channels;
      const T* image = transposed.data() + batch_index * plane * channels;
      T* sums = sums_scratch.get(slot);
      const detail::BilinearSample<T>* sample = samples.data();
      for (std::int64_t bin = 0; bin < output_plane; ++bin) {
        std::fill_n(sums, channels, T(0));
        for (std::int64_t s = 0; s < samples_per_bin; ++s, ++sample) {
          const T w0 = sample->weights[0], w1 = sample->weights[1], w2 = sample->weights[2],
                  w3 = sample->weights[3];
          const T* m0 = image + sample->offsets[0] * channels;
          const T* m1 = image + sample->offsets[1] * channels;
          const T* m2 = image + sample->offsets[2] * channels;
          const T* m3 = image + sample->offsets[3] * channels;
          for (std::int64_t c = 0; c < channels; ++c) {
            sums[c] += w0 * m0[c] + w1 * m1[c] + w2 * m2[c] + w3 * m3[c];
          }
        }
        T* out = result + n * channels * output_plane + bin;
        for (std::int64_t c = 0; c < channels; ++c) out[c * output_plane] = sums[c] / count;
      }
      return;
    }
    for (std::int64_t c = 0; c < sizes.channels; ++c) {
      const T* map = input + (batch_index * sizes.channels + c) * plane;
      T* out = result + (n * sizes.channels + c) * output_plane;
      const detail::BilinearSample<T>* sample = samples.data();
      for (std::int64_t bin = 0; bin < output_plane; ++bin) {
        T sum = T(0);
        for (std::int64_t s = 0; s < samples_per_bin; ++s, ++sample) {
          sum += sample->weights[0] * map[sample->offsets[0]] +
                 sample->weights[1] * map[sample->offsets[1]] +
                 sample->weights[2] * map[sample->offsets[2]] +
                 sample->weights[3] * map[sample->offsets[3]];
        }
        out[bin] = sum / count;
      }
    }
  });
  return output;
}

}  // namespace fpn::ops
