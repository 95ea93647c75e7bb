// Squeeze-and-excitation (Hu et al., https://arxiv.org/abs/1709.01507) as torchvision's
// ops.SqueezeExcitation in MobileNetV3 (models/mobilenetv3.py builds it with squeeze channels
// _make_divisible(expanded / 4, 8) and scale_activation=Hardsigmoid):
//   scale = hardsigmoid(fc2(relu(fc1(adaptive_avg_pool2d(x, 1)))));  x *= scale, per channel
// where fc1 and fc2 are 1x1 convolutions with bias on the pooled [C] vector.
//
// torch computes adaptive_avg_pool2d to 1x1 as x.mean((-2, -1)), i.e. a sum over H * W (its
// cascaded float sum, accurate to about one rounding) divided by H * W. The sum here runs in
// double, rounded to float once, then divided in float by H * W, so the mean agrees to the last
// bit or two; the two tiny mat-vecs run in double too, one rounding each.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/activation.hpp"

namespace fpn::ops {

struct SqueezeExcitationParams {
  Activation activation = Activation::relu;  // after fc1 (torchvision's `activation`, delta)
  // After fc2 (`scale_activation`, sigma): MobileNetV3's Hardsigmoid. torchvision's default,
  // Sigmoid, is not an epilogue fpn has.
  Activation scale_activation = Activation::hardsigmoid;
};

// The block's four parameters, as torchvision names them: fc1.weight [S, C, 1, 1], fc1.bias [S],
// fc2.weight [C, S, 1, 1], fc2.bias [C].
template <typename T = float>
struct SqueezeExcitationWeights {
  TensorView<const T> fc1_weight;
  TensorView<const T> fc1_bias;
  TensorView<const T> fc2_weight;
  TensorView<const T> fc2_bias;
};

namespace detail {

// Values per task of the per-channel passes: a channel's mean and its rescale each take whole
// channels, as many as make about this many values.
inline constexpr std::int64_t squeeze_excitation_task_values = 1 << 15;

// values[0, count) summed in double: eight running sums (one vector's worth of lanes, always
// eight, so the result does not depend on the build's vector width), then added in a fixed order.
template <typename T>
double sum_in_double(const T* values, std::int64_t count) {
  constexpr int lanes = 8;
  double partial[lanes] = {};
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    for (int lane = 0; lane < lanes; ++lane) partial[lane] += static_cast<double>(values[i + lane]);
  }
  double sum = 0.0;
  for (int lane = 0; lane < lanes; ++lane) sum += partial[lane];
  for (; i < count; ++i) sum += static_cast<double>(values[i]);
  return sum;
}

template <typename T>
void check_squeeze_excitation(std::string_view where, TensorView<T> x,
                              const SqueezeExcitationWeights<std::remove_const_t<T>>& weights,
                              SqueezeExcitationParams params) {
  using fpn::detail::throw_shape_error;
  if (x.rank() != 4) throw_shape_error(where, "x", "[N, C, H, W]", x.shape().dims());
  const std::int64_t channels = x.dim(1);
  const auto& fc1 = weights.fc1_weight;
  const std::int64_t squeeze = fc1.rank() == 4 ? fc1.dim(0) : 0;
  if (fc1.rank() != 4 || squeeze < 1 || fc1.dim(1) != channels || fc1.dim(2) != 1 ||
      fc1.dim(3) != 1) {
    throw_shape_error(where, "fc1_weight",
                      fpn::detail::numbered("[S, ", channels) + ", 1, 1] for x " + x.shape().str(),
                      fc1.shape().dims());
  }
  const std::string squeeze_text = std::to_string(squeeze);
  if (weights.fc1_bias.rank() != 1 || weights.fc1_bias.dim(0) != squeeze) {
    throw_shape_error(where, "fc1_bias", "[" + squeeze_text + "]", weights.fc1_bias.shape().dims());
  }
  const auto& fc2 = weights.fc2_weight;
  if (fc2.rank() != 4 || fc2.dim(0) != channels || fc2.dim(1) != squeeze || fc2.dim(2) != 1 ||
      fc2.dim(3) != 1) {
    throw_shape_error(where, "fc2_weight",
                      fpn::detail::numbered("[", channels) + ", " + squeeze_text + ", 1, 1]",
                      fc2.shape().dims());
  }
  if (weights.fc2_bias.rank() != 1 || weights.fc2_bias.dim(0) != channels) {
    throw_shape_error(where, "fc2_bias", fpn::detail::numbered("[", channels) + "]",
                      weights.fc2_bias.shape().dims());
  }
  if (x.dim(2) * x.dim(3) == 0) {
    throw_shape_error(where, "x", "at least 1x1 (the mean of an empty map is undefined)",
                      x.shape().dims());
  }
  for (const auto& [name, activation] : {std::pair{"activation", params.activation},
                                         std::pair{"scale_activation", params.scale_activation}}) {
    if (!is_valid(activation)) {
      fpn::detail::throw_argument_error(
          where, std::string(name) +
                     " must be identity, relu, hardswish or hardsigmoid, got the value " +
                     std::to_string(static_cast<int>(activation)));
    }
  }
}

}  // namespace detail

// x: [N, C, H, W], rescaled in place, each image by its own scale; weights as above with any
// squeeze width S >= 1.
template <typename T = float>
void squeeze_excitation_in_place(std::type_identity_t<TensorView<T>> x,
                                 const SqueezeExcitationWeights<T>& weights,
                                 SqueezeExcitationParams params = {}) {
  detail::check_squeeze_excitation("squeeze_excitation_in_place", x, weights, params);
  const std::int64_t batch = x.dim(0);
  const std::int64_t channels = x.dim(1);
  const std::int64_t squeeze = weights.fc1_weight.dim(0);
  const std::int64_t pixels = x.dim(2) * x.dim(3);
  const std::int64_t channels_per_task =
      std::max<std::int64_t>(1, detail::squeeze_excitation_task_values / pixels);
  const std::int64_t tasks_per_image = (channels + channels_per_task - 1) / channels_per_task;
  const bool worth_it = batch * channels * pixels > detail::squeeze_excitation_task_values;

  std::vector<T> pooled(static_cast<std::size_t>(batch * channels));
  std::vector<T> scale(static_cast<std::size_t>(batch * channels));
  // Runs body(image, channel) for every channel of every image, whole channels per task.
  auto for_each_channel = [&](auto&& body) {
    fpn::detail::parallel_for_if(worth_it, batch * tasks_per_image, [&](std::int64_t task, int) {
      const std::int64_t image = task / tasks_per_image;
      const std::int64_t first = (task % tasks_per_image) * channels_per_task;
      const std::int64_t end = std::min(channels, first + channels_per_task);
      for (std::int64_t channel = first; channel < end; ++channel) body(image, channel);
    });
  };

  // Squeeze: each channel's mean.
  const auto pixel_count = static_cast<T>(pixels);
  for_each_channel([&](std::int64_t image, std::int64_t channel) {
    const T* values = x.data() + (image * channels + channel) * pixels;
    pooled[static_cast<std::size_t>(image * channels + channel)] =
        static_cast<T>(detail::sum_in_double(values, pixels)) / pixel_count;
  });

  // Excitation: two small mat-vecs per image, on the calling thread.
  const T* fc1 = weights.fc1_weight.data();
  const T* fc2 = weights.fc2_weight.data();
  std::vector<T> hidden(static_cast<std::size_t>(squeeze));
  for (std::int64_t image = 0; image < batch; ++image) {
    const T* mean = pooled.data() + image * channels;
    for (std::int64_t s = 0; s < squeeze; ++s) {
      double sum = static_cast<double>(weights.fc1_bias.data()[s]);
      for (std::int64_t c = 0; c < channels; ++c) {
        sum += static_cast<double>(fc1[s * channels + c]) * static_cast<double>(mean[c]);
      }
      hidden[static_cast<std::size_t>(s)] = activate(params.activation, static_cast<T>(sum));
    }
    for (std::int64_t c = 0; c < channels; ++c) {
      double sum = static_cast<double>(weights.fc2_bias.data()[c]);
      for (std::int64_t s = 0; s < squeeze; ++s) {
        sum += static_cast<double>(fc2[c * squeeze + s]) *
               static_cast<double>(hidden[static_cast<std::size_t>(s)]);
      }
      scale[static_cast<std::size_t>(image * channels + c)] =
          activate(params.scale_activation, static_cast<T>(sum));
    }
  }

  // Scale: x *= scale, one float multiplication per value as torch's `scale * input`.
  for_each_channel([&](std::int64_t image, std::int64_t channel) {
    T* values = x.data() + (image * channels + channel) * pixels;
    const T factor = scale[static_cast<std::size_t>(image * channels + channel)];
    for (std::int64_t i = 0; i < pixels; ++i) values[i] *= factor;
  });
}

}  // namespace fpn::ops
