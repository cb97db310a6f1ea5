// Internal to the fused attention backward (flash_backward.cu, and native/dev/flash_variants.cu's one-stage
// kernels): the row sums D = rowsum(dO * O), the key intervals of each query tile, the GQA reduction.
#pragma once
#include "cuda/flash_common.cuh"

namespace vq {
namespace cu {

namespace {

// D (Tq*NH) = sum_d dout * out per (row, head); one warp each.
__global__ void drow_k(float* __restrict__ dr, const bf16* __restrict__ dout, const bf16* __restrict__ out, int64_t n,
                       int D) {
  const int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= n) return;
  const __nv_bfloat162* a = reinterpret_cast<const __nv_bfloat162*>(dout + w * D);
  const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(out + w * D);
  float s = 0.0f;
  for (int i = lane; i < D / 2; i += 32) {
    const float2 x = __bfloat1622float2(a[i]), y = __bfloat1622float2(b[i]);
    s += x.x * y.x + x.y * y.y;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(kFull, s, o);
  if (lane == 0) dr[w] = s;
}

// Per tile of QT query rows: the key intervals it reads (a: x..y, b: z..w; empty = 0..0).
__global__ void tiles_k(int4* tab, const Span* spans, int Tq, int QT, int ntiles) {
  const int ti = blockIdx.x * blockDim.x + threadIdx.x;
  if (ti >= ntiles) return;
  int alo = INT_MAX, ahi = INT_MIN, blo = INT_MAX, bhi = INT_MIN;
  const int r1 = min(Tq, (ti + 1) * QT);
  for (int r = ti * QT; r < r1; r++) {
    const Span s = spans[r];
    if (s.a1 > s.a0) { alo = min(alo, s.a0); ahi = max(ahi, s.a1); }
    if (s.b1 > s.b0) { blo = min(blo, s.b0); bhi = max(bhi, s.b1); }
  }
  tab[ti] = make_int4(ahi > alo ? alo : 0, ahi > alo ? ahi : 0, bhi > blo ? blo : 0, bhi > blo ? bhi : 0);
}

// dk[key, g] += sum over the group's query heads of the fp32 partials (Tk, NH, D); likewise dv.
__global__ void gqa_reduce_k(bf16* __restrict__ dk, bf16* __restrict__ dv, const float* __restrict__ dkp,
                             const float* __restrict__ dvp, int64_t Tk, int KVH, int rep, int D) {
  const int64_t KVD = static_cast<int64_t>(KVH) * D, n = Tk * KVD, QD = KVD * rep;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t key = i / KVD, c = i % KVD, gq = c / D, d = c % D;
    const int64_t base = key * QD + gq * rep * D + d;
    float sk = 0.0f, sv = 0.0f;
    for (int r = 0; r < rep; r++) {
      sk += dkp[base + r * D];
      sv += dvp[base + r * D];
    }
    if (dk) dk[i] = __float2bfloat16(__bfloat162float(dk[i]) + sk);
    if (dv) dv[i] = __float2bfloat16(__bfloat162float(dv[i]) + sv);
  }
}

struct Scratch {
  DArray<float> drow{"attention row sums"}, dkp{"attention dk partials"}, dvp{"attention dv partials"};
  DArray<int4> tiles{"attention tiles"};
};
thread_local Scratch* g_scratch = nullptr;

// The backward's launches around a dq kernel and a dk/dv kernel of `stages` shared-memory stages (the pipelined
// kernels in flash_backward.cu; the one-stage ones in native/dev/flash_variants.cu).
template <int D, typename DqKernel, typename DkdvKernel>
void backward_launch(DqKernel dq_kern, DkdvKernel dkdv_kern, int stages, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                     const bf16* q, const bf16* k, const bf16* v, const bf16* out, const float* lse, const Span* spans,
                     int Tq, int Tk, int NH, int KVH, float sl2, float scale) {
  if (!g_scratch) g_scratch = new Scratch();
  Scratch& sc = *g_scratch;
  const int64_t nrh = static_cast<int64_t>(Tq) * NH;
  float* dr = sc.drow.fit(nrh);
  drow_k<<<static_cast<unsigned>((nrh * 32 + 255) / 256), 256, 0, stream()>>>(dr, dout, out, nrh, D);
  CU_LAUNCHED("attention_backward (row sums)");
  if (dq) {
    const size_t sm = (2 * 64 + stages * 2 * 64) * (D + 8) * sizeof(bf16);
    allow_smem(dq_kern, sm);
    dq_kern<<<dim3((Tq + 63) / 64, NH), 128, sm, stream()>>>(dq, dout, q, k, v, lse, dr, spans, Tq, Tk, NH, KVH, sl2,
                                                          scale);
    CU_LAUNCHED("attention_backward (flash dq)");
  }
  if (dk || dv) {
    const int ntiles = (Tq + 31) / 32;
    int4* tab = sc.tiles.fit(ntiles);
    tiles_k<<<(ntiles + 127) / 128, 128, 0, stream()>>>(tab, spans, Tq, 32, ntiles);
    CU_LAUNCHED("attention_backward (tiles)");
    const int rep = NH / KVH;
    float* dkp = nullptr;
    float* dvp = nullptr;
    if (rep > 1) {
      dkp = sc.dkp.fit(static_cast<int64_t>(Tk) * NH * D);
      dvp = sc.dvp.fit(static_cast<int64_t>(Tk) * NH * D);
    }
    const size_t sm = (2 * 64 + stages * 2 * 32) * (D + 8) * sizeof(bf16);
    allow_smem(dkdv_kern, sm);
    dkdv_kern<<<dim3((Tk + 63) / 64, NH), 128, sm, stream()>>>(dk, dv, dkp, dvp, dout, q, k, v, lse, dr, spans, tab, ntiles,
                                                          Tq, Tk, NH, KVH, sl2, scale);
    CU_LAUNCHED("attention_backward (flash dk dv)");
    if (rep > 1) {
      const int64_t n = static_cast<int64_t>(Tk) * KVH * D;
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535LL * 32));
      gqa_reduce_k<<<blocks, 256, 0, stream()>>>(dk, dv, dkp, dvp, Tk, KVH, rep, D);
      CU_LAUNCHED("attention_backward (gqa sum)");
    }
  }
}

}  // namespace

}  // namespace cu
}  // namespace vq
