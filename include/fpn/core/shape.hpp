// Shape: the dimensions of a dense, contiguous (row-major, NCHW for images) tensor.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>

#include "fpn/core/errors.hpp"

namespace fpn {

class Shape {
 public:
  static constexpr std::size_t max_rank = 6;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) : Shape(std::span(dims.begin(), dims.size())) {}
  explicit Shape(std::span<const std::int64_t> dims) {
    if (dims.size() > max_rank) {
      throw ShapeError("Shape: rank must be at most " + std::to_string(max_rank) + ", got " +
                       std::to_string(dims.size()) + " for " + format_shape(dims));
    }
    rank_ = dims.size();
    std::copy(dims.begin(), dims.end(), dims_.begin());
    numel_ = checked_numel(dims);
  }

  std::size_t rank() const { return rank_; }
  std::int64_t operator[](std::size_t axis) const { return dims_[axis]; }
  std::span<const std::int64_t> dims() const { return {dims_.data(), rank_}; }
  std::int64_t numel() const { return numel_; }
  std::string str() const { return format_shape(dims()); }

  friend bool operator==(const Shape& lhs, const Shape& rhs) {
    return std::ranges::equal(lhs.dims(), rhs.dims());
  }

  // Throws ShapeError for a negative dimension or an element count that overflows int64.
  static std::int64_t checked_numel(std::span<const std::int64_t> dims) {
    std::int64_t count = 1;
    for (std::int64_t dim : dims) {
      if (dim < 0) throw ShapeError("Shape: dimensions must be >= 0, got " + format_shape(dims));
      if (dim != 0 && count > std::numeric_limits<std::int64_t>::max() / dim) {
        throw ShapeError("Shape: element count overflows int64 for " + format_shape(dims));
      }
      count *= dim;
    }
    return count;
  }

 private:
  std::array<std::int64_t, max_rank> dims_{};
  std::size_t rank_ = 0;
  std::int64_t numel_ = 1;
};

}  // namespace fpn
