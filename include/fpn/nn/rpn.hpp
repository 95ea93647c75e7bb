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
#include <functional>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/anchors.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/feature_pyramid.hpp"
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
  std::vector<std::int64_t> levels;  // the pyramid level (index) each came from
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

// A 3x3, stride-1, padding-1 conv over a map that arrives in bands of rows, top to bottom: each
// push hands over the next input rows; output rows are passed on as soon as the input rows on
// both sides of them have arrived. Bands follow Conv2d::forward_bands' convention, in and out:
// band [1, C, >= rows + 2, W] whose rows 1 .. rows are map rows first .. first + rows - 1.
// Each push convolves its rows and the two carried from the last push (the row above and the
// last row, whose output needed this push's first row): two scratch rows per band, as
// forward_bands computes.
class ConvRowStream {
 public:
  using Output = std::function<void(std::int64_t first, std::int64_t rows, const Tensor<float>& band)>;

  ConvRowStream(const Conv2d& conv, std::int64_t height) : conv_(&conv), height_(height) {}

  void set_output(Output output) { output_ = std::move(output); }

  void push(std::int64_t first, std::int64_t rows, const Tensor<float>& band) {
    if (first != received_ || rows < 1 || first + rows > height_ || band.rank() != 4 ||
        band.dim(0) != 1 || band.dim(2) < rows + 2) {
      fpn::detail::throw_argument_error(
          "ConvRowStream::push", "rows must arrive in order, " + std::to_string(received_) +
                                     " next of " + std::to_string(height_) + ", got rows " +
                                     std::to_string(first) + " .. " + std::to_string(first + rows));
    }
    const std::int64_t channels = band.dim(1), width = band.dim(3);
    if (carry_rows_ == 0) {  // the zero padding above row 0
      carry_ = Tensor<float>(Shape{1, channels, 2, width});
      carry_rows_ = 1;
    }
    const bool last = first + rows == height_;
    // x: input rows next_ - 1 .. first + rows - 1, then zero padding below the last row.
    const std::int64_t length = carry_rows_ + rows + (last ? 1 : 0);
    Tensor<float> x = Tensor<float>::uninitialized(Shape{1, channels, length, width});
    const std::int64_t band_plane = band.dim(2) * width;
    for (std::int64_t c = 0; c < channels; ++c) {
      float* plane = x.data() + c * length * width;
      std::copy_n(carry_.data() + c * 2 * width, carry_rows_ * width, plane);
      std::copy_n(band.data() + c * band_plane + width, rows * width, plane + carry_rows_ * width);
      if (last) std::fill_n(plane + (length - 1) * width, width, 0.0f);
    }
    const Tensor<float> y = conv_->forward(x);
    const std::int64_t produced = length - 2;  // y's rows 1 .. produced are output rows next_ ..
    if (produced > 0) output_(next_, produced, y);
    next_ += produced;
    received_ = first + rows;
    if (!last) {
      for (std::int64_t c = 0; c < channels; ++c) {
        std::copy_n(x.data() + (c * length + length - 2) * width, 2 * width,
                    carry_.data() + c * 2 * width);
      }
      carry_rows_ = 2;
    }
  }

 private:
  const Conv2d* conv_;
  std::int64_t height_;
  Output output_;
  Tensor<float> carry_;         // [1, C, 2, W]: input rows next_ - 1 (and next_)
  std::int64_t carry_rows_ = 0;
  std::int64_t next_ = 0;       // the next output row
  std::int64_t received_ = 0;   // input rows received
};

}  // namespace detail

template <int Channels, int ConvDepth = 1>
class RegionProposalNetwork {
  static_assert(Channels >= 1, "RegionProposalNetwork: the feature width must be positive");
  static_assert(ConvDepth >= 1, "RegionProposalNetwork: the head needs at least one 3x3 conv (conv_depth >= 1)");

 public:
  static constexpr std::int64_t channels = Channels;
  static constexpr int conv_depth = ConvDepth;

  // rpn: a reader scoped to "rpn.". anchors: the sizes of each pyramid level (as many levels as
  // the pyramids it will run on) and the aspect ratios the head was trained with (one objectness
  // logit per anchor of a cell), fixed for the network's life.
  static RegionProposalNetwork load(const WeightReader& rpn, const RpnParams& params = {},
                                    const AnchorParams& anchors = {}) {
    check_params(params);
    if (anchors.sizes.empty()) {
      fpn::detail::throw_invalid_field("AnchorParams.sizes", "at least one pyramid level", "none");
    }
    check_params(anchors, anchors.sizes.size());
    RegionProposalNetwork net;
    net.params_ = params;
    net.anchors_ = anchors;
    const std::int64_t count = anchors.per_cell();
    net.num_anchors_ = count;
    for (const std::vector<float>& sizes : anchors.sizes) {
      net.cell_anchors_.push_back(cell_anchors(sizes, anchors.aspect_ratios));
    }
    const WeightReader head = rpn.child("head");
    // Conv2dNormActivation(norm_layer=None) blocks: "conv.<i>.0.{weight,bias}".
    for (std::size_t i = 0; i < net.convs_.size(); ++i) {
      net.convs_[i] = BiasOnly::load(head.child(fpn::detail::numbered("conv.", static_cast<std::int64_t>(i))),
                                     {Channels, Channels, 3, 1, 1, ops::Activation::relu});
    }
    // The objectness and delta 1x1 convs read the same map: one GEMM computes both.
    try {
      const Conv2d logits = Conv2d::load_with_bias(head, "cls_logits", {Channels, count, 1});
      const Conv2d deltas = Conv2d::load_with_bias(head, "bbox_pred", {Channels, 4 * count, 1});
      net.predictor_ = Conv2d::concatenate(logits, deltas);
    } catch (const WeightError& error) {
      throw WeightError(std::string(error.what()) +
                        " (the RPN head predicts one objectness per anchor of a cell; the anchors give " +
                        std::to_string(count) + ")");
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

  // pyramid: one image's levels [1, C, H_l, W_l], as many as the anchors' (every level of the
  // pyramid proposes, as in torchvision); padded_*: the padded input's size (anchor
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
    if (pyramid.size() != cell_anchors_.size()) {
      fpn::detail::throw_argument_error(
          "RegionProposalNetwork::forward",
          "the anchors are for " + std::to_string(cell_anchors_.size()) + " pyramid levels, got " +
              std::to_string(pyramid.size()) + " levels " + pyramid.describe_names());
    }
    pyramid.check("RegionProposalNetwork::forward", Channels);
    std::vector<float> boxes;
    std::vector<float> scores;
    std::vector<std::int64_t> levels;
    const ops::BoxCoder coder{};
    for (std::size_t level = 0; level < pyramid.size(); ++level) {
      const Tensor<float>& feature = pyramid.levels[level];
      if (feature.dim(2) < 1 || feature.dim(3) < 1 || feature.dim(2) > padded_height ||
          feature.dim(3) > padded_width) {
        std::string what = "level ";
        what += pyramid.names[level];
        fpn::detail::throw_shape_error(
            "RegionProposalNetwork::forward", what,
            "at least 1x1 and at most the padded image's " + std::to_string(padded_height) + "x" +
                std::to_string(padded_width),
            feature.shape().dims());
      }
      const std::int64_t height = feature.dim(2);
      const std::int64_t width = feature.dim(3);
      const std::int64_t pixels = height * width;
      // The 3x3 convs' maps stream band by band: the first conv's bands (Conv2d::forward_bands)
      // feed the next conv's rows as soon as their neighbours exist (detail::ConvRowStream), and
      // the last conv's rows go straight into the 1x1 heads. No 3x3 conv's full-size map (as
      // large as the finest level) is ever held, whatever the head's depth.
      Tensor<float> head = Tensor<float>::uninitialized(
          Shape{1, predictor_.spec().out_channels, height, width});
      std::vector<detail::ConvRowStream> streams;
      streams.reserve(convs_.size() - 1);
      for (std::size_t i = 1; i < convs_.size(); ++i) streams.emplace_back(convs_[i], height);
      const auto to_heads = [&](std::int64_t first, std::int64_t rows, const Tensor<float>& band) {
        store_band_rows(predictor_.forward(band), first, rows, head);
      };
      for (std::size_t i = 0; i < streams.size(); ++i) {
        if (i + 1 < streams.size()) {
          detail::ConvRowStream* next = &streams[i + 1];
          streams[i].set_output([next](std::int64_t first, std::int64_t rows, const Tensor<float>& band) {
            next->push(first, rows, band);
          });
        } else {
          streams[i].set_output(to_heads);
        }
      }
      convs_.front().forward_bands(feature, [&](std::int64_t first, std::int64_t rows,
                                                const Tensor<float>& band) {
        if (streams.empty()) {
          to_heads(first, rows, band);
        } else {
          streams.front().push(first, rows, band);
        }
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
  std::vector<Tensor<float>> cell_anchors_;  // [A, 4] per level
  std::int64_t num_anchors_ = 3;
  std::array<Conv2d, ConvDepth> convs_;
  Conv2d predictor_;
};

}  // namespace fpn::nn
