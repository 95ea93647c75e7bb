// The example programs' image decoders (image_io.hpp declares them): PNG with libpng, JPEG with
// libjpeg-turbo, binary PNM by hand, each giving the pixels PIL's Image.open(path).convert("RGB")
// gives (Debian 12: Pillow 9.4 over the same libjpeg62-turbo 2.1 and libpng 1.6).
//
// Why libjpeg-turbo's classic libjpeg API (Debian libjpeg62-turbo-dev) and not its TurboJPEG API:
// it is the API PIL's JpegDecode.c drives, so PIL's settings can be mirrored field by field (and
// equal settings on the same library give bit-identical pixels), and it exposes what bounding a
// hostile file needs: the memory manager's max_memory_to_use, a progress monitor that sees each
// scan (Debian 12's TurboJPEG 2.1 has no scan limit), and replaceable error and warning handlers.
//
// Both libraries report errors through a function that must not return (their defaults print
// and exit(), or longjmp): here it records the message and longjmps back into the small guarded_*
// function that armed it. No C++ object with a destructor lives in those functions' frames, nor in
// the C frames the jump crosses, so the jump skips no destructor. Warnings are not printed (PIL
// ignores them too); the ones that mean "the data ended early" are errors, as in PIL.
//
// Memory is bounded by the declared image: every decoder refuses more than max_pixels pixels from
// the header, before it allocates; the RGB result is reserved from the header and filled row by
// row, so a file whose data ends early never touches most of it.
#include <png.h>
// jpeglib.h needs size_t and FILE declared first.
#include <cstddef>
#include <cstdio>
#include <jerror.h>
#include <jpeglib.h>

#include <algorithm>
#include <climits>
#include <csetjmp>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/image_io.hpp"

namespace fpn::examples::detail {
namespace {

// Appends `row` (width pixels of `channels` 8-bit samples: 1 gray, 2 gray + alpha, 3 RGB,
// 4 RGBA) to `pixels` as RGB, dropping alpha as PIL's convert("RGB") does.
void append_rgb_row(std::vector<std::uint8_t>& pixels, const std::uint8_t* row,
                    std::int64_t width, int channels) {
  for (std::int64_t x = 0; x < width; ++x) {
    const std::uint8_t* pixel = row + x * channels;
    if (channels <= 2) {
      pixels.insert(pixels.end(), {pixel[0], pixel[0], pixel[0]});
    } else {
      pixels.insert(pixels.end(), pixel, pixel + 3);
    }
  }
}

// RGB of `width` pixels of 8-bit samples, reserved for `height` rows from the header.
RgbImage reserve_rgb(std::int64_t width, std::int64_t height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.reserve(static_cast<std::size_t>(width * height * 3));
  return image;
}

// ---------------------------------------------------------------------------------------------
// PNG (libpng 1.6)

// libpng's own default width limit (PNG_USER_WIDTH_MAX): a row is buffered whole, twice, so a
// 16-bit RGBA row of this width already takes 8 MB per buffer.
constexpr png_uint_32 max_png_width = 1'000'000;
// Ancillary chunks are read whole (and iCCP/zTXt inflated): at most this much each...
constexpr png_alloc_size_t max_png_chunk_bytes = 8 << 20;
// ...and at most this many kept (sPLT, unknown chunks).
constexpr png_uint_32 max_png_cached_chunks = 128;

struct PngContext {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const unsigned char* bytes = nullptr;
  std::size_t size = 0;
  std::size_t offset = 0;
  png_uint_32 height = 0;
  bool interlaced = false;
  bool reading_rows = false;
  bool rows_complete = false;  // every row is out: reading stopped there
  char message[256] = {};
};

// Every row has been decoded: libpng has moved past the last row (of the last Adam7 pass).
bool png_rows_complete(png_structp png, const PngContext& context) {
  return context.interlaced ? png_get_current_pass_number(png) >= 7
                            : png_get_current_row_number(png) >= context.height;
}

void png_record_error(png_structp png, png_const_charp message) {
  auto* context = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(context->message, sizeof context->message, "%s",
                message != nullptr ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

void png_read_from_memory(png_structp png, png_bytep out, std::size_t length) {
  auto* context = static_cast<PngContext*>(png_get_io_ptr(png));
  // After the last row libpng would inflate whatever image data is left, to warn "Too much image
  // data": up to 1000 times the rest of the file (a 4 MB zlib bomb takes seconds). PIL stops at the
  // last row; so does this, by jumping out as soon as libpng asks for more bytes.
  if (context->reading_rows && png_rows_complete(png, *context)) {
    context->rows_complete = true;
    png_longjmp(png, 1);
  }
  if (length > context->size - context->offset) {
    png_error(png, "its data ends early (truncated file)");
  }
  std::memcpy(out, context->bytes + context->offset, length);
  context->offset += length;
}

// Chunks PIL's convert("RGB") does not use, skipped unread (CRC still checked): libpng's list
// format, 5 bytes a name (with its NUL).
constexpr char ignored_png_chunks[] = "tEXt\0zTXt\0iTXt\0iCCP\0sPLT";

bool guarded_png_read_info(PngContext& context, png_uint_32 max_side) {
  if (setjmp(png_jmpbuf(context.png)) != 0) return false;
  png_set_user_limits(context.png, std::min(max_side, max_png_width), max_side);
  png_set_chunk_malloc_max(context.png, max_png_chunk_bytes);
  png_set_chunk_cache_max(context.png, max_png_cached_chunks);
  png_set_keep_unknown_chunks(context.png, PNG_HANDLE_CHUNK_NEVER,
                              reinterpret_cast<png_const_bytep>(ignored_png_chunks),
                              sizeof ignored_png_chunks / 5);
  png_set_read_fn(context.png, &context, png_read_from_memory);
  png_read_info(context.png, context.info);
  return true;
}

// The transformations up to PIL's samples: 1/2/4-bit gray scaled to 8 bits, palette indices
// unpacked to a byte each, 16-bit samples cut to their high byte except 16-bit gray (PIL's "I",
// clipped later). Alpha (and tRNS, never expanded) is dropped after. Sets `passes`.
bool guarded_png_set_transforms(PngContext& context, int& passes) {
  if (setjmp(png_jmpbuf(context.png)) != 0) return false;
  const int color_type = png_get_color_type(context.png, context.info);
  const int bit_depth = png_get_bit_depth(context.png, context.info);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) {
    png_set_expand_gray_1_2_4_to_8(context.png);
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_packing(context.png);
  if (bit_depth == 16 && color_type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(context.png);
  passes = png_set_interlace_handling(context.png);
  png_read_update_info(context.png, context.info);
  return true;
}

bool guarded_png_read_row(PngContext& context, unsigned char* row) {
  if (setjmp(png_jmpbuf(context.png)) != 0) return context.rows_complete;
  png_read_row(context.png, row, nullptr);
  return true;
}

struct PngStructs {
  PngContext* context;
  ~PngStructs() { png_destroy_read_struct(&context->png, &context->info, nullptr); }
};

// The width and height a PNG's IHDR claims, read before libpng sees the file so that any size
// over the limit (libpng refuses those beyond 2^31 - 1 with its own message) gets the pixel
// limit's message.
void check_png_claimed_size(const unsigned char* bytes, std::size_t size,
                            const std::string& source_name, std::int64_t max_pixels) {
  if (size < 24 || std::memcmp(bytes + 12, "IHDR", 4) != 0) return;
  auto be32 = [](const unsigned char* at) {
    return std::int64_t{at[0]} << 24 | std::int64_t{at[1]} << 16 | std::int64_t{at[2]} << 8 |
           std::int64_t{at[3]};
  };
  const std::int64_t width = be32(bytes + 16);
  const std::int64_t height = be32(bytes + 20);
  if (width > 0 && height > 0 && more_pixels_than(width, height, max_pixels)) {
    throw_too_many_pixels(source_name, width, height, max_pixels);
  }
}

// ---------------------------------------------------------------------------------------------
// JPEG (libjpeg-turbo 2.1, libjpeg API)

// A progressive JPEG with more scans is refused: each scan may revisit every coefficient of the
// image, so a small file of many tiny scans takes minutes (libjpeg-turbo's "progressive JPEG
// DoS"; its own fuzzers and djpeg -maxscans use 500; real encoders write about ten).
constexpr int max_jpeg_scans = 500;
// Working memory beyond the coefficient arrays, which are 2 bytes per sample: a progressive or
// multi-scan image keeps all of them, 6 bytes per pixel for 4:4:4 YCbCr (less when subsampled).
constexpr long jpeg_memory_slack = 64L << 20;
constexpr long jpeg_bytes_per_pixel = 6;

struct JpegContext {
  jpeg_decompress_struct info{};
  jpeg_error_mgr error{};
  jpeg_progress_mgr progress{};
  std::jmp_buf jump{};
  bool created = false;
  char message[JMSG_LENGTH_MAX + 160] = {};
};

[[noreturn]] void jpeg_fail(j_common_ptr common) {
  auto* context = static_cast<JpegContext*>(common->client_data);
  if (common->err->msg_code == JERR_NO_BACKING_STORE) {
    std::snprintf(context->message, sizeof context->message,
                  "decoding it needs more than the %ld MB of working memory allowed for its "
                  "pixel limit",
                  common->mem->max_memory_to_use >> 20);
  } else if (common->err->msg_code == JWRN_JPEG_EOF) {
    std::snprintf(context->message, sizeof context->message,
                  "its data ends early (truncated file)");
  } else {
    common->err->format_message(common, context->message);
  }
  std::longjmp(context->jump, 1);
}

// Warnings (level -1) are corrupt-data notices that PIL ignores, except that the data ran out
// (libjpeg would then go on with a fake EOI marker, PIL says "image file is truncated").
void jpeg_message(j_common_ptr common, int level) {
  if (level < 0 && common->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(common);
}

void jpeg_check_scans(j_common_ptr common) {
  auto* info = reinterpret_cast<j_decompress_ptr>(common);
  if (info->input_scan_number > max_jpeg_scans) {
    auto* context = static_cast<JpegContext*>(common->client_data);
    std::snprintf(context->message, sizeof context->message,
                  "it has more than %d scans, refused as a likely denial of service",
                  max_jpeg_scans);
    std::longjmp(context->jump, 1);
  }
}

bool guarded_jpeg_read_header(JpegContext& context, const unsigned char* bytes,
                              std::size_t size) {
  if (setjmp(context.jump) != 0) return false;
  context.info.err = jpeg_std_error(&context.error);
  context.error.error_exit = jpeg_fail;
  context.error.emit_message = jpeg_message;
  jpeg_create_decompress(&context.info);
  context.created = true;
  context.info.client_data = &context;
  context.progress.progress_monitor = jpeg_check_scans;
  context.info.progress = &context.progress;
  jpeg_mem_src(&context.info, bytes, static_cast<unsigned long>(size));
  jpeg_save_markers(&context.info, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&context.info, TRUE);
  return true;
}

bool guarded_jpeg_start(JpegContext& context) {
  if (setjmp(context.jump) != 0) return false;
  jpeg_start_decompress(&context.info);
  return true;
}

bool guarded_jpeg_read_row(JpegContext& context, unsigned char* row) {
  if (setjmp(context.jump) != 0) return false;
  JSAMPROW rows[] = {row};
  return jpeg_read_scanlines(&context.info, rows, 1) == 1;
}

bool guarded_jpeg_finish(JpegContext& context) {
  if (setjmp(context.jump) != 0) return false;
  jpeg_finish_decompress(&context.info);
  return true;
}

struct JpegStruct {
  JpegContext* context;
  ~JpegStruct() {
    if (context->created) jpeg_destroy_decompress(&context->info);
  }
};

// The first APP1 segment holding Exif, as PIL's JpegImagePlugin keeps it.
int jpeg_exif_orientation(const jpeg_decompress_struct& info) {
  for (jpeg_saved_marker_ptr marker = info.marker_list; marker != nullptr;
       marker = marker->next) {
    if (marker->marker == JPEG_APP0 + 1 && marker->data_length >= 6 &&
        std::memcmp(marker->data, "Exif\0\0", 6) == 0) {
      return exif_orientation_of_app1(marker->data, marker->data_length);
    }
  }
  return 1;
}

// CMYK as libjpeg outputs it for PIL's rawmode "CMYK;I" (Adobe's inverted polarity, which PIL
// always assumes) to RGB with PIL's cmyk2rgb: channel = nk - nk * c / 255 (rounded as its
// MULDIV255), nk = 255 - k.
void append_cmyk_row(std::vector<std::uint8_t>& pixels, const std::uint8_t* row,
                     std::int64_t width) {
  auto muldiv255 = [](int a, int b) {
    const int product = a * b + 128;
    return ((product >> 8) + product) >> 8;
  };
  for (std::int64_t x = 0; x < width; ++x) {
    const std::uint8_t* stored = row + 4 * x;
    const int nk = stored[3];  // 255 - k, k being 255 - stored
    for (int channel = 0; channel < 3; ++channel) {
      const int c = 255 - stored[channel];
      pixels.push_back(static_cast<std::uint8_t>(std::clamp(nk - muldiv255(c, nk), 0, 255)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// PNM

// Skips whitespace and '#' comments, then reads a decimal number of PNM's header.
std::int64_t read_pnm_number(const unsigned char* bytes, std::size_t size, std::size_t& at,
                             const char* name, const std::string& source_name) {
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
  if (at >= size || bytes[at] < '0' || bytes[at] > '9') {
    throw_cannot_decode(source_name, std::string("its PNM header's ") + name +
                                         (at >= size ? " is missing" : " is not a number"));
  }
  std::int64_t value = 0;
  for (; at < size && bytes[at] >= '0' && bytes[at] <= '9'; ++at) {
    value = value * 10 + (bytes[at] - '0');
    if (value > INT_MAX) {
      throw_cannot_decode(source_name, std::string("its PNM header's ") + name +
                                           " has more digits than fit in " +
                                           std::to_string(INT_MAX));
    }
  }
  return value;
}

}  // namespace

DecodedImage decode_png(const unsigned char* bytes, std::size_t size,
                        const std::string& source_name, std::int64_t max_pixels) {
  check_png_claimed_size(bytes, size, source_name, max_pixels);
  PngContext context;
  context.bytes = bytes;
  context.size = size;
  context.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &context, png_record_error,
                                       png_ignore_warning);
  if (context.png == nullptr) throw_cannot_decode(source_name, "libpng cannot start");
  const PngStructs destroy{&context};
  context.info = png_create_info_struct(context.png);
  if (context.info == nullptr) throw_cannot_decode(source_name, "libpng cannot start");

  const auto max_side =
      static_cast<png_uint_32>(std::clamp<std::int64_t>(max_pixels, 1, PNG_UINT_31_MAX));
  if (!guarded_png_read_info(context, max_side)) throw_cannot_decode(source_name, context.message);
  const std::int64_t width = png_get_image_width(context.png, context.info);
  const std::int64_t height = png_get_image_height(context.png, context.info);
  check_header_size(source_name, width, height, max_pixels);
  const int color_type = png_get_color_type(context.png, context.info);
  const int bit_depth = png_get_bit_depth(context.png, context.info);

  DecodedImage decoded;
  png_bytep exif = nullptr;
  png_uint_32 exif_size = 0;
  if (png_get_eXIf_1(context.png, context.info, &exif_size, &exif) != 0 && exif != nullptr) {
    decoded.exif_orientation = exif_orientation(exif, exif_size);
  }
  // PIL's palette: the PLTE entries, then its default gray ramp for indices past them.
  std::uint8_t palette[256][3];
  for (int index = 0; index < 256; ++index) {
    palette[index][0] = palette[index][1] = palette[index][2] = static_cast<std::uint8_t>(index);
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp entries = nullptr;
    int num_entries = 0;
    if (png_get_PLTE(context.png, context.info, &entries, &num_entries) != 0) {
      for (int index = 0; index < std::min(num_entries, 256); ++index) {
        palette[index][0] = entries[index].red;
        palette[index][1] = entries[index].green;
        palette[index][2] = entries[index].blue;
      }
    }
  }

  int passes = 1;
  if (!guarded_png_set_transforms(context, passes)) {
    throw_cannot_decode(source_name, context.message);
  }
  const bool gray16 = color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16;
  const int channels = png_get_channels(context.png, context.info);
  const std::size_t row_bytes = png_get_rowbytes(context.png, context.info);
  if (row_bytes != static_cast<std::size_t>(width) * channels * (gray16 ? 2 : 1)) {
    throw_cannot_decode(source_name, "libpng's rows are " + std::to_string(row_bytes) +
                                         " bytes, not the expected " +
                                         std::to_string(width * channels * (gray16 ? 2 : 1)));
  }

  context.height = static_cast<png_uint_32>(height);
  context.interlaced = passes > 1;
  context.reading_rows = true;
  decoded.image = reserve_rgb(width, height);
  std::vector<std::uint8_t>& pixels = decoded.image.pixels;
  auto append_row = [&](const std::uint8_t* row) {
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
      for (std::int64_t x = 0; x < width; ++x) {
        pixels.insert(pixels.end(), palette[row[x]], palette[row[x]] + 3);
      }
    } else if (gray16) {
      // PIL opens 16-bit gray as 32-bit integers ("I") and its I -> RGB conversion clips.
      for (std::int64_t x = 0; x < width; ++x) {
        const int value = row[2 * x] << 8 | row[2 * x + 1];
        const auto gray = static_cast<std::uint8_t>(std::min(value, 255));
        pixels.insert(pixels.end(), {gray, gray, gray});
      }
    } else {
      append_rgb_row(pixels, row, width, channels);
    }
  };
  if (passes == 1) {
    // Row by row: only as much of the image data is inflated as the header's rows need, and
    // anything after them is never read.
    std::vector<std::uint8_t> row(row_bytes);
    for (std::int64_t y = 0; y < height; ++y) {
      if (!guarded_png_read_row(context, row.data())) {
        throw_cannot_decode(source_name, context.message);
      }
      append_row(row.data());
    }
  } else {
    // Adam7: every pass writes its pixels into the whole image. Not zeroed, so that pages are
    // touched only as rows arrive; every byte is written by the last pass.
    const auto interlaced = std::make_unique_for_overwrite<std::uint8_t[]>(
        row_bytes * static_cast<std::size_t>(height));
    for (int pass = 0; pass < passes; ++pass) {
      for (std::int64_t y = 0; y < height; ++y) {
        if (!guarded_png_read_row(context, interlaced.get() + row_bytes * y)) {
          throw_cannot_decode(source_name, context.message);
        }
      }
    }
    for (std::int64_t y = 0; y < height; ++y) append_row(interlaced.get() + row_bytes * y);
  }
  return decoded;
}

DecodedImage decode_jpeg(const unsigned char* bytes, std::size_t size,
                         const std::string& source_name, std::int64_t max_pixels) {
  JpegContext context;
  const JpegStruct destroy{&context};
  if (!guarded_jpeg_read_header(context, bytes, size)) {
    throw_cannot_decode(source_name, context.message);
  }
  jpeg_decompress_struct& info = context.info;
  const std::int64_t width = info.image_width;
  const std::int64_t height = info.image_height;
  check_header_size(source_name, width, height, max_pixels);
  // PIL's JpegImagePlugin: 1 component is "L", 3 "RGB", 4 "CMYK" (rawmode "CMYK;I"), others
  // refused; its JpegDecode.c asks libjpeg for that colour space and otherwise keeps libjpeg's
  // defaults (islow IDCT, fancy upsampling, no scaling), as here.
  switch (info.num_components) {
    case 1: info.out_color_space = JCS_GRAYSCALE; break;
    case 3: info.out_color_space = JCS_RGB; break;
    case 4: info.out_color_space = JCS_CMYK; break;
    default:
      throw_cannot_decode(source_name, "it has " + std::to_string(info.num_components) +
                                           " components; only 1 (gray), 3 (YCbCr or RGB) and 4 "
                                           "(CMYK or YCCK) are images (as in PIL)");
  }
  const std::int64_t budget = std::min<std::int64_t>(
      max_pixels, (LONG_MAX - jpeg_memory_slack) / jpeg_bytes_per_pixel);
  info.mem->max_memory_to_use = static_cast<long>(budget) * jpeg_bytes_per_pixel +
                                jpeg_memory_slack;
  DecodedImage decoded;
  decoded.exif_orientation = jpeg_exif_orientation(info);

  if (!guarded_jpeg_start(context)) throw_cannot_decode(source_name, context.message);
  const int channels = info.output_components;
  decoded.image = reserve_rgb(width, height);
  std::vector<std::uint8_t> row(static_cast<std::size_t>(width * channels));
  for (std::int64_t y = 0; y < height; ++y) {
    if (!guarded_jpeg_read_row(context, row.data())) {
      throw_cannot_decode(source_name, context.message[0] != '\0'
                                           ? context.message
                                           : "its data ends early (truncated file)");
    }
    if (channels == 4) {
      append_cmyk_row(decoded.image.pixels, row.data(), width);
    } else {
      append_rgb_row(decoded.image.pixels, row.data(), width, channels);
    }
  }
  // Reads up to EOI: PIL refuses a file that ends before it.
  if (!guarded_jpeg_finish(context)) throw_cannot_decode(source_name, context.message);
  return decoded;
}

DecodedImage decode_pnm(const unsigned char* bytes, std::size_t size,
                        const std::string& source_name, std::int64_t max_pixels) {
  const unsigned char kind = bytes[1];
  if (kind != '5' && kind != '6') {
    throw_cannot_decode(source_name, std::string("it is a P") + static_cast<char>(kind) +
                                         " PNM file; only binary P5 (gray) and P6 (RGB) are "
                                         "read, convert it to PNG");
  }
  const char* format = kind == '5' ? "PGM" : "PPM";
  std::size_t at = 2;
  const std::int64_t width = read_pnm_number(bytes, size, at, "width", source_name);
  const std::int64_t height = read_pnm_number(bytes, size, at, "height", source_name);
  const std::int64_t max_value = read_pnm_number(bytes, size, at, "maximum value", source_name);
  check_header_size(source_name, width, height, max_pixels);
  if (max_value != 255) {
    throw_cannot_decode(source_name, std::string("it is a ") + format + " with maximum value " +
                                         std::to_string(max_value) +
                                         "; only 8-bit PNM (maximum value 255) is read, convert "
                                         "it to 8 bits");
  }
  ++at;  // the one whitespace byte before the samples
  const int channels = kind == '5' ? 1 : 3;
  const std::uint64_t needed =
      static_cast<std::uint64_t>(width) * static_cast<std::uint64_t>(height) * channels;
  const std::uint64_t available = at < size ? size - at : 0;
  if (available < needed) {
    throw_cannot_decode(source_name, "its " + std::string(format) + " samples are " +
                                         std::to_string(available) + " bytes, " +
                                         std::to_string(width) + "x" + std::to_string(height) +
                                         " needs " + std::to_string(needed) +
                                         " (truncated file)");
  }
  DecodedImage decoded;
  decoded.image = reserve_rgb(width, height);
  for (std::int64_t y = 0; y < height; ++y) {
    append_rgb_row(decoded.image.pixels, bytes + at + y * width * channels, width, channels);
  }
  return decoded;
}

}  // namespace fpn::examples::detail
