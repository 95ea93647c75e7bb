// A fully connected layer whose weight is packed once, at load, into the layout its GEMM kernel
// reads: y = x W^T + b (torch.nn.Linear), optionally followed by an activation.
//
// Why: the box head's fc6 multiplies every batch of proposals by a 12544 x 1024 weight (51 MB).
// A general GEMM (Eigen's) re-packs that weight for every call and, split across threads, re-packs
// the proposals' features once per column block: on MobileNetV3-FPN at 800x1216 the packing alone
// was ~8% of the whole process. Packed at load, a call only streams the weight.
//
// Layout: the output columns in panels of `panel_width` (64); panel p holds W^T[:, 64p, 64p + 64)
// as a row-major [in, 64] block (columns past `out` are zero), so every k step of a panel is 256
// contiguous, aligned bytes. The same layout for every instruction set: the kernel covers a panel
// with as many SIMD packets as the compiled target has (Eigen's packet types: 16 floats with
// AVX-512, 8 with AVX, 4 with SSE2), so there is one code path and one set of results per target.
//
// Arithmetic: each output is (bias +) the sum over k in slices of `depth_slice` consecutive
// indices, each slice summed in order from zero and then added to the running total, with fused
// multiply-adds where the target has them. Nothing depends on the thread count or on how the
// rows are split, so the result is bitwise the same for any number of threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/activation.hpp"

namespace fpn::ops {

class PackedLinearWeight {
 public:
  static constexpr std::int64_t panel_width = 64;

  PackedLinearWeight() = default;

  // weight: [out, in], as torch.nn.Linear stores it.
  explicit PackedLinearWeight(TensorView<const float> weight) {
    if (weight.rank() != 2 || weight.dim(0) < 1 || weight.dim(1) < 1) {
      fpn::detail::throw_shape_error("PackedLinearWeight", "weight", "[out >= 1, in >= 1]",
                                     weight.shape().dims());
    }
    out_ = weight.dim(0);
    in_ = weight.dim(1);
    const std::int64_t panels = (out_ + panel_width - 1) / panel_width;
    packed_ = Tensor<float>(Shape{panels, in_, panel_width});  // zeros past `out`
    const float* source = weight.data();
    float* target = packed_.data();
    for (std::int64_t o = 0; o < out_; ++o) {
      float* column = target + (o / panel_width) * in_ * panel_width + o % panel_width;
      const float* row = source + o * in_;
      for (std::int64_t k = 0; k < in_; ++k) column[k * panel_width] = row[k];
    }
  }

  std::int64_t in_features() const { return in_; }
  std::int64_t out_features() const { return out_; }
  std::int64_t panels() const { return packed_.rank() == 3 ? packed_.dim(0) : 0; }
  // Panel p: [in, panel_width], row-major.
  const float* panel(std::int64_t p) const { return packed_.data() + p * in_ * panel_width; }
  bool empty() const { return out_ == 0; }

 private:
  Tensor<float> packed_;
  std::int64_t out_ = 0;
  std::int64_t in_ = 0;
};

namespace detail {

using Packet = typename Eigen::internal::packet_traits<float>::type;
inline constexpr int packet_size = Eigen::internal::packet_traits<float>::size;

// Rows of the output a kernel call covers and packets per row: enough independent accumulators to
// hide the multiply-add latency within the register file (6 x 4 of 32 with AVX-512, 6 x 2 of 16
// otherwise).
inline constexpr int kernel_rows = 6;
inline constexpr int kernel_packets = packet_size >= 16 ? 4 : 2;
inline constexpr std::int64_t depth_slice = 256;  // k per pass: a panel's slice is 64 KiB
inline constexpr std::int64_t row_block = 288;    // rows per task: their slice of x stays in L2

static_assert(PackedLinearWeight::panel_width % (kernel_packets * packet_size) == 0);

// tile[0, Rows) x [0, kernel_packets * packet_size) (row stride panel_width) = (or +=) the sum
// over k in [0, depth) of x[r * x_stride + k] * b[k * panel_width + c].
template <int Rows>
inline void packed_kernel(std::int64_t depth, const float* x, std::int64_t x_stride,
                          const float* b, float* tile, bool accumulate) {
  using namespace Eigen::internal;
  constexpr int V = kernel_packets;
  Packet acc[Rows][V];
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = pset1<Packet>(0.0f);
  }
  for (std::int64_t k = 0; k < depth; ++k) {
    Packet w[V];
    for (int v = 0; v < V; ++v) w[v] = pload<Packet>(b + k * PackedLinearWeight::panel_width + v * packet_size);
    for (int r = 0; r < Rows; ++r) {
      const Packet a = pset1<Packet>(x[r * x_stride + k]);
      for (int v = 0; v < V; ++v) acc[r][v] = pmadd(a, w[v], acc[r][v]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) {
      float* target = tile + r * PackedLinearWeight::panel_width + v * packet_size;
      pstore(target, accumulate ? padd(pload<Packet>(target), acc[r][v]) : acc[r][v]);
    }
  }
}

template <int Rows = kernel_rows>
inline void packed_kernel_rows(int rows, std::int64_t depth, const float* x, std::int64_t x_stride,
                               const float* b, float* tile, bool accumulate) {
  if constexpr (Rows > 1) {
    if (rows < Rows) {
      packed_kernel_rows<Rows - 1>(rows, depth, x, x_stride, b, tile, accumulate);
      return;
    }
  }
  packed_kernel<Rows>(depth, x, x_stride, b, tile, accumulate);
}

}  // namespace detail

// input: [N, in]; bias: [out] or empty. returns [N, out].
inline Tensor<float> linear(TensorView<const float> input, const PackedLinearWeight& weight,
                            TensorView<const float> bias,
                            Activation activation = Activation::identity) {
  using fpn::detail::throw_shape_error;
  if (weight.empty()) throw ArgumentError("linear: the packed weight is empty (default-constructed)");
  if (input.rank() != 2 || input.dim(1) != weight.in_features()) {
    throw_shape_error("linear", "input", "[N, " + std::to_string(weight.in_features()) + "]",
                      input.shape().dims());
  }
  const bool has_bias = bias.numel() > 0 && bias.data() != nullptr;
  if (has_bias && (bias.rank() != 1 || bias.dim(0) != weight.out_features())) {
    throw_shape_error("linear", "bias", "[" + std::to_string(weight.out_features()) + "]",
                      bias.shape().dims());
  }
  constexpr std::int64_t width = PackedLinearWeight::panel_width;
  constexpr std::int64_t sub_width = detail::kernel_packets * detail::packet_size;
  const std::int64_t rows = input.dim(0), depth = weight.in_features(), out = weight.out_features();
  auto output = Tensor<float>::uninitialized(Shape{rows, out});
  if (rows == 0) return output;
  const std::int64_t row_blocks = (rows + detail::row_block - 1) / detail::row_block;
  const std::int64_t block_rows = (rows + row_blocks - 1) / row_blocks;
  const std::int64_t tasks = row_blocks * weight.panels();
  fpn::detail::SlotScratch<float> scratch(static_cast<std::size_t>(block_rows * width),
                                          fpn::detail::ScratchFill::uninitialized);
  const float* x = input.data();
  const float* bias_data = has_bias ? bias.data() : nullptr;
  float* y = output.data();
  fpn::detail::parallel_for_if(tasks > 1 && rows * depth * out >= (1 << 18), tasks,
                               [&](std::int64_t task, int slot) {
    const std::int64_t panel = task % weight.panels();
    const std::int64_t first_row = (task / weight.panels()) * block_rows;
    const std::int64_t count = std::min(block_rows, rows - first_row);
    float* tile = scratch.get(slot);
    const float* packed = weight.panel(panel);
    for (std::int64_t k0 = 0; k0 < depth; k0 += detail::depth_slice) {
      const std::int64_t slice = std::min(detail::depth_slice, depth - k0);
      for (std::int64_t r = 0; r < count; r += detail::kernel_rows) {
        const int kernel_rows = static_cast<int>(std::min<std::int64_t>(detail::kernel_rows, count - r));
        for (std::int64_t c = 0; c < width; c += sub_width) {
          detail::packed_kernel_rows(kernel_rows, slice, x + (first_row + r) * depth + k0, depth,
                                     packed + k0 * width + c, tile + r * width + c, k0 > 0);
        }
      }
    }
    const std::int64_t first_column = panel * width;
    const std::int64_t columns = std::min(width, out - first_column);
    for (std::int64_t r = 0; r < count; ++r) {
      float* target = y + (first_row + r) * out + first_column;
      const float* source = tile + r * width;
      if (bias_data != nullptr) {
        for (std::int64_t c = 0; c < columns; ++c) target[c] = source[c] + bias_data[first_column + c];
      } else {
        std::copy_n(source, columns, target);
      }
      activate_in_place(activation, target, columns);
    }
  });
  return output;
}

}  // namespace fpn::ops
