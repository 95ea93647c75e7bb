// MobileNetV3-Large's depthwise convolutions (torchvision's configuration: kernel, stride,
// expanded channels, activation) at the sizes a detector sees them, on 1 and 2 threads.
// GFLOP/s counts 2 * k * k multiply-adds per output value; GB/s counts the bytes the op must move
// at least (input and output maps, filters, bias), so it shows how near memory speed a layer runs.
// The output map is allocated once (depthwise_conv2d_into): the figures are the kernel's, not the
// allocator's first-touch page faults on a fresh map.
//
//   fpn_bench_depthwise --benchmark_filter=800x1216
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>

#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/depthwise_conv2d.hpp"

namespace {

using fpn::Shape;
using fpn::Tensor;
using fpn::ops::Activation;

struct DepthwiseLayer {
  std::int64_t channels;
  int kernel, stride;
  Activation activation;
  int input_divisor;  // the layer's input is the image size / this
};

// The depthwise convs of MobileNetV3-Large's inverted residual blocks, in order (repeated blocks
// of one shape listed once).
constexpr DepthwiseLayer mobilenet_v3_large[] = {
    {16, 3, 1, Activation::relu, 2},        {64, 3, 2, Activation::relu, 2},
    {72, 3, 1, Activation::relu, 4},        {72, 5, 2, Activation::relu, 4},
    {120, 5, 1, Activation::relu, 8},       {240, 3, 2, Activation::hardswish, 8},
    {200, 3, 1, Activation::hardswish, 16}, {480, 3, 1, Activation::hardswish, 16},
    {672, 3, 1, Activation::hardswish, 16}, {672, 5, 2, Activation::hardswish, 16},
    {960, 5, 1, Activation::hardswish, 32},
};

// torch's conv output size for padding k / 2.
std::int64_t output_size(std::int64_t input, int kernel, int stride) {
  return (input + 2 * (kernel / 2) - kernel) / stride + 1;
}

void register_layer(const DepthwiseLayer& layer, std::int64_t image_height,
                    std::int64_t image_width) {
  // The backbone's maps: each stride-2 layer rounds up, as (size + 1) / 2.
  std::int64_t height = image_height, width = image_width;
  for (int divisor = 1; divisor < layer.input_divisor; divisor *= 2) {
    height = (height + 1) / 2;
    width = (width + 1) / 2;
  }
  const std::string title = "depthwise/" + std::to_string(image_height) + "x" +
                            std::to_string(image_width) + "/C" + std::to_string(layer.channels) +
                            "_" + std::to_string(layer.kernel) + "x" +
                            std::to_string(layer.kernel) + "_s" + std::to_string(layer.stride) +
                            "_at_" + std::to_string(height) + "x" + std::to_string(width);
  benchmark::RegisterBenchmark(
      title.c_str(),
      [layer, height, width](benchmark::State& state) {
        const fpn::ThreadLimit limit(static_cast<int>(state.range(0)));
        std::mt19937 random(1);
        std::normal_distribution<float> normal;
        Tensor<float> input(Shape{1, layer.channels, height, width});
        Tensor<float> weight(Shape{layer.channels, 1, layer.kernel, layer.kernel});
        Tensor<float> bias(Shape{layer.channels});
        for (float& v : input.span()) v = normal(random);
        for (float& v : weight.span()) v = normal(random) * 0.2f;
        for (float& v : bias.span()) v = normal(random);
        const fpn::ops::DepthwiseConv2dParams params{layer.stride, layer.kernel / 2,
                                                     layer.activation};
        Tensor<float> output(Shape{1, layer.channels,
                                   output_size(height, layer.kernel, layer.stride),
                                   output_size(width, layer.kernel, layer.stride)});
        for (auto _ : state) {
          fpn::ops::depthwise_conv2d_into(input, weight, bias, params, output.view());
          benchmark::ClobberMemory();
        }
        const double outputs = double(output.numel());
        const double flops = 2.0 * layer.kernel * layer.kernel * outputs;
        const double bytes =
            sizeof(float) * double(input.numel() + output.numel() + weight.numel() + bias.numel());
        const auto iterations = double(state.iterations());
        state.counters["GFLOP/s"] = benchmark::Counter(
            flops * iterations, benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
        state.counters["GB/s"] = benchmark::Counter(bytes * iterations, benchmark::Counter::kIsRate,
                                                    benchmark::Counter::kIs1000);
        state.counters["MB"] = bytes / 1e6;
      })
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  for (const auto& [height, width] : {std::pair<std::int64_t, std::int64_t>{800, 1216},
                                      std::pair<std::int64_t, std::int64_t>{320, 320}}) {
    for (const DepthwiseLayer& layer : mobilenet_v3_large) register_layer(layer, height, width);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
