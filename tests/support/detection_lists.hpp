// Test support: (box, score, label) lists from torchvision's fixture tensors and from fpn's
// outputs, for match_detections (detections.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "detections.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/nn/transform.hpp"
#include "fixtures.hpp"

namespace fpn::testing {

// The fixture's tensors boxes [R, 4], scores [R] and labels [R] (empty name: all 0, proposals).
inline std::vector<ScoredBox> reference_list(const io::SafeTensors& f, const std::string& boxes,
                                             const std::string& scores, const std::string& labels) {
  const Tensor<float> b = f.load_float(boxes);
  const Tensor<float> s = f.load_float(scores);
  const Tensor<float> l = labels.empty() ? Tensor<float>(Shape{s.dim(0)}) : f.load_float(labels);
  std::vector<ScoredBox> list;
  for (std::int64_t i = 0; i < s.dim(0); ++i) {
    list.push_back({{b.at(i, 0), b.at(i, 1), b.at(i, 2), b.at(i, 3)}, s.at(i),
                    static_cast<std::int64_t>(l.at(i))});
  }
  return list;
}

// fpn's boxes [R, 4] and scores [R], with labels (empty: all 0).
inline std::vector<ScoredBox> our_list(const Tensor<float>& boxes, const Tensor<float>& scores,
                                       const std::vector<std::int64_t>& labels) {
  std::vector<ScoredBox> list;
  for (std::int64_t i = 0; i < scores.dim(0); ++i) {
    list.push_back({{boxes.at(i, 0), boxes.at(i, 1), boxes.at(i, 2), boxes.at(i, 3)}, scores.at(i),
                    labels.empty() ? 0 : labels[static_cast<std::size_t>(i)]});
  }
  return list;
}

// The detector fixture's 8-bit image ("image", [H, W, 3]) preprocessed as fpn does, checked
// against torchvision's resized size ("image_size") and tensor ("tensor").
inline nn::PreprocessedImage fixture_image(const io::SafeTensors& f, const nn::TransformParams& transform,
                                           std::vector<std::uint8_t>& rgb) {
  const Tensor<float> pixels = f.load_float("image");
  rgb.resize(static_cast<std::size_t>(pixels.numel()));
  for (std::int64_t i = 0; i < pixels.numel(); ++i) {
    rgb[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(pixels.data()[i]);
  }
  const nn::ImageView view{rgb.data(), pixels.dim(0), pixels.dim(1)};
  nn::PreprocessedImage image = nn::preprocess(view, transform);
  const Tensor<float> size = f.load_float("image_size");
  EXPECT_EQ(image.resized_height, static_cast<std::int64_t>(size.at(0)));
  EXPECT_EQ(image.resized_width, static_cast<std::int64_t>(size.at(1)));
  EXPECT_TRUE(tensors_close(image.tensor, f.load_float("tensor"), 1e-6));
  return image;
}

}  // namespace fpn::testing
