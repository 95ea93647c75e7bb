// A backbone with FPN: the bottom-up Body composed with the top-down Neck at compile time, and
// which of the body's stages the neck takes (torchvision's returned_layers). Parameter names
// follow torchvision: "backbone.body.*", "backbone.fpn.*".
//
//   BackboneWithFPN<ResNet50, FPN<256>>                                   // R-CNN: C2..C5 + pool
//   BackboneWithFPN<ResNet50, FPN<256, BiasOnly, LastLevelP6P7<FromC5>>, Stages<2, 3, 4>>
//                                                                         // RetinaNet v2: C3..C5, P6, P7
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/anchors.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/resnet.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn::nn {

// A bottom-up body run stage by stage, so that a neck can take each stage map as soon as the next
// stage has read it: num_stages, stage_channels and stage_strides (std::array of num_stages,
// finest first), load(body reader), forward_stem(image) and forward_stage(index, previous map).
template <typename T>
concept bottom_up = requires(const WeightReader& reader, const T& net, TensorView<const float> image,
                             const Tensor<float>& map) {
  { T::num_stages } -> std::convertible_to<std::size_t>;
  { T::stage_channels[0] } -> std::convertible_to<std::int64_t>;
  { T::stage_strides[0] } -> std::convertible_to<std::int64_t>;
  requires std::size(T::stage_channels) == T::num_stages;
  requires std::size(T::stage_strides) == T::num_stages;
  { T::load(reader) } -> std::same_as<T>;
  { net.forward_stem(image) } -> std::same_as<Tensor<float>>;
  { net.forward_stage(std::size_t{}, map) } -> std::same_as<Tensor<float>>;
};

// A top-down neck over any number of stage maps (nn::FPN): out_channels; the levels its extra
// policy appends and whether it reads the top stage map; load(fpn reader, widths, strides);
// lateral_in (a stage map it owns), lateral_from (one the caller keeps) and top_down(laterals,
// top stage or null) -> FeaturePyramid.
template <typename T>
concept top_down = requires(const WeightReader& reader, const T& net, std::span<const std::int64_t> sizes,
                            Tensor<float>&& map, TensorView<const float> view,
                            std::vector<Tensor<float>>&& laterals, const Tensor<float>* stage) {
  { T::out_channels } -> std::convertible_to<std::int64_t>;
  { T::extra_level_count } -> std::convertible_to<std::size_t>;
  { T::extra_reads_stage } -> std::convertible_to<bool>;
  { T::load(reader, sizes, sizes) } -> std::same_as<T>;
  { net.lateral_in(std::size_t{}, std::move(map)) } -> std::same_as<Tensor<float>>;
  { net.lateral_from(std::size_t{}, view) } -> std::same_as<Tensor<float>>;
  { net.top_down(std::move(laterals), stage) } -> std::same_as<FeaturePyramid>;
};

// Which of the body's stages the neck takes, numbered from 1 as torchvision's returned_layers
// (ResNet: 1 = layer1 = C2 ... 4 = layer4 = C5), increasing.
template <int... Numbers>
struct Stages {
  static_assert(sizeof...(Numbers) >= 1, "Stages: the neck needs at least one stage");
  static constexpr std::size_t count = sizeof...(Numbers);
  static constexpr std::array<int, sizeof...(Numbers)> numbers{Numbers...};
};

// The anchors torchvision's builder gives a backbone: one size per level, 32 doubling per level
// (_default_anchorgen's ((32,), (64,), (128,), (256,), (512,)) for the R-CNN FPNs), ratios 0.5,
// 1, 2. Specialise it for a backbone whose builder passes its own (MobileNetV3-FPN's five sizes
// on every level, nn/mobilenet_v3.hpp).
template <typename Backbone>
struct builder_anchors {
  static AnchorParams get() { return AnchorParams::one_size_per_level(Backbone::num_levels); }
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

// Whether the body can load and run only its first stages (ResNet::load(reader, stages)).
template <typename Body>
concept loads_first_stages = requires(const WeightReader& reader) {
  { Body::load(reader, std::size_t{}) } -> std::same_as<Body>;
};

template <typename Body, typename Returned>
constexpr bool stages_fit() {
  int previous = 0;
  for (int number : Returned::numbers) {
    if (number <= previous || number > static_cast<int>(Body::num_stages)) return false;
    previous = number;
  }
  return previous == static_cast<int>(Body::num_stages) || loads_first_stages<Body>;
}

}  // namespace detail

template <typename Body, typename Neck, typename Returned = Stages<1, 2, 3, 4>>
class BackboneWithFPN {
  static_assert(bottom_up<Body>,
                "BackboneWithFPN: Body must model nn::bottom_up (num_stages, stage_channels and "
                "stage_strides arrays, static load(const WeightReader&), forward_stem(image), "
                "forward_stage(index, map)), e.g. nn::ResNet50");
  static_assert(top_down<Neck>,
                "BackboneWithFPN: Neck must model nn::top_down (out_channels, extra_level_count, "
                "extra_reads_stage, load(reader, widths, strides), lateral_in, lateral_from, "
                "top_down(laterals, top stage)), e.g. nn::FPN<256>");
  static_assert(detail::stages_fit<Body, Returned>(),
                "BackboneWithFPN: Returned must be nn::Stages<...> of increasing stage numbers "
                "from 1 to the body's num_stages, ending at its last stage unless the body can "
                "load its first stages alone (Body::load(reader, stages), as nn::ResNet)");

 public:
  using body_type = Body;
  using neck_type = Neck;
  using returned_stages = Returned;
  static constexpr std::int64_t out_channels = Neck::out_channels;
  static constexpr std::size_t num_levels = [] {
    if constexpr (requires { Neck::pyramid_levels(std::size_t{}); }) {
      return Neck::pyramid_levels(Returned::count);
    } else {
      return Returned::count + Neck::extra_level_count;
    }
  }();
  // The body's stages that run: up to the last one the neck takes (torchvision's
  // IntermediateLayerGetter stops there too; e.g. the FPN paper's C4 baseline, Stages<3>).
  static constexpr std::size_t used_stages = static_cast<std::size_t>(Returned::numbers.back());

  // The widths and nominal strides of the stage maps the neck takes.
  static constexpr std::array<std::int64_t, Returned::count> taken_channels = [] {
    std::array<std::int64_t, Returned::count> widths{};
    for (std::size_t i = 0; i < Returned::count; ++i) {
      widths[i] = Body::stage_channels[static_cast<std::size_t>(Returned::numbers[i] - 1)];
    }
    return widths;
  }();
  static constexpr std::array<std::int64_t, Returned::count> taken_strides = [] {
    std::array<std::int64_t, Returned::count> strides{};
    for (std::size_t i = 0; i < Returned::count; ++i) {
      strides[i] = Body::stage_strides[static_cast<std::size_t>(Returned::numbers[i] - 1)];
    }
    return strides;
  }();

  // torchvision's anchors for this backbone (nn::builder_anchors).
  static AnchorParams default_anchors() { return builder_anchors<BackboneWithFPN>::get(); }

  // weights: a reader at the checkpoint's root; reads "<prefix>body.*" and "<prefix>fpn.*".
  // A file whose "arch" metadata names another backbone is refused, and so (unless
  // options.allow_unused) is any tensor under "<prefix>." that the backbone does not read, e.g.
  // the extra layer3 blocks of a ResNet-101 file loaded into a ResNet-50. Tensors outside the
  // prefix (a detector's heads) are not the backbone's business.
  static BackboneWithFPN load(const WeightReader& weights, LoadOptions options = {},
                              const std::string& prefix = "backbone") {
    constexpr std::string_view arch = backbone_arch<BackboneWithFPN>;
    if (auto stored = weights.source().metadata("arch");
        options.check_arch && stored && !arch.empty() && !detail::arch_has_backbone(*stored, arch)) {
      throw WeightError(weights.source().describe() + " is for " + *stored +
                        " (its \"arch\" metadata), whose backbone is not " + std::string(arch));
    }
    const WeightReader scope = weights.child(prefix);
    BackboneWithFPN net;
    if constexpr (used_stages == Body::num_stages) {
      net.body_ = Body::load(scope.child("body"));
    } else {
      net.body_ = Body::load(scope.child("body"), used_stages);
    }
    net.neck_ = Neck::load(scope.child("fpn"), taken_channels, taken_strides);
    if (!options.allow_unused) {
      scope.check_all_read(arch.empty() ? std::string_view("the backbone") : arch);
    }
    return net;
  }
  static BackboneWithFPN load(const WeightReader& weights, const std::string& prefix) {
    return load(weights, LoadOptions{}, prefix);
  }

  // image: [1, 3, H, W] normalised, one image (a batch is refused: run it image by image);
  // returns the neck's pyramid (for the R-CNN FPNs "0".."3" = P2..P5 and "pool" = P6).
  FeaturePyramid forward(TensorView<const float> image) const {
    fpn::detail::check_single_image("BackboneWithFPN::forward", "image", image.shape().dims(), 3);
    return run(body_.forward_stem(image));
  }

  // As above, releasing the image once the stem has read it.
  FeaturePyramid forward(Tensor<float>&& image) const {
    fpn::detail::check_single_image("BackboneWithFPN::forward", "image", image.shape().dims(), 3);
    Tensor<float> stem = body_.forward_stem(image);
    image = Tensor<float>();
    return run(std::move(stem));
  }

  // The maps of the stages the neck takes, without the neck (finest first).
  std::vector<Tensor<float>> forward_stages(TensorView<const float> image) const {
    std::vector<Tensor<float>> taken;
    Tensor<float> x = body_.forward_stem(image);
    std::size_t next = 0;
    for (std::size_t stage = 0; stage < used_stages; ++stage) {
      x = body_.forward_stage(stage, x);
      if (next < Returned::count && Returned::numbers[next] == static_cast<int>(stage) + 1) {
        taken.push_back(x);
        ++next;
      }
    }
    return taken;
  }

  const Body& body() const { return body_; }
  const Neck& neck() const { return neck_; }

 private:
  // The body stage by stage, each taken stage map turned into its lateral as soon as the next
  // stage has read it, so that the bottom-up pass holds out_channels-wide laterals rather than
  // every stage map (ResNet-50's C3 has 512 channels, its lateral 256).
  FeaturePyramid run(Tensor<float> stem) const {
    std::vector<Tensor<float>> laterals;
    laterals.reserve(Returned::count);
    Tensor<float> previous = body_.forward_stage(0, stem);
    stem = Tensor<float>();
    std::size_t next = 0;  // the next returned stage's position in Returned
    for (std::size_t stage = 1; stage <= used_stages; ++stage) {
      Tensor<float> current;
      if (stage < used_stages) current = body_.forward_stage(stage, previous);
      // previous is stage `stage - 1`'s map (stage number `stage`).
      if (next < Returned::count && Returned::numbers[next] == static_cast<int>(stage)) {
        if (stage == used_stages && Neck::extra_reads_stage) {
          laterals.push_back(neck_.lateral_from(next, previous));
          return neck_.top_down(std::move(laterals), &previous);
        }
        laterals.push_back(neck_.lateral_in(next, std::move(previous)));
        ++next;
      }
      previous = std::move(current);
    }
    return neck_.top_down(std::move(laterals), nullptr);
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

// torchvision's resnet{18,34,50,101}_fpn backbones (C2..C5, LastLevelMaxPool).
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
