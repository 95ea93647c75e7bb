// MultiScaleRoIAlign (torchvision ops/poolers.py) over the pyramid levels named in its
// featmap_names (torchvision's default "0".."3": P2..P5 of the ResNet FPNs; the "0" and "1" of
// MobileNetV3-FPN, which has no "2" or "3"). Each box is pooled from the level
//   k = clamp(floor(4 + log2(sqrt(area) / 224) + 1e-6), k_min, k_max)        (FPN paper, eq. 1)
// with that level's scale 2^round(log2(feature height / image height)) inferred as _infer_scale
// does, from the resized (unpadded) image height. All in float32, as torch computes it.
// RoI max pooling (Fast R-CNN's RoIPool) can replace RoIAlign on the same levels, for heads trained
// with it; torchvision's detectors use RoIAlign.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/ops/roi_align.hpp"
#include "fpn/ops/roi_pool.hpp"

namespace fpn::nn {

enum class RoiPooling {
  align,  // RoIAlign, aligned=False, sampling_ratio per bin side (torchvision's detectors)
  max,    // RoIPool: max over the pixels of each quantised bin (Fast R-CNN)
};

class MultiScaleRoIAlign {
 public:
  // torchvision's default featmap_names, every R-CNN builder's.
  static std::vector<std::string> default_featmap_names() { return {"0", "1", "2", "3"}; }

  explicit MultiScaleRoIAlign(std::int64_t output_size, std::int64_t sampling_ratio = 2,
                              RoiPooling pooling = RoiPooling::align,
                              std::vector<std::string> featmap_names = default_featmap_names())
      : output_size_(output_size),
        sampling_ratio_(sampling_ratio),
        pooling_(pooling),
        featmap_names_(std::move(featmap_names)) {
    if (output_size_ < 1 || sampling_ratio_ < 0 || featmap_names_.empty()) {
      fpn::detail::throw_argument_error(
          "MultiScaleRoIAlign", "needs output_size >= 1, sampling_ratio >= 0 and at least one "
                                "featmap name, got output_size " + std::to_string(output_size_) +
                                    ", sampling_ratio " + std::to_string(sampling_ratio_) + " and " +
                                    std::to_string(featmap_names_.size()) + " names");
    }
  }

  const std::vector<std::string>& featmap_names() const { return featmap_names_; }

  std::int64_t output_size() const { return output_size_; }
  RoiPooling pooling() const { return pooling_; }
  void set_pooling(RoiPooling pooling) { pooling_ = pooling; }

  // _infer_scale: 2^round(log2(float32(feature_height / image_height))), half to even.
  static float infer_scale(std::int64_t feature_height, std::int64_t image_height) {
    const auto approx = static_cast<float>(static_cast<double>(feature_height) /
                                           static_cast<double>(image_height));
    return static_cast<float>(std::pow(2.0, static_cast<double>(std::nearbyint(std::log2(approx)))));
  }

  // The index into `scales` (the pooled levels, finest first) of each box [R, 4].
  static std::vector<std::int64_t> assign_levels(TensorView<const float> boxes,
                                                 std::span<const float> scales) {
    const auto k_min = static_cast<std::int64_t>(-std::log2(scales.front()));
    const auto k_max = static_cast<std::int64_t>(-std::log2(scales.back()));
    std::vector<std::int64_t> levels(static_cast<std::size_t>(boxes.dim(0)));
    for (std::int64_t i = 0; i < boxes.dim(0); ++i) {
      const float* box = boxes.data() + 4 * i;
      const float area = (box[2] - box[0]) * (box[3] - box[1]);
      const float size = std::sqrt(area);
      const float level = std::floor(4.0f + std::log2(size / 224.0f) + 1e-6f);
      const float clamped = std::min(std::max(level, static_cast<float>(k_min)), static_cast<float>(k_max));
      levels[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(clamped) - k_min;
    }
    return levels;
  }

  // pyramid: one image's levels; those named in featmap_names are pooled, in the pyramid's order
  // (the others, e.g. "pool", are the RPN's only); boxes: [R, 4] in resized-image pixels;
  // image_height: the resized image's height. returns [R, C, output_size, output_size].
  Tensor<float> forward(const FeaturePyramid& pyramid, TensorView<const float> boxes,
                        std::int64_t image_height) const {
    if (boxes.rank() != 2 || boxes.dim(1) != 4) {
      fpn::detail::throw_shape_error("MultiScaleRoIAlign", "boxes", "[R, 4]", boxes.shape().dims());
    }
    if (image_height < 1) {
      fpn::detail::throw_argument_error("MultiScaleRoIAlign",
                                        "image_height must be >= 1, got " + std::to_string(image_height));
    }
    // Boxes are pooled with batch index 0: a batch's other images would be ignored.
    const std::int64_t first_channels =
        !pyramid.empty() && pyramid.levels[0].rank() == 4 ? pyramid.levels[0].dim(1) : -1;
    pyramid.check("MultiScaleRoIAlign", first_channels);
    std::vector<const Tensor<float>*> sources;
    for (std::size_t l = 0; l < pyramid.size(); ++l) {
      for (const std::string& name : featmap_names_) {
        if (pyramid.names[l] == name) sources.push_back(&pyramid.levels[l]);
      }
    }
    if (sources.empty()) {
      std::string wanted = "[";
      for (std::size_t i = 0; i < featmap_names_.size(); ++i) {
        if (i > 0) wanted += ", ";
        wanted += featmap_names_[i];
      }
      fpn::detail::throw_argument_error("MultiScaleRoIAlign", "none of the featmap names " + wanted +
                                                                  "] is a level of the pyramid " +
                                                                  pyramid.describe_names());
    }
    std::vector<float> scales(sources.size());
    for (std::size_t l = 0; l < sources.size(); ++l) scales[l] = infer_scale(sources[l]->dim(2), image_height);
    const std::vector<std::int64_t> levels = assign_levels(boxes, scales);
    const std::int64_t channels = sources[0]->dim(1);
    const std::int64_t rois = boxes.dim(0);
    const std::int64_t per_roi = channels * output_size_ * output_size_;
    Tensor<float> result = Tensor<float>::uninitialized(Shape{rois, channels, output_size_, output_size_});
    for (std::size_t l = 0; l < sources.size(); ++l) {
      std::vector<std::int64_t> members;
      for (std::int64_t i = 0; i < rois; ++i) {
        if (levels[static_cast<std::size_t>(i)] == static_cast<std::int64_t>(l)) members.push_back(i);
      }
      if (members.empty()) continue;
      const auto count = static_cast<std::int64_t>(members.size());
      Tensor<float> level_boxes = Tensor<float>::uninitialized(Shape{count, 5});
      for (std::int64_t j = 0; j < count; ++j) {
        level_boxes.at(j, 0) = 0.0f;
        std::copy_n(boxes.data() + 4 * members[static_cast<std::size_t>(j)], 4,
                    level_boxes.data() + 5 * j + 1);
      }
      const Tensor<float> pooled =
          pooling_ == RoiPooling::max
              ? ops::roi_pool(*sources[l], level_boxes,
                              ops::RoiPoolParams{output_size_, output_size_, scales[l]})
              : ops::roi_align(*sources[l], level_boxes,
                               ops::RoiAlignParams{output_size_, output_size_, scales[l],
                                                   sampling_ratio_, false});
      for (std::int64_t j = 0; j < count; ++j) {
        std::copy_n(pooled.data() + j * per_roi, per_roi,
                    result.data() + members[static_cast<std::size_t>(j)] * per_roi);
      }
    }
    return result;
  }

 private:
  std::int64_t output_size_;
  std::int64_t sampling_ratio_;
  RoiPooling pooling_;
  std::vector<std::string> featmap_names_;
};

}  // namespace fpn::nn
