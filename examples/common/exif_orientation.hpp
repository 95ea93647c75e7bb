// EXIF orientation for the example programs' image loader (not part of the fpn library): the
// Orientation tag (0x0112) of an Exif block's first IFD, and the transposition that
// PIL.ImageOps.exif_transpose (Pillow 9.4) applies for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/rgb_image.hpp"

namespace fpn::examples {

// The Orientation of a TIFF-structured Exif block (`tiff` starts at its "II*\0" or "MM\0*" header,
// after any "Exif\0\0" prefix), or 1 (upright) when the block is malformed or has no such tag.
// As PIL's Exif reader: IFD0 only, a single integer value (BYTE, SHORT or LONG); the first entry
// with the tag counts.
inline int exif_orientation(const unsigned char* tiff, std::size_t size) {
  if (size < 8) return 1;
  const bool little = tiff[0] == 'I' && tiff[1] == 'I' && tiff[2] == 42 && tiff[3] == 0;
  const bool big = tiff[0] == 'M' && tiff[1] == 'M' && tiff[2] == 0 && tiff[3] == 42;
  if (!little && !big) return 1;
  auto read = [&](std::size_t at, int bytes) {
    std::uint32_t value = 0;
    for (int i = 0; i < bytes; ++i) {
      const std::uint32_t byte = tiff[at + static_cast<std::size_t>(i)];
      value |= little ? byte << (8 * i) : byte << (8 * (bytes - 1 - i));
    }
    return value;
  };
  const std::uint32_t ifd = read(4, 4);
  if (ifd > size || size - ifd < 2) return 1;
  const std::uint32_t entries = read(ifd, 2);
  for (std::uint32_t entry = 0; entry < entries; ++entry) {
    const std::size_t at = ifd + 2 + std::size_t{12} * entry;
    if (at + 12 > size) return 1;
    if (read(at, 2) != 0x0112) continue;
    const std::uint32_t type = read(at + 2, 2);
    if (read(at + 4, 4) != 1) return 1;
    const std::uint32_t value = type == 1 ? read(at + 8, 1)
                                : type == 3 ? read(at + 8, 2)
                                : type == 4 ? read(at + 8, 4)
                                            : 1;
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

// An "Exif\0\0"-prefixed block as JPEG's APP1 segment holds it.
inline int exif_orientation_of_app1(const unsigned char* data, std::size_t size) {
  constexpr std::string_view prefix("Exif\0\0", 6);
  if (size < prefix.size() || std::string_view(reinterpret_cast<const char*>(data), 6) != prefix) {
    return 1;
  }
  return exif_orientation(data + prefix.size(), size - prefix.size());
}

// `image` turned upright for EXIF orientation 1..8, as PIL.ImageOps.exif_transpose does: 2 mirror,
// 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
// counter-clockwise. Other values leave it as it is.
inline RgbImage apply_exif_orientation(RgbImage image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const std::int64_t height = image.height;
  const std::int64_t width = image.width;
  const bool swaps = orientation >= 5;  // the output is width x height
  RgbImage out;
  out.height = swaps ? width : height;
  out.width = swaps ? height : width;
  out.pixels.resize(image.pixels.size());
  for (std::int64_t y = 0; y < out.height; ++y) {
    for (std::int64_t x = 0; x < out.width; ++x) {
      // The source pixel (row, column) of output pixel (y, x).
      std::int64_t row = 0;
      std::int64_t column = 0;
      switch (orientation) {
        case 2: row = y, column = width - 1 - x; break;
        case 3: row = height - 1 - y, column = width - 1 - x; break;
        case 4: row = height - 1 - y, column = x; break;
        case 5: row = x, column = y; break;
        case 6: row = height - 1 - x, column = y; break;
        case 7: row = height - 1 - x, column = width - 1 - y; break;
        default: row = x, column = width - 1 - y; break;  // 8
      }
      const std::uint8_t* from = &image.pixels[static_cast<std::size_t>((row * width + column) * 3)];
      std::uint8_t* to = &out.pixels[static_cast<std::size_t>((y * out.width + x) * 3)];
      to[0] = from[0];
      to[1] = from[1];
      to[2] = from[2];
    }
  }
  return out;
}

}  // namespace fpn::examples
