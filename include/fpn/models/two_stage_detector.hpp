// TwoStageDetector: torchvision's GeneralizedRCNN at inference, composed at compile time from a
// backbone with FPN, a region proposal network on every pyramid level and ROI heads:
//
//   using MaskRCNNResNet50FPN = TwoStageDetector<ResNetFPN<50>, RoiHeads<BoxHead<256>, MaskHead<256>>>;
//
// Weights are loaded at run time by torchvision's parameter names; thresholds and sizes are
// run-time DetectorParams.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fpn/core/detail/json.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/detections.hpp"
#include "fpn/models/metadata.hpp"
#include "fpn/nn/backbone.hpp"
#include "fpn/nn/conv_fc_box_head.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/poolers.hpp"
#include "fpn/nn/roi_heads.hpp"
#include "fpn/nn/rpn.hpp"
#include "fpn/nn/transform.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn {

// The run-time settings of a loaded detector: thresholds, counts and image sizes, with
// torchvision's defaults. set_params() may change them at any time; the model's geometry (its
// anchors, its number of classes) is fixed at load by DetectorLoadOptions instead.
struct DetectorParams {
  nn::TransformParams transform;
  nn::RpnParams rpn;
  nn::RoiHeadsParams roi_heads;
  // How the box head pools its 7x7 features; RoIPool only for heads trained with it.
  nn::RoiPooling box_pooling = nn::RoiPooling::align;
};

// Throws ArgumentError naming the first field out of range, by its path from `name`
// ("DetectorParams.rpn.pre_nms_top_n must be an integer >= 1, got -1").
inline void check_params(const DetectorParams& params, std::string_view name = "DetectorParams") {
  const std::string prefix(name);
  nn::check_params(params.transform, prefix + ".transform");
  nn::check_params(params.rpn, prefix + ".rpn");
  nn::check_params(params.roi_heads, prefix + ".roi_heads");
  if (params.box_pooling != nn::RoiPooling::align && params.box_pooling != nn::RoiPooling::max) {
    detail::throw_invalid_field(prefix + ".box_pooling", "RoiPooling::align or RoiPooling::max",
                                std::to_string(static_cast<int>(params.box_pooling)));
  }
}

// What a detector fixes when it is loaded: the model's own geometry, and how strictly the file
// must fit it.
struct DetectorLoadOptions {
  // Classes including background; 0: the file's "num_classes" metadata, else torchvision's 91.
  std::int64_t num_classes = 0;
  // Anchor sizes (a list per pyramid level) and aspect ratios: the RPN head was trained with
  // them (one output per anchor of a cell), so they cannot change after load. Unset: the
  // backbone's default_anchors(), torchvision's for that builder.
  std::optional<nn::AnchorParams> anchors;
  // Tensors of the file that the detector does not read are an error unless this is set (e.g.
  // to run the Faster R-CNN part of a Mask R-CNN file).
  bool allow_unused = false;
};

// Marks a detector without a mask branch.
struct NoMaskHead {};

// The ROI heads' slots: a box head (nn::box_head: nn::BoxHead for v1's TwoMLPHead,
// nn::ConvFCBoxHead for v2's FastRCNNConvFCHead) and an optional mask head (nn::mask_head:
// nn::MaskHead). Both pool from the pyramid levels torchvision's MultiScaleRoIAlign defaults to,
// "0".."3", at their own pool_size.
template <typename BoxHeadType, typename MaskHeadType = NoMaskHead>
struct RoiHeads {
  static_assert(nn::box_head<BoxHeadType>,
                "RoiHeads: the box head must model nn::box_head (static in_channels and "
                "pool_size, static load(const WeightReader&, std::int64_t num_classes), "
                "num_classes(), predict(pooled) -> {logits, deltas}, postprocess(...) -> "
                "BoxDetections), e.g. nn::BoxHead<256> or nn::ConvFCBoxHead<256>");
  static_assert(std::same_as<MaskHeadType, NoMaskHead> || nn::mask_head<MaskHeadType>,
                "RoiHeads: the mask head must be NoMaskHead or model nn::mask_head (static "
                "in_channels, pool_size and mask_size, static load(const WeightReader&, "
                "std::int64_t num_classes), num_classes(), forward(pooled, labels) -> masks, "
                "check_labels(where, labels)), e.g. nn::MaskHead<256>");
  using box_head = BoxHeadType;
  using mask_head = MaskHeadType;
  static constexpr bool has_mask = !std::same_as<MaskHeadType, NoMaskHead>;
};

// A detector's Heads slot: RoiHeads<...> or a type like it.
template <typename T>
concept roi_heads = requires {
  typename T::box_head;
  typename T::mask_head;
  { T::has_mask } -> std::convertible_to<bool>;
} && nn::box_head<typename T::box_head> &&
    (!T::has_mask || nn::mask_head<typename T::mask_head>);

// A backbone with its neck (nn::BackboneWithFPN): its width, its number of pyramid levels, its
// default anchors, a load and a forward to the pyramid.
template <typename T>
concept backbone_with_fpn = requires(const nn::WeightReader& reader, const T& net, const Tensor<float>& image) {
  { T::out_channels } -> std::convertible_to<std::int64_t>;
  { T::num_levels } -> std::convertible_to<std::size_t>;
  { T::default_anchors() } -> std::same_as<nn::AnchorParams>;
  { T::load(reader) } -> std::same_as<T>;
  { net.forward(image) } -> std::same_as<nn::FeaturePyramid>;
};

namespace detail {

// "class_names": a JSON list of strings, index = label.
inline std::vector<std::string> metadata_class_names(const nn::WeightSource& source) {
  std::vector<std::string> names;
  const std::optional<std::string> text = source.metadata("class_names");
  if (!text) return names;
  const std::string context = source.describe() + ": metadata class_names";
  try {
    JsonReader reader(*text, context);
    reader.begin_array();
    while (reader.next_item()) names.push_back(reader.read_string());
    reader.finish();
  } catch (const WeightError&) {
    throw WeightError(context + " must be a JSON list of strings, got '" + *text + "'");
  }
  return names;
}

// A model's backbone from the model's file: the model checks the whole file (and its arch) at the
// end of its own load, so the backbone need not check its part, when it can be told so.
template <typename Backbone>
Backbone load_model_backbone(const nn::WeightReader& weights) {
  if constexpr (requires { Backbone::load(weights, nn::LoadOptions{}); }) {
    return Backbone::load(weights, nn::LoadOptions{.allow_unused = true, .check_arch = false});
  } else {
    return Backbone::load(weights);
  }
}

// Whether a mask head, if there is one, pools features of `channels` channels.
template <typename Heads>
constexpr bool mask_width_agrees(std::int64_t channels) {
  if constexpr (Heads::has_mask) {
    return Heads::mask_head::in_channels == channels;
  } else {
    return true;
  }
}

}  // namespace detail

// A region proposal network for a detector of backbone width `channels`.
template <typename T>
concept region_proposal_network =
    requires(const nn::WeightReader& rpn, const T& net, const nn::FeaturePyramid& pyramid,
             const nn::RpnParams& params, const nn::AnchorParams& anchors) {
      { T::channels } -> std::convertible_to<std::int64_t>;
      { T::load(rpn, params, anchors) } -> std::same_as<T>;
      { net.forward(pyramid, std::int64_t{}, std::int64_t{}, std::int64_t{}, std::int64_t{}) }
          -> std::same_as<nn::Proposals>;
    };

// What a torchvision builder fixes beyond the parts: its run-time defaults (its keyword
// arguments: fasterrcnn_mobilenet_v3_large_320_fpn's min_size=320, rpn_score_thresh=0.05, ...)
// and, when it is not "<fasterrcnn|maskrcnn>_" + the backbone's name, its own name.
template <typename T>
concept detector_builder = requires {
  { T::params() } -> std::same_as<DetectorParams>;
  { T::name } -> std::convertible_to<std::string_view>;
};

// torchvision's defaults (DetectorParams{}), and the name derived from the backbone's.
struct DefaultBuilder {
  static DetectorParams params() { return {}; }
  static constexpr std::string_view name{};
};

// Rpn: the proposal network, nn::RegionProposalNetwork<width, conv_depth>; v1's one-conv head
// by default, the v2 builders' two-conv head is RegionProposalNetwork<256, 2>. Builder: the
// builder's defaults and name (fpn::detector_builder).
template <typename Backbone, typename Heads,
          typename Rpn = nn::RegionProposalNetwork<static_cast<int>(Backbone::out_channels)>,
          typename Builder = DefaultBuilder>
class TwoStageDetector {
  static_assert(backbone_with_fpn<Backbone>,
                "TwoStageDetector: Backbone must model fpn::backbone_with_fpn (out_channels, "
                "num_levels, default_anchors(), load(reader), forward(image) -> FeaturePyramid), "
                "e.g. nn::ResNetFPN<50> or nn::BackboneWithFPN<Body, Neck>");
  static_assert(roi_heads<Heads>,
                "TwoStageDetector: Heads must be fpn::RoiHeads<BoxHead, MaskHead> of a box head "
                "(nn::box_head) and NoMaskHead or a mask head (nn::mask_head)");
  static_assert(region_proposal_network<Rpn>,
                "TwoStageDetector: Rpn must be a region proposal network such as "
                "nn::RegionProposalNetwork<channels, conv_depth>");
  static_assert(Rpn::channels == Backbone::out_channels,
                "TwoStageDetector: the RPN's width must be the backbone's out_channels");
  static_assert(Heads::box_head::in_channels == Backbone::out_channels,
                "TwoStageDetector: the box head's in_channels must be the backbone's out_channels");
  static_assert(detail::mask_width_agrees<Heads>(Backbone::out_channels),
                "TwoStageDetector: the mask head's in_channels must be the backbone's out_channels");
  static_assert(Heads::box_head::pool_size >= 1, "TwoStageDetector: the box head's pool size must be positive");
  static_assert(detector_builder<Builder>,
                "TwoStageDetector: Builder must model fpn::detector_builder (static params() -> "
                "DetectorParams, static name), e.g. fpn::DefaultBuilder");

 public:
  using backbone_type = Backbone;
  using rpn_type = Rpn;
  static constexpr bool has_mask = Heads::has_mask;

  // torchvision's builder name of this detector ("maskrcnn_resnet50_fpn"), as the converter
  // records it in a file's "arch" metadata: "<fasterrcnn|maskrcnn>_" + nn::backbone_arch of the
  // backbone; empty when the backbone has no name (then a file's arch is not checked).
 private:
  static constexpr std::string_view head_arch = has_mask ? "maskrcnn" : "fasterrcnn";
  static constexpr std::string_view backbone_arch = nn::backbone_arch<Backbone>;
  static constexpr auto arch_text = [] {
    std::array<char, 64> text{};
    static_assert(head_arch.size() + 1 + backbone_arch.size() < text.size(),
                  "TwoStageDetector: the backbone's arch name is too long");
    std::size_t length = 0;
    for (char c : head_arch) text[length++] = c;
    text[length++] = '_';
    for (char c : backbone_arch) text[length++] = c;
    return text;
  }();

 public:
  static constexpr std::string_view arch =
      !std::string_view(Builder::name).empty() ? std::string_view(Builder::name)
      : backbone_arch.empty()
          ? std::string_view()
          : std::string_view(arch_text.data(), head_arch.size() + 1 + backbone_arch.size());

  // Loads the weights with the model's default params: torchvision's, with the transform's
  // min_size and max_size from the file's metadata when it records them (the demo model's
  // 320/512). Precedence: explicitly passed params win over the metadata; see the next overload.
  //
  // Metadata read: "arch" (must be this type's arch; a Faster R-CNN also takes its Mask R-CNN's
  // file when options.allow_unused is set), "num_classes" (unless options.num_classes is given),
  // "class_names" (class_names()), "min_size"/"max_size" (default_params()), "frozen_bn_eps"
  // (WeightReader). Unless options.allow_unused, a tensor of the file that the detector does not
  // read is a WeightError naming it.
  static TwoStageDetector load(const nn::WeightReader& weights,
                               const DetectorLoadOptions& options = {}) {
    return load_with(weights, std::nullopt, options);
  }

  // As above with params used exactly as given, the file's min_size/max_size ignored.
  static TwoStageDetector load(const nn::WeightReader& weights, const DetectorParams& params,
                               const DetectorLoadOptions& options = {}) {
    return load_with(weights, params, options);
  }

  // Reads a converted checkpoint; nothing of the file is kept once the weights are loaded.
  static TwoStageDetector load(const std::filesystem::path& path,
                               const DetectorLoadOptions& options = {}) {
    const io::SafeTensors file = io::SafeTensors::open(path);
    return load_with(nn::WeightReader(file), std::nullopt, options);
  }
  static TwoStageDetector load(const std::filesystem::path& path, const DetectorParams& params,
                               const DetectorLoadOptions& options = {}) {
    const io::SafeTensors file = io::SafeTensors::open(path);
    return load_with(nn::WeightReader(file), params, options);
  }

  const DetectorParams& params() const { return params_; }
  // torchvision's defaults with the loaded file's min_size/max_size: what load() without params
  // uses, and a starting point for set_params.
  const DetectorParams& default_params() const { return default_params_; }
  // Every field is checked (ArgumentError naming it) before anything changes.
  void set_params(const DetectorParams& params) {
    check_params(params);
    params_ = params;
    rpn_.set_params(params.rpn);
    box_pooler_.set_pooling(params.box_pooling);
  }
  // The file's "class_names" metadata (index = label, 0 the background), or empty.
  const std::vector<std::string>& class_names() const { return class_names_; }
  const nn::AnchorParams& anchors() const { return rpn_.anchors(); }
  std::int64_t num_classes() const { return num_classes_; }
  const Backbone& backbone() const { return backbone_; }

  // Threads for this detector's calls: 1..max_threads, or 0 (the default) for whatever the
  // calling thread has (its fpn::ThreadLimit, else one per available CPU). Results are the same
  // for any count. Several threads may call detect on one detector at once; they share fpn's
  // pool, so the total stays bounded.
  void set_num_threads(int threads) {
    if (threads < 0 || threads > max_threads) {
      detail::throw_argument_error("TwoStageDetector::set_num_threads",
                                   "threads must be in [0, " + std::to_string(max_threads) +
                                       "] (0: the caller's), got " + std::to_string(threads));
    }
    num_threads_ = threads;
  }
  int num_threads() const { return num_threads_; }

  // The whole pipeline on an 8-bit RGB image. The preprocessed image is released once the stem
  // has read it.
  Detections detect(nn::ImageView image) const {
    const CallThreads threads(num_threads_);
    nn::PreprocessedImage input = nn::preprocess(image, params_.transform);
    const std::int64_t padded_height = input.tensor.dim(2), padded_width = input.tensor.dim(3);
    const nn::FeaturePyramid pyramid = backbone_.forward(std::move(input.tensor));
    const nn::Proposals proposals = rpn_.forward(pyramid, padded_height, padded_width,
                                                 input.resized_height, input.resized_width);
    return detect_from_proposals(pyramid, proposals.boxes, input);
  }

  // Several images, each on its own, one after another: result i equals detect(images[i]).
  std::vector<Detections> detect(std::span<const nn::ImageView> images) const {
    std::vector<Detections> results;
    results.reserve(images.size());
    for (const nn::ImageView& image : images) results.push_back(detect(image));
    return results;
  }

  // image: one preprocessed image, tensor [1, 3, H, W]; a batch is refused (ShapeError).
  Detections detect(const nn::PreprocessedImage& image) const {
    check_image("TwoStageDetector::detect", image);
    const CallThreads threads(num_threads_);
    const nn::FeaturePyramid pyramid = backbone_.forward(image.tensor);
    const nn::Proposals proposals = propose(pyramid, image);
    return detect_from_proposals(pyramid, proposals.boxes, image);
  }

  // The stages, exposed so each can be checked against torchvision on its own.
  nn::Proposals propose(const nn::FeaturePyramid& pyramid, const nn::PreprocessedImage& image) const {
    check_image("TwoStageDetector::propose", image);
    return rpn_.forward(pyramid, image.tensor.dim(2), image.tensor.dim(3), image.resized_height,
                        image.resized_width);
  }

  // The ROI heads pool and run this many boxes at a time: each box's result is its own, and the
  // pooled features of 1000 proposals (50 MB for 256 channels) are never held at once. A mask
  // chunk of 32 boxes (6.4 MB a map at 256 channels) transforms the mask convs' filters for
  // Winograd 4 times for 100 detections rather than 13, and fills its GEMMs with 1568 tiles:
  // Mask R-CNN R50-FPN's mask branch (100 boxes, 800x1216) took 0.39 s in chunks of 8, 0.31 s in
  // chunks of 32 (64: the same).
  static constexpr std::int64_t box_chunk = 256;
  static constexpr std::int64_t mask_chunk = 32;

  nn::BoxDetections detect_boxes(const nn::FeaturePyramid& pyramid, const Tensor<float>& proposals,
                                 const nn::PreprocessedImage& image) const {
    if (proposals.rank() != 2 || proposals.dim(1) != 4) {
      detail::throw_shape_error("detect_boxes", "proposals", "[R, 4]", proposals.shape().dims());
    }
    check_sizes("detect_boxes", image);
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
    check_sizes("predict_masks", image);
    mask_head_.check_labels("predict_masks", labels);
    const std::int64_t count = boxes.dim(0);
    const std::int64_t side = Heads::mask_head::mask_size;
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

  static constexpr std::int64_t mask_pool_size() {
    if constexpr (has_mask) {
      return Heads::mask_head::pool_size;
    } else {
      return 1;  // unused
    }
  }

  static TwoStageDetector load_with(const nn::WeightReader& weights,
                                    const std::optional<DetectorParams>& given,
                                    const DetectorLoadOptions& options) {
    const nn::WeightSource& source = weights.source();
    if (auto stored = source.metadata("arch"); stored && !arch.empty() && *stored != arch) {
      // A Mask R-CNN file holds its Faster R-CNN whole, plus the mask branch.
      const bool mask_file_for_faster =
          !has_mask && options.allow_unused && *stored == "maskrcnn_" + std::string(backbone_arch);
      if (!mask_file_for_faster) {
        throw WeightError(source.describe() + " is for " + *stored +
                          " (its \"arch\" metadata), not " + std::string(arch));
      }
    }
    const nn::AnchorParams anchors = options.anchors.value_or(Backbone::default_anchors());
    nn::check_params(anchors, Backbone::num_levels, "DetectorLoadOptions.anchors");
    TwoStageDetector detector;
    detector.num_classes_ = options.num_classes;
    if (detector.num_classes_ <= 0) {
      detector.num_classes_ =
          detail::metadata_integer(source, "num_classes", 2, std::int64_t{1} << 20).value_or(91);
    }
    detector.class_names_ = detail::metadata_class_names(source);
    if (!detector.class_names_.empty() &&
        static_cast<std::int64_t>(detector.class_names_.size()) != detector.num_classes_) {
      throw WeightError(source.describe() + ": metadata class_names has " +
                        std::to_string(detector.class_names_.size()) +
                        " names, expected one per class (" +
                        std::to_string(detector.num_classes_) + ", background included)");
    }
    detector.default_params_ = Builder::params();
    check_params(detector.default_params_, "the builder's DetectorParams");
    detail::metadata_transform_sizes(source, detector.default_params_.transform);
    detector.params_ = given.value_or(detector.default_params_);
    check_params(detector.params_);
    detector.box_pooler_.set_pooling(detector.params_.box_pooling);

    // The backbone and the heads read disjoint tensors, so with a source that allows it they
    // load as two tasks of fpn's pool (within the caller's thread limit): most of a load is
    // fresh memory being faulted in, which two threads do in half the time. Errors are reported
    // as a sequential load would: the backbone's first.
    const auto load_part = [&](std::int64_t part) {
      if (part == 0) {
        detector.backbone_ = detail::load_model_backbone<Backbone>(weights);
        return;
      }
      detector.rpn_ = Rpn::load(weights.child("rpn"), detector.params_.rpn, anchors);
      const nn::WeightReader roi_heads = weights.child("roi_heads");
      detector.box_head_ = Heads::box_head::load(roi_heads, detector.num_classes_);
      if constexpr (has_mask) {
        detector.mask_head_ = Heads::mask_head::load(roi_heads, detector.num_classes_);
      }
    };
    if (source.concurrent_loads()) {
      std::array<std::exception_ptr, 2> errors;
      fpn::detail::parallel_for(2, [&](std::int64_t part, int) {
        try {
          load_part(part);
        } catch (...) {
          errors[static_cast<std::size_t>(part)] = std::current_exception();
        }
      });
      for (const std::exception_ptr& error : errors) {
        if (error) std::rethrow_exception(error);
      }
    } else {
      load_part(0);
      load_part(1);
    }
    if (!options.allow_unused) {
      weights.check_all_read(arch.empty() ? std::string_view("the detector") : arch);
    }
    return detector;
  }

  // The sizes of a preprocessed image that the heads read.
  static void check_sizes(std::string_view where, const nn::PreprocessedImage& image) {
    if (image.resized_height < 1 || image.resized_width < 1 || image.original_height < 1 ||
        image.original_width < 1) {
      detail::throw_argument_error(
          where, "the image's sizes must be >= 1, got resized " +
                     std::to_string(image.resized_height) + "x" + std::to_string(image.resized_width) +
                     " and original " + std::to_string(image.original_height) + "x" +
                     std::to_string(image.original_width));
    }
  }
  // The detector's own thread count for the scope of a call, when it has one.
  class CallThreads {
   public:
    explicit CallThreads(int threads) {
      if (threads > 0) limit_.emplace(threads);
    }

   private:
    std::optional<ThreadLimit> limit_;
  };

  static void check_image(std::string_view where, const nn::PreprocessedImage& image) {
    detail::check_single_image(where, "image.tensor", image.tensor.shape().dims(), 3);
    check_sizes(where, image);
  }

  int num_threads_ = 0;
  DetectorParams params_;
  DetectorParams default_params_;
  std::vector<std::string> class_names_;
  std::int64_t num_classes_ = 0;
  Backbone backbone_;
  Rpn rpn_;
  nn::MultiScaleRoIAlign box_pooler_{Heads::box_head::pool_size, 2};
  nn::MultiScaleRoIAlign mask_pooler_{mask_pool_size(), 2};
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

// torchvision's v2 builders (fasterrcnn_resnet50_fpn_v2, maskrcnn_resnet50_fpn_v2): BatchNorm2d
// folded into the FPN's and the heads' convs (nn::FoldedBatchNorm), a two-conv RPN head and
// FastRCNNConvFCHead (nn::ConvFCBoxHead) as the box head.
template <typename Backbone>
using FasterRCNNv2 = TwoStageDetector<
    Backbone, RoiHeads<nn::ConvFCBoxHead<static_cast<int>(Backbone::out_channels)>>,
    nn::RegionProposalNetwork<static_cast<int>(Backbone::out_channels), 2>>;

template <typename Backbone>
using MaskRCNNv2 = TwoStageDetector<
    Backbone,
    RoiHeads<nn::ConvFCBoxHead<static_cast<int>(Backbone::out_channels)>,
             nn::MaskHead<static_cast<int>(Backbone::out_channels), 256, nn::FoldedBatchNorm>>,
    nn::RegionProposalNetwork<static_cast<int>(Backbone::out_channels), 2>>;

using FasterRCNNResNet50FPNv2 = FasterRCNNv2<nn::ResNetFPNv2<50>>;
using MaskRCNNResNet50FPNv2 = MaskRCNNv2<nn::ResNetFPNv2<50>>;

}  // namespace fpn
