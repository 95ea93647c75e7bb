// Element-wise operations on same-shape tensors (FPN's lateral + top-down sum, ReLU).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "fpn/core/thread_pool.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::ops {

namespace detail {
// Elements per task: large enough that a task outweighs its scheduling.
inline constexpr std::int64_t elementwise_grain = 1 << 16;
}  // namespace detail

// target += addend, in place. Shapes must be equal.
template <typename T = float>
void add_inplace(std::type_identity_t<TensorView<T>> target,
                 std::type_identity_t<TensorView<const T>> addend) {
  if (!(target.shape() == addend.shape())) {
    fpn::detail::throw_shape_mismatch("add", "shapes must match", target.shape().dims(),
                                      addend.shape().dims());
  }
  T* out = target.data();
  const T* in = addend.data();
  const std::int64_t count = target.numel();
  fpn::detail::parallel_for_chunks(count, detail::elementwise_grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) out[i] += in[i];
  });
}

// returns lhs + rhs. Shapes must be equal.
template <typename T = float>
Tensor<T> add(std::type_identity_t<TensorView<const T>> lhs,
              std::type_identity_t<TensorView<const T>> rhs) {
  if (!(lhs.shape() == rhs.shape())) {
    fpn::detail::throw_shape_mismatch("add", "shapes must match", lhs.shape().dims(),
                                      rhs.shape().dims());
  }
  auto output = Tensor<T>::uninitialized(lhs.shape());
  std::copy_n(lhs.data(), lhs.numel(), output.data());
  add_inplace<T>(output.view(), rhs);
  return output;
}

// x = max(x, 0), in place.
template <typename T = float>
void relu_inplace(std::type_identity_t<TensorView<T>> x) {
  T* data = x.data();
  const std::int64_t count = x.numel();
  fpn::detail::parallel_for_chunks(count, detail::elementwise_grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) data[i] = std::max(data[i], T{0});
  });
}

template <typename T = float>
Tensor<T> relu(std::type_identity_t<TensorView<const T>> x) {
  auto output = Tensor<T>::uninitialized(x.shape());
  std::copy_n(x.data(), x.numel(), output.data());
  relu_inplace<T>(output.view());
  return output;
}

}  // namespace fpn::ops
