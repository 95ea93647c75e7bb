// Tensor<T>: a dense, contiguous, row-major tensor that owns 64-byte aligned storage, and
// TensorView<T>: the same layout borrowed from someone else's storage (T may be const).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>  // madvise: huge pages for large tensors (see detail::aligned_allocate)
#endif

#include "fpn/core/errors.hpp"
#include "fpn/core/shape.hpp"

namespace fpn {

template <typename T>
concept tensor_element = std::is_arithmetic_v<T>;

// A borrowed, contiguous tensor: a pointer, a shape and nothing else. Cheap to copy.
template <typename T>
class TensorView {
 public:
  using value_type = std::remove_const_t<T>;

  TensorView() = default;
  TensorView(T* data, Shape shape) : data_(data), shape_(shape) {}
  // A view of mutable data converts to a view of const data.
  template <typename U>
    requires std::is_same_v<const U, T> && (!std::is_same_v<U, T>)
  TensorView(TensorView<U> other) : data_(other.data()), shape_(other.shape()) {}

  T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  std::size_t rank() const { return shape_.rank(); }
  std::int64_t dim(std::size_t axis) const { return shape_[axis]; }
  std::int64_t numel() const { return shape_.numel(); }
  std::span<T> span() const { return {data_, static_cast<std::size_t>(numel())}; }

  // The index-th slice along axis 0, e.g. one image [C, H, W] of a batch [N, C, H, W],
  // kept at full rank as [1, C, H, W].
  TensorView<T> slice0(std::int64_t index) const {
    FPN_ASSERT(rank() >= 1 && index >= 0 && index < dim(0));
    std::array<std::int64_t, Shape::max_rank> dims{};
    std::ranges::copy(shape_.dims(), dims.begin());
    dims[0] = 1;
    const std::int64_t stride = dim(0) == 0 ? 0 : numel() / dim(0);
    return {data_ + index * stride, Shape(std::span(dims.data(), rank()))};
  }

  // Row-major element access with up to four indices (debug-checked).
  T& at(std::int64_t i0) const { return data_[offset({i0})]; }
  T& at(std::int64_t i0, std::int64_t i1) const { return data_[offset({i0, i1})]; }
  T& at(std::int64_t i0, std::int64_t i1, std::int64_t i2) const {
    return data_[offset({i0, i1, i2})];
  }
  T& at(std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) const {
    return data_[offset({i0, i1, i2, i3})];
  }

 private:
  std::int64_t offset(std::initializer_list<std::int64_t> index) const {
    FPN_ASSERT(index.size() == rank());
    std::int64_t flat = 0;
    std::size_t axis = 0;
    for (std::int64_t i : index) {
      FPN_ASSERT(i >= 0 && i < shape_[axis]);
      flat = flat * shape_[axis++] + i;
    }
    return flat;
  }

  T* data_ = nullptr;
  Shape shape_;
};

namespace detail {

// Storage is aligned for the widest SIMD loads (AVX-512) and for Eigen's aligned maps.
inline constexpr std::size_t tensor_alignment = 64;

// Large tensors (feature maps, their im2col panels, the box head's weights) go on transparent
// huge pages where Linux offers them (THP "madvise" or "always"): a 2 MiB page costs one fault
// instead of 512, and the maps a detector walks (RoIAlign's gathers over P2, a 1x1 conv over a
// 400x608 map) stay within the TLB's reach. On a fresh process every page of every map is a
// first touch, and on virtual machines a fault is several microseconds: this halves
// MobileNetV3-FPN's time at 800x1216. The storage is 2 MiB aligned and rounded up to whole huge
// pages, so the hint covers only memory the tensor owns. Define FPN_NO_HUGE_PAGES to keep 4 KiB
// pages (the hint is also skipped where THP is off: madvise then fails, harmlessly).
inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;
inline constexpr std::size_t huge_page_min_bytes = std::size_t{4} << 20;

// Freed huge-page blocks, kept for the next allocation of the same size: the maps of a detector
// come in few sizes (every block of a ResNet stage makes the same three), so most allocations of a
// call, and all of the next call's on a same-sized image, reuse memory that is already mapped
// instead of faulting in and zeroing fresh pages (on this project's VM, 12% of Faster R-CNN
// R50-FPN's time was the kernel clearing pages).
//
// It never makes the peak memory higher: an allocation that finds no block of its size (whole
// huge pages, up to one page more) first returns every cached block to the system, so the
// mapped total right after it is what it would be without the cache. In between, the cached
// blocks are mapped memory that the cache-less code would already have returned, but never more
// than was mapped at an earlier moment (a free keeps what was mapped; a reuse adds nothing), so
// the peak is the cache-less peak. Between calls it holds at most what the last call had
// mapped; release_cached_memory() returns it. Define FPN_NO_BLOCK_CACHE to free blocks at once.
class HugeBlockCache {
 public:
  // A cached block of at least `bytes` and at most one huge page more, or nullptr (after
  // returning every cached block to the system). *size: the block's size.
  void* take(std::size_t bytes, std::size_t* size) {
    std::vector<Block> released;
    {
      const std::lock_guard lock(mutex_);
      auto best = blocks_.end();
      for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
        if (it->bytes >= bytes && it->bytes <= bytes + slack &&
            (best == blocks_.end() || it->bytes < best->bytes)) {
          best = it;
        }
      }
      if (best != blocks_.end()) {
        const Block block = *best;
        blocks_.erase(best);
        *size = block.bytes;
        return block.pointer;
      }
      released.swap(blocks_);
    }
    for (const Block& block : released) free_block(block.pointer);
    return nullptr;
  }

  void give(void* pointer, std::size_t bytes) {
#if defined(FPN_NO_BLOCK_CACHE)
    free_block(pointer);
    (void)bytes;
#else
    const std::lock_guard lock(mutex_);
    blocks_.push_back({pointer, bytes});
#endif
  }

  std::size_t cached_bytes() const {
    const std::lock_guard lock(mutex_);
    std::size_t total = 0;
    for (const Block& block : blocks_) total += block.bytes;
    return total;
  }

  void release() {
    std::vector<Block> released;
    {
      const std::lock_guard lock(mutex_);
      released.swap(blocks_);
    }
    for (const Block& block : released) free_block(block.pointer);
  }

  static void free_block(void* pointer) { ::operator delete(pointer, std::align_val_t{huge_page_bytes}); }

  // The process's one cache. Never destroyed, so tensors freed during static destruction still
  // find it; the blocks it holds at exit stay reachable from it (not leaks).
  static HugeBlockCache& instance() {
    static HugeBlockCache* const cache = new HugeBlockCache();
    return *cache;
  }

  static constexpr std::size_t slack = huge_page_bytes;

 private:
  struct Block {
    void* pointer;
    std::size_t bytes;
  };
  mutable std::mutex mutex_;
  std::vector<Block> blocks_;
};

// A huge-page block of at least `bytes` (whole huge pages): a cached one if there is one of
// about that size, else fresh memory with the huge-page hint. *size: the block's size.
inline void* huge_block(std::size_t bytes, std::size_t* size) {
  const std::size_t whole_pages = (bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
  if (void* cached = HugeBlockCache::instance().take(whole_pages, size)) return cached;
  void* pointer = ::operator new(whole_pages, std::align_val_t{huge_page_bytes});
#if defined(__linux__)
  ::madvise(pointer, whole_pages, MADV_HUGEPAGE);
#endif
  *size = whole_pages;
  return pointer;
}

// One huge-page block shared by several mid-sized tensors (SlabArena): freed, through the
// HugeBlockCache, when the last of them is.
class Slab {
 public:
  static Slab* create(std::size_t bytes) {
    std::size_t size = 0;
    void* base = huge_block(bytes, &size);
    try {
      return new Slab(static_cast<unsigned char*>(base), size);
    } catch (...) {
      HugeBlockCache::free_block(base);
      throw;
    }
  }
  unsigned char* base() const { return base_; }
  std::size_t bytes() const { return bytes_; }
  void retain() { references_.fetch_add(1, std::memory_order_relaxed); }
  void release() {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      HugeBlockCache::instance().give(base_, bytes_);
      delete this;
    }
  }

 private:
  Slab(unsigned char* base, std::size_t bytes) : base_(base), bytes_(bytes) {}
  unsigned char* base_;
  std::size_t bytes_;
  std::atomic<std::int64_t> references_{1};  // the creator's (the arena's) reference
};

struct AlignedFree {
  std::size_t alignment = tensor_alignment;
  std::size_t bytes = 0;  // a huge-page block's size: it goes back to the HugeBlockCache
  Slab* slab = nullptr;   // or the slab the tensor was carved from
  void operator()(void* pointer) const {
    if (slab != nullptr) {
      slab->release();
      return;
    }
    if (bytes != 0) {
      HugeBlockCache::instance().give(pointer, bytes);
      return;
    }
    ::operator delete(pointer, std::align_val_t{alignment});
  }
};

template <typename T>
using AlignedStorage = std::unique_ptr<T[], AlignedFree>;

// Where a model's weights go while it loads (nn::WeightReader binds one around each read): the
// mid-sized tensors, too small for a huge-page block of their own (64 KiB to 4 MiB: most of a
// ResNet's convs), are carved one after another out of 8 MiB huge-page slabs instead of each
// taking 4 KiB pages from the heap. A model's ~170 MB then costs ~90 page faults instead of
// ~40,000; on this project's virtual machines a 4 KiB fault costs ~15 us, and loading Faster
// R-CNN R50-FPN took 0.6 s, mostly faults. A slab is freed when its last tensor is (so one
// tensor kept from a model keeps its slab); tensors outside [slab_min_bytes, huge_page_min_bytes)
// and allocations on threads with no arena bound are not affected. Thread-safe.
class SlabArena {
 public:
  static constexpr std::size_t slab_bytes = std::size_t{8} << 20;
  static constexpr std::size_t slab_min_bytes = std::size_t{64} << 10;

  SlabArena() = default;
  SlabArena(const SlabArena&) = delete;
  SlabArena& operator=(const SlabArena&) = delete;
  ~SlabArena() {
    for (const Open& open : open_) open.slab->release();
  }

  // `bytes` from the first open slab with room for it (first fit, so that few partly used huge
  // pages are left), or from a new slab; the storage holds a reference to its slab.
  template <typename T>
  AlignedStorage<T> allocate(std::size_t bytes) {
    const std::size_t rounded = (bytes + tensor_alignment - 1) / tensor_alignment * tensor_alignment;
    const std::lock_guard lock(mutex_);
    auto it = open_.begin();
    while (it != open_.end() && it->used + rounded > it->slab->bytes()) ++it;
    if (it == open_.end()) {
      open_.reserve(open_.size() + 1);  // before the slab exists: no leak if this throws
      open_.push_back({Slab::create(slab_bytes), 0});
      it = open_.end() - 1;
    }
    T* pointer = reinterpret_cast<T*>(it->slab->base() + it->used);
    it->used += rounded;
    it->slab->retain();
    AlignedStorage<T> storage(pointer, AlignedFree{tensor_alignment, 0, it->slab});
    if (it->slab->bytes() - it->used < slab_min_bytes) {  // full: no tensor of ours fits any more
      it->slab->release();
      open_.erase(it);
    }
    return storage;
  }

  // The arena this thread's allocations come from, or nullptr.
  static SlabArena*& bound() {
    thread_local SlabArena* arena = nullptr;
    return arena;
  }

 private:
  struct Open {
    Slab* slab;
    std::size_t used;
  };
  std::mutex mutex_;
  std::vector<Open> open_;  // slabs with room left, each holding the arena's reference
};

// Binds `arena` to this thread for the scope's lifetime (restoring the previous binding).
class SlabArenaScope {
 public:
  explicit SlabArenaScope(SlabArena* arena) : previous_(SlabArena::bound()) { SlabArena::bound() = arena; }
  ~SlabArenaScope() { SlabArena::bound() = previous_; }
  SlabArenaScope(const SlabArenaScope&) = delete;
  SlabArenaScope& operator=(const SlabArenaScope&) = delete;

 private:
  SlabArena* previous_;
};

template <typename T>
AlignedStorage<T> aligned_allocate(std::int64_t count) {
  if (count == 0) return nullptr;
  if (count < 0 || static_cast<std::uint64_t>(count) >
                       (std::numeric_limits<std::size_t>::max() - huge_page_bytes) / sizeof(T)) {
    throw std::bad_alloc();
  }
  const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
#if defined(__linux__) && !defined(FPN_NO_HUGE_PAGES)
  if (bytes >= huge_page_min_bytes) {
    std::size_t size = 0;
    void* pointer = huge_block(bytes, &size);
    return AlignedStorage<T>(static_cast<T*>(pointer), AlignedFree{huge_page_bytes, size});
  }
  if (bytes >= SlabArena::slab_min_bytes) {
    if (SlabArena* arena = SlabArena::bound()) return arena->template allocate<T>(bytes);
  }
#endif
  return AlignedStorage<T>(static_cast<T*>(::operator new(bytes, std::align_val_t{tensor_alignment})),
                           AlignedFree{tensor_alignment});
}

}  // namespace detail

// Returns to the system the large tensor blocks fpn keeps for reuse after they are freed
// (detail::HugeBlockCache: at most what the last detect call had mapped), e.g. when a program
// that ran a detector will not run one again for a while.
inline void release_cached_memory() { detail::HugeBlockCache::instance().release(); }

// An owning tensor with value semantics: copies are deep, moves are cheap.
template <tensor_element T>
class Tensor {
 public:
  using value_type = T;

  Tensor() = default;
  // Zero-filled.
  explicit Tensor(Shape shape) : Tensor(uninitialized(shape)) { fill(T{}); }
  Tensor(Shape shape, T value) : Tensor(uninitialized(shape)) { fill(value); }

  // Storage left uninitialised: for outputs an op overwrites completely.
  static Tensor uninitialized(Shape shape) {
    Tensor tensor;
    tensor.storage_ = detail::aligned_allocate<T>(shape.numel());
    tensor.shape_ = shape;
    return tensor;
  }
  static Tensor from_span(Shape shape, std::span<const T> values) {
    if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
      throw ShapeError("Tensor: " + std::to_string(values.size()) + " values cannot fill shape " +
                       shape.str());
    }
    Tensor tensor = uninitialized(shape);
    std::ranges::copy(values, tensor.data());
    return tensor;
  }

  Tensor(const Tensor& other) : Tensor(uninitialized(other.shape_)) {
    std::copy_n(other.data(), other.numel(), data());
  }
  Tensor& operator=(const Tensor& other) {
    if (this != &other) *this = Tensor(other);
    return *this;
  }
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  T* data() { return storage_.get(); }
  const T* data() const { return storage_.get(); }
  const Shape& shape() const { return shape_; }
  std::size_t rank() const { return shape_.rank(); }
  std::int64_t dim(std::size_t axis) const { return shape_[axis]; }
  std::int64_t numel() const { return shape_.numel(); }
  bool empty() const { return numel() == 0; }
  std::span<T> span() { return {data(), static_cast<std::size_t>(numel())}; }
  std::span<const T> span() const { return {data(), static_cast<std::size_t>(numel())}; }

  TensorView<T> view() { return {data(), shape_}; }
  TensorView<const T> view() const { return {data(), shape_}; }
  operator TensorView<T>() { return view(); }
  operator TensorView<const T>() const { return view(); }

  template <typename... Index>
  T& at(Index... index) { return view().at(static_cast<std::int64_t>(index)...); }
  template <typename... Index>
  const T& at(Index... index) const { return view().at(static_cast<std::int64_t>(index)...); }

  // Same elements, new shape with the same element count.
  Tensor reshaped(Shape shape) && {
    if (shape.numel() != numel()) {
      detail::throw_shape_mismatch("Tensor::reshaped", "element counts must match",
                                   shape_.dims(), shape.dims());
    }
    shape_ = shape;
    return std::move(*this);
  }

  void fill(T value) { std::fill_n(data(), numel(), value); }

 private:
  detail::AlignedStorage<T> storage_;
  Shape shape_{0};
};

}  // namespace fpn
