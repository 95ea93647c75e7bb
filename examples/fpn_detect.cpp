// fpn_detect: runs a torchvision Faster R-CNN or Mask R-CNN (converted to safetensors by
// tools/convert_torchvision.py) on one image, and writes the detections as a COCO results file
// and, optionally, drawn onto the image as PNG.
//
//   fpn_detect --arch maskrcnn_resnet50_fpn --weights maskrcnn.safetensors
//              --json detections.json --output detections.png photo.jpg
//
// The eight architectures are eight compile-time types; --arch picks one of eight instantiations
// of run_detector below.
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/cli_support.hpp"
#include "common/coco.hpp"
#include "common/draw.hpp"
#include "common/image_io.hpp"
#include "fpn/io/atomic_file.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/two_stage_detector.hpp"

namespace {

namespace fs = std::filesystem;
using fpn::Detection;
using fpn::Detections;
using fpn::examples::RgbImage;

struct Options {
  std::string arch;
  fs::path weights;
  fs::path json;
  fs::path output;  // empty: no picture
  fs::path image;
  float score_thresh = 0.05f;  // torchvision's box_score_thresh
  std::int64_t min_size = 800;
  std::int64_t max_size = 1333;
};

struct RunResult {
  Detections detections;
  std::int64_t num_classes = 0;
  double load_seconds = 0.0;
  double detect_seconds = 0.0;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <typename Detector>
RunResult run_detector(const fpn::io::SafeTensors& weights, const fpn::DetectorParams& params,
                       const RgbImage& image) {
  const auto start = std::chrono::steady_clock::now();
  const Detector detector = Detector::load(fpn::nn::WeightReader(weights), params);
  RunResult result;
  result.num_classes = detector.num_classes();
  result.load_seconds = seconds_since(start);
  const auto detect_start = std::chrono::steady_clock::now();
  result.detections = detector.detect(image.view());
  result.detect_seconds = seconds_since(detect_start);
  return result;
}

struct Architecture {
  std::string_view name;
  RunResult (*run)(const fpn::io::SafeTensors&, const fpn::DetectorParams&, const RgbImage&);
};

// torchvision's builder names (fasterrcnn_resnet50_fpn, ...), as tools/convert_torchvision.py
// takes them and records them in the checkpoint's "arch" metadata.
constexpr std::array<Architecture, 8> architectures = {{
    {"fasterrcnn_resnet18_fpn", &run_detector<fpn::FasterRCNNResNet18FPN>},
    {"fasterrcnn_resnet34_fpn", &run_detector<fpn::FasterRCNNResNet34FPN>},
    {"fasterrcnn_resnet50_fpn", &run_detector<fpn::FasterRCNNResNet50FPN>},
    {"fasterrcnn_resnet101_fpn", &run_detector<fpn::FasterRCNNResNet101FPN>},
    {"maskrcnn_resnet18_fpn", &run_detector<fpn::MaskRCNNResNet18FPN>},
    {"maskrcnn_resnet34_fpn", &run_detector<fpn::MaskRCNNResNet34FPN>},
    {"maskrcnn_resnet50_fpn", &run_detector<fpn::MaskRCNNResNet50FPN>},
    {"maskrcnn_resnet101_fpn", &run_detector<fpn::MaskRCNNResNet101FPN>},
}};

std::vector<std::string> architecture_names() {
  std::vector<std::string> names;
  for (const Architecture& arch : architectures) names.emplace_back(arch.name);
  return names;
}

const Architecture& find_architecture(std::string_view name) {
  for (const Architecture& arch : architectures) {
    if (arch.name == name) return arch;
  }
  throw fpn::ArgumentError("unknown architecture '" + std::string(name) + "'");
}

// A checkpoint that names its architecture must be for --arch, or be the Mask R-CNN of the same
// backbone when --arch is a Faster R-CNN (whose parameters are a subset of the Mask R-CNN's).
// Without this check, ResNet-34 weights would load into a ResNet-18 without complaint.
void check_weights_arch(const fpn::io::SafeTensors& weights, std::string_view arch) {
  const auto found = weights.metadata().find("arch");
  if (found == weights.metadata().end()) return;
  const std::string& stored = found->second;
  const bool same = stored == arch;
  const bool mask_for_faster =
      arch.starts_with("fasterrcnn_") &&
      stored == "maskrcnn_" + std::string(arch.substr(std::string_view("fasterrcnn_").size()));
  if (!same && !mask_for_faster) {
    throw fpn::WeightError("weights file '" + weights.source() + "' is for " + stored +
                           " (its \"arch\" metadata), not --arch " + std::string(arch));
  }
}

// A float as the shortest decimal that reads back as the same float: 0.7 stays 0.7 in the JSON
// rather than 0.699999988079071 (the float widened to double).
double json_number(float value) {
  std::array<char, 32> text{};
  const auto written = std::to_chars(text.data(), text.data() + text.size(), value);
  return std::strtod(std::string(text.data(), written.ptr).c_str(), nullptr);
}

std::string category_name(std::int64_t label, std::int64_t num_classes) {
  // COCO names only for a model with torchvision's 91 COCO outputs.
  if (num_classes == static_cast<std::int64_t>(fpn::examples::coco_category_names.size())) {
    if (auto name = fpn::examples::coco_category_name(label)) return std::string(*name);
  }
  return "label " + std::to_string(label);
}

// The COCO results format (https://cocodataset.org/#format-results), one object per line.
std::string coco_results_json(const Detections& detections, std::int64_t num_classes) {
  std::string text = "[";
  for (std::size_t i = 0; i < detections.items.size(); ++i) {
    const Detection& detection = detections.items[i];
    nlohmann::ordered_json entry;
    entry["image_id"] = 0;
    entry["category_id"] = detection.label;
    if (num_classes == static_cast<std::int64_t>(fpn::examples::coco_category_names.size())) {
      if (auto name = fpn::examples::coco_category_name(detection.label)) {
        entry["category_name"] = std::string(*name);
      }
    }
    const auto& box = detection.box;
    entry["bbox"] = {json_number(box[0]), json_number(box[1]), json_number(box[2] - box[0]),
                     json_number(box[3] - box[1])};
    entry["score"] = json_number(detection.score);
    if (detection.mask) {
      const std::vector<std::uint8_t> binary =
          detection.mask->binary(detections.image_height, detections.image_width);
      const fpn::examples::RleCounts counts =
          fpn::examples::rle_encode(binary, detections.image_height, detections.image_width);
      entry["segmentation"] = {{"size", {detections.image_height, detections.image_width}},
                               {"counts", fpn::examples::rle_to_string(counts)}};
    }
    text += (i == 0 ? "\n" : ",\n") + entry.dump();
  }
  return text + (detections.items.empty() ? "]\n" : "\n]\n");
}

void print_summary(const Options& options, const RgbImage& image, const RunResult& result) {
  const auto& items = result.detections.items;
  std::printf(
      "%s: %s, %lldx%lld: %zu detection%s with score > %g (weights loaded in %.2f s, "
      "detection %.2f s)\n",
      options.arch.c_str(), options.image.string().c_str(), static_cast<long long>(image.width),
      static_cast<long long>(image.height), items.size(), items.size() == 1 ? "" : "s",
      static_cast<double>(options.score_thresh), result.load_seconds, result.detect_seconds);
  constexpr std::size_t shown = 20;
  for (std::size_t i = 0; i < items.size() && i < shown; ++i) {
    const Detection& detection = items[i];
    std::printf("  %-16s %.3f  box [%.1f, %.1f, %.1f, %.1f]%s\n",
                category_name(detection.label, result.num_classes).c_str(),
                static_cast<double>(detection.score), static_cast<double>(detection.box[0]),
                static_cast<double>(detection.box[1]), static_cast<double>(detection.box[2]),
                static_cast<double>(detection.box[3]), detection.mask ? "  + mask" : "");
  }
  if (items.size() > shown) {
    std::printf("  ... and %zu more in %s\n", items.size() - shown, options.json.string().c_str());
  }
}

void run(const Options& options) {
  // Everything that can be checked cheaply is checked before the weights are read.
  const Architecture& arch = find_architecture(options.arch);
  fpn::examples::check_output_file(options.json, "JSON");
  if (!options.output.empty()) {
    fpn::examples::check_output_file(options.output, "image");
    std::error_code output_error;
    std::error_code json_error;
    const fs::path output = fs::weakly_canonical(options.output, output_error);
    const fs::path json = fs::weakly_canonical(options.json, json_error);
    if (!output_error && !json_error && output == json) {
      throw fpn::ArgumentError("--json and --output name the same file '" + options.json.string() +
                               "'");
    }
  }
  fpn::examples::check_input_file(options.image, "image");
  fpn::examples::check_input_file(options.weights, "weights file");
  RgbImage image = fpn::examples::load_image_rgb(options.image);

  const auto open_start = std::chrono::steady_clock::now();
  const fpn::io::SafeTensors weights = fpn::io::SafeTensors::open(options.weights);
  check_weights_arch(weights, arch.name);
  const double open_seconds = seconds_since(open_start);
  fpn::DetectorParams params;
  params.transform.min_size = options.min_size;
  params.transform.max_size = options.max_size;
  params.roi_heads.score_thresh = options.score_thresh;
  RunResult result = arch.run(weights, params, image);
  result.load_seconds += open_seconds;

  // Both outputs are complete in memory before either file is touched.
  const std::string json = coco_results_json(result.detections, result.num_classes);
  print_summary(options, image, result);
  if (!options.output.empty()) {
    const auto caption = [&](const Detection& detection) {
      char score[16];
      std::snprintf(score, sizeof score, "%.2f", static_cast<double>(detection.score));
      return category_name(detection.label, result.num_classes) + " " + score;
    };
    fpn::examples::draw_detections(image, result.detections, caption,
                                   fpn::examples::style_for(image.height, image.width));
    fpn::examples::save_png_atomically(options.output, image);
  }
  fpn::io::write_file_atomically(options.json, json);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Detects objects in IMAGE with a Faster R-CNN or Mask R-CNN on a ResNet-FPN backbone,\n"
      "equal to torchvision 0.14's, and writes the detections as a COCO results file.",
      "fpn_detect"};
  Options options;
  app.add_option("--arch", options.arch, "detector architecture")
      ->required()
      ->check(CLI::IsMember(architecture_names()));
  app.add_option("--weights", options.weights,
                 "the detector's weights as safetensors, converted from a torchvision checkpoint "
                 "by tools/convert_torchvision.py (a Mask R-CNN's weights also serve the Faster "
                 "R-CNN of the same backbone)")
      ->required();
  app.add_option("--json", options.json,
                 "where to write the detections: a COCO results JSON list of {image_id (0), "
                 "category_id (torchvision's label, COCO's 91-id scheme), category_name, bbox "
                 "[x, y, width, height] in pixels, score} and, for Mask R-CNN, segmentation: the "
                 "mask > 0.5 as {size [height, width], counts} in pycocotools' compressed RLE")
      ->required();
  app.add_option("--output", options.output,
                 "also draw the boxes, masks and 'label score' captions onto the image and "
                 "write it here as PNG");
  app.add_option("--score-thresh", options.score_thresh,
                 "keep detections scoring above this (torchvision's box_score_thresh, applied "
                 "before per-class NMS and the top-100 cut)")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  fpn::examples::add_image_options(app, options.min_size, options.max_size, options.image);
  app.footer(std::string(fpn::examples::exit_status_help));
  return fpn::examples::run_command_line(app, argc, argv, [&] { run(options); });
}
