// The fused attention forward (flash.h): the split decode kernel and the dispatch by head dim and size of the
// call (the kernels over query tiles: flash_forward_kernels.cuh).
#include "cuda/flash_forward_kernels.cuh"

namespace vq {
namespace cu {

namespace {

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

template <int D>
void forward_d(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int Tq, int Tk,
               int NH, int KVH, float sl2) {
  if (wide_call(Tq, NH)) {
    // measured on an H200 (test_ops --bench): the two stages pay at D 80 (vision, 92 -> 138 TFLOP/s) but
    // not at D 128 (LM, 41 -> 36: twice the shared memory, fewer blocks per SM)
    if constexpr (D == 128) launch_tiles<D, 4>(fwd_k<D, 4>, 1, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
    else launch_tiles<D, 4>(fwd_p<D, 4>, 2, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  } else {
    const size_t sm = (16 + 4 * 2 * 64) * (D + 8) * sizeof(bf16);
    allow_smem(dec_k<D>, sm);
    dec_k<D><<<dim3((Tq + 15) / 16, NH), 128, sm, stream()>>>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  }
  CU_LAUNCHED("attention_forward (flash)");
}

}  // namespace

void flash_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int64_t Tq,
                   int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const float sl2 = kLog2e / std::sqrt(static_cast<float>(D));
  VQ_FLASH_SWITCH(D, (forward_d<DD>(out, lse, q, k, v, spans, static_cast<int>(Tq), static_cast<int>(Tk),
                                    static_cast<int>(NH), static_cast<int>(KVH), sl2)));
}

}  // namespace cu
}  // namespace vq
