// Per-level throughput of the heads' work on the pyramid, at 800x1216 and 480x640 inputs (P2 is a
// quarter of that, P3 an eighth, ...), 256 channels, synthetic weights:
//   rpn/P<l>:      the RPN head on level l as RegionProposalNetwork runs it: the 3x3 conv (+ReLU)
//                  band by band, each band through the objectness and delta 1x1 convs (3 anchors);
//                  ms and GFLOP/s (2 FLOPs per multiply-add);
//   roi_align7/P<l>, roi_align14/P<l>: RoIAlign of the box head (1000 boxes, 7x7) and of the
//                  mask head (100 boxes, 14x14), sampling ratio 2, every box sized so that the FPN
//                  level rule sends it to level l; ms and ROIs/s.
//
//   fpn_bench_heads --benchmark_filter=800x1216
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>

#include "fpn/nn/conv.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/roi_align.hpp"

namespace {

using fpn::Shape;
using fpn::Tensor;

constexpr std::int64_t channels = 256;
constexpr std::int64_t anchors = 3;

struct Level {
  Tensor<float> feature;  // [1, 256, H / 2^l, W / 2^l]
  std::int64_t image_height, image_width;
  int level;
};

const Level& level_map(std::int64_t height, std::int64_t width, int level) {
  static std::map<std::tuple<std::int64_t, std::int64_t, int>, std::unique_ptr<Level>> cache;
  auto& slot = cache[{height, width, level}];
  if (!slot) {
    const std::int64_t stride = std::int64_t{1} << level;
    Tensor<float> feature(Shape{1, channels, (height + stride - 1) / stride, (width + stride - 1) / stride});
    for (std::int64_t i = 0; i < feature.numel(); ++i) feature.data()[i] = float((i * 7919) % 255) / 255.f - 0.5f;
    slot = std::make_unique<Level>(Level{std::move(feature), height, width, level});
  }
  return *slot;
}

const fpn::nn::WeightReader& synthetic() {
  static const fpn::nn::WeightReader reader(std::make_shared<fpn::nn::SyntheticWeights>());
  return reader;
}

// count boxes of side 112 * 2^(level - 3) (so that floor(4 + log2(side / 224)) == level), spread
// over the image, as RoIAlign's [R, 5] rows (batch index 0).
Tensor<float> boxes_for_level(const Level& map, std::int64_t count) {
  const float side = 112.0f * std::exp2(static_cast<float>(map.level - 3)) * 1.2f;
  Tensor<float> boxes(Shape{count, 5});
  for (std::int64_t i = 0; i < count; ++i) {
    const float fx = static_cast<float>((i * 37) % 101) / 101.0f;
    const float fy = static_cast<float>((i * 59) % 103) / 103.0f;
    const float x0 = fx * std::max(1.0f, static_cast<float>(map.image_width) - side);
    const float y0 = fy * std::max(1.0f, static_cast<float>(map.image_height) - side);
    boxes.at(i, 1) = x0;
    boxes.at(i, 2) = y0;
    boxes.at(i, 3) = std::min(x0 + side, static_cast<float>(map.image_width));
    boxes.at(i, 4) = std::min(y0 + side, static_cast<float>(map.image_height));
  }
  return boxes;
}

void register_size(std::int64_t height, std::int64_t width) {
  const std::string size = std::to_string(height) + "x" + std::to_string(width);
  for (int level = 2; level <= 6; ++level) {
    const std::string p = fpn::detail::numbered("P", level);
    benchmark::RegisterBenchmark(("rpn/" + size + "/" + p).c_str(), [=](benchmark::State& state) {
      static const auto conv = fpn::nn::Conv2d::load_with_bias(
          synthetic(), "rpn.head.conv.0.0", {channels, channels, 3, 1, 1, fpn::ops::Activation::relu});
      static const auto predictor = fpn::nn::Conv2d::load_with_bias(
          synthetic(), "rpn.head.predictor", {channels, 5 * anchors, 1});
      const Level& map = level_map(height, width, level);
      const std::int64_t rows = map.feature.dim(2), cols = map.feature.dim(3);
      Tensor<float> head(Shape{1, 5 * anchors, rows, cols});
      for (auto _ : state) {
        conv.forward_bands(map.feature, [&](std::int64_t first, std::int64_t count,
                                            const Tensor<float>& band) {
          fpn::nn::store_band_rows(predictor.forward(band), first, count, head);
        });
        benchmark::DoNotOptimize(head.data());
      }
      const double macs = double(conv.macs(rows, cols) + predictor.macs(rows, cols));
      state.counters["GFLOP/s"] = benchmark::Counter(2.0 * macs * double(state.iterations()),
                                                     benchmark::Counter::kIsRate,
                                                     benchmark::Counter::kIs1000);
      state.counters["GFLOP"] = 2.0 * macs / 1e9;
    })->Unit(benchmark::kMillisecond)->UseRealTime();
    if (level == 6) continue;  // P6 feeds the RPN only
    for (const auto& [output, count] : {std::pair<std::int64_t, std::int64_t>{7, 1000}, {14, 100}}) {
      benchmark::RegisterBenchmark(
          ("roi_align" + std::to_string(output) + "/" + size + "/" + p).c_str(),
          [=, output = output, count = count](benchmark::State& state) {
            const Level& map = level_map(height, width, level);
            const Tensor<float> boxes = boxes_for_level(map, count);
            const fpn::ops::RoiAlignParams params{output, output,
                                                  1.0 / double(std::int64_t{1} << level), 2, false};
            for (auto _ : state) {
              benchmark::DoNotOptimize(fpn::ops::roi_align(map.feature, boxes, params));
            }
            state.counters["ROIs/s"] = benchmark::Counter(double(count) * double(state.iterations()),
                                                          benchmark::Counter::kIsRate);
          })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_size(800, 1216);
  register_size(480, 640);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
