// ConvFCBoxHead: torchvision's FastRCNNConvFCHead (models/detection/faster_rcnn.py, the v2
// builders' box head) + FastRCNNPredictor + postprocess_detections:
//   NumConvs x (3x3 conv + norm + ReLU) over the 7x7 pooled features, flatten, one FC of
//   Representation + ReLU, then class logits and per-class deltas.
// torchvision's Sequential names its layers by index: the conv blocks "box_head.<i>.{0,1}"
// (i < NumConvs), the Flatten NumConvs, the FC "box_head.<NumConvs + 1>".
//
//   ConvFCBoxHead<256>  // fasterrcnn_resnet50_fpn_v2: [256] * 4 convs with BatchNorm2d, [1024]
//
// The convs run on a whole chunk of ROIs at once ([R, C, 7, 7], one batched conv each, which
// ops::conv2d's Winograd path tiles across the batch), never ROI by ROI.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/roi_heads.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn::nn {

template <int Channels, int ConvChannels = 256, int NumConvs = 4, int Representation = 1024,
          typename Norm = FoldedBatchNorm>
class ConvFCBoxHead {
  static_assert(Channels >= 1 && ConvChannels >= 1 && Representation >= 1,
                "ConvFCBoxHead: the input, conv and representation widths must be positive");
  static_assert(NumConvs >= 1, "ConvFCBoxHead: needs at least one conv block (else use BoxHead)");
  static_assert(block_norm<Norm>,
                "ConvFCBoxHead: Norm must be a norm policy (nn::block_norm, e.g. nn::BiasOnly, "
                "nn::FoldedBatchNorm or nn::GroupNorm<32>) with a static load(const "
                "WeightReader&, ConvSpec) returning a conv block");

 public:
  static constexpr std::int64_t in_channels = Channels;
  static constexpr std::int64_t pool_size = 7;
  static constexpr int num_convs = NumConvs;
  using norm_type = Norm;

  // roi_heads: a reader scoped to "roi_heads.".
  static ConvFCBoxHead load(const WeightReader& roi_heads, std::int64_t num_classes) {
    ConvFCBoxHead head;
    std::int64_t in = Channels;
    for (std::size_t i = 0; i < head.convs_.size(); ++i) {
      head.convs_[i] = Norm::load(roi_heads.child(fpn::detail::numbered("box_head.", static_cast<std::int64_t>(i))),
                                  {in, ConvChannels, 3, 1, 1, ops::Activation::relu});
      in = ConvChannels;
    }
    head.fc_ = Linear::load(roi_heads, fpn::detail::numbered("box_head.", NumConvs + 1),
                            ConvChannels * pool_size * pool_size, Representation);
    head.predictor_ = BoxPredictor::load(roi_heads, Representation, num_classes);
    return head;
  }

  std::int64_t num_classes() const { return predictor_.num_classes(); }

  // pooled: [R, C, 7, 7] ROI features; returns class logits [R, K] and deltas [R, 4K].
  std::pair<Tensor<float>, Tensor<float>> predict(const Tensor<float>& pooled) const {
    if (pooled.rank() != 4 || pooled.dim(1) != Channels || pooled.dim(2) != pool_size ||
        pooled.dim(3) != pool_size) {
      fpn::detail::throw_shape_error("ConvFCBoxHead::predict", "pooled",
                                     "[R, " + std::to_string(Channels) + ", 7, 7]",
                                     pooled.shape().dims());
    }
    Tensor<float> x = convs_[0].forward(pooled);
    for (std::size_t i = 1; i < convs_.size(); ++i) x = convs_[i].forward(x);
    const std::int64_t rows = x.dim(0);
    const TensorView<const float> flat(x.data(), Shape{rows, ConvChannels * pool_size * pool_size});
    return predictor_.forward(fc_.forward(flat, ops::Activation::relu));
  }

  // proposals: [R, 4]; image_*: the resized image's size. Detections by decreasing score.
  BoxDetections postprocess(const Tensor<float>& logits, const Tensor<float>& deltas,
                            const Tensor<float>& proposals, std::int64_t image_height,
                            std::int64_t image_width, const RoiHeadsParams& params) const {
    return predictor_.postprocess(logits, deltas, proposals, image_height, image_width, params,
                                  "ConvFCBoxHead::postprocess");
  }

  const norm_block_t<Norm>& conv(std::size_t index) const { return convs_[index]; }

 private:
  std::array<norm_block_t<Norm>, NumConvs> convs_;
  Linear fc_;
  BoxPredictor predictor_;
};

}  // namespace fpn::nn
