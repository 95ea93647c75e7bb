// A GEMM split into blocks on fpn's thread pool, each block one sequential Eigen product.
//
// The split depends only on the sizes, never on the thread count, so the result is the same
// bitwise for any number of threads. It cuts the operand that costs less to re-pack: every block
// packs its own part of one operand and the whole of the other, so row blocks re-pack the right-
// hand side and column blocks the left-hand side.
#pragma once

#include <algorithm>
#include <cstdint>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/thread_pool.hpp"

namespace fpn::detail {

// At most this many blocks, each at least min_gemm_block rows or columns (a multiple of 16, the
// widest register block of Eigen's kernels).
inline constexpr std::int64_t max_gemm_blocks = 8;
inline constexpr std::int64_t min_gemm_block = 64;

struct GemmSplit {
  bool by_rows;
  std::int64_t block;   // rows or columns per block
  std::int64_t blocks;
};

inline GemmSplit split_gemm(std::int64_t rows, std::int64_t depth, std::int64_t columns) {
  // Cutting rows re-packs the right-hand side (depth x columns) per block; cutting columns the
  // left-hand side (rows x depth).
  const bool by_rows = rows * depth >= depth * columns;
  const std::int64_t extent = by_rows ? rows : columns;
  const std::int64_t blocks = std::clamp<std::int64_t>(extent / min_gemm_block, 1, max_gemm_blocks);
  std::int64_t block = (extent + blocks - 1) / blocks;
  block = (block + 15) / 16 * 16;
  return {by_rows, block, (extent + block - 1) / block};
}

// out = lhs * rhs, or out += lhs * rhs when accumulate; then epilogue(block of out, its first row,
// its first column) on each block while it is in cache. out, lhs and rhs are Eigen matrices or Maps.
template <typename Out, typename Lhs, typename Rhs, typename Epilogue>
void parallel_gemm(Out& out, const Lhs& lhs, const Rhs& rhs, bool accumulate, Epilogue&& epilogue) {
  const std::int64_t rows = lhs.rows(), depth = lhs.cols(), columns = rhs.cols();
  const GemmSplit split = split_gemm(rows, depth, columns);
  parallel_for_if(split.blocks > 1, split.blocks, [&](std::int64_t index, int) {
    const std::int64_t first = index * split.block;
    const std::int64_t count = std::min(split.block, (split.by_rows ? rows : columns) - first);
    auto run = [&](auto&& out_block, const auto& left, const auto& right) {
      if (accumulate) {
        out_block.noalias() += left * right;
      } else {
        out_block.noalias() = left * right;
      }
      epilogue(out_block, split.by_rows ? first : 0, split.by_rows ? 0 : first);
    };
    if (split.by_rows) {
      run(out.middleRows(first, count), lhs.middleRows(first, count), rhs);
    } else {
      run(out.middleCols(first, count), lhs, rhs.middleCols(first, count));
    }
  });
}

template <typename Out, typename Lhs, typename Rhs>
void parallel_gemm(Out& out, const Lhs& lhs, const Rhs& rhs, bool accumulate = false) {
  parallel_gemm(out, lhs, rhs, accumulate, [](auto&&, std::int64_t, std::int64_t) {});
}

}  // namespace fpn::detail
