// Single-precision GEMM for the CPU engine (row-major).
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C      (beta == 0: C is not read)
//   op(A) = A (A is [M,K], row stride lda) or A^T (A is [K,M]); same for B.
//
// Cache-blocked and packed in the manner of BLIS/GotoBLAS: B is packed in KC x NC blocks of NR-wide
// panels, A in MC x KC blocks of MR-high panels, and an MR x NR micro-kernel does the arithmetic. The
// micro-kernel is AVX2+FMA when the CPU has both (chosen at run time), else portable C++.
// Each element of C is summed in the same order whatever M, N, the thread count or its position in a
// tile (edge tiles are padded, not special-cased), so a row's result does not depend on the other rows.
#pragma once
#include <cstdint>
#include <vector>

namespace vq {

void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// B packed once for many products (the weights during sampling): C = alpha op(A) op(B) + beta C with
// exactly the arithmetic of sgemm, so results are bitwise the same as with an unpacked B.
struct PackedB {
  int64_t K = 0, N = 0;
  std::vector<float> data;
  std::vector<int64_t> offsets;  // start of block (jc / NC, pc / KC), row-major over (jc, pc)
  bool empty() const { return data.empty(); }
};
void sgemm_pack_b(PackedB& out, bool transB, int64_t K, int64_t N, const float* B, int64_t ldb);
void sgemm_packed(bool transA, int64_t M, float alpha, const float* A, int64_t lda, const PackedB& B, float beta,
                  float* C, int64_t ldc);

// The textbook triple loop (i, j, k), one thread: the baseline for bench/gemm.ts and the check in tests.
void sgemm_naive(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// "avx2-fma" or "portable". VQALAB_GEMM=portable in the environment forces the portable kernel.
const char* sgemm_kernel_name();
void sgemm_set_kernel(const char* name);  // "avx2-fma" (if supported), "portable" or "auto"

// Micro-kernel shape shared by every kernel (the packing depends on it).
constexpr int kMR = 6;
constexpr int kNR = 16;

// Micro-kernel: C[MR,NR] = alpha * Ap * Bp + beta * C, Ap packed [kc][MR], Bp packed [kc][NR].
using UKernel = void (*)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta);
void ukernel_portable(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta);
void ukernel_avx2(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta);

}  // namespace vq
