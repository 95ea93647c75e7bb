// Non-maximum suppression, greedy by decreasing score, with the keep lists torchvision 0.14's CPU
// kernel (csrc/ops/cpu/nms_kernel.cpp) and ops/boxes.py batched_nms produce.
//
// Ties: boxes with equal scores are visited lower index first. torch 1.13 sorts the scores with
// an unstable std::sort, which happens to give this order for up to 16 boxes (insertion sort) but
// an arbitrary one above that; fpn sorts stably so the keep list never depends on the sort.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/boxes.hpp"

namespace fpn::ops {
namespace detail {

// torchvision's batched_nms switches from the coordinate trick to one nms per class above this
// many box *elements* (4 per box, so above 1000 boxes) on the CPU; the threshold comes from its
// benchmarks in pytorch/vision issue 1311.
inline constexpr std::int64_t batched_nms_vanilla_above_elements = 4000;

// Orders indices by decreasing score, stably (equal scores keep their incoming order). NaN scores
// come first, as in torch's descending sort.
template <typename T>
void sort_by_decreasing_score(std::vector<std::int64_t>& indices, const T* scores) {
  std::stable_sort(indices.begin(), indices.end(), [scores](std::int64_t a, std::int64_t b) {
    const T score_a = scores[a];
    const T score_b = scores[b];
    return score_a > score_b || (std::isnan(score_a) && !std::isnan(score_b));
  });
}

// boxes: count x 4 values; scores: count values. Returns kept indices by decreasing score.
template <typename T>
std::vector<std::int64_t> nms_kernel(const T* boxes, const T* scores, std::int64_t count,
                                     double iou_threshold) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(count));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  sort_by_decreasing_score(order, scores);
  std::vector<T> areas(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) areas[i] = box_area(boxes + 4 * i);

  std::vector<unsigned char> suppressed(static_cast<std::size_t>(count), 0);
  std::vector<std::int64_t> keep;
  for (std::int64_t rank = 0; rank < count; ++rank) {
    const std::int64_t i = order[rank];
    if (suppressed[i]) continue;
    keep.push_back(i);
    for (std::int64_t later = rank + 1; later < count; ++later) {
      const std::int64_t j = order[later];
      if (suppressed[j]) continue;
      const T iou = box_pair_iou(boxes + 4 * i, boxes + 4 * j, areas[i], areas[j]);
      // The IoU is computed in T but compared in double with the threshold, as torch does:
      // an IoU of float(0.3) = 0.3000000119 suppresses at threshold 0.3.
      if (static_cast<double>(iou) > iou_threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

// torchvision's _batched_nms_coordinate_trick: every box is shifted by
// idx * (max coordinate + 1), computed in T, so that classes cannot overlap, then one nms runs.
// The shift changes the IoU's float rounding, and boxes with coordinates below -1 can overlap the
// previous class's range; both are reproduced, not corrected.
template <typename T>
std::vector<std::int64_t> batched_nms_coordinate_trick(TensorView<const T> boxes,
                                                       TensorView<const T> scores,
                                                       std::span<const std::int64_t> idxs,
                                                       double iou_threshold) {
  const std::int64_t count = boxes.dim(0);
  if (count == 0) return {};
  const T max_coordinate = *std::max_element(boxes.data(), boxes.data() + boxes.numel());
  const T class_stride = max_coordinate + T(1);
  std::vector<T> shifted(static_cast<std::size_t>(boxes.numel()));
  for (std::int64_t i = 0; i < count; ++i) {
    const T offset = static_cast<T>(idxs[i]) * class_stride;
    for (int k = 0; k < 4; ++k) shifted[4 * i + k] = boxes.data()[4 * i + k] + offset;
  }
  return nms_kernel(shifted.data(), scores.data(), count, iou_threshold);
}

// torchvision's _batched_nms_vanilla: one nms per class, the union sorted by decreasing score.
template <typename T>
std::vector<std::int64_t> batched_nms_vanilla(TensorView<const T> boxes, TensorView<const T> scores,
                                              std::span<const std::int64_t> idxs,
                                              double iou_threshold) {
  const std::int64_t count = boxes.dim(0);
  // Ascending index within each class, as torch.where(idxs == class_id) yields them.
  std::vector<std::int64_t> by_class(static_cast<std::size_t>(count));
  std::iota(by_class.begin(), by_class.end(), std::int64_t{0});
  std::stable_sort(by_class.begin(), by_class.end(),
                   [&idxs](std::int64_t a, std::int64_t b) { return idxs[a] < idxs[b]; });

  std::vector<unsigned char> kept(static_cast<std::size_t>(count), 0);
  std::vector<T> class_boxes;
  std::vector<T> class_scores;
  for (auto begin = by_class.begin(); begin != by_class.end();) {
    const auto end = std::find_if(begin, by_class.end(),
                                  [&](std::int64_t i) { return idxs[i] != idxs[*begin]; });
    class_boxes.clear();
    class_scores.clear();
    for (auto member = begin; member != end; ++member) {
      class_boxes.insert(class_boxes.end(), boxes.data() + 4 * *member,
                         boxes.data() + 4 * *member + 4);
      class_scores.push_back(scores.data()[*member]);
    }
    const auto class_keep = nms_kernel(class_boxes.data(), class_scores.data(),
                                       static_cast<std::int64_t>(end - begin), iou_threshold);
    for (std::int64_t local : class_keep) kept[begin[local]] = 1;
    begin = end;
  }

  std::vector<std::int64_t> keep;
  for (std::int64_t i = 0; i < count; ++i) {
    if (kept[i]) keep.push_back(i);
  }
  sort_by_decreasing_score(keep, scores.data());
  return keep;
}

template <typename T>
void check_boxes_and_scores(std::string_view where, TensorView<const T> boxes,
                            TensorView<const T> scores) {
  check_boxes(where, "boxes", boxes);
  if (scores.rank() != 1) {
    fpn::detail::throw_shape_error(where, "scores", "[N]", scores.shape().dims());
  }
  if (scores.dim(0) != boxes.dim(0)) {
    fpn::detail::throw_shape_mismatch(where, "boxes and scores must have the same length",
                                      boxes.shape().dims(), scores.shape().dims());
  }
}

}  // namespace detail

// boxes:   [N, 4] (x1, y1, x2, y2); scores: [N]
// returns: indices of the kept boxes by decreasing score (equal scores: lower index first).
//          A box is dropped when its IoU with a kept, higher-scoring box is > iou_threshold.
template <typename T = float>
std::vector<std::int64_t> nms(std::type_identity_t<TensorView<const T>> boxes,
                              std::type_identity_t<TensorView<const T>> scores,
                              double iou_threshold) {
  detail::check_boxes_and_scores("nms", boxes, scores);
  return detail::nms_kernel(boxes.data(), scores.data(), boxes.dim(0), iou_threshold);
}

// boxes:   [N, 4] (x1, y1, x2, y2); scores: [N]; idxs: N class (or level, or image) ids
// returns: indices of the kept boxes by decreasing score; boxes with different ids never
//          suppress each other (except through the coordinate trick's quirks, see above).
template <typename T = float>
std::vector<std::int64_t> batched_nms(std::type_identity_t<TensorView<const T>> boxes,
                                      std::type_identity_t<TensorView<const T>> scores,
                                      std::span<const std::int64_t> idxs, double iou_threshold) {
  detail::check_boxes_and_scores("batched_nms", boxes, scores);
  if (static_cast<std::int64_t>(idxs.size()) != boxes.dim(0)) {
    const std::int64_t idxs_shape[] = {static_cast<std::int64_t>(idxs.size())};
    fpn::detail::throw_shape_mismatch("batched_nms", "boxes and idxs must have the same length",
                                      boxes.shape().dims(), idxs_shape);
  }
  if (boxes.numel() > detail::batched_nms_vanilla_above_elements) {
    return detail::batched_nms_vanilla<T>(boxes, scores, idxs, iou_threshold);
  }
  return detail::batched_nms_coordinate_trick<T>(boxes, scores, idxs, iou_threshold);
}

}  // namespace fpn::ops
