// What a detector returns for one image: boxes, labels, scores and, for Mask R-CNN, the mask
// probabilities pasted into the original image. A mask is stored only over the rows and columns
// its box covers (everything outside is 0 by construction), so 100 masks on a large image cost
// kilobytes, not the hundreds of MB of full-image float maps.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"

namespace fpn {

// Probabilities over [y0, y0 + height) x [x0, x0 + width) of the original image; 0 elsewhere.
struct PastedMask {
  std::int64_t x0 = 0;
  std::int64_t y0 = 0;
  std::int64_t width = 0;
  std::int64_t height = 0;
  std::vector<float> probabilities;  // row-major [height, width]

  // Any (y, x): 0 outside the mask's rectangle.
  float at(std::int64_t y, std::int64_t x) const {
    check_layout("PastedMask::at");
    if (y < y0 || y >= y0 + height || x < x0 || x >= x0 + width) return 0.0f;
    return probabilities[static_cast<std::size_t>((y - y0) * width + (x - x0))];
  }
  // The full-image binary mask [image_height, image_width], row-major: 1 where the probability
  // is > threshold (strict, as torchvision users' `masks > 0.5`).
  // The image must contain the mask's rectangle: a smaller size is refused (ShapeError).
  std::vector<std::uint8_t> binary(std::int64_t image_height, std::int64_t image_width,
                                   float threshold = 0.5f) const {
    check_layout("PastedMask::binary");
    if (image_height < y0 + height || image_width < x0 + width) {
      const std::int64_t got[] = {image_height, image_width};
      detail::throw_shape_error(
          "PastedMask::binary", "the image size",
          "at least [" + std::to_string(y0 + height) + ", " + std::to_string(x0 + width) +
              "] (the mask covers rows " + std::to_string(y0) + ".." + std::to_string(y0 + height) +
              " and columns " + std::to_string(x0) + ".." + std::to_string(x0 + width) + ")",
          got);
    }
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(image_height * image_width), 0);
    for (std::int64_t y = 0; y < height; ++y) {
      for (std::int64_t x = 0; x < width; ++x) {
        if (probabilities[static_cast<std::size_t>(y * width + x)] > threshold) {
          mask[static_cast<std::size_t>((y0 + y) * image_width + x0 + x)] = 1;
        }
      }
    }
    return mask;
  }

  // The fields are public: a mask built or edited by hand must still describe its storage.
  void check_layout(std::string_view where) const {
    if (x0 < 0 || y0 < 0 || width < 0 || height < 0 ||
        probabilities.size() != static_cast<std::size_t>(width * height)) {
      detail::throw_argument_error(
          where, "a mask at (x0 " + std::to_string(x0) + ", y0 " + std::to_string(y0) +
                     ") of " + std::to_string(height) + "x" + std::to_string(width) +
                     " needs x0, y0 >= 0 and height * width probabilities, got " +
                     std::to_string(probabilities.size()));
    }
  }
};

struct Detection {
  std::array<float, 4> box{};  // (x1, y1, x2, y2) in original-image pixels
  std::int64_t label = 0;      // class index; 0 is background and never returned
  float score = 0.0f;
  std::optional<PastedMask> mask;
};

struct Detections {
  std::int64_t image_height = 0;
  std::int64_t image_width = 0;
  std::vector<Detection> items;  // by decreasing score
};

}  // namespace fpn
