// The example programs' decoded image (not part of the fpn library).
#pragma once

#include <cstdint>
#include <vector>

#include "fpn/nn/transform.hpp"

namespace fpn::examples {

// 8-bit interleaved RGB, row-major, no row padding: pixels.size() == height * width * 3.
struct RgbImage {
  std::vector<std::uint8_t> pixels;
  std::int64_t height = 0;
  std::int64_t width = 0;

  nn::ImageView view() const { return {pixels.data(), height, width}; }
};

}  // namespace fpn::examples
