// Row selection along the first axis (torch.index_select(x, 0, indices)), and the same for the
// plain vectors that carry labels and levels beside box tensors.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::ops {

// x: [N, ...]; indices: values in [0, N). returns [indices.size(), ...] with row i = x[indices[i]].
template <typename T = float>
Tensor<T> index_select0(std::type_identity_t<TensorView<const T>> x,
                        std::span<const std::int64_t> indices) {
  if (x.rank() < 1) fpn::detail::throw_shape_error("index_select0", "x", "[N, ...]", x.shape().dims());
  std::array<std::int64_t, Shape::max_rank> dims{};
  std::ranges::copy(x.shape().dims(), dims.begin());
  dims[0] = static_cast<std::int64_t>(indices.size());
  Tensor<T> out = Tensor<T>::uninitialized(Shape(std::span(dims.data(), x.rank())));
  const std::int64_t row = x.dim(0) == 0 ? 0 : x.numel() / x.dim(0);
  for (std::size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < 0 || indices[i] >= x.dim(0)) {
      fpn::detail::throw_argument_error("index_select0", "index " + std::to_string(indices[i]) +
                                                             " is out of range for " + x.shape().str());
    }
    std::copy_n(x.data() + indices[i] * row, row, out.data() + static_cast<std::int64_t>(i) * row);
  }
  return out;
}

template <typename T>
std::vector<T> index_select(const std::vector<T>& values, std::span<const std::int64_t> indices) {
  std::vector<T> out;
  out.reserve(indices.size());
  for (std::int64_t i : indices) out.push_back(values[static_cast<std::size_t>(i)]);
  return out;
}

}  // namespace fpn::ops
