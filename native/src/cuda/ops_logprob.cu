// Log-probabilities and entropy of the targets, and their backward (cuda/ops.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

// ---- log-probs ----
template <typename T>
__global__ void logprob_fwd_k(float* logp, float* entropy, float* lse, const T* logits, const int32_t* targets, int64_t V) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * V;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, ld(x + j));
  mx = block_max(mx);
  double s = 0.0, sx = 0.0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const float d = ld(x + j) - mx;
    const float e = expf(d);
    s += e;
    sx += static_cast<double>(e) * d;
  }
  s = block_sum(s);
  sx = block_sum(sx);
  if (threadIdx.x == 0) {
    const double l = mx + log(s);
    lse[r] = static_cast<float>(l);
    logp[r] = static_cast<float>(static_cast<double>(ld(x + targets[r])) - l);
    entropy[r] = static_cast<float>(log(s) - sx / s);
  }
}
template <typename T>
__global__ void logprob_bwd_k(T* dlogits, const float* dlogp, const T* logits, const float* lse, const int32_t* targets,
                              int64_t V) {
  const int64_t r = blockIdx.y;
  const float g = dlogp[r], l = lse[r];
  const int32_t tgt = targets[r];
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < V; j += (int64_t)gridDim.x * blockDim.x) {
    float d = -g * expf(ld(logits + r * V + j) - l);
    if (j == tgt) d += g;
    st(dlogits + r * V + j, d);
  }
}

}  // namespace

template <typename T>
void logprob_forward(float* logp, float* entropy, float* lse, const T* logits, const int32_t* targets, int64_t R,
                     int64_t V) {
  if (!R) return;
  logprob_fwd_k<<<R, 512, 0, stream()>>>(logp, entropy, lse, logits, targets, V);
  CU_LAUNCHED("logprob_forward");
}
template <typename T>
void logprob_backward(T* dlogits, const float* dlogp, const T* logits, const float* lse, const int32_t* targets,
                      int64_t R, int64_t V) {
  if (!R) return;
  const unsigned gx = static_cast<unsigned>(std::min<int64_t>((V + 255) / 256, 64));
  logprob_bwd_k<<<dim3(gx, static_cast<unsigned>(R)), 256, 0, stream()>>>(dlogits, dlogp, logits, lse, targets, V);
  CU_LAUNCHED("logprob_backward");
}

#define VQ_INST(T) \
  template void logprob_forward<T>(float*, float*, float*, const T*, const int32_t*, int64_t, int64_t); \
  template void logprob_backward<T>(T*, const float*, const T*, const float*, const int32_t*, int64_t, int64_t);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
