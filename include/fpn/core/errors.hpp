// fpn error family: every failure a user can cause is reported as an fpn::Error whose message
// says what went wrong, where, what was expected and what was found.
#pragma once

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

}  // namespace detail
}  // namespace fpn

// Internal invariants only (never user input); compiled out under NDEBUG.
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
