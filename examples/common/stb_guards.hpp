// Inputs that Debian 12's stb_image 2.27 (libstb-dev 0.0~git20220908) must not be handed, found by
// fuzzing the example programs' image loader (tests/fuzz/fuzz_image.cpp): stb would write or read
// out of bounds, overflow an int, or allocate gigabytes for a file of a few hundred bytes. The
// loader (image_io.hpp) checks each encoded image with stb_hazard() first and refuses these with a
// readable reason. tests/fuzz/stb_known_bugs/README.md keeps an input for each and what stb does.
//
// The checks read only the container structure (PNG chunks, JPEG marker segments, the PNM header);
// they accept every well-formed file. stb's JPEG decoding of a scan whose Huffman table no DHT
// segment defined is made safe differently: image_io.hpp gives stb zeroed memory (STBI_MALLOC),
// and an all-zero table decodes every symbol as 0 within bounds.
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

namespace fpn::examples::detail {

inline std::uint32_t read_be32(const unsigned char* at) {
  return std::uint32_t{at[0]} << 24 | std::uint32_t{at[1]} << 16 | std::uint32_t{at[2]} << 8 |
         std::uint32_t{at[3]};
}

inline bool starts_like_png(const unsigned char* bytes, std::size_t size) {
  static constexpr unsigned char signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return size >= 8 && std::equal(std::begin(signature), std::end(signature), bytes);
}

// Walks a PNG's chunks from the first after the signature: visit(type, offset, length, remaining)
// for each chunk whose length and type fit in the file, with `remaining` the bytes after them;
// visit returns whether to go on. Stops after IEND or a chunk longer than what follows it.
template <typename Visit>
void walk_png_chunks(const unsigned char* bytes, std::size_t size, Visit&& visit) {
  for (std::size_t chunk = 8; size - chunk >= 8;) {
    const std::uint64_t length = read_be32(bytes + chunk);
    const std::string_view type(reinterpret_cast<const char*>(bytes) + chunk + 4, 4);
    const std::uint64_t remaining = size - chunk - 8;
    if (!visit(type, chunk, length, remaining) || length > remaining || type == "IEND") return;
    chunk += 8 + static_cast<std::size_t>(length) + std::min<std::size_t>(4, remaining - length);
  }
}

// A PNG chunk that declares more data than the file holds: stb_image reallocates its IDAT buffer
// to the declared length before reading it (2 GiB for a 200-byte file), and a length near 2^32
// makes its doubling loop overflow.
inline std::optional<std::string> png_hazard(const unsigned char* bytes, std::size_t size) {
  std::optional<std::string> hazard;
  walk_png_chunks(bytes, size, [&](std::string_view type, std::size_t chunk, std::uint64_t length,
                                   std::uint64_t remaining) {
    if (length <= remaining) return true;
    std::string printable;
    for (const char c : type) printable += (c >= 0x20 && c < 0x7F) ? c : '?';
    hazard = "its PNG chunk '" + printable + "' at byte " + std::to_string(chunk) + " declares " +
             std::to_string(length) + " bytes of data but only " + std::to_string(remaining) +
             " follow (truncated or corrupt file)";
    return false;
  });
  return hazard;
}

// The PNM header as stbi__pnm_info reads it: "P5" (gray) or "P6" (RGB), then width, height and
// maximum value, each after whitespace and '#' comments. stb accumulates each number in int
// without an overflow check. Its 16-bit images (maximum value > 255) are wrong: it keeps the
// samples' big-endian bytes as they are and then takes the high byte of each as a native integer
// (the sample's low byte, on little-endian machines), and it converts a 16-bit gray image to RGB
// as if it were 8-bit and then reads it as 16-bit, past the end of its buffer.
inline std::optional<std::string> pnm_hazard(const unsigned char* bytes, std::size_t size) {
  std::size_t at = 2;
  auto skip_space_and_comments = [&] {
    while (at < size) {
      const unsigned char c = bytes[at];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') {
        ++at;
      } else if (c == '#') {
        while (at < size && bytes[at] != '\n' && bytes[at] != '\r') ++at;
      } else {
        break;
      }
    }
  };
  static constexpr const char* names[] = {"width", "height", "maximum value"};
  std::int64_t values[3] = {};
  for (int i = 0; i < 3; ++i) {
    skip_space_and_comments();
    for (; at < size && bytes[at] >= '0' && bytes[at] <= '9'; ++at) {
      values[i] = values[i] * 10 + (bytes[at] - '0');
      if (values[i] > INT_MAX) {
        return std::string("its PNM header's ") + names[i] + " has more digits than fit in " +
               std::to_string(INT_MAX);
      }
    }
  }
  if (values[2] > 255) {
    return std::string("it is a 16-bit ") + (bytes[1] == '5' ? "PGM" : "PPM") +
           " (maximum value " + std::to_string(values[2]) +
           "), which stb_image 2.27 decodes incorrectly; convert it to 8 bits";
  }
  return std::nullopt;
}

// What stb takes for a JPEG: 0xFF, any further 0xFF fill bytes, then the SOI marker 0xD8. A DHT
// segment's table of more than 256 codes makes stbi__build_huffman write past its arrays (the
// format allows 16 x 255). Every DHT segment outside entropy-coded data is checked, read table by
// table the way stb reads it (even past the segment's declared length, as stb does before it
// notices).
inline std::optional<std::string> jpeg_hazard(const unsigned char* bytes, std::size_t size,
                                              std::size_t after_soi) {
  std::size_t at = after_soi;
  while (at < size) {
    // The next marker: 0xFF, fill bytes 0xFF, then a byte other than 0x00 (a stuffed 0xFF in
    // entropy-coded data). Anything else is entropy-coded data or junk, which stb skips too.
    if (bytes[at] != 0xFF) {
      ++at;
      continue;
    }
    while (at < size && bytes[at] == 0xFF) ++at;
    if (at >= size) break;
    const unsigned marker = bytes[at++];
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;
    if (marker == 0xD9) break;  // EOI
    if (size - at < 2) break;
    const std::size_t length = std::size_t{bytes[at]} << 8 | bytes[at + 1];
    if (marker == 0xC4) {
      std::int64_t left = static_cast<std::int64_t>(length) - 2;
      std::size_t table = at + 2;
      while (left > 0 && table < size) {
        int codes = 0;
        for (std::size_t i = 1; i <= 16; ++i) codes += table + i < size ? bytes[table + i] : 0;
        if (codes > 256) {
          return "its JPEG Huffman table at byte " + std::to_string(table) + " lists " +
                 std::to_string(codes) + " codes, more than the 256 a table can hold";
        }
        left -= 17 + codes;
        table += 17 + static_cast<std::size_t>(codes);
      }
    }
    at += std::max<std::size_t>(length, 2);
  }
  return std::nullopt;
}

// Why stb_image 2.27 must not decode these bytes, or nothing when it may.
inline std::optional<std::string> stb_hazard(const unsigned char* bytes, std::size_t size) {
  if (starts_like_png(bytes, size)) return png_hazard(bytes, size);
  if (size >= 2 && bytes[0] == 'P' && (bytes[1] == '5' || bytes[1] == '6')) {
    return pnm_hazard(bytes, size);
  }
  std::size_t first = 0;
  while (first < size && bytes[first] == 0xFF) ++first;
  if (first > 0 && first < size && bytes[first] == 0xD8) return jpeg_hazard(bytes, size, first + 1);
  return std::nullopt;
}

}  // namespace fpn::examples::detail
