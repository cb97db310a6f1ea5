// RMSNorm and LayerNorm, plain and fused with the residual add (cuda/ops.h, "norms").
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

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

}  // namespace

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

#define VQ_INST2(T, X) \
  template void rmsnorm_forward<T, X>(T*, float*, const X*, const T*, int64_t, int64_t, float); \
  template void rmsnorm_backward<T, X>(X*, float*, const T*, const X*, const T*, const float*, int64_t, int64_t, T*); \
  template void layernorm_forward<T, X>(T*, float*, float*, const X*, const T*, const T*, int64_t, int64_t, float); \
  template void layernorm_backward<T, X>(X*, float*, float*, const T*, const X*, const T*, const float*, \
  const float*, int64_t, int64_t, T*);
VQ_INST2(float, float)
VQ_INST2(bf16, bf16)
VQ_INST2(bf16, float)
#define VQ_INST(T) \
  template void residual_rmsnorm_forward<T>(T*, float*, float*, const float*, const T*, const T*, int64_t, int64_t, \
  float); \
  template void residual_layernorm_forward<T>(T*, float*, float*, float*, const float*, const T*, const T*, \
  const T*, int64_t, int64_t, float);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
