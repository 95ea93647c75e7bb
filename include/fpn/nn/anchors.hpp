// Anchors exactly as torchvision's AnchorGenerator (models/detection/anchor_utils.py): per level
// one size and the aspect ratios (h / w) 0.5, 1, 2. A cell's anchors are
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
// set of deltas per aspect ratio), so it is given once, at load, and cannot change afterwards.
struct AnchorParams {
  // One anchor size per pyramid level P2..P6.
  std::vector<float> sizes{32, 64, 128, 256, 512};
  std::vector<float> aspect_ratios{0.5f, 1.0f, 2.0f};
};

// Throws ArgumentError naming the first bad field: sizes and aspect ratios must be finite and > 0,
// and there must be num_levels sizes and at least one ratio.
inline void check_params(const AnchorParams& params, std::size_t num_levels,
                         std::string_view name = "AnchorParams") {
  const std::string prefix(name);
  if (params.sizes.size() != num_levels) {
    fpn::detail::throw_invalid_field(prefix + ".sizes",
                                     "one size per pyramid level (" + std::to_string(num_levels) + ")",
                                     std::to_string(params.sizes.size()) + " sizes");
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
  check_positive(prefix + ".sizes", params.sizes);
  check_positive(prefix + ".aspect_ratios", params.aspect_ratios);
}

// returns [A, 4]: the anchors of one cell centred on the origin, ratio-major.
inline Tensor<float> cell_anchors(float size, const std::vector<float>& aspect_ratios) {
  const auto count = static_cast<std::int64_t>(aspect_ratios.size());
  Tensor<float> anchors(Shape{count, 4});
  for (std::int64_t i = 0; i < count; ++i) {
    const float h_ratio = std::sqrt(aspect_ratios[static_cast<std::size_t>(i)]);
    const float w_ratio = 1.0f / h_ratio;
    const float w = w_ratio * size;
    const float h = h_ratio * size;
    // torch.round rounds half to even, as nearbyint does in the default rounding mode.
    anchors.at(i, 0) = std::nearbyint(-w / 2.0f);
    anchors.at(i, 1) = std::nearbyint(-h / 2.0f);
    anchors.at(i, 2) = std::nearbyint(w / 2.0f);
    anchors.at(i, 3) = std::nearbyint(h / 2.0f);
  }
  return anchors;
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
