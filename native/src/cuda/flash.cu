// Flash-style attention over spans on the tensor cores (see flash.h).
//
// Fragments follow the PTX layout of mma.m16n8k16 (bf16): with g = lane / 4 and t = lane % 4, a
// thread holds rows g and g + 8 of a 16-row tile and columns 2t, 2t + 1 of each 8-column tile of the
// fp32 accumulator. ldmatrix (.trans for a K-major operand) moves 8x8 bf16 blocks from shared memory
// into that layout. Shared-memory rows are padded by 8 elements (16 bytes), so the 8 row addresses
// of one 8x8 block fall in 8 different bank groups.
//
// Softmax runs in base 2 (scores scaled by scale * log2 e), the row max and sum online per key block;
// lse is written in natural log for the backward (as the CPU reference's).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "cuda/flash.h"
#include "cuda/gemm.h"

namespace vq {
namespace cu {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ uint32_t sptr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sptr(p)));
}
__device__ __forceinline__ void ldsm4t(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sptr(p)));
}
// c (16x8 fp32) += a (16x16 bf16, row) @ b (16x8 bf16, col)
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
// The A fragment (16 rows x 16 k) from two accumulator tiles (k 0-7 and 8-15) of the same rows.
__device__ __forceinline__ void to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack(c0[0], c0[1]);
  a[1] = pack(c0[2], c0[3]);
  a[2] = pack(c1[0], c1[1]);
  a[3] = pack(c1[2], c1[3]);
}
__device__ __forceinline__ void cp16(void* s, const void* g) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sptr(s)), "l"(g));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ bool in_span(const Span& s, int key) {
  return (key >= s.a0 && key < s.a1) || (key >= s.b0 && key < s.b1);
}
// any key of [k0, k1) in s
__device__ __forceinline__ bool hits(const Span& s, int k0, int k1) {
  return (s.a1 > s.a0 && s.a0 < k1 && s.a1 > k0) || (s.b1 > s.b0 && s.b0 < k1 && s.b1 > k0);
}

// Rows [r0, r0 + rows) of an (n, ld) bf16 matrix, D columns from g, into shared rows of D + 8; rows
// at or past n are zero (so masked probabilities never meet NaN).
template <int D>
__device__ __forceinline__ void load_rows(bf16* sm, const bf16* g, int64_t r0, int64_t n, int64_t ld, int rows, int tid,
                                          int nt) {
  constexpr int CH = D / 8, SD = D + 8;
  for (int i = tid; i < rows * CH; i += nt) {
    const int r = i / CH, c = (i - r * CH) * 8;
    bf16* dst = sm + r * SD + c;
    if (r0 + r < n) cp16(dst, g + (r0 + r) * ld + c);
    else *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
  }
}

struct Ivals {
  int lo[2], hi[2], n;
};

// The key intervals a tile of rows reads (the union of the rows' two ranges, merged when they meet).
__device__ Ivals tile_ivals(const Span* sp, int rows, int* lim, int tid, int nt) {
  if (tid == 0) {
    lim[0] = INT_MAX; lim[1] = INT_MIN; lim[2] = INT_MAX; lim[3] = INT_MIN;
  }
  __syncthreads();
  for (int i = tid; i < rows; i += nt) {
    const Span s = sp[i];
    if (s.a1 > s.a0) { atomicMin(&lim[0], s.a0); atomicMax(&lim[1], s.a1); }
    if (s.b1 > s.b0) { atomicMin(&lim[2], s.b0); atomicMax(&lim[3], s.b1); }
  }
  __syncthreads();
  Ivals v;
  v.n = 0;
  if (lim[1] > lim[0]) { v.lo[0] = lim[0]; v.hi[0] = lim[1]; v.n = 1; }
  if (lim[3] > lim[2]) {
    if (v.n && lim[2] <= v.hi[0] && lim[3] >= v.lo[0]) {
      v.lo[0] = min(v.lo[0], lim[2]);
      v.hi[0] = max(v.hi[0], lim[3]);
    } else {
      v.lo[v.n] = lim[2]; v.hi[v.n] = lim[3]; v.n++;
    }
  }
  return v;
}

// ---- forward: one block per (BQ query rows, head) ----
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

// ---- backward helpers ----
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

__device__ __forceinline__ void add_pair(bf16* p, float x, float y) {
  __nv_bfloat162* q = reinterpret_cast<__nv_bfloat162*>(p);
  const float2 o = __bfloat1622float2(*q);
  *q = __floats2bfloat162_rn(o.x + x, o.y + y);
}

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

// ---- the pipelined kernels (default): the next key block (forward, dq) or query tile (dk dv) is
// copied into a second shared-memory stage while the current one is computed, and blocks that every
// row of a warp reads in full skip the per-element mask (vision frames, the causal prefix away from
// the diagonal). Same fragments and arithmetic as the kernels above. ----

// [k0, k1) inside one of the span's ranges
__device__ __forceinline__ bool covers(const Span& s, int k0, int k1) {
  return (s.a0 <= k0 && k1 <= s.a1) || (s.b0 <= k0 && k1 <= s.b1);
}

// From candidate block (ii, kb) on, the first key block of the intervals that a row of the tile reads
// (block-uniform; contains barriers). False when none is left.
template <int BK>
__device__ bool next_block(const Ivals& iv, int& ii, int& kb, const Span* sSp, int rows, int tid, int nt) {
  while (ii < iv.n) {
    if (kb >= iv.hi[ii]) {
      ii++;
      if (ii < iv.n) kb = iv.lo[ii];
      continue;
    }
    const int ke = min(kb + BK, iv.hi[ii]);
    int need = 0;
    for (int i = tid; i < rows; i += nt) need |= hits(sSp[i], kb, ke);
    if (__syncthreads_or(need)) return true;
    kb += BK;
  }
  return false;
}

// The first query tile at or after `from` whose key intervals meet [k0, k1) (block-uniform; -1 if none).
template <int NT>
__device__ int next_tile(const int4* tiles, int ntiles, int from, int k0, int k1, int* sh, int tid) {
  for (int c0 = from; c0 < ntiles; c0 += NT) {
    const int ti = c0 + tid;
    int f = 0;
    if (ti < ntiles) {
      const int4 t = tiles[ti];
      f = (t.y > t.x && t.x < k1 && t.y > k0) || (t.w > t.z && t.z < k1 && t.w > k0);
    }
    if (tid == 0) *sh = INT_MAX;
    __syncthreads();
    if (f) atomicMin(sh, ti);
    __syncthreads();
    const int r = *sh;
    __syncthreads();
    if (r != INT_MAX) return r;
  }
  return -1;
}

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

template <int D>
__global__ void __launch_bounds__(128) dq_p(bf16* __restrict__ dq, const bf16* __restrict__ dout,
                                            const bf16* __restrict__ q, const bf16* __restrict__ k,
                                            const bf16* __restrict__ v, const float* __restrict__ lse,
                                            const float* __restrict__ drow, const Span* __restrict__ spans, int Tq,
                                            int Tk, int NH, int KVH, float sl2, float scale) {
  constexpr int BQ = 64, BK = 64, SD = D + 8, NT = 128, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sO = sQ + BQ * SD;  // dout
  bf16* sKV = sO + BQ * SD;  // two stages of K, V
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
  int ii = 0, kb = iv.n ? iv.lo[0] : 0;
  bool have = next_block<BK>(iv, ii, kb, sSp, BQ, tid, NT);
  if (have) {
    load_rows<D>(sKV, k + kvh * D, kb, Tk, KVD, BK, tid, NT);
    load_rows<D>(sKV + BK * SD, v + kvh * D, kb, Tk, KVD, BK, tid, NT);
  }
  cp_commit();
  float acc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
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
          const int key = ckb + j * 8 + 2 * t4 + (e & 1);
          const bool on = full || (key < cke && in_span(e < 2 ? sp0 : sp1, key));
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
    have = nxt;
    ii = nii;
    kb = nkb;
    st ^= 1;
  }
  cp_wait<0>();
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int col = j * 8 + 2 * t4;
    if (r0 < Tq) add_pair(dq + r0 * QD + h * D + col, scale * acc[j][0], scale * acc[j][1]);
    if (r1 < Tq) add_pair(dq + r1 * QD + h * D + col, scale * acc[j][2], scale * acc[j][3]);
  }
}

template <int D>
__global__ void __launch_bounds__(128) dkdv_p(bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dkp,
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
  bf16* sQO = sV + BK * SD;  // stage s: Q at sQO + s * 2 * BQ * SD, dout BQ * SD after it
  __shared__ Span sSp[2][BQ];
  __shared__ float sL[2][BQ], sR[2][BQ];
  __shared__ int sh;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int h = blockIdx.y, rep = NH / KVH, kvh = h / rep;
  const int kb = blockIdx.x * BK, ke = min(kb + BK, Tk);
  const int64_t QD = static_cast<int64_t>(NH) * D, KVD = static_cast<int64_t>(KVH) * D;
  load_rows<D>(sK, k + kvh * D, kb, Tk, KVD, BK, tid, NT);
  load_rows<D>(sV, v + kvh * D, kb, Tk, KVD, BK, tid, NT);
  cp_commit();
  const int wk0 = kb + warp * 16, wk1 = wk0 + 16;
  const int key0 = wk0 + g, key1 = key0 + 8;
  auto stage = [&](int ti, int s) {
    const int qr0 = ti * BQ;
    bf16* sq = sQO + s * 2 * BQ * SD;
    load_rows<D>(sq, q + h * D, qr0, Tq, QD, BQ, tid, NT);
    load_rows<D>(sq + BQ * SD, dout + h * D, qr0, Tq, QD, BQ, tid, NT);
    if (tid < BQ) {
      const int r = qr0 + tid;
      const bool ok = r < Tq;
      sSp[s][tid] = ok ? spans[r] : Span{0, 0, 0, 0};
      sL[s][tid] = ok ? lse[static_cast<int64_t>(r) * NH + h] * kLog2e : 0.0f;
      sR[s][tid] = ok ? drow[static_cast<int64_t>(r) * NH + h] : 0.0f;
    }
  };
  float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) dka[j][e] = dva[j][e] = 0.0f;
  int cur = next_tile<NT>(tiles, ntiles, 0, kb, ke, &sh, tid);
  if (cur >= 0) stage(cur, 0);
  cp_commit();
  int st = 0;
  while (cur >= 0) {
    const int nxt = next_tile<NT>(tiles, ntiles, cur + 1, kb, ke, &sh, tid);
    if (nxt >= 0) stage(nxt, st ^ 1);
    cp_commit();
    cp_wait<1>();
    __syncthreads();
    const int4 t = tiles[cur];
    const bf16* sQ = sQO + st * 2 * BQ * SD;
    const bf16* sO = sQ + BQ * SD;
    const Span* sp = sSp[st];
    const float* lL = sL[st];
    const float* lR = sR[st];
    if ((t.y > t.x && t.x < wk1 && t.y > wk0) || (t.w > t.z && t.z < wk1 && t.w > wk0)) {
      const bool full = wk1 <= Tk && __all_sync(kFull, covers(sp[lane], wk0, wk1));
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
          const bool on = full || (key < Tk && in_span(sp[qc], key));
          const float p = on ? exp2f(s[j][e] * sl2 - lL[qc]) : 0.0f;
          s[j][e] = p;
          dp[j][e] = p * (dp[j][e] - lR[qc]);
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
    cur = nxt;
    st ^= 1;
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

// ---- the decode kernel: few query rows (a decode step, small calls) over long key ranges. One block
// per (16 rows, head) with 4 warps that split the tile's key blocks between them (block i to warp
// i % 4), each with its own online softmax and its own shared-memory stage; the warps' partial
// results are merged at the end (max, rescaled sums). The warps interleave their copies and math,
// which a single warp walking every block cannot do. ----
template <int D>
__global__ void __launch_bounds__(128) dec_k(bf16* __restrict__ out, float* __restrict__ lse,
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

// Raises a kernel's dynamic shared-memory limit once (not during a graph capture: the first call of
// each kernel is eager).
// Keyed by the kernel's address and the device: instances of one signature (fwd_k<128, 4> and
// fwd_k<64, 4>) share a function type, so a per-type static would mix them up.
template <typename K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> done;
  int dev = 0;
  CU_CHECK(cudaGetDevice(&dev), "flash attention (device)");
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), dev);
  std::lock_guard<std::mutex> lock(mu);
  auto it = done.find(key);
  if (it != done.end() && it->second >= bytes) return;
  CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
           "flash attention (shared memory)");
  done[key] = bytes;
}

int sm_count() {
  static int n = [] {
    int dev = 0, c = 132;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev);
    return c;
  }();
  return n;
}

bool pipelined();  // below
bool pipeline_forced();
bool split_decode();

template <int D>
void forward_d(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int Tq, int Tk,
               int NH, int KVH, float sl2) {
  // 4 warps (64 rows) reuse each key block 4 times; single-warp blocks keep small calls (decode) spread
  const bool wide = static_cast<int64_t>((Tq + 63) / 64) * NH >= 2 * sm_count();
  // measured on an H200 (test_ops --bench): the two stages pay at D 80 (vision, 92 -> 138 TFLOP/s) but
  // not at D 128 (LM, 41 -> 36: twice the shared memory, fewer blocks per SM), unless forced (tests)
  const bool pipe = pipelined() && (D != 128 || pipeline_forced());
  const int stages = pipe ? 2 : 1;
  if (wide) {
    const size_t sm = (64 + stages * 2 * 64) * (D + 8) * sizeof(bf16);
    auto kern = pipe ? fwd_p<D, 4> : fwd_k<D, 4>;
    allow_smem(kern, sm);
    kern<<<dim3((Tq + 63) / 64, NH), 128, sm, stream()>>>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  } else if (split_decode()) {
    const size_t sm = (16 + 4 * 2 * 64) * (D + 8) * sizeof(bf16);
    allow_smem(dec_k<D>, sm);
    dec_k<D><<<dim3((Tq + 15) / 16, NH), 128, sm, stream()>>>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  } else {
    const size_t sm = (16 + stages * 2 * 64) * (D + 8) * sizeof(bf16);
    auto kern = pipe ? fwd_p<D, 1> : fwd_k<D, 1>;
    allow_smem(kern, sm);
    kern<<<dim3((Tq + 15) / 16, NH), 32, sm, stream()>>>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  }
  CU_LAUNCHED("attention_forward (flash)");
}

struct Scratch {
  DArray<float> drow{"attention row sums"}, dkp{"attention dk partials"}, dvp{"attention dv partials"};
  DArray<int4> tiles{"attention tiles"};
};
thread_local Scratch* g_scratch = nullptr;

template <int D>
void backward_d(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                const bf16* out, const float* lse, const Span* spans, int Tq, int Tk, int NH, int KVH, float sl2,
                float scale) {
  if (!g_scratch) g_scratch = new Scratch();
  Scratch& sc = *g_scratch;
  const int64_t nrh = static_cast<int64_t>(Tq) * NH;
  float* dr = sc.drow.fit(nrh);
  drow_k<<<static_cast<unsigned>((nrh * 32 + 255) / 256), 256, 0, stream()>>>(dr, dout, out, nrh, D);
  CU_LAUNCHED("attention_backward (row sums)");
  const bool pipe = pipelined();
  const int stages = pipe ? 2 : 1;
  if (dq) {
    const size_t sm = (2 * 64 + stages * 2 * 64) * (D + 8) * sizeof(bf16);
    auto kern = pipe ? dq_p<D> : dq_k<D>;
    allow_smem(kern, sm);
    kern<<<dim3((Tq + 63) / 64, NH), 128, sm, stream()>>>(dq, dout, q, k, v, lse, dr, spans, Tq, Tk, NH, KVH, sl2,
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
    auto kern = pipe ? dkdv_p<D> : dkdv_k<D>;
    allow_smem(kern, sm);
    kern<<<dim3((Tk + 63) / 64, NH), 128, sm, stream()>>>(dk, dv, dkp, dvp, dout, q, k, v, lse, dr, spans, tab, ntiles,
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

bool flash_supported(int64_t D) { return D == 16 || D == 64 || D == 80 || D == 128; }

namespace {
int g_flash_override = -1, g_pipe_override = -1;
bool pipelined() {
  static const bool on = [] {
    const char* e = std::getenv("VQALAB_CUDA_FLASH");
    return !(e && std::strcmp(e, "simple") == 0);
  }();
  return g_pipe_override >= 0 ? g_pipe_override == 1 : on;
}
bool pipeline_forced() { return g_pipe_override == 1; }
// Small calls (decode steps) take dec_k unless a test or benchmark chose the kernels (override) or
// VQALAB_CUDA_DECODE=0.
bool split_decode() {
  static const bool on = [] {
    const char* e = std::getenv("VQALAB_CUDA_DECODE");
    return !(e && e[0] == '0');
  }();
  return on && g_pipe_override < 0;
}
}  // namespace
void flash_override(int mode) { g_flash_override = mode; }
void flash_pipeline_override(int mode) { g_pipe_override = mode; }
bool flash_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("VQALAB_CUDA_ATTN");
    return !(e && std::strcmp(e, "gemm") == 0);
  }();
  return g_flash_override >= 0 ? g_flash_override == 1 : on;
}

double attention_flops(const Span* sp, int64_t Tq, int64_t NH, int64_t D) {
  double keys = 0.0;
  for (int64_t i = 0; i < Tq; i++)
    keys += static_cast<double>(std::max(0, sp[i].a1 - sp[i].a0)) + static_cast<double>(std::max(0, sp[i].b1 - sp[i].b0));
  return 4.0 * static_cast<double>(NH) * static_cast<double>(D) * keys;
}

#define VQ_FLASH_SWITCH(D, CALL)                    \
  switch (D) {                                      \
    case 16: { constexpr int DD = 16; CALL; break; }   \
    case 64: { constexpr int DD = 64; CALL; break; }   \
    case 80: { constexpr int DD = 80; CALL; break; }   \
    case 128: { constexpr int DD = 128; CALL; break; } \
    default: VQ_FAIL("flash attention: head dim " << D << " is not supported"); \
  }

void flash_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int64_t Tq,
                   int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const float sl2 = kLog2e / std::sqrt(static_cast<float>(D));
  VQ_FLASH_SWITCH(D, (forward_d<DD>(out, lse, q, k, v, spans, static_cast<int>(Tq), static_cast<int>(Tk),
                                    static_cast<int>(NH), static_cast<int>(KVH), sl2)));
}

void flash_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                    const bf16* out, const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH,
                    int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float sl2 = kLog2e * scale;
  VQ_FLASH_SWITCH(D, (backward_d<DD>(dq, dk, dv, dout, q, k, v, out, lse, spans, static_cast<int>(Tq),
                                     static_cast<int>(Tk), static_cast<int>(NH), static_cast<int>(KVH), sl2, scale)));
}

}  // namespace cu
}  // namespace vq
