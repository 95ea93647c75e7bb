// Depthwise 2-D convolution (groups == channels, one k x k filter per channel; square kernel,
// stride and zero padding, dilation 1) with a bias and an activation epilogue, as MobileNetV3's
// depthwise layers (3x3 and 5x5, stride 1 and 2, padding k / 2).
//
// Each output value reads k * k inputs of its own channel only, so there is nothing for a GEMM to
// share: the op is memory-bound and runs as a direct kernel, one output row at a time, vectorised
// over the row's contiguous output pixels. The border is dealt with before the kernel runs, so its
// loop has no branches:
//   - stride 1 reads the input rows in place, except for the first and last blocks of a row (the
//     ones whose taps reach into the padding), which read a zero-padded copy of the row's edges;
//   - stride 2 (any stride > 1) first copies each input row, zero-padded, into `stride` phases
//     (phase q holds the padded columns q, q + s, q + 2s, ...), so that every tap of the filter
//     is a contiguous, unit-stride load;
//   - those copies stay in a ring of k rows: each input row is copied once per task;
//   - rows above and below the image are a row of zeros;
//   - output pixels go in blocks of a fixed width whose sums stay in registers; the last, partial
//     block is written through a small buffer, so no pixel takes a scalar path.
// Sums run in the order taps (ky, then kx), then + bias, then the activation, in every path; work
// is split into (image, channel, band of output rows) by sizes only, so results are bitwise
// identical at any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "fpn/core/detail/simd.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/activation.hpp"

namespace fpn::ops {

struct DepthwiseConv2dParams {
  int stride = 1;
  int padding = 0;                               // MobileNetV3: kernel / 2
  Activation activation = Activation::identity;  // applied after the bias
};

namespace detail {

// Output pixels per task, at least one whole row: enough work to outweigh a task's scheduling and
// its ring's first k rows, small enough that the largest maps give hundreds of tasks.
inline constexpr std::int64_t depthwise_task_pixels = 8192;

// Below this many multiply-adds a call runs on the calling thread alone.
inline constexpr std::int64_t depthwise_parallel_work = 1 << 16;

// Output pixels whose sums one step of the kernel holds in registers: one AVX-512 vector, two
// AVX2 or four SSE vectors.
inline constexpr std::int64_t depthwise_block = 16;

// A stretch of one output row: output columns [begin, end), whose taps read
// rows[ky * s + kx % s][x - begin + kx / s] (each of the k input rows as its s phases), readable
// up to end - begin rounded up to depthwise_block, plus (k - 1) / s.
template <typename T>
struct DepthwiseSegment {
  const T* const* rows;
  std::int64_t begin, end;
};

// out[x] = sum over (ky, kx) of weight[ky * k + kx] * (the tap's input), then + bias, for the
// columns x of every segment.
template <typename T>
using DepthwiseLineKernel = void (*)(const DepthwiseSegment<T>* segments, int segment_count,
                                     int kernel, int stride, const T* weight, T bias, T* out);

// The kernel and stride as constants: the taps unroll over a block whose sums stay in registers.
// One call per output row, so the filter is loaded (and broadcast) once per row.
template <int Kernel, int Stride, typename T>
void depthwise_line_fixed(const DepthwiseSegment<T>* segments, int segment_count, int, int,
                          const T* weight, T bias, T* out) {
  constexpr std::int64_t block = depthwise_block;
  T filter[Kernel * Kernel];
  for (int i = 0; i < Kernel * Kernel; ++i) filter[i] = weight[i];
  for (int segment = 0; segment < segment_count; ++segment) {
    const T* taps[Kernel * Stride];
    for (int i = 0; i < Kernel * Stride; ++i) taps[i] = segments[segment].rows[i];
    // The taps innermost, with constant bounds: the compiler unrolls them, then vectorises the
    // loop over the block's pixels, each sum in a vector lane.
    auto compute_block = [&](std::int64_t first, T* __restrict destination) {
      FPN_VECTORIZE
      for (std::int64_t i = 0; i < block; ++i) {
        T sum{0};
        for (int ky = 0; ky < Kernel; ++ky) {
          for (int kx = 0; kx < Kernel; ++kx) {
            sum +=
                filter[ky * Kernel + kx] * taps[ky * Stride + kx % Stride][first + i + kx / Stride];
          }
        }
        destination[i] = sum + bias;
      }
    };
    const std::int64_t count = segments[segment].end - segments[segment].begin;
    T* segment_out = out + segments[segment].begin;
    std::int64_t x = 0;
    for (; x + block <= count; x += block) compute_block(x, segment_out + x);
    if (x < count) {
      T last[block];
      compute_block(x, last);
      for (std::int64_t i = 0; i < count - x; ++i) segment_out[x + i] = last[i];
    }
  }
}

// Any kernel and stride: one pass over the segment per tap, in the same order of additions.
template <typename T>
void depthwise_line_any(const DepthwiseSegment<T>* segments, int segment_count, int kernel,
                        int stride, const T* weight, T bias, T* out) {
  for (int segment = 0; segment < segment_count; ++segment) {
    T* __restrict segment_out = out + segments[segment].begin;
    const std::int64_t count = segments[segment].end - segments[segment].begin;
    std::fill(segment_out, segment_out + count, T{0});
    for (int ky = 0; ky < kernel; ++ky) {
      for (int kx = 0; kx < kernel; ++kx) {
        const T tap = weight[ky * kernel + kx];
        const T* __restrict source =
            segments[segment].rows[ky * stride + kx % stride] + kx / stride;
        FPN_VECTORIZE
        for (std::int64_t x = 0; x < count; ++x) segment_out[x] += tap * source[x];
      }
    }
    for (std::int64_t x = 0; x < count; ++x) segment_out[x] += bias;
  }
}

template <typename T>
DepthwiseLineKernel<T> depthwise_line_kernel(int kernel, int stride) {
  if (kernel == 3 && stride == 1) return &depthwise_line_fixed<3, 1, T>;
  if (kernel == 3 && stride == 2) return &depthwise_line_fixed<3, 2, T>;
  if (kernel == 5 && stride == 1) return &depthwise_line_fixed<5, 1, T>;
  if (kernel == 5 && stride == 2) return &depthwise_line_fixed<5, 2, T>;
  return &depthwise_line_any<T>;
}

inline std::int64_t round_up_to_block(std::int64_t count) {
  return (count + depthwise_block - 1) / depthwise_block * depthwise_block;
}

// Sizes of one validated call.
struct DepthwiseGeometry {
  std::int64_t batch, channels, height, width;
  int kernel, stride, padding;
  std::int64_t out_height, out_width;
};

// Padded columns [first, first + length) of the input row `source` (width values): zeros where
// they fall outside the image.
template <typename T>
void copy_padded_columns(const T* source, const DepthwiseGeometry& geometry, std::int64_t first,
                         std::int64_t length, T* out) {
  // out[i] is input column first + i - padding; [begin, end) of them are inside the image.
  const std::int64_t offset = first - geometry.padding;
  const std::int64_t begin = std::clamp<std::int64_t>(-offset, 0, length);
  const std::int64_t end = std::clamp<std::int64_t>(geometry.width - offset, begin, length);
  std::fill(out, out + begin, T{0});
  std::copy(source + offset + begin, source + offset + end, out + begin);
  std::fill(out + end, out + length, T{0});
}

// Stride > 1: copies the input row `source` (width values), zero-padded, into its phases: phase
// q (at phases + q * length) holds padded column m * stride + q at m, for m in [0, length).
template <typename T>
void split_padded_row(const T* source, const DepthwiseGeometry& geometry, std::int64_t length,
                      T* phases) {
  const std::int64_t stride = geometry.stride;
  const std::int64_t padding = geometry.padding;
  // Phase q's first m inside the image, and its first m past it.
  auto first_inside = [&](std::int64_t phase) {
    return std::clamp<std::int64_t>((padding - phase + stride - 1) / stride, 0, length);
  };
  auto first_past = [&](std::int64_t phase, std::int64_t first) {
    return std::clamp<std::int64_t>((geometry.width + padding - phase + stride - 1) / stride, first,
                                    length);
  };
  if (stride == 2) {
    // The even and odd columns in one pass: a de-interleave the compiler vectorises.
    T* even = phases;
    T* odd = phases + length;
    const std::int64_t first_even = first_inside(0), last_even = first_past(0, first_even);
    const std::int64_t first_odd = first_inside(1), last_odd = first_past(1, first_odd);
    const std::int64_t first = std::max(first_even, first_odd);
    const std::int64_t last = std::max(first, std::min(last_even, last_odd));
    std::fill(even, even + first_even, T{0});
    std::fill(even + last_even, even + length, T{0});
    std::fill(odd, odd + first_odd, T{0});
    std::fill(odd + last_odd, odd + length, T{0});
    const T* in = source - padding;  // in[j]: padded column j, for j inside the image
    for (std::int64_t m = first_even; m < std::min(first, last_even); ++m) even[m] = in[2 * m];
    for (std::int64_t m = first_odd; m < std::min(first, last_odd); ++m) odd[m] = in[2 * m + 1];
    FPN_VECTORIZE
    for (std::int64_t m = first; m < last; ++m) {
      even[m] = in[2 * m];
      odd[m] = in[2 * m + 1];
    }
    for (std::int64_t m = std::max(first_even, last); m < last_even; ++m) even[m] = in[2 * m];
    for (std::int64_t m = std::max(first_odd, last); m < last_odd; ++m) odd[m] = in[2 * m + 1];
    return;
  }
  for (std::int64_t phase = 0; phase < stride; ++phase) {
    T* out = phases + phase * length;
    const std::int64_t first = first_inside(phase), last = first_past(phase, first);
    std::fill(out, out + first, T{0});
    const T* in = source + phase - padding;
    for (std::int64_t m = first; m < last; ++m) out[m] = in[m * stride];
    std::fill(out + last, out + length, T{0});
  }
}

// The convolution on raw, validated buffers: input [N, C, H, W], weight [C, k * k], bias [C] or
// null; output [N, C, H', W'] must not overlap the input.
template <typename T>
void depthwise_conv2d_into(const T* input, const T* weight, const T* bias,
                           const DepthwiseGeometry& geometry, Activation activation, T* output) {
  const std::int64_t height = geometry.height;
  const std::int64_t width = geometry.width;
  const std::int64_t out_height = geometry.out_height;
  const std::int64_t out_width = geometry.out_width;
  const int kernel = geometry.kernel;
  const int stride = geometry.stride;
  const std::int64_t padding = geometry.padding;
  const std::int64_t planes = geometry.batch * geometry.channels;
  if (planes == 0) return;

  const std::int64_t band_rows =
      std::clamp<std::int64_t>((depthwise_task_pixels + out_width - 1) / out_width, 1, out_height);
  const std::int64_t bands = (out_height + band_rows - 1) / band_rows;
  const DepthwiseLineKernel<T> line_kernel = depthwise_line_kernel<T>(kernel, stride);

  // Stride > 1: each ring slot holds one input row as `stride` phases of phase_length values, as
  // far as the kernel's last block reads.
  const std::int64_t blocks_width = round_up_to_block(out_width);
  const std::int64_t phase_length = blocks_width + (kernel - 1) / stride;
  // Stride 1: output columns [0, left_end) and [right_begin, W') include those whose taps reach
  // into the padding; they read copies of their padded columns (the row's edges, which is what a
  // ring slot holds). [left_end, right_begin) are blocks whose taps all lie inside the image, read
  // in place. Every segment but the last is whole blocks, so the row takes no more blocks than it
  // would read from one padded copy.
  const std::int64_t left_end = std::min(round_up_to_block(padding), out_width);
  const std::int64_t inside_end =
      std::clamp<std::int64_t>(width - kernel + 1 + padding, left_end, out_width);
  const std::int64_t right_begin =
      left_end + (inside_end - left_end) / depthwise_block * depthwise_block;
  const std::int64_t left_length = round_up_to_block(left_end) + kernel - 1;
  const std::int64_t right_length = round_up_to_block(out_width - right_begin) + kernel - 1;
  const bool phased = stride > 1;
  const std::int64_t slot_length = phased ? stride * phase_length : left_length + right_length;
  // Rows above and below the image, as far as any of the above reads.
  const std::vector<T> zeros(static_cast<std::size_t>(phase_length), T{0});
  // Per thread: the ring, the input row each of its slots holds, and the current output row's k
  // input rows (stride > 1: each as its phases; stride 1: left edges, in place, right edges).
  fpn::detail::SlotScratch<T> ring_scratch(static_cast<std::size_t>(kernel * slot_length));
  fpn::detail::SlotScratch<std::int64_t> ring_rows_scratch(static_cast<std::size_t>(kernel));
  fpn::detail::SlotScratch<const T*> rows_scratch(
      static_cast<std::size_t>(kernel * std::max(stride, 3)));

  const std::int64_t work = planes * out_height * out_width * kernel * kernel;
  fpn::detail::parallel_for_if(
      work > depthwise_parallel_work, planes * bands, [&](std::int64_t task, int slot) {
        const std::int64_t plane = task / bands;
        const std::int64_t first_row = (task % bands) * band_rows;
        const std::int64_t end_row = std::min(out_height, first_row + band_rows);
        const T* image = input + plane * height * width;
        const T* filter = weight + (plane % geometry.channels) * kernel * kernel;
        const T plane_bias = bias != nullptr ? bias[plane % geometry.channels] : T{0};
        T* ring = ring_scratch.get(slot);
        std::int64_t* ring_rows = ring_rows_scratch.get(slot);
        std::fill(ring_rows, ring_rows + kernel, std::int64_t{-1});
        const T** rows = rows_scratch.get(slot);
        const T** in_place_rows = rows + kernel;
        const T** right_rows = rows + 2 * kernel;
        // The row's stretches (empty ones left out): stride > 1 the whole row from its phases;
        // stride 1 the left edge, the in-place blocks and the right edge.
        DepthwiseSegment<T> segments[3];
        int segment_count = 0;
        if (phased) {
          segments[segment_count++] = {rows, 0, out_width};
        } else {
          if (left_end > 0) segments[segment_count++] = {rows, 0, left_end};
          if (right_begin > left_end)
            segments[segment_count++] = {in_place_rows, left_end, right_begin};
          if (out_width > right_begin)
            segments[segment_count++] = {right_rows, right_begin, out_width};
        }

        for (std::int64_t out_y = first_row; out_y < end_row; ++out_y) {
          for (int ky = 0; ky < kernel; ++ky) {
            const std::int64_t y = out_y * stride - padding + ky;
            if (y < 0 || y >= height) {
              if (phased) {
                for (int phase = 0; phase < stride; ++phase)
                  rows[ky * stride + phase] = zeros.data();
              } else {
                rows[ky] = in_place_rows[ky] = right_rows[ky] = zeros.data();
              }
              continue;
            }
            // Rows y .. y + k - 1 are k consecutive numbers: distinct slots modulo k.
            T* copy = ring + (y % kernel) * slot_length;
            const T* source = image + y * width;
            if (ring_rows[y % kernel] != y) {
              if (phased) {
                split_padded_row(source, geometry, phase_length, copy);
              } else {
                copy_padded_columns(source, geometry, 0, left_length, copy);
                copy_padded_columns(source, geometry, right_begin, right_length,
                                    copy + left_length);
              }
              ring_rows[y % kernel] = y;
            }
            if (phased) {
              for (int phase = 0; phase < stride; ++phase) {
                rows[ky * stride + phase] = copy + phase * phase_length;
              }
            } else {
              rows[ky] = copy;
              // Read only when there are in-place blocks, and then left_end >= padding.
              in_place_rows[ky] = left_end >= padding ? source + (left_end - padding) : source;
              right_rows[ky] = copy + left_length;
            }
          }
          T* out = output + (plane * out_height + out_y) * out_width;
          line_kernel(segments, segment_count, kernel, stride, filter, plane_bias, out);
          activate_in_place(activation, out, out_width);
        }
      });
}

// Validates a depthwise_conv2d call; returns its sizes and whether there is a bias.
template <typename T>
DepthwiseGeometry check_depthwise_conv2d(std::string_view where, TensorView<const T> input,
                                         TensorView<const T> weight, TensorView<const T> bias,
                                         DepthwiseConv2dParams params, bool& has_bias) {
  using fpn::detail::throw_shape_error;
  if (input.rank() != 4) throw_shape_error(where, "input", "[N, C, H, W]", input.shape().dims());
  const std::int64_t channels = input.dim(1);
  if (weight.rank() != 4 || weight.dim(0) != channels || weight.dim(1) != 1 ||
      weight.dim(2) != weight.dim(3) || weight.dim(2) < 1) {
    throw_shape_error(where, "weight",
                      fpn::detail::numbered("[", channels) +
                          ", 1, k, k] (one filter per channel) for input " + input.shape().str(),
                      weight.shape().dims());
  }
  has_bias = bias.numel() > 0 && bias.data() != nullptr;
  if (has_bias && (bias.rank() != 1 || bias.dim(0) != channels)) {
    throw_shape_error(where, "bias", fpn::detail::numbered("[", channels) + "] or empty",
                      bias.shape().dims());
  }
  if (params.stride < 1 || params.padding < 0) {
    fpn::detail::throw_argument_error(
        where,
        fpn::detail::numbered("stride must be >= 1 and padding >= 0, got stride ", params.stride) +
            " and padding " + std::to_string(params.padding));
  }
  if (!is_valid(params.activation)) {
    fpn::detail::throw_argument_error(
        where, fpn::detail::numbered(
                   "activation must be identity, relu, hardswish or hardsigmoid, got the value ",
                   static_cast<int>(params.activation)));
  }
  const auto kernel = static_cast<int>(weight.dim(2));
  if (input.dim(2) + 2 * params.padding < kernel || input.dim(3) + 2 * params.padding < kernel) {
    throw_shape_error(where, "input",
                      fpn::detail::numbered("at least ", kernel) + "x" + std::to_string(kernel) +
                          " after padding " + std::to_string(params.padding),
                      input.shape().dims());
  }
  const std::int64_t out_height = (input.dim(2) + 2 * params.padding - kernel) / params.stride + 1;
  const std::int64_t out_width = (input.dim(3) + 2 * params.padding - kernel) / params.stride + 1;
  return {input.dim(0),  channels,       input.dim(2), input.dim(3), kernel,
          params.stride, params.padding, out_height,   out_width};
}

}  // namespace detail

// input: [N, C, H, W]; weight: [C, 1, k, k]; bias: [C] or empty (no bias)
// returns activation(depthwise(input) + bias): [N, C, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1]
template <typename T = float>
Tensor<T> depthwise_conv2d(std::type_identity_t<TensorView<const T>> input,
                           std::type_identity_t<TensorView<const T>> weight,
                           std::type_identity_t<TensorView<const T>> bias,
                           DepthwiseConv2dParams params = {}) {
  bool has_bias = false;
  const detail::DepthwiseGeometry geometry =
      detail::check_depthwise_conv2d("depthwise_conv2d", input, weight, bias, params, has_bias);
  auto output = Tensor<T>::uninitialized(
      Shape{geometry.batch, geometry.channels, geometry.out_height, geometry.out_width});
  detail::depthwise_conv2d_into(input.data(), weight.data(), has_bias ? bias.data() : nullptr,
                                geometry, params.activation, output.data());
  return output;
}

// As depthwise_conv2d, into a map the caller owns (e.g. reused across a network's blocks).
// output: [N, C, H', W'] as depthwise_conv2d returns; it must not overlap the input.
template <typename T = float>
void depthwise_conv2d_into(std::type_identity_t<TensorView<const T>> input,
                           std::type_identity_t<TensorView<const T>> weight,
                           std::type_identity_t<TensorView<const T>> bias,
                           DepthwiseConv2dParams params,
                           std::type_identity_t<TensorView<T>> output) {
  constexpr std::string_view where = "depthwise_conv2d_into";
  bool has_bias = false;
  const detail::DepthwiseGeometry geometry =
      detail::check_depthwise_conv2d(where, input, weight, bias, params, has_bias);
  const Shape expected{geometry.batch, geometry.channels, geometry.out_height, geometry.out_width};
  if (!(output.shape() == expected)) {
    fpn::detail::throw_shape_error(where, "output", expected.str(), output.shape().dims());
  }
  const T* input_begin = input.data();
  const T* output_begin = output.data();
  const std::less<const T*> before;  // a total order even between unrelated arrays
  if (output.numel() > 0 && input.numel() > 0 &&
      before(output_begin, input_begin + input.numel()) &&
      before(input_begin, output_begin + output.numel())) {
    fpn::detail::throw_argument_error(where, "output must not overlap the input");
  }
  detail::depthwise_conv2d_into(input.data(), weight.data(), has_bias ? bias.data() : nullptr,
                                geometry, params.activation, output.data());
}

// Without bias.
template <typename T = float>
Tensor<T> depthwise_conv2d(std::type_identity_t<TensorView<const T>> input,
                           std::type_identity_t<TensorView<const T>> weight,
                           DepthwiseConv2dParams params = {}) {
  return depthwise_conv2d<T>(input, weight, TensorView<const T>(), params);
}

}  // namespace fpn::ops
