// TwoStageDetector: torchvision's GeneralizedRCNN at inference, composed at compile time from a
// backbone with FPN, a region proposal network on every pyramid level and ROI heads:
//
//   using MaskRCNNResNet50FPN = TwoStageDetector<ResNetFPN<50>, RoiHeads<BoxHead<256>, MaskHead<256>>>;
//
// Weights are loaded at run time by torchvision's parameter names; thresholds and sizes are
// run-time DetectorParams.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/detections.hpp"
#include "fpn/nn/backbone.hpp"
#include "fpn/nn/poolers.hpp"
#include "fpn/nn/roi_heads.hpp"
#include "fpn/nn/rpn.hpp"
#include "fpn/nn/transform.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn {

struct DetectorParams {
  nn::TransformParams transform;
  nn::RpnParams rpn;
  nn::RoiHeadsParams roi_heads;
  // How the box head pools its 7x7 features; RoIPool only for heads trained with it.
  nn::RoiPooling box_pooling = nn::RoiPooling::align;
};

// Marks a detector without a mask branch.
struct NoMaskHead {};

template <typename BoxHeadType, typename MaskHeadType = NoMaskHead>
struct RoiHeads {
  using box_head = BoxHeadType;
  using mask_head = MaskHeadType;
  static constexpr bool has_mask = !std::same_as<MaskHeadType, NoMaskHead>;
};

template <typename T>
concept backbone_with_fpn = requires(const nn::WeightReader& reader, const T& net, const Tensor<float>& image) {
  { T::out_channels } -> std::convertible_to<std::int64_t>;
  { T::load(reader) } -> std::same_as<T>;
  { net.forward(image) } -> std::same_as<nn::FeaturePyramid>;
};

template <backbone_with_fpn Backbone, typename Heads>
class TwoStageDetector {
  static constexpr int channels = static_cast<int>(Backbone::out_channels);

 public:
  using backbone_type = Backbone;
  static constexpr bool has_mask = Heads::has_mask;

  // num_classes: from the file's "num_classes" metadata when 0 (torchvision's COCO: 91).
  static TwoStageDetector load(const nn::WeightReader& weights, DetectorParams params = {},
                               std::int64_t num_classes = 0) {
    if (num_classes <= 0) {
      num_classes = 91;
      if (auto text = weights.source().metadata("num_classes")) {
        try {
          num_classes = std::stoll(*text);
        } catch (const std::exception&) {
          num_classes = 0;
        }
        if (num_classes < 2) {
          throw WeightError(weights.source().describe() +
                            ": metadata num_classes must be an integer >= 2, got \"" + *text + "\"");
        }
      }
    }
    TwoStageDetector detector;
    detector.params_ = params;
    detector.box_pooler_.set_pooling(params.box_pooling);
    detector.num_classes_ = num_classes;
    detector.backbone_ = Backbone::load(weights);
    detector.rpn_ = nn::RegionProposalNetwork<channels>::load(weights.child("rpn"), params.rpn);
    const nn::WeightReader roi_heads = weights.child("roi_heads");
    detector.box_head_ = Heads::box_head::load(roi_heads, num_classes);
    if constexpr (has_mask) detector.mask_head_ = Heads::mask_head::load(roi_heads, num_classes);
    return detector;
  }

  // Reads a converted checkpoint; nothing of the file is kept once the weights are loaded.
  static TwoStageDetector load(const std::filesystem::path& path, DetectorParams params = {}) {
    const io::SafeTensors file = io::SafeTensors::open(path);
    return load(nn::WeightReader(file), params);
  }

  const DetectorParams& params() const { return params_; }
  void set_params(DetectorParams params) {
    params_ = params;
    rpn_.set_params(params.rpn);
    box_pooler_.set_pooling(params.box_pooling);
  }
  std::int64_t num_classes() const { return num_classes_; }
  const Backbone& backbone() const { return backbone_; }

  // The whole pipeline on an 8-bit RGB image. The preprocessed image is released once the stem
  // has read it.
  Detections detect(nn::ImageView image) const {
    nn::PreprocessedImage input = nn::preprocess(image, params_.transform);
    const std::int64_t padded_height = input.tensor.dim(2), padded_width = input.tensor.dim(3);
    const nn::FeaturePyramid pyramid = backbone_.forward(std::move(input.tensor));
    const nn::Proposals proposals = rpn_.forward(pyramid, padded_height, padded_width,
                                                 input.resized_height, input.resized_width);
    return detect_from_proposals(pyramid, proposals.boxes, input);
  }

  Detections detect(const nn::PreprocessedImage& image) const {
    const nn::FeaturePyramid pyramid = backbone_.forward(image.tensor);
    const nn::Proposals proposals = propose(pyramid, image);
    return detect_from_proposals(pyramid, proposals.boxes, image);
  }

  // The stages, exposed so each can be checked against torchvision on its own.
  nn::Proposals propose(const nn::FeaturePyramid& pyramid, const nn::PreprocessedImage& image) const {
    return rpn_.forward(pyramid, image.tensor.dim(2), image.tensor.dim(3), image.resized_height,
                        image.resized_width);
  }

  // The ROI heads pool and run this many boxes at a time: each box's result is its own, and the
  // pooled features of 1000 proposals (50 MB for 256 channels) are never held at once.
  static constexpr std::int64_t box_chunk = 256;
  static constexpr std::int64_t mask_chunk = 8;

  nn::BoxDetections detect_boxes(const nn::FeaturePyramid& pyramid, const Tensor<float>& proposals,
                                 const nn::PreprocessedImage& image) const {
    if (proposals.rank() != 2 || proposals.dim(1) != 4) {
      detail::throw_shape_error("detect_boxes", "proposals", "[R, 4]", proposals.shape().dims());
    }
    const std::int64_t count = proposals.dim(0);
    const std::int64_t classes = box_head_.num_classes();
    Tensor<float> logits = Tensor<float>::uninitialized(Shape{count, classes});
    Tensor<float> deltas = Tensor<float>::uninitialized(Shape{count, 4 * classes});
    for (std::int64_t first = 0; first < count; first += box_chunk) {
      const std::int64_t rows = std::min(box_chunk, count - first);
      const TensorView<const float> boxes(proposals.data() + 4 * first, Shape{rows, 4});
      const auto [chunk_logits, chunk_deltas] =
          box_head_.predict(box_pooler_.forward(pyramid, boxes, image.resized_height));
      std::copy_n(chunk_logits.data(), chunk_logits.numel(), logits.data() + first * classes);
      std::copy_n(chunk_deltas.data(), chunk_deltas.numel(), deltas.data() + first * 4 * classes);
    }
    return box_head_.postprocess(logits, deltas, proposals, image.resized_height,
                                 image.resized_width, params_.roi_heads);
  }

  // The mask branch before pasting. boxes: [D, 4] in resized-image pixels (as detect_boxes
  // returns them); labels: D class indices. returns [D, 28, 28] probabilities of those classes.
  Tensor<float> predict_masks(const nn::FeaturePyramid& pyramid, const Tensor<float>& boxes,
                              const std::vector<std::int64_t>& labels,
                              const nn::PreprocessedImage& image) const
    requires has_mask
  {
    if (boxes.rank() != 2 || boxes.dim(1) != 4) {
      detail::throw_shape_error("predict_masks", "boxes", "[D, 4]", boxes.shape().dims());
    }
    if (static_cast<std::size_t>(boxes.dim(0)) != labels.size()) {
      detail::throw_argument_error("predict_masks", "one label per box expected, got " +
                                                        std::to_string(labels.size()) + " labels for " +
                                                        std::to_string(boxes.dim(0)) + " boxes");
    }
    const std::int64_t count = boxes.dim(0);
    const std::int64_t side = 2 * Heads::mask_head::pool_size;
    Tensor<float> masks = Tensor<float>::uninitialized(Shape{count, side, side});
    for (std::int64_t first = 0; first < count; first += mask_chunk) {
      const std::int64_t rows = std::min(mask_chunk, count - first);
      const TensorView<const float> chunk(boxes.data() + 4 * first, Shape{rows, 4});
      const std::vector<std::int64_t> chunk_labels(labels.begin() + first,
                                                   labels.begin() + first + rows);
      const Tensor<float> chunk_masks = mask_head_.forward(
          mask_pooler_.forward(pyramid, chunk, image.resized_height), chunk_labels);
      std::copy_n(chunk_masks.data(), chunk_masks.numel(), masks.data() + first * side * side);
    }
    return masks;
  }

  Detections detect_from_proposals(const nn::FeaturePyramid& pyramid, const Tensor<float>& proposals,
                                   const nn::PreprocessedImage& image) const {
    const nn::BoxDetections boxes = detect_boxes(pyramid, proposals, image);
    Detections result;
    result.image_height = image.original_height;
    result.image_width = image.original_width;
    const float ratio_height = image.ratio_height();
    const float ratio_width = image.ratio_width();
    const std::int64_t count = boxes.boxes.dim(0);
    for (std::int64_t i = 0; i < count; ++i) {
      Detection detection;
      const float* box = boxes.boxes.data() + 4 * i;
      detection.box = {box[0] * ratio_width, box[1] * ratio_height, box[2] * ratio_width,
                       box[3] * ratio_height};
      detection.label = boxes.labels[static_cast<std::size_t>(i)];
      detection.score = boxes.scores.data()[i];
      result.items.push_back(std::move(detection));
    }
    if constexpr (has_mask) {
      if (count > 0) {
        const Tensor<float> masks = predict_masks(pyramid, boxes.boxes, boxes.labels, image);
        const std::int64_t side = masks.dim(1);
        for (std::int64_t i = 0; i < count; ++i) {
          result.items[static_cast<std::size_t>(i)].mask =
              nn::paste_mask(masks.data() + i * side * side, side, result.items[static_cast<std::size_t>(i)].box,
                             image.original_height, image.original_width);
        }
      }
    }
    return result;
  }

 private:
  TwoStageDetector() = default;

  DetectorParams params_;
  std::int64_t num_classes_ = 0;
  Backbone backbone_;
  nn::RegionProposalNetwork<channels> rpn_;
  nn::MultiScaleRoIAlign box_pooler_{7, 2};
  nn::MultiScaleRoIAlign mask_pooler_{14, 2};
  typename Heads::box_head box_head_;
  [[no_unique_address]] std::conditional_t<has_mask, typename Heads::mask_head, NoMaskHead> mask_head_;
};

template <typename Backbone>
using FasterRCNN = TwoStageDetector<Backbone, RoiHeads<nn::BoxHead<static_cast<int>(Backbone::out_channels)>>>;

template <typename Backbone>
using MaskRCNN = TwoStageDetector<Backbone, RoiHeads<nn::BoxHead<static_cast<int>(Backbone::out_channels)>,
                                                     nn::MaskHead<static_cast<int>(Backbone::out_channels)>>>;

using FasterRCNNResNet18FPN = FasterRCNN<nn::ResNetFPN<18>>;
using FasterRCNNResNet34FPN = FasterRCNN<nn::ResNetFPN<34>>;
using FasterRCNNResNet50FPN = FasterRCNN<nn::ResNetFPN<50>>;
using FasterRCNNResNet101FPN = FasterRCNN<nn::ResNetFPN<101>>;
using MaskRCNNResNet18FPN = MaskRCNN<nn::ResNetFPN<18>>;
using MaskRCNNResNet34FPN = MaskRCNN<nn::ResNetFPN<34>>;
using MaskRCNNResNet50FPN = MaskRCNN<nn::ResNetFPN<50>>;
using MaskRCNNResNet101FPN = MaskRCNN<nn::ResNetFPN<101>>;

}  // namespace fpn
