#include <vector>

#include "cpu/gemm.h"
#include "cpu/threadpool.h"
#include "ops/ops.h"

namespace vq {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t T, int64_t IC,
                    int64_t OC, bool accumulate) {
  // out (T, OC) [+]= inp (T, IC) @ weight (OC, IC)^T + bias (OC)
  sgemm(false, true, T, OC, IC, 1.0f, inp, IC, weight, IC, accumulate ? 1.0f : 0.0f, out, OC);
  if (bias) {
    parallel_for(T, 64, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; t++) {
        float* o = out + t * OC;
#pragma omp simd
        for (int64_t j = 0; j < OC; j++) o[j] += bias[j];
      }
    });
  }
}

void linear_forward_packed(float* out, const float* inp, const PackedB& weight, const float* bias, int64_t T, int64_t IC,
                           int64_t OC) {
  // out (T, OC) = inp (T, IC) @ weight^T + bias, weight packed (K = IC, N = OC)
  sgemm_packed(false, T, 1.0f, inp, IC, weight, 0.0f, out, OC);
  if (bias) {
    parallel_for(T, 64, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; t++) {
        float* o = out + t * OC;
#pragma omp simd
        for (int64_t j = 0; j < OC; j++) o[j] += bias[j];
      }
    });
  }
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t T, int64_t IC, int64_t OC) {
  // dinp (T, IC) += dout (T, OC) @ weight (OC, IC)
  if (dinp) sgemm(false, false, T, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC);
  // dweight (OC, IC) += dout^T @ inp (T, IC)
  if (dweight) sgemm(true, false, OC, IC, T, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
  // dbias (OC) += column sums of dout, split by columns
  if (dbias) {
    parallel_for(OC, 256, [&](int64_t j0, int64_t j1, int) {
      for (int64_t t = 0; t < T; t++) {
        const float* g = dout + t * OC;
        for (int64_t j = j0; j < j1; j++) dbias[j] += g[j];
      }
    });
  }
}

void lora_forward(float* out, float* xa, const float* inp, const float* A, const float* B, int64_t T, int64_t IC,
                  int64_t OC, int64_t R, float scale) {
  // xa (T, R) = inp (T, IC) @ A (R, IC)^T
  sgemm(false, true, T, R, IC, 1.0f, inp, IC, A, IC, 0.0f, xa, R);
  // out (T, OC) += scale * xa @ B (OC, R)^T
  sgemm(false, true, T, OC, R, scale, xa, R, B, R, 1.0f, out, OC);
}

void lora_backward(float* dinp, float* dA, float* dB, const float* dout, const float* inp, const float* xa,
                   const float* A, const float* B, int64_t T, int64_t IC, int64_t OC, int64_t R, float scale) {
  // dxa (T, R) = scale * dout (T, OC) @ B (OC, R)
  std::vector<float> dxa(static_cast<size_t>(T * R));
  sgemm(false, false, T, R, OC, scale, dout, OC, B, R, 0.0f, dxa.data(), R);
  // dB (OC, R) += scale * dout^T @ xa
  if (dB) sgemm(true, false, OC, R, T, scale, dout, OC, xa, R, 1.0f, dB, R);
  // dA (R, IC) += dxa^T @ inp
  if (dA) sgemm(true, false, R, IC, T, 1.0f, dxa.data(), R, inp, IC, 1.0f, dA, IC);
  // dinp (T, IC) += dxa @ A (R, IC)
  if (dinp) sgemm(false, false, T, IC, R, 1.0f, dxa.data(), R, A, IC, 1.0f, dinp, IC);
}

}  // namespace vq
