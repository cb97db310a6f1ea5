// Internal to the fused attention: the decode kernel (calls too small to fill the card with 64-row tiles: decode
// steps, small prefills, single images), included by flash_forward.cu (the engine's dispatch) and
// native/dev/flash_variants.cu (every tile layout for test_ops, and the per-head kernel it replaced).
//
// GQA packing: a block's 16 query slots (the M of mma.m16n8k16) hold (row, query head) pairs of ONE KV head,
// so every key/value block it loads serves all the query heads that read it, and rows next to each other
// (the samples of one prompt) read their shared keys once. With rep = NH / KVH query heads per KV head
// (split into chunks of at most 16 when rep > 16), slot p of tile t is the pair t * slots + p of the list
// (row 0 head 0, row 0 head 1, ..., row 1 head 0, ...) of one chunk; `slots` is a whole number of rows
// (row-aligned: no row's keys read by two tiles) or 16 (flattened: every slot used, rows may straddle tiles).
//
// Inside a block, 4 warps split the key blocks its slots read (the i-th such block to warp i % 4), each with its
// own online softmax and its own shared-memory stage (K, then V copied while the scores are computed), and
// merge their partial results at the end (max, rescaled sums): the warps interleave their copies and math,
// which one warp walking every block cannot.
//
// Why no split-K over blocks (partials in global memory, a combine pass): the host picks the layout so that
// the grid fills the card instead (dec_tiles: fewer rows per tile while the grid still fits one wave),
// which for the decode steps we run (128 rows in groups, or 64 distinct prompts, 12/2 heads) gives ~128
// blocks of a few key blocks per warp; a split would need a scratch buffer sized per call (allocated
// outside the captured decode graphs) and a second kernel, for a gain only at long contexts over very few
// rows. Revisit if those matter.
#pragma once
#include "cuda/flash_common.cuh"

namespace vq {
namespace cu {

namespace {

// A decode call's tile layout (see above).
struct DecTiles {
  int hc;      // query heads per chunk: rep split into nchunk chunks of at most 16
  int nchunk;
  int slots;   // pairs per tile (<= 16)
  int ntiles;  // tiles over one chunk's pairs (Tq * hc)
};

// rows_per_tile: 0 = the engine's choice; -1 = flattened (16 slots); n > 0 = n rows per tile (at most 16 / hc).
// The engine's choice: flattened when even that grid fills the card (fewest blocks, every mma row used);
// else row-aligned, with the fewest rows per tile whose grid still fits one wave (one block per SM: the
// stages take 143 KB at D 128). Fewer rows per tile means fewer distinct key ranges (prompts, completions)
// walked one after the other by each block.
inline DecTiles dec_tiles(int64_t Tq, int64_t NH, int64_t KVH, int rows_per_tile) {
  const int rep = static_cast<int>(NH / KVH);
  DecTiles t;
  t.nchunk = (rep + 15) / 16;
  t.hc = (rep + t.nchunk - 1) / t.nchunk;
  const int64_t pairs = Tq * t.hc;
  auto blocks = [&](int slots) { return (pairs + slots - 1) / slots * KVH * t.nchunk; };
  const int rmax = 16 / t.hc;
  if (rows_per_tile > 0) {
    t.slots = std::min(rows_per_tile, rmax) * t.hc;
  } else {
    t.slots = 16;
    const int64_t cap = sm_count();
    if (rows_per_tile == 0 && blocks(16) < cap)
      for (int r = rmax; r >= 1 && blocks(r * t.hc) <= cap; r /= 2) t.slots = r * t.hc;
  }
  t.ntiles = static_cast<int>((pairs + t.slots - 1) / t.slots);
  return t;
}

template <int D>
constexpr size_t dec_smem() {
  return (16 + 4 * 2 * 64) * (D + 8) * sizeof(bf16);  // Q tile, then one K and one V block per warp
}

// grid (ntiles, KVH * nchunk), 128 threads, dec_smem<D>() bytes
template <int D>
__global__ void __launch_bounds__(128) dec_gqa_k(bf16* __restrict__ out, float* __restrict__ lse,
                                                 const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                 const bf16* __restrict__ v, const Span* __restrict__ spans, int Tq,
                                                 int Tk, int NH, int KVH, int hc, int slots, float sl2) {
  constexpr int BQ = 16, BK = 64, SD = D + 8, W = 4, NT = W * 32, KS = D / 16, CH = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sKV = sQ + BQ * SD;  // warp w: K at sKV + w * 2 * BK * SD, V BK * SD after it
  float* sM = reinterpret_cast<float*>(sKV);  // after the loop (reuses the K/V stages): m, l (W, BQ), o (W, BQ, D)
  float* sL = sM + W * BQ;
  float* sO = sL + W * BQ;
  __shared__ Span sSp[BQ];            // the slot's row's span (empty for a slot without a pair)
  __shared__ int sRow[BQ], sHead[BQ];  // the slot's query row and query head; -1: no pair
  __shared__ int lim[4];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int rep = NH / KVH, nchunk = static_cast<int>(gridDim.y) / KVH;
  const int kvh = static_cast<int>(blockIdx.y) / nchunk, chunk = static_cast<int>(blockIdx.y) - kvh * nchunk;
  const int64_t QD = static_cast<int64_t>(NH) * D, KVD = static_cast<int64_t>(KVH) * D;
  if (tid < BQ) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * slots + tid;
    const int64_t row = idx / hc;
    const int hh = chunk * hc + static_cast<int>(idx - row * hc);
    const bool ok = tid < slots && row < Tq && hh < rep;
    sRow[tid] = ok ? static_cast<int>(row) : -1;
    sHead[tid] = ok ? kvh * rep + hh : -1;
    sSp[tid] = ok ? spans[row] : Span{0, 0, 0, 0};
  }
  __syncthreads();
  // the slots' query vectors (zero for a slot without a pair)
  for (int i = tid; i < BQ * CH; i += NT) {
    const int p = i / CH, c = (i - p * CH) * 8;
    bf16* dst = sQ + p * SD + c;
    if (sRow[p] >= 0) cp16(dst, q + sRow[p] * QD + static_cast<int64_t>(sHead[p]) * D + c);
    else *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
  }
  cp_commit();
  const Ivals iv = tile_ivals(sSp, BQ, lim, tid, NT);
  cp_wait<0>();
  __syncthreads();
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; kk++) ldsm4(qf[kk], sQ + (lane & 15) * SD + kk * 16 + (lane >> 4) * 8);
  const Span sp0 = sSp[g], sp1 = sSp[g + 8];
  // a slot without a pair never stops a block from skipping the mask: its row of the tile is computed (finite:
  // zero query) and never written
  const bool nopair0 = sRow[g] < 0, nopair1 = sRow[g + 8] < 0;
  const Span mine = sSp[lane & 15];
  bf16* sK = sKV + warp * 2 * BK * SD;
  bf16* sV = sK + BK * SD;
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  // The key blocks that a slot reads go to the warps in turn (every warp sees the same slots, so they agree on
  // the count); blocks in the gaps of the intervals (between two rows' completions) are skipped by all.
  int used = 0;
  for (int ii = 0; ii < iv.n; ii++) {
    for (int kb = iv.lo[ii]; kb < iv.hi[ii]; kb += BK) {
      const int ke = min(kb + BK, iv.hi[ii]);
      if (!__any_sync(kFull, hits(mine, kb, ke))) continue;
      if (used++ % W != warp) continue;
      load_rows<D>(sK, k + kvh * D, kb, Tk, KVD, BK, lane, 32);
      cp_commit();
      load_rows<D>(sV, v + kvh * D, kb, Tk, KVD, BK, lane, 32);
      cp_commit();
      cp_wait<1>();  // K (V still on its way while the scores are computed)
      __syncwarp();
      {
        const bool full = ke - kb == BK && __all_sync(kFull, (nopair0 || covers(sp0, kb, ke)) && (nopair1 || covers(sp1, kb, ke)));
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
        cp_wait<0>();  // V
        __syncwarp();
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
  // this warp's partial sums (slots g, g + 8; the quad's 4 lanes hold parts of l)
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
  // merge: slot r, column pairs split over the block's threads
  for (int i = tid; i < BQ * (D / 2); i += NT) {
    const int r = i / (D / 2), c = (i - r * (D / 2)) * 2;
    const int row = sRow[r];
    if (row < 0) continue;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; w++) M = fmaxf(M, sM[w * BQ + r]);
    const float base = M == -INFINITY ? 0.0f : M;
    float L = 0.0f, acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll
    for (int w = 0; w < W; w++) {
      const float f = exp2f(sM[w * BQ + r] - base);
      L += sL[w * BQ + r] * f;
      acc0 += sO[(w * BQ + r) * D + c] * f;
      acc1 += sO[(w * BQ + r) * D + c + 1] * f;
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    const int head = sHead[r];
    *reinterpret_cast<__nv_bfloat162*>(out + row * QD + static_cast<int64_t>(head) * D + c) =
        __floats2bfloat162_rn(acc0 * inv, acc1 * inv);
    if (c == 0) lse[static_cast<int64_t>(row) * NH + head] = L > 0.0f ? (M + log2f(L)) * kLn2 : -INFINITY;
  }
}

template <int D>
void launch_decode(const DecTiles& t, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                   const Span* spans, int Tq, int Tk, int NH, int KVH, float sl2) {
  allow_smem(dec_gqa_k<D>, dec_smem<D>());
  dec_gqa_k<D><<<dim3(t.ntiles, KVH * t.nchunk), 128, dec_smem<D>(), stream()>>>(out, lse, q, k, v, spans, Tq, Tk,
                                                                                  NH, KVH, t.hc, t.slots, sl2);
}

}  // namespace

}  // namespace cu
}  // namespace vq
