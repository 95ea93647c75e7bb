// What a detector returns for one image: boxes, labels, scores and, for Mask R-CNN, the mask
// probabilities pasted into the original image. A mask is stored only over the rows and columns
// its box covers (everything outside is 0 by construction), so 100 masks on a large image cost
// kilobytes, not the hundreds of MB of full-image float maps.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace fpn {

// Probabilities over [y0, y0 + height) x [x0, x0 + width) of the original image; 0 elsewhere.
struct PastedMask {
  std::int64_t x0 = 0;
  std::int64_t y0 = 0;
  std::int64_t width = 0;
  std::int64_t height = 0;
  std::vector<float> probabilities;  // row-major [height, width]

  float at(std::int64_t y, std::int64_t x) const {
    if (y < y0 || y >= y0 + height || x < x0 || x >= x0 + width) return 0.0f;
    return probabilities[static_cast<std::size_t>((y - y0) * width + (x - x0))];
  }
  // The full-image binary mask [image_height, image_width], row-major: 1 where the probability
  // is > threshold (strict, as torchvision users' `masks > 0.5`).
  std::vector<std::uint8_t> binary(std::int64_t image_height, std::int64_t image_width,
                                   float threshold = 0.5f) const {
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
