// fpn_detect: runs a Faster R-CNN or Mask R-CNN (ResNet-FPN or MobileNetV3-Large-FPN) on images and writes the detections as one COCO
// results file and, optionally, drawn onto each image as PNG.
//
//   fpn_detect photo.jpg                                   the bundled demo model, printed only
//   fpn_detect --arch maskrcnn_resnet50_fpn --weights maskrcnn.safetensors
//              --json detections.json --output detections.png photo.jpg
//   fpn_detect --weights W.safetensors --json all.json --output-dir drawn/ photos/ more.png
//   fpn_detect --weights W.safetensors --shard 2/8 --resume shard_2.jsonl --json shard_2.json photos/
//
// Weights are torchvision checkpoints converted by tools/convert_torchvision.py, or the demo model
// of tools/train_demo.py, found beside the program (build tree) or in ../share/fpn (install tree).
// Every architecture is a compile-time type; --arch (or the weights' "arch" metadata) picks one.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/cli_support.hpp"
#include "common/coco.hpp"
#include "common/draw.hpp"
#include "common/image_io.hpp"
#include "common/results_log.hpp"
#include "fpn/io/atomic_file.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/faster_rcnn_mobilenet.hpp"
#include "fpn/models/shapes_demo.hpp"
#include "fpn/models/two_stage_detector.hpp"

namespace {

namespace fs = std::filesystem;
using fpn::Detection;
using fpn::Detections;
using fpn::examples::ResultsLog;
using fpn::examples::RgbImage;

constexpr std::string_view demo_arch = "maskrcnn_shapes_demo";
constexpr std::string_view demo_weights_name = "demo_shapes_maskrcnn.safetensors";

struct Options {
  std::string arch;    // empty: the weights' "arch" metadata, or the demo model
  fs::path weights;    // empty: the bundled demo model
  fs::path json;       // empty: print only
  fs::path output;     // one image drawn here (PNG)
  fs::path output_dir; // every image drawn here as <name>.png
  std::vector<fs::path> inputs;
  std::string shard_spec;  // --shard K/N as given, parsed into `shard` by check_options
  fpn::examples::ShardSpec shard;
  fs::path resume;  // the results log (JSON Lines) to append to and resume from
  float score_thresh = 0.05f;  // torchvision's box_score_thresh
  std::int64_t min_size = 0;   // 0: the weights' "min_size" metadata, else the builder's (800)
  std::int64_t max_size = 0;   // 0: the weights' "max_size" metadata, else the builder's (1333)
  std::int64_t max_pixels = fpn::examples::default_max_pixels;  // refused from the header
  bool exif_transpose = false;  // as PIL.ImageOps.exif_transpose
};

fpn::examples::DecodeOptions decode_options(const Options& options) {
  return {options.max_pixels, options.exif_transpose};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A loaded detector behind one signature, whichever compile-time type it is.
struct LoadedDetector {
  std::int64_t num_classes = 0;
  std::vector<std::string> class_names;  // the weights' "class_names" metadata, or empty
  std::function<Detections(const RgbImage&)> detect;
};

// The library reads the weights' metadata (arch, num_classes, class_names, min_size/max_size);
// the command line's sizes and score threshold override its defaults.
template <typename Detector>
LoadedDetector load_detector(const fpn::io::SafeTensors& weights, const Options& options) {
  // A Faster R-CNN run from its Mask R-CNN's file (check_weights_arch) skips the mask branch.
  const auto stored = weights.metadata().find("arch");
  fpn::DetectorLoadOptions load_options;
  load_options.allow_unused = stored != weights.metadata().end() && stored->second != Detector::arch;
  auto detector = std::make_shared<Detector>(Detector::load(fpn::nn::WeightReader(weights), load_options));
  fpn::DetectorParams params = detector->default_params();
  if (options.min_size > 0) params.transform.min_size = options.min_size;
  if (options.max_size > 0) params.transform.max_size = options.max_size;
  params.roi_heads.score_thresh = options.score_thresh;
  detector->set_params(params);
  return {detector->num_classes(), detector->class_names(),
          [detector = std::shared_ptr<const Detector>(detector)](const RgbImage& image) {
            return detector->detect(image.view());
          }};
}

struct Architecture {
  std::string_view name;
  LoadedDetector (*load)(const fpn::io::SafeTensors&, const Options&);
};

// torchvision's builder names (fasterrcnn_resnet50_fpn, ...), as tools/convert_torchvision.py
// takes them and records them in the checkpoint's "arch" metadata, and the demo model's.
constexpr std::array<Architecture, 13> architectures = {{
    {"fasterrcnn_resnet18_fpn", &load_detector<fpn::FasterRCNNResNet18FPN>},
    {"fasterrcnn_resnet34_fpn", &load_detector<fpn::FasterRCNNResNet34FPN>},
    {"fasterrcnn_resnet50_fpn", &load_detector<fpn::FasterRCNNResNet50FPN>},
    {"fasterrcnn_resnet101_fpn", &load_detector<fpn::FasterRCNNResNet101FPN>},
    {"maskrcnn_resnet18_fpn", &load_detector<fpn::MaskRCNNResNet18FPN>},
    {"maskrcnn_resnet34_fpn", &load_detector<fpn::MaskRCNNResNet34FPN>},
    {"maskrcnn_resnet50_fpn", &load_detector<fpn::MaskRCNNResNet50FPN>},
    {"maskrcnn_resnet101_fpn", &load_detector<fpn::MaskRCNNResNet101FPN>},
    {"fasterrcnn_resnet50_fpn_v2", &load_detector<fpn::FasterRCNNResNet50FPNv2>},
    {"maskrcnn_resnet50_fpn_v2", &load_detector<fpn::MaskRCNNResNet50FPNv2>},
    {"fasterrcnn_mobilenet_v3_large_fpn", &load_detector<fpn::FasterRCNNMobileNetV3LargeFPN>},
    {"fasterrcnn_mobilenet_v3_large_320_fpn", &load_detector<fpn::FasterRCNNMobileNetV3Large320FPN>},
    {demo_arch, &load_detector<fpn::MaskRCNNShapesDemo>},
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
  std::string valid;
  for (const Architecture& arch : architectures) valid += (valid.empty() ? "" : ", ") + std::string(arch.name);
  throw fpn::ArgumentError("unknown architecture '" + std::string(name) + "', expected one of " + valid);
}

std::optional<std::string> metadata_value(const fpn::io::SafeTensors& weights, const std::string& key) {
  const auto found = weights.metadata().find(key);
  if (found == weights.metadata().end()) return std::nullopt;
  return found->second;
}

// A checkpoint that names its architecture must be for --arch, or be the Mask R-CNN of the same
// backbone when --arch is a Faster R-CNN (whose parameters are a subset of the Mask R-CNN's).
// Without this check, ResNet-34 weights would load into a ResNet-18 without complaint.
void check_weights_arch(const fpn::io::SafeTensors& weights, std::string_view arch) {
  const std::optional<std::string> found = metadata_value(weights, "arch");
  if (!found) return;
  const std::string& stored = *found;
  const bool same = stored == arch;
  const bool mask_for_faster =
      arch.starts_with("fasterrcnn_") &&
      stored == "maskrcnn_" + std::string(arch.substr(std::string_view("fasterrcnn_").size()));
  if (!same && !mask_for_faster) {
    throw fpn::WeightError("weights file '" + weights.source() + "' is for " + stored +
                           " (its \"arch\" metadata), not --arch " + std::string(arch));
  }
}

// The demo model: beside this program (the build tree), or in ../share/fpn (an install tree).
fs::path find_demo_weights() {
  std::error_code error;
  fs::path program = fs::read_symlink("/proc/self/exe", error);
  std::vector<fs::path> candidates;
  if (!error) {
    candidates.push_back(program.parent_path() / demo_weights_name);
    candidates.push_back(program.parent_path().parent_path() / "share" / "fpn" / demo_weights_name);
  }
  std::string tried;
  for (const fs::path& candidate : candidates) {
    if (fs::is_regular_file(candidate, error)) return candidate;
    tried += "\n  " + candidate.string();
  }
  throw fpn::IoError("the bundled demo model " + std::string(demo_weights_name) +
                     " is in none of its places:" + tried +
                     "\ngive a model with --arch and --weights");
}

// Class names: the weights' (LoadedDetector::class_names), else COCO's for a model with
// torchvision's 91 COCO outputs.
std::vector<std::string> class_names(const LoadedDetector& detector) {
  std::vector<std::string> names = detector.class_names;
  if (names.empty() &&
      detector.num_classes == static_cast<std::int64_t>(fpn::examples::coco_category_names.size())) {
    for (const auto name : fpn::examples::coco_category_names) names.emplace_back(name);
  }
  return names;
}

std::optional<std::string> category_name(const std::vector<std::string>& names, std::int64_t label) {
  if (label <= 0 || label >= static_cast<std::int64_t>(names.size())) return std::nullopt;
  const std::string& name = names[static_cast<std::size_t>(label)];
  if (name.empty()) return std::nullopt;
  return name;
}

std::string caption_name(const std::vector<std::string>& names, std::int64_t label) {
  return category_name(names, label).value_or("label " + std::to_string(label));
}

using fpn::examples::json_number;

// One image's entries of the COCO results format (https://cocodataset.org/#format-results).
nlohmann::ordered_json coco_results(const Detections& detections, std::int64_t image_id,
                                    const std::vector<std::string>& names) {
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const Detection& detection : detections.items) {
    nlohmann::ordered_json entry;
    entry["image_id"] = image_id;
    entry["category_id"] = detection.label;
    if (auto name = category_name(names, detection.label)) entry["category_name"] = *name;
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
    results.push_back(std::move(entry));
  }
  return results;
}

// The entries as --json writes them, one a line. An entry read back from a results log dumps to
// the same text: each number was written as the shortest text that reads back as its double.
std::string joined_entries(const nlohmann::ordered_json& results) {
  std::string text;
  for (const auto& entry : results) text += (text.empty() ? "" : ",\n") + entry.dump();
  return text;
}

void print_detections(const Detections& detections, const std::vector<std::string>& names,
                      const Options& options) {
  constexpr std::size_t shown = 20;
  const auto& items = detections.items;
  for (std::size_t i = 0; i < items.size() && i < shown; ++i) {
    const Detection& detection = items[i];
    std::printf("  %-16s %.3f  box [%.1f, %.1f, %.1f, %.1f]%s\n",
                caption_name(names, detection.label).c_str(), static_cast<double>(detection.score),
                static_cast<double>(detection.box[0]), static_cast<double>(detection.box[1]),
                static_cast<double>(detection.box[2]), static_cast<double>(detection.box[3]),
                detection.mask ? "  + mask" : "");
  }
  if (items.size() > shown) {
    std::printf("  ... and %zu more%s%s\n", items.size() - shown,
                options.json.empty() ? "" : " in ", options.json.string().c_str());
  }
}

bool is_image_file(const fs::path& path) {
  // What the decoders read (examples/common/image_decoders.cpp).
  static const std::set<std::string> extensions = {".png", ".jpg", ".jpeg", ".jpe", ".pnm", ".ppm",
                                                   ".pgm"};
  std::string extension = path.extension().string();
  std::ranges::transform(extension, extension.begin(), [](unsigned char c) { return std::tolower(c); });
  return extensions.contains(extension);
}

// The inputs in command-line order; a directory stands for its image files (by extension, not
// recursive), sorted by name.
std::vector<fs::path> expand_inputs(const std::vector<fs::path>& inputs) {
  std::vector<fs::path> images;
  for (const fs::path& input : inputs) {
    std::error_code error;
    if (!fs::is_directory(input, error)) {
      fpn::examples::check_input_file(input, "image");
      images.push_back(input);
      continue;
    }
    std::vector<fs::path> found;
    for (const fs::directory_entry& entry : fs::directory_iterator(input, error)) {
      if (entry.is_regular_file(error) && is_image_file(entry.path())) found.push_back(entry.path());
    }
    if (error) throw fpn::IoError("cannot list directory '" + input.string() + "': " + error.message());
    if (found.empty()) {
      throw fpn::IoError("directory '" + input.string() + "' holds no image files (.png, .jpg, ...)");
    }
    std::ranges::sort(found);
    images.insert(images.end(), found.begin(), found.end());
  }
  return images;
}

// <dir>/<stem>.png, with -2, -3, ... where two inputs share a stem.
std::vector<fs::path> drawn_paths(const std::vector<fs::path>& images, const fs::path& directory) {
  std::vector<fs::path> paths;
  std::set<std::string> taken;
  for (const fs::path& image : images) {
    std::string name = image.stem().string() + ".png";
    for (int suffix = 2; taken.contains(name); ++suffix) {
      name = image.stem().string() + "-" + std::to_string(suffix) + ".png";
    }
    taken.insert(name);
    paths.push_back(directory / name);
  }
  return paths;
}

// A picture must never replace an input image (--output-dir being the input's own directory, say).
void refuse_to_draw_over_inputs(const std::vector<fs::path>& images, const std::vector<fs::path>& drawn,
                                const fs::path& output) {
  std::set<fs::path> inputs;
  for (const fs::path& image : images) {
    std::error_code error;
    inputs.insert(fs::weakly_canonical(image, error));
  }
  std::vector<fs::path> targets = drawn;
  if (!output.empty()) targets.push_back(output);
  for (const fs::path& target : targets) {
    std::error_code error;
    if (inputs.contains(fs::weakly_canonical(target, error))) {
      throw fpn::examples::UsageError("refusing to draw over the input image '" + target.string() +
                                      "'; choose another --output or --output-dir");
    }
  }
}

// "[=========>          ] 12/40 images, 3.1 images/s" on a terminal's stderr, redrawn in place.
class ProgressBar {
 public:
  explicit ProgressBar(std::size_t total)
      : total_(total), enabled_(total > 1 && isatty(fileno(stderr)) == 1),
        start_(std::chrono::steady_clock::now()) {}
  void update(std::size_t done) const {
    if (!enabled_) return;
    constexpr std::size_t width = 30;
    const std::size_t filled = width * done / total_;
    std::string bar(filled, '=');
    if (filled < width) bar += '>' + std::string(width - filled - 1, ' ');
    const double elapsed = seconds_since(start_);
    std::fprintf(stderr, "\r[%s] %zu/%zu images, %.2f images/s", bar.c_str(), done, total_,
                 elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0);
    if (done == total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }
  // Erases the bar, so that a line printed next (to stderr or to stdout on the same terminal)
  // does not land behind it; update() draws it again.
  void clear() const {
    if (!enabled_) return;
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
  // A message on its own line, the bar redrawn below it.
  void message(const std::string& text, std::size_t done) const {
    clear();
    std::fprintf(stderr, "%s\n", text.c_str());
    update(done);
  }

 private:
  std::size_t total_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code a_error;
  std::error_code b_error;
  const fs::path a_path = fs::weakly_canonical(a, a_error);
  const fs::path b_path = fs::weakly_canonical(b, b_error);
  return !a.empty() && !b.empty() && !a_error && !b_error && a_path == b_path;
}

// NAME.images.json beside --json NAME.json: the "images" section of a COCO annotation file.
fs::path image_table_path(const fs::path& json) {
  fs::path table = json;
  table.replace_extension(".images.json");
  return table;
}

void check_options(Options& options) {
  if (options.inputs.empty()) throw fpn::examples::UsageError("give at least one IMAGE");
  if (!options.shard_spec.empty()) options.shard = fpn::examples::parse_shard(options.shard_spec);
  if (!options.resume.empty()) {
    fpn::examples::check_output_file(options.resume, "resume file");
    if (!options.json.empty() && (same_file(options.resume, options.json) ||
                                  same_file(options.resume, image_table_path(options.json)))) {
      throw fpn::examples::UsageError("--resume '" + options.resume.string() +
                                      "' would be overwritten by --json's outputs");
    }
  }
  if (!options.output.empty() && !options.output_dir.empty()) {
    throw fpn::examples::UsageError("--output and --output-dir exclude each other");
  }
  if (options.weights.empty() && !options.arch.empty() && options.arch != demo_arch) {
    throw fpn::examples::UsageError("--arch " + options.arch + " needs --weights");
  }
  if (!options.json.empty()) fpn::examples::check_output_file(options.json, "JSON");
  if (!options.output.empty()) {
    fpn::examples::check_output_file(options.output, "image");
    if (same_file(options.output, options.json)) {
      throw fpn::ArgumentError("--json and --output name the same file '" + options.json.string() + "'");
    }
  }
  if (!options.output_dir.empty()) {
    std::error_code error;
    if (!fs::is_directory(options.output_dir, error)) {
      throw fpn::IoError("--output-dir '" + options.output_dir.string() + "' is not an existing directory");
    }
  }
}

// One image's outcome, as --json, NAME.images.json and the results log hold it.
struct ImageOutcome {
  std::string file_name;
  std::int64_t width = 0;
  std::int64_t height = 0;
  std::string entries;  // its COCO result entries, joined_entries()
  bool failed = false;  // could not be read: in no output, retried on resume
};
using Outcomes = std::map<std::int64_t, ImageOutcome>;  // by image_id, the order of the outputs

// The results log's header: everything that decides which images a run reads and what it
// detects in them. (Not --threads: the detections are the same for any thread count.)
nlohmann::ordered_json results_log_header(const std::vector<fs::path>& images, const Options& options) {
  fpn::examples::Fingerprint inputs;
  for (const fs::path& image : images) {
    inputs.add(image.string());
    inputs.add(std::string_view("\0", 1));  // no file name holds a NUL
  }
  nlohmann::ordered_json header;
  header["format"] = "fpn_detect results log 1";
  header["shard"] = options.shard.str();
  header["inputs"] = {{"count", images.size()}, {"fnv1a64", inputs.hex()}};
  header["weights"] = fpn::examples::file_fingerprint(options.weights);
  header["arch"] = options.arch;
  header["score_thresh"] = json_number(options.score_thresh);
  header["min_size"] = options.min_size;
  header["max_size"] = options.max_size;
  header["max_pixels"] = options.max_pixels;
  header["exif_transpose"] = options.exif_transpose;
  return header;
}

// Takes the image lines of a results log written before, checked against this run's images.
ResultsLog::OnRecord take_logged_outcome(Outcomes& outcomes, const std::vector<fs::path>& images,
                                         const Options& options) {
  return [&outcomes, &images, &options](const nlohmann::ordered_json& record, std::size_t line) {
    const auto refuse = [&](const std::string& what) {
      throw fpn::IoError("resume file '" + options.resume.string() + "' line " +
                         std::to_string(line) + ": " + what);
    };
    try {
      const auto id = record.at("image_id").get<std::int64_t>();
      if (id < 0 || id >= static_cast<std::int64_t>(images.size()) ||
          !options.shard.contains(static_cast<std::size_t>(id))) {
        refuse("image_id " + std::to_string(id) + " is not an image of shard " + options.shard.str());
      }
      ImageOutcome outcome;
      outcome.file_name = images[static_cast<std::size_t>(id)].string();
      if (record.at("file_name") != outcome.file_name) {
        refuse("image " + std::to_string(id) + " is " + record.at("file_name").dump() +
               ", this run's is '" + outcome.file_name + "'");
      }
      const auto found = outcomes.find(id);
      if (found != outcomes.end() && !found->second.failed) {
        refuse("image " + std::to_string(id) + " ('" + outcome.file_name + "') is in it twice");
      }
      outcome.failed = record.contains("error");
      if (!outcome.failed) {
        outcome.width = record.at("width").get<std::int64_t>();
        outcome.height = record.at("height").get<std::int64_t>();
        outcome.entries = joined_entries(record.at("results"));
      }
      outcomes[id] = std::move(outcome);
    } catch (const nlohmann::json::exception& error) {
      refuse(std::string("not an image record (") + error.what() + ")");
    }
  };
}

// --json's results and NAME.images.json, in image_id order.
void write_outputs(const Outcomes& outcomes, const Options& options, bool many) {
  std::string json = "[";
  nlohmann::ordered_json image_table = nlohmann::ordered_json::array();
  for (const auto& [id, outcome] : outcomes) {
    if (outcome.failed) continue;
    if (!outcome.entries.empty()) json += (json.size() == 1 ? "\n" : ",\n") + outcome.entries;
    image_table.push_back({{"id", id}, {"file_name", outcome.file_name}, {"height", outcome.height},
                           {"width", outcome.width}});
  }
  json += json.size() == 1 ? "]\n" : "\n]\n";
  if (options.json.empty()) return;
  if (many) {
    // The results format has no room for file names: they go beside it, as the "images"
    // section of a COCO annotation file ({id, file_name, height, width}).
    fpn::io::write_file_atomically(image_table_path(options.json), image_table.dump(1) + "\n");
  }
  fpn::io::write_file_atomically(options.json, json);
}

int run(Options& options) {
  // Everything that can be checked cheaply is checked before the weights are read.
  check_options(options);
  const std::vector<fs::path> images = expand_inputs(options.inputs);
  const bool batch = !options.shard_spec.empty() || !options.resume.empty();
  const bool many = images.size() > 1 || fs::is_directory(options.inputs.front()) || batch;
  if (many && !options.output.empty()) {
    throw fpn::examples::UsageError(
        "--output draws one image; " +
        (batch ? std::string("with --shard or --resume")
               : "for " + std::to_string(images.size()) + " images") +
        " use --output-dir");
  }
  const std::vector<fs::path> drawn =
      options.output_dir.empty() ? std::vector<fs::path>{} : drawn_paths(images, options.output_dir);
  refuse_to_draw_over_inputs(images, drawn, options.output);
  // One image is decoded before the weights are read, so that a bad one fails fast; in a run over
  // many, each is decoded in turn and a bad one is skipped.
  std::optional<RgbImage> single;
  if (!many) single = fpn::examples::load_image_rgb(images.front(), decode_options(options));
  if (options.weights.empty()) {
    options.weights = find_demo_weights();
    if (options.arch.empty()) options.arch = demo_arch;
  }
  fpn::examples::check_input_file(options.weights, "weights file");

  const auto load_start = std::chrono::steady_clock::now();
  const fpn::io::SafeTensors weights = fpn::io::SafeTensors::open(options.weights);
  if (options.arch.empty()) {
    const auto stored = metadata_value(weights, "arch");
    if (!stored) {
      throw fpn::examples::UsageError("weights file '" + options.weights.string() +
                                      "' does not name its architecture; give --arch");
    }
    options.arch = *stored;
  }
  const Architecture& arch = find_architecture(options.arch);
  check_weights_arch(weights, arch.name);
  // The log is opened (and checked against this run) before the model is loaded.
  Outcomes outcomes;
  std::unique_ptr<ResultsLog> log;
  if (!options.resume.empty()) {
    log = std::make_unique<ResultsLog>(options.resume, results_log_header(images, options),
                                       take_logged_outcome(outcomes, images, options));
  }
  const LoadedDetector detector = arch.load(weights, options);
  const std::vector<std::string> names = class_names(detector);
  std::printf("%s: %s loaded in %.2f s\n", std::string(arch.name).c_str(),
              options.weights.string().c_str(), seconds_since(load_start));

  std::vector<std::size_t> todo;  // this run's images: the shard's, less those already logged
  std::size_t in_shard = 0;
  for (std::size_t index = 0; index < images.size(); ++index) {
    if (!options.shard.contains(index)) continue;
    ++in_shard;
    const auto logged = outcomes.find(static_cast<std::int64_t>(index));
    if (logged == outcomes.end() || logged->second.failed) todo.push_back(index);
  }
  if (batch) {
    std::printf("shard %s: %zu of %zu images", options.shard.str().c_str(), in_shard, images.size());
    if (log) std::printf(", %zu already in %s", in_shard - todo.size(), options.resume.c_str());
    std::printf("\n");
    std::fflush(stdout);
  }

  std::size_t failed = 0;
  const ProgressBar progress(todo.size());
  const auto detect_start = std::chrono::steady_clock::now();
  for (std::size_t done = 0; done < todo.size(); ++done) {
    const std::size_t index = todo[done];
    const fs::path& path = images[index];
    const auto id = static_cast<std::int64_t>(index);
    RgbImage image;
    if (single) {
      image = std::move(*single);
    } else {
      try {
        image = fpn::examples::load_image_rgb(path, decode_options(options));
      } catch (const fpn::Error& error) {
        ++failed;  // in a folder, one bad file does not stop the others; the exit status says so
        progress.message(std::string("fpn_detect: skipped: ") + error.what(), done + 1);
        if (log) log->append({{"image_id", id}, {"file_name", path.string()}, {"error", error.what()}});
        outcomes[id] = {path.string(), 0, 0, "", true};
        continue;
      }
    }
    const auto start = std::chrono::steady_clock::now();
    Detections detections = detector.detect(image);
    const double seconds = seconds_since(start);
    nlohmann::ordered_json results = coco_results(detections, id, names);
    ImageOutcome outcome{path.string(), image.width, image.height, joined_entries(results), false};
    if (!many) {
      std::printf("%s, %lldx%lld: %zu detection%s with score > %g (%.3f s)\n", path.string().c_str(),
                  static_cast<long long>(image.width), static_cast<long long>(image.height),
                  detections.items.size(), detections.items.size() == 1 ? "" : "s",
                  static_cast<double>(options.score_thresh), seconds);
      print_detections(detections, names, options);
    } else {
      progress.clear();
      std::printf("%lld %s: %zu detections (%.3f s)\n", static_cast<long long>(id),
                  path.string().c_str(), detections.items.size(), seconds);
      std::fflush(stdout);
    }
    const fs::path& target = drawn.empty() ? options.output : drawn[index];
    if (!target.empty()) {
      const auto caption = [&](const Detection& detection) {
        char score[16];
        std::snprintf(score, sizeof score, "%.2f", static_cast<double>(detection.score));
        return caption_name(names, detection.label) + " " + score;
      };
      fpn::examples::draw_detections(image, detections, caption,
                                     fpn::examples::style_for(image.height, image.width));
      fpn::examples::save_png_atomically(target, image);
    }
    // Logged last, once everything for the image is done: a run killed before this line redoes it.
    if (log) {
      log->append({{"image_id", id}, {"file_name", outcome.file_name}, {"width", outcome.width},
                   {"height", outcome.height}, {"results", std::move(results)}});
    }
    outcomes[id] = std::move(outcome);
    progress.update(done + 1);
  }
  if (many) {
    const double seconds = seconds_since(detect_start);
    std::printf("%zu images in %.1f s (%.2f images/s)%s\n", todo.size() - failed, seconds,
                seconds > 0 ? static_cast<double>(todo.size() - failed) / seconds : 0.0,
                failed ? (", " + std::to_string(failed) + " skipped").c_str() : "");
  }
  write_outputs(outcomes, options, many);
  if (failed > 0) {
    std::fprintf(stderr, "fpn_detect: %zu of %zu images could not be read\n", failed, todo.size());
    return fpn::examples::exit_failure;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Detects objects in images with a Faster R-CNN or Mask R-CNN on a ResNet-FPN backbone, or\n"
      "a Faster R-CNN on MobileNetV3-Large-FPN, equal to torchvision 0.14's, prints them and\n"
      "writes them as one COCO results file.\n"
      "Without --arch and --weights it runs the bundled demo model (five shapes, trained by\n"
      "tools/train_demo.py).",
      "fpn_detect"};
  Options options;
  app.add_option("--arch", options.arch,
                 "detector architecture (default: the weights' \"arch\" metadata)")
      ->check(CLI::IsMember(architecture_names()));
  app.add_option("--weights", options.weights,
                 "the detector's weights as safetensors, converted from a torchvision checkpoint "
                 "by tools/convert_torchvision.py (a Mask R-CNN's weights also serve the Faster "
                 "R-CNN of the same backbone); default: the bundled demo model");
  app.add_option("--json", options.json,
                 "write the detections here: a COCO results JSON list of {image_id (the image's "
                 "index), category_id (the model's label; torchvision's COCO models use COCO's "
                 "91-id scheme), category_name, bbox [x, y, width, height] in pixels, score} and, "
                 "for Mask R-CNN, segmentation: the mask > 0.5 as {size [height, width], counts} in "
                 "pycocotools' compressed RLE. With several images, the image ids' file names go "
                 "to NAME.images.json beside it");
  app.add_option("--output", options.output,
                 "draw the boxes, masks and 'label score' captions onto the image and write it "
                 "here as PNG (one image only)");
  app.add_option("--output-dir", options.output_dir,
                 "draw every image into this existing directory as <image name>.png");
  app.add_option("--score-thresh", options.score_thresh,
                 "keep detections scoring above this (torchvision's box_score_thresh, applied "
                 "before per-class NMS and the top-100 cut)")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  app.add_option("--min-size", options.min_size,
                 "resize so that the short side is this many pixels (torchvision's min_size; "
                 "default: the weights' min_size metadata, else the builder's: 800, 320 for "
                 "fasterrcnn_mobilenet_v3_large_320_fpn)...")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-size", options.max_size,
                 "...unless the long side would exceed this (torchvision's max_size; default: "
                 "the weights' max_size metadata, else the builder's: 1333, 640 for "
                 "fasterrcnn_mobilenet_v3_large_320_fpn)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-pixels", options.max_pixels,
                 "refuse images of more pixels than this, from their header, before decoding")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--exif-transpose", options.exif_transpose,
               "turn each JPEG (or PNG with eXIf) upright by its EXIF Orientation tag, as "
               "PIL.ImageOps.exif_transpose does; by default the orientation is ignored, as PIL's "
               "Image.open does");
  app.add_option("--shard", options.shard_spec,
                 "K/N: process only shard K of N, the images whose index in the whole input list "
                 "(every IMAGE, directories sorted by name) is K modulo N. K is 0-based, 0..N-1, "
                 "as SLURM_ARRAY_TASK_ID of --array=0-(N-1). image_id stays the index in the whole "
                 "list, so the shards' ids never collide; tools/merge_results.py joins their "
                 "--resume files into the results of one run over all images");
  app.add_option("--resume", options.resume,
                 "append each image's results to this JSON Lines file as soon as it is done "
                 "(one whole line, flushed to disk), and skip the images already in it: a killed "
                 "run, started again with the same command, loses at most the image in flight. "
                 "Its first line records the inputs, weights, options and shard, and a file of "
                 "another run is refused. Images that could not be read are logged and tried "
                 "again. --json still gets all of the shard's results at the end");
  app.add_option("IMAGE", options.inputs,
                 "images (PNG, JPEG or binary PNM, decoded to 8-bit RGB as PIL's "
                 "Image.open(path).convert(\"RGB\") does) or directories of them")
      ->required();
  fpn::examples::add_runtime_options(app);
  app.footer(
      "In a run over several images, one that cannot be read is skipped with a message and the\n"
      "others go on; the exit status is then 1. A run over a large collection: --shard K/N on each\n"
      "machine, with --resume for restarts (examples/slurm/ submits it as a Slurm array job).\n" +
      std::string(fpn::examples::exit_status_help));
  return fpn::examples::run_command_line(app, argc, argv, [&] { return run(options); });
}
