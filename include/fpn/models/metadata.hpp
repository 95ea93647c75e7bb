// What a model reads from its file's metadata besides the tensors: its "arch" name, sizes,
// thresholds and lists (the converters and training scripts write them as strings; safetensors
// metadata is a string-to-string map). Every reader throws WeightError naming the file, the key
// and the text when a value is malformed or out of range, and returns nullopt when it is absent.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fpn/core/detail/json.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/nn/transform.hpp"
#include "fpn/nn/weights.hpp"

namespace fpn {

// A model's "arch" name as a template argument, e.g. ProposalNetwork<Backbone, "seed_c4">: a file
// whose "arch" metadata names another model is refused at load.
template <std::size_t N>
struct ArchName {
  char text[N]{};
  constexpr ArchName(const char (&name)[N]) {  // implicit: from a string literal
    std::copy_n(name, N, text);
  }
  constexpr std::string_view view() const { return std::string_view(text, N - 1); }
};

namespace detail {

// WeightError unless the file's "arch" (when it has one) is `arch` (when that is not empty).
inline void check_arch(const nn::WeightSource& source, std::string_view arch) {
  if (auto stored = source.metadata("arch"); stored && !arch.empty() && *stored != arch) {
    throw WeightError(source.describe() + " is for " + *stored + " (its \"arch\" metadata), not " +
                      std::string(arch));
  }
}

// An integer in [low, high].
inline std::optional<std::int64_t> metadata_integer(const nn::WeightSource& source,
                                                    const std::string& key, std::int64_t low,
                                                    std::int64_t high) {
  const std::optional<std::string> text = source.metadata(key);
  if (!text) return std::nullopt;
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc() || end != text->data() + text->size() || value < low || value > high) {
    throw WeightError(source.describe() + ": metadata " + key + " must be an integer in [" +
                      std::to_string(low) + ", " + std::to_string(high) + "], got \"" + *text +
                      "\"");
  }
  return value;
}

// "min_size" and "max_size" into `transform`, where the file records them (the demo's and the
// seed models' 320/512).
inline void metadata_transform_sizes(const nn::WeightSource& source, nn::TransformParams& transform) {
  transform.min_size = metadata_integer(source, "min_size", 1, nn::TransformParams::size_limit)
                           .value_or(transform.min_size);
  transform.max_size = metadata_integer(source, "max_size", 1, nn::TransformParams::size_limit)
                           .value_or(transform.max_size);
}

// A finite number, as JSON or Python writes it.
inline std::optional<double> parse_number(std::string_view text) {
  double value = 0.0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

// A number in [low, high].
inline std::optional<double> metadata_number(const nn::WeightSource& source, const std::string& key,
                                             double low, double high) {
  const std::optional<std::string> text = source.metadata(key);
  if (!text) return std::nullopt;
  const std::optional<double> value = parse_number(*text);
  if (!value || *value < low || *value > high) {
    throw WeightError(source.describe() + ": metadata " + key + " must be a number in [" +
                      format_float(static_cast<float>(low)) + ", " +
                      format_float(static_cast<float>(high)) + "], got \"" + *text + "\"");
  }
  return value;
}

// A JSON list of numbers ("[0.5, 1.0, 2.0]").
inline std::optional<std::vector<double>> metadata_numbers(const nn::WeightSource& source,
                                                           const std::string& key) {
  const std::optional<std::string> text = source.metadata(key);
  if (!text) return std::nullopt;
  const std::string context = source.describe() + ": metadata " + key;
  const std::string expected = context + " must be a JSON list of numbers, got '" + *text + "'";
  std::vector<double> numbers;
  try {
    JsonReader reader(*text, context);
    reader.begin_array();
    while (reader.next_item()) {
      const std::optional<double> value = parse_number(reader.read_number());
      if (!value) throw WeightError(expected);
      numbers.push_back(*value);
    }
    reader.finish();
  } catch (const WeightError&) {
    throw WeightError(expected);
  }
  return numbers;
}

// A JSON list of lists of numbers ("[[16], [32], [64]]").
inline std::optional<std::vector<std::vector<double>>> metadata_number_lists(
    const nn::WeightSource& source, const std::string& key) {
  const std::optional<std::string> text = source.metadata(key);
  if (!text) return std::nullopt;
  const std::string context = source.describe() + ": metadata " + key;
  const std::string expected =
      context + " must be a JSON list of lists of numbers, got '" + *text + "'";
  std::vector<std::vector<double>> lists;
  try {
    JsonReader reader(*text, context);
    reader.begin_array();
    while (reader.next_item()) {
      std::vector<double>& list = lists.emplace_back();
      reader.begin_array();
      while (reader.next_item()) {
        const std::optional<double> value = parse_number(reader.read_number());
        if (!value) throw WeightError(expected);
        list.push_back(*value);
      }
    }
    reader.finish();
  } catch (const WeightError&) {
    throw WeightError(expected);
  }
  return lists;
}

}  // namespace detail
}  // namespace fpn
