// A backbone with FPN: the bottom-up Body (a ResNet) composed with the top-down Neck (an FPN)
// at compile time. Parameter names follow torchvision: "backbone.body.*", "backbone.fpn.*".
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/resnet.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn::nn {

template <typename T>
concept bottom_up = requires(const WeightReader& reader, const T& net, TensorView<const float> x) {
  { T::stage_channels } -> std::convertible_to<std::array<std::int64_t, 4>>;
  { T::load(reader) } -> std::same_as<T>;
  { net.forward(x) } -> std::same_as<StageOutputs>;
};

template <typename T>
concept top_down = requires(const WeightReader& reader, const T& net, const StageOutputs& stages) {
  { T::out_channels } -> std::convertible_to<std::int64_t>;
  { T::load(reader, std::array<std::int64_t, 4>{}) } -> std::same_as<T>;
  { net.forward(stages) } -> std::same_as<FeaturePyramid>;
};

// The name a backbone has in torchvision's builders and in the "arch" metadata of converted
// checkpoints, which end in it ("maskrcnn_resnet50_fpn"); empty for a backbone without one.
// Specialise it for a new backbone type (shapes_demo.hpp does for the demo's).
template <typename Backbone>
inline constexpr std::string_view backbone_arch{};

namespace detail {

// Whether a file whose "arch" metadata is `stored` holds the backbone named `backbone`: the
// name itself or a detector's "<head>_<backbone>".
inline bool arch_has_backbone(std::string_view stored, std::string_view backbone) {
  return stored == backbone ||
         (stored.size() > backbone.size() && stored.ends_with(backbone) &&
          stored[stored.size() - backbone.size() - 1] == '_');
}

}  // namespace detail

template <bottom_up Body, top_down Neck>
class BackboneWithFPN {
 public:
  using body_type = Body;
  using neck_type = Neck;
  static constexpr std::int64_t out_channels = Neck::out_channels;

  // weights: a reader at the checkpoint's root; reads "<prefix>body.*" and "<prefix>fpn.*".
  // A file whose "arch" metadata names another backbone is refused, and so (unless
  // options.allow_unused) is any tensor under "<prefix>." that the backbone does not read, e.g.
  // the extra layer3 blocks of a ResNet-101 file loaded into a ResNet-50. Tensors outside the
  // prefix (a detector's heads) are not the backbone's business.
  static BackboneWithFPN load(const WeightReader& weights, LoadOptions options = {},
                              const std::string& prefix = "backbone") {
    constexpr std::string_view arch = backbone_arch<BackboneWithFPN>;
    if (auto stored = weights.source().metadata("arch");
        stored && !arch.empty() && !detail::arch_has_backbone(*stored, arch)) {
      throw WeightError(weights.source().describe() + " is for " + *stored +
                        " (its \"arch\" metadata), whose backbone is not " + std::string(arch));
    }
    const WeightReader scope = weights.child(prefix);
    BackboneWithFPN net;
    net.body_ = Body::load(scope.child("body"));
    net.neck_ = Neck::load(scope.child("fpn"), Body::stage_channels);
    if (!options.allow_unused) {
      scope.check_all_read(arch.empty() ? std::string_view("the backbone") : arch);
    }
    return net;
  }
  static BackboneWithFPN load(const WeightReader& weights, const std::string& prefix) {
    return load(weights, LoadOptions{}, prefix);
  }

  // image: [1, 3, H, W] normalised, one image (a batch is refused: run it image by image);
  // returns P2..P6.
  FeaturePyramid forward(TensorView<const float> image) const {
    fpn::detail::check_single_image("BackboneWithFPN::forward", "image", image.shape().dims(), 3);
    if constexpr (interleaved) {
      return forward_interleaved(body_.forward_stem(image));
    } else {
      return neck_.forward(body_.forward(image));
    }
  }

  // As above, releasing the image once the stem has read it (with an interleaved body and neck).
  FeaturePyramid forward(Tensor<float>&& image) const {
    fpn::detail::check_single_image("BackboneWithFPN::forward", "image", image.shape().dims(), 3);
    if constexpr (interleaved) {
      Tensor<float> stem = body_.forward_stem(image);
      image = Tensor<float>();
      return forward_interleaved(std::move(stem));
    } else {
      return forward(image.view());
    }
  }

  const Body& body() const { return body_; }
  const Neck& neck() const { return neck_; }

 private:
  // A body run stage by stage and a neck with separate laterals: each stage map turns into its
  // lateral as soon as the next stage has read it, so the bottom-up pass holds 256-channel
  // laterals (C3's 512 channels become 256) rather than every stage map.
  static constexpr bool interleaved =
      requires(const Body& body, const Neck& neck, TensorView<const float> image,
               const Tensor<float>& map, Tensor<float>&& owned,
               std::array<Tensor<float>, 4>&& laterals) {
        { body.forward_stem(image) } -> std::same_as<Tensor<float>>;
        { body.forward_stage(std::size_t{}, map) } -> std::same_as<Tensor<float>>;
        { neck.lateral_in(std::size_t{}, std::move(owned)) } -> std::same_as<Tensor<float>>;
        { neck.top_down(std::move(laterals)) } -> std::same_as<FeaturePyramid>;
      };

  FeaturePyramid forward_interleaved(Tensor<float> stem) const {
    std::array<Tensor<float>, 4> laterals;
    Tensor<float> previous = body_.forward_stage(0, stem);
    stem = Tensor<float>();
    for (std::size_t stage = 1; stage < 4; ++stage) {
      Tensor<float> next = body_.forward_stage(stage, previous);
      laterals[stage - 1] = neck_.lateral_in(stage - 1, std::move(previous));
      previous = std::move(next);
    }
    laterals[3] = neck_.lateral_in(3, std::move(previous));
    return neck_.top_down(std::move(laterals));
  }

  Body body_;
  Neck neck_;
};

template <int Depth>
struct ResNetOfDepth;
template <> struct ResNetOfDepth<18> { using type = ResNet18; };
template <> struct ResNetOfDepth<34> { using type = ResNet34; };
template <> struct ResNetOfDepth<50> { using type = ResNet50; };
template <> struct ResNetOfDepth<101> { using type = ResNet101; };

// torchvision's resnet{18,34,50,101}_fpn backbones.
template <int Depth>
using ResNetFPN = BackboneWithFPN<typename ResNetOfDepth<Depth>::type, FPN<256>>;

// torchvision's v2 backbone (fasterrcnn/maskrcnn_resnet50_fpn_v2): the same ResNet (BatchNorm2d
// at eval folds as FrozenBatchNorm2d does) and an FPN whose convs carry BatchNorm2d.
template <int Depth>
using ResNetFPNv2 = BackboneWithFPN<typename ResNetOfDepth<Depth>::type, FPN<256, FoldedBatchNorm>>;

template <> inline constexpr std::string_view backbone_arch<ResNetFPN<18>> = "resnet18_fpn";
template <> inline constexpr std::string_view backbone_arch<ResNetFPN<34>> = "resnet34_fpn";
template <> inline constexpr std::string_view backbone_arch<ResNetFPN<50>> = "resnet50_fpn";
template <> inline constexpr std::string_view backbone_arch<ResNetFPN<101>> = "resnet101_fpn";
template <> inline constexpr std::string_view backbone_arch<ResNetFPNv2<50>> = "resnet50_fpn_v2";

}  // namespace fpn::nn
