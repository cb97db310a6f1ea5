// Rotary embeddings and their tables: M-RoPE (sectioned or interleaved) and the vision 2D table (cuda/ops.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

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

}  // namespace

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

#define VQ_INST(T) \
  template void rope_forward<T>(T*, const T*, const float*, const float*, int64_t, int64_t, int64_t); \
  template void rope_backward<T>(T*, const T*, const float*, const float*, int64_t, int64_t, int64_t, bool);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
