// fpn_features: runs the backbone (ResNet-FPN or MobileNetV3-Large-FPN) of a converted torchvision
// detector on one image and writes the feature pyramid (P2..P6 of a ResNet-FPN; "0", "1", "pool"
// of MobileNetV3-FPN) and, with --stages, the stage maps the FPN reads (the ResNet stages C2..C5;
// MobileNetV3's stages 4 and 5) as safetensors.
//
//   fpn_features --arch resnet50_fpn --weights maskrcnn.safetensors --output features.safetensors
//                photo.jpg
//
// Only the checkpoint's "backbone.*" tensors are read, so any detector with that backbone serves.
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/cli_support.hpp"
#include "common/image_io.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/nn/backbone.hpp"
#include "fpn/nn/mobilenet_v3.hpp"
#include "fpn/nn/transform.hpp"
#include "fpn/nn/weights.hpp"

namespace {

namespace fs = std::filesystem;
using fpn::Tensor;

struct Options {
  std::string arch;
  fs::path weights;
  fs::path output;
  fs::path image;
  bool stages = false;
  bool exif_transpose = false;  // as PIL.ImageOps.exif_transpose
  std::int64_t min_size = 800;
  std::int64_t max_size = 1333;
};

// Named output tensors, [1, C, H, W] each.
using NamedTensors = std::vector<std::pair<std::string, Tensor<float>>>;

std::int64_t stride_log2(std::int64_t stride) {
  std::int64_t log2 = 0;
  while ((std::int64_t{1} << (log2 + 1)) <= stride) ++log2;
  return log2;
}

// Whether two of the strides are equal.
bool strides_repeat(std::span<const std::int64_t> strides) {
  for (std::size_t i = 0; i < strides.size(); ++i) {
    for (std::size_t j = i + 1; j < strides.size(); ++j) {
      if (strides[i] == strides[j]) return true;
    }
  }
  return false;
}

// "p<log2 stride>" (p2..p6 for the R-CNN FPNs) when the strides are distinct, else torchvision's
// keys for every level ("0", "1", "pool" of MobileNetV3-FPN, whose first two levels share stride
// 32), not a mix of both.
std::string level_name(const fpn::nn::FeaturePyramid& pyramid, std::size_t level) {
  if (strides_repeat(pyramid.strides)) return pyramid.names[level];
  return "p" + std::to_string(stride_log2(pyramid.strides[level]));
}

// The name of stage map `stage` the neck takes: "c<log2 stride>" (c2..c5 of a ResNet) when the
// strides are distinct, else "stage<number>" by the body's stage number as torchvision's
// returned_layers counts them (MobileNetV3's stages 4 and 5, both at stride 32).
template <typename Backbone>
std::string stage_name(std::size_t stage) {
  if (strides_repeat(Backbone::taken_strides)) {
    return fpn::detail::numbered("stage", Backbone::returned_stages::numbers[stage]);
  }
  return fpn::detail::numbered("c", stride_log2(Backbone::taken_strides[stage]));
}

template <typename Backbone>
NamedTensors extract(const fpn::io::SafeTensors& weights, const fpn::nn::PreprocessedImage& image,
                     bool stages, bool check_arch) {
  const Backbone backbone =
      Backbone::load(fpn::nn::WeightReader(weights), fpn::nn::LoadOptions{.check_arch = check_arch});
  std::vector<Tensor<float>> outputs = backbone.forward_stages(image.tensor);
  const fpn::nn::FeaturePyramid pyramid = backbone.neck().forward(outputs);
  NamedTensors tensors;
  for (std::size_t level = 0; level < pyramid.size(); ++level) {
    tensors.emplace_back(level_name(pyramid, level), pyramid.levels[level]);
  }
  if (stages) {
    for (std::size_t stage = 0; stage < outputs.size(); ++stage) {
      tensors.emplace_back(stage_name<Backbone>(stage), std::move(outputs[stage]));
    }
  }
  return tensors;
}

struct Architecture {
  std::string_view name;
  NamedTensors (*extract)(const fpn::io::SafeTensors&, const fpn::nn::PreprocessedImage&, bool stages,
                          bool check_arch);
  // A detector builder whose files hold this backbone although its name does not end in it.
  std::string_view also_in{};
};

// torchvision's backbone names, as in the detectors' "<kind>_<backbone>" arch names.
// resnet50_fpn_v2 is the backbone of torchvision's *_resnet50_fpn_v2 builders (BatchNorm FPN);
// mobilenet_v3_large_fpn that of fasterrcnn_mobilenet_v3_large_fpn and of its 320 variant.
constexpr std::array<Architecture, 6> architectures = {{
    {"resnet18_fpn", &extract<fpn::nn::ResNetFPN<18>>},
    {"resnet34_fpn", &extract<fpn::nn::ResNetFPN<34>>},
    {"resnet50_fpn", &extract<fpn::nn::ResNetFPN<50>>},
    {"resnet101_fpn", &extract<fpn::nn::ResNetFPN<101>>},
    {"resnet50_fpn_v2", &extract<fpn::nn::ResNetFPNv2<50>>},
    {"mobilenet_v3_large_fpn", &extract<fpn::nn::MobileNetV3LargeFPN>,
     "fasterrcnn_mobilenet_v3_large_320_fpn"},
}};

std::vector<std::string> architecture_names() {
  std::vector<std::string> names;
  for (const Architecture& arch : architectures) names.emplace_back(arch.name);
  return names;
}

// Without --arch: the backbone that ends the weights' "arch" metadata ("maskrcnn_resnet50_fpn").
const Architecture* architecture_from_weights(const fpn::io::SafeTensors& weights) {
  const auto found = weights.metadata().find("arch");
  if (found == weights.metadata().end()) {
    throw fpn::examples::UsageError("weights file '" + weights.source() +
                                    "' does not name its architecture; give --arch");
  }
  for (const Architecture& candidate : architectures) {
    if (fpn::nn::detail::arch_has_backbone(found->second, candidate.name) ||
        found->second == candidate.also_in) {
      return &candidate;
    }
  }
  throw fpn::WeightError("weights file '" + weights.source() + "' is for " + found->second +
                         " (its \"arch\" metadata), whose backbone is none of " +
                         [] {
                           std::string all;
                           for (const auto& name : architecture_names()) all += (all.empty() ? "" : ", ") + name;
                           return all;
                         }());
}

void run(const Options& options) {
  const Architecture* arch = nullptr;
  for (const Architecture& candidate : architectures) {
    if (candidate.name == options.arch) arch = &candidate;
  }
  if (arch == nullptr && !options.arch.empty()) {
    throw fpn::ArgumentError("unknown architecture '" + options.arch + "'");
  }
  fpn::examples::check_output_file(options.output, "features");
  fpn::examples::check_input_file(options.image, "image");
  fpn::examples::check_input_file(options.weights, "weights file");
  const fpn::examples::RgbImage image = fpn::examples::load_image_rgb(
      options.image, {fpn::examples::default_max_pixels, options.exif_transpose});
  const fpn::io::SafeTensors weights = fpn::io::SafeTensors::open(options.weights);
  // The backbone's load refuses weights whose "arch" metadata names another backbone.
  if (arch == nullptr) arch = architecture_from_weights(weights);

  fpn::nn::TransformParams transform;
  transform.min_size = options.min_size;
  transform.max_size = options.max_size;
  const auto start = std::chrono::steady_clock::now();
  const fpn::nn::PreprocessedImage preprocessed = fpn::nn::preprocess(image.view(), transform);
  // The backbone's load checks the weights' "arch" metadata against its name, except for a
  // builder whose name does not end in it (checked here instead).
  const auto stored = weights.metadata().find("arch");
  const bool check_arch = stored == weights.metadata().end() || arch->also_in.empty() ||
                          stored->second != arch->also_in;
  const NamedTensors tensors = arch->extract(weights, preprocessed, options.stages, check_arch);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::vector<std::pair<std::string, fpn::TensorView<const float>>> views;
  for (const auto& [name, tensor] : tensors) views.emplace_back(name, tensor);
  const std::map<std::string, std::string> metadata = {
      {"format", "fpn_features"},
      {"arch", std::string(arch->name)},
      {"weights", options.weights.filename().string()},
      {"image", options.image.filename().string()},
      {"min_size", std::to_string(options.min_size)},
      {"max_size", std::to_string(options.max_size)},
      {"original_height", std::to_string(preprocessed.original_height)},
      {"original_width", std::to_string(preprocessed.original_width)},
      {"resized_height", std::to_string(preprocessed.resized_height)},
      {"resized_width", std::to_string(preprocessed.resized_width)},
      {"padded_height", std::to_string(preprocessed.tensor.dim(2))},
      {"padded_width", std::to_string(preprocessed.tensor.dim(3))},
  };
  fpn::io::save_safetensors(options.output, views, metadata);

  std::printf("%s: %s, %lldx%lld resized to %lldx%lld, padded to %lldx%lld (%.2f s)\n",
              std::string(arch->name).c_str(), options.image.string().c_str(),
              static_cast<long long>(preprocessed.original_width),
              static_cast<long long>(preprocessed.original_height),
              static_cast<long long>(preprocessed.resized_width),
              static_cast<long long>(preprocessed.resized_height),
              static_cast<long long>(preprocessed.tensor.dim(3)),
              static_cast<long long>(preprocessed.tensor.dim(2)), seconds);
  for (const auto& [name, tensor] : tensors) {
    std::printf("  %-6s %s\n", name.c_str(), tensor.shape().str().c_str());
  }
  std::printf("wrote %s\n", options.output.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Runs the ResNet-FPN or MobileNetV3-Large-FPN backbone of a converted torchvision detector\n"
      "on IMAGE, preprocessed as torchvision's GeneralizedRCNNTransform does (x / 255, ImageNet\n"
      "mean and std, bilinear resize, zero padding to a multiple of 32), and writes its feature\n"
      "maps as safetensors, F32 [1, 256, H, W]: p2..p6 at strides 4..64 of the padded image for a\n"
      "ResNet-FPN, c2..c5 with --stages; torchvision's keys 0, 1 (both stride 32) and pool\n"
      "(stride 64) for MobileNetV3-FPN, stage4 and stage5 with --stages.\n"
      "The metadata records arch, weights, image, min_size, max_size, original_height/width,\n"
      "resized_height/width and padded_height/width.",
      "fpn_features"};
  Options options;
  app.add_option("--arch", options.arch,
                 "backbone architecture (default: the one the weights' \"arch\" metadata names)")
      ->check(CLI::IsMember(architecture_names()));
  app.add_option("--weights", options.weights,
                 "a converted detector checkpoint (tools/convert_torchvision.py) with this "
                 "backbone; only its backbone.* tensors are read")
      ->required();
  app.add_option("--output", options.output, "where to write the features (safetensors)")
      ->required();
  app.add_flag("--stages", options.stages,
               "also write the stage outputs the FPN reads (F32 [1, C, H, W]): the ResNet stages "
               "c2..c5 (C = 64..512 for ResNet-18/34, 256..2048 for ResNet-50/101), MobileNetV3's "
               "stage4 and stage5 (C = 160 and 960, both stride 32)");
  app.add_flag("--exif-transpose", options.exif_transpose,
               "turn the image upright by its EXIF Orientation tag, as PIL.ImageOps.exif_transpose "
               "does (by default it is ignored, as PIL's Image.open does)");
  fpn::examples::add_image_options(app, options.min_size, options.max_size, options.image);
  fpn::examples::add_runtime_options(app);
  app.footer(std::string(fpn::examples::exit_status_help));
  return fpn::examples::run_command_line(app, argc, argv, [&] { run(options); });
}
