// Tensor<T>: a dense, contiguous, row-major tensor that owns 64-byte aligned storage, and
// TensorView<T>: the same layout borrowed from someone else's storage (T may be const).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <atomic>
#include <cstdio>
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

#if defined(__SANITIZE_ADDRESS__)
#define FPN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FPN_ASAN 1
#endif
#endif
#if defined(FPN_ASAN)
#include <sanitizer/asan_interface.h>  // free pooled memory stays poisoned: a use after free is caught
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
// MobileNetV3-FPN's time at 800x1216. Such tensors are carved from regions of whole huge pages
// that hold nothing but tensors (HugeBlockCache), so the hint covers only tensor memory; a tensor
// starts on a pool_granularity boundary. Define FPN_NO_HUGE_PAGES to keep 4 KiB pages (the hint
// is also skipped where THP is off: madvise then fails, harmlessly).
inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;
inline constexpr std::size_t huge_page_min_bytes = std::size_t{4} << 20;
// Mid-sized tensors (64 KiB up to huge_page_min_bytes) outside a model's load are carved from the
// same huge-page regions in multiples of this.
inline constexpr std::size_t pool_granularity = std::size_t{64} << 10;

// Freed huge-page memory, kept for the next tensors. A detect call's tensors come and go in many
// sizes (Mask R-CNN R50-FPN at 800x1216 allocates ~1.7 GB of tensors of 4 MiB and more a call,
// never more than ~125 MB at once, and many of 64 KiB to 4 MiB: Winograd's scratch, the upper
// levels' maps), and every page of fresh memory costs a fault and the kernel zeroing it (on this
// project's VM about 2 ms per MB the first time, ~15 us per 4 KiB fault). So tensors of 64 KiB and
// more (outside a model's load, see SlabArena) are carved from regions of whole huge pages: a
// freed tensor's range goes back to its region's free ranges, merged with free neighbours; a new
// tensor takes the smallest free range that holds it (4 MiB and more in whole huge pages, smaller
// ones in steps of pool_granularity) and maps a fresh region only when none does. Where this
// replaced a cache of whole blocks (one freed block reused only by a tensor of its size) and
// glibc's heap for the mid-sized tensors, that Mask R-CNN call mapped ~590 MB of fresh blocks and
// took ~10,000 faults in the heap, and the process grew by 170, 20 and 70 MB over three calls;
// now the first call maps ~140 MB, later calls nothing, and the process stays at its first size
// (323 MB, weights included). Its whole process took 0.91x the time.
//
// Memory stays bounded: a tensor that needs a fresh region first returns every region with
// nothing in use, so what stays mapped is what is in use plus the free ranges of regions that
// still hold a live tensor. Between calls it holds what the last call mapped;
// release_cached_memory() returns every free page. Regions are mapped from the system directly
// (glibc's heap, once it has raised its mmap threshold, would keep a freed region's pages).
// Define FPN_NO_BLOCK_CACHE to give every large tensor a fresh region, returned when it is freed
// (mid-sized ones then come from the heap). Thread-safe.
class HugeBlockCache {
 public:
  // Under AddressSanitizer the free ranges are poisoned, so that a use of a freed tensor's memory
  // is reported as it would be without the pool.
  static void poison([[maybe_unused]] const void* pointer, [[maybe_unused]] std::size_t bytes) {
#if defined(FPN_ASAN)
    ASAN_POISON_MEMORY_REGION(pointer, bytes);
#endif
  }
  static void unpoison([[maybe_unused]] const void* pointer, [[maybe_unused]] std::size_t bytes) {
#if defined(FPN_ASAN)
    ASAN_UNPOISON_MEMORY_REGION(pointer, bytes);
#endif
  }

  // `bytes` (a multiple of pool_granularity): carved from the smallest free range that holds them,
  // else from the start of a fresh region (whole huge pages, with the huge-page hint).
  void* take(std::size_t bytes) {
    {
      const std::lock_guard lock(mutex_);
#if !defined(FPN_NO_BLOCK_CACHE)
      Region* best_region = nullptr;
      std::size_t best = 0;
      for (Region& region : regions_) {
        for (std::size_t i = 0; i < region.free.size(); ++i) {
          if (region.free[i].size >= bytes &&
              (best_region == nullptr || region.free[i].size < best_region->free[best].size)) {
            best_region = &region;
            best = i;
          }
        }
      }
      if (best_region != nullptr) {
        // Room for the free ranges give() may have to record, before anything changes: a region
        // with n tensors in use has at most n + 1 free ranges.
        best_region->free.reserve(best_region->in_use + 2);
        Range& range = best_region->free[best];
        void* pointer = best_region->base + range.offset;
        range.offset += bytes;
        range.size -= bytes;
        if (range.size == 0) best_region->free.erase(best_region->free.begin() + static_cast<std::ptrdiff_t>(best));
        ++best_region->in_use;
        unpoison(pointer, bytes);
        return pointer;
      }
#endif
      // A fresh region: first every region with nothing in use goes back to the system.
      free_unused_regions();
    }
    const std::size_t region_bytes = (bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
    Region region{map_region(region_bytes), region_bytes, 1, {}};
    unsigned char* const base = region.base;
    try {
      region.free.reserve(2);
      if (region_bytes > bytes) {
        region.free.push_back({bytes, region_bytes - bytes});
        poison(base + bytes, region_bytes - bytes);
      }
      const std::lock_guard lock(mutex_);
      regions_.push_back(std::move(region));
    } catch (...) {
      free_block(base, region_bytes);
      throw;
    }
#if defined(__linux__)
    ::madvise(base, region_bytes, MADV_HUGEPAGE);
#endif
    return base;
  }

  // Takes back `bytes` at `pointer`, which take() gave out. Allocates nothing (a deleter calls it).
  // A range not given out, or given back twice, would corrupt the pool: that aborts, in every build.
  void give(void* pointer, std::size_t bytes) noexcept {
    unsigned char* const at = static_cast<unsigned char*>(pointer);
    std::pair<void*, std::size_t> released{nullptr, 0};
    {
      const std::lock_guard lock(mutex_);
      const auto region = std::ranges::find_if(
          regions_, [&](const Region& r) { return at >= r.base && at < r.base + r.bytes; });
      if (region == regions_.end() || region->in_use == 0 ||
          bytes > region->bytes - static_cast<std::size_t>(at - region->base)) {
        corrupted();
      }
      std::vector<Range>& free = region->free;
      Range range{static_cast<std::size_t>(at - region->base), bytes};
      auto next = std::ranges::find_if(free, [&](const Range& r) { return r.offset > range.offset; });
      if ((next != free.end() && range.offset + range.size > next->offset) ||
          (next != free.begin() && std::prev(next)->offset + std::prev(next)->size > range.offset)) {
        corrupted();  // overlaps a free range
      }
      --region->in_use;
      poison(at, bytes);
      if (next != free.end() && next->offset == range.offset + range.size) {  // merge the next
        range.size += next->size;
        next = free.erase(next);
      }
      if (next != free.begin() && std::prev(next)->offset + std::prev(next)->size == range.offset) {
        std::prev(next)->size += range.size;  // merge into the previous
      } else {
        free.insert(next, range);  // within the capacity take() reserved
      }
#if defined(FPN_NO_BLOCK_CACHE)
      if (region->in_use == 0) {
        released = {region->base, region->bytes};
        regions_.erase(region);
      }
#endif
    }
    if (released.first != nullptr) free_block(released.first, released.second);
  }

  // Free bytes in the regions held (after release(), the free ranges of regions still in use
  // count though their pages went back: they stay reserved).
  std::size_t cached_bytes() const {
    const std::lock_guard lock(mutex_);
    std::size_t total = 0;
    for (const Region& region : regions_) {
      for (const Range& range : region.free) total += range.size;
    }
    return total;
  }

  // Returns every region with nothing in use to the system, and the free pages of the others
  // (which stay reserved: fresh pages when next used).
  void release() noexcept {
    const std::lock_guard lock(mutex_);
    free_unused_regions();
#if defined(__linux__)
    for (const Region& region : regions_) {
      for (const Range& range : region.free) ::madvise(region.base + range.offset, range.size, MADV_DONTNEED);
    }
#endif
  }

  // A fresh region of `bytes` (whole huge pages), huge-page aligned.
  static unsigned char* map_region(std::size_t bytes) {
#if defined(__linux__)
    if (bytes > std::numeric_limits<std::size_t>::max() - huge_page_bytes) throw std::bad_alloc();
    const std::size_t span = bytes + huge_page_bytes;  // room to start on a huge page
    void* const mapped = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) throw std::bad_alloc();
    unsigned char* const start = static_cast<unsigned char*>(mapped);
    const std::size_t lead =
        (huge_page_bytes - reinterpret_cast<std::uintptr_t>(start) % huge_page_bytes) % huge_page_bytes;
    if (lead != 0) ::munmap(start, lead);
    if (span - lead > bytes) ::munmap(start + lead + bytes, span - lead - bytes);
    return start + lead;
#else
    return static_cast<unsigned char*>(::operator new(bytes, std::align_val_t{huge_page_bytes}));
#endif
  }

  static void free_block(void* pointer, std::size_t bytes) noexcept {
    unpoison(pointer, bytes);
#if defined(__linux__)
    ::munmap(pointer, bytes);
#else
    ::operator delete(pointer, std::align_val_t{huge_page_bytes});
#endif
  }

  // The process's one cache. Never destroyed, so tensors freed during static destruction still
  // find it; the regions it holds at exit stay reachable from it (not leaks).
  static HugeBlockCache& instance() {
    static HugeBlockCache* const cache = new HugeBlockCache();
    return *cache;
  }

 private:
  struct Range {
    std::size_t offset;
    std::size_t size;
  };
  struct Region {
    unsigned char* base;
    std::size_t bytes;
    std::size_t in_use;        // tensors carved from it and not yet given back
    std::vector<Range> free;   // by offset, disjoint and never adjacent
  };
  // Unmaps every region with nothing in use (under the lock).
  void free_unused_regions() noexcept {
    std::erase_if(regions_, [](const Region& region) {
      if (region.in_use != 0) return false;
      free_block(region.base, region.bytes);
      return true;
    });
  }

  [[noreturn]] static void corrupted() noexcept {
    std::fputs("fpn: a tensor's memory was given back twice, or was not taken from fpn's pool\n", stderr);
    std::abort();
  }

  mutable std::mutex mutex_;
  std::vector<Region> regions_;
};

// A huge-page block of at least `bytes` (whole huge pages, from the HugeBlockCache). *size: the
// block's size.
inline void* huge_block(std::size_t bytes, std::size_t* size) {
  const std::size_t whole_pages = (bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
  *size = whole_pages;
  return HugeBlockCache::instance().take(whole_pages);
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
      HugeBlockCache::instance().give(base, size);
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
  std::size_t bytes = 0;  // a range carved by the HugeBlockCache: its size, to give it back
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
#if !defined(FPN_NO_BLOCK_CACHE)  // else a region of whole huge pages each: the heap instead
    const std::size_t size = (bytes + pool_granularity - 1) / pool_granularity * pool_granularity;
    return AlignedStorage<T>(static_cast<T*>(HugeBlockCache::instance().take(size)),
                             AlignedFree{huge_page_bytes, size});
#endif
  }
#endif
  return AlignedStorage<T>(static_cast<T*>(::operator new(bytes, std::align_val_t{tensor_alignment})),
                           AlignedFree{tensor_alignment});
}

}  // namespace detail

// Returns to the system the memory of freed tensors that fpn keeps for reuse (detail::HugeBlockCache:
// at most what the last detect call had mapped), e.g. when a program that ran a detector will not
// run one again for a while.
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
