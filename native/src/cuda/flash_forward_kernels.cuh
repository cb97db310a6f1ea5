// Internal to the fused attention: the forward kernels over query tiles, one-stage (fwd_k) and pipelined
// (fwd_p), templates on the head dim and the warps per block. flash_forward.cu dispatches to the instances
// the engine uses; native/dev/flash_variants.cu instantiates the others for comparison.
#pragma once
#include "cuda/flash_common.cuh"

namespace vq {
namespace cu {

namespace {

// ---- one stage: one block per (BQ query rows, head) ----
template <int D, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) fwd_k(bf16* __restrict__ out, float* __restrict__ lse,
                                                    const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                    const bf16* __restrict__ v, const Span* __restrict__ spans, int Tq,
                                                    int Tk, int NH, int KVH, float sl2) {
  constexpr int BQ = WARPS * 16, BK = 64, SD = D + 8, NT = WARPS * 32, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = sQ + BQ * SD;
  bf16* sV = sK + BK * SD;
  __shared__ Span sSp[BQ];
  __shared__ int lim[4];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int h = blockIdx.y, kvh = h / (NH / KVH);
  const int q0 = blockIdx.x * BQ;
  const int64_t QD = static_cast<int64_t>(NH) * D, KVD = static_cast<int64_t>(KVH) * D;
  for (int i = tid; i < BQ; i += NT) sSp[i] = q0 + i < Tq ? spans[q0 + i] : Span{0, 0, 0, 0};
  load_rows<D>(sQ, q + h * D, q0, Tq, QD, BQ, tid, NT);
  cp_commit();
  const Ivals iv = tile_ivals(sSp, BQ, lim, tid, NT);
  cp_wait<0>();
  __syncthreads();
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; kk++) ldsm4(qf[kk], sQ + (warp * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
  const Span sp0 = sSp[warp * 16 + g], sp1 = sSp[warp * 16 + g + 8];
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  for (int ii = 0; ii < iv.n; ii++) {
    const int kend = iv.hi[ii];
    for (int kb = iv.lo[ii]; kb < kend; kb += BK) {
      const int ke = min(kb + BK, kend);
      int need = 0;
      for (int i = tid; i < BQ; i += NT) need |= hits(sSp[i], kb, ke);
      if (!__syncthreads_or(need)) continue;
      load_rows<D>(sK, k + kvh * D, kb, Tk, KVD, BK, tid, NT);
      cp_commit();
      load_rows<D>(sV, v + kvh * D, kb, Tk, KVD, BK, tid, NT);
      cp_commit();
      const bool wn = __any_sync(kFull, hits(sp0, kb, ke) || hits(sp1, kb, ke));
      cp_wait<1>();
      __syncthreads();
      float s[BK / 8][4];
      if (wn) {
#pragma unroll
        for (int j = 0; j < BK / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
          for (int np = 0; np < BK / 16; np++) {
            uint32_t b[4];
            ldsm4(b, sK + (np * 16 + (lane & 7) + (lane >> 4) * 8) * SD + kk * 16 + ((lane >> 3) & 1) * 8);
            mma(s[2 * np], qf[kk], b[0], b[1]);
            mma(s[2 * np + 1], qf[kk], b[2], b[3]);
          }
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int key = kb + j * 8 + 2 * t4 + (e & 1);
            const bool on = key < ke && in_span(e < 2 ? sp0 : sp1, key);
            s[j][e] = on ? s[j][e] * sl2 : -INFINITY;
            if (e < 2) mx0 = fmaxf(mx0, s[j][e]);
            else mx1 = fmaxf(mx1, s[j][e]);
          }
        mx0 = fmaxf(mx0, __shfl_xor_sync(kFull, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(kFull, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(kFull, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(kFull, mx1, 2));
        const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        const float b0 = n0 == -INFINITY ? 0.0f : n0, b1 = n1 == -INFINITY ? 0.0f : n1;
        const float a0 = exp2f(m0 - b0), a1 = exp2f(m1 - b1);
        m0 = n0;
        m1 = n1;
        float r0 = 0.0f, r1 = 0.0f;
#pragma unroll
        for (int j = 0; j < BK / 8; j++) {
          s[j][0] = exp2f(s[j][0] - b0);
          s[j][1] = exp2f(s[j][1] - b0);
          s[j][2] = exp2f(s[j][2] - b1);
          s[j][3] = exp2f(s[j][3] - b1);
          r0 += s[j][0] + s[j][1];
          r1 += s[j][2] + s[j][3];
        }
        l0 = l0 * a0 + r0;
        l1 = l1 * a1 + r1;
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
          o[j][0] *= a0; o[j][1] *= a0; o[j][2] *= a1; o[j][3] *= a1;
        }
      }
      cp_wait<0>();
      __syncthreads();
      if (wn) {
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
          uint32_t a[4];
          to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
          for (int nd = 0; nd < D / 16; nd++) {
            uint32_t b[4];
            ldsm4t(b, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * SD + nd * 16 + (lane >> 4) * 8);
            mma(o[2 * nd], a, b[0], b[1]);
            mma(o[2 * nd + 1], a, b[2], b[3]);
          }
        }
      }
      __syncthreads();
    }
  }
  l0 += __shfl_xor_sync(kFull, l0, 1);
  l0 += __shfl_xor_sync(kFull, l0, 2);
  l1 += __shfl_xor_sync(kFull, l1, 1);
  l1 += __shfl_xor_sync(kFull, l1, 2);
  const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int col = j * 8 + 2 * t4;
    if (r0 < Tq)
      *reinterpret_cast<__nv_bfloat162*>(out + r0 * QD + h * D + col) = __floats2bfloat162_rn(o[j][0] * i0, o[j][1] * i0);
    if (r1 < Tq)
      *reinterpret_cast<__nv_bfloat162*>(out + r1 * QD + h * D + col) = __floats2bfloat162_rn(o[j][2] * i1, o[j][3] * i1);
  }
  if (t4 == 0) {
    if (r0 < Tq) lse[static_cast<int64_t>(r0) * NH + h] = l0 > 0.0f ? (m0 + log2f(l0)) * kLn2 : -INFINITY;
    if (r1 < Tq) lse[static_cast<int64_t>(r1) * NH + h] = l1 > 0.0f ? (m1 + log2f(l1)) * kLn2 : -INFINITY;
  }
}

// ---- pipelined (flash_common.cuh): the next key block is copied while the current one is computed ----
template <int D, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) fwd_p(bf16* __restrict__ out, float* __restrict__ lse,
                                                    const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                    const bf16* __restrict__ v, const Span* __restrict__ spans, int Tq,
                                                    int Tk, int NH, int KVH, float sl2) {
  constexpr int BQ = WARPS * 16, BK = 64, SD = D + 8, NT = WARPS * 32, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sKV = sQ + BQ * SD;  // stage s: K at sKV + s * 2 * BK * SD, V BK * SD after it
  __shared__ Span sSp[BQ];
  __shared__ int lim[4];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int h = blockIdx.y, kvh = h / (NH / KVH);
  const int q0 = blockIdx.x * BQ;
  const int64_t QD = static_cast<int64_t>(NH) * D, KVD = static_cast<int64_t>(KVH) * D;
  for (int i = tid; i < BQ; i += NT) sSp[i] = q0 + i < Tq ? spans[q0 + i] : Span{0, 0, 0, 0};
  load_rows<D>(sQ, q + h * D, q0, Tq, QD, BQ, tid, NT);
  cp_commit();
  const Ivals iv = tile_ivals(sSp, BQ, lim, tid, NT);
  int ii = 0, kb = iv.n ? iv.lo[0] : 0;
  bool have = next_block<BK>(iv, ii, kb, sSp, BQ, tid, NT);
  if (have) {
    load_rows<D>(sKV, k + kvh * D, kb, Tk, KVD, BK, tid, NT);
    load_rows<D>(sKV + BK * SD, v + kvh * D, kb, Tk, KVD, BK, tid, NT);
  }
  cp_commit();
  cp_wait<1>();  // Q
  __syncthreads();
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; kk++) ldsm4(qf[kk], sQ + (warp * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
  const Span sp0 = sSp[warp * 16 + g], sp1 = sSp[warp * 16 + g + 8];
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  int st = 0;
  while (have) {
    const int ckb = kb, cke = min(kb + BK, iv.hi[ii]);
    int nii = ii, nkb = kb + BK;
    const bool nxt = next_block<BK>(iv, nii, nkb, sSp, BQ, tid, NT);
    if (nxt) {
      bf16* s2 = sKV + (st ^ 1) * 2 * BK * SD;
      load_rows<D>(s2, k + kvh * D, nkb, Tk, KVD, BK, tid, NT);
      load_rows<D>(s2 + BK * SD, v + kvh * D, nkb, Tk, KVD, BK, tid, NT);
    }
    cp_commit();
    cp_wait<1>();
    __syncthreads();
    const bf16* sK = sKV + st * 2 * BK * SD;
    const bf16* sV = sK + BK * SD;
    if (__any_sync(kFull, hits(sp0, ckb, cke) || hits(sp1, ckb, cke))) {
      const bool full = cke - ckb == BK && __all_sync(kFull, covers(sp0, ckb, cke) && covers(sp1, ckb, cke));
      float s[BK / 8][4];
#pragma unroll
      for (int j = 0; j < BK / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KS; kk++)
#pragma unroll
        for (int np = 0; np < BK / 16; np++) {
          uint32_t b[4];
          ldsm4(b, sK + (np * 16 + (lane & 7) + (lane >> 4) * 8) * SD + kk * 16 + ((lane >> 3) & 1) * 8);
          mma(s[2 * np], qf[kk], b[0], b[1]);
          mma(s[2 * np + 1], qf[kk], b[2], b[3]);
        }
      float mx0 = -INFINITY, mx1 = -INFINITY;
      if (full) {
#pragma unroll
        for (int j = 0; j < BK / 8; j++) {
          s[j][0] *= sl2; s[j][1] *= sl2; s[j][2] *= sl2; s[j][3] *= sl2;
          mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
          mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
        }
      } else {
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int key = ckb + j * 8 + 2 * t4 + (e & 1);
            const bool on = key < cke && in_span(e < 2 ? sp0 : sp1, key);
            s[j][e] = on ? s[j][e] * sl2 : -INFINITY;
            if (e < 2) mx0 = fmaxf(mx0, s[j][e]);
            else mx1 = fmaxf(mx1, s[j][e]);
          }
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(kFull, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(kFull, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(kFull, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(kFull, mx1, 2));
      const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
      const float b0 = n0 == -INFINITY ? 0.0f : n0, b1 = n1 == -INFINITY ? 0.0f : n1;
      const float a0 = exp2f(m0 - b0), a1 = exp2f(m1 - b1);
      m0 = n0;
      m1 = n1;
      float r0 = 0.0f, r1 = 0.0f;
#pragma unroll
      for (int j = 0; j < BK / 8; j++) {
        s[j][0] = exp2f(s[j][0] - b0);
        s[j][1] = exp2f(s[j][1] - b0);
        s[j][2] = exp2f(s[j][2] - b1);
        s[j][3] = exp2f(s[j][3] - b1);
        r0 += s[j][0] + s[j][1];
        r1 += s[j][2] + s[j][3];
      }
      l0 = l0 * a0 + r0;
      l1 = l1 * a1 + r1;
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
        o[j][0] *= a0; o[j][1] *= a0; o[j][2] *= a1; o[j][3] *= a1;
      }
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++) {
        uint32_t a[4];
        to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int nd = 0; nd < D / 16; nd++) {
          uint32_t b[4];
          ldsm4t(b, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * SD + nd * 16 + (lane >> 4) * 8);
          mma(o[2 * nd], a, b[0], b[1]);
          mma(o[2 * nd + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // this stage is refilled two blocks on
    have = nxt;
    ii = nii;
    kb = nkb;
    st ^= 1;
  }
  cp_wait<0>();
  l0 += __shfl_xor_sync(kFull, l0, 1);
  l0 += __shfl_xor_sync(kFull, l0, 2);
  l1 += __shfl_xor_sync(kFull, l1, 1);
  l1 += __shfl_xor_sync(kFull, l1, 2);
  const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int col = j * 8 + 2 * t4;
    if (r0 < Tq)
      *reinterpret_cast<__nv_bfloat162*>(out + r0 * QD + h * D + col) = __floats2bfloat162_rn(o[j][0] * i0, o[j][1] * i0);
    if (r1 < Tq)
      *reinterpret_cast<__nv_bfloat162*>(out + r1 * QD + h * D + col) = __floats2bfloat162_rn(o[j][2] * i1, o[j][3] * i1);
  }
  if (t4 == 0) {
    if (r0 < Tq) lse[static_cast<int64_t>(r0) * NH + h] = l0 > 0.0f ? (m0 + log2f(l0)) * kLn2 : -INFINITY;
    if (r1 < Tq) lse[static_cast<int64_t>(r1) * NH + h] = l1 > 0.0f ? (m1 + log2f(l1)) * kLn2 : -INFINITY;
  }
}

// Launches a tile kernel (fwd_k or fwd_p) of WARPS warps (16 query rows each) with `stages` K/V stages.
template <int D, int WARPS, typename K>
void launch_tiles(K kern, int stages, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                  const Span* spans, int Tq, int Tk, int NH, int KVH, float sl2) {
  constexpr int BQ = WARPS * 16;
  const size_t sm = (BQ + stages * 2 * 64) * (D + 8) * sizeof(bf16);
  allow_smem(kern, sm);
  kern<<<dim3((Tq + BQ - 1) / BQ, NH), WARPS * 32, sm, stream()>>>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
}

// 4 warps (64 rows) reuse each key block 4 times: the kernels for calls with enough 64-row tiles to fill the
// card; smaller calls (decode steps) want their work spread over more, smaller blocks.
inline bool wide_call(int Tq, int NH) { return static_cast<int64_t>((Tq + 63) / 64) * NH >= 2 * sm_count(); }

}  // namespace

}  // namespace cu
}  // namespace vq
