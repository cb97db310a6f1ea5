// Hot loops are compiled twice (x86-64 baseline and Haswell: AVX2 + FMA) and the loader picks the
// clone the CPU supports (GCC function multi-versioning). `#pragma omp simd reduction` (with
// -fopenmp-simd, no OpenMP runtime) lets the compiler vectorise sums without -ffast-math.
#pragma once
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VQ_HOT __attribute__((target_clones("arch=haswell", "default")))
#else
#define VQ_HOT
#endif

namespace vq {

// Plain inline helpers: they take the instruction set of the (multi-versioned) function they are
// inlined into. Not VQ_HOT themselves: a multi-versioned callee cannot be inlined.
inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

// y += a * x
inline void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

}  // namespace vq
