// A backbone with FPN: the bottom-up Body (a ResNet) composed with the top-down Neck (an FPN)
// at compile time. Parameter names follow torchvision: "backbone.body.*", "backbone.fpn.*".
#pragma once

#include <concepts>
#include <string>

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
    return neck_.forward(body_.forward(image));
  }

  // As above, releasing the image once the bottom-up pathway no longer needs it (after the stem
  // of a ResNet).
  FeaturePyramid forward(Tensor<float>&& image) const {
    if constexpr (requires { body_.forward(std::move(image)); }) {
      return neck_.forward(body_.forward(std::move(image)));
    } else {
      const Tensor<float> owned = std::move(image);
      return neck_.forward(body_.forward(owned.view()));
    }
  }

  const Body& body() const { return body_; }
  const Neck& neck() const { return neck_; }

 private:
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
