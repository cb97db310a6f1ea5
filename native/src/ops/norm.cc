#include <cmath>
#include <vector>

#include "cpu/threadpool.h"
#include "ops/ops.h"
#include "ops/simd.h"

namespace vq {

namespace {
// Sums per-part partial rows [parts][C] into dst (C) in part order (deterministic for a thread count).
void reduce_parts(float* dst, const std::vector<float>& parts, int nparts, int64_t C) {
  for (int p = 0; p < nparts; p++)
    for (int64_t c = 0; c < C; c++) dst[c] += parts[p * C + c];
}
}  // namespace

VQ_HOT static void rmsnorm_rows(float* out, float* rstd, const float* inp, const float* weight, int64_t t0, int64_t t1,
                                int64_t C, float eps) {
  for (int64_t t = t0; t < t1; t++) {
    const float* x = inp + t * C;
    float* o = out + t * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; c++) ss += x[c] * x[c];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
    rstd[t] = r;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) o[c] = weight[c] * (x[c] * r);
  }
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t T, int64_t C, float eps) {
  // out, inp (T, C); rstd (T); weight (C)
  parallel_for(T, 16, [&](int64_t t0, int64_t t1, int) { rmsnorm_rows(out, rstd, inp, weight, t0, t1, C, eps); });
}

VQ_HOT static void rmsnorm_bwd_rows(float* dinp, float* dw, const float* dout, const float* inp, const float* weight,
                                    const float* rstd, int64_t t0, int64_t t1, int64_t C) {
  for (int64_t t = t0; t < t1; t++) {
    const float* x = inp + t * C;
    const float* g = dout + t * C;
    const float r = rstd[t];
    // y = w * x * r;  dx = r * (w*g) - x * r^3 / C * sum(w*g*x)
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; c++) s += weight[c] * g[c] * x[c];
    const float k = s * r * r * r / static_cast<float>(C);
    if (dinp) {
      float* dx = dinp + t * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) dx[c] += r * weight[c] * g[c] - k * x[c];
    }
    if (dw) {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) dw[c] += g[c] * x[c] * r;
    }
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t T, int64_t C) {
  // dinp (T, C) +=; dweight (C) +=; dout, inp (T, C); weight (C); rstd (T)
  const int nparts = ThreadPool::get().parts_for(T, 16);
  std::vector<float> partial(dweight ? static_cast<size_t>(nparts) * C : 0, 0.0f);
  parallel_for(T, 16, [&](int64_t t0, int64_t t1, int p) {
    rmsnorm_bwd_rows(dinp, dweight ? partial.data() + p * C : nullptr, dout, inp, weight, rstd, t0, t1, C);
  });
  if (dweight) reduce_parts(dweight, partial, nparts, C);
}

VQ_HOT static void layernorm_rows(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                  const float* bias, int64_t t0, int64_t t1, int64_t C, float eps) {
  for (int64_t t = t0; t < t1; t++) {
    const float* x = inp + t * C;
    float* o = out + t * C;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; c++) s += x[c];
    const float m = s / static_cast<float>(C);
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    const float r = 1.0f / std::sqrt(v / static_cast<float>(C) + eps);
    mean[t] = m;
    rstd[t] = r;
#pragma omp simd
    for (int64_t c = 0; c < C; c++) o[c] = (x[c] - m) * r * weight[c] + bias[c];
  }
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int64_t T, int64_t C, float eps) {
  // out, inp (T, C); mean, rstd (T); weight, bias (C)
  parallel_for(T, 16, [&](int64_t t0, int64_t t1, int) {
    layernorm_rows(out, mean, rstd, inp, weight, bias, t0, t1, C, eps);
  });
}

VQ_HOT static void layernorm_bwd_rows(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                      const float* weight, const float* mean, const float* rstd, int64_t t0,
                                      int64_t t1, int64_t C) {
  for (int64_t t = t0; t < t1; t++) {
    const float* x = inp + t * C;
    const float* g = dout + t * C;
    const float m = mean[t], r = rstd[t];
    // xhat = (x-m) r; dxhat = g w; dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
    float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t c = 0; c < C; c++) {
      const float dxh = g[c] * weight[c];
      s1 += dxh;
      s2 += dxh * (x[c] - m) * r;
    }
    s1 /= static_cast<float>(C);
    s2 /= static_cast<float>(C);
    if (dinp) {
      float* dx = dinp + t * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) dx[c] += r * (g[c] * weight[c] - s1 - (x[c] - m) * r * s2);
    }
    if (dw) {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) dw[c] += g[c] * (x[c] - m) * r;
    }
    if (db) {
#pragma omp simd
      for (int64_t c = 0; c < C; c++) db[c] += g[c];
    }
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t T, int64_t C) {
  // dinp (T, C) +=; dweight, dbias (C) +=; dout, inp (T, C); weight (C); mean, rstd (T)
  const int nparts = ThreadPool::get().parts_for(T, 16);
  std::vector<float> pw(dweight ? static_cast<size_t>(nparts) * C : 0, 0.0f);
  std::vector<float> pb(dbias ? static_cast<size_t>(nparts) * C : 0, 0.0f);
  parallel_for(T, 16, [&](int64_t t0, int64_t t1, int p) {
    layernorm_bwd_rows(dinp, dweight ? pw.data() + p * C : nullptr, dbias ? pb.data() + p * C : nullptr, dout, inp,
                       weight, mean, rstd, t0, t1, C);
  });
  if (dweight) reduce_parts(dweight, pw, nparts, C);
  if (dbias) reduce_parts(dbias, pb, nparts, C);
}

}  // namespace vq
