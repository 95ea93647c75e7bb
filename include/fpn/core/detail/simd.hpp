// FPN_VECTORIZE before a loop: tells the compiler the loop's iterations are independent, so it
// vectorises it without needing -fopenmp or -fopenmp-simd on the user's targets.
#pragma once

#if defined(__clang__)
#define FPN_VECTORIZE _Pragma("clang loop vectorize(enable)")
#elif defined(__GNUC__)
#define FPN_VECTORIZE _Pragma("GCC ivdep")
#else
#define FPN_VECTORIZE
#endif
