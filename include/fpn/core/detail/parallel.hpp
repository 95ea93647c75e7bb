// FPN_OMP(omp parallel for ...): an OpenMP pragma when the user compiles with OpenMP, and nothing
// otherwise, so that -Wall -Werror builds without -fopenmp see no unknown pragmas.
#pragma once

#define FPN_DETAIL_STRINGIFY(...) #__VA_ARGS__
#ifdef _OPENMP
#define FPN_OMP(...) _Pragma(FPN_DETAIL_STRINGIFY(__VA_ARGS__))
#else
#define FPN_OMP(...)
#endif

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fpn::detail {

// Threads that a parallel region opened here would run: 1 without OpenMP or inside a region.
inline std::int64_t region_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace fpn::detail
