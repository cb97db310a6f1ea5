// CUDA kernels and launchers for the ops of cuda/ops.h (llm.c's layout: kernels, then launchers;
// every launcher checks its launch). The formulas are the CPU reference's (native/src/ops/*.cc),
// evaluated in fp32 from T inputs and rounded to T once on output.
#include <cfloat>
#include <cmath>
#include <vector>

#include "cuda/flash.h"
#include "cuda/gemm.h"
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
__device__ float block_max(float v) {
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

// ---- embedding ----
template <typename T, typename X>
__global__ void embedding_fwd_k(X* out, const int32_t* ids, const T* wte, int64_t Tn, int64_t C) {
  const int64_t t = blockIdx.x;
  const T* src = wte + static_cast<int64_t>(ids[t]) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(out + t * C + c, ld(src + c));
}
template <typename T>
__global__ void embedding_bwd_k(float* dwte, const T* dout, const int32_t* ids, int64_t Tn, int64_t C) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  if (id < 0) return;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dwte + static_cast<int64_t>(id) * C + c, ld(dout + t * C + c));
}

// ---- norms ----
template <typename T, typename X>
__global__ void rmsnorm_fwd_k(T* out, float* rstd, const X* inp, const T* weight, int64_t C, float eps) {
  const int64_t t = blockIdx.x;
  const X* x = inp + t * C;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) { const float v = ld(x + c); ss += v * v; }
  ss = block_sum(ss);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(C) + eps);
  if (threadIdx.x == 0) rstd[t] = r;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(out + t * C + c, ld(weight + c) * (ld(x + c) * r));
}

// Rows are spread over gridDim.x blocks; each block sums its rows' weight gradients in shared memory
// (C floats) and adds them to dweight once.
template <typename T, typename X>
__global__ void rmsnorm_bwd_k(X* dinp, float* dweight, const T* dout, const X* inp, const T* weight, const float* rstd,
                              int64_t Tn, int64_t C, T* copy) {
  extern __shared__ float dw_sh[];
  if (dweight) for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dw_sh[c] = 0.0f;
  __syncthreads();
  for (int64_t t = blockIdx.x; t < Tn; t += gridDim.x) {
    const X* x = inp + t * C;
    const T* g = dout + t * C;
    const float r = rstd[t];
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += ld(weight + c) * ld(g + c) * ld(x + c);
    s = block_sum(s);
    const float k = s * r * r * r / static_cast<float>(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float gx = ld(g + c), xx = ld(x + c);
      if (dinp) {
        const float nv = ld(dinp + t * C + c) + r * ld(weight + c) * gx - k * xx;
        st(dinp + t * C + c, nv);
        if (copy) st(copy + t * C + c, nv);
      }
      if (dweight) dw_sh[c] += gx * xx * r;
    }
  }
  __syncthreads();
  if (dweight) for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dweight + c, dw_sh[c]);
}

template <typename T, typename X>
__global__ void layernorm_fwd_k(T* out, float* mean, float* rstd, const X* inp, const T* weight, const T* bias, int64_t C,
                                float eps) {
  const int64_t t = blockIdx.x;
  const X* x = inp + t * C;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += ld(x + c);
  const float m = block_sum(s) / static_cast<float>(C);
  float v = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) { const float d = ld(x + c) - m; v += d * d; }
  const float r = 1.0f / sqrtf(block_sum(v) / static_cast<float>(C) + eps);
  if (threadIdx.x == 0) { mean[t] = m; rstd[t] = r; }
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    st(out + t * C + c, (ld(x + c) - m) * r * ld(weight + c) + ld(bias + c));
}

template <typename T, typename X>
__global__ void layernorm_bwd_k(X* dinp, float* dweight, float* dbias, const T* dout, const X* inp, const T* weight,
                                const float* mean, const float* rstd, int64_t Tn, int64_t C, T* copy) {
  extern __shared__ float sh_wb[];  // dweight (C), dbias (C)
  float* dw_sh = sh_wb;
  float* db_sh = sh_wb + C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) { dw_sh[c] = 0.0f; db_sh[c] = 0.0f; }
  __syncthreads();
  for (int64_t t = blockIdx.x; t < Tn; t += gridDim.x) {
    const X* x = inp + t * C;
    const T* g = dout + t * C;
    const float m = mean[t], r = rstd[t];
    float s1 = 0.0f, s2 = 0.0f;  // mean(w g), mean(w g xhat)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float wg = ld(weight + c) * ld(g + c);
      s1 += wg;
      s2 += wg * (ld(x + c) - m) * r;
    }
    s1 = block_sum(s1) / static_cast<float>(C);
    s2 = block_sum(s2) / static_cast<float>(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float gx = ld(g + c), xh = (ld(x + c) - m) * r;
      if (dinp) {
        const float nv = ld(dinp + t * C + c) + r * (ld(weight + c) * gx - s1 - xh * s2);
        st(dinp + t * C + c, nv);
        if (copy) st(copy + t * C + c, nv);
      }
      dw_sh[c] += gx * xh;
      db_sh[c] += gx;
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    if (dweight) atomicAdd(dweight + c, dw_sh[c]);
    if (dbias) atomicAdd(dbias + c, db_sh[c]);
  }
}

// xout = xin + r (fp32 residual stream), out = rmsnorm(xout); one block per row. Each thread reads back
// only what it wrote, so no barrier is needed between the passes beyond the reduction's.
template <typename T>
__global__ void res_rmsnorm_k(T* out, float* rstd, float* xout, const float* xin, const T* r, const T* weight, int64_t C,
                              float eps) {
  const int64_t t = blockIdx.x;
  const float* xi = xin + t * C;
  float* xo = xout + t * C;
  const T* rr = r ? r + t * C : nullptr;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = xi[c] + (rr ? ld(rr + c) : 0.0f);
    xo[c] = v;
    ss += v * v;
  }
  ss = block_sum(ss);
  const float rs = 1.0f / sqrtf(ss / static_cast<float>(C) + eps);
  if (threadIdx.x == 0) rstd[t] = rs;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(out + t * C + c, ld(weight + c) * (xo[c] * rs));
}
template <typename T>
__global__ void res_layernorm_k(T* out, float* mean, float* rstd, float* xout, const float* xin, const T* r,
                                const T* weight, const T* bias, int64_t C, float eps) {
  const int64_t t = blockIdx.x;
  const float* xi = xin + t * C;
  float* xo = xout + t * C;
  const T* rr = r ? r + t * C : nullptr;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = xi[c] + (rr ? ld(rr + c) : 0.0f);
    xo[c] = v;
    s += v;
  }
  const float m = block_sum(s) / static_cast<float>(C);
  float var = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) { const float d = xo[c] - m; var += d * d; }
  const float rs = 1.0f / sqrtf(block_sum(var) / static_cast<float>(C) + eps);
  if (threadIdx.x == 0) { mean[t] = m; rstd[t] = rs; }
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(out + t * C + c, (xo[c] - m) * rs * ld(weight + c) + ld(bias + c));
}

// column sums: dbias (OC) += sum_t dout (T, OC)
template <typename T>
__global__ void colsum_k(float* out, const T* x, int64_t Tn, int64_t C) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t rows_per = (Tn + gridDim.y - 1) / gridDim.y;
  const int64_t r0 = blockIdx.y * rows_per, r1 = min(Tn, r0 + rows_per);
  if (c >= C) return;
  float s = 0.0f;
  for (int64_t t = r0; t < r1; t++) s += ld(x + t * C + c);
  atomicAdd(out + c, s);
}

// ---- rope ----
template <typename T>
__global__ void rope_fwd_k(T* out, const T* inp, const float* cos, const float* sin, int64_t Tn, int64_t NH, int64_t D) {
  const int64_t half = D / 2, n = Tn * NH * half;
  GRID_STRIDE(i, n) {
    const int64_t j = i % half, th = i / half, t = th / NH;
    const float c = cos[t * half + j], s = sin[t * half + j];
    const float x1 = ld(inp + th * D + j), x2 = ld(inp + th * D + j + half);
    st(out + th * D + j, x1 * c - x2 * s);
    st(out + th * D + j + half, x2 * c + x1 * s);
  }
}
template <typename T>
__global__ void rope_bwd_k(T* dinp, const T* dout, const float* cos, const float* sin, int64_t Tn, int64_t NH, int64_t D,
                           bool acc) {
  const int64_t half = D / 2, n = Tn * NH * half;
  GRID_STRIDE(i, n) {
    const int64_t j = i % half, th = i / half, t = th / NH;
    const float c = cos[t * half + j], s = sin[t * half + j];
    const float g1 = ld(dout + th * D + j), g2 = ld(dout + th * D + j + half);
    const float b1 = acc ? ld(dinp + th * D + j) : 0.0f, b2 = acc ? ld(dinp + th * D + j + half) : 0.0f;
    st(dinp + th * D + j, b1 + g1 * c + g2 * s);
    st(dinp + th * D + j + half, b2 + g2 * c - g1 * s);
  }
}

struct Freqs {
  float inv[256];
  int axis[256];
};

__global__ void mrope_table_k(float* cos, float* sin, const int32_t* pos, Freqs f, int64_t Tn, int64_t half) {
  GRID_STRIDE(i, Tn * half) {
    const int64_t t = i / half, j = i % half;
    const float a = static_cast<float>(pos[f.axis[j] * Tn + t]) * f.inv[j];
    cos[i] = cosf(a);
    sin[i] = sinf(a);
  }
}
__global__ void vision_table_k(float* cos, float* sin, const int32_t* hpos, const int32_t* wpos, Freqs f, int64_t Tn,
                               int64_t half) {
  const int64_t quarter = half / 2;
  GRID_STRIDE(i, Tn * half) {
    const int64_t t = i / half, j = i % half;
    const float a = j < quarter ? static_cast<float>(hpos[t]) * f.inv[j] : static_cast<float>(wpos[t]) * f.inv[j - quarter];
    cos[i] = cosf(a);
    sin[i] = sinf(a);
  }
}

// ---- attention helpers ----
// One block per (query row i of the tile, head h): masked softmax of the scaled scores S (fp32, rows
// of Kc keys starting at key k0) -> P (T) and lse.
template <typename T>
__global__ void att_softmax_k(T* P, float* lse, const float* S, const Span* spans, int64_t r0, int64_t Qc, int64_t Kc,
                              int64_t k0, int64_t NH) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const Span sp = spans[i];
  const float* s = S + (h * Qc + i) * Kc;
  T* p = P + (h * Qc + i) * Kc;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    if (on) mx = fmaxf(mx, s[j]);
  }
  mx = block_max(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    if (on) sum += expf(s[j] - mx);
  }
  sum = block_sum(sum);
  const float l = mx + logf(sum);
  if (threadIdx.x == 0) lse[(r0 + i) * NH + h] = l;
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    st(p + j, on ? expf(s[j] - l) : 0.0f);
  }
}

// Drow (Qc, NH) = sum_d dout * out over each head's row.
template <typename T>
__global__ void att_drow_k(float* Drow, const T* dout, const T* out, int64_t r0, int64_t Qc, int64_t NH, int64_t D) {
  const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= Qc * NH) return;
  const int64_t i = w / NH, h = w % NH;
  const T* a = dout + ((r0 + i) * NH + h) * D;
  const T* b = out + ((r0 + i) * NH + h) * D;
  float s = 0.0f;
  for (int64_t d = lane; d < D; d += 32) s += ld(a + d) * ld(b + d);
  s = warp_sum(s);
  if (lane == 0) Drow[h * Qc + i] = s;
}

// P = exp(S - lse) (masked), dS = P * (dP - Drow); both written in T for the GEMMs.
template <typename T>
__global__ void att_dsoftmax_k(T* P, T* dS, const float* S, const float* dP, const float* lse, const float* Drow,
                               const Span* spans, int64_t r0, int64_t Qc, int64_t Kc, int64_t k0, int64_t NH) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const Span sp = spans[i];
  const int64_t off = (h * Qc + i) * Kc;
  const float l = lse[(r0 + i) * NH + h], dr = Drow[h * Qc + i];
  for (int64_t j = threadIdx.x; j < Kc; j += blockDim.x) {
    const int64_t key = k0 + j;
    const bool on = (key >= sp.a0 && key < sp.a1) || (key >= sp.b0 && key < sp.b1);
    const float p = on ? expf(S[off + j] - l) : 0.0f;
    st(P + off + j, p);
    st(dS + off + j, p * (dP[off + j] - dr));
  }
}

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

template <typename T>
__global__ void swiglu_fwd_k(T* out, const T* gate, const T* up, int64_t N, bool vec) {
  CHUNKS(i, N) {
    float g[8], u[8], o[8];
    ld8(g, gate, i, N, vec);
    ld8(u, up, i, N, vec);
#pragma unroll
    for (int j = 0; j < 8; j++) o[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    st8(out, o, i, N, vec);
  }
}
template <typename T>
__global__ void swiglu_bwd_k(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t N, bool vec, bool acc) {
  CHUNKS(i, N) {
    float g[8], u[8], d[8], a[8], b[8];
    ld8(g, gate, i, N, vec);
    ld8(u, up, i, N, vec);
    ld8(d, dout, i, N, vec);
    if (acc) { ld8(a, dgate, i, N, vec); ld8(b, dup, i, N, vec); }
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const float sg = 1.0f / (1.0f + expf(-g[j]));
      const float da = d[j] * u[j] * sg * (1.0f + g[j] * (1.0f - sg)), db = d[j] * g[j] * sg;
      a[j] = acc ? a[j] + da : da;
      b[j] = acc ? b[j] + db : db;
    }
    st8(dgate, a, i, N, vec);
    st8(dup, b, i, N, vec);
  }
}
// kind 0: quick_gelu, 1: gelu (erf), 2: gelu (tanh approximation)
template <typename T, int KIND>
__global__ void gelu_fwd_k(T* out, const T* inp, int64_t N, bool vec) {
  CHUNKS(i, N) {
    float x[8], o[8];
    ld8(x, inp, i, N, vec);
#pragma unroll
    for (int j = 0; j < 8; j++)
      o[j] = KIND == 0   ? x[j] / (1.0f + expf(-1.702f * x[j]))
             : KIND == 1 ? 0.5f * x[j] * (1.0f + erff(x[j] * 0.70710678118654752f))
                         : 0.5f * x[j] * (1.0f + tanhf(0.7978845608028654f * (x[j] + 0.044715f * x[j] * x[j] * x[j])));
    st8(out, o, i, N, vec);
  }
}
template <typename T, int KIND>
__global__ void gelu_bwd_k(T* dinp, const T* dout, const T* inp, int64_t N, bool vec, bool acc) {
  CHUNKS(i, N) {
    float x[8], d[8], a[8];
    ld8(x, inp, i, N, vec);
    ld8(d, dout, i, N, vec);
    if (acc) ld8(a, dinp, i, N, vec);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      float gr;
      if (KIND == 0) {
        const float s = 1.0f / (1.0f + expf(-1.702f * x[j]));
        gr = d[j] * (s + 1.702f * x[j] * s * (1.0f - s));
      } else if (KIND == 2) {
        const float t = tanhf(0.7978845608028654f * (x[j] + 0.044715f * x[j] * x[j] * x[j]));
        const float dinner = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x[j] * x[j]);
        gr = d[j] * (0.5f * (1.0f + t) + 0.5f * x[j] * (1.0f - t * t) * dinner);
      } else {
        const float cdf = 0.5f * (1.0f + erff(x[j] * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * expf(-0.5f * x[j] * x[j]);
        gr = d[j] * (cdf + x[j] * pdf);
      }
      a[j] = acc ? a[j] + gr : gr;
    }
    st8(dinp, a, i, N, vec);
  }
}
template <typename T>
__global__ void residual_k(T* out, const T* a, const T* b, int64_t N, bool vec) {
  CHUNKS(i, N) {
    float x[8], y[8];
    ld8(x, a, i, N, vec);
    ld8(y, b, i, N, vec);
#pragma unroll
    for (int j = 0; j < 8; j++) x[j] += y[j];
    st8(out, x, i, N, vec);
  }
}
template <typename T>
__global__ void add_k(T* out, const T* a, int64_t N, bool vec) {
  CHUNKS(i, N) {
    float x[8], y[8];
    ld8(x, out, i, N, vec);
    ld8(y, a, i, N, vec);
#pragma unroll
    for (int j = 0; j < 8; j++) x[j] += y[j];
    st8(out, x, i, N, vec);
  }
}

// ---- log-probs ----
template <typename T>
__global__ void logprob_fwd_k(float* logp, float* entropy, float* lse, const T* logits, const int32_t* targets, int64_t V) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * V;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, ld(x + j));
  mx = block_max(mx);
  double s = 0.0, sx = 0.0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float d = ld(x + j) - mx;
    const float e = expf(d);
    s += e;
    sx += static_cast<double>(e) * d;
  }
  s = block_sum(s);
  sx = block_sum(sx);
  if (threadIdx.x == 0) {
    const double l = mx + log(s);
    lse[r] = static_cast<float>(l);
    logp[r] = static_cast<float>(static_cast<double>(ld(x + targets[r])) - l);
    entropy[r] = static_cast<float>(log(s) - sx / s);
  }
}
template <typename T>
__global__ void logprob_bwd_k(T* dlogits, const float* dlogp, const T* logits, const float* lse, const int32_t* targets,
                              int64_t V) {
  const int64_t r = blockIdx.y;
  const float g = dlogp[r], l = lse[r];
  const int32_t tgt = targets[r];
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < V; j += (int64_t)gridDim.x * blockDim.x) {
    float d = -g * expf(ld(logits + r * V + j) - l);
    if (j == tgt) d += g;
    st(dlogits + r * V + j, d);
  }
}

// ---- optimizer ----
__global__ void adamw_k(float* p, const float* g, float* m, float* v, int64_t n, float beta1, float beta2, float eps,
                        float decay, float step_size, float bc2_sqrt, float grad_scale, bf16* copy) {
  GRID_STRIDE(i, n) {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    const float pi = p[i] * decay - step_size * mi / denom;
    p[i] = pi;
    if (copy) copy[i] = __float2bfloat16(pi);
  }
}
__global__ void adamw_bf16m_k(float* p, const float* g, bf16* m, bf16* v, int64_t n, float beta1, float beta2, float eps,
                              float decay, float step_size, float bc2_sqrt, float grad_scale, bf16* copy) {
  GRID_STRIDE(i, n) {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * __bfloat162float(m[i]) + (1.0f - beta1) * gi;
    const float vi = beta2 * __bfloat162float(v[i]) + (1.0f - beta2) * gi * gi;
    m[i] = __float2bfloat16(mi);
    v[i] = __float2bfloat16(vi);
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    const float pi = p[i] * decay - step_size * mi / denom;
    p[i] = pi;
    if (copy) copy[i] = __float2bfloat16(pi);
  }
}
__global__ void sumsq_k(double* out, const float* x, int64_t n) {
  double s = 0.0;
  GRID_STRIDE(i, n) s += static_cast<double>(x[i]) * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(out, s);
}
__global__ void finite_k(int* bad, const float* x, int64_t n) {
  GRID_STRIDE(i, n) if (!isfinite(x[i])) { *bad = 1; return; }
}

// ---- helpers ----
__global__ void to_bf16_k(bf16* out, const float* in, int64_t n) { GRID_STRIDE(i, n) out[i] = __float2bfloat16(in[i]); }
__global__ void to_f32_k(float* out, const bf16* in, int64_t n) { GRID_STRIDE(i, n) out[i] = __bfloat162float(in[i]); }
template <typename T>
__global__ void fill_k(T* out, float v, int64_t n) { GRID_STRIDE(i, n) st(out + i, v); }
template <typename O, typename I>
__global__ void gather_k(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  GRID_STRIDE(i, n * C) st(out + i, ld(in + rows[i / C] * C + i % C));
}
template <typename O, typename I>
__global__ void scatter_k(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  GRID_STRIDE(i, n * C) st(out + rows[i / C] * C + i % C, ld(in + i));
}
template <typename O, typename I>
__global__ void convert_k(O* out, const I* in, int64_t n) {
  GRID_STRIDE(i, n) st(out + i, ld(in + i));
}
// One thread per column walks the rows in order: repeated destination rows add up without races.
template <typename T>
__global__ void scatter_add_k(T* out, const T* in, const int64_t* rows, int64_t n, int64_t C) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t i = 0; i < n; i++) {
    T* o = out + rows[i] * C + c;
    st(o, ld(o) + ld(in + i * C + c));
  }
}
template <typename T>
__global__ void split_qkv_k(T* q, T* k, T* v, const T* qkv, int64_t N, int64_t E) {
  GRID_STRIDE(i, N * 3 * E) {
    const int64_t r = i / (3 * E), c = i % (3 * E);
    T* dst = c < E ? q : (c < 2 * E ? k : v);
    dst[r * E + c % E] = qkv[i];
  }
}
template <typename T>
__global__ void join_qkv_k(T* qkv, const T* q, const T* k, const T* v, int64_t N, int64_t E) {
  GRID_STRIDE(i, N * 3 * E) {
    const int64_t r = i / (3 * E), c = i % (3 * E);
    const T* src = c < E ? q : (c < 2 * E ? k : v);
    qkv[i] = src[r * E + c % E];
  }
}

// ---- sampling ----
__host__ __device__ inline uint64_t splitmix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <typename T>
__device__ void sample_row(int32_t* tok, float* logprob, const T* logits, int64_t b, uint64_t g, int64_t V,
                           float temperature, uint64_t seed, uint64_t t);
template <typename T>
__global__ void sample_k(int32_t* tok, float* logprob, const T* logits, const int64_t* gs, int64_t V, float temperature,
                         uint64_t seed, uint64_t t) {
  sample_row(tok, logprob, logits, blockIdx.x, static_cast<uint64_t>(gs[blockIdx.x]), V, temperature, seed, t);
}
template <typename T>
__global__ void sample_multi_k(int32_t* tok, float* logprob, const T* logits, const float* temps, const uint64_t* seeds,
                               const int64_t* gs, const int64_t* ts, int64_t V) {
  const int64_t b = blockIdx.x;
  sample_row(tok, logprob, logits, b, static_cast<uint64_t>(gs[b]), V, temps[b], seeds[b], static_cast<uint64_t>(ts[b]));
}
template <typename T>
__device__ void sample_row(int32_t* tok, float* logprob, const T* logits, int64_t b, uint64_t g_index, int64_t V,
                           float temperature, uint64_t seed, uint64_t t) {
  __shared__ double part[1024];
  __shared__ float smx[1024];
  __shared__ int sarg[1024];
  __shared__ int64_t chosen;
  const T* x = logits + b * V;
  const int nt = blockDim.x, tid = threadIdx.x;
  const int64_t per = (V + nt - 1) / nt, j0 = tid * per, j1 = min(V, j0 + per);
  // argmax, lowest index on ties
  float mx = -INFINITY;
  int arg = j0 < V ? static_cast<int>(j0) : 0;
  for (int64_t j = j0; j < j1; j++) {
    const float v = ld(x + j);
    if (v > mx) { mx = v; arg = static_cast<int>(j); }
  }
  smx[tid] = mx;
  sarg[tid] = arg;
  __syncthreads();
  for (int s = nt / 2; s > 0; s >>= 1) {
    if (tid < s) {
      const float o = smx[tid + s];
      const int oa = sarg[tid + s];
      if (o > smx[tid] || (o == smx[tid] && oa < sarg[tid])) { smx[tid] = o; sarg[tid] = oa; }
    }
    __syncthreads();
  }
  const float gmx = smx[0];
  const int garg = sarg[0];
  // log-sum-exp at temperature 1
  double s1 = 0.0;
  for (int64_t j = j0; j < j1; j++) s1 += exp(static_cast<double>(ld(x + j)) - gmx);
  s1 = block_sum(s1);
  const double lse = gmx + log(s1);
  int64_t pick = garg;
  if (temperature > 0.0f) {
    const double invT = 1.0 / temperature;
    double w = 0.0;
    for (int64_t j = j0; j < j1; j++) w += exp((static_cast<double>(ld(x + j)) - gmx) * invT);
    __syncthreads();
    part[tid] = w;
    __syncthreads();
    if (tid == 0) {
      double total = 0.0;
      for (int i = 0; i < nt; i++) total += part[i];
      const uint64_t h = splitmix(splitmix(splitmix(seed) ^ g_index) ^ (t * 0xD1B54A32D192ED03ull));
      const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0) * total;
      double cum = 0.0;
      int owner = nt - 1;
      for (int i = 0; i < nt; i++) {
        if (u < cum + part[i]) { owner = i; break; }
        cum += part[i];
      }
      // walk the owner's chunk serially (at most V / blockDim values)
      const int64_t a0 = owner * per, a1 = min(V, a0 + per);
      int64_t c = V - 1;
      for (int64_t j = a0; j < a1; j++) {
        cum += exp((static_cast<double>(ld(x + j)) - gmx) * invT);
        if (u < cum) { c = j; break; }
      }
      chosen = c;
    }
    __syncthreads();
    pick = chosen;
  }
  if (tid == 0) {
    tok[b] = static_cast<int32_t>(pick);
    logprob[b] = static_cast<float>(static_cast<double>(ld(x + pick)) - lse);
  }
}

// ---- scratch for attention tiles (per thread, grow-only) ----
struct AttScratch {
  DArray<float> S{"attention scores"}, dP{"attention score gradients"}, drow{"attention row sums"};
  DArray<char> P{"attention probabilities"}, dS{"attention probability gradients"};
  DArray<Span> spans{"attention spans"};
};
thread_local AttScratch* g_att = nullptr;
AttScratch& att_scratch() {
  if (!g_att) g_att = new AttScratch();
  return *g_att;
}

struct Tile {
  int64_t r0, r1, k0, k1;
};

// Tiles of consecutive query rows whose key ranges overlap, each within a score budget.
std::vector<Tile> plan_tiles(const Span* spans, int64_t Tq, int64_t NH) {
  const int64_t budget = 64ll << 20;  // scores per tile (fp32 S + dP + T P + T dS: ~ 12-16 bytes each)
  std::vector<Tile> tiles;
  int64_t r0 = 0, klo = 0, khi = 0;
  auto range = [&](int64_t r, int64_t& lo, int64_t& hi) {
    const Span& s = spans[r];
    lo = INT64_MAX;
    hi = INT64_MIN;
    if (s.a1 > s.a0) { lo = s.a0; hi = s.a1; }
    if (s.b1 > s.b0) { lo = std::min<int64_t>(lo, s.b0); hi = std::max<int64_t>(hi, s.b1); }
  };
  for (int64_t r = 0; r < Tq; r++) {
    int64_t lo, hi;
    range(r, lo, hi);
    if (r == r0) { klo = lo; khi = hi; continue; }
    const int64_t nlo = std::min(klo, lo), nhi = std::max(khi, hi);
    const bool overlap = lo < khi && hi > klo;
    if (overlap && (r - r0 + 1) * NH * (nhi - nlo) <= budget) {
      klo = nlo;
      khi = nhi;
    } else {
      tiles.push_back({r0, r, klo, khi});
      r0 = r;
      klo = lo;
      khi = hi;
    }
  }
  if (Tq > 0) tiles.push_back({r0, Tq, klo, khi});
  return tiles;
}

// The per-head GEMMs of a tile, grouped for GQA: query head h = g*rep + r reads kv head g.
struct HeadGemm {
  int64_t NH, KVH, D, rep;
};

}  // namespace

// ================================ launchers ================================

template <typename T, typename X>
void embedding_forward(X* out, const int32_t* ids, const T* wte, int64_t Tn, int64_t C) {
  if (Tn == 0) return;
  embedding_fwd_k<<<Tn, 256, 0, stream()>>>(out, ids, wte, Tn, C);
  CU_LAUNCHED("embedding_forward");
}
template <typename T>
void embedding_backward(float* dwte, const T* dout, const int32_t* ids, int64_t Tn, int64_t C) {
  if (Tn == 0 || !dwte) return;
  embedding_bwd_k<<<Tn, 256, 0, stream()>>>(dwte, dout, ids, Tn, C);
  CU_LAUNCHED("embedding_backward");
}

template <typename T, typename X>
void rmsnorm_forward(T* out, float* rstd, const X* inp, const T* weight, int64_t Tn, int64_t C, float eps) {
  if (Tn == 0) return;
  rmsnorm_fwd_k<<<Tn, 256, 0, stream()>>>(out, rstd, inp, weight, C, eps);
  CU_LAUNCHED("rmsnorm_forward");
}
template <typename T>
void residual_rmsnorm_forward(T* out, float* rstd, float* xout, const float* xin, const T* r, const T* weight,
                              int64_t Tn, int64_t C, float eps) {
  if (Tn == 0) return;
  res_rmsnorm_k<<<Tn, 256, 0, stream()>>>(out, rstd, xout, xin, r, weight, C, eps);
  CU_LAUNCHED("residual_rmsnorm_forward");
}
template <typename T>
void residual_layernorm_forward(T* out, float* mean, float* rstd, float* xout, const float* xin, const T* r,
                                const T* weight, const T* bias, int64_t Tn, int64_t C, float eps) {
  if (Tn == 0) return;
  res_layernorm_k<<<Tn, 256, 0, stream()>>>(out, mean, rstd, xout, xin, r, weight, bias, C, eps);
  CU_LAUNCHED("residual_layernorm_forward");
}

namespace {
int row_blocks(int64_t Tn) {
  int dev = 0, sms = 132;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  return static_cast<int>(std::min<int64_t>(Tn, 2 * sms));
}
void shared_limit(const void* kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024)
    CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), op);
}
}  // namespace

template <typename T, typename X>
void rmsnorm_backward(X* dinp, float* dweight, const T* dout, const X* inp, const T* weight, const float* rstd,
                      int64_t Tn, int64_t C, T* dinp_copy) {
  if (Tn == 0) return;
  const size_t sh = dweight ? C * sizeof(float) : 0;
  shared_limit(reinterpret_cast<const void*>(rmsnorm_bwd_k<T, X>), sh, "rmsnorm_backward");
  rmsnorm_bwd_k<<<row_blocks(Tn), 256, sh, stream()>>>(dinp, dweight, dout, inp, weight, rstd, Tn, C, dinp_copy);
  CU_LAUNCHED("rmsnorm_backward");
}
template <typename T, typename X>
void layernorm_forward(T* out, float* mean, float* rstd, const X* inp, const T* weight, const T* bias, int64_t Tn,
                       int64_t C, float eps) {
  if (Tn == 0) return;
  layernorm_fwd_k<<<Tn, 256, 0, stream()>>>(out, mean, rstd, inp, weight, bias, C, eps);
  CU_LAUNCHED("layernorm_forward");
}
template <typename T, typename X>
void layernorm_backward(X* dinp, float* dweight, float* dbias, const T* dout, const X* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t Tn, int64_t C, T* dinp_copy) {
  if (Tn == 0) return;
  const size_t sh = 2 * C * sizeof(float);
  shared_limit(reinterpret_cast<const void*>(layernorm_bwd_k<T, X>), sh, "layernorm_backward");
  layernorm_bwd_k<<<row_blocks(Tn), 256, sh, stream()>>>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, Tn, C,
                                                         dinp_copy);
  CU_LAUNCHED("layernorm_backward");
}

template <typename T>
void linear_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t Tn, int64_t IC, int64_t OC,
                    bool accumulate) {
  if (Tn == 0) return;
  // column-major: out^T (OC, T) = W (OC, IC) @ X^T (IC, T); W row-major is W^T column-major.
  GemmArgs g;
  g.ta = true; g.tb = false;
  g.m = OC; g.n = Tn; g.k = IC;
  g.A = weight; g.lda = IC;
  g.B = inp; g.ldb = IC;
  g.C = out; g.ldc = OC;
  g.beta = accumulate ? 1.0f : 0.0f;
  g.ab = g.c = dtype_of<T>();
  g.bias = bias;
  gemm(g, "linear_forward");
}

template <typename T>
void linear_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int64_t Tn,
                     int64_t IC, int64_t OC, bool accumulate_dinp) {
  if (Tn == 0) return;
  if (dinp) {  // dinp^T (IC, T) += W^T (IC, OC) @ dout^T (OC, T)
    GemmArgs g;
    g.m = IC; g.n = Tn; g.k = OC;
    g.A = weight; g.lda = IC;
    g.B = dout; g.ldb = OC;
    g.C = dinp; g.ldc = IC;
    g.beta = accumulate_dinp ? 1.0f : 0.0f;
    g.ab = g.c = dtype_of<T>();
    gemm(g, "linear_backward (dinp)");
  }
  if (dweight) {  // dW^T (IC, OC) += X^T (IC, T) @ dout (T, OC)
    GemmArgs g;
    g.tb = true;
    g.m = IC; g.n = OC; g.k = Tn;
    g.A = inp; g.lda = IC;
    g.B = dout; g.ldb = OC;
    g.C = dweight; g.ldc = IC;
    g.beta = 1.0f;
    g.ab = dtype_of<T>();
    g.c = DType::F32;
    gemm(g, "linear_backward (dweight)");
  }
  if (dbias) {
    const int threads = 256;
    const unsigned gx = static_cast<unsigned>((OC + threads - 1) / threads);
    const unsigned gy = static_cast<unsigned>(std::min<int64_t>(Tn, 64));
    colsum_k<<<dim3(gx, gy), threads, 0, stream()>>>(dbias, dout, Tn, OC);
    CU_LAUNCHED("linear_backward (dbias)");
  }
}

template <typename T>
void lora_forward(T* out, T* xa, const T* inp, const T* A, const T* B, int64_t Tn, int64_t IC, int64_t OC, int64_t R,
                  float scale) {
  if (Tn == 0) return;
  linear_forward(xa, inp, A, static_cast<const T*>(nullptr), Tn, IC, R);
  GemmArgs g;  // out^T (OC, T) += scale * B (OC, R) @ xa^T (R, T)
  g.ta = true;
  g.m = OC; g.n = Tn; g.k = R;
  g.A = B; g.lda = R;
  g.B = xa; g.ldb = R;
  g.C = out; g.ldc = OC;
  g.alpha = scale; g.beta = 1.0f;
  g.ab = g.c = dtype_of<T>();
  gemm(g, "lora_forward");
}

template <typename T>
void lora_backward(T* dinp, float* dA, float* dB, const T* dout, const T* inp, const T* xa, const T* A, const T* B,
                   int64_t Tn, int64_t IC, int64_t OC, int64_t R, float scale) {
  if (Tn == 0) return;
  thread_local DArray<char> dxa_buf("LoRA dxa");
  T* dxa = reinterpret_cast<T*>(dxa_buf.fit(Tn * R * static_cast<int64_t>(sizeof(T))));
  {  // dxa^T (R, T) = scale * B^T (R, OC) @ dout^T (OC, T)
    GemmArgs g;
    g.m = R; g.n = Tn; g.k = OC;
    g.A = B; g.lda = R;
    g.B = dout; g.ldb = OC;
    g.C = dxa; g.ldc = R;
    g.alpha = scale;
    g.ab = g.c = dtype_of<T>();
    gemm(g, "lora_backward (dxa)");
  }
  if (dB) {  // dB^T (R, OC) += scale * xa^T (R, T) @ dout (T, OC)
    GemmArgs g;
    g.tb = true;
    g.m = R; g.n = OC; g.k = Tn;
    g.A = xa; g.lda = R;
    g.B = dout; g.ldb = OC;
    g.C = dB; g.ldc = R;
    g.alpha = scale; g.beta = 1.0f;
    g.ab = dtype_of<T>(); g.c = DType::F32;
    gemm(g, "lora_backward (dB)");
  }
  if (dA) {  // dA^T (IC, R) += X^T (IC, T) @ dxa (T, R)
    GemmArgs g;
    g.tb = true;
    g.m = IC; g.n = R; g.k = Tn;
    g.A = inp; g.lda = IC;
    g.B = dxa; g.ldb = R;
    g.C = dA; g.ldc = IC;
    g.beta = 1.0f;
    g.ab = dtype_of<T>(); g.c = DType::F32;
    gemm(g, "lora_backward (dA)");
  }
  if (dinp) {  // dinp^T (IC, T) += A^T (IC, R) @ dxa^T (R, T)
    GemmArgs g;
    g.m = IC; g.n = Tn; g.k = R;
    g.A = A; g.lda = IC;
    g.B = dxa; g.ldb = R;
    g.C = dinp; g.ldc = IC;
    g.beta = 1.0f;
    g.ab = g.c = dtype_of<T>();
    gemm(g, "lora_backward (dinp)");
  }
}

namespace {
// hi + lo pairs: hi = bf16(v), lo = bf16(v - hi); hi + lo carries v to about 2^-16 of |v|.
__global__ void lora_split_k(bf16* Acat, bf16* Bcat, const float* A, const float* B, int64_t IC, int64_t OC, int64_t R) {
  const int64_t na = R * IC, nb = OC * R;
  GRID_STRIDE(i, na + nb) {
    if (i < na) {
      const float a = A[i];
      const bf16 h = __float2bfloat16(a);
      Acat[i] = h;
      Acat[na + i] = __float2bfloat16(a - __bfloat162float(h));
    } else {
      const int64_t j = i - na, o = j / R, r = j % R;
      const float b = B[j];
      const bf16 h = __float2bfloat16(b);
      bf16* row = Bcat + o * 3 * R;
      row[r] = h;
      row[R + r] = h;
      row[2 * R + r] = __float2bfloat16(b - __bfloat162float(h));
    }
  }
}
// xa2 (T, 2R): x A_hi^T | x A_lo^T  ->  v = their sum; xcat (T, 3R) = [v_hi | v_lo | v_hi], xa = v_hi
__global__ void lora_xcat_k(bf16* xcat, bf16* xa, const float* xa2, int64_t Tn, int64_t R) {
  GRID_STRIDE(i, Tn * R) {
    const int64_t t = i / R, r = i % R;
    const float v = xa2[t * 2 * R + r] + xa2[t * 2 * R + R + r];
    const bf16 h = __float2bfloat16(v);
    const bf16 l = __float2bfloat16(v - __bfloat162float(h));
    bf16* row = xcat + t * 3 * R;
    row[r] = h;
    row[R + r] = l;
    row[2 * R + r] = h;
    if (xa) xa[i] = h;
  }
}
// out = bf16(acc + bias): the one rounding
__global__ void bias_round_k(bf16* out, const float* acc, const bf16* bias, int64_t Tn, int64_t OC) {
  GRID_STRIDE(i, Tn * OC) {
    float v = acc[i];
    if (bias) v += __bfloat162float(bias[i % OC]);
    out[i] = __float2bfloat16(v);
  }
}
}  // namespace

void lora_split(bf16* Acat, bf16* Bcat, const float* A, const float* B, int64_t IC, int64_t OC, int64_t R) {
  const int64_t n = R * (IC + OC);
  if (n == 0) return;
  lora_split_k<<<blocks_for(n), 256, 0, stream()>>>(Acat, Bcat, A, B, IC, OC, R);
  CU_LAUNCHED("lora_split");
}

void linear_lora_forward(bf16* out, bf16* xa, const bf16* inp, const bf16* W, const bf16* bias, const bf16* Acat,
                         const bf16* Bcat, int64_t Tn, int64_t IC, int64_t OC, int64_t R, float scale, float* acc,
                         float* xa2, bf16* xcat) {
  if (Tn == 0) return;
  {  // acc^T (OC, T) = W (OC, IC) @ X^T (IC, T), fp32 out
    GemmArgs g;
    g.ta = true;
    g.m = OC; g.n = Tn; g.k = IC;
    g.A = W; g.lda = IC;
    g.B = inp; g.ldb = IC;
    g.C = acc; g.ldc = OC;
    g.ab = DType::BF16; g.c = DType::F32;
    gemm(g, "linear_lora_forward (base)");
  }
  {  // xa2^T (2R, T) = [A_hi; A_lo] (2R, IC) @ X^T, fp32 out
    GemmArgs g;
    g.ta = true;
    g.m = 2 * R; g.n = Tn; g.k = IC;
    g.A = Acat; g.lda = IC;
    g.B = inp; g.ldb = IC;
    g.C = xa2; g.ldc = 2 * R;
    g.ab = DType::BF16; g.c = DType::F32;
    gemm(g, "linear_lora_forward (x A^T)");
  }
  lora_xcat_k<<<blocks_for(Tn * R), 256, 0, stream()>>>(xcat, xa, xa2, Tn, R);
  CU_LAUNCHED("linear_lora_forward (x A^T pairs)");
  {  // acc^T (OC, T) += scale * [B_hi | B_hi | B_lo] (OC, 3R) @ [v_hi | v_lo | v_hi]^T (3R, T)
    GemmArgs g;
    g.ta = true;
    g.m = OC; g.n = Tn; g.k = 3 * R;
    g.A = Bcat; g.lda = 3 * R;
    g.B = xcat; g.ldb = 3 * R;
    g.C = acc; g.ldc = OC;
    g.alpha = scale; g.beta = 1.0f;
    g.ab = DType::BF16; g.c = DType::F32;
    gemm(g, "linear_lora_forward (B)");
  }
  bias_round_k<<<blocks_for(Tn * OC), 256, 0, stream()>>>(out, acc, bias, Tn, OC);
  CU_LAUNCHED("linear_lora_forward (round)");
}

template <typename T>
void rope_forward(T* out, const T* inp, const float* cos, const float* sin, int64_t Tn, int64_t NH, int64_t D) {
  const int64_t n = Tn * NH * (D / 2);
  if (n == 0) return;
  rope_fwd_k<<<blocks_for(n), 256, 0, stream()>>>(out, inp, cos, sin, Tn, NH, D);
  CU_LAUNCHED("rope_forward");
}
template <typename T>
void rope_backward(T* dinp, const T* dout, const float* cos, const float* sin, int64_t Tn, int64_t NH, int64_t D,
                   bool accumulate) {
  const int64_t n = Tn * NH * (D / 2);
  if (n == 0) return;
  rope_bwd_k<<<blocks_for(n), 256, 0, stream()>>>(dinp, dout, cos, sin, Tn, NH, D, accumulate);
  CU_LAUNCHED("rope_backward");
}

void rope_mrope_table(float* cos, float* sin, const int32_t* pos, const int32_t* section, int64_t Tn, int64_t D,
                      float theta, bool interleaved) {
  const int64_t half = D / 2;
  VQ_CHECK(half <= 256, "rope_mrope_table: head_dim " << D << " above 512 is not supported");
  Freqs f;
  for (int64_t j = 0; j < half; j++) {  // the CPU's fp32 formula, evaluated on the host
    f.inv[j] = 1.0f / std::pow(theta, static_cast<float>(2 * j) / static_cast<float>(D));
    if (interleaved) f.axis[j] = (j % 3 == 1 && j < 3 * section[1]) ? 1 : (j % 3 == 2 && j < 3 * section[2]) ? 2 : 0;
    else f.axis[j] = j < section[0] ? 0 : (j < section[0] + section[1] ? 1 : 2);
  }
  if (Tn == 0) return;
  mrope_table_k<<<blocks_for(Tn * half), 256, 0, stream()>>>(cos, sin, pos, f, Tn, half);
  CU_LAUNCHED("rope_mrope_table");
}
void rope_vision_table(float* cos, float* sin, const int32_t* hpos, const int32_t* wpos, int64_t Tn, int64_t D,
                       float theta) {
  const int64_t quarter = D / 4, half = D / 2;
  VQ_CHECK(half <= 256, "rope_vision_table: head_dim " << D << " above 512 is not supported");
  Freqs f;
  for (int64_t i = 0; i < quarter; i++)
    f.inv[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(half));
  if (Tn == 0) return;
  vision_table_k<<<blocks_for(Tn * half), 256, 0, stream()>>>(cos, sin, hpos, wpos, f, Tn, half);
  CU_LAUNCHED("rope_vision_table");
}

// ---- attention ----
template <typename T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const Span* spans, int64_t Tq,
                       int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  AttScratch& sc = att_scratch();
  Span* dsp = sc.spans.fit(Tq);
  CU_CHECK(cudaMemcpyAsync(dsp, spans, Tq * sizeof(Span), cudaMemcpyHostToDevice, stream()), "attention_forward (spans)");
  attention_forward_dev(out, lse, q, k, v, spans, dsp, Tq, Tk, NH, KVH, D);
}

template <typename T>
void attention_forward_dev(T* out, float* lse, const T* q, const T* k, const T* v, const Span* spans,
                           const Span* dsp, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  if constexpr (std::is_same<T, bf16>::value) {
    if (flash_enabled() && flash_supported(D)) {
      flash_forward(out, lse, q, k, v, dsp, Tq, Tk, NH, KVH, D);
      if (spans) add_flops(attention_flops(spans, Tq, NH, D));
      return;
    }
  }
  VQ_CHECK(spans != nullptr, "attention_forward: the cuBLASLt path needs the spans on the host");
  AttScratch& sc = att_scratch();
  const int64_t rep = NH / KVH, KVD = KVH * D, QD = NH * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t outer = rep == 1 ? 1 : KVH, batch = rep == 1 ? NH : rep, kstride = rep == 1 ? D : 0;
  for (const Tile& tl : plan_tiles(spans, Tq, NH)) {
    const int64_t Qc = tl.r1 - tl.r0, Kc = tl.k1 - tl.k0;
    float* S = sc.S.fit(NH * Qc * Kc);
    T* P = reinterpret_cast<T*>(sc.P.fit(NH * Qc * Kc * static_cast<int64_t>(sizeof(T))));
    for (int64_t g = 0; g < outer; g++) {  // S^T (Kc, Qc) = K (Kc, D) @ Q^T (D, Qc), scaled
      GemmArgs a;
      a.ta = true;
      a.m = Kc; a.n = Qc; a.k = D;
      a.A = k + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
      a.B = q + tl.r0 * QD + g * rep * D; a.ldb = QD; a.sB = D;
      a.C = S + g * rep * Qc * Kc; a.ldc = Kc; a.sC = Qc * Kc;
      a.batch = static_cast<int>(batch);
      a.alpha = scale;
      a.ab = dtype_of<T>(); a.c = DType::F32;
      gemm(a, "attention_forward (scores)");
    }
    att_softmax_k<<<dim3(static_cast<unsigned>(Qc), static_cast<unsigned>(NH)), 128, 0, stream()>>>(
        P, lse, S, dsp + tl.r0, tl.r0, Qc, Kc, tl.k0, NH);
    CU_LAUNCHED("attention_forward (softmax)");
    for (int64_t g = 0; g < outer; g++) {  // O^T (D, Qc) = V^T (D, Kc) @ P^T (Kc, Qc)
      GemmArgs a;
      a.m = D; a.n = Qc; a.k = Kc;
      a.A = v + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
      a.B = P + g * rep * Qc * Kc; a.ldb = Kc; a.sB = Qc * Kc;
      a.C = out + tl.r0 * QD + g * rep * D; a.ldc = QD; a.sC = D;
      a.batch = static_cast<int>(batch);
      a.ab = a.c = dtype_of<T>();
      gemm(a, "attention_forward (values)");
    }
  }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH,
                        int64_t D) {
  if (Tq == 0) return;
  AttScratch& sc = att_scratch();
  Span* dsp = sc.spans.fit(Tq);
  CU_CHECK(cudaMemcpyAsync(dsp, spans, Tq * sizeof(Span), cudaMemcpyHostToDevice, stream()), "attention_backward (spans)");
  attention_backward_dev(dq, dk, dv, dout, q, k, v, out, lse, spans, dsp, Tq, Tk, NH, KVH, D);
}

template <typename T>
void attention_backward_dev(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                            const float* lse, const Span* spans, const Span* dsp, int64_t Tq, int64_t Tk, int64_t NH,
                            int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  if constexpr (std::is_same<T, bf16>::value) {
    if (flash_enabled() && flash_supported(D)) {
      flash_backward(dq, dk, dv, dout, q, k, v, out, lse, dsp, Tq, Tk, NH, KVH, D);
      if (spans) add_flops(2.5 * attention_flops(spans, Tq, NH, D));
      return;
    }
  }
  VQ_CHECK(spans != nullptr, "attention_backward: the cuBLASLt path needs the spans on the host");
  AttScratch& sc = att_scratch();
  const int64_t rep = NH / KVH, KVD = KVH * D, QD = NH * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t outer = rep == 1 ? 1 : KVH, batch = rep == 1 ? NH : rep, kstride = rep == 1 ? D : 0;
  for (const Tile& tl : plan_tiles(spans, Tq, NH)) {
    const int64_t Qc = tl.r1 - tl.r0, Kc = tl.k1 - tl.k0, n = NH * Qc * Kc;
    float* S = sc.S.fit(n);
    float* dP = sc.dP.fit(n);
    T* P = reinterpret_cast<T*>(sc.P.fit(n * static_cast<int64_t>(sizeof(T))));
    T* dS = reinterpret_cast<T*>(sc.dS.fit(n * static_cast<int64_t>(sizeof(T))));
    float* drow = sc.drow.fit(NH * Qc);
    for (int64_t g = 0; g < outer; g++) {
      GemmArgs a;  // scores again
      a.ta = true;
      a.m = Kc; a.n = Qc; a.k = D;
      a.A = k + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
      a.B = q + tl.r0 * QD + g * rep * D; a.ldb = QD; a.sB = D;
      a.C = S + g * rep * Qc * Kc; a.ldc = Kc; a.sC = Qc * Kc;
      a.batch = static_cast<int>(batch);
      a.alpha = scale;
      a.ab = dtype_of<T>(); a.c = DType::F32;
      gemm(a, "attention_backward (scores)");
      GemmArgs b;  // dP^T (Kc, Qc) = V (Kc, D) @ dO^T (D, Qc)
      b.ta = true;
      b.m = Kc; b.n = Qc; b.k = D;
      b.A = v + tl.k0 * KVD + g * D; b.lda = KVD; b.sA = kstride;
      b.B = dout + tl.r0 * QD + g * rep * D; b.ldb = QD; b.sB = D;
      b.C = dP + g * rep * Qc * Kc; b.ldc = Kc; b.sC = Qc * Kc;
      b.batch = static_cast<int>(batch);
      b.ab = dtype_of<T>(); b.c = DType::F32;
      gemm(b, "attention_backward (dP)");
    }
    {
      const int64_t warps = Qc * NH;
      att_drow_k<<<blocks_for(warps * 32), 256, 0, stream()>>>(drow, dout, out, tl.r0, Qc, NH, D);
      CU_LAUNCHED("attention_backward (row sums)");
    }
    att_dsoftmax_k<<<dim3(static_cast<unsigned>(Qc), static_cast<unsigned>(NH)), 128, 0, stream()>>>(
        P, dS, S, dP, lse, drow, dsp + tl.r0, tl.r0, Qc, Kc, tl.k0, NH);
    CU_LAUNCHED("attention_backward (softmax)");
    if (dq) {
      for (int64_t g = 0; g < outer; g++) {  // dQ^T (D, Qc) += scale * K^T (D, Kc) @ dS^T (Kc, Qc)
        GemmArgs a;
        a.m = D; a.n = Qc; a.k = Kc;
        a.A = k + tl.k0 * KVD + g * D; a.lda = KVD; a.sA = kstride;
        a.B = dS + g * rep * Qc * Kc; a.ldb = Kc; a.sB = Qc * Kc;
        a.C = dq + tl.r0 * QD + g * rep * D; a.ldc = QD; a.sC = D;
        a.batch = static_cast<int>(batch);
        a.alpha = scale; a.beta = 1.0f;
        a.ab = a.c = dtype_of<T>();
        gemm(a, "attention_backward (dq)");
      }
    }
    // dK, dV sum over the rep query heads of a kv head: one batched call (over kv heads) per r.
    for (int64_t r = 0; r < rep; r++) {
      if (dk) {  // dK^T (D, Kc) += scale * Q^T (D, Qc) @ dS (Qc, Kc)
        GemmArgs a;
        a.tb = true;
        a.m = D; a.n = Kc; a.k = Qc;
        a.A = q + tl.r0 * QD + r * D; a.lda = QD; a.sA = rep * D;
        a.B = dS + r * Qc * Kc; a.ldb = Kc; a.sB = rep * Qc * Kc;
        a.C = dk + tl.k0 * KVD; a.ldc = KVD; a.sC = D;
        a.batch = static_cast<int>(KVH);
        a.alpha = scale; a.beta = 1.0f;
        a.ab = a.c = dtype_of<T>();
        gemm(a, "attention_backward (dk)");
      }
      if (dv) {  // dV^T (D, Kc) += dO^T (D, Qc) @ P (Qc, Kc)
        GemmArgs a;
        a.tb = true;
        a.m = D; a.n = Kc; a.k = Qc;
        a.A = dout + tl.r0 * QD + r * D; a.lda = QD; a.sA = rep * D;
        a.B = P + r * Qc * Kc; a.ldb = Kc; a.sB = rep * Qc * Kc;
        a.C = dv + tl.k0 * KVD; a.ldc = KVD; a.sC = D;
        a.batch = static_cast<int>(KVH);
        a.beta = 1.0f;
        a.ab = a.c = dtype_of<T>();
        gemm(a, "attention_backward (dv)");
      }
    }
  }
}

// ---- activations ----
namespace {
inline bool al16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
inline unsigned chunks_for(int64_t n) { return blocks_for((n + 7) / 8); }
}  // namespace
template <typename T> void swiglu_forward(T* out, const T* gate, const T* up, int64_t N) {
  if (!N) return;
  swiglu_fwd_k<<<chunks_for(N), 256, 0, stream()>>>(out, gate, up, N, al16(out) && al16(gate) && al16(up));
  CU_LAUNCHED("swiglu_forward");
}
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t N, bool accumulate) {
  if (!N) return;
  const bool vec = al16(dgate) && al16(dup) && al16(dout) && al16(gate) && al16(up);
  swiglu_bwd_k<<<chunks_for(N), 256, 0, stream()>>>(dgate, dup, dout, gate, up, N, vec, accumulate);
  CU_LAUNCHED("swiglu_backward");
}
template <typename T> void quick_gelu_forward(T* out, const T* inp, int64_t N) {
  if (!N) return;
  gelu_fwd_k<T, 0><<<chunks_for(N), 256, 0, stream()>>>(out, inp, N, al16(out) && al16(inp));
  CU_LAUNCHED("quick_gelu_forward");
}
template <typename T> void quick_gelu_backward(T* dinp, const T* dout, const T* inp, int64_t N, bool accumulate) {
  if (!N) return;
  gelu_bwd_k<T, 0><<<chunks_for(N), 256, 0, stream()>>>(dinp, dout, inp, N, al16(dinp) && al16(dout) && al16(inp), accumulate);
  CU_LAUNCHED("quick_gelu_backward");
}
template <typename T> void gelu_forward(T* out, const T* inp, int64_t N) {
  if (!N) return;
  gelu_fwd_k<T, 1><<<chunks_for(N), 256, 0, stream()>>>(out, inp, N, al16(out) && al16(inp));
  CU_LAUNCHED("gelu_forward");
}
template <typename T> void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t N, bool accumulate) {
  if (!N) return;
  gelu_bwd_k<T, 1><<<chunks_for(N), 256, 0, stream()>>>(dinp, dout, inp, N, al16(dinp) && al16(dout) && al16(inp), accumulate);
  CU_LAUNCHED("gelu_backward");
}
template <typename T> void gelu_tanh_forward(T* out, const T* inp, int64_t N) {
  if (!N) return;
  gelu_fwd_k<T, 2><<<chunks_for(N), 256, 0, stream()>>>(out, inp, N, al16(out) && al16(inp));
  CU_LAUNCHED("gelu_tanh_forward");
}
template <typename T> void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t N, bool accumulate) {
  if (!N) return;
  gelu_bwd_k<T, 2><<<chunks_for(N), 256, 0, stream()>>>(dinp, dout, inp, N, al16(dinp) && al16(dout) && al16(inp), accumulate);
  CU_LAUNCHED("gelu_tanh_backward");
}
template <typename T> void residual_forward(T* out, const T* a, const T* b, int64_t N) {
  if (!N) return;
  residual_k<<<chunks_for(N), 256, 0, stream()>>>(out, a, b, N, al16(out) && al16(a) && al16(b));
  CU_LAUNCHED("residual_forward");
}
template <typename T> void add_inplace(T* out, const T* a, int64_t N) {
  if (!N) return;
  add_k<<<chunks_for(N), 256, 0, stream()>>>(out, a, N, al16(out) && al16(a));
  CU_LAUNCHED("add_inplace");
}

template <typename T>
void logprob_forward(float* logp, float* entropy, float* lse, const T* logits, const int32_t* targets, int64_t R,
                     int64_t V) {
  if (!R) return;
  logprob_fwd_k<<<R, 512, 0, stream()>>>(logp, entropy, lse, logits, targets, V);
  CU_LAUNCHED("logprob_forward");
}
template <typename T>
void logprob_backward(T* dlogits, const float* dlogp, const T* logits, const float* lse, const int32_t* targets,
                      int64_t R, int64_t V) {
  if (!R) return;
  const unsigned gx = static_cast<unsigned>(std::min<int64_t>((V + 255) / 256, 64));
  logprob_bwd_k<<<dim3(gx, static_cast<unsigned>(R)), 256, 0, stream()>>>(dlogits, dlogp, logits, lse, targets, V);
  CU_LAUNCHED("logprob_backward");
}

double sum_squares(const float* x, int64_t n) {
  thread_local DArray<double> acc("sum_squares");
  double* d = acc.fit(1);
  CU_CHECK(cudaMemsetAsync(d, 0, sizeof(double), stream()), "sum_squares");
  if (n > 0) {
    sumsq_k<<<std::min<unsigned>(blocks_for(n), 1024), 256, 0, stream()>>>(d, x, n);
    CU_LAUNCHED("sum_squares");
  }
  double h = 0.0;
  CU_CHECK(cudaMemcpyAsync(&h, d, sizeof(double), cudaMemcpyDeviceToHost, stream()), "sum_squares");
  CU_CHECK(cudaStreamSynchronize(stream()), "sum_squares");
  return h;
}
bool all_finite(const float* x, int64_t n) {
  thread_local DArray<int> flag("all_finite");
  int* d = flag.fit(1);
  CU_CHECK(cudaMemsetAsync(d, 0, sizeof(int), stream()), "all_finite");
  if (n > 0) {
    finite_k<<<std::min<unsigned>(blocks_for(n), 1024), 256, 0, stream()>>>(d, x, n);
    CU_LAUNCHED("all_finite");
  }
  int h = 0;
  CU_CHECK(cudaMemcpyAsync(&h, d, sizeof(int), cudaMemcpyDeviceToHost, stream()), "all_finite");
  CU_CHECK(cudaStreamSynchronize(stream()), "all_finite");
  return h == 0;
}
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, bf16* copy) {
  if (!n) return;
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  adamw_k<<<blocks_for(n), 256, 0, stream()>>>(params, grads, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay,
                                               static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
                                               grad_scale, copy);
  CU_LAUNCHED("adamw_update");
}
void adamw_update_bf16m(float* params, const float* grads, bf16* m, bf16* v, int64_t n, float lr, float beta1,
                        float beta2, float eps, float weight_decay, int64_t step, float grad_scale, bf16* copy) {
  if (!n) return;
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  adamw_bf16m_k<<<blocks_for(n), 256, 0, stream()>>>(params, grads, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay,
                                                     static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
                                                     grad_scale, copy);
  CU_LAUNCHED("adamw_update");
}

void to_bf16(bf16* out, const float* in, int64_t n) {
  if (!n) return;
  to_bf16_k<<<blocks_for(n), 256, 0, stream()>>>(out, in, n);
  CU_LAUNCHED("to_bf16");
}
void to_f32(float* out, const bf16* in, int64_t n) {
  if (!n) return;
  to_f32_k<<<blocks_for(n), 256, 0, stream()>>>(out, in, n);
  CU_LAUNCHED("to_f32");
}
template <typename T> void fill(T* out, float value, int64_t n) {
  if (!n) return;
  fill_k<<<blocks_for(n), 256, 0, stream()>>>(out, value, n);
  CU_LAUNCHED("fill");
}
template <> void from_f32<float>(float* out, const float* in, int64_t n) {
  if (n && out != in) CU_CHECK(cudaMemcpyAsync(out, in, n * sizeof(float), cudaMemcpyDeviceToDevice, stream()), "from_f32");
}
template <> void from_f32<bf16>(bf16* out, const float* in, int64_t n) { to_bf16(out, in, n); }
template <typename O, typename I> void gather_rows(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  if (!n) return;
  gather_k<<<blocks_for(n * C), 256, 0, stream()>>>(out, in, rows, n, C);
  CU_LAUNCHED("gather_rows");
}
template <typename O, typename I> void scatter_rows(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  if (!n) return;
  scatter_k<<<blocks_for(n * C), 256, 0, stream()>>>(out, in, rows, n, C);
  CU_LAUNCHED("scatter_rows");
}
template <typename O, typename I> void convert(O* out, const I* in, int64_t n) {
  if (!n) return;
  convert_k<<<blocks_for(n), 256, 0, stream()>>>(out, in, n);
  CU_LAUNCHED("convert");
}
template <typename T> void scatter_add_rows(T* out, const T* in, const int64_t* rows, int64_t n, int64_t C) {
  if (!n) return;
  scatter_add_k<<<static_cast<unsigned>((C + 255) / 256), 256, 0, stream()>>>(out, in, rows, n, C);
  CU_LAUNCHED("scatter_add_rows");
}
template <typename T> void split_qkv(T* q, T* k, T* v, const T* qkv, int64_t N, int64_t E) {
  if (!N) return;
  split_qkv_k<<<blocks_for(N * 3 * E), 256, 0, stream()>>>(q, k, v, qkv, N, E);
  CU_LAUNCHED("split_qkv");
}
template <typename T> void join_qkv(T* qkv, const T* q, const T* k, const T* v, int64_t N, int64_t E) {
  if (!N) return;
  join_qkv_k<<<blocks_for(N * 3 * E), 256, 0, stream()>>>(qkv, q, k, v, N, E);
  CU_LAUNCHED("join_qkv");
}

template <typename T>
void sample_rows(int32_t* tok, float* logprob, const T* logits, const int64_t* gs, int64_t B, int64_t V,
                 float temperature, uint64_t seed, uint64_t t) {
  if (!B) return;
  sample_k<<<static_cast<unsigned>(B), 1024, 0, stream()>>>(tok, logprob, logits, gs, V, temperature, seed, t);
  CU_LAUNCHED("sample_rows");
}
template <typename T>
void sample_rows_multi(int32_t* tok, float* logprob, const T* logits, const float* temps, const uint64_t* seeds,
                       const int64_t* gs, const int64_t* ts, int64_t B, int64_t V) {
  if (!B) return;
  sample_multi_k<<<static_cast<unsigned>(B), 1024, 0, stream()>>>(tok, logprob, logits, temps, seeds, gs, ts, V);
  CU_LAUNCHED("sample_rows");
}

// ---- instantiations ----
#define VQ_INST(T)                                                                                                   \
  template void embedding_backward<T>(float*, const T*, const int32_t*, int64_t, int64_t);                           \
  template void residual_rmsnorm_forward<T>(T*, float*, float*, const float*, const T*, const T*, int64_t, int64_t,  \
                                            float);                                                                  \
  template void residual_layernorm_forward<T>(T*, float*, float*, float*, const float*, const T*, const T*,          \
                                              const T*, int64_t, int64_t, float);                                    \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, bool);                \
  template void linear_backward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int64_t, int64_t,      \
                                   bool);                                                                            \
  template void lora_forward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t, float);    \
  template void lora_backward<T>(T*, float*, float*, const T*, const T*, const T*, const T*, const T*, int64_t,      \
                                 int64_t, int64_t, int64_t, float);                                                  \
  template void rope_forward<T>(T*, const T*, const float*, const float*, int64_t, int64_t, int64_t);                \
  template void rope_backward<T>(T*, const T*, const float*, const float*, int64_t, int64_t, int64_t, bool);         \
  template void attention_forward<T>(T*, float*, const T*, const T*, const T*, const Span*, int64_t, int64_t,        \
                                     int64_t, int64_t, int64_t);                                                     \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const float*,    \
                                      const Span*, int64_t, int64_t, int64_t, int64_t, int64_t);                     \
  template void attention_forward_dev<T>(T*, float*, const T*, const T*, const T*, const Span*, const Span*,         \
                                         int64_t, int64_t, int64_t, int64_t, int64_t);                               \
  template void attention_backward_dev<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,              \
                                          const float*, const Span*, const Span*, int64_t, int64_t, int64_t,        \
                                          int64_t, int64_t);                                                         \
  template void swiglu_forward<T>(T*, const T*, const T*, int64_t);                                                  \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, bool);                             \
  template void quick_gelu_forward<T>(T*, const T*, int64_t);                                                        \
  template void quick_gelu_backward<T>(T*, const T*, const T*, int64_t, bool);                                       \
  template void gelu_forward<T>(T*, const T*, int64_t);                                                              \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t, bool);                                             \
  template void gelu_tanh_forward<T>(T*, const T*, int64_t);                                                         \
  template void gelu_tanh_backward<T>(T*, const T*, const T*, int64_t, bool);                                        \
  template void residual_forward<T>(T*, const T*, const T*, int64_t);                                                \
  template void add_inplace<T>(T*, const T*, int64_t);                                                               \
  template void logprob_forward<T>(float*, float*, float*, const T*, const int32_t*, int64_t, int64_t);              \
  template void logprob_backward<T>(T*, const float*, const T*, const float*, const int32_t*, int64_t, int64_t);     \
  template void fill<T>(T*, float, int64_t);                                                                         \
  template void scatter_add_rows<T>(T*, const T*, const int64_t*, int64_t, int64_t);                                 \
  template void split_qkv<T>(T*, T*, T*, const T*, int64_t, int64_t);                                                \
  template void join_qkv<T>(T*, const T*, const T*, const T*, int64_t, int64_t);                                     \
  template void sample_rows<T>(int32_t*, float*, const T*, const int64_t*, int64_t, int64_t, float, uint64_t, uint64_t); \
  template void sample_rows_multi<T>(int32_t*, float*, const T*, const float*, const uint64_t*, const int64_t*,      \
                                     const int64_t*, int64_t, int64_t);

VQ_INST(float)
VQ_INST(bf16)

// T (weights, activations) x X (the residual stream): fp32/fp32, bf16/bf16 (op tests), bf16/fp32 (the model)
#define VQ_INST2(T, X)                                                                                               \
  template void embedding_forward<T, X>(X*, const int32_t*, const T*, int64_t, int64_t);                             \
  template void rmsnorm_forward<T, X>(T*, float*, const X*, const T*, int64_t, int64_t, float);                      \
  template void rmsnorm_backward<T, X>(X*, float*, const T*, const X*, const T*, const float*, int64_t, int64_t, T*); \
  template void layernorm_forward<T, X>(T*, float*, float*, const X*, const T*, const T*, int64_t, int64_t, float);  \
  template void layernorm_backward<T, X>(X*, float*, float*, const T*, const X*, const T*, const float*,             \
                                         const float*, int64_t, int64_t, T*);                                        \
  template void gather_rows<T, X>(T*, const X*, const int64_t*, int64_t, int64_t);                                   \
  template void scatter_rows<X, T>(X*, const T*, const int64_t*, int64_t, int64_t);                                  \
  template void convert<X, T>(X*, const T*, int64_t);
VQ_INST2(float, float)
VQ_INST2(bf16, bf16)
VQ_INST2(bf16, float)
template void gather_rows<float, bf16>(float*, const bf16*, const int64_t*, int64_t, int64_t);
template void scatter_rows<bf16, float>(bf16*, const float*, const int64_t*, int64_t, int64_t);
template void convert<bf16, float>(bf16*, const float*, int64_t);

}  // namespace cu
}  // namespace vq
