// fpn's threads: a small pool on std::jthread that belongs to the library, so that a program which
// includes fpn gets the same parallel speed as fpn's own binaries, with no compiler flag.
//
// Why not OpenMP: it would need -fopenmp on the user's targets (a flag the library would force on
// them), its idle workers spin (GOMP_SPINCOUNT), so another busy process on the machine makes
// every parallel region wait for a descheduled spinner, and concurrent calls from several user
// threads each open a team of their own (oversubscription). Here
//   - one process-wide pool, sized to the CPUs this process may run on; callers from any number
//     of threads share its workers, so the total stays bounded;
//   - the calling thread works too, and idle workers sleep on a condition variable;
//   - work is split into many more tasks than threads and taken dynamically, so a thread slowed
//     down by another process leaves its share to the others;
//   - how work is split never depends on the thread count, so results are bitwise identical
//     whatever the number of threads.
//
//   fpn::ThreadLimit limit(2);   // this thread's fpn calls use at most 2 threads until scope end
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"  // aligned_allocate, for SlotScratch

namespace fpn {

// The most threads one call may ask for; more is a user error, not a wish.
inline constexpr int max_threads = 1024;

// CPUs this process may run on: its affinity mask where the OS has one (taskset, cgroups'
// cpusets), else std::thread::hardware_concurrency(); at least 1.
inline int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
#endif
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

namespace detail {

// Eigen parallelises a GEMM with OpenMP when the user's program is built with -fopenmp. fpn's
// tasks already run in parallel, so inside a task Eigen must run sequentially: this thread's
// OpenMP team size is 1 for the scope.
class SequentialOpenMp {
 public:
#if defined(_OPENMP)
  SequentialOpenMp() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SequentialOpenMp() { omp_set_num_threads(saved_); }

 private:
  int saved_;
#else
  SequentialOpenMp() = default;
#endif
 public:
  SequentialOpenMp(const SequentialOpenMp&) = delete;
  SequentialOpenMp& operator=(const SequentialOpenMp&) = delete;
};

// Per thread: the limit set by ThreadLimit (0: the pool's size) and whether the thread is inside
// a task (where a nested parallel_for runs inline).
struct ThreadState {
  int limit = 0;
  bool in_task = false;
};
inline ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

}  // namespace detail

class ThreadPool {
 public:
  // threads: how many threads a call may use at most, the caller included (0: available_cpus()).
  explicit ThreadPool(int threads = 0) {
    if (threads < 0 || threads > max_threads) {
      throw ArgumentError("ThreadPool: threads must be in [0, " + std::to_string(max_threads) +
                          "] (0: one per available CPU), got " + std::to_string(threads));
    }
    default_threads_ = threads == 0 ? available_cpus() : threads;
  }
  ~ThreadPool() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    // std::jthread joins.
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // The process-wide pool every fpn call uses. Workers start when first needed.
  static ThreadPool& global() {
    static ThreadPool pool;
    return pool;
  }

  // Threads a call uses when nothing limits it.
  int default_threads() const { return default_threads_; }

  // Runs body(index, slot) for every index in [0, count) on at most `threads` threads (the
  // caller among them) and returns when all are done. `slot` in [0, threads) names the thread
  // within this call, for per-thread scratch. The first exception a task throws is rethrown here
  // (tasks not yet started are skipped). Called from inside a task, it runs inline.
  template <typename Body>
  void parallel_for(std::int64_t count, int threads, Body&& body) {
    if (count <= 0) return;
    threads = static_cast<int>(std::min<std::int64_t>(std::max(threads, 1), count));
    detail::ThreadState& state = detail::thread_state();
    if (threads == 1 || state.in_task) {
      for (std::int64_t index = 0; index < count; ++index) body(index, 0);
      return;
    }
    using BodyType = std::remove_reference_t<Body>;
    Job job;
    job.count = count;
    job.max_slots = threads;
    job.context = const_cast<void*>(static_cast<const void*>(std::addressof(body)));
    job.invoke = [](void* context, std::int64_t index, int slot) {
      (*static_cast<BodyType*>(context))(index, slot);
    };
    ensure_workers(threads - 1);
    {
      const std::lock_guard lock(mutex_);
      jobs_.push_back(&job);
    }
    for (int i = 1; i < threads; ++i) wake_.notify_one();
    run(job, 0);
    {
      std::unique_lock lock(mutex_);
      // Every index is claimed: no worker may join any more, and those inside finish theirs.
      std::erase(jobs_, &job);
      done_.wait(lock, [&] { return job.active_workers == 0; });
    }
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  struct Job {
    void (*invoke)(void*, std::int64_t, int) = nullptr;
    void* context = nullptr;
    std::int64_t count = 0;
    int max_slots = 1;
    std::atomic<std::int64_t> next{0};
    std::atomic<bool> failed{false};
    int slots_taken = 1;     // slot 0 is the caller's; guarded by the pool's mutex
    int active_workers = 0;  // guarded by the pool's mutex
    std::mutex error_mutex;
    std::exception_ptr error;
  };

  static void run(Job& job, int slot) {
    detail::ThreadState& state = detail::thread_state();
    const bool was_in_task = state.in_task;
    state.in_task = true;
    [[maybe_unused]] const detail::SequentialOpenMp sequential;
    while (!job.failed.load(std::memory_order_relaxed)) {
      const std::int64_t index = job.next.fetch_add(1, std::memory_order_relaxed);
      if (index >= job.count) break;
      try {
        job.invoke(job.context, index, slot);
      } catch (...) {
        const std::lock_guard lock(job.error_mutex);
        if (!job.error) job.error = std::current_exception();
        job.failed.store(true, std::memory_order_relaxed);
      }
    }
    state.in_task = was_in_task;
  }

  void ensure_workers(int wanted) {
    const std::lock_guard lock(mutex_);
    while (static_cast<int>(workers_.size()) < wanted) {
      workers_.emplace_back([this] { work(); });
    }
  }

  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      Job& job = *jobs_.front();
      const int slot = job.slots_taken++;
      // The last slot, or nothing left to claim: later workers leave this job alone.
      if (job.slots_taken >= job.max_slots ||
          job.next.load(std::memory_order_relaxed) >= job.count) {
        jobs_.pop_front();
      }
      if (slot >= job.max_slots) continue;
      ++job.active_workers;
      lock.unlock();
      run(job, slot);
      lock.lock();
      if (--job.active_workers == 0) done_.notify_all();
    }
  }

  int default_threads_ = 1;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::deque<Job*> jobs_;
  bool stopping_ = false;
  std::vector<std::jthread> workers_;  // last member: joined before the rest is destroyed
};

// Limits the threads of every fpn call made by this thread until the end of the scope.
// threads: 1..max_threads, or 0 for the pool's default (one per available CPU).
class ThreadLimit {
 public:
  explicit ThreadLimit(int threads) : saved_(detail::thread_state().limit) {
    if (threads < 0 || threads > max_threads) {
      throw ArgumentError("ThreadLimit: threads must be in [0, " + std::to_string(max_threads) +
                          "] (0: one per available CPU), got " + std::to_string(threads));
    }
    detail::thread_state().limit = threads;
  }
  ~ThreadLimit() { detail::thread_state().limit = saved_; }
  ThreadLimit(const ThreadLimit&) = delete;
  ThreadLimit& operator=(const ThreadLimit&) = delete;

 private:
  int saved_;
};

// Threads an fpn call made from this thread would use: 1 inside a task, else the ThreadLimit in
// force, else the pool's default.
inline int current_threads() {
  const detail::ThreadState& state = detail::thread_state();
  if (state.in_task) return 1;
  return state.limit > 0 ? state.limit : ThreadPool::global().default_threads();
}

namespace detail {

// body(index, slot) for index in [0, count) on current_threads() threads of the global pool.
template <typename Body>
void parallel_for(std::int64_t count, Body&& body) {
  const int threads = current_threads();
  if (threads <= 1 || count <= 1) {
    for (std::int64_t index = 0; index < count; ++index) body(index, 0);
    return;
  }
  ThreadPool::global().parallel_for(count, threads, std::forward<Body>(body));
}

// parallel_for when the work is worth a wake-up of the pool, else inline.
template <typename Body>
void parallel_for_if(bool worth_it, std::int64_t count, Body&& body) {
  if (!worth_it) {
    for (std::int64_t index = 0; index < count; ++index) body(index, 0);
    return;
  }
  parallel_for(count, std::forward<Body>(body));
}

// body(begin, end) over [0, total) in chunks of `grain` (the last one shorter): the chunks do not
// depend on the thread count.
template <typename Body>
void parallel_for_chunks(std::int64_t total, std::int64_t grain, Body&& body) {
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = (total + grain - 1) / grain;
  parallel_for(chunks, [&](std::int64_t chunk, int) {
    const std::int64_t begin = chunk * grain;
    body(begin, std::min(total, begin + grain));
  });
}

// Per-thread scratch for one parallel call: slot i's buffer is made on first use, zero-filled
// (the default) or left uninitialised for callers that write their buffer whole before reading
// it (im2col's gather, a GEMM's assignment), which saves writing, and faulting in, every page
// first. Large buffers take huge pages as tensors do (aligned_allocate).
enum class ScratchFill { zeros, uninitialized };

template <typename T>
class SlotScratch {
 public:
  explicit SlotScratch(std::size_t size, ScratchFill fill = ScratchFill::zeros)
      : size_(size), fill_(fill), buffers_(static_cast<std::size_t>(current_threads())) {}
  T* get(int slot) {
    AlignedStorage<T>& buffer = buffers_[static_cast<std::size_t>(slot)];
    if (!buffer && size_ > 0) {
      buffer = aligned_allocate<T>(static_cast<std::int64_t>(size_));
      if (fill_ == ScratchFill::zeros) std::fill_n(buffer.get(), size_, T{});
    }
    return buffer.get();
  }

 private:
  std::size_t size_;
  ScratchFill fill_;
  std::vector<AlignedStorage<T>> buffers_;
};

}  // namespace detail
}  // namespace fpn
