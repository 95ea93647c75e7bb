// Image files for the example programs (not part of the fpn library): decode PNG, JPEG, BMP, GIF,
// TGA, PSD, HDR, PIC or PNM into 8-bit RGB with stb_image, and write PNG with stb_image_write.
//
// Needs Debian's libstb-dev headers, and exactly one translation unit per program that defines
// FPN_STB_IMPLEMENTATION before including this header, which then compiles stb's implementations
// there (the examples link examples/common/stb_impl.cpp, which does just that).
//
// Conversions, all stb_image's (stbi_load with 3 requested channels):
// - gray -> RGB by copying the value into all three channels;
// - alpha (gray + alpha, RGBA) is dropped, not composited onto a background -- as PIL's
//   Image.convert("RGB") does;
// - 16 bits per channel -> 8 bits by keeping the high byte (value >> 8), so 257 * v maps back to v;
//   16-bit PGM and PPM files are refused, as stb_image 2.27 decodes them wrongly (stb_guards.hpp);
// - paletted PNGs are expanded; EXIF orientation is ignored (as PIL does unless asked).
#pragma once

#ifdef FPN_STB_IMPLEMENTATION
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
// stbi_failure_reason() then returns stb's readable message ("Corrupt PNG") rather than its terse
// code ("bad png sig"); the IoErrors below quote it.
#define STBI_FAILURE_USERMSG
// Zeroed memory for every stb_image allocation: a JPEG scan may use a Huffman table that no DHT
// segment defined, and stb 2.27 then decodes with whatever its heap held, indexing its tables out
// of bounds. An all-zero table decodes every symbol as 0, within bounds (see stb_guards.hpp).
#include <cstdlib>
#define STBI_MALLOC(size) std::calloc(1, size)
#define STBI_REALLOC(pointer, size) std::realloc(pointer, size)
#define STBI_FREE(pointer) std::free(pointer)
#endif
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/shape.hpp"
#include "fpn/io/atomic_file.hpp"
#include "fpn/nn/transform.hpp"
#include "stb_guards.hpp"

namespace fpn::examples {

// 8-bit interleaved RGB, row-major, no row padding: pixels.size() == height * width * 3.
struct RgbImage {
  std::vector<std::uint8_t> pixels;
  std::int64_t height = 0;
  std::int64_t width = 0;

  nn::ImageView view() const { return {pixels.data(), height, width}; }
};

// Larger images are refused from their header alone, before any pixel memory is allocated: a
// 64-megapixel RGB image already takes 192 MB decoded (and more while decoding).
inline constexpr std::int64_t default_max_pixels = 64'000'000;

namespace detail {

// stb_image takes the buffer length as an int; an empty buffer is refused with a clearer message
// than stb's "unknown image type".
inline void check_encoded_size(std::uintmax_t size, const std::string& source_name) {
  if (size == 0) throw IoError("load_image_rgb: '" + source_name + "' is empty");
  if (size > static_cast<std::uintmax_t>(INT_MAX)) {
    throw IoError("load_image_rgb: '" + source_name + "' is " + std::to_string(size) +
                  " bytes, more than stb_image reads (" + std::to_string(INT_MAX) + ")");
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
  check_encoded_size(size, path.string());  // before reading a file stb_image would refuse
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("load_image_rgb: cannot open '" + path.string() + "' for reading");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (static_cast<std::uintmax_t>(in.gcount()) != size) {
    throw IoError("load_image_rgb: cannot read '" + path.string() + "'");
  }
  return bytes;
}

// The width and height a PNG's IHDR claims (bytes 16..23 after the signature and chunk header),
// or nothing if the bytes do not start like a PNG. stb_image's own header check refuses PNGs over
// 2^30 decoded bytes with a generic "unknown type" message; reading IHDR first lets those be
// refused by the pixel limit, with a message that says so.
inline std::optional<std::pair<std::int64_t, std::int64_t>> png_claimed_size(
    const unsigned char* bytes, std::size_t size) {
  if (size < 24 || !starts_like_png(bytes, size) ||
      std::string_view(reinterpret_cast<const char*>(bytes) + 12, 4) != "IHDR") {
    return std::nullopt;
  }
  return std::pair{std::int64_t{read_be32(bytes + 16)}, std::int64_t{read_be32(bytes + 20)}};
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

// stb_image's reason for its last failure on this thread.
inline std::string stb_reason() {
  const char* reason = stbi_failure_reason();
  return reason != nullptr ? reason : "unknown stb_image error";
}

struct StbFree {
  void operator()(stbi_uc* pixels) const { stbi_image_free(pixels); }
};

}  // namespace detail

// Decodes the `size` encoded bytes at `bytes` into 8-bit RGB (see the top of this file for the
// conversions). `source_name` names them in errors (load_image_rgb passes the path). Throws
// IoError: empty, unknown or corrupt/truncated data (with stb_image's reason, or the structural
// reason of stb_guards.hpp), and images of more than max_pixels pixels (refused from the header, before any pixel memory is allocated).
inline RgbImage load_image_rgb_from_memory(const unsigned char* bytes, std::size_t size,
                                           const std::string& source_name,
                                           std::int64_t max_pixels = default_max_pixels) {
  detail::check_encoded_size(size, source_name);
  if (const auto claimed = detail::png_claimed_size(bytes, size);
      claimed && detail::more_pixels_than(claimed->first, claimed->second, max_pixels)) {
    detail::throw_too_many_pixels(source_name, claimed->first, claimed->second, max_pixels);
  }
  if (const auto hazard = detail::stb_hazard(bytes, size)) {
    throw IoError("load_image_rgb: cannot decode '" + source_name + "': " + *hazard);
  }
  const int length = static_cast<int>(size);
  int width = 0;
  int height = 0;
  int channels = 0;
  if (stbi_info_from_memory(bytes, length, &width, &height, &channels) == 0) {
    throw IoError("load_image_rgb: cannot decode '" + source_name + "': " + detail::stb_reason());
  }
  // stb_image 2.27 accepts a PNM header of height 0 and "decodes" it to no pixels.
  if (width < 1 || height < 1) {
    throw IoError("load_image_rgb: cannot decode '" + source_name + "': its header says " +
                  std::to_string(width) + "x" + std::to_string(height) + ", no pixels");
  }
  if (detail::more_pixels_than(width, height, max_pixels)) {
    detail::throw_too_many_pixels(source_name, width, height, max_pixels);
  }
  std::unique_ptr<stbi_uc, detail::StbFree> decoded(
      stbi_load_from_memory(bytes, length, &width, &height, &channels, 3));
  if (decoded == nullptr) {
    throw IoError("load_image_rgb: cannot decode '" + source_name + "': " + detail::stb_reason());
  }
  RgbImage image;
  image.height = height;
  image.width = width;
  image.pixels.assign(decoded.get(), decoded.get() + std::int64_t{width} * height * 3);
  return image;
}

// Decodes the image file at `path` into 8-bit RGB (see the top of this file for the conversions).
// Throws IoError naming the path: missing, empty, unreadable, unknown or corrupt/truncated files
// (with stb_image's reason), and images of more than max_pixels pixels (refused from the header).
inline RgbImage load_image_rgb(const std::filesystem::path& path,
                               std::int64_t max_pixels = default_max_pixels) {
  const std::vector<unsigned char> bytes = detail::read_image_file(path);
  return load_image_rgb_from_memory(bytes.data(), bytes.size(), path.string(), max_pixels);
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
