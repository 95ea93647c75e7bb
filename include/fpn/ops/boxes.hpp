// Axis-aligned boxes in (x1, y1, x2, y2) corner format: area, pairwise IoU, clipping to the image
// and dropping small boxes, computed in T exactly as torchvision 0.14's ops/boxes.py does in
// float32 (same operations in the same order, so float results match bit for bit).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::ops {
namespace detail {

// Throws "<where>: <what> must be [N, 4], got ..." unless boxes is [N, 4].
template <typename T>
void check_boxes(std::string_view where, std::string_view what, TensorView<const T> boxes) {
  if (boxes.rank() != 2 || boxes.dim(1) != 4) {
    fpn::detail::throw_shape_error(where, what, "[N, 4]", boxes.shape().dims());
  }
}

// box: 4 values (x1, y1, x2, y2). No clamping: a malformed box has a negative area, as in torch.
template <typename T>
T box_area(const T* box) {
  return (box[2] - box[0]) * (box[3] - box[1]);
}

// The IoU of two boxes as both torchvision's box_iou and its CPU nms kernel compute it: the
// intersection's sides clamped at 0, then inter / (area_a + area_b - inter), all in T.
template <typename T>
T box_pair_iou(const T* a, const T* b, T area_a, T area_b) {
  const T width = std::max(T(0), std::min(a[2], b[2]) - std::max(a[0], b[0]));
  const T height = std::max(T(0), std::min(a[3], b[3]) - std::max(a[1], b[1]));
  const T inter = width * height;
  return inter / (area_a + area_b - inter);
}

// torch.clamp(value, low, high): NaN stays NaN.
template <typename T>
T clamp_like_torch(T value, T low, T high) {
  if (std::isnan(value)) return value;
  return std::min(std::max(value, low), high);
}

}  // namespace detail

// boxes:   [N, 4] (x1, y1, x2, y2)
// returns: [N] (x2 - x1) * (y2 - y1)
template <typename T = float>
Tensor<T> box_area(std::type_identity_t<TensorView<const T>> boxes) {
  detail::check_boxes("box_area", "boxes", boxes);
  Tensor<T> areas = Tensor<T>::uninitialized(Shape{boxes.dim(0)});
  for (std::int64_t i = 0; i < boxes.dim(0); ++i) {
    areas.data()[i] = detail::box_area(boxes.data() + 4 * i);
  }
  return areas;
}

// boxes1:  [N, 4]; boxes2: [M, 4], both (x1, y1, x2, y2)
// returns: [N, M] intersection over union (NaN for two empty boxes, 0 / 0, as in torch)
template <typename T = float>
Tensor<T> box_iou(std::type_identity_t<TensorView<const T>> boxes1,
                  std::type_identity_t<TensorView<const T>> boxes2) {
  detail::check_boxes("box_iou", "boxes1", boxes1);
  detail::check_boxes("box_iou", "boxes2", boxes2);
  const std::int64_t rows = boxes1.dim(0);
  const std::int64_t columns = boxes2.dim(0);
  std::vector<T> areas2(static_cast<std::size_t>(columns));
  for (std::int64_t j = 0; j < columns; ++j) areas2[j] = detail::box_area(boxes2.data() + 4 * j);
  Tensor<T> iou = Tensor<T>::uninitialized(Shape{rows, columns});
  for (std::int64_t i = 0; i < rows; ++i) {
    const T* box1 = boxes1.data() + 4 * i;
    const T area1 = detail::box_area(box1);
    for (std::int64_t j = 0; j < columns; ++j) {
      iou.data()[i * columns + j] =
          detail::box_pair_iou(box1, boxes2.data() + 4 * j, area1, areas2[j]);
    }
  }
  return iou;
}

// boxes:   [..., 4] (x1, y1, x2, y2), e.g. [N, 4] or [N, num_classes, 4]
// returns: the same shape, x clamped to [0, width] and y to [0, height]
template <typename T = float>
Tensor<T> clip_boxes_to_image(std::type_identity_t<TensorView<const T>> boxes, std::int64_t height,
                              std::int64_t width) {
  if (boxes.rank() == 0 || boxes.dim(boxes.rank() - 1) != 4) {
    fpn::detail::throw_shape_error("clip_boxes_to_image", "boxes", "[..., 4]",
                                   boxes.shape().dims());
  }
  if (height < 0 || width < 0) {
    fpn::detail::throw_argument_error(
        "clip_boxes_to_image", "image size must be >= 0, got height " + std::to_string(height) +
                                   " and width " + std::to_string(width));
  }
  // torch converts the integer bounds to the boxes' dtype before clamping.
  const T limits[2] = {static_cast<T>(width), static_cast<T>(height)};
  Tensor<T> clipped = Tensor<T>::uninitialized(boxes.shape());
  for (std::int64_t i = 0; i < boxes.numel(); ++i) {
    clipped.data()[i] = detail::clamp_like_torch(boxes.data()[i], T(0), limits[i % 2]);
  }
  return clipped;
}

// boxes:   [N, 4] (x1, y1, x2, y2)
// returns: the ascending indices of the boxes whose width and height are both >= min_size
template <typename T = float>
std::vector<std::int64_t> remove_small_boxes(std::type_identity_t<TensorView<const T>> boxes,
                                             double min_size) {
  detail::check_boxes("remove_small_boxes", "boxes", boxes);
  // torch compares a float32 tensor with a Python float in float32, so min_size is rounded to T
  // first: a width of exactly float(0.7) passes min_size = 0.7 although it is below 0.7.
  const T threshold = static_cast<T>(min_size);
  std::vector<std::int64_t> keep;
  for (std::int64_t i = 0; i < boxes.dim(0); ++i) {
    const T* box = boxes.data() + 4 * i;
    if (box[2] - box[0] >= threshold && box[3] - box[1] >= threshold) keep.push_back(i);
  }
  return keep;
}

}  // namespace fpn::ops
