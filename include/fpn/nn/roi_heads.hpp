// The second stage at inference, as torchvision 0.14's RoIHeads (models/detection/roi_heads.py):
//   box branch: 7x7 MultiScaleRoIAlign -> TwoMLPHead (fc6, fc7 + ReLU) -> FastRCNNPredictor
//     (class logits, per-class deltas) -> softmax, decode with weights (10, 10, 5, 5), clip, drop
//     background, score > score_thresh, remove boxes under 1e-2, NMS per class, top N;
//   mask branch (Mask R-CNN): 14x14 MultiScaleRoIAlign on the final boxes -> four 3x3 conv + ReLU
//     -> 2x2 stride-2 transposed conv + ReLU -> 1x1 logits of the predicted class only -> sigmoid
//     -> pasted into the original image (paste_masks_in_image).
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/models/detections.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/poolers.hpp"
#include "fpn/nn/transform.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/box_coder.hpp"
#include "fpn/ops/boxes.hpp"
#include "fpn/ops/index_select.hpp"
#include "fpn/ops/linear.hpp"
#include "fpn/ops/packed_linear.hpp"
#include "fpn/ops/nms.hpp"

namespace fpn::nn {

// torchvision's test-time defaults.
struct RoiHeadsParams {
  float score_thresh = 0.05f;  // class probability a detection must exceed
  float nms_thresh = 0.5f;     // per-class NMS IoU
  std::int64_t detections_per_img = 100;
};

// Throws ArgumentError naming the first field out of range ("RoiHeadsParams.detections_per_img
// must be an integer >= 1, got -1"); name: how the caller knows these params.
inline void check_params(const RoiHeadsParams& params, std::string_view name = "RoiHeadsParams") {
  const std::string prefix(name);
  fpn::detail::check_in_range(prefix + ".score_thresh", params.score_thresh, 0.0f, 1.0f);
  fpn::detail::check_in_range(prefix + ".nms_thresh", params.nms_thresh, 0.0f, 1.0f);
  fpn::detail::check_count(prefix + ".detections_per_img", params.detections_per_img, 1);
}

// Detections on the resized image, before mapping back to the original.
struct BoxDetections {
  Tensor<float> boxes;  // [D, 4]
  Tensor<float> scores;  // [D]
  std::vector<std::int64_t> labels;
};

// A linear layer "<name>.weight" [out, in], "<name>.bias" [out].
// The weight is packed for its GEMM at load (ops::PackedLinearWeight), the layout every call reads.
struct Linear {
  ops::PackedLinearWeight weight;
  Tensor<float> bias;
  static Linear load(const WeightReader& weights, std::string_view name, std::int64_t in,
                     std::int64_t out) {
    const WeightReader scope = weights.child(name);
    return {ops::PackedLinearWeight(scope.load("weight", Shape{out, in})),
            scope.load("bias", Shape{out})};
  }
  Tensor<float> forward(TensorView<const float> x,
                        ops::Activation activation = ops::Activation::identity) const {
    return ops::linear(x, weight, bias, activation);
  }
};

namespace detail {

// Row-wise softmax in float32: exp(x - max) / sum, as torch's CPU softmax.
inline Tensor<float> softmax_rows(const Tensor<float>& logits) {
  Tensor<float> probabilities = Tensor<float>::uninitialized(logits.shape());
  const std::int64_t columns = logits.dim(1);
  for (std::int64_t r = 0; r < logits.dim(0); ++r) {
    const float* in = logits.data() + r * columns;
    float* out = probabilities.data() + r * columns;
    const float max = *std::max_element(in, in + columns);
    float sum = 0.0f;
    for (std::int64_t c = 0; c < columns; ++c) {
      out[c] = std::exp(in[c] - max);
      sum += out[c];
    }
    for (std::int64_t c = 0; c < columns; ++c) out[c] /= sum;
  }
  return probabilities;
}

}  // namespace detail

// FastRCNNPredictor (cls_score, bbox_pred) + postprocess_detections: the end of every box head.
class BoxPredictor {
 public:
  // roi_heads: a reader scoped to "roi_heads."; in_features: the box head's representation size.
  static BoxPredictor load(const WeightReader& roi_heads, std::int64_t in_features,
                           std::int64_t num_classes) {
    BoxPredictor predictor;
    predictor.num_classes_ = num_classes;
    predictor.cls_score_ = Linear::load(roi_heads, "box_predictor.cls_score", in_features, num_classes);
    predictor.bbox_pred_ = Linear::load(roi_heads, "box_predictor.bbox_pred", in_features, 4 * num_classes);
    return predictor;
  }

  std::int64_t num_classes() const { return num_classes_; }

  // x: [R, in_features]; returns class logits [R, K] and deltas [R, 4K].
  std::pair<Tensor<float>, Tensor<float>> forward(TensorView<const float> x) const {
    return {cls_score_.forward(x), bbox_pred_.forward(x)};
  }

  // proposals: [R, 4]; image_*: the resized image's size. Detections by decreasing score.
  BoxDetections postprocess(const Tensor<float>& logits, const Tensor<float>& deltas,
                            const Tensor<float>& proposals, std::int64_t image_height,
                            std::int64_t image_width, const RoiHeadsParams& params,
                            std::string_view where = "BoxPredictor::postprocess") const {
    check_params(params);
    const std::int64_t count = proposals.rank() == 2 ? proposals.dim(0) : -1;
    const std::string rows = std::to_string(count);
    if (proposals.rank() != 2 || proposals.dim(1) != 4) {
      fpn::detail::throw_shape_error(where, "proposals", "[R, 4]",
                                     proposals.shape().dims());
    }
    if (logits.rank() != 2 || logits.dim(0) != count || logits.dim(1) != num_classes_) {
      fpn::detail::throw_shape_error(where, "logits",
                                     "[" + rows + ", " + std::to_string(num_classes_) + "]",
                                     logits.shape().dims());
    }
    if (deltas.rank() != 2 || deltas.dim(0) != count || deltas.dim(1) != 4 * num_classes_) {
      fpn::detail::throw_shape_error(where, "deltas",
                                     "[" + rows + ", " + std::to_string(4 * num_classes_) + "]",
                                     deltas.shape().dims());
    }
    if (image_height < 1 || image_width < 1) {
      fpn::detail::throw_argument_error(where,
                                        "the image size must be >= 1, got " +
                                            std::to_string(image_height) + "x" +
                                            std::to_string(image_width));
    }
    const ops::BoxCoder coder{{10.0, 10.0, 5.0, 5.0}};
    const Tensor<float> boxes = ops::clip_boxes_to_image(
        coder.decode(deltas, proposals).reshaped(Shape{proposals.dim(0) * num_classes_, 4}),
        image_height, image_width);
    const Tensor<float> scores = detail::softmax_rows(logits);
    // Candidates in torchvision's order: proposal-major, class 1..K-1 within a proposal.
    std::vector<std::int64_t> candidates;
    for (std::int64_t r = 0; r < proposals.dim(0); ++r) {
      for (std::int64_t k = 1; k < num_classes_; ++k) {
        if (scores.at(r, k) > params.score_thresh) candidates.push_back(r * num_classes_ + k);
      }
    }
    const TensorView<const float> flat_scores(scores.data(), Shape{scores.numel()});
    const Tensor<float> candidate_boxes = ops::index_select0(boxes, candidates);
    std::vector<std::int64_t> kept;  // flat (proposal, class) indices
    for (std::int64_t j : ops::remove_small_boxes(candidate_boxes, 1e-2)) {
      kept.push_back(candidates[static_cast<std::size_t>(j)]);
    }
    const Tensor<float> kept_boxes = ops::index_select0(boxes, kept);
    const Tensor<float> kept_scores = ops::index_select0(flat_scores, kept);
    std::vector<std::int64_t> kept_labels;
    for (std::int64_t flat_index : kept) kept_labels.push_back(flat_index % num_classes_);
    std::vector<std::int64_t> keep =
        ops::batched_nms(kept_boxes, kept_scores, kept_labels, params.nms_thresh);
    if (static_cast<std::int64_t>(keep.size()) > params.detections_per_img) {
      keep.resize(static_cast<std::size_t>(params.detections_per_img));
    }
    BoxDetections result{ops::index_select0(kept_boxes, keep),
                         ops::index_select0(kept_scores, keep),
                         ops::index_select(kept_labels, keep)};
    return result;
  }

 private:
  std::int64_t num_classes_ = 0;
  Linear cls_score_, bbox_pred_;
};

// What a detector needs of its box head (TwoStageDetector's Heads::box_head): the width of the
// features it pools (in_channels, checked against the neck's at compile time), the side of the
// square ROI features it pools (7 for torchvision's heads), a load from "roi_heads.*" for a
// number of classes, predict (pooled [R, C, pool_size, pool_size] -> logits [R, K], deltas
// [R, 4K]) and postprocess (-> detections by decreasing score). BoxHead (TwoMLPHead, v1) and
// ConvFCBoxHead (FastRCNNConvFCHead, v2) are two.
template <typename T>
concept box_head = requires(const WeightReader& roi_heads, const T& head, const Tensor<float>& pooled,
                            const RoiHeadsParams& params) {
  { T::in_channels } -> std::convertible_to<std::int64_t>;
  { T::pool_size } -> std::convertible_to<std::int64_t>;
  { T::load(roi_heads, std::int64_t{}) } -> std::same_as<T>;
  { head.num_classes() } -> std::same_as<std::int64_t>;
  { head.predict(pooled) } -> std::same_as<std::pair<Tensor<float>, Tensor<float>>>;
  { head.postprocess(pooled, pooled, pooled, std::int64_t{}, std::int64_t{}, params) } -> std::same_as<BoxDetections>;
};

// TwoMLPHead + FastRCNNPredictor + postprocess_detections.
template <int Channels, int Representation = 1024>
class BoxHead {
 public:
  static constexpr std::int64_t in_channels = Channels;
  static constexpr std::int64_t pool_size = 7;

  // roi_heads: a reader scoped to "roi_heads.".
  static BoxHead load(const WeightReader& roi_heads, std::int64_t num_classes) {
    BoxHead head;
    const std::int64_t in = Channels * pool_size * pool_size;
    head.fc6_ = Linear::load(roi_heads, "box_head.fc6", in, Representation);
    head.fc7_ = Linear::load(roi_heads, "box_head.fc7", Representation, Representation);
    head.predictor_ = BoxPredictor::load(roi_heads, Representation, num_classes);
    return head;
  }

  std::int64_t num_classes() const { return predictor_.num_classes(); }

  // pooled: [R, C, 7, 7] ROI features; returns class logits [R, K] and deltas [R, 4K].
  std::pair<Tensor<float>, Tensor<float>> predict(const Tensor<float>& pooled) const {
    if (pooled.rank() != 4 || pooled.dim(1) != Channels || pooled.dim(2) != pool_size ||
        pooled.dim(3) != pool_size) {
      fpn::detail::throw_shape_error("BoxHead::predict", "pooled",
                                     "[R, " + std::to_string(Channels) + ", 7, 7]",
                                     pooled.shape().dims());
    }
    const TensorView<const float> flat(pooled.data(), Shape{pooled.dim(0), pooled.numel() / std::max<std::int64_t>(pooled.dim(0), 1)});
    const Tensor<float> x = fc7_.forward(fc6_.forward(flat, ops::Activation::relu), ops::Activation::relu);
    return predictor_.forward(x);
  }

  // proposals: [R, 4]; image_*: the resized image's size. Detections by decreasing score.
  BoxDetections postprocess(const Tensor<float>& logits, const Tensor<float>& deltas,
                            const Tensor<float>& proposals, std::int64_t image_height,
                            std::int64_t image_width, const RoiHeadsParams& params) const {
    return predictor_.postprocess(logits, deltas, proposals, image_height, image_width, params,
                                  "BoxHead::postprocess");
  }

 private:
  Linear fc6_, fc7_;
  BoxPredictor predictor_;
};

// MaskRCNNHeads + MaskRCNNPredictor, evaluated only for the predicted class of each detection.
// Norm: how the four 3x3 conv blocks ("mask_head.<i>") load (nn/norm.hpp): BiasOnly in the v1
// detectors, FoldedBatchNorm in maskrcnn_resnet50_fpn_v2 (norm_layer=BatchNorm2d).
template <int Channels, int MaskChannels = 256, typename Norm = BiasOnly>
class MaskHead {
  static_assert(block_norm<Norm>,
                "MaskHead: Norm must be a norm policy (nn::block_norm, e.g. nn::BiasOnly, "
                "nn::FoldedBatchNorm or nn::GroupNorm<32>) with a static load(const "
                "WeightReader&, ConvSpec) returning a conv block");

 public:
  static constexpr std::int64_t in_channels = Channels;
  static constexpr std::int64_t pool_size = 14;
  // The side of the masks it predicts (the transposed conv doubles the pooled side).
  static constexpr std::int64_t mask_size = 2 * pool_size;

  static MaskHead load(const WeightReader& roi_heads, std::int64_t num_classes) {
    MaskHead head;
    std::int64_t in = Channels;
    for (std::size_t i = 0; i < head.convs_.size(); ++i) {
      head.convs_[i] = Norm::load(roi_heads.child(fpn::detail::numbered("mask_head.", static_cast<std::int64_t>(i))),
                                  {in, MaskChannels, 3, 1, 1, ops::Activation::relu});
      in = MaskChannels;
    }
    const WeightReader predictor = roi_heads.child("mask_predictor");
    head.upsample_weight_ = predictor.load("conv5_mask.weight", Shape{MaskChannels, MaskChannels, 2, 2});
    head.upsample_bias_ = predictor.load("conv5_mask.bias", Shape{MaskChannels});
    head.logits_weight_ = predictor.load("mask_fcn_logits.weight", Shape{num_classes, MaskChannels, 1, 1});
    head.logits_bias_ = predictor.load("mask_fcn_logits.bias", Shape{num_classes});
    return head;
  }

  // pooled: [D, C, 14, 14]; labels: D class indices. returns [D, 28, 28] mask probabilities.
  Tensor<float> forward(const Tensor<float>& pooled, const std::vector<std::int64_t>& labels) const {
    if (pooled.rank() != 4 || pooled.dim(1) != Channels || pooled.dim(2) != pool_size ||
        pooled.dim(3) != pool_size) {
      fpn::detail::throw_shape_error("MaskHead::forward", "pooled",
                                     "[D, " + std::to_string(Channels) + ", 14, 14]",
                                     pooled.shape().dims());
    }
    if (static_cast<std::size_t>(pooled.dim(0)) != labels.size()) {
      fpn::detail::throw_argument_error(
          "MaskHead::forward", "one label per pooled box expected, got " +
                                   std::to_string(labels.size()) + " labels for " +
                                   std::to_string(pooled.dim(0)) + " boxes");
    }
    check_labels("MaskHead::forward", labels);
    Tensor<float> x = convs_[0].forward(pooled);
    for (std::size_t i = 1; i < convs_.size(); ++i) x = convs_[i].forward(x);
    return predict(x, labels);
  }

  std::int64_t num_classes() const { return logits_bias_.numel(); }

  // Each label must be a class of the predictor, [0, num_classes): the 1x1 logits conv is
  // evaluated for that class only, from its row of the weights.
  void check_labels(std::string_view where, const std::vector<std::int64_t>& labels) const {
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] < 0 || labels[i] >= num_classes()) {
        fpn::detail::throw_argument_error(
            where, "labels[" + std::to_string(i) + "] must be a class index in [0, " +
                       std::to_string(num_classes()) + "), got " + std::to_string(labels[i]));
      }
    }
  }

 private:
  // conv5_mask (2x2 stride-2 transposed conv + ReLU) and mask_fcn_logits for each box's class,
  // then the sigmoid, box by box: the 256-channel 28x28 map is never stored. Per box, one GEMM
  // gives the transposed conv's products [(channel, dy, dx), pixel] (its output windows do not
  // overlap); for a channel c, its four rows (dy, dx) are the next 4 * pixels values, and
  //   logit[(dy, dx), pixel] = bias + sum_c w[c] * relu(product[(c, dy, dx), pixel] + up_bias[c])
  // is accumulated over c in that layout, each sum in the order of torch's 1x1 conv over the
  // channels, then scattered to [28, 28]. x: [D, MaskChannels, h, w]; returns [D, 2h, 2w].
  Tensor<float> predict(const Tensor<float>& x, const std::vector<std::int64_t>& labels) const {
    using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const std::int64_t count = x.dim(0), height = x.dim(2), width = x.dim(3);
    const std::int64_t pixels = height * width;
    const std::int64_t taps = 4 * pixels;  // one channel's (dy, dx, pixel) products
    const Eigen::Map<const Matrix> up_weight(upsample_weight_.data(), MaskChannels, 4 * MaskChannels);
    Tensor<float> masks = Tensor<float>::uninitialized(Shape{count, 2 * height, 2 * width});
    fpn::detail::SlotScratch<float> scratch(static_cast<std::size_t>((MaskChannels + 1) * taps),
                                           fpn::detail::ScratchFill::uninitialized);
    fpn::detail::parallel_for(count, [&](std::int64_t d, int slot) {
      float* products = scratch.get(slot);
      float* logits = products + MaskChannels * taps;
      Eigen::Map<Matrix>(products, 4 * MaskChannels, pixels).noalias() =
          up_weight.transpose() *
          Eigen::Map<const Matrix>(x.data() + d * MaskChannels * pixels, MaskChannels, pixels);
      const std::int64_t label = labels[static_cast<std::size_t>(d)];
      const float* w = logits_weight_.data() + label * MaskChannels;
      std::fill_n(logits, taps, logits_bias_.data()[label]);
      for (std::int64_t c = 0; c < MaskChannels; ++c) {
        const float weight = w[c];
        const float offset = upsample_bias_.data()[c];
        const float* row = products + c * taps;
        for (std::int64_t q = 0; q < taps; ++q) logits[q] += weight * std::max(row[q] + offset, 0.0f);
      }
      float* out = masks.data() + d * taps;
      for (std::int64_t tap = 0; tap < 4; ++tap) {
        const std::int64_t dy = tap / 2, dx = tap % 2;
        for (std::int64_t y = 0; y < height; ++y) {
          const float* source = logits + tap * pixels + y * width;
          float* line = out + (2 * y + dy) * 2 * width + dx;
          for (std::int64_t i = 0; i < width; ++i) line[2 * i] = 1.0f / (1.0f + std::exp(-source[i]));
        }
      }
    });
    return masks;
  }

  std::array<norm_block_t<Norm>, 4> convs_;
  Tensor<float> upsample_weight_, upsample_bias_, logits_weight_, logits_bias_;
};

// A mask head: the width of the features it pools (in_channels), the side of the square ROI
// features (pool_size) and of the masks it predicts (mask_size), a load from "roi_heads.*" for a
// number of classes, forward(pooled [D, C, pool_size, pool_size], labels) -> [D, mask_size,
// mask_size] probabilities of those labels, and check_labels. MaskHead is one.
template <typename T>
concept mask_head = requires(const WeightReader& roi_heads, const T& head, const Tensor<float>& pooled,
                             const std::vector<std::int64_t>& labels) {
  { T::in_channels } -> std::convertible_to<std::int64_t>;
  { T::pool_size } -> std::convertible_to<std::int64_t>;
  { T::mask_size } -> std::convertible_to<std::int64_t>;
  { T::load(roi_heads, std::int64_t{}) } -> std::same_as<T>;
  { head.num_classes() } -> std::same_as<std::int64_t>;
  { head.forward(pooled, labels) } -> std::same_as<Tensor<float>>;
  head.check_labels(std::string_view{}, labels);
};

// Where paste_masks_in_image puts an M x M mask: the box grown by (M + 2) / M about its centre
// (for the one-pixel zero padding), in float32 as torchvision, then truncated toward zero by
// .to(torch.int64). The float corners are kept: a corner within float noise of an integer is where
// two implementations may paste one pixel apart.
struct PasteGeometry {
  std::array<float, 4> expanded;  // (x0, y0, x1, y1) before truncation
  std::int64_t x0, y0, x1, y1;    // inclusive integer corners
  std::int64_t width() const { return std::max<std::int64_t>(x1 - x0 + 1, 1); }
  std::int64_t height() const { return std::max<std::int64_t>(y1 - y0 + 1, 1); }
};

inline PasteGeometry paste_geometry(const std::array<float, 4>& box, std::int64_t side) {
  const auto scale = static_cast<float>(static_cast<double>(side + 2) / static_cast<double>(side));
  const float w_half = (box[2] - box[0]) * 0.5f * scale;
  const float h_half = (box[3] - box[1]) * 0.5f * scale;
  const float x_c = (box[2] + box[0]) * 0.5f;
  const float y_c = (box[3] + box[1]) * 0.5f;
  PasteGeometry g{{x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half}, 0, 0, 0, 0};
  g.x0 = static_cast<std::int64_t>(g.expanded[0]);
  g.y0 = static_cast<std::int64_t>(g.expanded[1]);
  g.x1 = static_cast<std::int64_t>(g.expanded[2]);
  g.y1 = static_cast<std::int64_t>(g.expanded[3]);
  return g;
}

// paste_masks_in_image for one mask: the M x M mask is zero-padded to M + 2, placed by
// paste_geometry, bilinearly resized to the grown box (at least 1 x 1) and clipped to the image.
// box: original-image pixels.
inline PastedMask paste_mask(const float* mask, std::int64_t side, const std::array<float, 4>& box,
                             std::int64_t image_height, std::int64_t image_width) {
  const std::int64_t padded_side = side + 2;
  const PasteGeometry geometry = paste_geometry(box, side);
  const std::int64_t bx0 = geometry.x0, by0 = geometry.y0, bx1 = geometry.x1, by1 = geometry.y1;
  const std::int64_t width = geometry.width();
  const std::int64_t height = geometry.height();

  PastedMask pasted;
  pasted.x0 = std::max<std::int64_t>(bx0, 0);
  pasted.y0 = std::max<std::int64_t>(by0, 0);
  const std::int64_t x1 = std::min<std::int64_t>(bx1 + 1, image_width);
  const std::int64_t y1 = std::min<std::int64_t>(by1 + 1, image_height);
  pasted.width = std::max<std::int64_t>(x1 - pasted.x0, 0);
  pasted.height = std::max<std::int64_t>(y1 - pasted.y0, 0);
  pasted.probabilities.assign(static_cast<std::size_t>(pasted.width * pasted.height), 0.0f);
  if (pasted.width == 0 || pasted.height == 0) return pasted;

  // The padded mask, then F.interpolate(bilinear, align_corners=False). torch runs a [1, 1, h, w]
  // tensor through its channels-last kernel: weights float(lh * lw), the four taps summed in
  // double and rounded once (see transform.hpp).
  std::vector<float> padded(static_cast<std::size_t>(padded_side * padded_side), 0.0f);
  for (std::int64_t y = 0; y < side; ++y) {
    std::copy_n(mask + y * side, side, padded.data() + (y + 1) * padded_side + 1);
  }
  const auto rows = detail::linear_taps(padded_side, height);
  const auto cols = detail::linear_taps(padded_side, width);
  for (std::int64_t y = 0; y < pasted.height; ++y) {
    const detail::LinearTap& r = rows[static_cast<std::size_t>(pasted.y0 - by0 + y)];
    const float* top = padded.data() + r.index0 * padded_side;
    const float* bottom = padded.data() + r.index1 * padded_side;
    float* out = pasted.probabilities.data() + y * pasted.width;
    for (std::int64_t x = 0; x < pasted.width; ++x) {
      const detail::LinearTap& c = cols[static_cast<std::size_t>(pasted.x0 - bx0 + x)];
      out[x] = static_cast<float>(double(top[c.index0]) * double(r.weight0 * c.weight0) +
                                  double(top[c.index1]) * double(r.weight0 * c.weight1) +
                                  double(bottom[c.index0]) * double(r.weight1 * c.weight0) +
                                  double(bottom[c.index1]) * double(r.weight1 * c.weight1));
    }
  }
  return pasted;
}

}  // namespace fpn::nn
