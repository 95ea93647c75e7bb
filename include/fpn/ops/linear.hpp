// Fully connected layer y = x W^T + b (torch.nn.Linear), optionally followed by ReLU: the box
// head's TwoMLPHead and predictors.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/detail/gemm.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/activation.hpp"

namespace fpn::ops {

namespace detail {

// Whether a linear layer's bias is given (non-empty); a given one must be [out] (ShapeError).
template <typename T>
bool linear_has_bias(TensorView<const T> bias, std::int64_t out) {
  const bool has_bias = bias.numel() > 0 && bias.data() != nullptr;
  if (has_bias && (bias.rank() != 1 || bias.dim(0) != out)) {
    fpn::detail::throw_shape_error("linear", "bias", "[" + std::to_string(out) + "]",
                                   bias.shape().dims());
  }
  return has_bias;
}

}  // namespace detail

// input: [N, in]; weight: [out, in]; bias: [out] or empty. returns [N, out].
template <typename T = float>
Tensor<T> linear(std::type_identity_t<TensorView<const T>> input,
                 std::type_identity_t<TensorView<const T>> weight,
                 std::type_identity_t<TensorView<const T>> bias,
                 Activation activation = Activation::identity) {
  using fpn::detail::throw_shape_error;
  if (input.rank() != 2) throw_shape_error("linear", "input", "[N, in]", input.shape().dims());
  if (weight.rank() != 2 || weight.dim(1) != input.dim(1)) {
    throw_shape_error("linear", "weight", "[out, " + std::to_string(input.dim(1)) + "]",
                      weight.shape().dims());
  }
  const bool has_bias = detail::linear_has_bias<T>(bias, weight.dim(0));
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  auto output = Tensor<T>::uninitialized(Shape{input.dim(0), weight.dim(0)});
  Eigen::Map<Matrix> out(output.data(), input.dim(0), weight.dim(0));
  const Eigen::Map<const Matrix> x(input.data(), input.dim(0), input.dim(1));
  const Eigen::Map<const Matrix> w(weight.data(), weight.dim(0), weight.dim(1));
  const T* bias_data = has_bias ? bias.data() : nullptr;
  fpn::detail::parallel_gemm(
      out, x, w.transpose(), false, [&](auto&& block, std::int64_t, std::int64_t first_column) {
        for (Eigen::Index row = 0; row < block.rows(); ++row) {
          auto line = block.row(row);
          if (bias_data != nullptr) {
            line += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias_data + first_column, block.cols());
          }
          activate_line(activation, line);
        }
      });
  return output;
}

}  // namespace fpn::ops
