// Test support: torch fixtures written by tools/fixtures/*.py and closeness checks against them.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "fpn/core/tensor.hpp"
#include "fpn/io/safetensors.hpp"

namespace fpn::testing {

// Opens FPN_FIXTURE_DIR/<name>.safetensors (made by the ctest fixture step).
inline const io::SafeTensors& fixture(const std::string& name) {
  static std::map<std::string, io::SafeTensors> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    it = cache.emplace(name, io::SafeTensors::open(std::string(FPN_FIXTURE_DIR) + "/" + name +
                                                    ".safetensors"))
             .first;
  }
  return it->second;
}

// Calls check(key, file) for every case "<op>/<index>/" of fixture `name`, whose metadata `op`
// holds the case count (the layout of the op fixtures: tools/fixtures/ops_*.py); at least
// minimum_cases must be there.
template <typename Check>
void for_each_case(const std::string& name, const std::string& op, int minimum_cases, Check check) {
  const auto& file = fixture(name);
  const int cases = std::stoi(file.metadata().at(op));
  ASSERT_GE(cases, minimum_cases);
  for (int index = 0; index < cases; ++index) {
    const std::string key = op + "/" + std::to_string(index) + "/";
    SCOPED_TRACE(key);
    check(key, file);
  }
}

// max |actual - expected| / max(max |expected|, floor): the error relative to the tensor's scale,
// as the project's fidelity criterion ("to 1e-4 relative") is stated.
inline double relative_max_error(TensorView<const float> actual, TensorView<const float> expected,
                                 double floor = 1e-6) {
  double max_error = 0.0;
  double max_value = 0.0;
  for (std::int64_t i = 0; i < expected.numel(); ++i) {
    max_error = std::max(max_error, std::abs(double(actual.data()[i]) - expected.data()[i]));
    max_value = std::max(max_value, std::abs(double(expected.data()[i])));
  }
  return max_error / std::max(max_value, floor);
}

inline ::testing::AssertionResult tensors_close(TensorView<const float> actual,
                                                TensorView<const float> expected,
                                                double relative_tolerance) {
  if (!(actual.shape() == expected.shape())) {
    return ::testing::AssertionFailure()
           << "shape " << actual.shape().str() << " != expected " << expected.shape().str();
  }
  const double error = relative_max_error(actual, expected);
  if (!(error <= relative_tolerance)) {
    return ::testing::AssertionFailure()
           << "relative max error " << error << " > " << relative_tolerance;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace fpn::testing
