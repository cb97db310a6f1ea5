#include "cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.h"
#include "cpu/threadpool.h"

namespace vq {

namespace {

// Block sizes (floats). KC x NR panel of B (16 KB) stays in L1 while a MR x KC panel of A streams;
// the MC x KC block of A (168 KB) lives in L2; the KC x NC block of B (4 MB) in L3.
constexpr int64_t kMC = 168;  // multiple of kMR
constexpr int64_t kKC = 256;
constexpr int64_t kNC = 4080;  // multiple of kNR

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

struct KernelChoice {
  UKernel fn;
  const char* name;
};

KernelChoice choose(const char* want) {
  const bool avx = cpu_has_avx2_fma();
  if (want && std::strcmp(want, "portable") == 0) return {ukernel_portable, "portable"};
  if (avx) return {ukernel_avx2, "avx2-fma"};
  return {ukernel_portable, "portable"};
}

KernelChoice& kernel() {
  static KernelChoice k = choose(std::getenv("VQALAB_GEMM"));
  return k;
}

// op(A)[i0:i0+mc, p0:p0+kc] -> MR-high panels, zero-padded to a multiple of MR rows.
void pack_a(float* dst, bool transA, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
  for (int64_t ir = 0; ir < mc; ir += kMR) {
    const int64_t mr = std::min<int64_t>(kMR, mc - ir);
    float* d = dst + ir * kc;
    if (!transA) {
      for (int64_t i = 0; i < kMR; i++) {
        if (i < mr) {
          const float* src = A + (i0 + ir + i) * lda + p0;
          for (int64_t k = 0; k < kc; k++) d[k * kMR + i] = src[k];
        } else {
          for (int64_t k = 0; k < kc; k++) d[k * kMR + i] = 0.0f;
        }
      }
    } else {
      for (int64_t k = 0; k < kc; k++) {
        const float* src = A + (p0 + k) * lda + i0 + ir;
        int64_t i = 0;
        for (; i < mr; i++) d[k * kMR + i] = src[i];
        for (; i < kMR; i++) d[k * kMR + i] = 0.0f;
      }
    }
  }
}

// op(B)[p0:p0+kc, j0+jr0 : j0+jr1] -> NR-wide panels (jr0, jr1 multiples of NR within the block).
void pack_b(float* dst, bool transB, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
            int64_t jr0, int64_t jr1) {
  for (int64_t jr = jr0; jr < jr1 && jr < nc; jr += kNR) {
    const int64_t nr = std::min<int64_t>(kNR, nc - jr);
    float* d = dst + jr * kc;
    if (!transB) {
      for (int64_t k = 0; k < kc; k++) {
        const float* src = B + (p0 + k) * ldb + j0 + jr;
        int64_t j = 0;
        for (; j < nr; j++) d[k * kNR + j] = src[j];
        for (; j < kNR; j++) d[k * kNR + j] = 0.0f;
      }
    } else {
      for (int64_t j = 0; j < kNR; j++) {
        if (j < nr) {
          const float* src = B + (j0 + jr + j) * ldb + p0;
          for (int64_t k = 0; k < kc; k++) d[k * kNR + j] = src[k];
        } else {
          for (int64_t k = 0; k < kc; k++) d[k * kNR + j] = 0.0f;
        }
      }
    }
  }
}

float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

thread_local std::vector<float> tl_pack_a;
thread_local std::vector<float> tl_pack_b;

}  // namespace

const char* sgemm_kernel_name() { return kernel().name; }

void sgemm_set_kernel(const char* name) {
  if (std::strcmp(name, "auto") == 0) name = std::getenv("VQALAB_GEMM");
  kernel() = choose(name);
}

void ukernel_portable(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, float alpha, float beta) {
  // One row of the tile at a time: 16 accumulators that the compiler keeps in vector registers
  // (4 SSE registers on baseline x86-64); the B panel (kc x 16) is re-read from L1 for each row.
  for (int i = 0; i < kMR; i++) {
    float acc[kNR] = {};
    const float* a = A + i;
    const float* b = B;
    for (int64_t k = 0; k < kc; k++, a += kMR, b += kNR) {
      const float av = *a;
#pragma omp simd
      for (int j = 0; j < kNR; j++) acc[j] += av * b[j];
    }
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < kNR; j++) c[j] = alpha * acc[j];
    } else {
      for (int j = 0; j < kNR; j++) c[j] = alpha * acc[j] + beta * c[j];
    }
  }
}

namespace {

// C[:, jc:jc+nc] (+)= alpha op(A)[:, pc:pc+kc] * Bblock for one packed (pc, jc) block of B.
void gemm_block(bool transA, int64_t M, int64_t nc, int64_t kc, int64_t pc, float alpha, const float* A, int64_t lda,
                const float* bp, float beta_eff, float* C, int64_t ldc) {
  const UKernel uk = kernel().fn;
  ThreadPool& pool = ThreadPool::get();
  const int nt = pool.size();
  const int64_t npanels = (nc + kNR - 1) / kNR;
  // Tasks: (MC block of rows) x (group of B panels). Split the panels when there are few row
  // blocks, so small-M products (decoding) still use every thread.
  const int64_t nic = (M + kMC - 1) / kMC;
  int64_t jsplit = 1;
  if (nic < 2 * nt) jsplit = std::min<int64_t>(npanels, (2 * nt + nic - 1) / nic);
  const int64_t panels_per = (npanels + jsplit - 1) / jsplit;
  pool.parallel_tasks(nic * jsplit, [&](int64_t task, int) {
    const int64_t icb = task / jsplit, js = task % jsplit;
    const int64_t ic = icb * kMC;
    const int64_t mc = std::min(kMC, M - ic);
    const int64_t q0 = js * panels_per, q1 = std::min(npanels, q0 + panels_per);
    if (q0 >= q1) return;
    const int64_t mcp = (mc + kMR - 1) / kMR * kMR;
    float* ap = scratch(tl_pack_a, static_cast<size_t>(mcp * kc));
    pack_a(ap, transA, A, lda, ic, mc, pc, kc);
    float tile[kMR * kNR];
    for (int64_t q = q0; q < q1; q++) {
      const int64_t jr = q * kNR;
      const int64_t nr = std::min<int64_t>(kNR, nc - jr);
      const float* bpanel = bp + jr * kc;
      for (int64_t ir = 0; ir < mc; ir += kMR) {
        const int64_t mr = std::min<int64_t>(kMR, mc - ir);
        float* c = C + (ic + ir) * ldc + jr;
        if (mr == kMR && nr == kNR) {
          uk(kc, ap + ir * kc, bpanel, c, ldc, alpha, beta_eff);
        } else {
          // Edge tile: same kernel into a padded tile, then merge the valid part.
          uk(kc, ap + ir * kc, bpanel, tile, kNR, alpha, 0.0f);
          for (int64_t i = 0; i < mr; i++)
            for (int64_t j = 0; j < nr; j++) {
              float& o = c[i * ldc + j];
              o = beta_eff == 0.0f ? tile[i * kNR + j] : tile[i * kNR + j] + beta_eff * o;
            }
        }
      }
    }
  });
}

bool trivial(int64_t M, int64_t N, int64_t K, float alpha, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return true;
  if (K <= 0 || alpha == 0.0f) {
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return true;
  }
  return false;
}

}  // namespace

void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (trivial(M, N, K, alpha, beta, C, ldc)) return;
  ThreadPool& pool = ThreadPool::get();
  for (int64_t jc = 0; jc < N; jc += kNC) {
    const int64_t nc = std::min(kNC, N - jc);
    const int64_t npanels = (nc + kNR - 1) / kNR;
    for (int64_t pc = 0; pc < K; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc);
      float* bp = scratch(tl_pack_b, static_cast<size_t>(npanels * kNR * kc));
      pool.parallel_for(npanels, 8, [&](int64_t p0, int64_t p1, int) {
        pack_b(bp, transB, B, ldb, pc, kc, jc, nc, p0 * kNR, p1 * kNR);
      });
      gemm_block(transA, M, nc, kc, pc, alpha, A, lda, bp, pc == 0 ? beta : 1.0f, C + jc, ldc);
    }
  }
}

void sgemm_pack_b(PackedB& out, bool transB, int64_t K, int64_t N, const float* B, int64_t ldb) {
  out.K = K;
  out.N = N;
  out.offsets.clear();
  int64_t total = 0;
  for (int64_t jc = 0; jc < N; jc += kNC) {
    const int64_t npanels = (std::min(kNC, N - jc) + kNR - 1) / kNR;
    for (int64_t pc = 0; pc < K; pc += kKC) {
      out.offsets.push_back(total);
      total += npanels * kNR * std::min(kKC, K - pc);
    }
  }
  out.data.assign(static_cast<size_t>(total), 0.0f);
  size_t b = 0;
  for (int64_t jc = 0; jc < N; jc += kNC) {
    const int64_t nc = std::min(kNC, N - jc);
    const int64_t npanels = (nc + kNR - 1) / kNR;
    for (int64_t pc = 0; pc < K; pc += kKC, b++) {
      const int64_t kc = std::min(kKC, K - pc);
      float* bp = out.data.data() + out.offsets[b];
      parallel_for(npanels, 8, [&](int64_t p0, int64_t p1, int) {
        pack_b(bp, transB, B, ldb, pc, kc, jc, nc, p0 * kNR, p1 * kNR);
      });
    }
  }
}

void sgemm_packed(bool transA, int64_t M, float alpha, const float* A, int64_t lda, const PackedB& B, float beta,
                  float* C, int64_t ldc) {
  const int64_t N = B.N, K = B.K;
  if (trivial(M, N, K, alpha, beta, C, ldc)) return;
  size_t b = 0;
  for (int64_t jc = 0; jc < N; jc += kNC) {
    const int64_t nc = std::min(kNC, N - jc);
    for (int64_t pc = 0; pc < K; pc += kKC, b++) {
      const int64_t kc = std::min(kKC, K - pc);
      gemm_block(transA, M, nc, kc, pc, alpha, A, lda, B.data.data() + B.offsets[b], pc == 0 ? beta : 1.0f, C + jc, ldc);
    }
  }
}

void sgemm_naive(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        const float a = transA ? A[k * lda + i] : A[i * lda + k];
        const float b = transB ? B[j * ldb + k] : B[k * ldb + j];
        s += a * b;
      }
      C[i * ldc + j] = beta == 0.0f ? alpha * s : alpha * s + beta * C[i * ldc + j];
    }
}

}  // namespace vq
