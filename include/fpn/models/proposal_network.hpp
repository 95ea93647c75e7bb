// A proposal network: torchvision's GeneralizedRCNNTransform, a backbone and a Region Proposal
// Network, without the second stage. It is what the FPN paper's recall experiment measures
// (Table 1: the RPN on a pyramid against one level, and the pathway's ablations), and the first
// half of every two-stage detector.
//
//   using SeedC4Proposals = ProposalNetwork<SeedC4Backbone, "seed_c4">;   // models/seed.hpp
//
// The file decides the geometry the network was trained with, read from its metadata when there:
// "anchor_sizes" (JSON list of lists, one per level), "aspect_ratios" (JSON list),
// "pre_nms_top_n", "post_nms_top_n", "nms_thresh", "min_size", "max_size"; otherwise the
// backbone's builder anchors (nn::builder_anchors) and torchvision's RPN defaults apply.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/metadata.hpp"
#include "fpn/models/two_stage_detector.hpp"
#include "fpn/nn/anchors.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/nn/rpn.hpp"
#include "fpn/nn/transform.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn {

struct ProposalParams {
  nn::TransformParams transform;
  nn::RpnParams rpn;
};

inline void check_params(const ProposalParams& params, std::string_view name = "ProposalParams") {
  const std::string prefix(name);
  nn::check_params(params.transform, prefix + ".transform");
  nn::check_params(params.rpn, prefix + ".rpn");
}

template <typename Backbone, ArchName Arch = "",
          typename Rpn = nn::RegionProposalNetwork<static_cast<int>(Backbone::out_channels)>>
class ProposalNetwork {
  static_assert(backbone_with_fpn<Backbone>,
                "ProposalNetwork: Backbone must model fpn::backbone_with_fpn, e.g. nn::ResNetFPN<50>");
  static_assert(region_proposal_network<Rpn>,
                "ProposalNetwork: Rpn must model fpn::region_proposal_network");
  static_assert(Rpn::channels == Backbone::out_channels,
                "ProposalNetwork: the RPN head must take the backbone's output width");

 public:
  using backbone_type = Backbone;
  using rpn_type = Rpn;
  // The "arch" metadata a file must carry (when it carries one); empty: not checked.
  static constexpr std::string_view arch = Arch.view();

  // Params from the file's metadata over torchvision's defaults; params given explicitly win.
  // Unless options.allow_unused, a tensor the network does not read is a WeightError (e.g. a
  // detector's roi_heads: load its RPN with allow_unused).
  static ProposalNetwork load(const nn::WeightReader& weights, const nn::LoadOptions& options = {}) {
    return load_with(weights, std::nullopt, options);
  }
  static ProposalNetwork load(const nn::WeightReader& weights, const ProposalParams& params,
                              const nn::LoadOptions& options = {}) {
    return load_with(weights, params, options);
  }
  static ProposalNetwork load(const std::filesystem::path& path, const nn::LoadOptions& options = {}) {
    const io::SafeTensors file = io::SafeTensors::open(path);
    return load_with(nn::WeightReader(file), std::nullopt, options);
  }

  const ProposalParams& params() const { return params_; }
  const ProposalParams& default_params() const { return default_params_; }
  void set_params(const ProposalParams& params) {
    check_params(params);
    rpn_.set_params(params.rpn);
    params_ = params;
  }
  const nn::AnchorParams& anchors() const { return rpn_.anchors(); }
  const Backbone& backbone() const { return backbone_; }
  const Rpn& rpn() const { return rpn_; }

  // Proposals of an 8-bit RGB image in its own pixels, by decreasing objectness.
  nn::Proposals propose(nn::ImageView image) const {
    nn::PreprocessedImage input = nn::preprocess(image, params_.transform);
    const nn::FeaturePyramid pyramid = backbone_.forward(input.tensor);
    nn::Proposals proposals = propose(pyramid, input);
    to_original(proposals.boxes, input);
    return proposals;
  }

  // The stages on their own: proposals in the resized image's pixels.
  nn::Proposals propose(const nn::FeaturePyramid& pyramid, const nn::PreprocessedImage& image) const {
    detail::check_single_image("ProposalNetwork::propose", "image.tensor", image.tensor.shape().dims(), 3);
    return rpn_.forward(pyramid, image.tensor.dim(2), image.tensor.dim(3), image.resized_height,
                        image.resized_width);
  }

  // Boxes on the resized image [R, 4] -> the original image's pixels, as torchvision's
  // resize_boxes (float32 ratios, one multiply per coordinate).
  static void to_original(Tensor<float>& boxes, const nn::PreprocessedImage& image) {
    const float ratio_height = image.ratio_height(), ratio_width = image.ratio_width();
    for (std::int64_t i = 0; i < boxes.dim(0); ++i) {
      boxes.at(i, 0) *= ratio_width;
      boxes.at(i, 1) *= ratio_height;
      boxes.at(i, 2) *= ratio_width;
      boxes.at(i, 3) *= ratio_height;
    }
  }

 private:
  ProposalNetwork() = default;

  static ProposalNetwork load_with(const nn::WeightReader& weights,
                                   const std::optional<ProposalParams>& given,
                                   const nn::LoadOptions& options) {
    const nn::WeightSource& source = weights.source();
    if (options.check_arch) detail::check_arch(source, arch);
    ProposalNetwork net;
    detail::metadata_transform_sizes(source, net.default_params_.transform);
    nn::RpnParams& rpn = net.default_params_.rpn;
    constexpr std::int64_t count_limit = std::int64_t{1} << 24;
    rpn.pre_nms_top_n = detail::metadata_integer(source, "pre_nms_top_n", 1, count_limit).value_or(rpn.pre_nms_top_n);
    rpn.post_nms_top_n = detail::metadata_integer(source, "post_nms_top_n", 1, count_limit).value_or(rpn.post_nms_top_n);
    rpn.nms_thresh = static_cast<float>(
        detail::metadata_number(source, "nms_thresh", 0.0, 1.0).value_or(rpn.nms_thresh));
    net.params_ = given.value_or(net.default_params_);
    check_params(net.params_);

    nn::AnchorParams anchors = Backbone::default_anchors();
    if (const auto sizes = detail::metadata_number_lists(source, "anchor_sizes")) {
      anchors.sizes.clear();
      for (const std::vector<double>& level : *sizes) anchors.sizes.emplace_back(level.begin(), level.end());
    }
    if (const auto ratios = detail::metadata_numbers(source, "aspect_ratios")) {
      anchors.aspect_ratios.assign(ratios->begin(), ratios->end());
    }
    if (anchors.sizes.size() != Backbone::num_levels) {
      throw WeightError(source.describe() + ": metadata anchor_sizes is for " +
                        std::to_string(anchors.sizes.size()) + " pyramid levels, this network has " +
                        std::to_string(Backbone::num_levels));
    }
    try {
      nn::check_params(anchors, Backbone::num_levels, "anchors");
    } catch (const ArgumentError& error) {
      throw WeightError(source.describe() + ": metadata " + error.what());
    }

    net.backbone_ = detail::load_model_backbone<Backbone>(weights);
    net.rpn_ = Rpn::load(weights.child("rpn"), net.params_.rpn, anchors);
    if (!options.allow_unused) {
      weights.check_all_read(arch.empty() ? std::string_view("the proposal network") : arch);
    }
    return net;
  }

  ProposalParams params_;
  ProposalParams default_params_;
  Backbone backbone_;
  Rpn rpn_;
};

}  // namespace fpn
