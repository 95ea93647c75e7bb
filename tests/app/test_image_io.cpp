// examples/common/image_io.hpp and image_decoders.cpp: decoding to RGB equal to PIL's
// Image.open(path).convert("RGB") on every JPEG and PNG variant (tools/fixtures/images.py), EXIF
// orientation, refusals with the path and the decoder's reason, the pixel limit checked from the
// header, decompression bombs, and atomic PNG writes.
//
// This file is test_app's one translation unit compiling stb_image_write, which encodes some of
// the inputs here.
#define FPN_STB_IMPLEMENTATION
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/image_io.hpp"
#include "fpn/io/safetensors.hpp"

namespace fpn::examples {
namespace {

namespace fs = std::filesystem;

// Each test gets its own empty folder under the system temporary directory.
class ImageIo : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device entropy;
    directory_ = fs::temp_directory_path() / ("fpn_image_io_" + std::to_string(entropy()));
    fs::create_directories(directory_);
  }
  void TearDown() override {
    std::error_code error;
    fs::permissions(directory_ / "locked", fs::perms::owner_all, error);
    fs::remove_all(directory_, error);
  }

  fs::path path(const std::string& name) const { return directory_ / name; }

  // Writes `bytes` to a new file in the test folder.
  fs::path write_bytes(const std::string& name, const std::string& bytes) const {
    std::ofstream out(path(name), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }

  fs::path directory_;
};

void append(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                             static_cast<std::size_t>(size));
}

// An 8-bit PNG with `channels` interleaved channels, encoded in memory by stb_image_write.
std::string encode_png(int width, int height, int channels, const std::vector<std::uint8_t>& data) {
  std::string bytes;
  EXPECT_NE(stbi_write_png_to_func(append, &bytes, width, height, channels, data.data(),
                                   width * channels),
            0);
  return bytes;
}

std::string encode_jpeg(int width, int height, const std::vector<std::uint8_t>& rgb) {
  std::string bytes;
  EXPECT_NE(stbi_write_jpg_to_func(append, &bytes, width, height, 3, rgb.data(), 95), 0);
  return bytes;
}

// Seeded RGB bytes for a width x height image.
std::vector<std::uint8_t> random_rgb(int width, int height, unsigned seed) {
  std::mt19937 generator(seed);
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(width * height * 3));
  for (auto& value : pixels) value = static_cast<std::uint8_t>(generator() & 0xFF);
  return pixels;
}

std::string png_chunk(const std::string& type, const std::string& data) {
  std::string chunk;
  for (int shift = 24; shift >= 0; shift -= 8) chunk += static_cast<char>((data.size() >> shift) & 0xFF);
  const std::string body = type + data;
  const auto crc = static_cast<std::uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
  chunk += body;
  for (int shift = 24; shift >= 0; shift -= 8) chunk += static_cast<char>((crc >> shift) & 0xFF);
  return chunk;
}

// A PNG signature and the IHDR of an 8-bit RGB image of width x height.
std::string png_header(std::uint32_t width, std::uint32_t height) {
  std::string header;
  for (const std::uint32_t value : {width, height}) {
    for (int shift = 24; shift >= 0; shift -= 8) header += static_cast<char>((value >> shift) & 0xFF);
  }
  header += std::string("\x08\x02\0\0\0", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", header);
}

std::string deflate(const std::string& data) {
  uLongf size = compressBound(static_cast<uLong>(data.size()));
  std::string out(size, '\0');
  EXPECT_EQ(compress2(reinterpret_cast<Bytef*>(out.data()), &size,
                      reinterpret_cast<const Bytef*>(data.data()), static_cast<uLong>(data.size()),
                      9),
            Z_OK);
  out.resize(size);
  return out;
}

template <typename Error, typename Call>
std::string error_message(Call call) {
  try {
    call();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no exception";
  return "";
}

std::string read_all(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST_F(ImageIo, RgbPngRoundTripsThroughSaveAndLoad) {
  RgbImage image{random_rgb(7, 5, 1), 5, 7};
  save_png_atomically(path("out.png"), image);
  const RgbImage loaded = load_image_rgb(path("out.png"));
  EXPECT_EQ(loaded.height, 5);
  EXPECT_EQ(loaded.width, 7);
  EXPECT_EQ(loaded.pixels, image.pixels);
  const nn::ImageView view = loaded.view();
  EXPECT_EQ(view.pixels, loaded.pixels.data());
  EXPECT_EQ(view.height, 5);
  EXPECT_EQ(view.width, 7);
}

TEST_F(ImageIo, GrayIsCopiedIntoAllThreeChannels) {
  const std::vector<std::uint8_t> gray = {0, 17, 128, 200, 254, 255};
  write_bytes("gray.png", encode_png(3, 2, 1, gray));
  const RgbImage loaded = load_image_rgb(path("gray.png"));
  ASSERT_EQ(loaded.height, 2);
  ASSERT_EQ(loaded.width, 3);
  for (std::size_t i = 0; i < gray.size(); ++i) {
    for (std::size_t channel = 0; channel < 3; ++channel) {
      EXPECT_EQ(loaded.pixels[3 * i + channel], gray[i]) << "pixel " << i;
    }
  }
}

TEST_F(ImageIo, GrayAlphaDropsTheAlpha) {
  // (gray, alpha) pairs; alpha 0 must not darken or blank the colour.
  const std::vector<std::uint8_t> gray_alpha = {10, 0, 20, 128, 30, 255, 40, 1};
  write_bytes("gray_alpha.png", encode_png(2, 2, 2, gray_alpha));
  const RgbImage loaded = load_image_rgb(path("gray_alpha.png"));
  ASSERT_EQ(loaded.pixels.size(), 12u);
  for (std::size_t i = 0; i < 4; ++i) {
    for (std::size_t channel = 0; channel < 3; ++channel) {
      EXPECT_EQ(loaded.pixels[3 * i + channel], gray_alpha[2 * i]) << "pixel " << i;
    }
  }
}

TEST_F(ImageIo, RgbaDropsTheAlpha) {
  const std::vector<std::uint8_t> rgba = {1, 2, 3, 0, 4, 5, 6, 128, 7, 8, 9, 255};
  write_bytes("rgba.png", encode_png(3, 1, 4, rgba));
  const RgbImage loaded = load_image_rgb(path("rgba.png"));
  EXPECT_EQ(loaded.pixels, (std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

// tests/app/data is written by tools/make_test_images.py; its 16-bit samples decode to value >> 8.
TEST_F(ImageIo, SixteenBitPngKeepsTheHighByte) {
  const fs::path data = fs::path(FPN_SOURCE_DIR) / "tests" / "app" / "data";
  const RgbImage rgb = load_image_rgb(data / "rgb16_3x2.png");
  ASSERT_EQ(rgb.height, 2);
  ASSERT_EQ(rgb.width, 3);
  EXPECT_EQ(rgb.pixels,
            (std::vector<std::uint8_t>{0x00, 0x00, 0xFF, 0x12, 0x80, 0x80, 0x01, 0xFE, 0x7F, 0xFF,
                                       0x00, 0xAB, 0x20, 0x40, 0x60, 0xFF, 0x00, 0x01}));
  const RgbImage gray_alpha = load_image_rgb(data / "graya16_2x1.png");
  ASSERT_EQ(gray_alpha.height, 1);
  ASSERT_EQ(gray_alpha.width, 2);
  EXPECT_EQ(gray_alpha.pixels, (std::vector<std::uint8_t>{0x12, 0x12, 0x12, 0xF0, 0xF0, 0xF0}));
}

TEST_F(ImageIo, OnePixelAndThreePixelHighStrip) {
  write_bytes("one.png", encode_png(1, 1, 3, {9, 8, 7}));
  const RgbImage one = load_image_rgb(path("one.png"));
  EXPECT_EQ(one.height, 1);
  EXPECT_EQ(one.width, 1);
  EXPECT_EQ(one.pixels, (std::vector<std::uint8_t>{9, 8, 7}));

  const auto strip_pixels = random_rgb(640, 3, 2);
  write_bytes("strip.png", encode_png(640, 3, 3, strip_pixels));
  const RgbImage strip = load_image_rgb(path("strip.png"));
  EXPECT_EQ(strip.height, 3);
  EXPECT_EQ(strip.width, 640);
  EXPECT_EQ(strip.pixels, strip_pixels);
  // The examples hand its view straight to preprocessing (tests/nn/test_transform.cpp: 3x640 ->
  // 6x1333, padded to 32x1344).
  const nn::ImageView view = strip.view();
  EXPECT_EQ(view.pixels, strip.pixels.data());
  EXPECT_EQ(view.height, 3);
  EXPECT_EQ(view.width, 640);
}

TEST_F(ImageIo, JpegDecodesToNearlyTheWrittenColours) {
  std::vector<std::uint8_t> flat(16 * 8 * 3);
  for (std::size_t i = 0; i < flat.size(); i += 3) {
    flat[i] = 200;
    flat[i + 1] = 100;
    flat[i + 2] = 50;
  }
  write_bytes("flat.jpg", encode_jpeg(16, 8, flat));
  const RgbImage loaded = load_image_rgb(path("flat.jpg"));
  ASSERT_EQ(loaded.height, 8);
  ASSERT_EQ(loaded.width, 16);
  for (std::size_t i = 0; i < flat.size(); ++i) {
    EXPECT_NEAR(loaded.pixels[i], flat[i], 3) << "byte " << i;  // JPEG is lossy
  }
}

TEST_F(ImageIo, MissingEmptyAndDirectoryPathsAreRefused) {
  const fs::path missing = path("missing.png");
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(missing); }),
            "load_image_rgb: cannot open '" + missing.string() + "': no such file");
  const fs::path empty = write_bytes("empty.png", "");
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(empty); }),
            "load_image_rgb: '" + empty.string() + "' is empty");
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(directory_); }),
            "load_image_rgb: cannot open '" + directory_.string() + "': not a regular file");
}

TEST_F(ImageIo, GarbageAndTruncatedFilesNameThePathAndTheDecodersReason) {
  const fs::path garbage = write_bytes("garbage.png", "this is not an image, just some text\n");
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(garbage); }),
            "load_image_rgb: cannot decode '" + garbage.string() +
                "': not a PNG, JPEG or PNM file (convert other formats to PNG first)");
  // BMP, GIF, TGA, ... (which stb_image read) are refused the same way.
  const fs::path bmp = write_bytes("image.bmp", std::string("BM\x3a\0\0\0", 6));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(bmp); }),
            "load_image_rgb: cannot decode '" + bmp.string() +
                "': not a PNG, JPEG or PNM file (convert other formats to PNG first)");

  const std::string png = encode_png(32, 16, 3, random_rgb(32, 16, 3));
  const fs::path half_png = write_bytes("half.png", png.substr(0, png.size() / 2));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(half_png); }),
            "load_image_rgb: cannot decode '" + half_png.string() +
                "': its data ends early (truncated file)");
  // Every cut into the image data fails; a file missing only its IEND chunk decodes, as in PIL.
  for (std::size_t length = 1; length + 12 < png.size(); length += 13) {
    const fs::path cut = write_bytes("cut.png", png.substr(0, length));
    EXPECT_THROW((void)load_image_rgb(cut), IoError) << length << " of " << png.size();
  }
  const fs::path no_iend = write_bytes("no_iend.png", png.substr(0, png.size() - 12));
  EXPECT_EQ(load_image_rgb(no_iend).pixels, load_image_rgb_from_memory(
      reinterpret_cast<const unsigned char*>(png.data()), png.size(), "png").pixels);

  // Every cut fails, even one that loses only the final EOI marker (PIL: "image file is
  // truncated").
  const std::string jpeg = encode_jpeg(32, 16, random_rgb(32, 16, 4));
  const fs::path half_jpeg = write_bytes("half.jpg", jpeg.substr(0, jpeg.size() / 2));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(half_jpeg); }),
            "load_image_rgb: cannot decode '" + half_jpeg.string() +
                "': its data ends early (truncated file)");
  for (std::size_t length = 1; length < jpeg.size(); length += 17) {
    const fs::path cut = write_bytes("cut.jpg", jpeg.substr(0, length));
    EXPECT_THROW((void)load_image_rgb(cut), IoError) << length << " of " << jpeg.size();
  }
  const fs::path no_eoi = write_bytes("no_eoi.jpg", jpeg.substr(0, jpeg.size() - 2));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(no_eoi); }),
            "load_image_rgb: cannot decode '" + no_eoi.string() +
                "': its data ends early (truncated file)");
}

// The inputs that tripped stb_image 2.27 (found by fuzzing it) are refused by the new decoders too,
// each with its reason.
TEST_F(ImageIo, InputsThatTrippedStbAreRefusedWithTheReason) {
  // A chunk declaring 0x7FFFFFF0 bytes in a small file (stb allocated that much first): libpng
  // reads a chunk's data in pieces of 8 KB, so the file simply ends early.
  std::string png = encode_png(3, 2, 3, random_rgb(3, 2, 6));
  const std::size_t idat = png.find("IDAT") - 4;
  png.replace(idat, 4, std::string("\x7f\xff\xff\xf0", 4));
  const fs::path long_chunk = write_bytes("long_chunk.png", png);
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(long_chunk); }),
            "load_image_rgb: cannot decode '" + long_chunk.string() +
                "': its data ends early (truncated file)");

  // 16-bit PNM (PIL scales those; these decoders read 8-bit PNM only).
  const fs::path gray16 = write_bytes("gray16.pgm", std::string("P5\n2 1\n65535\n\1\2\3\4", 16));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(gray16); }),
            "load_image_rgb: cannot decode '" + gray16.string() +
                "': it is a PGM with maximum value 65535; only 8-bit PNM (maximum value 255) is "
                "read, convert it to 8 bits");
  const fs::path rgb16 =
      write_bytes("rgb16.ppm", std::string("P6\n1 1\n256\n\x01\x00\x00\x00\x00\x00", 18));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(rgb16); }),
            "load_image_rgb: cannot decode '" + rgb16.string() +
                "': it is a PPM with maximum value 256; only 8-bit PNM (maximum value 255) is "
                "read, convert it to 8 bits");
  const fs::path rgb8 = write_bytes("rgb8.ppm", std::string("P6\n1 1\n255\n\x12\x34\x56", 14));
  EXPECT_EQ(load_image_rgb(rgb8).pixels, (std::vector<std::uint8_t>{0x12, 0x34, 0x56}));
  const fs::path short_ppm = write_bytes("short.ppm", std::string("P6\n2 1\n255\n\x12\x34\x56", 14));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(short_ppm); }),
            "load_image_rgb: cannot decode '" + short_ppm.string() +
                "': its PPM samples are 3 bytes, 2x1 needs 6 (truncated file)");

  // A PNM number beyond int.
  const fs::path wide = write_bytes("wide.ppm", "P6\n99999999999 1\n255\n");
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(wide); }),
            "load_image_rgb: cannot decode '" + wide.string() +
                "': its PNM header's width has more digits than fit in 2147483647");
  // A PGM header of height 0 (stb decoded it to no pixels).
  const fs::path no_height = write_bytes("no_height.pgm", "P5\n34\n 0\n255\n");
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(no_height); }),
            "load_image_rgb: cannot decode '" + no_height.string() +
                "': its header says 34x0, no pixels");

  // A JPEG Huffman table of 16 x 17 = 272 codes (stb wrote past its 257-entry arrays).
  std::string jpeg = "\xff\xd8\xff\xc4";
  jpeg += std::string("\x01\x23\x00", 3) + std::string(16, '\x11') + std::string(272, '\0');
  const fs::path dht = write_bytes("dht.jpg", jpeg);
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(dht); }),
            "load_image_rgb: cannot decode '" + dht.string() + "': Bogus Huffman table definition");
  EXPECT_EQ(load_image_rgb(write_bytes("ok.jpg", encode_jpeg(8, 8, random_rgb(8, 8, 7))))
                .pixels.size(),
            192u);
}

// A PNG signature and an IHDR claiming 100000 x 100000 RGB: refused from the header, before any
// decoding.
TEST_F(ImageIo, HugeHeaderIsRefusedBeforeDecoding) {
  const fs::path huge = write_bytes("huge.png", png_header(100000, 100000));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(huge); }),
            "load_image_rgb: '" + huge.string() +
                "' is 100000x100000 (10000000000 pixels), more than the limit of 64000000 pixels");

  // A binary PPM claiming 9000 x 9000.
  const fs::path big_ppm = write_bytes("big.ppm", "P6\n9000 9000\n255\n");
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(big_ppm); }),
            "load_image_rgb: '" + big_ppm.string() +
                "' is 9000x9000 (81000000 pixels), more than the limit of 64000000 pixels");

  // A JPEG whose frame header claims 60000 x 60000 (libjpeg-turbo itself refuses sides over
  // 65500).
  std::string jpeg = encode_jpeg(8, 8, random_rgb(8, 8, 8));
  const std::size_t sof = jpeg.find("\xff\xc0");
  jpeg.replace(sof + 5, 4, "\xea\x60\xea\x60");
  const fs::path big_jpeg = write_bytes("big.jpg", jpeg);
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(big_jpeg); }),
            "load_image_rgb: '" + big_jpeg.string() +
                "' is 60000x60000 (3600000000 pixels), more than the limit of 64000000 pixels");

  write_bytes("small.png", encode_png(4, 4, 3, random_rgb(4, 4, 5)));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(path("small.png"), 15); }),
            "load_image_rgb: '" + path("small.png").string() +
                "' is 4x4 (16 pixels), more than the limit of 15 pixels");
  EXPECT_EQ(load_image_rgb(path("small.png"), 16).pixels.size(), 48u);
  write_bytes("small.jpg", encode_jpeg(4, 4, random_rgb(4, 4, 5)));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(path("small.jpg"), 15); }),
            "load_image_rgb: '" + path("small.jpg").string() +
                "' is 4x4 (16 pixels), more than the limit of 15 pixels");
}

// Zlib bombs: 4 MiB of zeros deflate to about 4 KB (a 4 MB file would inflate to 4 GiB). Behind a
// header claiming an image that large, the file is refused from the header; behind a small image,
// only the rows the header declares are inflated and the rest is never read (as PIL does).
TEST_F(ImageIo, DecompressionBombsAreRefusedOrNeverInflated) {
  const std::string zeros = deflate(std::string(4 << 20, '\0'));
  ASSERT_LT(zeros.size(), 8000u);
  const fs::path bomb = write_bytes("bomb.png", png_header(37838, 37838) + png_chunk("IDAT", zeros) +
                                                    png_chunk("IEND", ""));
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(bomb); }),
            "load_image_rgb: '" + bomb.string() +
                "' is 37838x37838 (1431714244 pixels), more than the limit of 64000000 pixels");

  const fs::path small_long = write_bytes(
      "small_long.png", png_header(4, 4) + png_chunk("IDAT", zeros) + png_chunk("IEND", ""));
  EXPECT_EQ(load_image_rgb(small_long).pixels, std::vector<std::uint8_t>(4 * 4 * 3, 0));

  // The same stream cut into IDAT chunks of 100 bytes: the rows come from the first, the other
  // chunks are never read.
  std::string chunked = png_header(64, 64);
  for (std::size_t at = 0; at < zeros.size(); at += 100) {
    chunked += png_chunk("IDAT", zeros.substr(at, 100));
  }
  const RgbImage black = load_image_rgb(write_bytes("chunked.png", chunked + png_chunk("IEND", "")));
  EXPECT_EQ(black.pixels, std::vector<std::uint8_t>(64 * 64 * 3, 0));
}

// More scans than any encoder writes: refused before they are all decoded.
TEST_F(ImageIo, JpegWithTooManyScansIsRefused) {
  const std::string jpeg =
      read_all(fs::path(FPN_FIXTURE_DIR) / "images" / "jpeg_progressive_420.jpg");
  const std::size_t first_scan = jpeg.find("\xff\xda");
  ASSERT_NE(first_scan, std::string::npos);
  // The scan runs to the next marker: 0xFF followed by neither a stuffed 0x00 nor a restart.
  std::size_t scan_end = first_scan + 2;
  while (!(static_cast<unsigned char>(jpeg[scan_end]) == 0xFF &&
           jpeg[scan_end + 1] != '\0' &&
           (static_cast<unsigned char>(jpeg[scan_end + 1]) < 0xD0 ||
            static_cast<unsigned char>(jpeg[scan_end + 1]) > 0xD7))) {
    ++scan_end;
  }
  const std::string scan = jpeg.substr(first_scan, scan_end - first_scan);
  std::string many = jpeg.substr(0, first_scan);
  for (int copy = 0; copy < 600; ++copy) many += scan;
  many += jpeg.substr(scan_end);
  const fs::path file = write_bytes("many_scans.jpg", many);
  EXPECT_EQ(error_message<IoError>([&] { (void)load_image_rgb(file); }),
            "load_image_rgb: cannot decode '" + file.string() +
                "': it has more than 500 scans, refused as a likely denial of service");
  // 400 copies are within the limit: decoded (with libjpeg's warnings, silently, as PIL does).
  std::string fewer = jpeg.substr(0, first_scan);
  for (int copy = 0; copy < 400; ++copy) fewer += scan;
  fewer += jpeg.substr(scan_end);
  EXPECT_NO_THROW((void)load_image_rgb(write_bytes("fewer_scans.jpg", fewer)));
}

// Every file of tools/fixtures/images.py decodes to exactly PIL's Image.open(path).convert("RGB")
// (and, for those with an EXIF orientation, PIL.ImageOps.exif_transpose's).
TEST_F(ImageIo, EveryJpegPngAndPnmVariantEqualsPil) {
  const fs::path fixtures(FPN_FIXTURE_DIR);
  const auto reference = io::SafeTensors::open(fixtures / "images.safetensors");
  int cases = 0;
  for (const io::TensorInfo& info : reference.tensors()) {
    const std::string& name = info.name;
    const std::size_t colon = name.find(':');
    const std::string file = name.substr(0, colon);
    const bool transpose = colon != std::string::npos;
    const Tensor<float> expected = reference.load_float(name);
    ASSERT_EQ(expected.shape().rank(), 3u) << name;
    RgbImage decoded;
    try {
      decoded = load_image_rgb(fixtures / "images" / file, {default_max_pixels, transpose});
    } catch (const IoError& error) {
      ADD_FAILURE() << name << ": " << error.what();
      continue;
    }
    ASSERT_EQ(decoded.height, expected.dim(0)) << name;
    ASSERT_EQ(decoded.width, expected.dim(1)) << name;
    std::int64_t mismatches = 0;
    std::int64_t first = -1;
    for (std::int64_t i = 0; i < expected.numel(); ++i) {
      if (decoded.pixels[static_cast<std::size_t>(i)] != std::lround(expected.data()[i])) {
        if (first < 0) first = i;
        ++mismatches;
      }
    }
    EXPECT_EQ(mismatches, 0) << name << ": first at byte " << first << ", "
                             << int{decoded.pixels[static_cast<std::size_t>(std::max<std::int64_t>(first, 0))]}
                             << " vs PIL's "
                             << expected.data()[std::max<std::int64_t>(first, 0)];
    ++cases;
  }
  EXPECT_GE(cases, 60);
  // EXIF orientation 6 (rotate 90 clockwise) swaps the sides; without the option it is ignored.
  const fs::path rotated = fixtures / "images" / "jpeg_exif_6.jpg";
  const RgbImage stored = load_image_rgb(rotated);
  const RgbImage upright = load_image_rgb(rotated, {default_max_pixels, true});
  EXPECT_EQ(stored.height, upright.width);
  EXPECT_EQ(stored.width, upright.height);
}

TEST_F(ImageIo, SaveRefusesInconsistentImages) {
  EXPECT_EQ(error_message<ShapeError>([&] {
              save_png_atomically(path("out.png"), RgbImage{{}, 0, 5});
            }),
            "save_png_atomically: image must be [H, W, 3] with H, W >= 1, got [0, 5, 3]");
  EXPECT_EQ(error_message<ShapeError>([&] {
              save_png_atomically(path("out.png"), RgbImage{std::vector<std::uint8_t>(11), 2, 2});
            }),
            "save_png_atomically: image is [2, 2, 3] but has 11 bytes of pixels");
  EXPECT_FALSE(fs::exists(path("out.png")));
}

TEST_F(ImageIo, FailedSaveLeavesTheTargetAsItWas) {
  const RgbImage image{random_rgb(3, 2, 6), 2, 3};
  // Missing directory: nothing is created.
  const fs::path in_missing = path("missing") / "out.png";
  EXPECT_EQ(error_message<IoError>([&] { save_png_atomically(in_missing, image); }),
            "cannot write '" + in_missing.string() + "': directory '" +
                in_missing.parent_path().string() + "' does not exist");
  EXPECT_FALSE(fs::exists(path("missing")));

  // The rename cannot replace a non-empty directory: it stays, and no temporary file is left.
  fs::create_directories(path("taken.png") / "inside");
  EXPECT_THROW(save_png_atomically(path("taken.png"), image), IoError);
  EXPECT_TRUE(fs::is_directory(path("taken.png") / "inside"));

  // An unwritable directory keeps its old file (not testable as root, who may write anywhere).
  fs::create_directories(path("locked"));
  const fs::path old_file = path("locked") / "out.png";
  save_png_atomically(old_file, RgbImage{random_rgb(2, 2, 7), 2, 2});
  const std::string old_bytes = read_all(old_file);
  fs::permissions(path("locked"), fs::perms::owner_read | fs::perms::owner_exec);
  if (::geteuid() != 0) {
    EXPECT_THROW(save_png_atomically(old_file, image), IoError);
    EXPECT_EQ(read_all(old_file), old_bytes);
  }

  std::size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(directory_)) {
    (void)entry;
    ++entries;
  }
  EXPECT_EQ(entries, 2u);  // taken.png and locked: no stray temporary files
}

}  // namespace
}  // namespace fpn::examples
