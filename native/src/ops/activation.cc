#include <cmath>

#include "cpu/threadpool.h"
#include "ops/ops.h"
#include "ops/simd.h"

namespace vq {

namespace {
constexpr int64_t kGrain = 4096;
}

VQ_HOT static void swiglu_range(float* out, const float* gate, const float* up, int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t N) {
  // out, gate, up (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { swiglu_range(out, gate, up, a, b); });
}

VQ_HOT static void swiglu_bwd_range(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                    int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float g = gate[i];
    const float sg = 1.0f / (1.0f + std::exp(-g));
    const float silu = g * sg;
    dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    dup[i] += dout[i] * silu;
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t N) {
  // dgate, dup (N) +=; dout, gate, up (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { swiglu_bwd_range(dgate, dup, dout, gate, up, a, b); });
}

VQ_HOT static void qgelu_range(float* out, const float* inp, int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float x = inp[i];
    out[i] = x / (1.0f + std::exp(-1.702f * x));
  }
}

void quick_gelu_forward(float* out, const float* inp, int64_t N) {
  // out, inp (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { qgelu_range(out, inp, a, b); });
}

VQ_HOT static void qgelu_bwd_range(float* dinp, const float* dout, const float* inp, int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float x = inp[i];
    const float s = 1.0f / (1.0f + std::exp(-1.702f * x));
    dinp[i] += dout[i] * (s + 1.702f * x * s * (1.0f - s));
  }
}

void quick_gelu_backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  // dinp (N) +=; dout, inp (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { qgelu_bwd_range(dinp, dout, inp, a, b); });
}

static void gelu_range(float* out, const float* inp, int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
  }
}

void gelu_forward(float* out, const float* inp, int64_t N) {
  // out, inp (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { gelu_range(out, inp, a, b); });
}

static void gelu_bwd_range(float* dinp, const float* dout, const float* inp, int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float x = inp[i];
    const float cdf = 0.5f * (1.0f + std::erf(x * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * std::exp(-0.5f * x * x);
    dinp[i] += dout[i] * (cdf + x * pdf);
  }
}

void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  // dinp (N) +=; dout, inp (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { gelu_bwd_range(dinp, dout, inp, a, b); });
}

// gelu with the tanh approximation (torch's gelu(approximate="tanh"), "gelu_pytorch_tanh"):
//   0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
static void gelu_tanh_range(float* out, const float* inp, int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float x = inp[i];
    const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    out[i] = 0.5f * x * (1.0f + std::tanh(inner));
  }
}

void gelu_tanh_forward(float* out, const float* inp, int64_t N) {
  // out, inp (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { gelu_tanh_range(out, inp, a, b); });
}

static void gelu_tanh_bwd_range(float* dinp, const float* dout, const float* inp, int64_t a, int64_t b) {
  for (int64_t i = a; i < b; i++) {
    const float x = inp[i];
    const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    const float t = std::tanh(inner);
    const float dinner = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] += dout[i] * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dinner);
  }
}

void gelu_tanh_backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  // dinp (N) +=; dout, inp (N)
  parallel_for(N, kGrain, [&](int64_t a, int64_t b, int) { gelu_tanh_bwd_range(dinp, dout, inp, a, b); });
}

void residual_forward(float* out, const float* a, const float* b, int64_t N) {
  // out, a, b (N)
  parallel_for(N, kGrain, [&](int64_t i0, int64_t i1, int) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
  });
}

}  // namespace vq
