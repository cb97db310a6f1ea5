// Rotary embeddings and their tables: M-RoPE (sectioned or interleaved) and the vision 2D table (cuda/ops.h).
#include <algorithm>
#include <cmath>
#include <type_traits>
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

// One (row, head, 8-pair chunk) per thread: q and k rotated (x1 c - x2 s, x2 c + x1 s as rope_fwd_k computes
// them), v copied. qkv rows (3, NH, D); cos, sin (N, D/2).
__global__ void split_qkv_rope_k(bf16* q, bf16* k, bf16* v, const bf16* qkv, const float* cos, const float* sin,
                                 int64_t N, int64_t NH, int64_t D) {
  const int64_t half = D / 2, cpr = half / 8, E = NH * D;
  GRID_STRIDE(i, N * NH * cpr) {
    const int64_t j = (i % cpr) * 8, th = i / cpr, t = th / NH, h = th % NH;
    const bf16* row = qkv + t * 3 * E + h * D;
    float c[8], s[8];
    *reinterpret_cast<float4*>(c) = *reinterpret_cast<const float4*>(cos + t * half + j);
    *reinterpret_cast<float4*>(c + 4) = *reinterpret_cast<const float4*>(cos + t * half + j + 4);
    *reinterpret_cast<float4*>(s) = *reinterpret_cast<const float4*>(sin + t * half + j);
    *reinterpret_cast<float4*>(s + 4) = *reinterpret_cast<const float4*>(sin + t * half + j + 4);
#pragma unroll
    for (int part = 0; part < 2; part++) {
      const bf16* in = row + part * E;
      bf16* out = (part == 0 ? q : k) + th * D;
      uint4 a = *reinterpret_cast<const uint4*>(in + j), b = *reinterpret_cast<const uint4*>(in + j + half);
      const bf16* x1 = reinterpret_cast<const bf16*>(&a);
      const bf16* x2 = reinterpret_cast<const bf16*>(&b);
      uint4 ya, yb;
      bf16* y1 = reinterpret_cast<bf16*>(&ya);
      bf16* y2 = reinterpret_cast<bf16*>(&yb);
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const float u = __bfloat162float(x1[e]), w = __bfloat162float(x2[e]);
        y1[e] = __float2bfloat16(u * c[e] - w * s[e]);
        y2[e] = __float2bfloat16(w * c[e] + u * s[e]);
      }
      *reinterpret_cast<uint4*>(out + j) = ya;
      *reinterpret_cast<uint4*>(out + j + half) = yb;
    }
    *reinterpret_cast<uint4*>(v + th * D + j) = *reinterpret_cast<const uint4*>(row + 2 * E + j);
    *reinterpret_cast<uint4*>(v + th * D + j + half) = *reinterpret_cast<const uint4*>(row + 2 * E + j + half);
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

template <typename T>
void split_qkv_rope(T* q, T* k, T* v, const T* qkv, const float* cos, const float* sin, int64_t N, int64_t NH,
                    int64_t D) {
  if (N == 0) return;
  if constexpr (std::is_same<T, bf16>::value) {
    const uintptr_t al = reinterpret_cast<uintptr_t>(q) | reinterpret_cast<uintptr_t>(k) | reinterpret_cast<uintptr_t>(v) |
                         reinterpret_cast<uintptr_t>(qkv) | reinterpret_cast<uintptr_t>(cos) |
                         reinterpret_cast<uintptr_t>(sin);
    if ((D / 2) % 8 == 0 && D % 2 == 0 && al % 16 == 0) {
      const int64_t n = N * NH * (D / 16);
      split_qkv_rope_k<<<blocks_for(n), 256, 0, stream()>>>(q, k, v, qkv, cos, sin, N, NH, D);
      CU_LAUNCHED("split_qkv_rope");
      return;
    }
  }
  split_qkv(q, k, v, qkv, N, NH * D);
  rope_forward(q, q, cos, sin, N, NH, D);
  rope_forward(k, k, cos, sin, N, NH, D);
}

#define VQ_INST(T) \
  template void split_qkv_rope<T>(T*, T*, T*, const T*, const float*, const float*, int64_t, int64_t, int64_t); \
  template void rope_forward<T>(T*, const T*, const float*, const float*, int64_t, int64_t, int64_t); \
  template void rope_backward<T>(T*, const T*, const float*, const float*, int64_t, int64_t, int64_t, bool);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
