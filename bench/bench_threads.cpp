// fpn's threads under the loads a user's program meets, on Mask R-CNN R50-FPN at 800x1216
// (FPN_BENCH_WEIGHTS_DIR/maskrcnn_resnet50_fpn.safetensors when it exists, else synthetic
// weights; the demo model with --benchmark_filter=demo):
//   threads/N          one detect with ThreadLimit(N)
//   sequential4        four detect calls one after another (the pool's default threads)
//   concurrent4        four user threads call detect on the same detector at once
//   busy               one detect while two `yes > /dev/null` processes keep both cores busy
//   quiet              the same detect right before, for the ratio busy / quiet
// Compare sequential4 with concurrent4 (oversubscription) and busy with quiet (idle workers must
// sleep, not spin, and a descheduled thread's share of the work goes to the others).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fpn/core/thread_pool.hpp"
#include "fpn/models/shapes_demo.hpp"
#include "fpn/models/two_stage_detector.hpp"

extern char** environ;

namespace {

template <typename Detector>
const Detector& detector(const std::string& arch) {
  static const Detector loaded = [&] {
    if (const char* dir = std::getenv("FPN_BENCH_WEIGHTS_DIR")) {
      const std::filesystem::path path = std::filesystem::path(dir) / (arch + ".safetensors");
      if (std::filesystem::exists(path)) return Detector::load(path);
    }
    return Detector::load(fpn::nn::WeightReader(std::make_shared<fpn::nn::SyntheticWeights>()));
  }();
  return loaded;
}

struct Input {
  fpn::Tensor<std::uint8_t> pixels;
  fpn::nn::ImageView view() const { return {pixels.data(), pixels.dim(0), pixels.dim(1)}; }
};

// A textured 427x640 image: torchvision's 800x1216 batch after preprocessing.
const Input& input() {
  static const Input image = [] {
    Input made{fpn::Tensor<std::uint8_t>(fpn::Shape{427, 640, 3})};
    for (std::int64_t i = 0; i < made.pixels.numel(); ++i) {
      made.pixels.data()[i] = static_cast<std::uint8_t>((i * 7 + (i / (3 * 640)) * 13) % 251);
    }
    return made;
  }();
  return image;
}

const fpn::MaskRCNNResNet50FPN& r50() {
  return detector<fpn::MaskRCNNResNet50FPN>("maskrcnn_resnet50_fpn");
}

void threads_n(benchmark::State& state) {
  const fpn::ThreadLimit limit(static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(r50().detect(input().view()));
}

void sequential4(benchmark::State& state) {
  for (auto _ : state) {
    for (int i = 0; i < 4; ++i) benchmark::DoNotOptimize(r50().detect(input().view()));
  }
}

void concurrent4(benchmark::State& state) {
  for (auto _ : state) {
    std::vector<std::jthread> callers;
    for (int i = 0; i < 4; ++i) {
      callers.emplace_back([] { benchmark::DoNotOptimize(r50().detect(input().view())); });
    }
  }
}

// Two CPU-bound processes for the length of a scope.
class BusyMachine {
 public:
  BusyMachine() {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    char yes[] = "yes";
    char* argv[] = {yes, nullptr};
    for (pid_t& pid : pids_) {
      if (posix_spawnp(&pid, "yes", &actions, nullptr, argv, environ) != 0) pid = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  ~BusyMachine() {
    for (pid_t pid : pids_) {
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  }
  bool running() const { return pids_[0] > 0 && pids_[1] > 0; }

 private:
  pid_t pids_[2] = {-1, -1};
};

void quiet(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(r50().detect(input().view()));
}

void busy(benchmark::State& state) {
  const BusyMachine load;
  if (!load.running()) state.SkipWithError("could not start the busy processes (yes)");
  for (auto _ : state) benchmark::DoNotOptimize(r50().detect(input().view()));
}

void demo_threads_n(benchmark::State& state) {
  static const auto demo = fpn::MaskRCNNShapesDemo::load(
      std::filesystem::path(FPN_SOURCE_DIR) / "examples/data/demo_shapes_maskrcnn.safetensors");
  const fpn::ThreadLimit limit(static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(demo.detect(input().view()));
}

}  // namespace

BENCHMARK(threads_n)->Name("maskrcnn_resnet50_fpn/threads")->DenseRange(1, 3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(sequential4)->Name("maskrcnn_resnet50_fpn/sequential4")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(concurrent4)->Name("maskrcnn_resnet50_fpn/concurrent4")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(quiet)->Name("maskrcnn_resnet50_fpn/quiet")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(busy)->Name("maskrcnn_resnet50_fpn/busy")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(demo_threads_n)->Name("demo/threads")->DenseRange(1, 2)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
