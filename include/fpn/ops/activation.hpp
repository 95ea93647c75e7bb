// Activations as epilogues: applied by the op that produced the values (a conv's output tile, a
// linear layer's rows) while they are still in cache, never as a separate pass over a map.
//
// The activation is a run-time value of the op's parameters rather than a template parameter:
// it is part of a loaded layer's description (a MobileNetV3 block's activation comes from the
// model's configuration table, one per block), and one branch per row of an output tile costs
// nothing next to the GEMM that wrote the tile.
//
// Each formula is torch's own CPU kernel's, in its order of float operations
// (aten/src/ATen/native/cpu/Activation.cpp), so results match to the last bit where torch's do.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace fpn::ops {

enum class Activation {
  identity,     // x
  relu,         // max(x, 0)
  hardswish,    // x * min(max(x + 3, 0), 6) / 6
  hardsigmoid,  // min(max(x + 3, 0), 6) / 6
};

constexpr std::string_view activation_name(Activation activation) {
  switch (activation) {
    case Activation::identity: return "identity";
    case Activation::relu: return "relu";
    case Activation::hardswish: return "hardswish";
    case Activation::hardsigmoid: return "hardsigmoid";
  }
  return "unknown";
}

// Whether `activation` is one of the enumerators (a value cast from a bad integer is not).
constexpr bool is_valid(Activation activation) {
  return activation == Activation::identity || activation == Activation::relu ||
         activation == Activation::hardswish || activation == Activation::hardsigmoid;
}

// One value.
template <typename T>
constexpr T activate(Activation activation, T x) {
  switch (activation) {
    case Activation::identity: return x;
    case Activation::relu: return std::max(x, T{0});
    case Activation::hardswish: return x * std::min(std::max(x + T{3}, T{0}), T{6}) / T{6};
    case Activation::hardsigmoid: return std::min(std::max(x + T{3}, T{0}), T{6}) / T{6};
  }
  return x;
}

// data[0, count) in place; the switch is outside the loop so each loop vectorises.
template <typename T>
void activate_in_place(Activation activation, T* data, std::int64_t count) {
  switch (activation) {
    case Activation::identity:
      return;
    case Activation::relu:
      for (std::int64_t i = 0; i < count; ++i) data[i] = std::max(data[i], T{0});
      return;
    case Activation::hardswish:
      for (std::int64_t i = 0; i < count; ++i) {
        data[i] = data[i] * std::min(std::max(data[i] + T{3}, T{0}), T{6}) / T{6};
      }
      return;
    case Activation::hardsigmoid:
      for (std::int64_t i = 0; i < count; ++i) {
        data[i] = std::min(std::max(data[i] + T{3}, T{0}), T{6}) / T{6};
      }
      return;
  }
}

// An Eigen row or array expression (e.g. one row of a row-major output block), in place.
template <typename Line>
void activate_line(Activation activation, Line&& line) {
  using T = typename std::remove_cvref_t<Line>::Scalar;
  switch (activation) {
    case Activation::identity:
      return;
    case Activation::relu:
      line = line.cwiseMax(T{0});
      return;
    case Activation::hardswish:
      line = (line.array() * (line.array() + T{3}).cwiseMax(T{0}).cwiseMin(T{6}) / T{6}).matrix();
      return;
    case Activation::hardsigmoid:
      line = ((line.array() + T{3}).cwiseMax(T{0}).cwiseMin(T{6}) / T{6}).matrix();
      return;
  }
}

}  // namespace fpn::ops
