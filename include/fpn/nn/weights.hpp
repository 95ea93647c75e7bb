// WeightReader: named, shape-checked access to a converted checkpoint, scoped by a name prefix
// ("backbone.body.layer1.0.") so each layer loads its own parameters by their torchvision names.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/safetensors.hpp"

namespace fpn::nn {

class WeightReader {
 public:
  // FrozenBatchNorm2d's eps: torchvision's default, used when the file's metadata names none.
  static constexpr float default_batch_norm_eps = 1e-5f;

  explicit WeightReader(const io::SafeTensors& file, std::string prefix = "")
      : file_(&file), prefix_(std::move(prefix)) {
    const auto& metadata = file.metadata();
    if (auto it = metadata.find("frozen_bn_eps"); it != metadata.end()) {
      char* end = nullptr;
      const float eps = std::strtof(it->second.c_str(), &end);
      if (end == it->second.c_str() || *end != '\0' || !(eps >= 0.0f)) {
        throw WeightError("safetensors: '" + file.source() +
                          "': metadata frozen_bn_eps must be a number >= 0, got \"" + it->second +
                          "\"");
      }
      batch_norm_eps_ = eps;
    }
  }

  // A reader for the parameters under prefix + name + ".".
  WeightReader child(std::string_view name) const {
    WeightReader scoped = *this;
    scoped.prefix_ += std::string(name) + ".";
    return scoped;
  }

  // prefix + name, which must have shape `expected`.
  Tensor<float> load(std::string_view name, const Shape& expected) const {
    return file_->load_float(prefix_ + std::string(name), expected);
  }
  bool contains(std::string_view name) const { return file_->contains(prefix_ + std::string(name)); }

  const std::string& prefix() const { return prefix_; }
  float batch_norm_eps() const { return batch_norm_eps_; }
  void set_batch_norm_eps(float eps) { batch_norm_eps_ = eps; }
  const io::SafeTensors& file() const { return *file_; }

 private:
  const io::SafeTensors* file_;
  std::string prefix_;
  float batch_norm_eps_ = default_batch_norm_eps;
};

}  // namespace fpn::nn
