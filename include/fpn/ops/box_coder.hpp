// BoxCoder: turns regression deltas (dx, dy, dw, dh) relative to reference boxes into boxes, as
// in Faster R-CNN (Ren et al. 2015), with the exact float32 arithmetic of torchvision 0.14's
// models/detection/_utils.py BoxCoder.decode_single. Encoding is for training and not provided.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/boxes.hpp"

namespace fpn::ops {

struct BoxCoder {
  // (wx, wy, ww, wh): the deltas are divided by these first; (1, 1, 1, 1) in torchvision's RPN,
  // (10, 10, 5, 5) in its box head.
  std::array<double, 4> weights{1.0, 1.0, 1.0, 1.0};
  // dw and dh are clamped to this before exp(), so that a wild prediction cannot overflow: a box
  // grows at most 1000 / 16 times its reference (torchvision's default).
  double bbox_xform_clip = std::log(1000.0 / 16.0);

  // rel_codes: [N, 4 * K] deltas (dx, dy, dw, dh) per class k; boxes: [N, 4] (x1, y1, x2, y2)
  // returns:   [N, 4 * K] decoded (x1, y1, x2, y2) per class k
  template <typename T = float>
  Tensor<T> decode(std::type_identity_t<TensorView<const T>> rel_codes,
                   std::type_identity_t<TensorView<const T>> boxes) const {
    if (rel_codes.rank() != 2 || rel_codes.dim(1) % 4 != 0) {
      fpn::detail::throw_shape_error("BoxCoder::decode", "rel_codes", "[N, 4 * K]",
                                     rel_codes.shape().dims());
    }
    detail::check_boxes("BoxCoder::decode", "boxes", boxes);
    if (rel_codes.dim(0) != boxes.dim(0)) {
      fpn::detail::throw_shape_mismatch("BoxCoder::decode",
                                        "rel_codes and boxes must have the same number of rows",
                                        rel_codes.shape().dims(), boxes.shape().dims());
    }
    // torch divides and clamps a float32 tensor by Python floats in float32.
    const T wx = static_cast<T>(weights[0]);
    const T wy = static_cast<T>(weights[1]);
    const T ww = static_cast<T>(weights[2]);
    const T wh = static_cast<T>(weights[3]);
    const T clip = static_cast<T>(bbox_xform_clip);
    const T lowest = -std::numeric_limits<T>::infinity();
    const T half = T(0.5);

    const std::int64_t rows = rel_codes.dim(0);
    const std::int64_t columns = rel_codes.dim(1);
    Tensor<T> decoded = Tensor<T>::uninitialized(rel_codes.shape());
    for (std::int64_t i = 0; i < rows; ++i) {
      const T* box = boxes.data() + 4 * i;
      const T width = box[2] - box[0];
      const T height = box[3] - box[1];
      const T center_x = box[0] + half * width;
      const T center_y = box[1] + half * height;
      for (std::int64_t k = 0; k < columns; k += 4) {
        const T* code = rel_codes.data() + i * columns + k;
        const T dx = code[0] / wx;
        const T dy = code[1] / wy;
        const T dw = detail::clamp_like_torch(code[2] / ww, lowest, clip);
        const T dh = detail::clamp_like_torch(code[3] / wh, lowest, clip);
        const T predicted_center_x = dx * width + center_x;
        const T predicted_center_y = dy * height + center_y;
        // Half extents first, then center -/+ half, as torchvision's c_to_c_w / c_to_c_h.
        const T half_width = half * (std::exp(dw) * width);
        const T half_height = half * (std::exp(dh) * height);
        T* out = decoded.data() + i * columns + k;
        out[0] = predicted_center_x - half_width;
        out[1] = predicted_center_y - half_height;
        out[2] = predicted_center_x + half_width;
        out[3] = predicted_center_y + half_height;
      }
    }
    return decoded;
  }
};

}  // namespace fpn::ops
