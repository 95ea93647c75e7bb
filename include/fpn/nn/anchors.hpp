// Anchors exactly as torchvision's AnchorGenerator (models/detection/anchor_utils.py): per level
// its sizes and the aspect ratios (h / w), 0.5, 1, 2 by default. A cell's anchors are
// round([-w, -h, w, h] / 2) with h = sqrt(r) * size, w = size / sqrt(r) in float32, and they are
// shifted by (x * stride, y * stride) with no half-pixel offset. The order is (y, x, anchor),
// which is the order of the RPN head's outputs after torchvision's permute_and_flatten.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::nn {

// The anchor geometry is part of the trained model (the RPN head predicts one objectness and one
// set of deltas per anchor of a cell), so it is given once, at load, and cannot change afterwards.
struct AnchorParams {
  // The anchor sizes of each pyramid level, finest first: torchvision's sizes tuple of tuples.
  // The R-CNN FPNs use one per level, ((32,), (64,), (128,), (256,), (512,)); MobileNetV3-FPN
  // five on each of its three, ((32, 64, 128, 256, 512),) * 3.
  std::vector<std::vector<float>> sizes{{32}, {64}, {128}, {256}, {512}};
  // Height / width ratios, the same on every level (as in all of torchvision's builders).
  std::vector<float> aspect_ratios{0.5f, 1.0f, 2.0f};

  // Anchors per cell: every size with every ratio.
  std::int64_t per_cell() const {
    return sizes.empty() ? 0 : static_cast<std::int64_t>(sizes.front().size() * aspect_ratios.size());
  }

  // One size per level, 32 doubling per level; ratios 0.5, 1, 2.
  static AnchorParams one_size_per_level(std::size_t levels) {
    AnchorParams params;
    params.sizes.clear();
    for (std::size_t level = 0; level < levels; ++level) {
      params.sizes.push_back({static_cast<float>(32 << level)});
    }
    return params;
  }
};

// Throws ArgumentError naming the first bad field: num_levels lists of sizes, each as long as the
// first (the RPN head is shared across levels, so every level has as many anchors per cell),
// at least one ratio, and every size and ratio finite and > 0.
inline void check_params(const AnchorParams& params, std::size_t num_levels,
                         std::string_view name = "AnchorParams") {
  const std::string prefix(name);
  if (params.sizes.size() != num_levels) {
    fpn::detail::throw_invalid_field(prefix + ".sizes",
                                     "one list of sizes per pyramid level (" + std::to_string(num_levels) + ")",
                                     std::to_string(params.sizes.size()) + " lists");
  }
  if (params.aspect_ratios.empty()) {
    fpn::detail::throw_invalid_field(prefix + ".aspect_ratios", "at least one ratio", "none");
  }
  auto check_positive = [&](const std::string& field, const std::vector<float>& values) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!(values[i] > 0.0f) || !std::isfinite(values[i])) {
        fpn::detail::throw_invalid_field(field + "[" + std::to_string(i) + "]",
                                         "a finite number > 0", fpn::detail::format_float(values[i]));
      }
    }
  };
  for (std::size_t level = 0; level < params.sizes.size(); ++level) {
    const std::string field = prefix + ".sizes[" + std::to_string(level) + "]";
    if (params.sizes[level].empty() || params.sizes[level].size() != params.sizes.front().size()) {
      fpn::detail::throw_invalid_field(
          field, "as many sizes as level 0 (" + std::to_string(params.sizes.front().size()) +
                     ", at least 1: the RPN head is shared across levels)",
          std::to_string(params.sizes[level].size()) + " sizes");
    }
    check_positive(field, params.sizes[level]);
  }
  check_positive(prefix + ".aspect_ratios", params.aspect_ratios);
}

// returns [A, 4]: the anchors of one cell centred on the origin, A = ratios x sizes, ratio-major
// as torchvision's generate_anchors flattens (w_ratios[:, None] * scales[None, :]).view(-1).
inline Tensor<float> cell_anchors(const std::vector<float>& sizes,
                                  const std::vector<float>& aspect_ratios) {
  const auto count = static_cast<std::int64_t>(aspect_ratios.size() * sizes.size());
  Tensor<float> anchors(Shape{count, 4});
  std::int64_t i = 0;
  for (const float ratio : aspect_ratios) {
    const float h_ratio = std::sqrt(ratio);
    const float w_ratio = 1.0f / h_ratio;
    for (const float size : sizes) {
      const float w = w_ratio * size;
      const float h = h_ratio * size;
      // torch.round rounds half to even, as nearbyint does in the default rounding mode.
      anchors.at(i, 0) = std::nearbyint(-w / 2.0f);
      anchors.at(i, 1) = std::nearbyint(-h / 2.0f);
      anchors.at(i, 2) = std::nearbyint(w / 2.0f);
      anchors.at(i, 3) = std::nearbyint(h / 2.0f);
      ++i;
    }
  }
  return anchors;
}

// One size.
inline Tensor<float> cell_anchors(float size, const std::vector<float>& aspect_ratios) {
  return cell_anchors(std::vector<float>{size}, aspect_ratios);
}

// cell: [A, 4]; returns [grid_height * grid_width * A, 4] in (y, x, anchor) order.
inline Tensor<float> grid_anchors(const Tensor<float>& cell, std::int64_t grid_height,
                                  std::int64_t grid_width, std::int64_t stride_height,
                                  std::int64_t stride_width) {
  const std::int64_t count = cell.dim(0);
  Tensor<float> anchors = Tensor<float>::uninitialized(Shape{grid_height * grid_width * count, 4});
  float* out = anchors.data();
  for (std::int64_t y = 0; y < grid_height; ++y) {
    // torch computes the shifts as int32 and adds them to the float anchors.
    const auto shift_y = static_cast<float>(static_cast<std::int32_t>(y * stride_height));
    for (std::int64_t x = 0; x < grid_width; ++x) {
      const auto shift_x = static_cast<float>(static_cast<std::int32_t>(x * stride_width));
      for (std::int64_t a = 0; a < count; ++a) {
        *out++ = shift_x + cell.at(a, 0);
        *out++ = shift_y + cell.at(a, 1);
        *out++ = shift_x + cell.at(a, 2);
        *out++ = shift_y + cell.at(a, 3);
      }
    }
  }
  return anchors;
}

}  // namespace fpn::nn
