// The FPN paper's segment-proposal network (Lin et al. 2017, section 6.1, after DeepMask) at
// inference, as tools/fpn_tools/seed_models.py's SegmentHead and select_segments for one image:
//   on every pyramid level, one small MLP per window size k, run fully convolutionally:
//     hidden = ReLU(Conv2d(C, Hidden, k, padding k / 2)); objectness = Conv2d(Hidden, 1, 1);
//     mask logits = Conv2d(Hidden, M * M, 1), channel r * M + c the logit of mask cell (r, c);
//   the output at (y, x) of a level of nominal stride s is about the square window of side k s
//   centred at ((x + 0.5) s, (y + 0.5) s) in the resized image;
//   per level and window size the top pre_nms_top_n locations by objectness logit; each one's box
//   is the box of its mask (the cells with logit > 0 mapped linearly into the window), clipped to
//   the image; empty masks and boxes thinner than min_size are dropped; score = sigmoid;
//   one box NMS over all levels and window sizes; top post_nms_top_n.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/models/detections.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/nn/roi_heads.hpp"
#include "fpn/nn/rpn.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/boxes.hpp"
#include "fpn/ops/index_select.hpp"
#include "fpn/ops/nms.hpp"

namespace fpn::nn {

// The window sizes of a segment head, in input feature cells (seed_models.WINDOWS: 5 and 7, half
// an octave apart), in the order of their groups.
template <int... Sizes>
struct WindowSizes {
  static_assert(sizeof...(Sizes) >= 1, "WindowSizes: the head needs at least one window size");
  static_assert(((Sizes >= 1 && Sizes % 2 == 1) && ...),
                "WindowSizes: window sizes must be odd (a k x k conv with padding k / 2 keeps the "
                "map's size only for odd k)");
  static constexpr std::size_t count = sizeof...(Sizes);
  static constexpr std::array<int, sizeof...(Sizes)> sizes{Sizes...};
};

// seed_models.py's test-time values.
struct SegmentProposalParams {
  std::int64_t pre_nms_top_n = 1000;   // per level and window size (PRE_NMS_PER_GROUP)
  std::int64_t post_nms_top_n = 1000;  // in all (POST_NMS_TOP_N)
  float nms_thresh = 0.7f;             // box IoU, over all levels and window sizes
  float min_size = 1e-3f;              // thinner mask boxes (resized-image pixels) are dropped
};

// Throws ArgumentError naming the first field out of range ("SegmentProposalParams.nms_thresh
// must be a number in [0, 1], got 2"); name: how the caller knows these params.
inline void check_params(const SegmentProposalParams& params,
                         std::string_view name = "SegmentProposalParams") {
  const std::string prefix(name);
  fpn::detail::check_count(prefix + ".pre_nms_top_n", params.pre_nms_top_n, 1);
  fpn::detail::check_count(prefix + ".post_nms_top_n", params.post_nms_top_n, 1);
  fpn::detail::check_in_range(prefix + ".nms_thresh", params.nms_thresh, 0.0f, 1.0f);
  fpn::detail::check_at_least(prefix + ".min_size", params.min_size, 0.0f);
}

// Segment proposals in resized-image pixels, by decreasing score.
struct SegmentProposals {
  Tensor<float> boxes;               // [K, 4] the boxes of the masks (x1, y1, x2, y2)
  Tensor<float> scores;              // [K] objectness probability
  Tensor<float> windows;             // [K, 4] the windows the masks are about
  Tensor<float> mask_logits;         // [K, M, M]
  std::vector<std::int64_t> groups;  // level * number of window sizes + window size index
};

namespace detail {

// The box of the cells of an M x M mask with logit > 0, mapped into `window`, as
// seed_models.mask_boxes computes it in float32: x1 + c * ((x2 - x1) / M). Returns false for an
// empty mask. The product is rounded to float before the sum (it is exact in double), so that no
// compiler contracts the two into one fused multiply-add that torch does not do.
inline bool mask_box(const float* logits, std::int64_t side, const std::array<float, 4>& window,
                     std::array<float, 4>& box) {
  std::int64_t row_min = side, row_max = -1, column_min = side, column_max = -1;
  for (std::int64_t r = 0; r < side; ++r) {
    for (std::int64_t c = 0; c < side; ++c) {
      if (logits[r * side + c] > 0.0f) {
        row_min = std::min(row_min, r);
        row_max = std::max(row_max, r);
        column_min = std::min(column_min, c);
        column_max = std::max(column_max, c);
      }
    }
  }
  if (row_max < 0) return false;
  const float cell_width = (window[2] - window[0]) / static_cast<float>(side);
  const float cell_height = (window[3] - window[1]) / static_cast<float>(side);
  const auto offset = [](std::int64_t cells, float cell) {
    return static_cast<float>(static_cast<double>(cells) * static_cast<double>(cell));
  };
  box = {window[0] + offset(column_min, cell_width), window[1] + offset(row_min, cell_height),
         window[0] + offset(column_max + 1, cell_width),
         window[1] + offset(row_max + 1, cell_height)};
  return true;
}

}  // namespace detail

// The head, its weights under "segment_head.window<k>.{hidden,objectness,mask_logits}".
// Channels: the pyramid's width; Hidden: the MLP's hidden width; MaskSize: the masks' side.
template <int Channels, int Hidden = 128, int MaskSize = 14, typename Windows = WindowSizes<5, 7>>
class SegmentProposalHead {
  static_assert(Channels >= 1, "SegmentProposalHead: the feature width must be positive");
  static_assert(Hidden >= 1, "SegmentProposalHead: the hidden width must be positive");
  static_assert(MaskSize >= 1, "SegmentProposalHead: the mask side must be positive");

 public:
  static constexpr std::int64_t channels = Channels;
  static constexpr std::int64_t hidden_channels = Hidden;
  static constexpr std::int64_t mask_size = MaskSize;
  static constexpr std::size_t num_windows = Windows::count;
  static constexpr std::array<int, Windows::count> window_sizes = Windows::sizes;

  // segment_head: a reader scoped to "segment_head".
  static SegmentProposalHead load(const WeightReader& segment_head,
                                  const SegmentProposalParams& params = {}) {
    check_params(params);
    SegmentProposalHead head;
    head.params_ = params;
    for (std::size_t w = 0; w < num_windows; ++w) {
      const int k = window_sizes[w];
      const WeightReader mlp = segment_head.child(fpn::detail::numbered("window", k));
      head.hidden_[w] = Conv2d::load_with_bias(
          mlp, "hidden", {Channels, Hidden, k, 1, k / 2, ops::Activation::relu});
      // Both 1x1 convs read the hidden map: one GEMM, objectness in channel 0, then the mask.
      head.predictor_[w] = Conv2d::concatenate(
          Conv2d::load_with_bias(mlp, "objectness", {Hidden, 1, 1}),
          Conv2d::load_with_bias(mlp, "mask_logits", {Hidden, mask_size * mask_size, 1}));
    }
    return head;
  }

  const SegmentProposalParams& params() const { return params_; }
  void set_params(const SegmentProposalParams& params) {
    check_params(params);
    params_ = params;
  }

  // The MLP of window size index `window` over one level, fully convolutionally.
  // feature: [1, Channels, H, W]; returns [1, 1 + M * M, H, W]: the objectness logit, then the
  // M * M mask logits (SegmentHead's two outputs, concatenated).
  Tensor<float> forward_level(const Tensor<float>& feature, std::size_t window) const {
    if (window >= num_windows) {
      fpn::detail::throw_argument_error("SegmentProposalHead::forward_level",
                                        "window index must be < " + std::to_string(num_windows) +
                                            ", got " + std::to_string(window));
    }
    fpn::detail::check_single_image("SegmentProposalHead::forward_level", "feature",
                                    feature.shape().dims(), Channels);
    return predictor_[window].forward(hidden_[window].forward(feature));
  }

  // pyramid: one image's levels [1, Channels, H_l, W_l], every one of which proposes, at its
  // nominal stride (pyramid.strides: 4 .. 64 on P2 .. P6, not the padded size // grid size);
  // image_*: the resized image's size (clip bounds).
  SegmentProposals forward(const FeaturePyramid& pyramid, std::int64_t image_height,
                           std::int64_t image_width) const {
    constexpr std::string_view where = "SegmentProposalHead::forward";
    if (image_height < 1 || image_width < 1) {
      fpn::detail::throw_argument_error(where, "the image size must be >= 1, got " +
                                                   std::to_string(image_height) + "x" +
                                                   std::to_string(image_width));
    }
    if (pyramid.empty()) fpn::detail::throw_argument_error(where, "the pyramid has no levels");
    pyramid.check(where, Channels);
    constexpr std::int64_t cells = mask_size * mask_size;
    std::vector<float> boxes, scores, windows, masks;
    std::vector<std::int64_t> groups;
    for (std::size_t level = 0; level < pyramid.size(); ++level) {
      const std::int64_t stride = pyramid.strides[level];
      if (stride < 1 || stride > (std::int64_t{1} << 16)) {
        fpn::detail::throw_argument_error(where, "level " + pyramid.names[level] + " has stride " +
                                                     std::to_string(stride) +
                                                     ", expected one in [1, 65536]");
      }
      const Tensor<float>& feature = pyramid.levels[level];
      const std::int64_t width = feature.dim(3);
      const std::int64_t pixels = feature.dim(2) * width;
      for (std::size_t w = 0; w < num_windows; ++w) {
        const Tensor<float> head = forward_level(feature, w);
        const float* objectness = head.data();
        const float* logits = head.data() + pixels;  // [M * M, H * W]
        const float half = static_cast<float>(window_sizes[w] * stride) * 0.5f;
        const auto s = static_cast<float>(stride);
        std::vector<float> mask(static_cast<std::size_t>(cells));
        for (const std::int64_t p :
             detail::top_k_indices(objectness, pixels, params_.pre_nms_top_n)) {
          for (std::int64_t c = 0; c < cells; ++c)
            mask[static_cast<std::size_t>(c)] = logits[c * pixels + p];
          const float centre_x = (static_cast<float>(p % width) + 0.5f) * s;
          const float centre_y = (static_cast<float>(p / width) + 0.5f) * s;
          const std::array<float, 4> window{centre_x - half, centre_y - half, centre_x + half,
                                            centre_y + half};
          std::array<float, 4> box{};
          if (!detail::mask_box(mask.data(), mask_size, window, box)) continue;
          boxes.insert(boxes.end(), box.begin(), box.end());
          windows.insert(windows.end(), window.begin(), window.end());
          masks.insert(masks.end(), mask.begin(), mask.end());
          scores.push_back(detail::sigmoid(objectness[p]));
          groups.push_back(static_cast<std::int64_t>(level * num_windows + w));
        }
      }
    }
    const auto total = static_cast<std::int64_t>(scores.size());
    const Tensor<float> clipped = ops::clip_boxes_to_image(
        TensorView<const float>(boxes.data(), Shape{total, 4}), image_height, image_width);
    const std::vector<std::int64_t> large = ops::remove_small_boxes(clipped, params_.min_size);
    const Tensor<float> kept_boxes = ops::index_select0(clipped, large);
    const Tensor<float> kept_scores =
        ops::index_select0(TensorView<const float>(scores.data(), Shape{total}), large);
    std::vector<std::int64_t> keep = ops::nms(kept_boxes, kept_scores, params_.nms_thresh);
    if (static_cast<std::int64_t>(keep.size()) > params_.post_nms_top_n) {
      keep.resize(static_cast<std::size_t>(params_.post_nms_top_n));
    }
    // Indices into the candidates before the small-box filter.
    std::vector<std::int64_t> chosen;
    chosen.reserve(keep.size());
    for (const std::int64_t i : keep) chosen.push_back(large[static_cast<std::size_t>(i)]);
    SegmentProposals result;
    result.boxes = ops::index_select0(kept_boxes, keep);
    result.scores = ops::index_select0(kept_scores, keep);
    result.windows =
        ops::index_select0(TensorView<const float>(windows.data(), Shape{total, 4}), chosen);
    result.mask_logits = ops::index_select0(
        TensorView<const float>(masks.data(), Shape{total, mask_size, mask_size}), chosen);
    result.groups = ops::index_select(groups, chosen);
    return result;
  }

 private:
  SegmentProposalParams params_;
  std::array<Conv2d, Windows::count> hidden_;
  std::array<Conv2d, Windows::count> predictor_;
};

// seed_models.paste_segment_masks for one proposal: sigmoid of its M x M mask logits pasted into
// its window as torchvision's paste_masks_in_image pastes Mask R-CNN's masks (nn::paste_mask);
// `> 0.5` of the result (PastedMask::binary) is the reference's mask. window: original-image
// pixels. A window wholly beyond the image's right or bottom edge gives an empty mask at (0, 0).
inline PastedMask paste_segment_mask(const float* mask_logits, std::int64_t side,
                                     const std::array<float, 4>& window, std::int64_t image_height,
                                     std::int64_t image_width) {
  if (side < 1 || image_height < 1 || image_width < 1) {
    fpn::detail::throw_argument_error(
        "paste_segment_mask", "the mask side and the image size must be >= 1, got side " +
                                  std::to_string(side) + " and image " +
                                  std::to_string(image_height) + "x" + std::to_string(image_width));
  }
  std::vector<float> probabilities(static_cast<std::size_t>(side * side));
  for (std::size_t i = 0; i < probabilities.size(); ++i) {
    probabilities[i] = detail::sigmoid(mask_logits[i]);
  }
  PastedMask pasted = paste_mask(probabilities.data(), side, window, image_height, image_width);
  if (pasted.width == 0 || pasted.height == 0) pasted = PastedMask{};
  return pasted;
}

}  // namespace fpn::nn
