// Attention over spans: the cuBLASLt tile path (scores per tile of query rows over its key range) and the
// dispatch to the fused kernels of flash.cu (cuda/ops.h, "attention over spans").
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/flash.h"
#include "cuda/gemm.h"
#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

// ---- attention helpers ----
// One block per (query row i of the tile, head h): masked softmax of the scaled scores S (fp32, rows
// of Kc keys starting at key k0) -> P (T) and lse.
template <typename T>
__global__ void att_softmax_k(T* P, float* lse, const float* S, const Span* spans, int64_t r0, int64_t Qc, int64_t Kc,
                              int64_t k0, int64_t NH) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const Span sp = spans[i];
  const float* s = S + (h * Qc + i) * Kc;
  T* p = P + (h * Qc + i) * Kc;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    if (on) mx = fmaxf(mx, s[j]);
  }
  mx = block_max(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    if (on) sum += expf(s[j] - mx);
  }
  sum = block_sum(sum);
  const float l = mx + logf(sum);
  if (threadIdx.x == 0) lse[(r0 + i) * NH + h] = l;
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    st(p + j, on ? expf(s[j] - l) : 0.0f);
  }
}

// Drow (Qc, NH) = sum_d dout * out over each head's row.
template <typename T>
__global__ void att_drow_k(float* Drow, const T* dout, const T* out, int64_t r0, int64_t Qc, int64_t NH, int64_t D) {
  const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= Qc * NH) return;
  const int64_t i = w / NH, h = w % NH;
  const T* a = dout + ((r0 + i) * NH + h) * D;
  const T* b = out + ((r0 + i) * NH + h) * D;
  float s = 0.0f;
  for (int64_t d = lane; d < D; d += 32) s += ld(a + d) * ld(b + d);
  s = warp_sum(s);
  if (lane == 0) Drow[h * Qc + i] = s;
}

// P = exp(S - lse) (masked), dS = P * (dP - Drow); both written in T for the GEMMs.
template <typename T>
__global__ void att_dsoftmax_k(T* P, T* dS, const float* S, const float* dP, const float* lse, const float* Drow,
                               const Span* spans, int64_t r0, int64_t Qc, int64_t Kc, int64_t k0, int64_t NH) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const Span sp = spans[i];
  const int64_t off = (h * Qc + i) * Kc;
  const float l = lse[(r0 + i) * NH + h], dr = Drow[h * Qc + i];
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    const float p = on ? expf(S[off + j] - l) : 0.0f;
    st(P + off + j, p);
    st(dS + off + j, p * (dP[off + j] - dr));
  }
}

// ---- scratch for attention tiles (per thread, grow-only) ----
struct AttScratch {
  DArray<float> S{"attention scores"}, dP{"attention score gradients"}, drow{"attention row sums"};
  DArray<char> P{"attention probabilities"}, dS{"attention probability gradients"};
  DArray<Span> spans{"attention spans"};
};
thread_local AttScratch* g_att = nullptr;
AttScratch& att_scratch() {
  if (!g_att) g_att = new AttScratch();
  return *g_att;
}

struct Tile {
  int64_t r0, r1, k0, k1;
};

// Tiles of consecutive query rows whose key ranges overlap, each within a score budget.
std::vector<Tile> plan_tiles(const Span* spans, int64_t Tq, int64_t NH) {
  const int64_t budget = 64ll << 20;  // scores per tile (fp32 S + dP + T P + T dS: ~ 12-16 bytes each)
  std::vector<Tile> tiles;
  int64_t r0 = 0, klo = 0, khi = 0;
  auto range = [&](int64_t r, int64_t& lo, int64_t& hi) {
    const Span& s = spans[r];
    lo = INT64_MAX;
    hi = INT64_MIN;
    if (s.a1 > s.a0) { lo = s.a0; hi = s.a1; }
    if (s.b1 > s.b0) { lo = std::min<int64_t>(lo, s.b0); hi = std::max<int64_t>(hi, s.b1); }
  };
  for (int64_t r = 0; r < Tq; r++) {
    int64_t lo, hi;
    range(r, lo, hi);
    if (r == r0) { klo = lo; khi = hi; continue; }
    const int64_t nlo = std::min(klo, lo), nhi = std::max(khi, hi);
    const bool overlap = lo < khi && hi > klo;
    if (overlap && (r - r0 + 1) * NH * (nhi - nlo) <= budget) {
      klo = nlo;
      khi = nhi;
    } else {
      tiles.push_back({r0, r, klo, khi});
      r0 = r;
      klo = lo;
      khi = hi;
    }
  }
  if (Tq > 0) tiles.push_back({r0, Tq, klo, khi});
  return tiles;
}

// The per-head GEMMs of a tile, grouped for GQA: query head h = g*rep + r reads kv head g.
struct HeadGemm {
  int64_t NH, KVH, D, rep;
};


}  // namespace

// ---- attention ----
template <typename T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const Span* spans, int64_t Tq,
                       int64_t Tk, int64_t NH, int64_t KVH, int64_t D, CudaAttention path) {
  if (Tq == 0) return;
  AttScratch& sc = att_scratch();
  Span* dsp = sc.spans.fit(Tq);
  CU_CHECK(cudaMemcpyAsync(dsp, spans, Tq * sizeof(Span), cudaMemcpyHostToDevice, stream()), "attention_forward (spans)");
  attention_forward_dev(out, lse, q, k, v, spans, dsp, Tq, Tk, NH, KVH, D, path);
}

template <typename T>
void attention_forward_dev(T* out, float* lse, const T* q, const T* k, const T* v, const Span* spans,
                           const Span* dsp, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D,
                           CudaAttention path) {
  if (Tq == 0) return;
  if constexpr (std::is_same<T, bf16>::value) {
    if (path == CudaAttention::fused && flash_supported(D)) {
      flash_forward(out, lse, q, k, v, dsp, Tq, Tk, NH, KVH, D);
      if (spans) add_flops(attention_flops(spans, Tq, NH, D));
      return;
    }
  }
  VQ_CHECK(spans != nullptr, "attention_forward: the cuBLASLt path needs the spans on the host");
  AttScratch& sc = att_scratch();
  const int64_t rep = NH / KVH, KVD = KVH * D, QD = NH * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t outer = rep == 1 ? 1 : KVH, batch = rep == 1 ? NH : rep, kstride = rep == 1 ? D : 0;
  for (const Tile& tl : plan_tiles(spans, Tq, NH)) {
    const int64_t Qc = tl.r1 - tl.r0, Kc = tl.k1 - tl.k0;
    float* S = sc.S.fit(NH * Qc * Kc);
    T* P = reinterpret_cast<T*>(sc.P.fit(NH * Qc * Kc * static_cast<int64_t>(sizeof(T))));
    for (int64_t g = 0; g < outer; g++) {  // S^T (Kc, Qc) = K (Kc, D) @ Q^T (D, Qc), scaled
      GemmArgs a;
      a.ta = true;
      a.m = Kc; a.n = Qc; a.k = D;
      a.A = k + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
      a.B = q + tl.r0 * QD + g * rep * D; a.ldb = QD; a.sB = D;
      a.C = S + g * rep * Qc * Kc; a.ldc = Kc; a.sC = Qc * Kc;
      a.batch = static_cast<int>(batch);
      a.alpha = scale;
      a.ab = dtype_of<T>(); a.c = DType::F32;
      gemm(a, "attention_forward (scores)");
    }
    att_softmax_k<<<dim3(static_cast<unsigned>(Qc), static_cast<unsigned>(NH)), 128, 0, stream()>>>(
        P, lse, S, dsp + tl.r0, tl.r0, Qc, Kc, tl.k0, NH);
    CU_LAUNCHED("attention_forward (softmax)");
    for (int64_t g = 0; g < outer; g++) {  // O^T (D, Qc) = V^T (D, Kc) @ P^T (Kc, Qc)
      GemmArgs a;
      a.m = D; a.n = Qc; a.k = Kc;
      a.A = v + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
      a.B = P + g * rep * Qc * Kc; a.ldb = Kc; a.sB = Qc * Kc;
      a.C = out + tl.r0 * QD + g * rep * D; a.ldc = QD; a.sC = D;
      a.batch = static_cast<int>(batch);
      a.ab = a.c = dtype_of<T>();
      gemm(a, "attention_forward (values)");
    }
  }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH,
                        int64_t D, CudaAttention path) {
  if (Tq == 0) return;
  AttScratch& sc = att_scratch();
  Span* dsp = sc.spans.fit(Tq);
  CU_CHECK(cudaMemcpyAsync(dsp, spans, Tq * sizeof(Span), cudaMemcpyHostToDevice, stream()), "attention_backward (spans)");
  attention_backward_dev(dq, dk, dv, dout, q, k, v, out, lse, spans, dsp, Tq, Tk, NH, KVH, D, path);
}

template <typename T>
void attention_backward_dev(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                            const float* lse, const Span* spans, const Span* dsp, int64_t Tq, int64_t Tk, int64_t NH,
                            int64_t KVH, int64_t D, CudaAttention path) {
  if (Tq == 0) return;
  if constexpr (std::is_same<T, bf16>::value) {
    if (path == CudaAttention::fused && flash_supported(D)) {
      flash_backward(dq, dk, dv, dout, q, k, v, out, lse, dsp, Tq, Tk, NH, KVH, D);
      if (spans) add_flops(2.5 * attention_flops(spans, Tq, NH, D));
      return;
    }
  }
  VQ_CHECK(spans != nullptr, "attention_backward: the cuBLASLt path needs the spans on the host");
  AttScratch& sc = att_scratch();
  const int64_t rep = NH / KVH, KVD = KVH * D, QD = NH * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t outer = rep == 1 ? 1 : KVH, batch = rep == 1 ? NH : rep, kstride = rep == 1 ? D : 0;
  for (const Tile& tl : plan_tiles(spans, Tq, NH)) {
    const int64_t Qc = tl.r1 - tl.r0, Kc = tl.k1 - tl.k0, n = NH * Qc * Kc;
    float* S = sc.S.fit(n);
    float* dP = sc.dP.fit(n);
    T* P = reinterpret_cast<T*>(sc.P.fit(n * static_cast<int64_t>(sizeof(T))));
    T* dS = reinterpret_cast<T*>(sc.dS.fit(n * static_cast<int64_t>(sizeof(T))));
    float* drow = sc.drow.fit(NH * Qc);
    for (int64_t g = 0; g < outer; g++) {
      GemmArgs a;  // scores again
      a.ta = true;
      a.m = Kc; a.n = Qc; a.k = D;
      a.A = k + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
      a.B = q + tl.r0 * QD + g * rep * D; a.ldb = QD; a.sB = D;
      a.C = S + g * rep * Qc * Kc; a.ldc = Kc; a.sC = Qc * Kc;
      a.batch = static_cast<int>(batch);
      a.alpha = scale;
      a.ab = dtype_of<T>(); a.c = DType::F32;
      gemm(a, "attention_backward (scores)");
      GemmArgs b;  // dP^T (Kc, Qc) = V (Kc, D) @ dO^T (D, Qc)
      b.ta = true;
      b.m = Kc; b.n = Qc; b.k = D;
      b.A = v + tl.k0 * KVD + g * D; b.lda = KVD; b.sA = kstride;
      b.B = dout + tl.r0 * QD + g * rep * D; b.ldb = QD; b.sB = D;
      b.C = dP + g * rep * Qc * Kc; b.ldc = Kc; b.sC = Qc * Kc;
      b.batch = static_cast<int>(batch);
      b.ab = dtype_of<T>(); b.c = DType::F32;
      gemm(b, "attention_backward (dP)");
    }
    {
      const int64_t warps = Qc * NH;
      att_drow_k<<<blocks_for(warps * 32), 256, 0, stream()>>>(drow, dout, out, tl.r0, Qc, NH, D);
      CU_LAUNCHED("attention_backward (row sums)");
    }
    att_dsoftmax_k<<<dim3(static_cast<unsigned>(Qc), static_cast<unsigned>(NH)), 128, 0, stream()>>>(
        P, dS, S, dP, lse, drow, dsp + tl.r0, tl.r0, Qc, Kc, tl.k0, NH);
    CU_LAUNCHED("attention_backward (softmax)");
    if (dq) {
      for (int64_t g = 0; g < outer; g++) {  // dQ^T (D, Qc) += scale * K^T (D, Kc) @ dS^T (Kc, Qc)
        GemmArgs a;
        a.m = D; a.n = Qc; a.k = Kc;
        a.A = k + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
        a.B = dS + g * rep * Qc * Kc; a.ldb = Kc; a.sB = Qc * Kc;
        a.C = dq + tl.r0 * QD + g * rep * D; a.ldc = QD; a.sC = D;
        a.batch = static_cast<int>(batch);
        a.alpha = scale; a.beta = 1.0f;
        a.ab = a.c = dtype_of<T>();
        gemm(a, "attention_backward (dq)");
      }
    }
    // dK, dV sum over the rep query heads of a kv head: one batched call (over kv heads) per r.
    for (int64_t r = 0; r < rep; r++) {
      if (dk) {  // dK^T (D, Kc) += scale * Q^T (D, Qc) @ dS (Qc, Kc)
        GemmArgs a;
        a.tb = true;
        a.m = D; a.n = Kc; a.k = Qc;
        a.A = q + tl.r0 * QD + r * D; a.lda = QD; a.sA = rep * D;
        a.B = dS + r * Qc * Kc; a.ldb = Kc; a.sB = rep * Qc * Kc;
        a.C = dk + tl.k0 * KVD; a.ldc = KVD; a.sC = D;
        a.batch = static_cast<int>(KVH);
        a.alpha = scale; a.beta = 1.0f;
        a.ab = a.c = dtype_of<T>();
        gemm(a, "attention_backward (dk)");
      }
      if (dv) {  // dV^T (D, Kc) += dO^T (D, Qc) @ P (Qc, Kc)
        GemmArgs a;
        a.tb = true;
        a.m = D; a.n = Kc; a.k = Qc;
        a.A = dout + tl.r0 * QD + r * D; a.lda = QD; a.sA = rep * D;
        a.B = P + r * Qc * Kc; a.ldb = Kc; a.sB = rep * Qc * Kc;
        a.C = dv + tl.k0 * KVD; a.ldc = KVD; a.sC = D;
        a.batch = static_cast<int>(KVH);
        a.beta = 1.0f;
        a.ab = a.c = dtype_of<T>();
        gemm(a, "attention_backward (dv)");
      }
    }
  }
}

#define VQ_INST(T) \
  template void attention_forward<T>(T*, float*, const T*, const T*, const T*, const Span*, int64_t, int64_t, \
  int64_t, int64_t, int64_t, CudaAttention); \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const float*, \
  const Span*, int64_t, int64_t, int64_t, int64_t, int64_t, CudaAttention); \
  template void attention_forward_dev<T>(T*, float*, const T*, const T*, const T*, const Span*, const Span*, \
  int64_t, int64_t, int64_t, int64_t, int64_t, CudaAttention); \
  template void attention_backward_dev<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, \
  const float*, const Span*, const Span*, int64_t, int64_t, int64_t, \
  int64_t, int64_t, CudaAttention);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
