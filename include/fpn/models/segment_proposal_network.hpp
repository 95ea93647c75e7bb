// SegmentProposalNetwork: the FPN paper's segment proposals end to end (tools/fpn_tools/
// seed_models.py's SegmentProposer in eval mode), composed at compile time from a backbone with
// FPN and a segment head (nn::SegmentProposalHead), behind torchvision's
// GeneralizedRCNNTransform:
//
//   using SeedSegments = SegmentProposalNetwork<SeedFPNBackbone, nn::SegmentProposalHead<64>,
//                                               "seed_segments">;   // models/seed.hpp
//
// Proposals come back in original-image pixels, by decreasing score; their masks are pasted only
// when asked for (Segments::mask), as a thousand full-image masks would not fit in memory.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/detail/json.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/detections.hpp"
#include "fpn/models/metadata.hpp"
#include "fpn/models/two_stage_detector.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/nn/segment_proposals.hpp"
#include "fpn/nn/transform.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn {

// The run-time settings of a loaded segment-proposal network.
struct SegmentNetworkParams {
  nn::TransformParams transform;
  nn::SegmentProposalParams segments;
};

// Throws ArgumentError naming the first field out of range, by its path from `name`.
inline void check_params(const SegmentNetworkParams& params,
                         std::string_view name = "SegmentNetworkParams") {
  const std::string prefix(name);
  nn::check_params(params.transform, prefix + ".transform");
  nn::check_params(params.segments, prefix + ".segments");
}

// One proposal in original-image pixels.
struct Segment {
  std::array<float, 4> box{};     // (x1, y1, x2, y2): the box of its mask
  std::array<float, 4> window{};  // the window its mask was predicted in
  float score = 0.0f;             // objectness probability
  std::int64_t group = 0;         // level * number of window sizes + window size index
};

struct Segments {
  std::int64_t image_height = 0;
  std::int64_t image_width = 0;
  std::vector<Segment> items;  // by decreasing score
  Tensor<float> mask_logits;   // [K, M, M], row i the mask of items[i]

  // Segment i's mask probabilities pasted into the original image (nn::paste_segment_mask);
  // mask(i).binary(image_height, image_width) is the 0/1 mask.
  PastedMask mask(std::size_t index) const {
    if (index >= items.size() || mask_logits.rank() != 3 ||
        mask_logits.dim(0) != static_cast<std::int64_t>(items.size())) {
      detail::throw_argument_error("Segments::mask",
                                   "index must be < " + std::to_string(items.size()) +
                                       " with one M x M mask per segment, got index " +
                                       std::to_string(index) + " and masks " +
                                       format_shape(mask_logits.shape().dims()));
    }
    const std::int64_t side = mask_logits.dim(1);
    return nn::paste_segment_mask(
        mask_logits.data() + static_cast<std::int64_t>(index) * side * side, side,
        items[index].window, image_height, image_width);
  }
};

// A segment head for a pyramid of width `channels`.
template <typename T>
concept segment_head = requires(const nn::WeightReader& reader, const T& head, T& editable,
                                const nn::FeaturePyramid& pyramid,
                                const nn::SegmentProposalParams& params) {
  { T::channels } -> std::convertible_to<std::int64_t>;
  { T::mask_size } -> std::convertible_to<std::int64_t>;
  { T::load(reader, params) } -> std::same_as<T>;
  { head.forward(pyramid, std::int64_t{}, std::int64_t{}) } -> std::same_as<nn::SegmentProposals>;
  editable.set_params(params);
};

template <typename Backbone, typename Head, ArchName Arch = "">
class SegmentProposalNetwork {
  static_assert(backbone_with_fpn<Backbone>,
                "SegmentProposalNetwork: Backbone must model fpn::backbone_with_fpn, e.g. "
                "nn::BackboneWithFPN<Body, Neck>");
  static_assert(segment_head<Head>,
                "SegmentProposalNetwork: Head must model fpn::segment_head (static channels and "
                "mask_size, load(reader, params), forward(pyramid, height, width), set_params), "
                "e.g. nn::SegmentProposalHead<64>");
  static_assert(Head::channels == Backbone::out_channels,
                "SegmentProposalNetwork: the head's width must be the backbone's out_channels");

 public:
  using backbone_type = Backbone;
  using head_type = Head;
  // The "arch" metadata a file must carry (when it carries one); empty: not checked.
  static constexpr std::string_view arch = Arch.view();

  // Loads the weights with the default params: seed_models.py's, with the transform's
  // min_size, max_size, image_mean and image_std from the file's metadata when it records them.
  // Metadata read also: "strides" (the levels' nominal strides the head was trained at: the
  // pyramid's must equal them, checked at forward) and "frozen_bn_eps" (WeightReader). Unless
  // options.allow_unused, a tensor of the file that the network does not read is a WeightError.
  static SegmentProposalNetwork load(const nn::WeightReader& weights,
                                     const nn::LoadOptions& options = {}) {
    return load_with(weights, std::nullopt, options);
  }
  // As above with params used exactly as given, the file's transform metadata ignored.
  static SegmentProposalNetwork load(const nn::WeightReader& weights,
                                     const SegmentNetworkParams& params,
                                     const nn::LoadOptions& options = {}) {
    return load_with(weights, params, options);
  }
  static SegmentProposalNetwork load(const std::filesystem::path& path,
                                     const nn::LoadOptions& options = {}) {
    const io::SafeTensors file = io::SafeTensors::open(path);
    return load_with(nn::WeightReader(file), std::nullopt, options);
  }
  static SegmentProposalNetwork load(const std::filesystem::path& path,
                                     const SegmentNetworkParams& params,
                                     const nn::LoadOptions& options = {}) {
    const io::SafeTensors file = io::SafeTensors::open(path);
    return load_with(nn::WeightReader(file), params, options);
  }

  const SegmentNetworkParams& params() const { return params_; }
  const SegmentNetworkParams& default_params() const { return default_params_; }
  // Every field is checked (ArgumentError naming it) before anything changes.
  void set_params(const SegmentNetworkParams& params) {
    check_params(params);
    params_ = params;
    head_.set_params(params.segments);
  }
  const Backbone& backbone() const { return backbone_; }
  const Head& head() const { return head_; }

  // The whole pipeline on an 8-bit RGB image.
  Segments forward(nn::ImageView image) const {
    nn::PreprocessedImage input = nn::preprocess(image, params_.transform);
    const nn::FeaturePyramid pyramid = backbone_.forward(std::move(input.tensor));
    return to_original(propose(pyramid, input), input);
  }

  // image: one preprocessed image, tensor [1, 3, H, W].
  Segments forward(const nn::PreprocessedImage& image) const {
    check_image("SegmentProposalNetwork::forward", image);
    const nn::FeaturePyramid pyramid = backbone_.forward(image.tensor);
    return to_original(propose(pyramid, image), image);
  }

  // The stages, exposed so each can be checked against PyTorch on its own: proposals in
  // resized-image pixels.
  nn::SegmentProposals propose(const nn::FeaturePyramid& pyramid,
                               const nn::PreprocessedImage& image) const {
    check_sizes("SegmentProposalNetwork::propose", image);
    if (!strides_.empty() && pyramid.strides != strides_) {
      throw WeightError(
          "SegmentProposalNetwork::propose: the head was trained on levels of strides " +
          format_shape(strides_) + " (the file's \"strides\" metadata), the pyramid's are " +
          format_shape(pyramid.strides));
    }
    return head_.forward(pyramid, image.resized_height, image.resized_width);
  }

  // Proposals (resized-image pixels) mapped to the original image as torchvision's resize_boxes.
  static Segments to_original(const nn::SegmentProposals& proposals,
                              const nn::PreprocessedImage& image) {
    check_sizes("SegmentProposalNetwork::to_original", image);
    Segments result;
    result.image_height = image.original_height;
    result.image_width = image.original_width;
    const float ratio_height = image.ratio_height();
    const float ratio_width = image.ratio_width();
    const auto scaled = [&](const float* box) {
      return std::array<float, 4>{box[0] * ratio_width, box[1] * ratio_height, box[2] * ratio_width,
                                  box[3] * ratio_height};
    };
    for (std::int64_t i = 0; i < proposals.scores.dim(0); ++i) {
      result.items.push_back({scaled(proposals.boxes.data() + 4 * i),
                              scaled(proposals.windows.data() + 4 * i), proposals.scores.data()[i],
                              proposals.groups[static_cast<std::size_t>(i)]});
    }
    result.mask_logits = proposals.mask_logits;
    return result;
  }

 private:
  SegmentProposalNetwork() = default;

  static SegmentProposalNetwork load_with(const nn::WeightReader& weights,
                                          const std::optional<SegmentNetworkParams>& given,
                                          const nn::LoadOptions& options) {
    const nn::WeightSource& source = weights.source();
    if (options.check_arch) detail::check_arch(source, arch);
    SegmentProposalNetwork net;
    nn::TransformParams& transform = net.default_params_.transform;
    detail::metadata_transform_sizes(source, transform);
    read_channels(source, "image_mean", transform.mean);
    read_channels(source, "image_std", transform.stddev);
    check_params(net.default_params_, "the file's SegmentNetworkParams");
    if (const auto strides = detail::metadata_numbers(source, "strides")) {
      for (const double stride : *strides) {
        if (!(stride >= 1 && stride <= 65536) ||
            stride != static_cast<double>(static_cast<std::int64_t>(stride))) {
          throw WeightError(source.describe() +
                            ": metadata strides must be integers in [1, 65536], got " +
                            *source.metadata("strides"));
        }
        net.strides_.push_back(static_cast<std::int64_t>(stride));
      }
    }
    net.params_ = given.value_or(net.default_params_);
    check_params(net.params_);
    net.backbone_ = detail::load_model_backbone<Backbone>(weights);
    net.head_ = Head::load(weights.child("segment_head"), net.params_.segments);
    if (!options.allow_unused) {
      weights.check_all_read(arch.empty() ? std::string_view("the segment-proposal network") : arch);
    }
    return net;
  }

  // A JSON list of three numbers, one per RGB channel.
  static void read_channels(const nn::WeightSource& source, const std::string& key,
                            std::array<float, 3>& values) {
    const auto numbers = detail::metadata_numbers(source, key);
    if (!numbers) return;
    if (numbers->size() != 3) {
      throw WeightError(source.describe() + ": metadata " + key +
                        " must list 3 numbers (R, G, B), got " + *source.metadata(key));
    }
    // torch.as_tensor(list, dtype=float32): each Python float rounded to float32.
    for (std::size_t c = 0; c < 3; ++c) values[c] = static_cast<float>((*numbers)[c]);
  }

  static void check_sizes(std::string_view where, const nn::PreprocessedImage& image) {
    if (image.resized_height < 1 || image.resized_width < 1 || image.original_height < 1 ||
        image.original_width < 1) {
      detail::throw_argument_error(
          where,
          "the image's sizes must be >= 1, got resized " + std::to_string(image.resized_height) +
              "x" + std::to_string(image.resized_width) + " and original " +
              std::to_string(image.original_height) + "x" + std::to_string(image.original_width));
    }
  }
  static void check_image(std::string_view where, const nn::PreprocessedImage& image) {
    detail::check_single_image(where, "image.tensor", image.tensor.shape().dims(), 3);
    check_sizes(where, image);
  }

  SegmentNetworkParams params_;
  SegmentNetworkParams default_params_;
  std::vector<std::int64_t> strides_;  // the file's, or empty
  Backbone backbone_;
  Head head_;
};

}  // namespace fpn
