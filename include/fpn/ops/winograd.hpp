// Winograd F(2x2, 3x3) for 3x3, stride-1, padding-1 convolutions (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2016): each 2x2 block of output pixels ("tile") costs 16
// multiplies per (Cout, Cin) pair instead of 36, i.e. 2.25x fewer.
//
//   Y = A^T [ sum_ci (G g G^T) .* (B^T d B) ] A
//
// with d the tile's 4x4 input window, g a 3x3 filter and the F(2, 3) matrices
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// The sum over channels is 16 GEMMs, one per position k of the 4x4 transformed tile:
//   M_k [Cout, tiles] = U_k [Cout, Cin] * V_k [Cin, tiles].
//
// Tiles of every image of the batch are numbered in one sequence and processed in blocks, so a
// batch of small maps (the mask head's 14x14 ROI features) fills the same GEMMs as one large map.
// Each thread takes whole blocks (transforms and GEMMs on its own scratch), so the threads meet
// once per call rather than three times per block.
// The filters are transformed on every call, so layers keep their PyTorch weights and no extra
// memory stays resident: 16 Cout Cin values, ~2% of the work on an FPN level but most of it on
// a map of a few tiles, which is why conv2d keeps small maps on im2col.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/detail/panel_gemm.hpp"
#include "fpn/core/detail/simd.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/ops/activation.hpp"

namespace fpn::ops::detail {

// Each thread holds one block's transformed input and GEMM products, 16 * channels * tiles
// values each; this budget (for the larger) keeps a block's panels near the L2 cache.
inline constexpr std::int64_t winograd_block_budget_bytes = 4 << 20;
inline constexpr std::int64_t winograd_min_block_tiles = 32;
inline constexpr std::int64_t winograd_max_block_tiles = 512;
inline constexpr std::size_t winograd_max_block_panels = 8;  // of 64 tiles: 512
static_assert(winograd_max_block_tiles <= 64 * static_cast<std::int64_t>(winograd_max_block_panels));

// A map is cut into at least this many blocks when it has the tiles for them, whatever the thread
// count (so that results do not depend on it).
inline constexpr std::int64_t winograd_min_blocks = 4;

// Tiles per block for the given channel counts and problem size: as many as fit the budget, but
// few enough that the map makes winograd_min_blocks blocks. (Splitting further only shrinks the
// GEMMs: on one core a 13x19 map runs 1.25x slower in four blocks than in one.)
template <typename T>
std::int64_t winograd_block_tiles(std::int64_t in_channels, std::int64_t out_channels,
                                  std::int64_t total_tiles) {
  const std::int64_t per_tile = 16 * static_cast<std::int64_t>(sizeof(T)) *
                                std::max<std::int64_t>({in_channels, out_channels, 1});
  const std::int64_t fits = std::clamp(winograd_block_budget_bytes / per_tile,
                                       winograd_min_block_tiles, winograd_max_block_tiles);
  const std::int64_t shared =
      std::max(winograd_min_block_tiles, (total_tiles + winograd_min_blocks - 1) / winograd_min_blocks);
  return std::min(fits, shared);
}

// G (x) G as a [16, 9] matrix: row 4 i + j holds G[i, a] * G[j, b] at column 3 a + b, so that
// U = (G (x) G) vec(g) is G g G^T flattened row by row. Its entries are 0, +-1, +-1/2, +-1/4.
inline Eigen::Matrix<double, 16, 9> winograd_filter_matrix() {
  const double g[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  Eigen::Matrix<double, 16, 9> kron;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) kron(4 * i + j, 3 * a + b) = g[i][a] * g[j][b];
  return kron;
}

// weights: [Cout, Cin, 3, 3]; transformed: [16, Cout, Cin], U = G g G^T at position k = 4 i + j.
// A [16, 9] x [9, filters] product in double, rounded once, so U is as exact as its filter; in
// chunks of filters so the double panel stays small.
template <typename T>
void winograd_transform_filter(const T* weights, std::int64_t out_channels,
                               std::int64_t in_channels, T* transformed) {
  using Panel = Eigen::Matrix<double, 16, Eigen::Dynamic, Eigen::RowMajor>;
  constexpr std::int64_t chunk = 256;
  const std::int64_t filters = out_channels * in_channels;
  const Eigen::Matrix<double, 16, 9> kron = winograd_filter_matrix();
  fpn::detail::parallel_for_chunks(filters, chunk, [&](std::int64_t first, std::int64_t end) {
    const std::int64_t count = end - first;
    Panel panel(16, count);
    // Row-major [filters, 9] weights are a column-major [9, filters] matrix: one column a filter.
    const Eigen::Map<const Eigen::Matrix<T, 9, Eigen::Dynamic>> g(weights + first * 9, 9, count);
    auto block = panel.leftCols(count);
    block.noalias() = kron * g.template cast<double>();
    Eigen::Map<Eigen::Matrix<T, 16, Eigen::Dynamic, Eigen::RowMajor>, 0, Eigen::OuterStride<>>(
        transformed + first, 16, count, Eigen::OuterStride<>(filters)) = block.template cast<T>();
  });
}

// Where the tiles [first, first + count) of a batch lie: runs of consecutive tiles that share an
// image and a tile row. visit(image, tile_row, first_tile_column, run_length, offset_in_block).
template <typename Visit>
void for_each_tile_run(std::int64_t first, std::int64_t count, std::int64_t tiles_per_row,
                       std::int64_t tiles_per_image, Visit&& visit) {
  std::int64_t tile = first;
  const std::int64_t end = first + count;
  while (tile < end) {
    const std::int64_t image = tile / tiles_per_image;
    const std::int64_t tile_row = (tile % tiles_per_image) / tiles_per_row;
    const std::int64_t tile_column = tile % tiles_per_row;
    const std::int64_t length = std::min(tiles_per_row - tile_column, end - tile);
    visit(image, tile_row, tile_column, length, tile - first);
    tile += length;
  }
}

// V = B^T d B for one channel plane over a run of tiles in one tile row; V_k's row for this
// channel starts at transformed + k * plane_stride. lines: 4 scratch rows of padded_width.
template <typename T>
void winograd_transform_input_run(const T* plane, std::int64_t height, std::int64_t width,
                                  const T* zeros, std::int64_t tile_row, std::int64_t tile_column,
                                  std::int64_t length, T* lines, std::int64_t padded_width,
                                  T* transformed, std::int64_t plane_stride) {
  // The tile's window starts one pixel up and left of its outputs (padding 1); padded column p
  // is input column p - 1, and rows outside the map read zeros.
  const T* rows[4];
  for (int i = 0; i < 4; ++i) {
    const std::int64_t y = 2 * tile_row - 1 + i;
    rows[i] = (y >= 0 && y < height) ? plane + y * width : zeros;
  }
  // B^T d along the columns, for the padded columns the run reads.
  const std::int64_t p_begin = 2 * tile_column;
  const std::int64_t p_end = 2 * (tile_column + length) + 2;
  T* t0 = lines;
  T* t1 = lines + padded_width;
  T* t2 = lines + 2 * padded_width;
  T* t3 = lines + 3 * padded_width;
  const std::int64_t valid_begin = std::max<std::int64_t>(p_begin, 1);
  const std::int64_t valid_end = std::min(p_end, width + 1);
  for (std::int64_t p = p_begin; p < valid_begin; ++p) t0[p] = t1[p] = t2[p] = t3[p] = T{};
  for (std::int64_t p = std::max(valid_end, p_begin); p < p_end; ++p) {
    t0[p] = t1[p] = t2[p] = t3[p] = T{};
  }
  FPN_VECTORIZE
  for (std::int64_t x = valid_begin - 1; x < valid_end - 1; ++x) {
    t0[x + 1] = rows[0][x] - rows[2][x];
    t1[x + 1] = rows[1][x] + rows[2][x];
    t2[x + 1] = rows[2][x] - rows[1][x];
    t3[x + 1] = rows[1][x] - rows[3][x];
  }
  // ... then B along the rows of each tile's 4x4 window.
  const T* lines_by_row[4] = {t0, t1, t2, t3};
  for (int i = 0; i < 4; ++i) {
    const T* line = lines_by_row[i] + p_begin;
    T* v0 = transformed + (4 * i + 0) * plane_stride;
    T* v1 = transformed + (4 * i + 1) * plane_stride;
    T* v2 = transformed + (4 * i + 2) * plane_stride;
    T* v3 = transformed + (4 * i + 3) * plane_stride;
    FPN_VECTORIZE
    for (std::int64_t j = 0; j < length; ++j) {
      const T a0 = line[2 * j], a1 = line[2 * j + 1], a2 = line[2 * j + 2], a3 = line[2 * j + 3];
      v0[j] = a0 - a2;
      v1[j] = a1 + a2;
      v2[j] = a2 - a1;
      v3[j] = a1 - a3;
    }
  }
}

// Y = A^T M A (+ bias, ReLU) for one output channel over a run of tiles in one tile row; M_k's
// row for this channel starts at products + k * plane_stride. bottom may be a scratch row when
// the map's last tile row has a single output row.
template <typename T>
void winograd_transform_output_run(const T* products, std::int64_t plane_stride,
                                   std::int64_t length, std::int64_t full_tiles, T bias, Activation activation,
                                   T* top, T* bottom) {
  // ReLU is the max with a floor inside the tile loop; other activations run over the written
  // rows afterwards, while they are still in cache.
  const T floor = activation == Activation::relu ? T{0} : -std::numeric_limits<T>::infinity();
  // A^T M A for tile j: two rows of four (A^T M), then A along them; y = [top-left, top-right,
  // bottom-left, bottom-right].
  const auto tile = [=](std::int64_t j, T& y00, T& y01, T& y10, T& y11) {
    const T* m = products + j;
    const std::int64_t s = plane_stride;
    const T r00 = m[0] + m[4 * s] + m[8 * s], r10 = m[4 * s] - m[8 * s] - m[12 * s];
    const T r01 = m[s] + m[5 * s] + m[9 * s], r11 = m[5 * s] - m[9 * s] - m[13 * s];
    const T r02 = m[2 * s] + m[6 * s] + m[10 * s], r12 = m[6 * s] - m[10 * s] - m[14 * s];
    const T r03 = m[3 * s] + m[7 * s] + m[11 * s], r13 = m[7 * s] - m[11 * s] - m[15 * s];
    y00 = std::max(r00 + r01 + r02 + bias, floor);
    y01 = std::max(r01 - r02 - r03 + bias, floor);
    y10 = std::max(r10 + r11 + r12 + bias, floor);
    y11 = std::max(r11 - r12 - r13 + bias, floor);
  };
  FPN_VECTORIZE
  for (std::int64_t j = 0; j < full_tiles; ++j) {
    T y00, y01, y10, y11;
    tile(j, y00, y01, y10, y11);
    top[2 * j] = y00;
    top[2 * j + 1] = y01;
    bottom[2 * j] = y10;
    bottom[2 * j + 1] = y11;
  }
  // A last tile that sticks out of an odd-width map writes its left column only.
  for (std::int64_t j = full_tiles; j < length; ++j) {
    T y00, y01, y10, y11;
    tile(j, y00, y01, y10, y11);
    top[2 * j] = y00;
    bottom[2 * j] = y10;
  }
  if (activation != Activation::identity && activation != Activation::relu) {
    const std::int64_t written = 2 * full_tiles + (length - full_tiles);
    activate_in_place(activation, top, written);
    activate_in_place(activation, bottom, written);
  }
}

// The geometry of one call: tiles of 2x2 output pixels numbered image by image, row by row.
struct WinogradTiling {
  std::int64_t batch, in_channels, out_channels, height, width;
  std::int64_t tiles_per_row, tiles_per_image;
  // Tiles of a row whose two output columns are both inside the map.
  std::int64_t full_tiles_per_row;

  WinogradTiling(std::int64_t batch, std::int64_t in_channels, std::int64_t out_channels,
                 std::int64_t height, std::int64_t width)
      : batch(batch),
        in_channels(in_channels),
        out_channels(out_channels),
        height(height),
        width(width),
        tiles_per_row((width + 1) / 2),
        tiles_per_image(tiles_per_row * ((height + 1) / 2)),
        full_tiles_per_row(width / 2) {}
  std::int64_t total_tiles() const { return batch * tiles_per_image; }
  std::int64_t padded_width() const { return 2 * tiles_per_row + 2; }
};

// One thread's scratch: the block's V ([16, Cin, tiles]) and M ([16, Cout, tiles]), the row
// buffers of the transforms and, in float, one V_k in panels and an output tile for the last,
// partial panel.
template <typename T>
struct WinogradScratch {
  Tensor<T> transformed, products;
  std::vector<T> lines, spare_row;
  Tensor<T> panels, edge;

  WinogradScratch(const WinogradTiling& tiling, std::int64_t block_tiles)
      : transformed(Tensor<T>::uninitialized(Shape{16, tiling.in_channels, block_tiles})),
        products(Tensor<T>::uninitialized(Shape{16, tiling.out_channels, block_tiles})),
        lines(static_cast<std::size_t>(4 * tiling.padded_width())),
        spare_row(static_cast<std::size_t>(tiling.width + 1)) {
    if constexpr (std::is_same_v<T, float>) {
      const std::int64_t width = fpn::detail::panel_width;
      panels = Tensor<T>::uninitialized(
          Shape{fpn::detail::panel_count(block_tiles), tiling.in_channels, width});
      edge = Tensor<T>::uninitialized(Shape{tiling.out_channels, width});
    }
  }
};

// Output tiles [first, first + count): input transform, the 16 GEMMs M_k = U_k V_k, output
// transform, all on the calling thread. filter: [16, Cout, Cin]; zeros: a zero row of the map.
template <typename T>
void winograd_block(const WinogradTiling& tiling, const T* input, const T* filter, const T* bias,
                    Activation activation, const T* zeros, std::int64_t first, std::int64_t count,
                    WinogradScratch<T>& scratch, T* output) {
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::int64_t in_channels = tiling.in_channels, out_channels = tiling.out_channels;
  const std::int64_t height = tiling.height, width = tiling.width;
  // V_k and M_k are dense row-major panels of `count` columns.
  const std::int64_t input_stride = in_channels * count;
  const std::int64_t output_stride = out_channels * count;

  for (std::int64_t channel = 0; channel < in_channels; ++channel) {
    for_each_tile_run(first, count, tiling.tiles_per_row, tiling.tiles_per_image,
                      [&](std::int64_t image, std::int64_t tile_row, std::int64_t tile_column,
                          std::int64_t length, std::int64_t offset) {
                        const T* plane = input + (image * in_channels + channel) * height * width;
                        winograd_transform_input_run(
                            plane, height, width, zeros, tile_row, tile_column, length,
                            scratch.lines.data(), tiling.padded_width(),
                            scratch.transformed.data() + channel * count + offset, input_stride);
                      });
  }

  for (int k = 0; k < 16; ++k) {
    const T* u = filter + k * out_channels * in_channels;
    const T* v = scratch.transformed.data() + k * input_stride;
    T* m = scratch.products.data() + k * output_stride;
    if constexpr (std::is_same_v<T, float>) {
      // fpn's panel kernel: V_k's columns in panels of 64 tiles, U_k read as stored (Eigen
      // packed both again for every block).
      using fpn::detail::panel_width;
      const std::int64_t panels = fpn::detail::panel_count(count);
      // Whole panels are V_k's columns read in place; a block with a partial one is copied.
      const bool whole = count % panel_width == 0;
      if (!whole) fpn::detail::pack_panels(v, in_channels, count, count, scratch.panels.data());
      std::array<float*, winograd_max_block_panels> targets;
      std::array<std::int64_t, winograd_max_block_panels> strides;
      for (std::int64_t p = 0; p < panels; ++p) {
        const bool partial = (p + 1) * panel_width > count;
        targets[static_cast<std::size_t>(p)] = partial ? scratch.edge.data() : m + p * panel_width;
        strides[static_cast<std::size_t>(p)] = partial ? panel_width : count;
      }
      fpn::detail::panel_multiply(
          out_channels, in_channels, u, in_channels,
          whole ? fpn::detail::PanelLayout::in_place(v, count)
                : fpn::detail::PanelLayout::packed(scratch.panels.data(), in_channels),
          static_cast<int>(panels), targets.data(), strides.data(), false);
      const std::int64_t last = (panels - 1) * panel_width;
      if (last + panel_width > count) {
        for (std::int64_t c = 0; c < out_channels; ++c) {
          std::copy_n(scratch.edge.data() + c * panel_width, count - last, m + c * count + last);
        }
      }
    } else {
      const Eigen::Map<const Matrix> u_k(u, out_channels, in_channels);
      const Eigen::Map<const Matrix> v_k(v, in_channels, count);
      Eigen::Map<Matrix>(m, out_channels, count).noalias() = u_k * v_k;
    }
  }

  for (std::int64_t channel = 0; channel < out_channels; ++channel) {
    const T channel_bias = bias != nullptr ? bias[channel] : T{0};
    for_each_tile_run(first, count, tiling.tiles_per_row, tiling.tiles_per_image,
                      [&](std::int64_t image, std::int64_t tile_row, std::int64_t tile_column,
                          std::int64_t length, std::int64_t offset) {
                        T* plane = output + (image * out_channels + channel) * height * width;
                        const std::int64_t y = 2 * tile_row;
                        T* top = plane + y * width + 2 * tile_column;
                        T* bottom = y + 1 < height ? top + width : scratch.spare_row.data();
                        const std::int64_t full = std::clamp<std::int64_t>(
                            tiling.full_tiles_per_row - tile_column, 0, length);
                        winograd_transform_output_run(
                            scratch.products.data() + channel * count + offset, output_stride,
                            length, full, channel_bias, activation, top, bottom);
                      });
  }
}

// input: [N, Cin, H, W]; weights: [Cout, Cin, 3, 3]; bias: [Cout] or nullptr;
// output: [N, Cout, H, W], the 3x3 stride-1 padding-1 convolution, then the activation.
template <typename T>
void winograd_f2x3_into(const T* input, std::int64_t batch, std::int64_t in_channels,
                        std::int64_t height, std::int64_t width, const T* weights,
                        std::int64_t out_channels, const T* bias, Activation activation, T* output) {
  const WinogradTiling tiling(batch, in_channels, out_channels, height, width);
  const std::int64_t total_tiles = tiling.total_tiles();
  if (total_tiles == 0 || out_channels == 0) return;
  const std::int64_t block_tiles =
      winograd_block_tiles<T>(in_channels, out_channels, total_tiles);
  const std::int64_t blocks = (total_tiles + block_tiles - 1) / block_tiles;

  auto filter = Tensor<T>::uninitialized(Shape{16, out_channels, in_channels});
  const std::vector<T> zeros(static_cast<std::size_t>(width), T{});

  // The filter transform, then whole blocks per task: a thread slowed down by another process
  // leaves its blocks to the others.
  winograd_transform_filter(weights, out_channels, in_channels, filter.data());
  const std::int64_t scratch_tiles = std::min(block_tiles, total_tiles);
  std::vector<std::unique_ptr<WinogradScratch<T>>> scratch(
      static_cast<std::size_t>(fpn::current_threads()));
  fpn::detail::parallel_for(blocks, [&](std::int64_t block, int slot) {
    auto& mine = scratch[static_cast<std::size_t>(slot)];
    if (!mine) mine = std::make_unique<WinogradScratch<T>>(tiling, scratch_tiles);
    const std::int64_t first = block * block_tiles;
    winograd_block(tiling, input, filter.data(), bias, activation, zeros.data(), first,
                   std::min(block_tiles, total_tiles - first), *mine, output);
  });
}

}  // namespace fpn::ops::detail
