// The Region Proposal Network at inference, as torchvision 0.14's RegionProposalNetwork
// (models/detection/rpn.py) in eval mode, for one image:
//   head on every level: ConvDepth 3x3 convs + ReLU (RPNHead's conv_depth: 1 in the v1
//   detectors, 2 in the v2 builders), then 1x1 objectness (A) and 1x1 deltas (4A);
//   per level the top pre_nms_top_n anchors by objectness logit; decode against the anchors;
//   sigmoid; clip to the resized image; drop boxes under min_size; keep scores >= score_thresh;
//   NMS per level; keep post_nms_top_n by score.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/anchors.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/box_coder.hpp"
#include "fpn/ops/boxes.hpp"
#include "fpn/ops/index_select.hpp"
#include "fpn/ops/nms.hpp"

namespace fpn::nn {

// torchvision's test-time defaults (fasterrcnn_resnet50_fpn). The anchors are not here: they are
// the model's geometry, fixed at load (RegionProposalNetwork::load, DetectorLoadOptions).
struct RpnParams {
  std::int64_t pre_nms_top_n = 1000;   // per level
  std::int64_t post_nms_top_n = 1000;  // in all
  float nms_thresh = 0.7f;
  float score_thresh = 0.0f;  // on the objectness probability
  float min_size = 1e-3f;     // boxes with a smaller side (resized-image pixels) are dropped
};

// Throws ArgumentError naming the first field out of range ("RpnParams.pre_nms_top_n must be an
// integer >= 1, got -1"); name: how the caller knows these params.
inline void check_params(const RpnParams& params, std::string_view name = "RpnParams") {
  const std::string prefix(name);
  fpn::detail::check_count(prefix + ".pre_nms_top_n", params.pre_nms_top_n, 1);
  fpn::detail::check_count(prefix + ".post_nms_top_n", params.post_nms_top_n, 1);
  fpn::detail::check_in_range(prefix + ".nms_thresh", params.nms_thresh, 0.0f, 1.0f);
  fpn::detail::check_in_range(prefix + ".score_thresh", params.score_thresh, 0.0f, 1.0f);
  fpn::detail::check_at_least(prefix + ".min_size", params.min_size, 0.0f);
}

// Proposals in resized-image pixels, by decreasing objectness.
struct Proposals {
  Tensor<float> boxes;   // [R, 4] (x1, y1, x2, y2)
  Tensor<float> scores;  // [R] objectness probability
  std::vector<std::int64_t> levels;  // 0 = P2 ... 4 = P6
};

namespace detail {

// Stable "top k by decreasing value": ties keep the lower index first, a deliberate order where
// torch.topk leaves it unspecified.
inline std::vector<std::int64_t> top_k_indices(const float* values, std::int64_t count,
                                               std::int64_t k) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  k = std::min(k, count);
  auto by_value = [values](std::int64_t a, std::int64_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), by_value);
  order.resize(static_cast<std::size_t>(k));
  return order;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace detail

template <int Channels, int ConvDepth = 1>
class RegionProposalNetwork {
  static_assert(Channels >= 1, "RegionProposalNetwork: the feature width must be positive");
  static_assert(ConvDepth >= 1, "RegionProposalNetwork: the head needs at least one 3x3 conv (conv_depth >= 1)");

 public:
  static constexpr std::int64_t channels = Channels;
  static constexpr int conv_depth = ConvDepth;

  // rpn: a reader scoped to "rpn.". anchors: one size per pyramid level and the aspect ratios the
  // head was trained with (one objectness logit per ratio), fixed for the network's life.
  static RegionProposalNetwork load(const WeightReader& rpn, const RpnParams& params = {},
                                    const AnchorParams& anchors = {}) {
    check_params(params);
    check_params(anchors, FeaturePyramid::num_levels);
    RegionProposalNetwork net;
    net.params_ = params;
    net.anchors_ = anchors;
    const auto count = static_cast<std::int64_t>(anchors.aspect_ratios.size());
    net.num_anchors_ = count;
    for (std::size_t level = 0; level < FeaturePyramid::num_levels; ++level) {
      net.cell_anchors_[level] = cell_anchors(anchors.sizes[level], anchors.aspect_ratios);
    }
    const WeightReader head = rpn.child("head");
    // Conv2dNormActivation(norm_layer=None) blocks: "conv.<i>.0.{weight,bias}".
    for (std::size_t i = 0; i < net.convs_.size(); ++i) {
      net.convs_[i] = BiasOnly::load(head.child(fpn::detail::numbered("conv.", static_cast<std::int64_t>(i))),
                                     {Channels, Channels, 3, 1, 1, true});
    }
    // The objectness and delta 1x1 convs read the same map: one GEMM computes both.
    try {
      const Conv2d logits = Conv2d::load_with_bias(head, "cls_logits", {Channels, count, 1});
      const Conv2d deltas = Conv2d::load_with_bias(head, "bbox_pred", {Channels, 4 * count, 1});
      net.predictor_ = Conv2d::concatenate(logits, deltas);
    } catch (const WeightError& error) {
      throw WeightError(std::string(error.what()) + " (the RPN head predicts one anchor per aspect ratio; " +
                        std::to_string(count) + " aspect ratios given)");
    }
    return net;
  }

  const RpnParams& params() const { return params_; }
  // Thresholds and counts only: the anchors are the loaded head's (anchors()).
  void set_params(const RpnParams& params) {
    check_params(params);
    params_ = params;
  }
  const AnchorParams& anchors() const { return anchors_; }
  std::int64_t num_anchors() const { return num_anchors_; }

  // pyramid: P2..P6 of one image [1, C, H_l, W_l]; padded_*: the padded input's size (anchor
  // strides are padded size // grid size); image_*: the resized image's size (clip bounds).
  Proposals forward(const FeaturePyramid& pyramid, std::int64_t padded_height,
                    std::int64_t padded_width, std::int64_t image_height,
                    std::int64_t image_width) const {
    if (padded_height < 1 || padded_width < 1 || image_height < 1 || image_width < 1 ||
        image_height > padded_height || image_width > padded_width) {
      fpn::detail::throw_argument_error(
          "RegionProposalNetwork::forward",
          "the image size must be >= 1 and within the padded size, got image " +
              std::to_string(image_height) + "x" + std::to_string(image_width) + " in padded " +
              std::to_string(padded_height) + "x" + std::to_string(padded_width));
    }
    std::vector<float> boxes;
    std::vector<float> scores;
    std::vector<std::int64_t> levels;
    const ops::BoxCoder coder{};
    for (std::size_t level = 0; level < FeaturePyramid::num_levels; ++level) {
      const Tensor<float>& feature = pyramid.levels[level];
      fpn::detail::check_single_image("RegionProposalNetwork::forward",
                                      fpn::detail::numbered("P", static_cast<std::int64_t>(level) + FeaturePyramid::first_level),
                                      feature.shape().dims(), Channels);
      if (feature.dim(2) < 1 || feature.dim(3) < 1 || feature.dim(2) > padded_height ||
          feature.dim(3) > padded_width) {
        fpn::detail::throw_shape_error(
            "RegionProposalNetwork::forward",
            fpn::detail::numbered("P", static_cast<std::int64_t>(level) + FeaturePyramid::first_level),
            "at least 1x1 and at most the padded image's " + std::to_string(padded_height) + "x" +
                std::to_string(padded_width),
            feature.shape().dims());
      }
      const std::int64_t height = feature.dim(2);
      const std::int64_t width = feature.dim(3);
      const std::int64_t pixels = height * width;
      // The last 3x3 conv's map goes straight into the 1x1 heads band by band: its full-size map
      // (as large as P2) never exists. Earlier convs (conv_depth > 1) write whole maps, band by
      // band, so their scratch stays bounded.
      Tensor<float> head = Tensor<float>::uninitialized(
          Shape{1, predictor_.spec().out_channels, height, width});
      Tensor<float> inner;
      for (std::size_t i = 0; i + 1 < convs_.size(); ++i) {
        Tensor<float> next = Tensor<float>::uninitialized(feature.shape());
        const Tensor<float>& source = i == 0 ? feature : inner;
        convs_[i].forward_bands(source,
                                [&](std::int64_t first, std::int64_t rows, const Tensor<float>& band) {
                                  store_band_rows(band, first, rows, next);
                                });
        inner = std::move(next);
      }
      const Tensor<float>& last_input = convs_.size() == 1 ? feature : inner;
      convs_.back().forward_bands(last_input,
                                  [&](std::int64_t first, std::int64_t rows,
                                      const Tensor<float>& band) {
        store_band_rows(predictor_.forward(band), first, rows, head);
      });
      const float* logit_planes = head.data();                        // [A, H, W]
      const float* delta_planes = head.data() + num_anchors_ * pixels;  // [A, 4, H, W]

      // Objectness in torchvision's flattened (y, x, anchor) order.
      std::vector<float> logits(static_cast<std::size_t>(pixels * num_anchors_));
      for (std::int64_t a = 0; a < num_anchors_; ++a) {
        for (std::int64_t p = 0; p < pixels; ++p) {
          logits[static_cast<std::size_t>(p * num_anchors_ + a)] = logit_planes[a * pixels + p];
        }
      }
      const auto top = detail::top_k_indices(logits.data(), static_cast<std::int64_t>(logits.size()),
                                             params_.pre_nms_top_n);
      const Tensor<float>& cell = cell_anchors_[level];
      const std::int64_t stride_height = padded_height / height;
      const std::int64_t stride_width = padded_width / width;
      const auto count = static_cast<std::int64_t>(top.size());
      Tensor<float> anchors = Tensor<float>::uninitialized(Shape{count, 4});
      Tensor<float> codes = Tensor<float>::uninitialized(Shape{count, 4});
      for (std::int64_t i = 0; i < count; ++i) {
        const std::int64_t index = top[static_cast<std::size_t>(i)];
        const std::int64_t a = index % num_anchors_;
        const std::int64_t p = index / num_anchors_;
        const auto shift_x = static_cast<float>(static_cast<std::int32_t>((p % width) * stride_width));
        const auto shift_y = static_cast<float>(static_cast<std::int32_t>((p / width) * stride_height));
        anchors.at(i, 0) = shift_x + cell.at(a, 0);
        anchors.at(i, 1) = shift_y + cell.at(a, 1);
        anchors.at(i, 2) = shift_x + cell.at(a, 2);
        anchors.at(i, 3) = shift_y + cell.at(a, 3);
        for (std::int64_t c = 0; c < 4; ++c) codes.at(i, c) = delta_planes[(a * 4 + c) * pixels + p];
      }
      const Tensor<float> decoded = ops::clip_boxes_to_image(coder.decode(codes, anchors),
                                                             image_height, image_width);
      for (std::int64_t i = 0; i < count; ++i) {
        boxes.insert(boxes.end(), decoded.data() + 4 * i, decoded.data() + 4 * i + 4);
        scores.push_back(detail::sigmoid(logits[static_cast<std::size_t>(top[static_cast<std::size_t>(i)])]));
        levels.push_back(static_cast<std::int64_t>(level));
      }
    }
    return filter(boxes, scores, levels);
  }

 private:
  // clip is done; remove small boxes, threshold, per-level NMS, top post_nms_top_n.
  Proposals filter(const std::vector<float>& boxes, const std::vector<float>& scores,
                   const std::vector<std::int64_t>& levels) const {
    const auto total = static_cast<std::int64_t>(scores.size());
    const TensorView<const float> all_boxes(boxes.data(), Shape{total, 4});
    const TensorView<const float> all_scores(scores.data(), Shape{total});
    std::vector<std::int64_t> candidates;
    for (std::int64_t i : ops::remove_small_boxes(all_boxes, params_.min_size)) {
      if (scores[static_cast<std::size_t>(i)] >= params_.score_thresh) candidates.push_back(i);
    }
    const Tensor<float> kept_boxes = ops::index_select0(all_boxes, candidates);
    const Tensor<float> kept_scores = ops::index_select0(all_scores, candidates);
    const std::vector<std::int64_t> kept_levels = ops::index_select(levels, candidates);
    std::vector<std::int64_t> keep =
        ops::batched_nms(kept_boxes, kept_scores, kept_levels, params_.nms_thresh);
    if (static_cast<std::int64_t>(keep.size()) > params_.post_nms_top_n) {
      keep.resize(static_cast<std::size_t>(params_.post_nms_top_n));
    }
    return {ops::index_select0(kept_boxes, keep), ops::index_select0(kept_scores, keep),
            ops::index_select(kept_levels, keep)};
  }

  RpnParams params_;
  AnchorParams anchors_;
  std::array<Tensor<float>, FeaturePyramid::num_levels> cell_anchors_;  // [A, 4] per level
  std::int64_t num_anchors_ = 3;
  std::array<Conv2d, ConvDepth> convs_;
  Conv2d predictor_;
};

}  // namespace fpn::nn
