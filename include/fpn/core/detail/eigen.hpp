// Eigen, included the one way fpn's headers include it.
//
// GCC 12's AVX-512 headers initialise _mm512_undefined_ps() and friends from themselves
// (`__m512 __Y = __Y;`), so every Eigen GEMM compiled with -march on an AVX-512 CPU warns
// -Wmaybe-uninitialized hundreds of times (GCC bug 105593, fixed in GCC 13). A diagnostic pragma
// applies to the lines it encloses, the included intrinsic headers among them: this silences
// exactly that warning, in those headers, for that compiler, and nothing in the user's own code.
// (If the user's code included <immintrin.h> first, its lines were classified then.)
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#include <Eigen/Core>
#pragma GCC diagnostic pop
#else
#include <Eigen/Core>
#endif
