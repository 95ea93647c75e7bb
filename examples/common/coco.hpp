// COCO conventions for the example programs (not part of the fpn library): torchvision's category
// names for its 91 label indices, and masks as COCO run-length encodings (RLE), written exactly as
// pycocotools' mask.encode writes them, so that a results file loads with pycocotools' loadRes.
//
// COCO RLE (pycocotools common/maskApi.c): the h x w binary mask is read in column-major order
// (Fortran order: down the first column, then the next), and `counts` holds the lengths of its
// alternating runs of 0s and 1s, starting with a run of 0s that is empty when the first pixel is 1.
// The counts always sum to h * w. The compressed string form (rleToString) writes each count as a
// little-endian sequence of 5-bit groups, one character per group: the value is the group plus
// 0x20 when more groups follow, plus 48 (so every character is in '0'..'o'); the last group is
// sign-extended. Counts from the fourth on (index i > 2) are written as the difference from the
// count two places before (the run of the same value), which is small for smooth shapes.
#pragma once

#include <array>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"

namespace fpn::examples {

// torchvision's _COCO_CATEGORIES (torchvision/models/_meta.py), indexed by the label its COCO
// detectors return: the 80 COCO classes at their original ids 1..90, "N/A" for the 10 ids in
// 1..90 that COCO left unused, and "__background__" at 0, which a detector never returns.
// clang-format off
inline constexpr std::array<std::string_view, 91> coco_category_names = {
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A",
    "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush"};
// clang-format on

// The name of a torchvision COCO label, or nothing for a label outside 0..90 (a model trained
// with other classes).
inline std::optional<std::string_view> coco_category_name(std::int64_t label) {
  if (label < 0 || label >= static_cast<std::int64_t>(coco_category_names.size())) {
    return std::nullopt;
  }
  return coco_category_names[static_cast<std::size_t>(label)];
}

// pycocotools stores counts as 32-bit unsigned (maskApi.h `uint`).
using RleCounts = std::vector<std::uint32_t>;

namespace detail {

inline void check_mask_size(std::string_view where, std::int64_t height, std::int64_t width) {
  if (height < 0 || width < 0 || (height > 0 && width > UINT32_MAX / height)) {
    fpn::detail::throw_argument_error(
        where, "mask size must be non-negative with at most 2^32 - 1 pixels, got " +
                   std::to_string(height) + "x" + std::to_string(width));
  }
}

}  // namespace detail

// mask: [height, width] row-major, 0 = background, anything else = foreground (as
// PastedMask::binary returns it). Returns the column-major run lengths, starting with a run of 0s.
inline RleCounts rle_encode(std::span<const std::uint8_t> mask, std::int64_t height,
                            std::int64_t width) {
  detail::check_mask_size("rle_encode", height, width);
  if (static_cast<std::int64_t>(mask.size()) != height * width) {
    fpn::detail::throw_argument_error(
        "rle_encode", "a " + std::to_string(height) + "x" + std::to_string(width) + " mask needs " +
                          std::to_string(height * width) + " values, got " +
                          std::to_string(mask.size()));
  }
  RleCounts counts;
  bool value = false;
  std::uint32_t run = 0;
  for (std::int64_t x = 0; x < width; ++x) {
    for (std::int64_t y = 0; y < height; ++y) {
      const bool pixel = mask[static_cast<std::size_t>(y * width + x)] != 0;
      if (pixel != value) {
        counts.push_back(run);
        run = 0;
        value = pixel;
      }
      ++run;
    }
  }
  counts.push_back(run);
  return counts;
}

// The inverse of rle_encode: a [height, width] row-major mask of 0s and 1s. Throws ArgumentError
// unless the counts sum to height * width.
inline std::vector<std::uint8_t> rle_decode(const RleCounts& counts, std::int64_t height,
                                            std::int64_t width) {
  detail::check_mask_size("rle_decode", height, width);
  std::uint64_t total = 0;
  for (std::uint32_t count : counts) total += count;
  if (total != static_cast<std::uint64_t>(height * width)) {
    fpn::detail::throw_argument_error("rle_decode", "counts sum to " + std::to_string(total) +
                                                        ", expected " + std::to_string(height) +
                                                        " * " + std::to_string(width) + " = " +
                                                        std::to_string(height * width));
  }
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(height * width), 0);
  std::int64_t position = 0;  // column-major index
  std::uint8_t value = 0;
  for (std::uint32_t count : counts) {
    for (std::uint32_t i = 0; i < count; ++i, ++position) {
      if (value != 0) {
        const std::int64_t x = position / height;
        const std::int64_t y = position % height;
        mask[static_cast<std::size_t>(y * width + x)] = 1;
      }
    }
    value ^= 1;
  }
  return mask;
}

// pycocotools' compressed string for `counts` (maskApi.c rleToString; see the top of this file).
inline std::string rle_to_string(const RleCounts& counts) {
  std::string text;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    std::int64_t value = counts[i];
    if (i > 2) value -= counts[i - 2];
    bool more = true;
    while (more) {
      // The low 5 bits, then an arithmetic shift: a negative delta ends once only its sign
      // (all ones, -1) is left and the last group's top bit already says "negative".
      auto group = static_cast<int>(value & 0x1f);
      value >>= 5;
      more = (group & 0x10) != 0 ? value != -1 : value != 0;
      if (more) group |= 0x20;
      text.push_back(static_cast<char>(group + 48));
    }
  }
  return text;
}

// The inverse of rle_to_string (maskApi.c rleFrString). Throws ArgumentError for a character
// outside '0'..'o', a string that ends inside a count, or a count outside 0..2^32 - 1.
inline RleCounts rle_from_string(std::string_view text) {
  RleCounts counts;
  std::size_t position = 0;
  while (position < text.size()) {
    std::int64_t value = 0;
    int shift = 0;
    bool more = true;
    while (more) {
      if (position >= text.size()) {
        fpn::detail::throw_argument_error(
            "rle_from_string", "the string ends inside count " + std::to_string(counts.size()));
      }
      const int group = static_cast<unsigned char>(text[position]) - 48;
      if (group < 0 || group > 63) {
        fpn::detail::throw_argument_error(
            "rle_from_string", "character " + std::to_string(position) + " ('" +
                                   std::string(1, text[position]) + "') is outside '0'..'o'");
      }
      if (shift > 40) {
        fpn::detail::throw_argument_error(
            "rle_from_string", "count " + std::to_string(counts.size()) + " has too many digits");
      }
      value |= static_cast<std::int64_t>(group & 0x1f) << shift;
      more = (group & 0x20) != 0;
      ++position;
      shift += 5;
      if (!more && (group & 0x10) != 0) value |= -(std::int64_t{1} << shift);  // sign-extend
    }
    if (counts.size() > 2) value += counts[counts.size() - 2];
    if (value < 0 || value > UINT32_MAX) {
      fpn::detail::throw_argument_error("rle_from_string",
                                        "count " + std::to_string(counts.size()) + " is " +
                                            std::to_string(value) + ", outside 0..2^32 - 1");
    }
    counts.push_back(static_cast<std::uint32_t>(value));
  }
  return counts;
}

// A float for a JSON file as the shortest decimal that reads back as the same float: 0.7 stays
// 0.7 rather than 0.699999988079071 (the float widened to double).
inline double json_number(float value) {
  std::array<char, 32> text{};
  const auto written = std::to_chars(text.data(), text.data() + text.size(), value);
  return std::strtod(std::string(text.data(), written.ptr).c_str(), nullptr);
}

}  // namespace fpn::examples
