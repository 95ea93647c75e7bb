// Fuzz target for the example programs' image loader (examples/common/image_io.hpp and its
// decoders in image_decoders.cpp, over libjpeg-turbo and libpng): arbitrary bytes are decoded to
// RGB, with and without EXIF transposition. fpn::Error is the expected way to refuse; a crash, a
// hang, any other exception, a sanitizer report or a broken invariant below is a finding. Built by
// tests/fuzz/fuzz.cmake: with libFuzzer under Clang, and as a corpus replay under other compilers.
//
// The decoders' own code is compiled into this target (instrumented); Debian's libjpeg and libpng
// are not, so libFuzzer steers by the wrappers' branches and the sanitizers watch the wrappers.
// This file is the target's one translation unit compiling stb_image_write (image_io.hpp's writer).
#define FPN_STB_IMPLEMENTATION
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/image_io.hpp"

namespace {

// Small enough that a hostile header cannot make the fuzzer run out of memory (4 Mpx decode to
// 12 MB of RGB, and bound libjpeg's working memory to 6 bytes a pixel), large enough for every
// real seed.
constexpr std::int64_t max_pixels = 4'000'000;

void check(bool condition, const std::string& what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_image: %s\n", what.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fpn::examples::RgbImage image;
  try {
    image = fpn::examples::load_image_rgb_from_memory(data, size, "fuzz.image", max_pixels);
  } catch (const fpn::Error&) {
    return 0;
  }
  const std::string dims = std::to_string(image.width) + "x" + std::to_string(image.height);
  check(image.width >= 1 && image.height >= 1, "decoded an empty image " + dims);
  // The limit is checked from the header; the decoder must not then produce more.
  check(image.width * image.height <= max_pixels, "decoded " + dims + " past the pixel limit");
  check(static_cast<std::int64_t>(image.pixels.size()) == image.width * image.height * 3,
        "pixel buffer does not match " + dims);
  // Decoding is deterministic, and EXIF transposition only moves pixels around.
  const fpn::examples::RgbImage upright =
      fpn::examples::load_image_rgb_from_memory(data, size, "fuzz.image", {max_pixels, true});
  check(upright.pixels.size() == image.pixels.size() &&
            upright.width * upright.height == image.width * image.height,
        "EXIF transposition changed " + dims + " to " + std::to_string(upright.width) + "x" +
            std::to_string(upright.height));
  // A limit one pixel short of the image refuses it with an fpn::Error.
  try {
    (void)fpn::examples::load_image_rgb_from_memory(data, size, "fuzz.image",
                                                    image.width * image.height - 1);
    check(false, "decoded " + dims + " again under a limit of one pixel less");
  } catch (const fpn::IoError&) {
  }
  return 0;
}
