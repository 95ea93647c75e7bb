// A backbone with FPN: the bottom-up Body (a ResNet) composed with the top-down Neck (an FPN)
// at compile time. Parameter names follow torchvision: "backbone.body.*", "backbone.fpn.*".
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <string>
#include <utility>

#include "fpn/core/tensor.hpp"
#include "fpn/nn/fpn.hpp"
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

template <bottom_up Body, top_down Neck>
class BackboneWithFPN {
 public:
  using body_type = Body;
  using neck_type = Neck;
  static constexpr std::int64_t out_channels = Neck::out_channels;

  // weights: a reader at the checkpoint's root; reads "<prefix>body.*" and "<prefix>fpn.*".
  static BackboneWithFPN load(const WeightReader& weights, const std::string& prefix = "backbone") {
    const WeightReader scope = weights.child(prefix);
    BackboneWithFPN net;
    net.body_ = Body::load(scope.child("body"));
    net.neck_ = Neck::load(scope.child("fpn"), Body::stage_channels);
    return net;
  }

  // image: [N, 3, H, W] normalised and padded to a multiple of 32; returns P2..P6.
  FeaturePyramid forward(TensorView<const float> image) const {
    if constexpr (interleaved) {
      return forward_interleaved(body_.forward_stem(image));
    } else {
      return neck_.forward(body_.forward(image));
    }
  }

  // As above, releasing the image once the stem has read it (with an interleaved body and neck).
  FeaturePyramid forward(Tensor<float>&& image) const {
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

}  // namespace fpn::nn
