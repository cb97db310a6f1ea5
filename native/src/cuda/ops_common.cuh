// Internal to the CUDA ops (native/src/cuda/ops_*.cu, ops.h): loads and stores of T as fp32, warp and
// block reductions, grid sizes, and the 8-wide vector accesses of the element-wise kernels.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "cuda/ops.h"

namespace vq {
namespace cu {
namespace {

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16* p, float v) { *p = __float2bfloat16(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum/max; every thread gets the result. blockDim.x a multiple of 32, at most 1024.
template <typename F>
__device__ F block_sum(F v) {
  __shared__ F sh[32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  F r = lane < nw ? sh[lane] : F(0);
  return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v) {
  __shared__ float sh[32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float r = lane < nw ? sh[lane] : -INFINITY;
  return warp_max(r);
}

inline unsigned blocks_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  if (b > 65535LL * 32) b = 65535LL * 32;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

#define GRID_STRIDE(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// ---- activations: 8 elements per thread, 16-byte accesses when every pointer is 16-byte aligned ----
__device__ __forceinline__ void ld8(float (&v)[8], const bf16* p, int64_t i, int64_t N, bool vec) {
  if (vec && i + 8 <= N) {
    const uint4 u = *reinterpret_cast<const uint4*>(p + i);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) { const float2 f = __bfloat1622float2(h[j]); v[2 * j] = f.x; v[2 * j + 1] = f.y; }
  } else {
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = i + j < N ? __bfloat162float(p[i + j]) : 0.0f;
  }
}
__device__ __forceinline__ void ld8(float (&v)[8], const float* p, int64_t i, int64_t N, bool vec) {
  if (vec && i + 8 <= N) {
    const float4 a = *reinterpret_cast<const float4*>(p + i), b = *reinterpret_cast<const float4*>(p + i + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = i + j < N ? p[i + j] : 0.0f;
  }
}
__device__ __forceinline__ void st8(bf16* p, const float (&v)[8], int64_t i, int64_t N, bool vec) {
  if (vec && i + 8 <= N) {
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
    *reinterpret_cast<uint4*>(p + i) = u;
  } else {
#pragma unroll
    for (int j = 0; j < 8; j++) if (i + j < N) p[i + j] = __float2bfloat16(v[j]);
  }
}
__device__ __forceinline__ void st8(float* p, const float (&v)[8], int64_t i, int64_t N, bool vec) {
  if (vec && i + 8 <= N) {
    *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
    *reinterpret_cast<float4*>(p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
  } else {
#pragma unroll
    for (int j = 0; j < 8; j++) if (i + j < N) p[i + j] = v[j];
  }
}
#define CHUNKS(i, N) for (int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * 8; i < (N); i += (int64_t)gridDim.x * blockDim.x * 8)

inline int row_blocks(int64_t Tn) {
  int dev = 0, sms = 132;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  return static_cast<int>(std::min<int64_t>(Tn, 2 * sms));
}
inline void shared_limit(const void* kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024)
    CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), op);
}

inline bool al16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
inline unsigned chunks_for(int64_t n) { return blocks_for((n + 7) / 8); }

}  // namespace
}  // namespace cu
}  // namespace vq
