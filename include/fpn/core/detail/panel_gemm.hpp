// fpn's float GEMM kernel: C[rows, 64] (+)= A[rows, depth] x B[depth, 64], where B is a "panel",
// 64 columns stored row-major ([depth][64], 64-byte aligned) so that every k step reads 256
// contiguous bytes, and A is read row by row with any stride (each element broadcast).
//
// Users: the linear layers (ops/packed_linear.hpp: B is the weight, packed into panels at load;
// A the features) and the convolutions (ops/conv2d.hpp: B is a tile of the input or of its
// gathered patches, written straight into panels; A the weight as torch stores it).
//
// The register tile is 6 rows x 4 packets with AVX-512 (24 of 32 registers accumulate) and
// 6 x 2 packets otherwise, on Eigen's packet types for the compiled target (16 floats with
// AVX-512, 8 with AVX, 4 with SSE2): one code path for every target.
//
// Arithmetic: each output is its previous value (accumulate) or zero, plus the sum over k in
// slices of `panel_depth_slice` consecutive indices, each slice summed in order from zero by
// (fused, where the target has them) multiply-adds and then added. Nothing depends on threads.
#pragma once

#include <algorithm>
#include <cstdint>

#include "fpn/core/detail/eigen.hpp"

namespace fpn::detail {

inline constexpr std::int64_t panel_width = 64;
inline constexpr std::int64_t panel_depth_slice = 256;  // a panel's slice is 64 KiB, in L2
inline constexpr int panel_kernel_rows = 6;

using PanelPacket = typename Eigen::internal::packet_traits<float>::type;
inline constexpr int panel_packet_size = Eigen::internal::packet_traits<float>::size;
inline constexpr int panel_kernel_packets = panel_packet_size >= 16 ? 4 : 2;
inline constexpr std::int64_t panel_kernel_width = panel_kernel_packets * panel_packet_size;
static_assert(panel_width % panel_kernel_width == 0);

// c[r, 0, panel_kernel_width) (+)= sum over k in [0, depth) of a[r * a_stride + k] * b[k * b_stride + :]
// for r in [0, Rows). c: row stride c_stride; b: row stride b_stride (64 in a packed panel, a
// map's row length when the kernel reads a map's columns in place); any alignment.
template <int Rows>
inline void panel_kernel(std::int64_t depth, const float* a, std::int64_t a_stride, const float* b,
                         std::int64_t b_stride, float* c, std::int64_t c_stride, bool accumulate) {
  using namespace Eigen::internal;
  constexpr int V = panel_kernel_packets;
  PanelPacket acc[Rows][V];
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = pset1<PanelPacket>(0.0f);
  }
  for (std::int64_t k = 0; k < depth; ++k) {
    PanelPacket w[V];
    for (int v = 0; v < V; ++v) w[v] = ploadu<PanelPacket>(b + k * b_stride + v * panel_packet_size);
    for (int r = 0; r < Rows; ++r) {
      const PanelPacket x = pset1<PanelPacket>(a[r * a_stride + k]);
      for (int v = 0; v < V; ++v) acc[r][v] = pmadd(x, w[v], acc[r][v]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < V; ++v) {
      float* target = c + r * c_stride + v * panel_packet_size;
      pstoreu(target, accumulate ? padd(ploadu<PanelPacket>(target), acc[r][v]) : acc[r][v]);
    }
  }
}

template <int Rows = panel_kernel_rows>
inline void panel_kernel_rows_upto(int rows, std::int64_t depth, const float* a, std::int64_t a_stride,
                                   const float* b, std::int64_t b_stride, float* c,
                                   std::int64_t c_stride, bool accumulate) {
  if constexpr (Rows > 1) {
    if (rows < Rows) {
      panel_kernel_rows_upto<Rows - 1>(rows, depth, a, a_stride, b, b_stride, c, c_stride, accumulate);
      return;
    }
  }
  panel_kernel<Rows>(depth, a, a_stride, b, b_stride, c, c_stride, accumulate);
}

// Where a GEMM's right-hand side panels are: panel p's row k at first + p * panel_step +
// k * row_stride. Packed panels ([depth][64] each, one after another): panel_step depth * 64,
// row_stride 64. A row-major [depth, columns] matrix read in place, 64 of its columns a panel
// (all of them inside it): panel_step 64, row_stride its row length.
struct PanelLayout {
  const float* first;
  std::int64_t panel_step;
  std::int64_t row_stride;

  static PanelLayout packed(const float* panels, std::int64_t depth) {
    return {panels, depth * panel_width, panel_width};
  }
  static PanelLayout in_place(const float* matrix, std::int64_t row_length) {
    return {matrix, panel_width, row_length};
  }
};

// For each of `count` panels: c[p][0, rows) x [0, 64) (+)= a[rows, depth] (row stride a_stride)
// x panel p; c[p] has row stride c_stride[p] and room for 64 columns in every row. Several panels
// share each slice of a's rows while it is in L1.
inline void panel_multiply(std::int64_t rows, std::int64_t depth, const float* a, std::int64_t a_stride,
                           PanelLayout panels, int count, float* const* c,
                           const std::int64_t* c_stride, bool accumulate) {
  for (std::int64_t k0 = 0; k0 < depth; k0 += panel_depth_slice) {
    const std::int64_t slice = std::min(panel_depth_slice, depth - k0);
    for (std::int64_t r = 0; r < rows; r += panel_kernel_rows) {
      const int kernel_rows = static_cast<int>(std::min<std::int64_t>(panel_kernel_rows, rows - r));
      for (int p = 0; p < count; ++p) {
        const float* panel = panels.first + p * panels.panel_step + k0 * panels.row_stride;
        for (std::int64_t column = 0; column < panel_width; column += panel_kernel_width) {
          panel_kernel_rows_upto(kernel_rows, slice, a + r * a_stride + k0, a_stride, panel + column,
                                 panels.row_stride, c[p] + r * c_stride[p] + column, c_stride[p],
                                 accumulate || k0 > 0);
        }
      }
    }
  }
}

// Packed panels (panel p at panels + p * depth * 64).
inline void panel_multiply(std::int64_t rows, std::int64_t depth, const float* a, std::int64_t a_stride,
                           const float* panels, int count, float* const* c,
                           const std::int64_t* c_stride, bool accumulate) {
  panel_multiply(rows, depth, a, a_stride, PanelLayout::packed(panels, depth), count, c, c_stride,
                 accumulate);
}

// One packed panel.
inline void panel_multiply(std::int64_t rows, std::int64_t depth, const float* a, std::int64_t a_stride,
                           const float* panel, float* c, std::int64_t c_stride, bool accumulate) {
  panel_multiply(rows, depth, a, a_stride, panel, 1, &c, &c_stride, accumulate);
}

inline std::int64_t panel_count(std::int64_t columns) { return (columns + panel_width - 1) / panel_width; }

// Zeroes columns [columns, 64) of every row of a [depth][64] panel.
inline void zero_panel_tail(float* panel, std::int64_t depth, std::int64_t columns) {
  if (columns >= panel_width) return;
  for (std::int64_t k = 0; k < depth; ++k) {
    std::fill(panel + k * panel_width + columns, panel + (k + 1) * panel_width, 0.0f);
  }
}

// Copies x[depth, columns] (row stride x_stride) into panel_count(columns) panels [depth][64]
// (panel p at panels + p * depth * 64), the columns past `columns` zero.
inline void pack_panels(const float* x, std::int64_t depth, std::int64_t columns, std::int64_t x_stride,
                        float* panels) {
  for (std::int64_t p = 0; p < panel_count(columns); ++p) {
    const std::int64_t first = p * panel_width;
    const std::int64_t width = std::min(panel_width, columns - first);
    float* panel = panels + p * depth * panel_width;
    for (std::int64_t k = 0; k < depth; ++k) {
      std::copy_n(x + k * x_stride + first, width, panel + k * panel_width);
    }
    zero_panel_tail(panel, depth, width);
  }
}

}  // namespace fpn::detail
