// Mask R-CNN R50-FPN on one binary PPM (P6) image: loads, runs detect `repeats` times, prints the
// build, the detections and the median detect time.
//   detect_plain WEIGHTS IMAGE.ppm [repeats]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fpn/fpn.hpp>
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) try {
  if (argc < 3) return std::fprintf(stderr, "usage: %s WEIGHTS IMAGE.ppm [repeats]\n", argv[0]), 2;
  const int repeats = argc > 3 ? std::stoi(argv[3]) : 3;
  std::ifstream file(argv[2], std::ios::binary);
  std::string magic;
  int width = 0, height = 0, maximum = 0;
  file >> magic >> width >> height >> maximum;
  file.get();
  if (magic != "P6" || maximum != 255 || width <= 0 || height <= 0) {
    return std::fprintf(stderr, "%s: not an 8-bit binary PPM\n", argv[2]), 1;
  }
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(width) * height * 3);
  file.read(reinterpret_cast<char*>(pixels.data()), static_cast<std::streamsize>(pixels.size()));
  const auto detector = fpn::MaskRCNNResNet50FPN::load(argv[1]);
  std::vector<double> seconds;
  std::size_t detections = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    detections = detector.detect(fpn::nn::ImageView{pixels.data(), height, width}).items.size();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::ranges::sort(seconds);
  std::printf("%s | %zu detections | detect median %.3f s over %d\n", fpn::build_info().str().c_str(),
              detections, seconds[seconds.size() / 2], repeats);
} catch (const fpn::Error& error) {
  std::fprintf(stderr, "%s\n", error.what());
  return 1;
}
