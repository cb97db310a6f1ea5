// Internal to the fused attention (flash_forward*.cu*, flash_backward*.cu*, native/dev/flash_variants.cu): the
// kernels' common step.
//
// Fragments follow the PTX layout of mma.m16n8k16 (bf16): with g = lane / 4 and t = lane % 4, a
// thread holds rows g and g + 8 of a 16-row tile and columns 2t, 2t + 1 of each 8-column tile of the
// fp32 accumulator. ldmatrix (.trans for a K-major operand) moves 8x8 bf16 blocks from shared memory
// into that layout. Shared-memory rows are padded by 8 elements (16 bytes), so the 8 row addresses
// of one 8x8 block fall in 8 different bank groups.
//
// Softmax runs in base 2 (scores scaled by scale * log2 e), the row max and sum online per key block;
// lse is written in natural log for the backward (as the CPU reference's).
#pragma once
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
#include "cuda/mma.cuh"

namespace vq {
namespace cu {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFull = 0xffffffffu;

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
__device__ inline Ivals tile_ivals(const Span* sp, int rows, int* lim, int tid, int nt) {
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

__device__ __forceinline__ void add_pair(bf16* p, float x, float y) {
  __nv_bfloat162* q = reinterpret_cast<__nv_bfloat162*>(p);
  const float2 o = __bfloat1622float2(*q);
  *q = __floats2bfloat162_rn(o.x + x, o.y + y);
}

// ---- the pipelined kernels (default): the next key block (forward, dq) or query tile (dk dv) is
// copied into a second shared-memory stage while the current one is computed, and blocks that every
// row of a warp reads in full skip the per-element mask (vision frames, the causal prefix away from
// the diagonal). Same fragments and arithmetic as the one-stage kernels (fwd_k; dq_k, dkdv_k in
// native/dev/flash_variants.cu). ----

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

inline int sm_count() {
  static int n = [] {
    int dev = 0, c = 132;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev);
    return c;
  }();
  return n;
}

}  // namespace

// One case per supported head dim, with DD the constant.
#define VQ_FLASH_SWITCH(D, CALL)                    \
  switch (D) {                                      \
    case 16: { constexpr int DD = 16; CALL; break; }   \
    case 64: { constexpr int DD = 64; CALL; break; }   \
    case 80: { constexpr int DD = 80; CALL; break; }   \
    case 128: { constexpr int DD = 128; CALL; break; } \
    default: VQ_FAIL("flash attention: head dim " << D << " is not supported"); \
  }

}  // namespace cu
}  // namespace vq
