// The README's library example: load a converted checkpoint, detect, print.
//   detect_minimal maskrcnn_r50.safetensors image.png
#include <algorithm>
#include <cstdio>
#include <fpn/fpn.hpp>

#include "common/image_io.hpp"

int main(int argc, char** argv) try {
  if (argc != 3) return std::fprintf(stderr, "usage: detect_minimal WEIGHTS IMAGE\n"), 2;
  const auto detector = fpn::MaskRCNNResNet50FPN::load(argv[1]);
  const auto image = fpn::examples::load_image_rgb(argv[2]);  // 8-bit RGB from any decoder
  const fpn::Detections result = detector.detect(image.view());
  for (const fpn::Detection& d : result.items) {
    const auto mask = d.mask->binary(result.image_height, result.image_width);  // 0/1, H x W
    std::printf("label %2lld  score %.3f  box [%.1f, %.1f, %.1f, %.1f]  mask area %td\n",
                static_cast<long long>(d.label), d.score, d.box[0], d.box[1], d.box[2], d.box[3],
                std::ranges::count(mask, 1));
  }
} catch (const fpn::Error& error) {
  std::fprintf(stderr, "detect_minimal: %s\n", error.what());
  return 1;
}
