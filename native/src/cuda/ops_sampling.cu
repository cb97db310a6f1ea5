// One token per row of logits on the device: argmax or an inverse-CDF draw (cuda/ops.h, "sampling").
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

// ---- sampling ----
__host__ __device__ inline uint64_t splitmix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <typename T>
__device__ void sample_row(int32_t* tok, float* logprob, const T* logits, int64_t b, uint64_t g, int64_t V,
                           float temperature, uint64_t seed, uint64_t t);
template <typename T>
__global__ void sample_multi_k(int32_t* tok, float* logprob, const T* logits, const float* temps, const uint64_t* seeds,
                               const int64_t* gs, const int64_t* ts, int64_t V) {
  const int64_t b = blockIdx.x;
  sample_row(tok, logprob, logits, b, static_cast<uint64_t>(gs[b]), V, temps[b], seeds[b], static_cast<uint64_t>(ts[b]));
}
template <typename T>
__device__ void sample_row(int32_t* tok, float* logprob, const T* logits, int64_t b, uint64_t g_index, int64_t V,
                           float temperature, uint64_t seed, uint64_t t) {
  __shared__ double part[1024];
  __shared__ float smx[1024];
  __shared__ int sarg[1024];
  __shared__ int64_t chosen;
  const T* x = logits + b * V;
  const int nt = blockDim.x, tid = threadIdx.x;
  const int64_t per = (V + nt - 1) / nt, j0 = tid * per, j1 = min(V, j0 + per);
  // argmax, lowest index on ties
  float mx = -INFINITY;
  int arg = j0 < V ? static_cast<int>(j0) : 0;
  for (int64_t j = j0; j < j1; j++) {
    const float v = ld(x + j);
    if (v > mx) { mx = v; arg = static_cast<int>(j); }
  }
  smx[tid] = mx;
  sarg[tid] = arg;
  __syncthreads();
  for (int s = nt / 2; s > 0; s >>= 1) {
    if (tid < s) {
      const float o = smx[tid + s];
      const int oa = sarg[tid + s];
      if (o > smx[tid] || (o == smx[tid] && oa < sarg[tid])) { smx[tid] = o; sarg[tid] = oa; }
    }
    __syncthreads();
  }
  const float gmx = smx[0];
  const int garg = sarg[0];
  // log-sum-exp at temperature 1
  double s1 = 0.0;
  for (int64_t j = j0; j < j1; j++) s1 += exp(static_cast<double>(ld(x + j)) - gmx);
  s1 = block_sum(s1);
  const double lse = gmx + log(s1);
  int64_t pick = garg;
  if (temperature > 0.0f) {
    const double invT = 1.0 / temperature;
    double w = 0.0;
    for (int64_t j = j0; j < j1; j++) w += exp((static_cast<double>(ld(x + j)) - gmx) * invT);
    __syncthreads();
    part[tid] = w;
    __syncthreads();
    if (tid == 0) {
      double total = 0.0;
      for (int i = 0; i < nt; i++) total += part[i];
      const uint64_t h = splitmix(splitmix(splitmix(seed) ^ g_index) ^ (t * 0xD1B54A32D192ED03ull));
      const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0) * total;
      double cum = 0.0;
      int owner = nt - 1;
      for (int i = 0; i < nt; i++) {
        if (u < cum + part[i]) { owner = i; break; }
        cum += part[i];
      }
      // walk the owner's chunk serially (at most V / blockDim values)
      const int64_t a0 = owner * per, a1 = min(V, a0 + per);
      int64_t c = V - 1;
      for (int64_t j = a0; j < a1; j++) {
        cum += exp((static_cast<double>(ld(x + j)) - gmx) * invT);
        if (u < cum) { c = j; break; }
      }
      chosen = c;
    }
    __syncthreads();
    pick = chosen;
  }
  if (tid == 0) {
    tok[b] = static_cast<int32_t>(pick);
    logprob[b] = static_cast<float>(static_cast<double>(ld(x + pick)) - lse);
  }
}

}  // namespace

template <typename T>
void sample_rows_multi(int32_t* tok, float* logprob, const T* logits, const float* temps, const uint64_t* seeds,
                       const int64_t* gs, const int64_t* ts, int64_t B, int64_t V) {
  if (!B) return;
  sample_multi_k<<<static_cast<unsigned>(B), 1024, 0, stream()>>>(tok, logprob, logits, temps, seeds, gs, ts, V);
  CU_LAUNCHED("sample_rows");
}

#define VQ_INST(T) \
  template void sample_rows_multi<T>(int32_t*, float*, const T*, const float*, const uint64_t*, const int64_t*, \
  const int64_t*, int64_t, int64_t); \
  
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
