// The attention variants of flash_variants.h: the forward kernels of flash_forward_kernels.cuh at the instances
// the engine does not take, and the backward's one-stage kernels (dq_k, dkdv_k: the engine's pipelined dq_p,
// dkdv_p without the second stage and the unmasked full blocks), launched as flash_backward.cu launches its own;
// the decode kernel of flash_decode.cuh at any tile layout, and the per-head decode kernel it replaced.
#include "cuda/flash_backward_steps.cuh"
#include "cuda/flash_decode.cuh"
#include "cuda/flash_forward_kernels.cuh"
#include "cuda/flash_forward_wide.cuh"
#include "flash_variants.h"

namespace vq {
namespace cu {
namespace {

// ---- backward dq: one block per (64 query rows, head), walking the key blocks ----
template <int D>
__global__ void __launch_bounds__(128) dq_k(bf16* __restrict__ dq, const bf16* __restrict__ dout,
                                            const bf16* __restrict__ q, const bf16* __restrict__ k,
                                            const bf16* __restrict__ v, const float* __restrict__ lse,
                                            const float* __restrict__ drow, const Span* __restrict__ spans, int Tq,
                                            int Tk, int NH, int KVH, float sl2, float scale) {
  constexpr int BQ = 64, BK = 64, SD = D + 8, NT = 128, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sO = sQ + BQ * SD;  // dout
  bf16* sK = sO + BQ * SD;
  bf16* sV = sK + BK * SD;
  __shared__ Span sSp[BQ];
  __shared__ int lim[4];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int h = blockIdx.y, kvh = h / (NH / KVH);
  const int q0 = blockIdx.x * BQ;
  const int64_t QD = static_cast<int64_t>(NH) * D, KVD = static_cast<int64_t>(KVH) * D;
  for (int i = tid; i < BQ; i += NT) sSp[i] = q0 + i < Tq ? spans[q0 + i] : Span{0, 0, 0, 0};
  load_rows<D>(sQ, q + h * D, q0, Tq, QD, BQ, tid, NT);
  load_rows<D>(sO, dout + h * D, q0, Tq, QD, BQ, tid, NT);
  cp_commit();
  const Ivals iv = tile_ivals(sSp, BQ, lim, tid, NT);
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
  const float L0 = r0 < Tq ? lse[static_cast<int64_t>(r0) * NH + h] * kLog2e : 0.0f;
  const float L1 = r1 < Tq ? lse[static_cast<int64_t>(r1) * NH + h] * kLog2e : 0.0f;
  const float R0 = r0 < Tq ? drow[static_cast<int64_t>(r0) * NH + h] : 0.0f;
  const float R1 = r1 < Tq ? drow[static_cast<int64_t>(r1) * NH + h] : 0.0f;
  const Span sp0 = sSp[warp * 16 + g], sp1 = sSp[warp * 16 + g + 8];
  float acc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
  for (int ii = 0; ii < iv.n; ii++) {
    const int kend = iv.hi[ii];
    for (int kb = iv.lo[ii]; kb < kend; kb += BK) {
      const int ke = min(kb + BK, kend);
      int need = 0;
      for (int i = tid; i < BQ; i += NT) need |= hits(sSp[i], kb, ke);
      if (!__syncthreads_or(need)) continue;
      load_rows<D>(sK, k + kvh * D, kb, Tk, KVD, BK, tid, NT);
      load_rows<D>(sV, v + kvh * D, kb, Tk, KVD, BK, tid, NT);
      cp_commit();
      const bool wn = __any_sync(kFull, hits(sp0, kb, ke) || hits(sp1, kb, ke));
      cp_wait<0>();
      __syncthreads();
      if (wn) {
        float s[BK / 8][4], dp[BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) s[j][e] = dp[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
          uint32_t qa[4], oa[4];
          ldsm4(qa, sQ + (warp * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
          ldsm4(oa, sO + (warp * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
          for (int np = 0; np < BK / 16; np++) {
            uint32_t b[4];
            const int off = (np * 16 + (lane & 7) + (lane >> 4) * 8) * SD + kk * 16 + ((lane >> 3) & 1) * 8;
            ldsm4(b, sK + off);
            mma(s[2 * np], qa, b[0], b[1]);
            mma(s[2 * np + 1], qa, b[2], b[3]);
            ldsm4(b, sV + off);
            mma(dp[2 * np], oa, b[0], b[1]);
            mma(dp[2 * np + 1], oa, b[2], b[3]);
          }
        }
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int key = kb + j * 8 + 2 * t4 + (e & 1);
            const bool on = key < ke && in_span(e < 2 ? sp0 : sp1, key);
            const float p = on ? exp2f(s[j][e] * sl2 - (e < 2 ? L0 : L1)) : 0.0f;
            s[j][e] = p * (dp[j][e] - (e < 2 ? R0 : R1));  // dS
          }
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
          uint32_t a[4];
          to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
          for (int nd = 0; nd < D / 16; nd++) {
            uint32_t b[4];
            ldsm4t(b, sK + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * SD + nd * 16 + (lane >> 4) * 8);
            mma(acc[2 * nd], a, b[0], b[1]);
            mma(acc[2 * nd + 1], a, b[2], b[3]);
          }
        }
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int col = j * 8 + 2 * t4;
    if (r0 < Tq) add_pair(dq + r0 * QD + h * D + col, scale * acc[j][0], scale * acc[j][1]);
    if (r1 < Tq) add_pair(dq + r1 * QD + h * D + col, scale * acc[j][2], scale * acc[j][3]);
  }
}

// ---- backward dk, dv: one block per (64 keys, query head), walking the query tiles that read them ----
// rep == 1: dk, dv (Tk, KVH, D) += directly; else the head's share goes to dkp, dvp (Tk, NH, D) fp32.
template <int D>
__global__ void __launch_bounds__(128) dkdv_k(bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dkp,
                                              float* __restrict__ dvp, const bf16* __restrict__ dout,
                                              const bf16* __restrict__ q, const bf16* __restrict__ k,
                                              const bf16* __restrict__ v, const float* __restrict__ lse,
                                              const float* __restrict__ drow, const Span* __restrict__ spans,
                                              const int4* __restrict__ tiles, int ntiles, int Tq, int Tk, int NH,
                                              int KVH, float sl2, float scale) {
  constexpr int BK = 64, BQ = 32, SD = D + 8, NT = 128, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);
  bf16* sV = sK + BK * SD;
  bf16* sQ = sV + BK * SD;
  bf16* sO = sQ + BQ * SD;
  __shared__ Span sSp[BQ];
  __shared__ float sL[BQ], sR[BQ];
  __shared__ int flags[NT];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int h = blockIdx.y, rep = NH / KVH, kvh = h / rep;
  const int kb = blockIdx.x * BK, ke = min(kb + BK, Tk);
  const int64_t QD = static_cast<int64_t>(NH) * D, KVD = static_cast<int64_t>(KVH) * D;
  load_rows<D>(sK, k + kvh * D, kb, Tk, KVD, BK, tid, NT);
  load_rows<D>(sV, v + kvh * D, kb, Tk, KVD, BK, tid, NT);
  cp_commit();
  const int wk0 = kb + warp * 16, wk1 = wk0 + 16;
  const int key0 = wk0 + g, key1 = key0 + 8;
  float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) dka[j][e] = dva[j][e] = 0.0f;
  for (int c0 = 0; c0 < ntiles; c0 += NT) {
    __syncthreads();
    {
      const int ti = c0 + tid;
      int f = 0;
      if (ti < ntiles) {
        const int4 t = tiles[ti];
        f = (t.y > t.x && t.x < ke && t.y > kb) || (t.w > t.z && t.z < ke && t.w > kb);
      }
      flags[tid] = f;
    }
    __syncthreads();
    const int cn = min(NT, ntiles - c0);
    for (int i = 0; i < cn; i++) {
      if (!flags[i]) continue;
      const int ti = c0 + i, qr0 = ti * BQ;
      load_rows<D>(sQ, q + h * D, qr0, Tq, QD, BQ, tid, NT);
      load_rows<D>(sO, dout + h * D, qr0, Tq, QD, BQ, tid, NT);
      cp_commit();
      if (tid < BQ) {
        const int r = qr0 + tid;
        const bool ok = r < Tq;
        sSp[tid] = ok ? spans[r] : Span{0, 0, 0, 0};
        sL[tid] = ok ? lse[static_cast<int64_t>(r) * NH + h] * kLog2e : 0.0f;
        sR[tid] = ok ? drow[static_cast<int64_t>(r) * NH + h] : 0.0f;
      }
      const int4 t = tiles[ti];
      const bool wn = (t.y > t.x && t.x < wk1 && t.y > wk0) || (t.w > t.z && t.z < wk1 && t.w > wk0);
      cp_wait<0>();
      __syncthreads();
      if (wn) {
        float s[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
        for (int j = 0; j < BQ / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) s[j][e] = dp[j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
          uint32_t ka[4], va[4];
          ldsm4(ka, sK + (warp * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
          ldsm4(va, sV + (warp * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
          for (int np = 0; np < BQ / 16; np++) {
            uint32_t b[4];
            const int off = (np * 16 + (lane & 7) + (lane >> 4) * 8) * SD + kk * 16 + ((lane >> 3) & 1) * 8;
            ldsm4(b, sQ + off);
            mma(s[2 * np], ka, b[0], b[1]);
            mma(s[2 * np + 1], ka, b[2], b[3]);
            ldsm4(b, sO + off);
            mma(dp[2 * np], va, b[0], b[1]);
            mma(dp[2 * np + 1], va, b[2], b[3]);
          }
        }
#pragma unroll
        for (int j = 0; j < BQ / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int qc = j * 8 + 2 * t4 + (e & 1);
            const int key = e < 2 ? key0 : key1;
            const bool on = key < Tk && in_span(sSp[qc], key);
            const float p = on ? exp2f(s[j][e] * sl2 - sL[qc]) : 0.0f;
            s[j][e] = p;
            dp[j][e] = p * (dp[j][e] - sR[qc]);
          }
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
          uint32_t pa[4], da[4];
          to_a(pa, s[2 * kk], s[2 * kk + 1]);
          to_a(da, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
          for (int nd = 0; nd < D / 16; nd++) {
            uint32_t b[4];
            const int off = (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * SD + nd * 16 + (lane >> 4) * 8;
            ldsm4t(b, sO + off);
            mma(dva[2 * nd], pa, b[0], b[1]);
            mma(dva[2 * nd + 1], pa, b[2], b[3]);
            ldsm4t(b, sQ + off);
            mma(dka[2 * nd], da, b[0], b[1]);
            mma(dka[2 * nd + 1], da, b[2], b[3]);
          }
        }
      }
      __syncthreads();
    }
  }
  cp_wait<0>();  // the K/V copies, when no query tile read them
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int col = j * 8 + 2 * t4;
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int key = half ? key1 : key0;
      if (key >= Tk) continue;
      const float kx = scale * dka[j][2 * half], ky = scale * dka[j][2 * half + 1];
      const float vx = dva[j][2 * half], vy = dva[j][2 * half + 1];
      if (rep == 1) {
        if (dk) add_pair(dk + key * KVD + kvh * D + col, kx, ky);
        if (dv) add_pair(dv + key * KVD + kvh * D + col, vx, vy);
      } else {
        *reinterpret_cast<float2*>(dkp + key * QD + h * D + col) = make_float2(kx, ky);
        *reinterpret_cast<float2*>(dvp + key * QD + h * D + col) = make_float2(vx, vy);
      }
    }
  }
}

// ---- the per-head decode kernel that the GQA-packed one (flash_decode.cuh) replaced, kept for test_ops'
// comparison: one block per (16 rows, query head), so each query head re-reads its KV head's keys and values,
// and 16 rows of 16 distinct prompts walk every prompt's key blocks in turn. 4 warps split the tile's key
// blocks (block i to warp i % 4) and merge their partial softmax at the end, as the packed kernel does. ----
template <int D>
__global__ void __launch_bounds__(128) per_head_dec_k(bf16* __restrict__ out, float* __restrict__ lse,
                                             const bf16* __restrict__ q, const bf16* __restrict__ k,
                                             const bf16* __restrict__ v, const Span* __restrict__ spans, int Tq, int Tk,
                                             int NH, int KVH, float sl2) {
  constexpr int BQ = 16, BK = 64, SD = D + 8, W = 4, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sKV = sQ + BQ * SD;  // warp w: K at sKV + w * 2 * BK * SD, V BK * SD after it
  float* sM = reinterpret_cast<float*>(sKV);  // after the loop (reuses the K/V stages): m, l (W, BQ), o (W, BQ, D)
  float* sL = sM + W * BQ;
  float* sO = sL + W * BQ;
  __shared__ Span sSp[BQ];
  __shared__ int lim[4];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int h = blockIdx.y, kvh = h / (NH / KVH);
  const int q0 = blockIdx.x * BQ;
  const int64_t QD = static_cast<int64_t>(NH) * D, KVD = static_cast<int64_t>(KVH) * D;
  for (int i = tid; i < BQ; i += W * 32) sSp[i] = q0 + i < Tq ? spans[q0 + i] : Span{0, 0, 0, 0};
  load_rows<D>(sQ, q + h * D, q0, Tq, QD, BQ, tid, W * 32);
  cp_commit();
  const Ivals iv = tile_ivals(sSp, BQ, lim, tid, W * 32);
  cp_wait<0>();
  __syncthreads();
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; kk++) ldsm4(qf[kk], sQ + (lane & 15) * SD + kk * 16 + (lane >> 4) * 8);
  const Span sp0 = sSp[g], sp1 = sSp[g + 8];
  const Span mine = sSp[lane & 15];
  bf16* sK = sKV + warp * 2 * BK * SD;
  bf16* sV = sK + BK * SD;
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  int blk = 0;  // the index of a candidate key block over the intervals
  for (int ii = 0; ii < iv.n; ii++) {
    for (int kb = iv.lo[ii]; kb < iv.hi[ii]; kb += BK, blk++) {
      if (blk % W != warp) continue;
      const int ke = min(kb + BK, iv.hi[ii]);
      if (!__any_sync(kFull, hits(mine, kb, ke))) continue;
      load_rows<D>(sK, k + kvh * D, kb, Tk, KVD, BK, lane, 32);
      load_rows<D>(sV, v + kvh * D, kb, Tk, KVD, BK, lane, 32);
      cp_commit();
      cp_wait<0>();
      __syncwarp();
      {
        const bool full = ke - kb == BK && __all_sync(kFull, covers(sp0, kb, ke) && covers(sp1, kb, ke));
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
#pragma unroll
        for (int j = 0; j < BK / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int key = kb + j * 8 + 2 * t4 + (e & 1);
            const bool on = full || (key < ke && in_span(e < 2 ? sp0 : sp1, key));
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
      __syncwarp();  // the stage is refilled by this warp's next block
    }
  }
  // this warp's partial sums (rows g, g + 8; the quad's 4 lanes hold parts of l)
  l0 += __shfl_xor_sync(kFull, l0, 1);
  l0 += __shfl_xor_sync(kFull, l0, 2);
  l1 += __shfl_xor_sync(kFull, l1, 1);
  l1 += __shfl_xor_sync(kFull, l1, 2);
  __syncthreads();  // every warp is done with its K/V stage: the merge buffers take their place
  if (t4 == 0) {
    sM[warp * BQ + g] = m0;
    sM[warp * BQ + g + 8] = m1;
    sL[warp * BQ + g] = l0;
    sL[warp * BQ + g + 8] = l1;
  }
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int col = j * 8 + 2 * t4;
    sO[(warp * BQ + g) * D + col] = o[j][0];
    sO[(warp * BQ + g) * D + col + 1] = o[j][1];
    sO[(warp * BQ + g + 8) * D + col] = o[j][2];
    sO[(warp * BQ + g + 8) * D + col + 1] = o[j][3];
  }
  __syncthreads();
  // merge: row r, columns split over the block's threads
  for (int i = tid; i < BQ * D; i += W * 32) {
    const int r = i / D, c = i - r * D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; w++) M = fmaxf(M, sM[w * BQ + r]);
    const float base = M == -INFINITY ? 0.0f : M;
    float L = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < W; w++) {
      const float f = exp2f(sM[w * BQ + r] - base);
      L += sL[w * BQ + r] * f;
      acc += sO[(w * BQ + r) * D + c] * f;
    }
    const int row = q0 + r;
    if (row < Tq) {
      out[static_cast<int64_t>(row) * QD + h * D + c] = __float2bfloat16(L > 0.0f ? acc / L : 0.0f);
      if (c == 0) lse[static_cast<int64_t>(row) * NH + h] = L > 0.0f ? (M + log2f(L)) * kLn2 : -INFINITY;
    }
  }
}

}  // namespace
}  // namespace cu

namespace dev {

using cu::bf16;

namespace {

template <int D>
void forward_d(FlashVariant var, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans,
               int Tq, int Tk, int NH, int KVH, float sl2) {
  const bool pipe = var == FlashVariant::pipelined;
  const int stages = pipe ? 2 : 1;
  if (var == FlashVariant::wide) cu::launch_wide<D, 4>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  else if (var == FlashVariant::wide64) cu::launch_wide<D, 2>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  else if (cu::wide_call(Tq, NH)) {
    if (pipe) cu::launch_tiles<D, 4>(cu::fwd_p<D, 4>, stages, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
    else cu::launch_tiles<D, 4>(cu::fwd_k<D, 4>, stages, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  } else {
    if (pipe) cu::launch_tiles<D, 1>(cu::fwd_p<D, 1>, stages, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
    else cu::launch_tiles<D, 1>(cu::fwd_k<D, 1>, stages, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  }
  CU_LAUNCHED("attention_forward (flash variant)");
}

// the spans of one call on the device (the op's scratch)
Span* upload_spans(const Span* spans, int64_t Tq) {
  static thread_local cu::DArray<Span> d("attention spans");
  Span* p = d.fit(Tq);
  CU_CHECK(cudaMemcpyAsync(p, spans, Tq * sizeof(Span), cudaMemcpyHostToDevice, cu::stream()), "attention variant (spans)");
  return p;
}

template <int D>
void decode_d(DecodeKernel kern, int rows_per_tile, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
              const Span* dspans, int Tq, int Tk, int NH, int KVH, float sl2) {
  if (kern == DecodeKernel::packed) {
    cu::launch_decode<D>(cu::dec_tiles(Tq, NH, KVH, rows_per_tile), out, lse, q, k, v, dspans, Tq, Tk, NH, KVH, sl2);
  } else {
    const size_t sm = cu::dec_smem<D>();  // the same stages: a 16-row query tile, one K and V block per warp
    cu::allow_smem(cu::per_head_dec_k<D>, sm);
    cu::per_head_dec_k<D><<<dim3((Tq + 15) / 16, NH), 128, sm, cu::stream()>>>(out, lse, q, k, v, dspans, Tq, Tk, NH,
                                                                                KVH, sl2);
  }
  CU_LAUNCHED("attention_forward (decode variant)");
}

}  // namespace

void decode_forward(DecodeKernel kern, int rows_per_tile, bf16* out, float* lse, const bf16* q, const bf16* k,
                    const bf16* v, const Span* dspans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const float sl2 = cu::kLog2e / std::sqrt(static_cast<float>(D));
  VQ_FLASH_SWITCH(D, (decode_d<DD>(kern, rows_per_tile, out, lse, q, k, v, dspans, static_cast<int>(Tq),
                                   static_cast<int>(Tk), static_cast<int>(NH), static_cast<int>(KVH), sl2)));
}

int decode_tile_rows(int64_t Tq, int64_t NH, int64_t KVH, int rows_per_tile) {
  const cu::DecTiles t = cu::dec_tiles(Tq, NH, KVH, rows_per_tile);
  return t.slots % t.hc == 0 ? t.slots / t.hc : -1;
}

int decode_max_tile_rows(int64_t NH, int64_t KVH) {
  const cu::DecTiles t = cu::dec_tiles(1, NH, KVH, 1);
  return 16 / t.hc;
}

const char* variant_name(FlashVariant v) {
  switch (v) {
    case FlashVariant::pipelined: return "pipelined";
    case FlashVariant::simple: return "simple";
    case FlashVariant::wide: return "wide";
    case FlashVariant::wide64: return "wide64";
  }
  return "?";
}

void attention_forward(FlashVariant var, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                       const Span* spans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const Span* dsp = upload_spans(spans, Tq);
  const float sl2 = cu::kLog2e / std::sqrt(static_cast<float>(D));
  VQ_FLASH_SWITCH(D, (forward_d<DD>(var, out, lse, q, k, v, dsp, static_cast<int>(Tq), static_cast<int>(Tk),
                                    static_cast<int>(NH), static_cast<int>(KVH), sl2)));
}

void attention_backward(FlashVariant var, bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                        const bf16* v, const bf16* out, const float* lse, const Span* spans, int64_t Tq, int64_t Tk,
                        int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const Span* dsp = upload_spans(spans, Tq);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float sl2 = cu::kLog2e * scale;
  const int iTq = static_cast<int>(Tq), iTk = static_cast<int>(Tk), iNH = static_cast<int>(NH),
            iKVH = static_cast<int>(KVH);
  if (var != FlashVariant::simple) {  // the engine's backward
    cu::flash_backward(dq, dk, dv, dout, q, k, v, out, lse, dsp, Tq, Tk, NH, KVH, D);
    return;
  }
  VQ_FLASH_SWITCH(D, (cu::backward_launch<DD>(cu::dq_k<DD>, cu::dkdv_k<DD>, 1, dq, dk, dv, dout, q, k, v, out, lse, dsp,
                                              iTq, iTk, iNH, iKVH, sl2, scale)));
}

}  // namespace dev
}  // namespace vq
