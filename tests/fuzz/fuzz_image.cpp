// Fuzz target for the example programs' image loader (examples/common/image_io.hpp, stb_image):
// arbitrary bytes are decoded to RGB. fpn::Error is the expected way to refuse; a crash, any other
// exception, a sanitizer report or a broken invariant below is a finding. Built by
// tests/fuzz/fuzz.cmake: with libFuzzer under Clang, and as a corpus replay under other compilers.
//
// This file is the target's one translation unit compiling stb's implementations, so under Clang
// they are instrumented for coverage and sanitizers like the rest.
#define FPN_STB_IMPLEMENTATION
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

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

// Inputs that reach a known bug of stb_image 2.27 (Debian 12's libstb-dev) that the loader lets
// through, because the input is a valid image: the bug's name, or nullptr. The loader refuses the
// harmful ones itself (examples/common/stb_guards.hpp); tests/fuzz/stb_known_bugs/ keeps an input
// for each and says what stb does with it.
const char* known_stb_bug(const std::uint8_t* data, std::size_t size) {
  // A PNG whose first IDAT chunk is empty: stbi__getn copies its 0 bytes to a buffer not yet
  // allocated, memcpy(nullptr, ..., 0), undefined though harmless in practice.
  const char* bug = nullptr;
  if (fpn::examples::detail::starts_like_png(data, size)) {
    fpn::examples::detail::walk_png_chunks(
        data, size, [&](std::string_view type, std::size_t, std::uint64_t length, std::uint64_t) {
          if (type != "IDAT") return true;
          if (length == 0) bug = "PNG with an empty first IDAT";
          return false;
        });
  }
  return bug;
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
