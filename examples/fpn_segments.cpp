// fpn_segments: runs the seed's segment-proposal network (the FPN paper's section 6.1, trained by
// tools/train_seed.py, weights examples/data/seed/segments.safetensors) on one image and writes its
// best segment proposals as JSON, each mask as a COCO compressed RLE.
//
//   fpn_segments --model examples/data/seed/segments.safetensors --image scene.png --out out.json
//                [--top 100]
//
// The output: {"image": IMAGE, "height": h, "width": w, "segments": [{"score": s,
// "bbox": [x, y, width, height], "segmentation": {"size": [h, w], "counts": "..."}}, ...]} by
// decreasing score; bbox is the box of the mask as the network predicts it, in the image's pixels.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/cli_support.hpp"
#include "common/coco.hpp"
#include "common/image_io.hpp"
#include "fpn/io/atomic_file.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/segment_proposal_network.hpp"
#include "fpn/models/seed.hpp"
#include "fpn/nn/segment_proposals.hpp"
#include "fpn/nn/weights.hpp"

namespace {

namespace fs = std::filesystem;

// The seed's network: the demo's body and 64-channel FPN, windows 5 and 7, 14x14 masks.
using SeedSegmentNetwork = fpn::SeedSegments;

struct Options {
  fs::path model;
  fs::path image;
  fs::path out;
  std::int64_t top = 100;
};

using fpn::examples::json_number;

void run(const Options& options) {
  fpn::examples::check_output_file(options.out, "output");
  fpn::examples::check_input_file(options.model, "model");
  fpn::examples::check_input_file(options.image, "image");
  const fpn::io::SafeTensors weights = fpn::io::SafeTensors::open(options.model);
  SeedSegmentNetwork network = SeedSegmentNetwork::load(fpn::nn::WeightReader(weights));
  fpn::SegmentNetworkParams params = network.default_params();
  // Only the best `top` are wanted: NMS stops there, and only their masks are pasted.
  params.segments.post_nms_top_n = std::min(params.segments.post_nms_top_n, options.top);
  network.set_params(params);
  const fpn::examples::RgbImage image = fpn::examples::load_image_rgb(options.image);

  const auto start = std::chrono::steady_clock::now();
  const fpn::Segments segments = network.forward(image.view());
  nlohmann::ordered_json entries = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < segments.items.size(); ++i) {
    const fpn::Segment& segment = segments.items[i];
    const std::vector<std::uint8_t> binary =
        segments.mask(i).binary(segments.image_height, segments.image_width);
    const fpn::examples::RleCounts counts =
        fpn::examples::rle_encode(binary, segments.image_height, segments.image_width);
    nlohmann::ordered_json entry;
    entry["score"] = json_number(segment.score);
    const auto& box = segment.box;
    entry["bbox"] = {json_number(box[0]), json_number(box[1]), json_number(box[2] - box[0]),
                     json_number(box[3] - box[1])};
    entry["segmentation"] = {{"size", {segments.image_height, segments.image_width}},
                             {"counts", fpn::examples::rle_to_string(counts)}};
    entries.push_back(std::move(entry));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  nlohmann::ordered_json result;
  result["image"] = options.image.string();
  result["height"] = segments.image_height;
  result["width"] = segments.image_width;
  result["segments"] = std::move(entries);
  fpn::io::write_file_atomically(options.out, result.dump(1) + "\n");
  std::printf("%s: %lldx%lld, %zu segments (%.2f s), wrote %s\n", options.image.string().c_str(),
              static_cast<long long>(segments.image_width),
              static_cast<long long>(segments.image_height), segments.items.size(), seconds,
              options.out.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Runs the seed's segment-proposal network (FPN paper section 6.1; tools/train_seed.py) on\n"
      "IMAGE and writes its best segment proposals as JSON: {\"image\", \"height\", \"width\",\n"
      "\"segments\": [{\"score\", \"bbox\": [x, y, w, h], \"segmentation\": {\"size\": [h, w],\n"
      "\"counts\": COCO compressed RLE}}]}, by decreasing score.",
      "fpn_segments"};
  Options options;
  app.add_option("--model", options.model,
                 "the trained network, e.g. examples/data/seed/segments.safetensors")
      ->required();
  app.add_option("--image", options.image,
                 "the image: PNG, JPEG or binary PNM, decoded to 8-bit RGB as PIL's "
                 "Image.open(path).convert(\"RGB\") does")
      ->required();
  app.add_option("--out", options.out, "where to write the JSON")->required();
  app.add_option("--top", options.top, "how many proposals to write, best first (at most 1000)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1000}))
      ->capture_default_str();
  fpn::examples::add_runtime_options(app);
  app.footer(std::string(fpn::examples::exit_status_help));
  return fpn::examples::run_command_line(app, argc, argv, [&] { run(options); });
}
