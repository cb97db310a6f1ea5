// Embedding lookups and row moves: gather, scatter, scatter-add, conversions, fills, qkv split/join (cuda/ops.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

// ---- embedding ----
template <typename T, typename X>
__global__ void embedding_fwd_k(X* out, const int32_t* ids, const T* wte, int64_t Tn, int64_t C) {
  const int64_t t = blockIdx.x;
  const T* src = wte + static_cast<int64_t>(ids[t]) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(out + t * C + c, ld(src + c));
}
template <typename T>
__global__ void embedding_bwd_k(float* dwte, const T* dout, const int32_t* ids, int64_t Tn, int64_t C) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  if (id < 0) return;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dwte + static_cast<int64_t>(id) * C + c, ld(dout + t * C + c));
}

// ---- helpers ----
__global__ void to_bf16_k(bf16* out, const float* in, int64_t n) { GRID_STRIDE(i, n) out[i] = __float2bfloat16(in[i]); }
template <typename T>
__global__ void fill_k(T* out, float v, int64_t n) { GRID_STRIDE(i, n) st(out + i, v); }
template <typename O, typename I>
__global__ void gather_k(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  GRID_STRIDE(i, n * C) st(out + i, ld(in + rows[i / C] * C + i % C));
}
template <typename O, typename I>
__global__ void scatter_k(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  GRID_STRIDE(i, n * C) st(out + rows[i / C] * C + i % C, ld(in + i));
}
template <typename O, typename I>
__global__ void convert_k(O* out, const I* in, int64_t n) {
  GRID_STRIDE(i, n) st(out + i, ld(in + i));
}
// One thread per column walks the rows in order: repeated destination rows add up without races.
template <typename T>
__global__ void scatter_add_k(T* out, const T* in, const int64_t* rows, int64_t n, int64_t C) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t i = 0; i < n; i++) {
    T* o = out + rows[i] * C + c;
    st(o, ld(o) + ld(in + i * C + c));
  }
}
template <typename T>
__global__ void split_qkv_k(T* q, T* k, T* v, const T* qkv, int64_t N, int64_t E) {
  GRID_STRIDE(i, N * 3 * E) {
    const int64_t r = i / (3 * E), c = i % (3 * E);
    T* dst = c < E ? q : (c < 2 * E ? k : v);
    dst[r * E + c % E] = qkv[i];
  }
}
template <typename T>
__global__ void join_qkv_k(T* qkv, const T* q, const T* k, const T* v, int64_t N, int64_t E) {
  GRID_STRIDE(i, N * 3 * E) {
    const int64_t r = i / (3 * E), c = i % (3 * E);
    const T* src = c < E ? q : (c < 2 * E ? k : v);
    qkv[i] = src[r * E + c % E];
  }
}

}  // namespace

template <typename T, typename X>
void embedding_forward(X* out, const int32_t* ids, const T* wte, int64_t Tn, int64_t C) {
  if (Tn == 0) return;
  embedding_fwd_k<<<Tn, 256, 0, stream()>>>(out, ids, wte, Tn, C);
  CU_LAUNCHED("embedding_forward");
}
template <typename T>
void embedding_backward(float* dwte, const T* dout, const int32_t* ids, int64_t Tn, int64_t C) {
  if (Tn == 0 || !dwte) return;
  embedding_bwd_k<<<Tn, 256, 0, stream()>>>(dwte, dout, ids, Tn, C);
  CU_LAUNCHED("embedding_backward");
}
void to_bf16(bf16* out, const float* in, int64_t n) {
  if (!n) return;
  to_bf16_k<<<blocks_for(n), 256, 0, stream()>>>(out, in, n);
  CU_LAUNCHED("to_bf16");
}
template <typename T> void fill(T* out, float value, int64_t n) {
  if (!n) return;
  fill_k<<<blocks_for(n), 256, 0, stream()>>>(out, value, n);
  CU_LAUNCHED("fill");
}
template <typename O, typename I> void gather_rows(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  if (!n) return;
  gather_k<<<blocks_for(n * C), 256, 0, stream()>>>(out, in, rows, n, C);
  CU_LAUNCHED("gather_rows");
}
template <typename O, typename I> void scatter_rows(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C) {
  if (!n) return;
  scatter_k<<<blocks_for(n * C), 256, 0, stream()>>>(out, in, rows, n, C);
  CU_LAUNCHED("scatter_rows");
}
template <typename O, typename I> void convert(O* out, const I* in, int64_t n) {
  if (!n) return;
  convert_k<<<blocks_for(n), 256, 0, stream()>>>(out, in, n);
  CU_LAUNCHED("convert");
}
template <typename T> void scatter_add_rows(T* out, const T* in, const int64_t* rows, int64_t n, int64_t C) {
  if (!n) return;
  scatter_add_k<<<static_cast<unsigned>((C + 255) / 256), 256, 0, stream()>>>(out, in, rows, n, C);
  CU_LAUNCHED("scatter_add_rows");
}
template <typename T> void split_qkv(T* q, T* k, T* v, const T* qkv, int64_t N, int64_t E) {
  if (!N) return;
  split_qkv_k<<<blocks_for(N * 3 * E), 256, 0, stream()>>>(q, k, v, qkv, N, E);
  CU_LAUNCHED("split_qkv");
}
template <typename T> void join_qkv(T* qkv, const T* q, const T* k, const T* v, int64_t N, int64_t E) {
  if (!N) return;
  join_qkv_k<<<blocks_for(N * 3 * E), 256, 0, stream()>>>(qkv, q, k, v, N, E);
  CU_LAUNCHED("join_qkv");
}

#define VQ_INST(T) \
  template void embedding_backward<T>(float*, const T*, const int32_t*, int64_t, int64_t); \
  template void fill<T>(T*, float, int64_t); \
  template void scatter_add_rows<T>(T*, const T*, const int64_t*, int64_t, int64_t); \
  template void split_qkv<T>(T*, T*, T*, const T*, int64_t, int64_t); \
  template void join_qkv<T>(T*, const T*, const T*, const T*, int64_t, int64_t);
VQ_INST(float)
VQ_INST(bf16)
#define VQ_INST2(T, X) \
  template void embedding_forward<T, X>(X*, const int32_t*, const T*, int64_t, int64_t); \
  template void gather_rows<T, X>(T*, const X*, const int64_t*, int64_t, int64_t); \
  template void scatter_rows<X, T>(X*, const T*, const int64_t*, int64_t, int64_t); \
  template void convert<X, T>(X*, const T*, int64_t);
VQ_INST2(float, float)
VQ_INST2(bf16, bf16)
VQ_INST2(bf16, float)
template void gather_rows<float, bf16>(float*, const bf16*, const int64_t*, int64_t, int64_t);
template void scatter_rows<bf16, float>(bf16*, const float*, const int64_t*, int64_t, int64_t);
template void convert<bf16, float>(bf16*, const float*, int64_t);

}  // namespace cu
}  // namespace vq
