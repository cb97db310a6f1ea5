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
