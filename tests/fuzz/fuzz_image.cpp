// Fuzz target for the example programs' image loader (examples/common/image_io.hpp, stb_image):
// arbitrary bytes are decoded to RGB. fpn::Error is the expected way to refuse; a crash, any other
// exception, a sanitizer report or a broken invariant below is a finding. Built by
// tests/fuzz/fuzz.cmake: with libFuzzer under Clang, and as a corpus replay under other compilers.
//
// This file is the target's one translation unit compiling stb's implementations, so under Clang
// they are instrumented for coverage and sanitizers like the rest.
#define FPN_STB_IMPLEMENTATION
#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>

#include "common/image_io.hpp"

namespace {

// Small enough that a hostile header cannot make the fuzzer run out of memory (4 Mpx decode to
// 12 MB of RGB, plus stb's working buffers), large enough for every real seed.
constexpr std::int64_t max_pixels = 4'000'000;

void check(bool condition, const std::string& what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_image: %s\n", what.c_str());
    std::abort();
  }
}

// Inputs that reach known bugs of stb_image 2.27 (Debian 12's libstb-dev), which fpn's examples
// decode with: the bug's name, or nullptr. The fuzzer skips them so that it can go on to find new
// problems; tests/fuzz/stb_known_bugs/ keeps an input for each and says what stb does with it.
// Once the examples decode with a fixed stb_image, this function should go.
const char* known_stb_bug(const std::uint8_t* data, std::size_t size) {
  // stbi__get8 reads past the end as 0.
  auto byte_at = [&](std::size_t at) -> int { return at < size ? data[at] : 0; };
  // What stb takes for a JPEG: 0xFF, any further 0xFF fill bytes, then the SOI marker 0xD8.
  // Its Huffman decoding writes out of bounds for a table of more than 256 codes
  // (stbi__build_huffman), and reads far out of bounds, even SEGVs, with a table that no DHT
  // segment defined (stbi__jpeg_huff_decode on uninitialised memory). The second cannot be told
  // from the bytes without decoding them, so no JPEG is fuzzed until stb is fixed.
  std::size_t first = 0;
  while (first < size && data[first] == 0xFF) ++first;
  if (first > 0 && first < size && data[first] == 0xD8) return "JPEG Huffman decoding";

  // A PNG whose first IDAT chunk is empty: stbi__getn copies its 0 bytes to a buffer not yet
  // allocated, memcpy(nullptr, ..., 0), undefined though harmless in practice.
  static constexpr std::uint8_t png_signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::equal(std::begin(png_signature), std::end(png_signature), data)) {
    auto big_endian = [&](std::size_t at) {
      return std::uint32_t{static_cast<std::uint32_t>(byte_at(at)) << 24 |
                           static_cast<std::uint32_t>(byte_at(at + 1)) << 16 |
                           static_cast<std::uint32_t>(byte_at(at + 2)) << 8 |
                           static_cast<std::uint32_t>(byte_at(at + 3))};
    };
    for (std::size_t chunk = 8; chunk + 8 <= size;) {
      const std::uint32_t length = big_endian(chunk);
      if (std::memcmp(data + chunk + 4, "IDAT", 4) == 0) {
        if (length == 0) return "PNG with an empty first IDAT";
        break;
      }
      chunk += 12 + std::size_t{length};
    }
  }
  const bool pnm = size >= 2 && data[0] == 'P' && (data[1] == '5' || data[1] == '6');
  if (pnm) {
    // The header as stbi__pnm_info reads it: width, height and maximum value, each after
    // whitespace and '#' comments. Values here may come out larger than stb's (its last digit at
    // the end of the input does not count), which only skips more.
    std::size_t at = 2;
    auto skip_space_and_comments = [&] {
      while (at < size) {
        const char c = static_cast<char>(data[at]);
        if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') {
          ++at;
        } else if (c == '#') {
          while (at < size && data[at] != '\n' && data[at] != '\r') ++at;
        } else {
          break;
        }
      }
    };
    std::int64_t values[3] = {};
    for (std::int64_t& value : values) {
      skip_space_and_comments();
      for (; at < size && data[at] >= '0' && data[at] <= '9'; ++at) {
        value = value * 10 + (data[at] - '0');
        // stbi__pnm_getinteger accumulates in int: signed overflow.
        if (value > INT_MAX) return "PNM header number beyond int";
      }
    }
    // A 16-bit gray PNM is converted to RGB as if it were 8-bit (stbi__convert_format, not
    // stbi__convert_format16), and then read as 16-bit: a heap read past the converted buffer.
    if (data[1] == '5' && values[2] > 255) return "16-bit PGM converted as 8-bit";
  }
  return nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (known_stb_bug(data, size) != nullptr) return 0;
  fpn::examples::RgbImage image;
  try {
    image = fpn::examples::load_image_rgb_from_memory(data, size, "fuzz.image", max_pixels);
  } catch (const fpn::Error&) {
    return 0;
  }
  const std::string dims = std::to_string(image.width) + "x" + std::to_string(image.height);
  check(image.width >= 1 && image.height >= 1, "decoded an empty image " + dims);
  // The limit is checked from the header (stbi_info); the decoder must not then produce more.
  check(image.width * image.height <= max_pixels, "decoded " + dims + " past the pixel limit");
  check(static_cast<std::int64_t>(image.pixels.size()) == image.width * image.height * 3,
        "pixel buffer does not match " + dims);
  // A limit one pixel short of the image refuses it with an fpn::Error.
  try {
    (void)fpn::examples::load_image_rgb_from_memory(data, size, "fuzz.image",
                                                    image.width * image.height - 1);
    check(false, "decoded " + dims + " again under a limit of one pixel less");
  } catch (const fpn::IoError&) {
  }
  return 0;
}
