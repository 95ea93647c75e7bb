// fpn error family: every failure a user can cause is reported as an fpn::Error whose message
// says what went wrong, where, what was expected and what was found.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace fpn {

// Base of every exception fpn throws on bad input.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A tensor has the wrong rank, size or layout for an operation.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A weight file or a weight tensor does not fit what the model needs.
class WeightError : public Error {
 public:
  using Error::Error;
};

// A file cannot be read, decoded or written.
class IoError : public Error {
 public:
  using Error::Error;
};

// An option or argument value is out of its valid range.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

// "[2, 3, 4]"
inline std::string format_shape(std::span<const std::int64_t> dims) {
  std::string text = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(dims[i]);
  }
  return text + "]";
}

namespace detail {

// where: "roi_align"; what: "boxes"; expected: "[R, 5]".
[[noreturn]] inline void throw_shape_error(std::string_view where, std::string_view what,
                                           std::string_view expected,
                                           std::span<const std::int64_t> got) {
  throw ShapeError(std::string(where) + ": " + std::string(what) + " must be " +
                   std::string(expected) + ", got " + format_shape(got));
}

// Two shapes that must agree: "add: shapes must match, got [1, 3, 4, 4] and [1, 3, 4, 5]".
[[noreturn]] inline void throw_shape_mismatch(std::string_view where, std::string_view what,
                                              std::span<const std::int64_t> lhs,
                                              std::span<const std::int64_t> rhs) {
  throw ShapeError(std::string(where) + ": " + std::string(what) + ", got " + format_shape(lhs) +
                   " and " + format_shape(rhs));
}

[[noreturn]] inline void throw_argument_error(std::string_view where, std::string_view message) {
  throw ArgumentError(std::string(where) + ": " + std::string(message));
}

// A parameter out of its range: "DetectorParams.rpn.pre_nms_top_n must be >= 1, got -1".
// field: the field's full path; allowed: what it may be.
[[noreturn]] inline void throw_invalid_field(std::string_view field, std::string_view allowed,
                                             std::string_view got) {
  throw ArgumentError(std::string(field) + " must be " + std::string(allowed) + ", got " +
                      std::string(got));
}

// A float as the shortest text that reads back as the same float ("0.7", "nan", "-inf").
inline std::string format_float(float value) {
  char text[32];
  const auto written = std::to_chars(text, text + sizeof(text), value);
  return std::string(text, written.ptr);
}

// field in [low, high] and finite.
inline void check_in_range(std::string_view field, float value, float low, float high) {
  if (!(value >= low && value <= high)) {  // false for NaN
    throw_invalid_field(field,
                        "a number in [" + format_float(low) + ", " + format_float(high) + "]",
                        format_float(value));
  }
}

// field >= low and finite.
inline void check_at_least(std::string_view field, float value, float low) {
  if (!(value >= low) || !std::isfinite(value)) {
    throw_invalid_field(field, "a finite number >= " + format_float(low), format_float(value));
  }
}

// field >= low, for counts.
inline void check_count(std::string_view field, std::int64_t value, std::int64_t low) {
  if (value < low) {
    throw_invalid_field(field, "an integer >= " + std::to_string(low), std::to_string(value));
  }
}

// field in [low, high].
inline void check_in_range(std::string_view field, std::int64_t value, std::int64_t low,
                           std::int64_t high) {
  if (value < low || value > high) {
    throw_invalid_field(field,
                        "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]",
                        std::to_string(value));
  }
}

// prefix followed by the number: "P2", "lateral 0". (Built by appending: GCC 12 at -O3 warns
// -Wrestrict, falsely, on "literal" + std::to_string(n) once inlined into some callers.)
inline std::string numbered(std::string_view prefix, std::int64_t number) {
  std::string text(prefix);
  text += std::to_string(number);
  return text;
}

// An image batch where one image is expected: "FPN::forward: input must be [1, C, H, W] (one
// image; run a batch image by image), got [2, 3, 64, 64]".
inline void check_single_image(std::string_view where, std::string_view what,
                               std::span<const std::int64_t> dims, std::int64_t channels = -1) {
  const bool ok = dims.size() == 4 && dims[0] == 1 && (channels < 0 || dims[1] == channels);
  if (!ok) {
    throw_shape_error(where, what,
                      "[1, " + (channels < 0 ? std::string("C") : std::to_string(channels)) +
                          ", H, W] (one image; run a batch image by image)",
                      dims);
  }
}

}  // namespace detail
}  // namespace fpn

// FPN_ASSERT(condition) guards internal invariants only, never a precondition a caller can
// violate: public entry points check those in every build and throw an fpn::Error. By default it
// aborts with the file and line when the condition is false, and is compiled out under NDEBUG.
// Like Eigen's eigen_assert, it can be replaced: define FPN_ASSERT before including any fpn
// header, e.g. to throw, to log, or to keep the checks in a Release build:
//   #define FPN_ASSERT(condition) ((condition) ? (void)0 : my_handler(#condition, __FILE__, __LINE__))
#ifndef FPN_ASSERT
#ifdef NDEBUG
#define FPN_ASSERT(condition) ((void)0)
#else
#include <cstdio>
#include <cstdlib>
#define FPN_ASSERT(condition)                                                                  \
  ((condition) ? (void)0                                                                       \
               : (std::fprintf(stderr, "%s:%d: fpn internal assertion failed: %s\n", __FILE__, \
                               __LINE__, #condition),                                          \
                  std::abort()))
#endif
#endif
