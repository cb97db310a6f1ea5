// Element-wise activations and adds, 8 elements per thread (cuda/ops.h, "activations").
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

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

#define VQ_INST(T) \
  template void swiglu_forward<T>(T*, const T*, const T*, int64_t); \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, bool); \
  template void quick_gelu_forward<T>(T*, const T*, int64_t); \
  template void quick_gelu_backward<T>(T*, const T*, const T*, int64_t, bool); \
  template void gelu_forward<T>(T*, const T*, int64_t); \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t, bool); \
  template void gelu_tanh_forward<T>(T*, const T*, int64_t); \
  template void gelu_tanh_backward<T>(T*, const T*, const T*, int64_t, bool);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
