// Per-thread scratch buffers that grow and are kept: the convolutions' temporaries (im2col
// columns, Winograd's transformed tiles and products) touch fresh pages once per thread instead of
// on every call -- for a large allocation the allocator maps new memory each time, and faulting it
// in cost Mask R-CNN R50-FPN more than a tenth of its time. They hold what the largest call needed
// (a few MB per thread, bounded by the ops' tile budgets) until the thread ends.
//
// Each slot is one buffer per thread; an op uses its own slots, so it may call an op that uses
// others. Contents do not survive the next call that uses the same slot on the same thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "fpn/core/tensor.hpp"

namespace fpn::detail {

enum class ScratchSlot : std::size_t { conv_columns, winograd_input, winograd_products, count };

// At least `count` elements of T, 64-byte aligned, uninitialised.
template <typename T>
T* scratch_buffer(ScratchSlot slot, std::int64_t count) {
  struct Buffer {
    std::unique_ptr<std::byte[], AlignedFree> data;
    std::size_t bytes = 0;
  };
  thread_local std::array<Buffer, static_cast<std::size_t>(ScratchSlot::count)> buffers;
  Buffer& buffer = buffers[static_cast<std::size_t>(slot)];
  const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
  if (bytes > buffer.bytes) {
    buffer.data.reset();  // the old buffer goes before the new one comes
    buffer.data.reset(aligned_allocate<std::byte>(static_cast<std::int64_t>(bytes)));
    buffer.bytes = bytes;
  }
  return reinterpret_cast<T*>(buffer.data.get());
}

}  // namespace fpn::detail
