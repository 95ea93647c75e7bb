// Whole-detector throughput (images/s) per architecture at 800x1216 and 480x640 inputs: the
// preprocessed image in, detections out (decode, load and JSON are the process benchmark's part).
//
// Weights: a converted checkpoint named by FPN_BENCH_WEIGHTS_DIR/<arch>.safetensors when that
// exists (seeded checkpoints give ~100 detections, so the mask head does real work), otherwise
// synthetic weights (which detect little: the mask head then barely runs; see the counter).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "fpn/models/two_stage_detector.hpp"

#include "bench_weights.hpp"

namespace {

using fpn::bench::load_detector;

template <typename Detector>
void register_detector(const std::string& arch) {
  for (const auto& [height, width] : {std::pair<std::int64_t, std::int64_t>{800, 1216}, {480, 640}}) {
    const std::string name = arch + "/" + std::to_string(height) + "x" + std::to_string(width);
    // Structured bindings are captured by copy explicitly (clang before 16 refuses them in [=]).
    benchmark::RegisterBenchmark(name.c_str(), [=, height = height, width = width](benchmark::State& state) {
      static const Detector detector = load_detector<Detector>(arch);
      // A textured image of the given size; with min_size = height it is not resized.
      fpn::Tensor<std::uint8_t> pixels(fpn::Shape{height, width, 3});
      for (std::int64_t i = 0; i < pixels.numel(); ++i) {
        pixels.data()[i] = static_cast<std::uint8_t>((i * 7 + (i / (3 * width)) * 13) % 251);
      }
      fpn::nn::TransformParams transform;
      transform.min_size = std::min(height, width);
      transform.max_size = std::max(height, width);
      const auto image = fpn::nn::preprocess(fpn::nn::ImageView{pixels.data(), height, width}, transform);
      std::size_t detections = 0;
      for (auto _ : state) detections = detector.detect(image).items.size();
      state.counters["images/s"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
      state.counters["detections"] = double(detections);
    })->Unit(benchmark::kMillisecond)->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_detector<fpn::MaskRCNNResNet50FPN>("maskrcnn_resnet50_fpn");
  register_detector<fpn::FasterRCNNResNet50FPN>("fasterrcnn_resnet50_fpn");
  register_detector<fpn::FasterRCNNResNet18FPN>("fasterrcnn_resnet18_fpn");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
