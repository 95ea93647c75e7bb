// Group normalisation (Wu & He 2018, torch.nn.GroupNorm) followed by an optional activation: the
// norm of torchvision's RetinaNet v2 and FCOS heads (GroupNorm(32, 256), eps 1e-5, affine, then
// ReLU).
//
// Each (image, group) of D = C / groups channels is normalised by its own mean and biased
// variance, then each channel gets its own affine map. As in torch's CPU kernel
// (aten/src/ATen/native/cpu/group_norm_kernel.cpp), the normalisation and the affine map are
// folded into one multiply-add per element:
//   rstd  = 1 / sqrt(max(var, 0) + eps)
//   scale = rstd * weight[c]              (weight 1 when absent)
//   shift = bias[c] - mean * scale        (bias 0 when absent)
//   y     = activation(x * scale + shift)
//
// Statistics, scale and shift are computed in double, and so is the multiply-add; each output is
// rounded to T once. torch does all of it in float: its moments are accumulated in float over a
// group of 121,600 values at 256 channels of 100x152, and in x * scale + shift the two terms
// cancel whenever the mean is large next to the spread (a head's activations can carry such an
// offset), so a float rounding of scale or shift is magnified by |mean| / spread. In double, with
// each plane's moments taken about its first value, neither trap costs a float digit on the
// inputs a detector produces: each output is within about one rounding of the exact value, and
// what remains of our difference from torch is torch's own. The per-element double work costs
// little beside the convolutions that feed a GroupNorm.
//
// Work is split by channel plane: each (n, c) plane's count, mean and sum of squared deviations
// are computed by one task, then combined per group in a fixed order (Chan et al.'s pairwise
// update, here with equal counts), so results are bitwise identical at any thread count; and a
// group of one channel (instance norm) or one group of all channels (layer norm) still spreads
// over every thread. The apply step is split by plane too, so the activation runs on a plane
// while it is still in cache.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/activation.hpp"

namespace fpn::ops {

namespace detail {

// Elements per task: whole planes, at least this many values, so that a task of small planes
// still outweighs its scheduling; maps smaller than this run on the calling thread.
inline constexpr std::int64_t group_norm_grain = 1 << 14;

inline void check_group_norm(std::string_view where, const Shape& input, std::int64_t groups,
                             const Shape& weight, bool has_weight, const Shape& bias, bool has_bias,
                             double eps, Activation activation) {
  using fpn::detail::throw_shape_error;
  if (input.rank() != 4) throw_shape_error(where, "input", "[N, C, H, W]", input.dims());
  if (groups < 1) {
    fpn::detail::throw_argument_error(where, "groups must be >= 1, got " + std::to_string(groups));
  }
  const std::int64_t channels = input[1];
  if (channels % groups != 0) {
    throw_shape_error(where, "input",
                      "[N, C, H, W] with C divisible by groups (" + std::to_string(groups) + ")",
                      input.dims());
  }
  // Appended rather than "[" + to_string(...): GCC 12's -Wrestrict misfires on the latter here.
  std::string per_channel = fpn::detail::numbered("[", channels);
  per_channel += "] (one per channel) or empty";
  if (has_weight && !(weight.rank() == 1 && weight[0] == channels)) {
    throw_shape_error(where, "weight", per_channel, weight.dims());
  }
  if (has_bias && !(bias.rank() == 1 && bias[0] == channels)) {
    throw_shape_error(where, "bias", per_channel, bias.dims());
  }
  if (!(eps > 0.0) || !std::isfinite(eps)) {  // also rejects NaN
    fpn::detail::throw_argument_error(where,
                                      "eps must be a finite number > 0, got " +
                                          fpn::detail::format_float(static_cast<float>(eps)));
  }
  if (!is_valid(activation)) {
    fpn::detail::throw_argument_error(
        where, "activation must be identity, relu, hardswish or hardsigmoid, got value " +
                   std::to_string(static_cast<int>(activation)));
  }
}

// A plane's mean and sum of squared deviations from it (M2), in double.
struct PlaneMoments {
  double mean;
  double m2;
};

// One pass over values[0, count), count >= 1, shifted by the first value so that the sum of
// squares cancels only against the spread around it, never against the mean itself. Eight
// independent accumulators in a fixed order: the loop can vectorise, and its result does not depend
// on where or when it runs.
template <typename T>
PlaneMoments plane_moments(const T* values, std::int64_t count) {
  constexpr int lanes = 8;
  const double pivot = static_cast<double>(values[0]);
  double sums[lanes] = {};
  double squares[lanes] = {};
  const std::int64_t body = count / lanes * lanes;
  for (std::int64_t i = 0; i < body; i += lanes) {
    for (int lane = 0; lane < lanes; ++lane) {
      const double deviation = static_cast<double>(values[i + lane]) - pivot;
      sums[lane] += deviation;
      squares[lane] += deviation * deviation;
    }
  }
  for (std::int64_t i = body; i < count; ++i) {
    const double deviation = static_cast<double>(values[i]) - pivot;
    sums[i - body] += deviation;
    squares[i - body] += deviation * deviation;
  }
  double sum = 0.0;
  double square = 0.0;
  for (int lane = 0; lane < lanes; ++lane) {
    sum += sums[lane];
    square += squares[lane];
  }
  const double shifted_mean = sum / static_cast<double>(count);
  return {pivot + shifted_mean, std::max(square - sum * shifted_mean, 0.0)};
}

// input and output: [N, C, H, W] contiguous, the same pointer for in place; arguments checked.
template <typename T>
void group_norm_into(const T* input, T* output, const Shape& shape, std::int64_t groups,
                     const T* weight, const T* bias, double eps, Activation activation) {
  const std::int64_t planes = shape[0] * shape[1];
  const std::int64_t plane_size = shape[2] * shape[3];
  if (planes == 0 || plane_size == 0) return;
  const std::int64_t channels = shape[1];
  const std::int64_t group_channels = channels / groups;
  const std::int64_t planes_per_task = std::max<std::int64_t>(1, group_norm_grain / plane_size);
  const std::int64_t tasks = (planes + planes_per_task - 1) / planes_per_task;
  const bool worth_it = planes * plane_size >= group_norm_grain;
  // body(plane) for every plane, in tasks of planes_per_task consecutive planes.
  const auto for_each_plane = [&](auto&& body) {
    fpn::detail::parallel_for_if(worth_it, tasks, [&](std::int64_t task, int) {
      const std::int64_t end = std::min(planes, (task + 1) * planes_per_task);
      for (std::int64_t plane = task * planes_per_task; plane < end; ++plane) body(plane);
    });
  };

  std::vector<PlaneMoments> moments(static_cast<std::size_t>(planes));
  for_each_plane([&](std::int64_t plane) {
    moments[static_cast<std::size_t>(plane)] =
        plane_moments(input + plane * plane_size, plane_size);
  });

  // Per (n, group): with equal counts, the group's mean is the mean of its planes' means and
  // its M2 is theirs plus plane_size * the squared deviations of their means (Chan's update).
  std::vector<double> scales(static_cast<std::size_t>(planes));
  std::vector<double> shifts(static_cast<std::size_t>(planes));
  for (std::int64_t first = 0; first < planes; first += group_channels) {
    const PlaneMoments* group = moments.data() + first;
    double mean = 0.0;
    for (std::int64_t k = 0; k < group_channels; ++k) mean += group[k].mean;
    mean /= static_cast<double>(group_channels);
    double m2 = 0.0;
    double spread = 0.0;
    for (std::int64_t k = 0; k < group_channels; ++k) {
      m2 += group[k].m2;
      spread += (group[k].mean - mean) * (group[k].mean - mean);
    }
    m2 += spread * static_cast<double>(plane_size);
    const double variance = m2 / static_cast<double>(group_channels * plane_size);
    const double rstd = 1.0 / std::sqrt(std::max(variance, 0.0) + eps);
    for (std::int64_t k = 0; k < group_channels; ++k) {
      const std::int64_t channel = (first + k) % channels;
      const double scale = rstd * (weight != nullptr ? static_cast<double>(weight[channel]) : 1.0);
      const double shift =
          (bias != nullptr ? static_cast<double>(bias[channel]) : 0.0) - mean * scale;
      scales[static_cast<std::size_t>(first + k)] = scale;
      shifts[static_cast<std::size_t>(first + k)] = shift;
    }
  }

  for_each_plane([&](std::int64_t plane) {
    const double scale = scales[static_cast<std::size_t>(plane)];
    const double shift = shifts[static_cast<std::size_t>(plane)];
    const T* in = input + plane * plane_size;
    T* out = output + plane * plane_size;
    for (std::int64_t i = 0; i < plane_size; ++i) {
      out[i] = static_cast<T>(static_cast<double>(in[i]) * scale + shift);
    }
    activate_in_place(activation, out, plane_size);
  });
}

// An empty view (default-constructed or of zero elements) means "no weight" or "no bias".
template <typename T>
bool has_values(TensorView<const T> view) {
  return view.numel() > 0 && view.data() != nullptr;
}

}  // namespace detail

// x: [N, C, H, W], normalised in place over each (n, group of C / groups channels), then
// x = activation(x * weight[c] + bias[c]).
// weight, bias: [C] or empty (1 and 0). eps: > 0 and finite, added to the variance (torch: 1e-5).
template <typename T = float>
void group_norm_in_place(std::type_identity_t<TensorView<T>> x, std::int64_t groups,
                         std::type_identity_t<TensorView<const T>> weight,
                         std::type_identity_t<TensorView<const T>> bias,
                         std::type_identity_t<T> eps,
                         Activation activation = Activation::identity) {
  static_assert(std::is_floating_point_v<T>,
                "group_norm_in_place: T must be a floating-point type");
  const bool has_weight = detail::has_values<T>(weight);
  const bool has_bias = detail::has_values<T>(bias);
  detail::check_group_norm("group_norm_in_place", x.shape(), groups, weight.shape(), has_weight,
                           bias.shape(), has_bias, static_cast<double>(eps), activation);
  detail::group_norm_into<T>(x.data(), x.data(), x.shape(), groups,
                             has_weight ? weight.data() : nullptr, has_bias ? bias.data() : nullptr,
                             static_cast<double>(eps), activation);
}

// input: [N, C, H, W]; weight, bias: [C] or empty. returns [N, C, H, W], as group_norm_in_place.
template <typename T = float>
Tensor<T> group_norm(std::type_identity_t<TensorView<const T>> input, std::int64_t groups,
                     std::type_identity_t<TensorView<const T>> weight,
                     std::type_identity_t<TensorView<const T>> bias, std::type_identity_t<T> eps,
                     Activation activation = Activation::identity) {
  static_assert(std::is_floating_point_v<T>, "group_norm: T must be a floating-point type");
  const bool has_weight = detail::has_values<T>(weight);
  const bool has_bias = detail::has_values<T>(bias);
  detail::check_group_norm("group_norm", input.shape(), groups, weight.shape(), has_weight,
                           bias.shape(), has_bias, static_cast<double>(eps), activation);
  auto output = Tensor<T>::uninitialized(input.shape());
  detail::group_norm_into<T>(input.data(), output.data(), input.shape(), groups,
                             has_weight ? weight.data() : nullptr, has_bias ? bias.data() : nullptr,
                             static_cast<double>(eps), activation);
  return output;
}

}  // namespace fpn::ops
