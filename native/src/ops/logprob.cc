#include <cmath>
#include <limits>

#include "cpu/threadpool.h"
#include "ops/ops.h"
#include "ops/simd.h"

namespace vq {

VQ_HOT static void logprob_rows(float* logp, float* entropy, float* lse, const float* logits, const int32_t* targets,
                                int64_t r0, int64_t r1, int64_t V) {
  for (int64_t r = r0; r < r1; r++) {
    const float* x = logits + r * V;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    // sum e^(x-mx) and sum e^(x-mx) (x-mx), in double: V is large (150k) and the entropy subtracts
    double s = 0.0, sx = 0.0;
    for (int64_t j = 0; j < V; j++) {
      const double d = static_cast<double>(x[j]) - mx;
      const double e = std::exp(d);
      s += e;
      sx += e * d;
    }
    const double l = mx + std::log(s);
    lse[r] = static_cast<float>(l);
    logp[r] = static_cast<float>(static_cast<double>(x[targets[r]]) - l);
    // H = -sum p log p = log s - sx / s  (log p_j = d_j - log s)
    entropy[r] = static_cast<float>(std::log(s) - sx / s);
  }
}

void logprob_forward(float* logp, float* entropy, float* lse, const float* logits, const int32_t* targets, int64_t R,
                     int64_t V) {
  // logp, entropy, lse (R); logits (R, V); targets (R)
  parallel_for(R, 1, [&](int64_t r0, int64_t r1, int) { logprob_rows(logp, entropy, lse, logits, targets, r0, r1, V); });
}

VQ_HOT static void logprob_bwd_rows(float* dlogits, const float* dlogp, const float* logits, const float* lse,
                                    const int32_t* targets, int64_t r0, int64_t r1, int64_t V) {
  for (int64_t r = r0; r < r1; r++) {
    const float* x = logits + r * V;
    float* d = dlogits + r * V;
    const float g = dlogp[r], l = lse[r];
#pragma omp simd
    for (int64_t j = 0; j < V; j++) d[j] = -g * std::exp(x[j] - l);
    d[targets[r]] += g;
  }
}

void logprob_backward(float* dlogits, const float* dlogp, const float* logits, const float* lse,
                      const int32_t* targets, int64_t R, int64_t V) {
  // dlogits (R, V) =; dlogp, lse (R); logits (R, V); targets (R)
  parallel_for(R, 1, [&](int64_t r0, int64_t r1, int) {
    logprob_bwd_rows(dlogits, dlogp, logits, lse, targets, r0, r1, V);
  });
}

}  // namespace vq
