// What the code that includes fpn was compiled for, and what the CPU running it offers: fpn is
// header-only, so its speed is decided by the flags of the user's own translation unit. A program
// built without fpn::native (or -march) runs fpn's GEMMs on SSE2 even on an AVX-512 CPU, about
// 3x slower; build_info() lets it say so.
//
//   std::cerr << fpn::build_info().str() << "\n";
//   // fpn 0.1.0: compiled for AVX-512 (Eigen: AVX512, FMA, AVX2, ...), CPU offers AVX-512, 2 threads
#pragma once

#include <string>

#include "fpn/core/detail/eigen.hpp"
#include "fpn/core/thread_pool.hpp"

namespace fpn {

inline constexpr const char* version = "0.1.0";

// Instruction-set levels from least to most capable; each includes the ones before.
enum class SimdLevel { generic, sse2, sse4_2, avx, avx2, avx512 };

inline const char* to_string(SimdLevel level) {
  switch (level) {
    case SimdLevel::generic: return "generic";
    case SimdLevel::sse2: return "SSE2";
    case SimdLevel::sse4_2: return "SSE4.2";
    case SimdLevel::avx: return "AVX";
    case SimdLevel::avx2: return "AVX2+FMA";
    case SimdLevel::avx512: return "AVX-512";
  }
  return "unknown";
}

// The level this translation unit was compiled for (the one that calls it).
constexpr SimdLevel compiled_simd_level() {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
  return SimdLevel::avx512;
#elif defined(__AVX2__) && defined(__FMA__)
  return SimdLevel::avx2;
#elif defined(__AVX__)
  return SimdLevel::avx;
#elif defined(__SSE4_2__)
  return SimdLevel::sse4_2;
#elif defined(__SSE2__) || defined(_M_X64)
  return SimdLevel::sse2;
#else
  return SimdLevel::generic;
#endif
}

// The best level the running CPU offers (x86-64 with GCC or Clang; else what was compiled).
inline SimdLevel cpu_simd_level() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return SimdLevel::avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::avx2;
  if (__builtin_cpu_supports("avx")) return SimdLevel::avx;
  if (__builtin_cpu_supports("sse4.2")) return SimdLevel::sse4_2;
  if (__builtin_cpu_supports("sse2")) return SimdLevel::sse2;
  return SimdLevel::generic;
#else
  return compiled_simd_level();
#endif
}

struct BuildInfo {
  SimdLevel compiled;    // what the including code was compiled for
  SimdLevel cpu;         // what this CPU offers
  std::string eigen;     // Eigen's own list of the instruction sets it uses
  int threads;           // what an fpn call uses by default (ThreadLimit and set_num_threads lower it)

  // The CPU could run faster code than was compiled (build with fpn::native to get it).
  bool below_cpu() const { return compiled < cpu; }

  std::string str() const {
    return std::string("fpn ") + version + ": compiled for " + to_string(compiled) + " (Eigen: " +
           eigen + "), CPU offers " + to_string(cpu) + ", " + std::to_string(threads) +
           (threads == 1 ? " thread" : " threads");
  }
};

inline BuildInfo build_info() {
  return {compiled_simd_level(), cpu_simd_level(), Eigen::SimdInstructionSetsInUse(),
          ThreadPool::global().default_threads()};
}

}  // namespace fpn
