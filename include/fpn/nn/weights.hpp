// WeightReader: named, shape-checked access to a model's parameters, scoped by a name prefix
// ("backbone.body.layer1.0.") so each layer loads its own parameters by their torchvision names.
// Parameters come from a WeightSource: a converted checkpoint (safetensors) or, for benchmarks
// and shape tests, deterministic synthetic values.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/safetensors.hpp"

namespace fpn::nn {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor `name`, which must have shape `expected` (else WeightError naming both shapes).
  virtual Tensor<float> load(const std::string& name, const Shape& expected) const = 0;
  virtual bool contains(const std::string& name) const = 0;
  virtual std::optional<std::string> metadata(const std::string& key) const = 0;
  // For messages: the file name, or what made the values.
  virtual std::string describe() const = 0;
  // Every tensor name the source holds, for the strict-load check (WeightReader::unread); nullopt
  // for a source that makes whatever is asked for.
  virtual std::optional<std::vector<std::string>> names() const { return std::nullopt; }
  // true: load may be called from several threads at once, and a model loads its parts (a
  // detector's backbone and heads) concurrently. A source of its own says false unless it is.
  virtual bool concurrent_loads() const { return false; }
};

// How a load treats tensors of the file that the architecture does not read.
struct LoadOptions {
  // false: any unread tensor is a WeightError naming them (a file of another depth or head, or a
  // converter that wrote something fpn ignores). true: extras are skipped, e.g. to load the
  // Faster R-CNN part of a Mask R-CNN file.
  bool allow_unused = false;
  // false: the file's "arch" metadata is not checked (a detector that has checked it against its
  // own builder name loads its backbone so; e.g. fasterrcnn_mobilenet_v3_large_320_fpn, whose
  // name does not end in its backbone's).
  bool check_arch = true;
};

// Reads a safetensors file that outlives the source.
class SafeTensorsSource final : public WeightSource {
 public:
  explicit SafeTensorsSource(const io::SafeTensors& file) : file_(&file) {}
  // A temporary would be destroyed before the first load.
  explicit SafeTensorsSource(const io::SafeTensors&& file) = delete;
  Tensor<float> load(const std::string& name, const Shape& expected) const override {
    return file_->load_float(name, expected);
  }
  bool contains(const std::string& name) const override { return file_->contains(name); }
  std::optional<std::string> metadata(const std::string& key) const override {
    const auto& entries = file_->metadata();
    if (auto it = entries.find(key); it != entries.end()) return it->second;
    return std::nullopt;
  }
  std::string describe() const override { return "safetensors: '" + file_->source() + "'"; }
  bool concurrent_loads() const override { return true; }
  std::optional<std::vector<std::string>> names() const override {
    std::vector<std::string> all;
    for (const io::TensorInfo& tensor : file_->tensors()) all.push_back(tensor.name);
    return all;
  }

 private:
  const io::SafeTensors* file_;
};

// Deterministic synthetic parameters of whatever shape is asked for: a hash of the name seeds
// each tensor. Convolution/linear weights are scaled by 1/sqrt(fan-in) and BatchNorm statistics
// are (mean 0, var 1), so activations stay bounded. For benchmarks and structure tests only.
class SyntheticWeights final : public WeightSource {
 public:
  Tensor<float> load(const std::string& name, const Shape& expected) const override {
    Tensor<float> tensor = Tensor<float>::uninitialized(expected);
    if (name.ends_with("running_var")) {
      tensor.fill(1.0f);
      return tensor;
    }
    if (name.ends_with("running_mean")) {
      tensor.fill(0.0f);
      return tensor;
    }
    std::uint64_t state = 1469598103934665603ull;  // FNV-1a of the name seeds the stream
    for (char c : name) state = (state ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    const std::int64_t fan_in = expected.rank() >= 2 ? expected.numel() / expected[0] : 1;
    const float scale = expected.rank() >= 2 ? std::sqrt(3.0f / static_cast<float>(fan_in)) : 0.1f;
    const bool batch_norm_scale = expected.rank() == 1 && name.ends_with("weight");
    for (float& value : tensor.span()) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      const float uniform = static_cast<float>(state >> 40) / static_cast<float>(1 << 24);
      value = batch_norm_scale ? 0.5f + 0.5f * uniform : scale * (2.0f * uniform - 1.0f);
    }
    return tensor;
  }
  bool contains(const std::string&) const override { return true; }
  std::optional<std::string> metadata(const std::string&) const override { return std::nullopt; }
  std::string describe() const override { return "synthetic weights"; }
  bool concurrent_loads() const override { return true; }
};

class WeightReader {
 public:
  // FrozenBatchNorm2d's eps: torchvision's default, used when the source's metadata names none.
  static constexpr float default_batch_norm_eps = 1e-5f;

  // `file` must outlive the reader and everything it loads from.
  explicit WeightReader(const io::SafeTensors& file)
      : WeightReader(std::make_shared<SafeTensorsSource>(file)) {}
  // A temporary SafeTensors would be gone before the first load: open it into a variable.
  explicit WeightReader(const io::SafeTensors&& file) = delete;

  explicit WeightReader(std::shared_ptr<const WeightSource> source, std::string prefix = "")
      : source_(std::move(source)), prefix_(std::move(prefix)) {
    if (auto eps_text = source_->metadata("frozen_bn_eps")) {
      char* end = nullptr;
      const float eps = std::strtof(eps_text->c_str(), &end);
      if (end == eps_text->c_str() || *end != '\0' || !(eps >= 0.0f)) {
        throw WeightError(source_->describe() +
                          ": metadata frozen_bn_eps must be a number >= 0, got \"" + *eps_text +
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

  // prefix + name, which must have shape `expected`. The name is recorded as read (unread()).
  Tensor<float> load(std::string_view name, const Shape& expected) const {
    std::string full = prefix_ + std::string(name);
    Tensor<float> tensor = [&] {
      const fpn::detail::SlabArenaScope scope(arena_.get());
      return source_->load(full, expected);
    }();
    const std::lock_guard lock(read_->mutex);
    read_->names.insert(std::move(full));
    return tensor;
  }

  // The source's tensors under this reader's prefix that no reader sharing this one's record (it
  // and its children, and their copies) has loaded, in the source's order; empty for a source
  // without a name list.
  std::vector<std::string> unread() const {
    std::vector<std::string> result;
    if (auto all = source_->names()) {
      const std::lock_guard lock(read_->mutex);
      for (std::string& name : *all) {
        if (name.starts_with(prefix_) && !read_->names.contains(name)) result.push_back(std::move(name));
      }
    }
    return result;
  }

  // Throws WeightError when unread() is not empty, naming the first few: the end of a strict load.
  // what: the model, for the message ("maskrcnn_resnet50_fpn").
  void check_all_read(std::string_view what) const {
    const std::vector<std::string> extra = unread();
    if (extra.empty()) return;
    constexpr std::size_t shown = 5;
    std::string names;
    for (std::size_t i = 0; i < extra.size() && i < shown; ++i) {
      names += (i > 0 ? ", \"" : "\"") + extra[i] + "\"";
    }
    if (extra.size() > shown) names += ", ...";
    throw WeightError(source_->describe() + ": " + std::to_string(extra.size()) + " tensor" +
                      (extra.size() == 1 ? "" : "s") +
                      (prefix_.empty() ? std::string() : " under \"" + prefix_ + "\"") + " not read by " +
                      std::string(what) + " (" + names +
                      "): weights of another architecture? (allow_unused skips them)");
  }
  bool contains(std::string_view name) const { return source_->contains(prefix_ + std::string(name)); }

  const std::string& prefix() const { return prefix_; }
  const WeightSource& source() const { return *source_; }
  float batch_norm_eps() const { return batch_norm_eps_; }
  // Overrides the metadata, e.g. eps 0.0 for torchvision's original COCO checkpoints.
  void set_batch_norm_eps(float eps) { batch_norm_eps_ = eps; }

 private:
  std::shared_ptr<const WeightSource> source_;
  std::string prefix_;
  // Names loaded so far, shared with children so that the top-level load sees every read; the
  // parts of a model may load on several threads.
  struct ReadRecord {
    std::mutex mutex;
    std::set<std::string, std::less<>> names;
  };
  std::shared_ptr<ReadRecord> read_ = std::make_shared<ReadRecord>();
  // Where the tensors read go (detail::SlabArena: huge-page slabs), shared with children so that
  // a model's weights fill its slabs one after another.
  std::shared_ptr<fpn::detail::SlabArena> arena_ = std::make_shared<fpn::detail::SlabArena>();
  float batch_norm_eps_ = default_batch_norm_eps;
};

}  // namespace fpn::nn
