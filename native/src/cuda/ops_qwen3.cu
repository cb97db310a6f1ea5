// Ops that only Qwen3-VL needs (declared in cuda/ops.h, "Qwen3-VL"): the learned position embeddings
// interpolated to each image's grid, and DeepStack's adds of vision features into the fp32 residual
// stream at the image rows. The formulas are model.cc's (vision_forward, text_forward).
#include "cuda/ops.h"

namespace vq {
namespace cu {

namespace {

__device__ __forceinline__ float ldf(const float* p) { return *p; }
__device__ __forceinline__ float ldf(const bf16* p) { return __bfloat162float(*p); }

inline unsigned blocks(int64_t n) {
  int64_t b = (n + 255) / 256;
  if (b > 65535LL * 32) b = 65535LL * 32;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

template <typename T>
__global__ void residual_add_k(float* xout, const float* xin, const T* r, int64_t n) {
  GRID_STRIDE(i, n) xout[i] = xin[i] + ldf(r + i);
}
template <typename T>
__global__ void add_rows_k(float* x, const T* feat, const int64_t* rows, int64_t n, int64_t C) {
  GRID_STRIDE(i, n * C) x[rows[i / C] * C + i % C] += ldf(feat + i);
}
// x[r] += sum_k w[r,k] pe[idx[r,k]], the four terms summed first in k order (as the CPU does)
template <typename T>
__global__ void pos_embed_fwd_k(float* x, const T* pe, const int32_t* idx, const float* w, int64_t N, int64_t E) {
  GRID_STRIDE(i, N * E) {
    const int64_t r = i / E, c = i % E;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; k++) s += ldf(pe + static_cast<int64_t>(idx[r * 4 + k]) * E + c) * w[r * 4 + k];
    x[i] += s;
  }
}
__global__ void pos_embed_bwd_k(float* dpe, const float* dx, const int32_t* idx, const float* w, int64_t N, int64_t E) {
  GRID_STRIDE(i, N * E) {
    const int64_t r = i / E, c = i % E;
    const float g = dx[i];
#pragma unroll
    for (int k = 0; k < 4; k++) atomicAdd(dpe + static_cast<int64_t>(idx[r * 4 + k]) * E + c, w[r * 4 + k] * g);
  }
}

}  // namespace

template <typename T>
void residual_add(float* xout, const float* xin, const T* r, int64_t N) {
  if (!N) return;
  residual_add_k<<<blocks(N), 256, 0, stream()>>>(xout, xin, r, N);
  CU_LAUNCHED("residual_add");
}
template <typename T>
void add_rows(float* x, const T* feat, const int64_t* rows, int64_t n, int64_t C) {
  if (!n) return;
  add_rows_k<<<blocks(n * C), 256, 0, stream()>>>(x, feat, rows, n, C);
  CU_LAUNCHED("add_rows");
}
template <typename T>
void pos_embed_forward(float* x, const T* pe, const int32_t* idx, const float* w, int64_t N, int64_t E) {
  if (!N) return;
  pos_embed_fwd_k<<<blocks(N * E), 256, 0, stream()>>>(x, pe, idx, w, N, E);
  CU_LAUNCHED("pos_embed_forward");
}
void pos_embed_backward(float* dpe, const float* dx, const int32_t* idx, const float* w, int64_t N, int64_t E) {
  if (!N || !dpe) return;
  pos_embed_bwd_k<<<blocks(N * E), 256, 0, stream()>>>(dpe, dx, idx, w, N, E);
  CU_LAUNCHED("pos_embed_backward");
}

#define VQ_INST(T)                                                                            \
  template void residual_add<T>(float*, const float*, const T*, int64_t);                     \
  template void add_rows<T>(float*, const T*, const int64_t*, int64_t, int64_t);              \
  template void pos_embed_forward<T>(float*, const T*, const int32_t*, const float*, int64_t, int64_t);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
