// The fused attention backward (flash.h): dq per query tile and dk/dv per key block (pipelined kernels), and
// the dispatch by head dim (row sums, tiles and the GQA reduction: flash_backward_steps.cuh).
#include "cuda/flash_backward_steps.cuh"

namespace vq {
namespace cu {

namespace {

// ---- pipelined (flash_common.cuh): dq, one block per (64 query rows, head), walking the key blocks; dk dv, one
// block per (64 keys, query head), walking the query tiles that read them (rep == 1: dk, dv (Tk, KVH, D) +=
// directly; else the head's share goes to dkp, dvp (Tk, NH, D) fp32) ----
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


}  // namespace

void flash_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                    const bf16* out, const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH,
                    int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float sl2 = kLog2e * scale;
  VQ_FLASH_SWITCH(D, (backward_launch<DD>(dq_p<DD>, dkdv_p<DD>, 2, dq, dk, dv, dout, q, k, v, out, lse, spans,
                                          static_cast<int>(Tq), static_cast<int>(Tk), static_cast<int>(NH),
                                          static_cast<int>(KVH), sl2, scale)));
}

}  // namespace cu
}  // namespace vq
