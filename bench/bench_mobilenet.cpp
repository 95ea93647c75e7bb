// torchvision's fasterrcnn_mobilenet_v3_large_fpn and _320_fpn, part by part: the stem, each
// inverted-residual block (features[1..15]), the last 1x1 conv (features[16]), each FPN level
// (lateral + top-down sum + 3x3 output conv) and the pool level, the RPN, the ROI heads and the
// whole detector, in ms and GFLOP/s (2 FLOPs per multiply-add), at the padded sizes the two
// builders run a 427x640 image at: 800x1216 (min 800 / max 1333) and 320x480 (min 320 / max 640).
// And the video-rate figure: the 320 builder on a stream of 480x640 frames (8-bit RGB in,
// detections out, resize included), one model load, frames/s.
//
// Weights: FPN_BENCH_WEIGHTS_DIR/<arch>.safetensors when it exists (a seeded checkpoint, as
// bench/compare_peers.py writes them: its ~100 detections make the ROI heads work as on a busy
// image), otherwise synthetic weights (few detections; see the "detections" counter).
//
//   fpn_bench_mobilenet --benchmark_filter=320x480
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fpn/models/faster_rcnn_mobilenet.hpp"

#include "bench_weights.hpp"

namespace {

using fpn::Shape;
using fpn::Tensor;

using fpn::bench::load_detector;

// A textured 8-bit image preprocessed by the detector's own transform (its builder's sizes).
template <typename Detector>
fpn::nn::PreprocessedImage textured_image(const Detector& detector, std::int64_t height,
                                          std::int64_t width) {
  Tensor<std::uint8_t> pixels(Shape{height, width, 3});
  for (std::int64_t i = 0; i < pixels.numel(); ++i) {
    pixels.data()[i] = static_cast<std::uint8_t>((i * 7 + (i / (3 * width)) * 13) % 251);
  }
  return fpn::nn::preprocess(fpn::nn::ImageView{pixels.data(), height, width},
                             detector.params().transform);
}

// One builder's detector on a 427x640 image, with every intermediate map the parts read.
template <typename Detector>
struct Fixture {
  Detector detector;
  fpn::nn::PreprocessedImage image;
  std::vector<Tensor<float>> features;  // features[0..16]'s outputs
  std::vector<Tensor<float>> stages;    // the two maps the FPN takes (stages 4 and 5)
  fpn::nn::FeaturePyramid pyramid;
  fpn::nn::Proposals proposals;

  explicit Fixture(const std::string& arch)
      : detector(load_detector<Detector>(arch)), image(textured_image(detector, 427, 640)) {
    const auto& body = detector.backbone().body();
    features.push_back(body.forward_stem(image.tensor));
    for (const auto& block : body.blocks()) features.push_back(block.forward(features.back()));
    features.push_back(body.last().forward(features.back()));
    stages = detector.backbone().forward_stages(image.tensor);
    pyramid = detector.backbone().forward(image.tensor);
    proposals = detector.propose(pyramid, image);
  }

  std::string size() const {
    return std::to_string(image.tensor.dim(2)) + "x" + std::to_string(image.tensor.dim(3));
  }

  static Fixture& get(const std::string& arch) {
    static std::map<std::string, std::unique_ptr<Fixture>> cache;
    auto& slot = cache[arch];
    if (!slot) slot = std::make_unique<Fixture>(arch);
    return *slot;
  }
};

void report(benchmark::State& state, std::int64_t macs) {
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(macs) * double(state.iterations()),
                                                 benchmark::Counter::kIsRate,
                                                 benchmark::Counter::kIs1000);
  state.counters["MFLOP"] = 2.0 * double(macs) / 1e6;
}

template <typename Detector>
void register_all(const std::string& arch, const std::string& size) {
  const std::string prefix = arch + "/" + size + "/";
  auto add = [&](const std::string& name, auto body) {
    benchmark::RegisterBenchmark((prefix + name).c_str(), [=](benchmark::State& state) {
      body(state, Fixture<Detector>::get(arch));
    })->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  using F = Fixture<Detector>;
  add("features00_stem", [](benchmark::State& state, F& f) {
    const auto& body = f.detector.backbone().body();
    for (auto _ : state) benchmark::DoNotOptimize(body.forward_stem(f.image.tensor));
    report(state, body.stem_macs(f.image.tensor.dim(2), f.image.tensor.dim(3)));
  });
  for (std::size_t block = 0; block < fpn::nn::mobilenet_v3_large_blocks.size(); ++block) {
    const auto& config = fpn::nn::mobilenet_v3_large_blocks[block];
    const std::string name = (block + 1 < 10 ? "features0" : "features") +
                             std::to_string(block + 1) + "_k" + std::to_string(config.kernel) +
                             "_s" + std::to_string(config.stride) + "_" +
                             std::to_string(config.in_channels) + "-" +
                             std::to_string(config.expanded_channels) + "-" +
                             std::to_string(config.out_channels) +
                             (config.squeeze_excitation ? "_se" : "");
    add(name, [block](benchmark::State& state, F& f) {
      const auto& net = f.detector.backbone().body().blocks()[block];
      const Tensor<float>& input = f.features[block];
      for (auto _ : state) benchmark::DoNotOptimize(net.forward(input));
      report(state, net.macs(input.dim(2), input.dim(3)));
    });
  }
  add("features16_last", [](benchmark::State& state, F& f) {
    const auto& last = f.detector.backbone().body().last();
    const Tensor<float>& input = f.features[f.features.size() - 2];
    for (auto _ : state) benchmark::DoNotOptimize(last.forward(input));
    report(state, last.macs(input.dim(2), input.dim(3)));
  });
  for (std::size_t level = 0; level < 2; ++level) {
    add("fpn_level" + std::to_string(level), [level](benchmark::State& state, F& f) {
      const auto& neck = f.detector.backbone().neck();
      const Tensor<float> upper = neck.merge(1, f.stages[1], nullptr);
      for (auto _ : state) {
        Tensor<float> inner = neck.merge(level, f.stages[level], level == 0 ? &upper : nullptr);
        neck.output_in_place(level, inner);
        benchmark::DoNotOptimize(inner);
      }
      report(state, neck.level_macs(level, f.stages[level].dim(2), f.stages[level].dim(3)));
    });
  }
  add("fpn_pool", [](benchmark::State& state, F& f) {
    const Tensor<float> top = f.pyramid.at("1");
    for (auto _ : state) benchmark::DoNotOptimize(fpn::nn::LastLevelMaxPool::forward(top));
    report(state, 0);
  });
  add("backbone", [](benchmark::State& state, F& f) {
    for (auto _ : state) benchmark::DoNotOptimize(f.detector.backbone().forward(f.image.tensor));
    const auto& body = f.detector.backbone().body();
    std::int64_t macs = body.stem_macs(f.image.tensor.dim(2), f.image.tensor.dim(3));
    for (std::size_t block = 0; block < body.blocks().size(); ++block) {
      macs += body.blocks()[block].macs(f.features[block].dim(2), f.features[block].dim(3));
    }
    const Tensor<float>& last_in = f.features[f.features.size() - 2];
    macs += body.last().macs(last_in.dim(2), last_in.dim(3));
    for (std::size_t level = 0; level < 2; ++level) {
      macs += f.detector.backbone().neck().level_macs(level, f.stages[level].dim(2),
                                                      f.stages[level].dim(3));
    }
    report(state, macs);
  });
  add("rpn", [](benchmark::State& state, F& f) {
    for (auto _ : state) benchmark::DoNotOptimize(f.detector.propose(f.pyramid, f.image));
    state.counters["proposals"] = double(f.proposals.boxes.dim(0));
  });
  add("roi_heads", [](benchmark::State& state, F& f) {
    std::size_t detections = 0;
    for (auto _ : state) {
      detections =
          f.detector.detect_from_proposals(f.pyramid, f.proposals.boxes, f.image).items.size();
    }
    state.counters["detections"] = double(detections);
  });
  add("detect", [](benchmark::State& state, F& f) {
    std::size_t detections = 0;
    for (auto _ : state) detections = f.detector.detect(f.image).items.size();
    state.counters["images/s"] =
        benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
    state.counters["detections"] = double(detections);
  });
}

// Eight different textured 480x640 frames, cycled: a camera's stream as the detector meets it.
template <typename Detector>
void register_stream(const std::string& arch) {
  benchmark::RegisterBenchmark((arch + "/stream_480x640").c_str(), [arch](benchmark::State& state) {
    const Detector& detector = Fixture<Detector>::get(arch).detector;
    constexpr std::int64_t height = 480, width = 640, frames = 8;
    std::vector<Tensor<std::uint8_t>> stream;
    for (std::int64_t frame = 0; frame < frames; ++frame) {
      Tensor<std::uint8_t> pixels = Tensor<std::uint8_t>::uninitialized(Shape{height, width, 3});
      for (std::int64_t i = 0; i < pixels.numel(); ++i) {
        pixels.data()[i] =
            static_cast<std::uint8_t>((i * (7 + frame) + (i / (3 * width)) * (13 + 2 * frame)) % 251);
      }
      stream.push_back(std::move(pixels));
    }
    std::size_t next = 0, detections = 0;
    for (auto _ : state) {
      const Tensor<std::uint8_t>& frame = stream[next++ % stream.size()];
      detections += detector.detect(fpn::nn::ImageView{frame.data(), height, width}).items.size();
    }
    state.counters["frames/s"] =
        benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
    state.counters["detections/frame"] = double(detections) / double(state.iterations());
  })->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  register_all<fpn::FasterRCNNMobileNetV3LargeFPN>("fasterrcnn_mobilenet_v3_large_fpn",
                                                   "800x1216");
  register_all<fpn::FasterRCNNMobileNetV3Large320FPN>("fasterrcnn_mobilenet_v3_large_320_fpn",
                                                      "320x480");
  register_stream<fpn::FasterRCNNMobileNetV3Large320FPN>("fasterrcnn_mobilenet_v3_large_320_fpn");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
