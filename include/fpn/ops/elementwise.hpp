// Element-wise operations on same-shape tensors (FPN's lateral + top-down sum, ReLU).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "fpn/core/detail/parallel.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"

namespace fpn::ops {

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
  FPN_OMP(omp parallel for simd schedule(static) if (count > (1 << 18)))
  for (std::int64_t i = 0; i < count; ++i) out[i] += in[i];
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
  FPN_OMP(omp parallel for simd schedule(static) if (count > (1 << 18)))
  for (std::int64_t i = 0; i < count; ++i) data[i] = std::max(data[i], T{0});
}

template <typename T = float>
Tensor<T> relu(std::type_identity_t<TensorView<const T>> x) {
  auto output = Tensor<T>::uninitialized(x.shape());
  std::copy_n(x.data(), x.numel(), output.data());
  relu_inplace<T>(output.view());
  return output;
}

}  // namespace fpn::ops
