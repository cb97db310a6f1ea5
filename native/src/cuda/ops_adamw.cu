// AdamW (fp32 or bf16 moments), the gradient norm and the finite check (cuda/ops.h, "optimizer").
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

// ---- optimizer ----
__global__ void adamw_k(float* p, const float* g, float* m, float* v, int64_t n, float beta1, float beta2, float eps,
                        float decay, float step_size, float bc2_sqrt, float grad_scale, bf16* copy) {
  GRID_STRIDE(i, n) {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    const float pi = p[i] * decay - step_size * mi / denom;
    p[i] = pi;
    if (copy) copy[i] = __float2bfloat16(pi);
  }
}
__global__ void adamw_bf16m_k(float* p, const float* g, bf16* m, bf16* v, int64_t n, float beta1, float beta2, float eps,
                              float decay, float step_size, float bc2_sqrt, float grad_scale, bf16* copy) {
  GRID_STRIDE(i, n) {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * __bfloat162float(m[i]) + (1.0f - beta1) * gi;
    const float vi = beta2 * __bfloat162float(v[i]) + (1.0f - beta2) * gi * gi;
    m[i] = __float2bfloat16(mi);
    v[i] = __float2bfloat16(vi);
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    const float pi = p[i] * decay - step_size * mi / denom;
    p[i] = pi;
    if (copy) copy[i] = __float2bfloat16(pi);
  }
}
// Each block's partial sum to its own slot, then one block adds the slots in order: the same bits on
// every run and every rank of a data-parallel run (an atomicAdd of the partials would add them in
// whatever order the blocks finish, and the ranks' gradient-clipping scales would differ in the last bit).
__global__ void sumsq_k(double* partial, const float* x, int64_t n) {
  double s = 0.0;
  GRID_STRIDE(i, n) s += static_cast<double>(x[i]) * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void sum_partials_k(double* out, const double* partial, int n) {
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}
__global__ void finite_k(int* bad, const float* x, int64_t n) {
  GRID_STRIDE(i, n) if (!isfinite(x[i])) { *bad = 1; return; }
}

}  // namespace

double sum_squares(const float* x, int64_t n) {
  thread_local DArray<double> acc("sum_squares");
  double* d = acc.fit(1 + 1024);  // the sum, then one partial per block
  CU_CHECK(cudaMemsetAsync(d, 0, sizeof(double), stream()), "sum_squares");
  if (n > 0) {
    const unsigned blocks = std::min<unsigned>(blocks_for(n), 1024);
    sumsq_k<<<blocks, 256, 0, stream()>>>(d + 1, x, n);
    CU_LAUNCHED("sum_squares");
    sum_partials_k<<<1, 256, 0, stream()>>>(d, d + 1, static_cast<int>(blocks));
    CU_LAUNCHED("sum_squares");
  }
  double h = 0.0;
  CU_CHECK(cudaMemcpyAsync(&h, d, sizeof(double), cudaMemcpyDeviceToHost, stream()), "sum_squares");
  CU_CHECK(cudaStreamSynchronize(stream()), "sum_squares");
  return h;
}
bool all_finite(const float* x, int64_t n) {
  thread_local DArray<int> flag("all_finite");
  int* d = flag.fit(1);
  CU_CHECK(cudaMemsetAsync(d, 0, sizeof(int), stream()), "all_finite");
  if (n > 0) {
    finite_k<<<std::min<unsigned>(blocks_for(n), 1024), 256, 0, stream()>>>(d, x, n);
    CU_LAUNCHED("all_finite");
  }
  int h = 0;
  CU_CHECK(cudaMemcpyAsync(&h, d, sizeof(int), cudaMemcpyDeviceToHost, stream()), "all_finite");
  CU_CHECK(cudaStreamSynchronize(stream()), "all_finite");
  return h == 0;
}
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, bf16* copy) {
  if (!n) return;
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  adamw_k<<<blocks_for(n), 256, 0, stream()>>>(params, grads, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay,
                                               static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
                                               grad_scale, copy);
  CU_LAUNCHED("adamw_update");
}
void adamw_update_bf16m(float* params, const float* grads, bf16* m, bf16* v, int64_t n, float lr, float beta1,
                        float beta2, float eps, float weight_decay, int64_t step, float grad_scale, bf16* copy) {
  if (!n) return;
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  adamw_bf16m_k<<<blocks_for(n), 256, 0, stream()>>>(params, grads, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay,
                                                     static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
                                                     grad_scale, copy);
  CU_LAUNCHED("adamw_update");
}


}  // namespace cu
}  // namespace vq
