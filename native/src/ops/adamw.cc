#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/threadpool.h"
#include "ops/ops.h"

namespace vq {

double sum_squares(const float* x, int64_t n) {
  // Fixed chunks summed in order: the same result for any thread count.
  constexpr int64_t kChunk = 1 << 16;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(nchunks, 0.0);
  ThreadPool::get().parallel_tasks(nchunks, [&](int64_t c, int) {
    double s = 0.0;
    const int64_t e = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < e; i++) s += static_cast<double>(x[i]) * x[i];
    part[c] = s;
  });
  double s = 0.0;
  for (double p : part) s += p;
  return s;
}

bool all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!std::isfinite(x[i])) return false;
  return true;
}

void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale) {
  // params, grads, m, v (n)
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
  parallel_for(n, 8192, [&](int64_t a, int64_t b, int) {
    for (int64_t i = a; i < b; i++) {
      const float g = grads[i] * grad_scale;
      m[i] = beta1 * m[i] + (1.0f - beta1) * g;
      v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      params[i] = params[i] * decay - step_size * m[i] / denom;
    }
  });
}

}  // namespace vq
