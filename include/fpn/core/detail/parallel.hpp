// FPN_OMP(omp parallel for ...): an OpenMP pragma when the user compiles with OpenMP, and nothing
// otherwise, so that -Wall -Werror builds without -fopenmp see no unknown pragmas.
#pragma once

#define FPN_DETAIL_STRINGIFY(...) #__VA_ARGS__
#ifdef _OPENMP
#define FPN_OMP(...) _Pragma(FPN_DETAIL_STRINGIFY(__VA_ARGS__))
#else
#define FPN_OMP(...)
#endif
