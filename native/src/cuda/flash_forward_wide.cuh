// Internal to the fused attention: the forward over query tiles with 32 query rows per warp (two m16 atoms), fwd_w.
// Why: with 16 rows per warp (fwd_k, fwd_p) every K or V fragment a warp reads from shared memory with ldmatrix
// feeds only 2 mma, so those kernels are bound by shared-memory bandwidth; here each fragment feeds 4 (one per
// atom), as FlashAttention-2's 128-row tiles do. Otherwise as fwd_p (flash_forward_kernels.cuh): two K/V stages
// (the next key block is copied while the current one is computed), the same key intervals and block skipping
// (tile_ivals, next_block), full blocks skip the per-element mask, rows with no keys get lse -inf and zero output.
// Selected per process by set_flash_forward (flash.h); the tile kernels stay the default until measured.
//
// Registers: at D <= 80 Q's fragments stay in registers for the whole tile; at D 128 (128 fp32 of O per thread)
// they are re-read from shared memory at each k step (as FlashAttention-2 does) and key blocks are 32 wide (the
// scores of a 64-key block would not fit beside O without spilling).
#pragma once
#include "cuda/flash_common.cuh"

namespace vq {
namespace cu {

namespace {

template <int D>
constexpr int wide_bk() { return D == 128 ? 32 : 64; }

template <int D, int WARPS, int BK>
__global__ void __launch_bounds__(WARPS * 32) fwd_w(bf16* __restrict__ out, float* __restrict__ lse,
                                                    const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                    const bf16* __restrict__ v, const Span* __restrict__ spans, int Tq,
                                                    int Tk, int NH, int KVH, float sl2) {
  constexpr int BQ = WARPS * 32, SD = D + 8, NT = WARPS * 32, KS = D / 16, NB = BK / 8;
  constexpr bool QR = D <= 80;  // Q's fragments held in registers
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
  // the warp's 32 rows: atom a holds rows a * 16 .. a * 16 + 15; this thread's rows are 8 r + g (r = 2 a + half)
  const bf16* sQw = sQ + warp * 32 * SD;
  uint32_t qf[2][QR ? KS : 1][4];
  if constexpr (QR) {
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
      for (int kk = 0; kk < KS; kk++) ldsm4(qf[a][kk], sQw + (a * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
  }
  // this thread's spans, read from shared memory where used (16 registers fewer than holding them, as fwd_p does)
  const Span* sp = sSp + warp * 32 + g;
  float o[2][D / 8][4];
#pragma unroll
  for (int a = 0; a < 2; a++)
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[a][j][0] = o[a][j][1] = o[a][j][2] = o[a][j][3] = 0.0f;
  float m[4], l[4];
#pragma unroll
  for (int r = 0; r < 4; r++) { m[r] = -INFINITY; l[r] = 0.0f; }
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
    bool hit = false, cov = cke - ckb == BK;
#pragma unroll
    for (int r = 0; r < 4; r++) {
      hit = hit || hits(sp[8 * r], ckb, cke);
      cov = cov && covers(sp[8 * r], ckb, cke);
    }
    if (__any_sync(kFull, hit)) {
      const bool full = __all_sync(kFull, cov);
      float s[2][NB][4];
#pragma unroll
      for (int a = 0; a < 2; a++)
#pragma unroll
        for (int j = 0; j < NB; j++) s[a][j][0] = s[a][j][1] = s[a][j][2] = s[a][j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KS; kk++) {
        const int qk = QR ? kk : 0;
        if constexpr (!QR) {
#pragma unroll
          for (int a = 0; a < 2; a++) ldsm4(qf[a][0], sQw + (a * 16 + (lane & 15)) * SD + kk * 16 + (lane >> 4) * 8);
        }
#pragma unroll
        for (int np = 0; np < BK / 16; np++) {
          uint32_t b[4];
          ldsm4(b, sK + (np * 16 + (lane & 7) + (lane >> 4) * 8) * SD + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int a = 0; a < 2; a++) {
            mma(s[a][2 * np], qf[a][qk], b[0], b[1]);
            mma(s[a][2 * np + 1], qf[a][qk], b[2], b[3]);
          }
        }
      }
      float mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
      if (full) {
#pragma unroll
        for (int a = 0; a < 2; a++)
#pragma unroll
          for (int j = 0; j < NB; j++) {
            s[a][j][0] *= sl2; s[a][j][1] *= sl2; s[a][j][2] *= sl2; s[a][j][3] *= sl2;
            mx[2 * a] = fmaxf(mx[2 * a], fmaxf(s[a][j][0], s[a][j][1]));
            mx[2 * a + 1] = fmaxf(mx[2 * a + 1], fmaxf(s[a][j][2], s[a][j][3]));
          }
      } else {
#pragma unroll
        for (int a = 0; a < 2; a++)
#pragma unroll
          for (int j = 0; j < NB; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              const int r = 2 * a + (e >> 1), key = ckb + j * 8 + 2 * t4 + (e & 1);
              const bool on = key < cke && in_span(sp[8 * r], key);
              s[a][j][e] = on ? s[a][j][e] * sl2 : -INFINITY;
              mx[r] = fmaxf(mx[r], s[a][j][e]);
            }
      }
      float base[4], alpha[4], rs[4];
#pragma unroll
      for (int r = 0; r < 4; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFull, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFull, mx[r], 2));
        const float n = fmaxf(m[r], mx[r]);
        base[r] = n == -INFINITY ? 0.0f : n;
        alpha[r] = exp2f(m[r] - base[r]);
        m[r] = n;
        rs[r] = 0.0f;
      }
#pragma unroll
      for (int a = 0; a < 2; a++)
#pragma unroll
        for (int j = 0; j < NB; j++) {
          s[a][j][0] = exp2f(s[a][j][0] - base[2 * a]);
          s[a][j][1] = exp2f(s[a][j][1] - base[2 * a]);
          s[a][j][2] = exp2f(s[a][j][2] - base[2 * a + 1]);
          s[a][j][3] = exp2f(s[a][j][3] - base[2 * a + 1]);
          rs[2 * a] += s[a][j][0] + s[a][j][1];
          rs[2 * a + 1] += s[a][j][2] + s[a][j][3];
        }
#pragma unroll
      for (int r = 0; r < 4; r++) l[r] = l[r] * alpha[r] + rs[r];
#pragma unroll
      for (int a = 0; a < 2; a++)
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
          o[a][j][0] *= alpha[2 * a]; o[a][j][1] *= alpha[2 * a];
          o[a][j][2] *= alpha[2 * a + 1]; o[a][j][3] *= alpha[2 * a + 1];
        }
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++) {
        uint32_t pa[2][4];
#pragma unroll
        for (int a = 0; a < 2; a++) to_a(pa[a], s[a][2 * kk], s[a][2 * kk + 1]);
#pragma unroll
        for (int nd = 0; nd < D / 16; nd++) {
          uint32_t b[4];
          ldsm4t(b, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * SD + nd * 16 + (lane >> 4) * 8);
#pragma unroll
          for (int a = 0; a < 2; a++) {
            mma(o[a][2 * nd], pa[a], b[0], b[1]);
            mma(o[a][2 * nd + 1], pa[a], b[2], b[3]);
          }
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
#pragma unroll
  for (int r = 0; r < 4; r++) {
    l[r] += __shfl_xor_sync(kFull, l[r], 1);
    l[r] += __shfl_xor_sync(kFull, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const int row = q0 + warp * 32 + 8 * r + g, a = r >> 1, e0 = 2 * (r & 1);
    if (row >= Tq) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
      const int col = j * 8 + 2 * t4;
      *reinterpret_cast<__nv_bfloat162*>(out + row * QD + h * D + col) =
          __floats2bfloat162_rn(o[a][j][e0] * inv, o[a][j][e0 + 1] * inv);
    }
    if (t4 == 0) lse[static_cast<int64_t>(row) * NH + h] = l[r] > 0.0f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
  }
}

// Launches fwd_w with WARPS warps (32 query rows each) and two K/V stages of wide_bk<D>() keys.
template <int D, int WARPS>
void launch_wide(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int Tq, int Tk,
                 int NH, int KVH, float sl2) {
  constexpr int BQ = WARPS * 32, BK = wide_bk<D>();
  const auto kern = fwd_w<D, WARPS, BK>;
  const size_t sm = static_cast<size_t>(BQ + 2 * 2 * BK) * (D + 8) * sizeof(bf16);
  allow_smem(kern, sm);
  kern<<<dim3((Tq + BQ - 1) / BQ, NH), WARPS * 32, sm, stream()>>>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
}

}  // namespace

}  // namespace cu
}  // namespace vq
