// Image files for the example programs (not part of the fpn library): decode PNG, JPEG and binary
// PNM into 8-bit RGB exactly as torchvision's users get them from PIL,
// `Image.open(path).convert("RGB")` (Debian 12's Pillow 9.4), and write PNG with stb_image_write.
//
// The decoders are in image_decoders.cpp (libjpeg-turbo's libjpeg API and libpng, which Pillow
// itself links); each program, test or fuzzer that includes this header compiles or links that
// file, and exactly one of its translation units defines FPN_STB_IMPLEMENTATION before including
// this header, which then compiles stb_image_write there (the examples link
// examples/common/stb_impl.cpp, which does just that).
//
// Conversions, all PIL's:
// - gray -> RGB by copying the value into all three channels; 1, 2 and 4-bit gray scaled to 8 bits
//   (x 255, 85, 17);
// - alpha (gray + alpha, RGBA, a tRNS chunk) is dropped, not composited onto a background;
// - 16 bits per channel -> 8 bits by keeping the high byte (value >> 8), except 16-bit gray
//   without alpha, which PIL opens as 32-bit integers ("I") and clips to 0..255;
// - paletted PNGs are looked up in their PLTE; an index past its end reads PIL's default entry,
//   the gray (index, index, index);
// - JPEG: libjpeg's default (islow) IDCT and fancy upsampling; CMYK and YCCK JPEGs are read with
//   Adobe's inverted polarity and converted as PIL's cmyk2rgb does;
// - PNM: binary P5 (gray) and P6 (RGB) with maximum value 255 only;
// - EXIF orientation is ignored unless DecodeOptions::exif_transpose asks for it (as PIL ignores
//   it unless PIL.ImageOps.exif_transpose is called).
#pragma once

#ifdef FPN_STB_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#endif
#include <stb/stb_image_write.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "common/exif_orientation.hpp"
#include "common/rgb_image.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/shape.hpp"
#include "fpn/io/atomic_file.hpp"

namespace fpn::examples {

// Larger images are refused from their header alone, before any pixel memory is allocated: a
// 64-megapixel RGB image already takes 192 MB decoded (and more while decoding).
inline constexpr std::int64_t default_max_pixels = 64'000'000;

struct DecodeOptions {
  // Images of more pixels are refused from their header; it also bounds the decoders' working
  // memory (image_decoders.cpp).
  std::int64_t max_pixels = default_max_pixels;
  // Turn the image upright by its EXIF Orientation tag, as PIL.ImageOps.exif_transpose does
  // (JPEG APP1 Exif; PNG eXIf before the image data).
  bool exif_transpose = false;
};

namespace detail {

// What a decoder returns: the image as stored, and its EXIF Orientation (1 when absent).
struct DecodedImage {
  RgbImage image;
  int exif_orientation = 1;
};

// The decoders of image_decoders.cpp: each throws IoError naming `source_name`.
DecodedImage decode_png(const unsigned char* bytes, std::size_t size,
                        const std::string& source_name, std::int64_t max_pixels);
DecodedImage decode_jpeg(const unsigned char* bytes, std::size_t size,
                         const std::string& source_name, std::int64_t max_pixels);
DecodedImage decode_pnm(const unsigned char* bytes, std::size_t size,
                        const std::string& source_name, std::int64_t max_pixels);

[[noreturn]] inline void throw_cannot_decode(const std::string& source_name,
                                             const std::string& reason) {
  throw IoError("load_image_rgb: cannot decode '" + source_name + "': " + reason);
}

// width * height > max_pixels for sizes from 0 to 2^32 - 1 (a PNG header's range), where the
// product itself could overflow int64.
inline bool more_pixels_than(std::int64_t width, std::int64_t height, std::int64_t max_pixels) {
  if (width == 0 || height == 0) return max_pixels < 0;
  return height > max_pixels / width;
}

[[noreturn]] inline void throw_too_many_pixels(const std::string& source_name, std::int64_t width,
                                               std::int64_t height, std::int64_t max_pixels) {
  const std::uint64_t pixels =
      static_cast<std::uint64_t>(width) * static_cast<std::uint64_t>(height);
  throw IoError("load_image_rgb: '" + source_name + "' is " + std::to_string(width) + "x" +
                std::to_string(height) + " (" + std::to_string(pixels) +
                " pixels), more than the limit of " + std::to_string(max_pixels) + " pixels");
}

// The refusals every decoder makes from the header, before allocating any pixel memory.
inline void check_header_size(const std::string& source_name, std::int64_t width,
                              std::int64_t height, std::int64_t max_pixels) {
  if (width < 1 || height < 1) {
    throw_cannot_decode(source_name, "its header says " + std::to_string(width) + "x" +
                                         std::to_string(height) + ", no pixels");
  }
  if (more_pixels_than(width, height, max_pixels)) {
    throw_too_many_pixels(source_name, width, height, max_pixels);
  }
}

inline std::vector<unsigned char> read_image_file(const std::filesystem::path& path) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    throw IoError("load_image_rgb: cannot open '" + path.string() + "': no such file");
  }
  if (!std::filesystem::is_regular_file(path, error)) {
    throw IoError("load_image_rgb: cannot open '" + path.string() + "': not a regular file");
  }
  const auto size = std::filesystem::file_size(path, error);
  if (error) {
    throw IoError("load_image_rgb: cannot read the size of '" + path.string() + "'");
  }
  if (size == 0) throw IoError("load_image_rgb: '" + path.string() + "' is empty");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("load_image_rgb: cannot open '" + path.string() + "' for reading");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (static_cast<std::uintmax_t>(in.gcount()) != size) {
    throw IoError("load_image_rgb: cannot read '" + path.string() + "'");
  }
  return bytes;
}

}  // namespace detail

// Decodes the `size` encoded bytes at `bytes` into 8-bit RGB (see the top of this file for the
// conversions); the format is told by its signature, as PIL does. `source_name` names them in
// errors (load_image_rgb passes the path). Throws IoError: empty, unknown, corrupt or truncated
// data (with the decoder's reason), and images of more than options.max_pixels pixels (refused
// from the header, before any pixel memory is allocated).
inline RgbImage load_image_rgb_from_memory(const unsigned char* bytes, std::size_t size,
                                           const std::string& source_name,
                                           const DecodeOptions& options = {}) {
  if (size == 0) throw IoError("load_image_rgb: '" + source_name + "' is empty");
  static constexpr unsigned char png_signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  detail::DecodedImage decoded;
  if (size >= 8 && std::equal(std::begin(png_signature), std::end(png_signature), bytes)) {
    decoded = detail::decode_png(bytes, size, source_name, options.max_pixels);
  } else if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
    // SOI and the next marker: what PIL's JpegImagePlugin accepts as JPEG.
    decoded = detail::decode_jpeg(bytes, size, source_name, options.max_pixels);
  } else if (size >= 2 && bytes[0] == 'P' && bytes[1] >= '1' && bytes[1] <= '6') {
    decoded = detail::decode_pnm(bytes, size, source_name, options.max_pixels);
  } else {
    detail::throw_cannot_decode(
        source_name, "not a PNG, JPEG or PNM file (convert other formats to PNG first)");
  }
  if (options.exif_transpose) {
    decoded.image = apply_exif_orientation(std::move(decoded.image), decoded.exif_orientation);
  }
  return std::move(decoded.image);
}

// As above, with only the pixel limit.
inline RgbImage load_image_rgb_from_memory(const unsigned char* bytes, std::size_t size,
                                           const std::string& source_name,
                                           std::int64_t max_pixels) {
  return load_image_rgb_from_memory(bytes, size, source_name, DecodeOptions{max_pixels, false});
}

// Decodes the image file at `path` into 8-bit RGB (see the top of this file for the conversions).
// Throws IoError naming the path: missing, empty, unreadable, unknown or corrupt/truncated files
// (with the decoder's reason), and images of more than max_pixels pixels (refused from the
// header).
inline RgbImage load_image_rgb(const std::filesystem::path& path,
                               const DecodeOptions& options = {}) {
  const std::vector<unsigned char> bytes = detail::read_image_file(path);
  return load_image_rgb_from_memory(bytes.data(), bytes.size(), path.string(), options);
}

inline RgbImage load_image_rgb(const std::filesystem::path& path, std::int64_t max_pixels) {
  return load_image_rgb(path, DecodeOptions{max_pixels, false});
}

// Encodes `image` as PNG and writes it so that `path` holds either its old content or the whole
// new file (fpn::io::write_file_atomically). Throws ShapeError for an inconsistent image and
// IoError naming the path when encoding or writing fails; `path` is then left as it was.
inline void save_png_atomically(const std::filesystem::path& path, const RgbImage& image) {
  const std::int64_t dims[] = {image.height, image.width, 3};
  if (image.height < 1 || image.width < 1) {
    fpn::detail::throw_shape_error("save_png_atomically", "image", "[H, W, 3] with H, W >= 1",
                                   dims);
  }
  if (static_cast<std::int64_t>(image.pixels.size()) != Shape(dims).numel()) {
    throw ShapeError("save_png_atomically: image is " + format_shape(dims) + " but has " +
                     std::to_string(image.pixels.size()) + " bytes of pixels");
  }
  // stb_image_write sizes its row buffers as (3 * width + 1) * height in int.
  if ((3 * image.width + 1) > INT_MAX / image.height) {
    throw IoError("save_png_atomically: cannot write '" + path.string() +
                  "': " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                  " is too large for stb_image_write");
  }
  std::string encoded;
  auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                               static_cast<std::size_t>(size));
  };
  const int width = static_cast<int>(image.width);
  if (stbi_write_png_to_func(append, &encoded, width, static_cast<int>(image.height), 3,
                             image.pixels.data(), width * 3) == 0) {
    throw IoError("save_png_atomically: cannot encode '" + path.string() + "' as PNG");
  }
  io::write_file_atomically(path, encoded);
}

}  // namespace fpn::examples
