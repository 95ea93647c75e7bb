// A fully connected layer whose weight is packed once, at load, into the layout its GEMM kernel
// reads: y = x W^T + b (torch.nn.Linear), optionally followed by an activation.
//
// Why: the box head's fc6 multiplies every batch of proposals by a 12544 x 1024 weight (51 MB).
// A general GEMM (Eigen's) re-packs that weight for every call and, split across threads, re-packs
// the proposals' features once per column block: on MobileNetV3-FPN at 800x1216 the packing alone
// was ~8% of the whole process. Packed at load, a call only streams the weight.
//
// Layout: the output columns in panels of 64 (core/detail/panel_gemm.hpp); panel p holds
// W^T[:, 64p, 64p + 64) as a row-major [in, 64] block (columns past `out` are zero). The same
// layout for every instruction set. Arithmetic as panel_multiply's, then the bias and the
// activation: nothing depends on the thread count or on how the rows are split, so the result is
// bitwise the same for any number of threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fpn/core/detail/panel_gemm.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/ops/activation.hpp"
#include "fpn/ops/linear.hpp"

namespace fpn::ops {

class PackedLinearWeight {
 public:
  static constexpr std::int64_t panel_width = fpn::detail::panel_width;

  PackedLinearWeight() = default;

  // weight: [out, in], as torch.nn.Linear stores it.
  explicit PackedLinearWeight(TensorView<const float> weight) {
    check(weight);
    const std::int64_t panels = fpn::detail::panel_count(out_);
    packed_ = Tensor<float>::uninitialized(Shape{panels, in_, panel_width});
    for (std::int64_t p = 0; p < panels; ++p) {
      pack_panel(weight.data() + p * panel_width * in_, p, packed_.data() + p * in_ * panel_width);
    }
  }

  // The same from a weight it may take over: when `out` is a multiple of the panel width, panel
  // p occupies exactly the bytes of rows [64 p, 64 p + 64), so each is packed in place through
  // one panel of scratch. A model's largest weight (the box head's fc6, 51 MB) then needs no
  // second copy at load: on a virtual machine, fresh memory is the slow part of a load.
  explicit PackedLinearWeight(Tensor<float>&& weight) {
    check(weight.view());
    if (out_ % panel_width != 0) {
      *this = PackedLinearWeight(std::as_const(weight).view());
      return;
    }
    const std::int64_t panels = out_ / panel_width;
    std::vector<float> rows(static_cast<std::size_t>(panel_width * in_));
    for (std::int64_t p = 0; p < panels; ++p) {
      float* block = weight.data() + p * panel_width * in_;
      std::copy_n(block, rows.size(), rows.data());
      pack_panel(rows.data(), p, block);
    }
    packed_ = std::move(weight).reshaped(Shape{panels, in_, panel_width});
  }

  std::int64_t in_features() const { return in_; }
  std::int64_t out_features() const { return out_; }
  std::int64_t panels() const { return packed_.rank() == 3 ? packed_.dim(0) : 0; }
  // Panel p: [in, panel_width], row-major.
  const float* panel(std::int64_t p) const { return packed_.data() + p * in_ * panel_width; }
  bool empty() const { return out_ == 0; }

 private:
  void check(TensorView<const float> weight) {
    if (weight.rank() != 2 || weight.dim(0) < 1 || weight.dim(1) < 1) {
      fpn::detail::throw_shape_error("PackedLinearWeight", "weight", "[out >= 1, in >= 1]",
                                     weight.shape().dims());
    }
    out_ = weight.dim(0);
    in_ = weight.dim(1);
  }

  // Panel p of the packing, [in][64], into target from its rows ([64 or fewer, in], row-major):
  // k by k, the writes sequential, the reads 64 row streams; columns past `out` zero.
  void pack_panel(const float* rows, std::int64_t p, float* target) const {
    const std::int64_t width = std::min(panel_width, out_ - p * panel_width);
    for (std::int64_t k = 0; k < in_; ++k, target += panel_width) {
      for (std::int64_t j = 0; j < width; ++j) target[j] = rows[j * in_ + k];
      std::fill(target + width, target + panel_width, 0.0f);
    }
  }

  Tensor<float> packed_;
  std::int64_t out_ = 0;
  std::int64_t in_ = 0;
};

namespace detail {
inline constexpr std::int64_t linear_row_block = 288;  // rows per task: their slice of x stays in L2
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
  const bool has_bias = detail::linear_has_bias<float>(bias, weight.out_features());
  constexpr std::int64_t width = PackedLinearWeight::panel_width;
  const std::int64_t rows = input.dim(0), depth = weight.in_features(), out = weight.out_features();
  auto output = Tensor<float>::uninitialized(Shape{rows, out});
  if (rows == 0) return output;
  const std::int64_t row_blocks = (rows + detail::linear_row_block - 1) / detail::linear_row_block;
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
    fpn::detail::panel_multiply(count, depth, x + first_row * depth, depth, weight.panel(panel), tile,
                                width, false);
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
