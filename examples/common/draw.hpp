// Drawing detections onto an 8-bit RGB image for the example programs (not part of the fpn
// library): translucent masks, box outlines and "label score" captions in one colour per class.
// Text is stb_easy_font's (Debian libstb-dev): it describes each glyph as axis-aligned quads of
// whole pixels, which are filled here directly, so no font file or rasteriser is needed.
#pragma once

// stb_easy_font is all static functions; those this file does not call would warn as unused.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/image_io.hpp"
#include "fpn/models/detections.hpp"

namespace fpn::examples {

struct Rgb {
  std::uint8_t red = 0;
  std::uint8_t green = 0;
  std::uint8_t blue = 0;
};

// A saturated colour per class label, the same in every image: hues a golden-ratio step apart,
// so that neighbouring labels get clearly different colours.
inline Rgb class_color(std::int64_t label) {
  const double hue = std::fmod(static_cast<double>(label) * 0.618033988749895, 1.0) * 6.0;
  const double saturation = 0.85;
  const double value = 0.95;
  const int sector = static_cast<int>(hue) % 6;
  const double fraction = hue - std::floor(hue);
  const double p = value * (1.0 - saturation);
  const double q = value * (1.0 - saturation * fraction);
  const double t = value * (1.0 - saturation * (1.0 - fraction));
  const std::array<std::array<double, 3>, 6> sectors = {
      {{value, t, p}, {q, value, p}, {p, value, t}, {p, q, value}, {t, p, value}, {value, p, q}}};
  const auto& rgb = sectors[static_cast<std::size_t>(sector)];
  auto to_byte = [](double channel) {
    return static_cast<std::uint8_t>(std::lround(std::clamp(channel, 0.0, 1.0) * 255.0));
  };
  return {to_byte(rgb[0]), to_byte(rgb[1]), to_byte(rgb[2])};
}

namespace detail {

inline std::uint8_t blend_channel(std::uint8_t base, std::uint8_t over, float alpha) {
  const float mixed = static_cast<float>(base) * (1.0f - alpha) + static_cast<float>(over) * alpha;
  return static_cast<std::uint8_t>(std::clamp(std::lround(mixed), 0L, 255L));
}

// Blends `color` into pixel (x, y) with opacity alpha; pixels outside the image are skipped.
inline void blend_pixel(RgbImage& image, std::int64_t x, std::int64_t y, Rgb color, float alpha) {
  if (x < 0 || y < 0 || x >= image.width || y >= image.height) return;
  std::uint8_t* pixel = image.pixels.data() + (y * image.width + x) * 3;
  pixel[0] = blend_channel(pixel[0], color.red, alpha);
  pixel[1] = blend_channel(pixel[1], color.green, alpha);
  pixel[2] = blend_channel(pixel[2], color.blue, alpha);
}

}  // namespace detail

// Fills [x0, x1) x [y0, y1), clipped to the image, with `color` at opacity alpha.
inline void fill_rect(RgbImage& image, std::int64_t x0, std::int64_t y0, std::int64_t x1,
                      std::int64_t y1, Rgb color, float alpha = 1.0f) {
  x0 = std::max<std::int64_t>(x0, 0);
  y0 = std::max<std::int64_t>(y0, 0);
  x1 = std::min(x1, image.width);
  y1 = std::min(y1, image.height);
  for (std::int64_t y = y0; y < y1; ++y) {
    for (std::int64_t x = x0; x < x1; ++x) detail::blend_pixel(image, x, y, color, alpha);
  }
}

// The outline of box (x1, y1, x2, y2) in pixels, `thickness` pixels wide, drawn inside the box's
// pixel extent and clipped to the image.
inline void draw_box_outline(RgbImage& image, const std::array<float, 4>& box, Rgb color,
                             std::int64_t thickness) {
  const auto x0 = static_cast<std::int64_t>(std::floor(box[0]));
  const auto y0 = static_cast<std::int64_t>(std::floor(box[1]));
  const auto x1 = std::max(x0 + 1, static_cast<std::int64_t>(std::ceil(box[2])));
  const auto y1 = std::max(y0 + 1, static_cast<std::int64_t>(std::ceil(box[3])));
  fill_rect(image, x0, y0, x1, std::min(y0 + thickness, y1), color);  // top
  fill_rect(image, x0, std::max(y1 - thickness, y0), x1, y1, color);  // bottom
  fill_rect(image, x0, y0, std::min(x0 + thickness, x1), y1, color);  // left
  fill_rect(image, std::max(x1 - thickness, x0), y0, x1, y1, color);  // right
}

// Blends the mask's pixels with probability > threshold (PastedMask::binary's rule) in `color`.
inline void draw_mask(RgbImage& image, const PastedMask& mask, Rgb color, float alpha,
                      float threshold = 0.5f) {
  for (std::int64_t y = 0; y < mask.height; ++y) {
    for (std::int64_t x = 0; x < mask.width; ++x) {
      if (mask.probabilities[static_cast<std::size_t>(y * mask.width + x)] > threshold) {
        detail::blend_pixel(image, mask.x0 + x, mask.y0 + y, color, alpha);
      }
    }
  }
}

// stb_easy_font's size of one line of `text` at `scale`: its glyphs are 7 units high in a 12-unit
// line; characters outside printable ASCII are drawn as '?'.
struct TextSize {
  std::int64_t width = 0;
  std::int64_t height = 0;
};

namespace detail {

inline std::string printable_ascii(std::string_view text) {
  std::string result(text);
  for (char& c : result) {
    if (c < 32 || c > 126) c = '?';
  }
  return result;
}

}  // namespace detail

inline TextSize text_size(std::string_view text, std::int64_t scale) {
  std::string printable = detail::printable_ascii(text);
  return {stb_easy_font_width(printable.data()) * scale, 12 * scale};
}

// Draws one line of text with its top-left corner at (x, y), each font unit `scale` pixels.
inline void draw_text(RgbImage& image, std::int64_t x, std::int64_t y, std::string_view text,
                      Rgb color, std::int64_t scale) {
  // stb_easy_font_print's vertex layout: x, y, z as float, then 4 bytes of colour.
  struct Vertex {
    float x, y, z;
    std::uint8_t rgba[4];
  };
  static_assert(sizeof(Vertex) == 16, "stb_easy_font writes 16-byte vertices");
  std::string printable = detail::printable_ascii(text);
  // About 270 bytes a character by stb's estimate; a quad is 4 vertices.
  std::vector<Vertex> vertices(printable.size() * 64 + 64);
  const int quads = stb_easy_font_print(0.0f, 0.0f, printable.data(), nullptr, vertices.data(),
                                        static_cast<int>(vertices.size() * sizeof(Vertex)));
  for (int quad = 0; quad < quads; ++quad) {
    // Vertices 0 and 2 of each quad are opposite corners, in whole font units.
    const Vertex& corner0 = vertices[static_cast<std::size_t>(4 * quad)];
    const Vertex& corner2 = vertices[static_cast<std::size_t>(4 * quad + 2)];
    const auto left = static_cast<std::int64_t>(std::lround(std::min(corner0.x, corner2.x)));
    const auto top = static_cast<std::int64_t>(std::lround(std::min(corner0.y, corner2.y)));
    const auto right = static_cast<std::int64_t>(std::lround(std::max(corner0.x, corner2.x)));
    const auto bottom = static_cast<std::int64_t>(std::lround(std::max(corner0.y, corner2.y)));
    fill_rect(image, x + left * scale, y + top * scale, x + right * scale, y + bottom * scale,
              color);
  }
}

// Black or white, whichever reads better on `background` (by its luma).
inline Rgb text_color_on(Rgb background) {
  const double luma = 0.299 * background.red + 0.587 * background.green + 0.114 * background.blue;
  return luma > 140.0 ? Rgb{0, 0, 0} : Rgb{255, 255, 255};
}

struct DrawStyle {
  float mask_alpha = 0.45f;
  std::int64_t box_thickness = 2;
  std::int64_t text_scale = 1;
};

// A style that stays legible as images grow: thicker lines and larger text on large images.
inline DrawStyle style_for(std::int64_t height, std::int64_t width) {
  DrawStyle style;
  const std::int64_t short_side = std::min(height, width);
  style.box_thickness = short_side >= 400 ? 2 : 1;
  style.text_scale = std::max<std::int64_t>(1, short_side / 400);
  return style;
}

// Draws every detection: all masks first (so that no mask hides a box), then the boxes, then a
// caption per box on a filled strip of the class colour, above the box where there is room and
// inside its top edge otherwise. Detections come by decreasing score, so they are drawn in reverse
// and the most confident ends up on top. caption(detection) gives each caption's text.
template <typename Caption>
void draw_detections(RgbImage& image, const Detections& detections, const Caption& caption,
                     const DrawStyle& style) {
  const auto& items = detections.items;
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    if (it->mask) draw_mask(image, *it->mask, class_color(it->label), style.mask_alpha);
  }
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    draw_box_outline(image, it->box, class_color(it->label), style.box_thickness);
  }
  const std::int64_t padding = style.text_scale;
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    const std::string text = caption(*it);
    const TextSize size = text_size(text, style.text_scale);
    // stb's glyphs sit in the upper 8 units of the 12-unit line; a strip of 10 units holds them.
    const std::int64_t strip_height = 10 * style.text_scale;
    const auto left = static_cast<std::int64_t>(std::floor(it->box[0]));
    const auto top = static_cast<std::int64_t>(std::floor(it->box[1]));
    const std::int64_t strip_top = top - strip_height >= 0 ? top - strip_height : top;
    const Rgb color = class_color(it->label);
    fill_rect(image, left, strip_top, left + size.width + 2 * padding, strip_top + strip_height,
              color);
    draw_text(image, left + padding, strip_top + padding, text, text_color_on(color),
              style.text_scale);
  }
}

}  // namespace fpn::examples
