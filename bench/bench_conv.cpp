// One 3x3 stride-1 padding-1 convolution, im2col + GEMM against Winograd F(2x2, 3x3), in ms and
// GFLOP/s counted as a direct convolution's FLOPs (2 * Cout * Cin * 9 per output pixel), so the two
// paths' rates compare directly. Shapes: the FPN/RPN 256-channel convs on P2..P4 of an 800x1216
// image, the mask head's four convs on 100 ROIs of 14x14, ResNet's stride-1 3x3s per stage, and
// small maps and thin layers around the automatic dispatch's thresholds.
//
//   fpn_bench_conv --benchmark_filter=256to256
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>

#include "fpn/ops/conv2d.hpp"

namespace {

using fpn::Shape;
using fpn::Tensor;
using fpn::ops::Conv2dAlgorithm;

struct ConvShape {
  std::int64_t batch, in_channels, out_channels, height, width;
  std::string label;
};

void register_shape(const ConvShape& shape) {
  for (const auto& [algorithm, name] : {std::pair{Conv2dAlgorithm::im2col, "im2col"},
                                        std::pair{Conv2dAlgorithm::winograd, "winograd"}}) {
    const std::string title = "conv3x3/" + std::to_string(shape.in_channels) + "to" +
                              std::to_string(shape.out_channels) + "/" + shape.label + "/" + name;
    benchmark::RegisterBenchmark(
        title.c_str(),
        [shape, algorithm = algorithm](benchmark::State& state) {
          std::mt19937 random(1);
          std::normal_distribution<float> normal;
          Tensor<float> input(Shape{shape.batch, shape.in_channels, shape.height, shape.width});
          Tensor<float> weight(Shape{shape.out_channels, shape.in_channels, 3, 3});
          Tensor<float> bias(Shape{shape.out_channels});
          for (float& v : input.span()) v = normal(random);
          for (float& v : weight.span()) v = normal(random) * 0.05f;
          for (float& v : bias.span()) v = normal(random);
          const fpn::ops::Conv2dParams params{1, 1, fpn::ops::Activation::relu, algorithm};
          for (auto _ : state)
            benchmark::DoNotOptimize(fpn::ops::conv2d(input, weight, bias, params));
          const double flops = 2.0 * double(shape.out_channels * shape.in_channels * 9) *
                               double(shape.batch * shape.height * shape.width);
          state.counters["GFLOP/s"] =
              benchmark::Counter(flops * double(state.iterations()), benchmark::Counter::kIsRate,
                                 benchmark::Counter::kIs1000);
          state.counters["GFLOP"] = flops / 1e9;
        })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const ConvShape shapes[] = {
      // FPN output convs and the RPN head conv on P2, P3, P4 of an 800x1216 image.
      {1, 256, 256, 200, 304, "200x304"},
      {1, 256, 256, 100, 152, "100x152"},
      {1, 256, 256, 50, 76, "50x76"},
      {1, 256, 256, 25, 38, "25x38"},
      {1, 256, 256, 13, 19, "13x19"},
      // The mask head's convs on 100 ROIs.
      {100, 256, 256, 14, 14, "100x14x14"},
      {10, 256, 256, 14, 14, "10x14x14"},
      {1, 256, 256, 14, 14, "1x14x14"},
      // ResNet's stride-1 3x3s in layer1..layer4 at 800x1216.
      {1, 64, 64, 200, 304, "200x304"},
      {1, 128, 128, 100, 152, "100x152"},
      {1, 512, 512, 25, 38, "25x38"},
      // Thin layers and small maps, for the automatic dispatch's thresholds.
      {1, 32, 32, 100, 152, "100x152"},
      {1, 16, 16, 100, 152, "100x152"},
      {1, 64, 64, 32, 32, "32x32"},
      {1, 64, 64, 16, 16, "16x16"},
      {1, 256, 256, 8, 8, "8x8"},
  };
  for (const ConvShape& shape : shapes) register_shape(shape);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
