// Per-level throughput of the bottom-up and top-down pathways: the stem, each ResNet stage
// (C2..C5), each FPN level (lateral + top-down sum + 3x3 output conv, P2..P5) and P6, in ms and
// GFLOP/s (2 FLOPs per multiply-add), on synthetic weights at 800x1216 and 480x640 inputs.
//
//   fpn_bench_backbone --benchmark_filter=800x1216
#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "fpn/nn/backbone.hpp"

namespace {

using fpn::Shape;
using fpn::Tensor;

template <int Depth>
struct Fixture {
  using Backbone = fpn::nn::ResNetFPN<Depth>;
  Backbone backbone;
  Tensor<float> image;
  Tensor<float> stem_output;
  fpn::nn::StageOutputs stages;
  std::array<Tensor<float>, 4> inners;
  std::int64_t height, width;

  Fixture(std::int64_t height, std::int64_t width)
      : backbone(Backbone::load(
            fpn::nn::WeightReader(std::make_shared<fpn::nn::SyntheticWeights>()))),
        image(Shape{1, 3, height, width}, 0.5f),
        height(height),
        width(width) {
    for (std::int64_t i = 0; i < image.numel(); ++i) image.data()[i] = float((i * 7919) % 255) / 255.f - 0.5f;
    stem_output = backbone.body().forward_stem(image);
    stages[0] = backbone.body().forward_stage(0, stem_output);
    for (std::size_t s = 1; s < 4; ++s) stages[s] = backbone.body().forward_stage(s, stages[s - 1]);
    inners[3] = backbone.neck().merge(3, stages[3], nullptr);
    for (std::size_t i = 3; i-- > 0;) inners[i] = backbone.neck().merge(i, stages[i], &inners[i + 1]);
  }

  static Fixture& get(std::int64_t height, std::int64_t width) {
    static std::map<std::pair<std::int64_t, std::int64_t>, std::unique_ptr<Fixture>> cache;
    auto& slot = cache[{height, width}];
    if (!slot) slot = std::make_unique<Fixture>(height, width);
    return *slot;
  }
};

void report(benchmark::State& state, std::int64_t macs) {
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(macs) * double(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["GFLOP"] = 2.0 * double(macs) / 1e9;
}

template <int Depth>
void register_all(std::int64_t height, std::int64_t width) {
  const std::string size = std::to_string(height) + "x" + std::to_string(width);
  const std::string prefix = "R" + std::to_string(Depth) + "/" + size + "/";
  auto add = [&](const std::string& name, auto body) {
    benchmark::RegisterBenchmark((prefix + name).c_str(), [=](benchmark::State& state) {
      auto& f = Fixture<Depth>::get(height, width);
      body(state, f);
    })->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  add("stem", [](benchmark::State& state, Fixture<Depth>& f) {
    for (auto _ : state) benchmark::DoNotOptimize(f.backbone.body().forward_stem(f.image));
    report(state, f.backbone.body().stem_macs(f.height, f.width));
  });
  for (std::size_t stage = 0; stage < 4; ++stage) {
    add("C" + std::to_string(stage + 2), [stage](benchmark::State& state, Fixture<Depth>& f) {
      const Tensor<float>& input = stage == 0 ? f.stem_output : f.stages[stage - 1];
      for (auto _ : state) benchmark::DoNotOptimize(f.backbone.body().forward_stage(stage, input));
      report(state, f.backbone.body().stage_macs(stage, input.dim(2), input.dim(3)));
    });
  }
  for (std::size_t level = 0; level < 4; ++level) {
    add("P" + std::to_string(level + 2), [level](benchmark::State& state, Fixture<Depth>& f) {
      const Tensor<float>* upper = level == 3 ? nullptr : &f.inners[level + 1];
      for (auto _ : state) {
        const Tensor<float> inner = f.backbone.neck().merge(level, f.stages[level], upper);
        benchmark::DoNotOptimize(f.backbone.neck().output(level).forward(inner));
      }
      report(state, f.backbone.neck().level_macs(level, f.stages[level].dim(2), f.stages[level].dim(3)));
    });
  }
  add("P6", [](benchmark::State& state, Fixture<Depth>& f) {
    const Tensor<float> p5 = f.backbone.neck().output(3).forward(f.inners[3]);
    for (auto _ : state) benchmark::DoNotOptimize(fpn::nn::LastLevelMaxPool::forward(p5));
    report(state, 0);
  });
  add("backbone", [](benchmark::State& state, Fixture<Depth>& f) {
    for (auto _ : state) benchmark::DoNotOptimize(f.backbone.forward(f.image));
    std::int64_t macs = f.backbone.body().stem_macs(f.height, f.width);
    for (std::size_t s = 0; s < 4; ++s) {
      const Tensor<float>& input = s == 0 ? f.stem_output : f.stages[s - 1];
      macs += f.backbone.body().stage_macs(s, input.dim(2), input.dim(3)) +
              f.backbone.neck().level_macs(s, f.stages[s].dim(2), f.stages[s].dim(3));
    }
    report(state, macs);
  });
}

}  // namespace

int main(int argc, char** argv) {
  for (const auto& [height, width] : {std::pair<std::int64_t, std::int64_t>{800, 1216}, {480, 640}}) {
    register_all<50>(height, width);
    register_all<18>(height, width);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
