#include <cmath>
#include <vector>

#include "cpu/threadpool.h"
#include "ops/ops.h"
#include "ops/simd.h"

namespace vq {

VQ_HOT static void rope_rows(float* out, const float* inp, const float* cos, const float* sin, int64_t t0, int64_t t1,
                             int64_t NH, int64_t D, float sign) {
  const int64_t half = D / 2;
  for (int64_t t = t0; t < t1; t++) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < NH; h++) {
      const float* x = inp + (t * NH + h) * D;
      float* o = out + (t * NH + h) * D;
#pragma omp simd
      for (int64_t j = 0; j < half; j++) {
        const float x1 = x[j], x2 = x[j + half];
        o[j] = x1 * c[j] - sign * x2 * s[j];
        o[j + half] = x2 * c[j] + sign * x1 * s[j];
      }
    }
  }
}

void rope_forward(float* out, const float* inp, const float* cos, const float* sin, int64_t T, int64_t NH, int64_t D) {
  // out, inp (T, NH, D); cos, sin (T, D/2)
  parallel_for(T, 16, [&](int64_t t0, int64_t t1, int) { rope_rows(out, inp, cos, sin, t0, t1, NH, D, 1.0f); });
}

VQ_HOT static void rope_bwd_rows(float* dinp, const float* dout, const float* cos, const float* sin, int64_t t0,
                                 int64_t t1, int64_t NH, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t t = t0; t < t1; t++) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int64_t h = 0; h < NH; h++) {
      const float* g = dout + (t * NH + h) * D;
      float* d = dinp + (t * NH + h) * D;
#pragma omp simd
      for (int64_t j = 0; j < half; j++) {
        const float g1 = g[j], g2 = g[j + half];
        d[j] += g1 * c[j] + g2 * s[j];
        d[j + half] += g2 * c[j] - g1 * s[j];
      }
    }
  }
}

void rope_backward(float* dinp, const float* dout, const float* cos, const float* sin, int64_t T, int64_t NH,
                   int64_t D) {
  // dinp (T, NH, D) +=; dout (T, NH, D); cos, sin (T, D/2)
  parallel_for(T, 16, [&](int64_t t0, int64_t t1, int) { rope_bwd_rows(dinp, dout, cos, sin, t0, t1, NH, D); });
}

void rope_mrope_table(float* cos, float* sin, const int32_t* pos, const int32_t* section, int64_t T, int64_t D,
                      float theta, bool interleaved) {
  // cos, sin (T, D/2); pos (3, T); section (3)
  const int64_t half = D / 2;
  // inv_freq[j] = 1 / theta^(2j/D), in fp32 like transformers' default rope init
  std::vector<float> inv(half);
  std::vector<int> axis(half);
  for (int64_t j = 0; j < half; j++) {
    inv[j] = 1.0f / std::pow(theta, static_cast<float>(2 * j) / static_cast<float>(D));
    if (interleaved) axis[j] = (j % 3 == 1 && j < 3 * section[1]) ? 1 : (j % 3 == 2 && j < 3 * section[2]) ? 2 : 0;
    else axis[j] = j < section[0] ? 0 : (j < section[0] + section[1] ? 1 : 2);
  }
  for (int64_t t = 0; t < T; t++)
    for (int64_t j = 0; j < half; j++) {
      const float a = static_cast<float>(pos[axis[j] * T + t]) * inv[j];
      cos[t * half + j] = std::cos(a);
      sin[t * half + j] = std::sin(a);
    }
}

void rope_vision_table(float* cos, float* sin, const int32_t* hpos, const int32_t* wpos, int64_t T, int64_t D,
                       float theta) {
  // cos, sin (T, D/2); hpos, wpos (T). VisionRotaryEmbedding(dim = D/2): inv[i] = 1/theta^(2i/(D/2)).
  const int64_t quarter = D / 4, half = D / 2;
  std::vector<float> inv(quarter);
  for (int64_t i = 0; i < quarter; i++)
    inv[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(half));
  for (int64_t t = 0; t < T; t++)
    for (int64_t j = 0; j < half; j++) {
      const float a = j < quarter ? static_cast<float>(hpos[t]) * inv[j] : static_cast<float>(wpos[t]) * inv[j - quarter];
      cos[t * half + j] = std::cos(a);
      sin[t * half + j] = std::sin(a);
    }
}

}  // namespace vq
