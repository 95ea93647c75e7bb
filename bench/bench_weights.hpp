// The weights a whole-detector benchmark runs: FPN_BENCH_WEIGHTS_DIR/<arch>.safetensors when that
// exists (a seeded checkpoint from bench/compare_peers.py --work-dir: ~100 detections per image,
// so the ROI and mask heads work as on a busy image), otherwise synthetic weights (which detect
// little; the benchmarks report a detections counter).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "fpn/nn/weights.hpp"

namespace fpn::bench {

template <typename Detector>
Detector load_detector(const std::string& arch) {
  if (const char* dir = std::getenv("FPN_BENCH_WEIGHTS_DIR")) {
    const std::filesystem::path path = std::filesystem::path(dir) / (arch + ".safetensors");
    if (std::filesystem::exists(path)) return Detector::load(path);
  }
  return Detector::load(fpn::nn::WeightReader(std::make_shared<fpn::nn::SyntheticWeights>()));
}

}  // namespace fpn::bench
