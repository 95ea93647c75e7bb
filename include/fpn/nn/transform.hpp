// Inference preprocessing equal to torchvision 0.14's GeneralizedRCNNTransform for one image
// (models/detection/transform.py): 8-bit RGB -> float / 255 -> (x - mean) / std -> bilinear resize
// so that the short side is min_size unless the long side would pass max_size -> zero padding at
// the bottom and right to a multiple of size_divisible.
//
// Float arithmetic follows torch step by step, so results agree with torch to float rounding:
// - 8-bit input becomes x / 255 in float32, as torchvision's to_tensor and convert_image_dtype do,
//   then (x - mean) / std in float32 (a subtraction and a true division, not a multiply).
// - The scale is min(min_size / short, max_size / long) with short and long as float32 tensors;
//   Python's `float / tensor` is Tensor.__rtruediv__ = reciprocal() * other, so each quotient is
//   rounded twice: float(float(1 / side) * size).
// - interpolate(..., recompute_scale_factor=True) sizes the output as floor(side * scale) in
//   double (the float32 scale widened), then drops the scale, so the kernel resamples with
//   float(in) / out (ATen UpSample.h compute_scales_value). Source index and lambda are computed in
//   double (acc_type<float, CPU>) and stored as float.
// - Torch picks the bilinear kernel by memory layout. An image made as
//   torch.from_numpy(hwc).permute(2, 0, 1).float() / 255 keeps the HWC layout, i.e. is
//   channels-last, as is any 1x1 image; its kernel sums the four taps in double with weights
//   float(lh * lw), and this file reproduces it bit for bit. A contiguous CHW image (to_tensor,
//   read_image) goes through the generic kernel instead, which computes in float with FMAs:
//   fma(top, lh0, bottom * lh1) over fma(x0, lw0, x1 * lw1); its results differ from ours by
//   float rounding only (measured: at most 2e-7 of the image's largest magnitude).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/thread_pool.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/shape.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::nn {

// An interleaved 8-bit RGB image (HWC, rows of 3 * width bytes, no row padding), as decoders
// return it. Borrowed: the pixels must outlive the call that reads them.
struct ImageView {
  const std::uint8_t* pixels = nullptr;
  std::int64_t height = 0;
  std::int64_t width = 0;
};

// GeneralizedRCNNTransform's arguments; the defaults are torchvision's detection models'.
struct TransformParams {
  std::int64_t min_size = 800;
  std::int64_t max_size = 1333;
  std::int64_t size_divisible = 32;
  // ImageNet statistics of RGB in [0, 1], as float32 (torch.as_tensor(..., dtype=float32)).
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> stddev{0.229f, 0.224f, 0.225f};

  // The largest min_size and max_size accepted: an 8192 x 8192 input already makes a 4 GB P2 at
  // 256 channels, so a larger value is a mistake, not a wish.
  static constexpr std::int64_t size_limit = 8192;
  static constexpr std::int64_t size_divisible_limit = 1024;
};

// Throws ArgumentError naming the first field out of range ("TransformParams.min_size must be
// an integer in [1, 8192], got 0"); name: how the caller knows these params.
inline void check_params(const TransformParams& params, std::string_view name = "TransformParams") {
  const std::string prefix(name);
  fpn::detail::check_in_range(prefix + ".min_size", params.min_size, 1, TransformParams::size_limit);
  fpn::detail::check_in_range(prefix + ".max_size", params.max_size, 1, TransformParams::size_limit);
  fpn::detail::check_in_range(prefix + ".size_divisible", params.size_divisible, 1,
                              TransformParams::size_divisible_limit);
  for (std::size_t channel = 0; channel < 3; ++channel) {
    // Appended, not "[" + ...: GCC 12 warns a false -Wrestrict on literal + std::string (bug 105651).
    std::string index = "[";
    index += std::to_string(channel);
    index += "]";
    if (!std::isfinite(params.mean[channel])) {
      fpn::detail::throw_invalid_field(prefix + ".mean" + index, "a finite number",
                                       fpn::detail::format_float(params.mean[channel]));
    }
    if (!(params.stddev[channel] > 0.0f) || !std::isfinite(params.stddev[channel])) {
      fpn::detail::throw_invalid_field(prefix + ".stddev" + index, "a finite number > 0",
                                       fpn::detail::format_float(params.stddev[channel]));
    }
  }
}

// The height and width an image is resized to (ImageList.image_sizes) before padding.
struct ImageSize {
  std::int64_t height = 0;
  std::int64_t width = 0;
  friend bool operator==(const ImageSize&, const ImageSize&) = default;
};

struct PreprocessedImage {
  Tensor<float> tensor;  // [1, 3, padded_height, padded_width], zeros beyond the resized image
  std::int64_t resized_height = 0;
  std::int64_t resized_width = 0;
  std::int64_t original_height = 0;
  std::int64_t original_width = 0;

  // Per-axis factors that map boxes on the resized image back to the original, computed as
  // torchvision's resize_boxes does: float32(original) / float32(resized).
  float ratio_height() const {
    return static_cast<float>(original_height) / static_cast<float>(resized_height);
  }
  float ratio_width() const {
    return static_cast<float>(original_width) / static_cast<float>(resized_width);
  }
};

// torchvision's scale for an image: min(min_size / short side, max_size / long side) in float32,
// rounded as torch rounds it (see the top of this file).
inline float resize_scale(std::int64_t height, std::int64_t width, const TransformParams& params) {
  const float short_side = static_cast<float>(std::min(height, width));
  const float long_side = static_cast<float>(std::max(height, width));
  const float by_short = (1.0f / short_side) * static_cast<float>(params.min_size);
  const float by_long = (1.0f / long_side) * static_cast<float>(params.max_size);
  return std::min(by_short, by_long);
}

// The size an image of height x width is resized to: floor(side * scale) in double, as
// torch.nn.functional.interpolate computes it with recompute_scale_factor=True. Either side may be
// 0 for extreme aspect ratios; preprocess refuses those.
inline ImageSize resized_size(std::int64_t height, std::int64_t width,
                              const TransformParams& params) {
  const double scale = resize_scale(height, width, params);
  return {static_cast<std::int64_t>(std::floor(static_cast<double>(height) * scale)),
          static_cast<std::int64_t>(std::floor(static_cast<double>(width) * scale))};
}

namespace detail {

// One output coordinate's two source taps along an axis, indices already clamped to the input.
struct LinearTap {
  std::int64_t index0 = 0;
  std::int64_t index1 = 0;
  float weight0 = 1.0f;
  float weight1 = 0.0f;
};

// ATen's compute_source_index_and_lambda (UpSample.h) for align_corners=False with no scale passed
// on: ratio float(in) / out in float, source (i + 0.5) * ratio - 0.5 in double, clamped at 0
// (negative sources only happen at the border, where both taps read pixel 0).
inline std::vector<LinearTap> linear_taps(std::int64_t input_size, std::int64_t output_size) {
  std::vector<LinearTap> taps(static_cast<std::size_t>(output_size));
  if (input_size == output_size) {
    for (std::int64_t i = 0; i < output_size; ++i) {
      taps[static_cast<std::size_t>(i)] = {i, i, 1.0f, 0.0f};
    }
    return taps;
  }
  const float ratio = static_cast<float>(input_size) / static_cast<float>(output_size);
  for (std::int64_t i = 0; i < output_size; ++i) {
    const double source =
        std::max(static_cast<double>(ratio) * (static_cast<double>(i) + 0.5) - 0.5, 0.0);
    LinearTap& tap = taps[static_cast<std::size_t>(i)];
    tap.index0 = static_cast<std::int64_t>(source);
    tap.index1 = tap.index0 + (tap.index0 < input_size - 1 ? 1 : 0);
    tap.weight1 = static_cast<float>(source - static_cast<double>(tap.index0));
    tap.weight0 = 1.0f - tap.weight1;
  }
  return taps;
}

inline std::int64_t round_up(std::int64_t value, std::int64_t divisor) {
  return (value + divisor - 1) / divisor * divisor;
}

// Taps along one axis as separate arrays, so that the inner loop over output columns vectorises.
struct AxisTaps {
  std::vector<std::int64_t> index0, index1;
  std::vector<float> weight0, weight1;

  explicit AxisTaps(const std::vector<LinearTap>& taps) {
    for (const LinearTap& tap : taps) {
      index0.push_back(tap.index0);
      index1.push_back(tap.index1);
      weight0.push_back(tap.weight0);
      weight1.push_back(tap.weight1);
    }
  }
};

// Resizes a normalised [3, height, width] image, given row by row, and writes it zero-padded into a
// new [1, 3, padded_height, padded_width] tensor. fill_row(channel, row, out) writes the `width`
// normalised values of one source row.
//
// Arithmetic of torch 1.13's channels-last bilinear kernel (cpu_upsample_linear_channels_last):
// the four weights are float products lh * lw, and the sum x00 * w00 + x01 * w01 + x10 * w10 +
// x11 * w11 is taken in double (the float products are exact there, so FMA contraction cannot
// change it) and rounded to float once.
template <typename FillRow>
Tensor<float> resize_and_pad(const FillRow& fill_row, ImageSize input, ImageSize output,
                             ImageSize padded) {
  const std::vector<LinearTap> row_taps = linear_taps(input.height, output.height);
  const AxisTaps columns(linear_taps(input.width, output.width));
  auto result = Tensor<float>::uninitialized(Shape{1, 3, padded.height, padded.width});
  const std::int64_t in_width = input.width;
  const std::int64_t out_width = output.width;
  const std::int64_t plane = padded.height * padded.width;
  float* const base = result.data();

  // Bands of output rows on the pool; the band size does not depend on the thread count.
  const std::int64_t band = output.height * output.width > (1 << 15) ? 32 : padded.height;
  fpn::detail::parallel_for_chunks(padded.height, band, [&](std::int64_t first_row,
                                                            std::int64_t end_row) {
    // Normalised source rows (3 channels each) in two slots: consecutive output rows mostly share
    // their two source rows, and each task takes a contiguous band of output rows.
    std::vector<float> rows(static_cast<std::size_t>(2 * 3 * in_width));
    std::array<std::int64_t, 2> slot_row{-1, -1};
    // The output row's four weights per column, float products widened to double.
    std::vector<double> weights(static_cast<std::size_t>(4 * out_width));
    // The slot holding source row `row`, filling the slot that does not hold `keep` if needed.
    auto slot_of = [&](std::int64_t row, std::int64_t keep) -> std::int64_t {
      if (slot_row[0] == row) return 0;
      if (slot_row[1] == row) return 1;
      const std::int64_t slot = slot_row[0] == keep ? 1 : 0;
      for (std::int64_t channel = 0; channel < 3; ++channel) {
        fill_row(channel, row, rows.data() + (slot * 3 + channel) * in_width);
      }
      slot_row[static_cast<std::size_t>(slot)] = row;
      return slot;
    };
    const std::int64_t* index0 = columns.index0.data();
    const std::int64_t* index1 = columns.index1.data();
    const float* weight0 = columns.weight0.data();
    const float* weight1 = columns.weight1.data();

    for (std::int64_t y = first_row; y < end_row; ++y) {
      if (y >= output.height) {
        for (std::int64_t channel = 0; channel < 3; ++channel) {
          std::fill_n(base + channel * plane + y * padded.width, padded.width, 0.0f);
        }
        continue;
      }
      const LinearTap& tap = row_taps[static_cast<std::size_t>(y)];
      const std::int64_t top_slot = slot_of(tap.index0, tap.index1);
      const std::int64_t bottom_slot = slot_of(tap.index1, tap.index0);
      for (std::int64_t x = 0; x < out_width; ++x) {
        weights[4 * x + 0] = tap.weight0 * weight0[x];
        weights[4 * x + 1] = tap.weight0 * weight1[x];
        weights[4 * x + 2] = tap.weight1 * weight0[x];
        weights[4 * x + 3] = tap.weight1 * weight1[x];
      }
      for (std::int64_t channel = 0; channel < 3; ++channel) {
        const float* top = rows.data() + (top_slot * 3 + channel) * in_width;
        const float* bottom = rows.data() + (bottom_slot * 3 + channel) * in_width;
        float* out = base + channel * plane + y * padded.width;
        for (std::int64_t x = 0; x < out_width; ++x) {
          const double* w = weights.data() + 4 * x;
          out[x] = static_cast<float>(static_cast<double>(top[index0[x]]) * w[0] +
                                      static_cast<double>(top[index1[x]]) * w[1] +
                                      static_cast<double>(bottom[index0[x]]) * w[2] +
                                      static_cast<double>(bottom[index1[x]]) * w[3]);
        }
        std::fill(out + out_width, out + padded.width, 0.0f);
      }
    }
  });
  return result;
}

// The shared tail of both preprocess overloads, once the input is known to be valid.
template <typename FillRow>
PreprocessedImage preprocess_rows(const FillRow& fill_row, ImageSize original,
                                  const TransformParams& params) {
  const ImageSize resized = resized_size(original.height, original.width, params);
  if (resized.height < 1 || resized.width < 1) {
    fpn::detail::throw_argument_error(
        "preprocess", "a " + std::to_string(original.height) + "x" +
                          std::to_string(original.width) + " image resizes to " +
                          std::to_string(resized.height) + "x" + std::to_string(resized.width) +
                          " with min_size " + std::to_string(params.min_size) + " and max_size " +
                          std::to_string(params.max_size) + "; its aspect ratio is too extreme");
  }
  const ImageSize padded{round_up(resized.height, params.size_divisible),
                         round_up(resized.width, params.size_divisible)};
  return {resize_and_pad(fill_row, original, resized, padded), resized.height, resized.width,
          original.height, original.width};
}

}  // namespace detail

// image: interleaved 8-bit RGB. Converted to float as x / 255 (torchvision's to_tensor), then
// normalised, resized and padded as GeneralizedRCNNTransform does in eval mode.
inline PreprocessedImage preprocess(ImageView image, const TransformParams& params = {}) {
  if (image.height < 1 || image.width < 1) {
    const std::int64_t dims[] = {image.height, image.width, 3};
    fpn::detail::throw_shape_error("preprocess", "image", "[H, W, 3] with H, W >= 1", dims);
  }
  if (image.pixels == nullptr) {
    fpn::detail::throw_argument_error("preprocess", "image pixels are null for a " +
                                                        std::to_string(image.height) + "x" +
                                                        std::to_string(image.width) + " image");
  }
  check_params(params);
  (void)Shape{image.height, image.width, 3};  // throws ShapeError if the pixel count overflows

  // Every 8-bit value's normalised float per channel, computed with torch's roundings:
  // ((v / 255) - mean) / std, each step in float32.
  std::array<std::array<float, 256>, 3> table;
  for (std::size_t channel = 0; channel < 3; ++channel) {
    for (int value = 0; value < 256; ++value) {
      table[channel][static_cast<std::size_t>(value)] =
          (static_cast<float>(value) / 255.0f - params.mean[channel]) / params.stddev[channel];
    }
  }
  const std::uint8_t* pixels = image.pixels;
  const std::int64_t width = image.width;
  auto fill_row = [&](std::int64_t channel, std::int64_t row, float* out) {
    const std::uint8_t* in = pixels + row * width * 3 + channel;
    const float* lookup = table[static_cast<std::size_t>(channel)].data();
    for (std::int64_t x = 0; x < width; ++x) out[x] = lookup[in[3 * x]];
  };
  return detail::preprocess_rows(fill_row, {image.height, image.width}, params);
}

// image: [3, H, W] float RGB in [0, 1] (torchvision's input convention); normalised, resized and
// padded as GeneralizedRCNNTransform does in eval mode.
inline PreprocessedImage preprocess(TensorView<const float> image,
                                    const TransformParams& params = {}) {
  if (image.rank() != 3 || image.dim(0) != 3 || image.dim(1) < 1 || image.dim(2) < 1) {
    fpn::detail::throw_shape_error("preprocess", "image", "[3, H, W] with H, W >= 1",
                                   image.shape().dims());
  }
  if (image.data() == nullptr) {
    fpn::detail::throw_argument_error("preprocess",
                                      "image data is null for shape " + image.shape().str());
  }
  check_params(params);
  const std::int64_t height = image.dim(1);
  const std::int64_t width = image.dim(2);
  const float* data = image.data();
  auto fill_row = [&](std::int64_t channel, std::int64_t row, float* out) {
    const float* in = data + (channel * height + row) * width;
    const float mean = params.mean[static_cast<std::size_t>(channel)];
    const float stddev = params.stddev[static_cast<std::size_t>(channel)];
    for (std::int64_t x = 0; x < width; ++x) out[x] = (in[x] - mean) / stddev;
  };
  return detail::preprocess_rows(fill_row, {height, width}, params);
}

}  // namespace fpn::nn
