// FeaturePyramid: the maps a neck hands to the heads, finest first, each with the name
// torchvision's OrderedDict gives it and its nominal stride. Any number of levels:
//   ResNet-FPN (R-CNN):      "0" "1" "2" "3" "pool"   strides 4 8 16 32 64
//   RetinaNet / FCOS:        "0" "1" "2" "p6" "p7"    strides 8 16 32 64 128
//   MobileNetV3-FPN:         "0" "1" "pool"           strides 32 32 64
// The heads look levels up by name where torchvision does (MultiScaleRoIAlign's featmap_names)
// and take them all, in order, where torchvision does (the RPN and the one-stage heads).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::nn {

struct FeaturePyramid {
  std::vector<Tensor<float>> levels;  // [1, C, H_l, W_l] each, finest first
  std::vector<std::string> names;     // torchvision's key of each level
  // The nominal stride of each level (input pixels per feature pixel). The RPN's anchor strides
  // are computed from the actual sizes (padded size // grid size), as torchvision does; these
  // are for naming and for callers.
  std::vector<std::int64_t> strides;

  std::size_t size() const { return levels.size(); }
  bool empty() const { return levels.empty(); }

  void push_back(std::string name, std::int64_t stride, Tensor<float> map) {
    names.push_back(std::move(name));
    strides.push_back(stride);
    levels.push_back(std::move(map));
  }

  std::optional<std::size_t> index_of(std::string_view name) const {
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return i;
    }
    return std::nullopt;
  }

  // The level named `name`; ArgumentError listing the pyramid's names when there is none.
  const Tensor<float>& at(std::string_view name) const {
    if (const auto index = index_of(name)) return levels[*index];
    fpn::detail::throw_argument_error("FeaturePyramid::at", "no level named \"" + std::string(name) +
                                                                "\"; the levels are " + describe_names());
  }

  // "[0, 1, 2, 3, pool]".
  std::string describe_names() const {
    std::string text = "[";
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (i > 0) text += ", ";
      text += names[i];
    }
    return text + "]";
  }

  // Throws ShapeError unless the three lists agree and every level is one image of `channels`
  // channels (any width when channels < 0).
  void check(std::string_view where, std::int64_t channels = -1) const {
    if (names.size() != levels.size() || strides.size() != levels.size()) {
      fpn::detail::throw_argument_error(
          where, "a pyramid needs one name and one stride per level, got " +
                     std::to_string(levels.size()) + " levels, " + std::to_string(names.size()) +
                     " names and " + std::to_string(strides.size()) + " strides");
    }
    for (std::size_t i = 0; i < levels.size(); ++i) {
      std::string what = "level ";
      what += names[i];
      fpn::detail::check_single_image(where, what, levels[i].shape().dims(), channels);
    }
  }
};

}  // namespace fpn::nn
