// The top-down pathway (torchvision's FeaturePyramidNetwork): for each stage map the body hands
// over, inner_i = 1x1 lateral conv of C_i; from the top, inner_i += nearest-resize(inner_{i+1})
// to inner_i's exact size; P_i = 3x3 output conv of inner_i; then the extra-level policy appends
// its levels (LastLevelMaxPool's "pool" by default; nn/extra_levels.hpp).
//
// Any number of input stages: as many laterals as the body's returned stages have widths.
//
// The seed's ablations (FPN paper, Table 1) are the same class with other policies:
//   FPN<64, BiasOnly, LastLevelMaxPool, TopDownWithoutLaterals>   // (e): laterals only at the top
//   FPN<64, BiasOnly, LastLevelMaxPool, LateralsWithoutTopDown>   // (f): no up-and-add
//   FPN<64, BiasOnly, NoExtraLevels, LateralsAndTopDown, FinestLevelOnly>  // (d): P2 alone
// A connection a policy leaves out has no weights in the file (torchvision's nn.Identity in that
// slot), so the slot indices keep their meaning.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/nn/conv.hpp"
#include "fpn/nn/extra_levels.hpp"
#include "fpn/nn/feature_pyramid.hpp"
#include "fpn/nn/norm.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/upsample.hpp"

namespace fpn::nn {

// Which connections the pathway has. laterals: a 1x1 lateral from every stage (else only from the
// top stage, which must reach the output width; a level below the top is then the resized sum
// above alone). top_down: each sum gets the nearest-resized sum above (else a level is its
// lateral alone).
template <typename T>
concept pathway_policy = requires {
  { T::laterals } -> std::convertible_to<bool>;
  { T::top_down } -> std::convertible_to<bool>;
} && (T::laterals || T::top_down);

struct LateralsAndTopDown {  // the FPN: T_k = L_k + up(T_{k+1})
  static constexpr bool laterals = true;
  static constexpr bool top_down = true;
};
struct TopDownWithoutLaterals {  // T_top = L_top, T_k = up(T_{k+1})
  static constexpr bool laterals = false;
  static constexpr bool top_down = true;
};
struct LateralsWithoutTopDown {  // T_k = L_k
  static constexpr bool laterals = true;
  static constexpr bool top_down = false;
};

// Which levels get their 3x3 output conv and are handed on: every input level, or the finest
// only (the coarser sums still flow down into it).
template <typename T>
concept output_policy = requires {
  { T::all } -> std::convertible_to<bool>;
};
struct AllLevels {
  static constexpr bool all = true;
};
struct FinestLevelOnly {
  static constexpr bool all = false;
};

// Norm: how each lateral and output conv block is loaded (nn/norm.hpp): BiasOnly for
// torchvision's default FPN (v1 detectors), FoldedBatchNorm for norm_layer=BatchNorm2d (v2).
// Extra: the extra-level policy (nn::extra_levels). Pathway, Outputs: the connections and the
// levels output (above).
template <int OutChannels, typename Norm = BiasOnly, typename Extra = LastLevelMaxPool,
          typename Pathway = LateralsAndTopDown, typename Outputs = AllLevels>
class FPN {
  static_assert(OutChannels >= 1, "FPN: the output width must be positive");
  static_assert(conv_norm<Norm>,
                "FPN: Norm must be a norm policy (nn::conv_norm, e.g. nn::BiasOnly or "
                "nn::FoldedBatchNorm) with a static Conv2d load(const WeightReader&, ConvSpec)");
  static_assert(extra_levels<Extra>,
                "FPN: Extra must be an extra-level policy (nn::extra_levels, e.g. "
                "nn::LastLevelMaxPool or nn::LastLevelP6P7<nn::FromP5>)");
  static_assert(pathway_policy<Pathway>,
                "FPN: Pathway must be nn::LateralsAndTopDown, nn::TopDownWithoutLaterals or "
                "nn::LateralsWithoutTopDown (static bool laterals and top_down, not both false)");
  static_assert(output_policy<Outputs>, "FPN: Outputs must be nn::AllLevels or nn::FinestLevelOnly");

 public:
  static constexpr std::int64_t out_channels = OutChannels;
  using norm_type = Norm;
  using extra_type = Extra;
  using pathway_type = Pathway;
  using outputs_type = Outputs;
  // Levels appended above the top stage, and whether that needs the top stage map itself.
  static constexpr std::size_t extra_level_count = Extra::levels;
  static constexpr bool extra_reads_stage = Extra::reads_stage;
  // The pyramid's levels for `inputs` stage maps.
  static constexpr std::size_t pyramid_levels(std::size_t inputs) {
    return (Outputs::all ? inputs : 1) + extra_level_count;
  }

  // fpn: a reader scoped to "backbone.fpn."; in_channels and in_strides: the width and nominal
  // stride of each stage map it takes, finest first (at least one).
  static FPN load(const WeightReader& fpn, std::span<const std::int64_t> in_channels,
                  std::span<const std::int64_t> in_strides) {
    if (in_channels.empty() || in_channels.size() != in_strides.size()) {
      fpn::detail::throw_argument_error(
          "FPN::load", "needs one width and one stride per input stage (at least one), got " +
                           std::to_string(in_channels.size()) + " widths and " +
                           std::to_string(in_strides.size()) + " strides");
    }
    const std::size_t count = in_channels.size();
    FPN net;
    net.strides_.assign(in_strides.begin(), in_strides.end());
    net.in_channels_.assign(in_channels.begin(), in_channels.end());
    net.lateral_.resize(count);
    net.output_.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
      const std::string index = std::to_string(i);
      if (has_lateral(i, count)) {
        net.lateral_[i] = Norm::load(fpn.child("inner_blocks." + index),
                                     {in_channels[i], out_channels, 1, 1, 0});
      }
      if (has_output(i)) {
        net.output_[i] = Norm::load(fpn.child("layer_blocks." + index),
                                    {out_channels, out_channels, 3, 1, 1});
      }
    }
    net.extra_ = Extra::load(fpn.child("extra_blocks"), in_channels.back(), out_channels);
    return net;
  }

  std::size_t num_inputs() const { return lateral_.size(); }

  // The whole pathway over the stage maps (finest first), with their memory: each stage map is
  // released once its lateral has read it (or becomes the lateral, when the widths agree).
  FeaturePyramid forward(std::vector<Tensor<float>> stages) const {
    if (stages.size() != lateral_.size()) {
      fpn::detail::throw_argument_error("FPN::forward", "expected " + std::to_string(lateral_.size()) +
                                                            " stage maps, got " +
                                                            std::to_string(stages.size()));
    }
    for (std::size_t index = 0; index < stages.size(); ++index) {
      fpn::detail::check_single_image("FPN::forward", stage_name(index), stages[index].shape().dims(),
                                      in_channels_[index]);
    }
    Tensor<float> top_stage;
    std::vector<Tensor<float>> laterals(stages.size());
    for (std::size_t index = stages.size(); index-- > 0;) {
      if (extra_reads_stage && index + 1 == stages.size()) {
        laterals[index] = lateral_from(index, stages[index]);
        top_stage = std::move(stages[index]);
      } else {
        laterals[index] = lateral_in(index, std::move(stages[index]));
      }
    }
    return top_down(std::move(laterals), extra_reads_stage ? &top_stage : nullptr);
  }
  template <std::size_t N>
  FeaturePyramid forward(const std::array<Tensor<float>, N>& stages) const {
    return forward(std::vector<Tensor<float>>(stages.begin(), stages.end()));
  }

  // The top-down pathway from the lateral maps, in their memory: from the top, each sum is added
  // (nearest-resized) into the lateral below, then its 3x3 output conv overwrites it band by band
  // (Conv2d::forward_bands). At the finest level only its sum, the coarser levels and two bands
  // of rows are held. top_stage: the top stage map, for a policy that reads it (else null).
  FeaturePyramid top_down(std::vector<Tensor<float>>&& laterals,
                          const Tensor<float>* top_stage = nullptr) const {
    if (laterals.size() != lateral_.size()) {
      fpn::detail::throw_argument_error("FPN::top_down", "expected " + std::to_string(lateral_.size()) +
                                                             " lateral maps, got " +
                                                             std::to_string(laterals.size()));
    }
    for (std::size_t index = 0; index < laterals.size(); ++index) {
      fpn::detail::check_single_image("FPN::top_down",
                                      fpn::detail::numbered("lateral ", static_cast<std::int64_t>(index)),
                                      laterals[index].shape().dims(), out_channels);
    }
    if (extra_reads_stage) {
      if (top_stage == nullptr) {
        fpn::detail::throw_argument_error("FPN::top_down", "this FPN's extra levels read the top stage map; "
                                                           "pass it as top_stage");
      }
      fpn::detail::check_single_image("FPN::top_down", "top_stage", top_stage->shape().dims(),
                                      in_channels_.back());
    }
    const std::size_t count = laterals.size();
    for (std::size_t index = count; index-- > 0;) {
      if (Pathway::top_down && index > 0) {
        ops::add_upsampled_nearest_inplace(laterals[index - 1].view(), laterals[index].view());
      }
      if (has_output(index)) {
        output_in_place(index, laterals[index]);
      } else {
        laterals[index] = Tensor<float>();  // summed into the level below: no longer needed
      }
    }
    FeaturePyramid pyramid;
    for (std::size_t index = 0; index < count; ++index) {
      if (has_output(index)) {
        pyramid.push_back(std::to_string(index), strides_[index], std::move(laterals[index]));
      }
    }
    extra_.append(pyramid, top_stage);
    return pyramid;
  }

  // The top-down sum at level index (0 = the finest input): lateral(stage) + nearest-resize(upper)
  // to the lateral's own size; upper is the level above's sum, or null at the top.
  Tensor<float> merge(std::size_t index, const Tensor<float>& stage, const Tensor<float>* upper) const {
    Tensor<float> inner = lateral_from(index, stage);
    if (Pathway::top_down && upper != nullptr) {
      ops::add_upsampled_nearest_inplace(inner.view(), upper->view());
    }
    return inner;
  }

  // The lateral conv of a stage map it owns: in place when the widths agree. Without a lateral at
  // this level, zeros of the map's size (what the sum above is resized to and added into).
  Tensor<float> lateral_in(std::size_t index, Tensor<float> stage) const {
    check_level("FPN::lateral_in", index);
    if (!has_lateral(index, lateral_.size())) return no_lateral(stage);
    if (lateral_[index].spec().in_channels != out_channels) return lateral_[index].forward(stage);
    lateral_[index].forward_in_place(stage);
    return stage;
  }

  // The lateral conv of a stage map the caller keeps.
  Tensor<float> lateral_from(std::size_t index, TensorView<const float> stage) const {
    check_level("FPN::lateral_from", index);
    if (!has_lateral(index, lateral_.size())) return no_lateral(stage);
    return lateral_[index].forward(stage);
  }

  // P_i over its own sum's map, band by band.
  void output_in_place(std::size_t index, Tensor<float>& inner) const {
    output_[index].forward_bands(inner.view(), [&](std::int64_t first, std::int64_t rows,
                                                   const Tensor<float>& band) {
      store_band_rows(band, first, rows, inner);
    });
  }

  // Multiply-adds of level index's lateral and output convs for a stage map of height x width.
  std::int64_t level_macs(std::size_t index, std::int64_t height, std::int64_t width) const {
    return (has_lateral(index, lateral_.size()) ? lateral_[index].macs(height, width) : 0) +
           (has_output(index) ? output_[index].macs(height, width) : 0);
  }

  // Whether input level `index` (of `count`) has a lateral conv, and an output conv.
  static constexpr bool has_lateral(std::size_t index, std::size_t count) {
    return Pathway::laterals || index + 1 == count;
  }
  static constexpr bool has_output(std::size_t index) { return Outputs::all || index == 0; }

  // A level's convs; ArgumentError for one this pathway leaves out.
  const Conv2d& lateral(std::size_t index) const {
    check_level("FPN::lateral", index);
    if (!has_lateral(index, lateral_.size())) absent("FPN::lateral", "lateral", index);
    return lateral_[index];
  }
  const Conv2d& output(std::size_t index) const {
    check_level("FPN::output", index);
    if (!has_output(index)) absent("FPN::output", "output conv", index);
    return output_[index];
  }
  const Extra& extra_block() const { return extra_; }

 private:
  static std::string stage_name(std::size_t index) {
    return fpn::detail::numbered("stage ", static_cast<std::int64_t>(index));
  }

  [[noreturn]] static void absent(std::string_view where, std::string_view what, std::size_t index) {
    fpn::detail::throw_argument_error(where, "this FPN's pathway has no " + std::string(what) +
                                                 " at level " + std::to_string(index));
  }

  // ArgumentError unless index is one of the input levels.
  void check_level(std::string_view where, std::size_t index) const {
    if (index >= lateral_.size()) {
      fpn::detail::throw_argument_error(where, "level " + std::to_string(index) + " of an FPN over " +
                                                   std::to_string(lateral_.size()) + " stage maps");
    }
  }

  // The zeros that stand for an absent lateral; stage must be one image (as the conv would ask).
  static Tensor<float> no_lateral(TensorView<const float> stage) {
    fpn::detail::check_single_image("FPN::lateral", "stage", stage.shape().dims(), -1);
    return Tensor<float>(Shape{1, out_channels, stage.shape()[2], stage.shape()[3]});
  }

  std::vector<std::int64_t> in_channels_;
  std::vector<Conv2d> lateral_;
  std::vector<Conv2d> output_;
  std::vector<std::int64_t> strides_;
  Extra extra_;
};

}  // namespace fpn::nn
