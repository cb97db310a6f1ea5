// Linear layers on cuBLASLt with bias and LoRA, and the bf16 one-rounding linear + LoRA (cuda/ops.h).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "cuda/gemm.h"
#include "cuda/mma.cuh"
#include "cuda/ops_common.cuh"

namespace vq {
namespace cu {

namespace {

// column sums: dbias (OC) += sum_t dout (T, OC)
template <typename T>
__global__ void colsum_k(float* out, const T* x, int64_t Tn, int64_t C) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t rows_per = (Tn + gridDim.y - 1) / gridDim.y;
  const int64_t r0 = blockIdx.y * rows_per, r1 = min(Tn, r0 + rows_per);
  if (c >= C) return;
  float s = 0.0f;
  for (int64_t t = r0; t < r1; t++) s += ld(x + t * C + c);
  atomicAdd(out + c, s);
}

}  // namespace

template <typename T>
void linear_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t Tn, int64_t IC, int64_t OC,
                    bool accumulate) {
  if (Tn == 0) return;
  // column-major: out^T (OC, T) = W (OC, IC) @ X^T (IC, T); W row-major is W^T column-major.
  GemmArgs g;
  g.ta = true; g.tb = false;
  g.m = OC; g.n = Tn; g.k = IC;
  g.A = weight; g.lda = IC;
  g.B = inp; g.ldb = IC;
  g.C = out; g.ldc = OC;
  g.beta = accumulate ? 1.0f : 0.0f;
  g.ab = g.c = dtype_of<T>();
  g.bias = bias;
  gemm(g, "linear_forward");
}

template <typename T>
void linear_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int64_t Tn,
                     int64_t IC, int64_t OC, bool accumulate_dinp) {
  if (Tn == 0) return;
  if (dinp) {  // dinp^T (IC, T) += W^T (IC, OC) @ dout^T (OC, T)
    GemmArgs g;
    g.m = IC; g.n = Tn; g.k = OC;
    g.A = weight; g.lda = IC;
    g.B = dout; g.ldb = OC;
    g.C = dinp; g.ldc = IC;
    g.beta = accumulate_dinp ? 1.0f : 0.0f;
    g.ab = g.c = dtype_of<T>();
    gemm(g, "linear_backward (dinp)");
  }
  if (dweight) {  // dW^T (IC, OC) += X^T (IC, T) @ dout (T, OC)
    GemmArgs g;
    g.tb = true;
    g.m = IC; g.n = OC; g.k = Tn;
    g.A = inp; g.lda = IC;
    g.B = dout; g.ldb = OC;
    g.C = dweight; g.ldc = IC;
    g.beta = 1.0f;
    g.ab = dtype_of<T>();
    g.c = DType::F32;
    gemm(g, "linear_backward (dweight)");
  }
  if (dbias) {
    const int threads = 256;
    const unsigned gx = static_cast<unsigned>((OC + threads - 1) / threads);
    const unsigned gy = static_cast<unsigned>(std::min<int64_t>(Tn, 64));
    colsum_k<<<dim3(gx, gy), threads, 0, stream()>>>(dbias, dout, Tn, OC);
    CU_LAUNCHED("linear_backward (dbias)");
  }
}

template <typename T>
void lora_forward(T* out, T* xa, const T* inp, const T* A, const T* B, int64_t Tn, int64_t IC, int64_t OC, int64_t R,
                  float scale) {
  if (Tn == 0) return;
  linear_forward(xa, inp, A, static_cast<const T*>(nullptr), Tn, IC, R);
  GemmArgs g;  // out^T (OC, T) += scale * B (OC, R) @ xa^T (R, T)
  g.ta = true;
  g.m = OC; g.n = Tn; g.k = R;
  g.A = B; g.lda = R;
  g.B = xa; g.ldb = R;
  g.C = out; g.ldc = OC;
  g.alpha = scale; g.beta = 1.0f;
  g.ab = g.c = dtype_of<T>();
  gemm(g, "lora_forward");
}

template <typename T>
void lora_backward(T* dinp, float* dA, float* dB, const T* dout, const T* inp, const T* xa, const T* A, const T* B,
                   int64_t Tn, int64_t IC, int64_t OC, int64_t R, float scale) {
  if (Tn == 0) return;
  thread_local DArray<char> dxa_buf("LoRA dxa");
  T* dxa = reinterpret_cast<T*>(dxa_buf.fit(Tn * R * static_cast<int64_t>(sizeof(T))));
  {  // dxa^T (R, T) = scale * B^T (R, OC) @ dout^T (OC, T)
    GemmArgs g;
    g.m = R; g.n = Tn; g.k = OC;
    g.A = B; g.lda = R;
    g.B = dout; g.ldb = OC;
    g.C = dxa; g.ldc = R;
    g.alpha = scale;
    g.ab = g.c = dtype_of<T>();
    gemm(g, "lora_backward (dxa)");
  }
  if (dB) {  // dB^T (R, OC) += scale * xa^T (R, T) @ dout (T, OC)
    GemmArgs g;
    g.tb = true;
    g.m = R; g.n = OC; g.k = Tn;
    g.A = xa; g.lda = R;
    g.B = dout; g.ldb = OC;
    g.C = dB; g.ldc = R;
    g.alpha = scale; g.beta = 1.0f;
    g.ab = dtype_of<T>(); g.c = DType::F32;
    gemm(g, "lora_backward (dB)");
  }
  if (dA) {  // dA^T (IC, R) += X^T (IC, T) @ dxa (T, R)
    GemmArgs g;
    g.tb = true;
    g.m = IC; g.n = R; g.k = Tn;
    g.A = inp; g.lda = IC;
    g.B = dxa; g.ldb = R;
    g.C = dA; g.ldc = IC;
    g.beta = 1.0f;
    g.ab = dtype_of<T>(); g.c = DType::F32;
    gemm(g, "lora_backward (dA)");
  }
  if (dinp) {  // dinp^T (IC, T) += A^T (IC, R) @ dxa^T (R, T)
    GemmArgs g;
    g.m = IC; g.n = Tn; g.k = R;
    g.A = A; g.lda = IC;
    g.B = dxa; g.ldb = R;
    g.C = dinp; g.ldc = IC;
    g.beta = 1.0f;
    g.ab = g.c = dtype_of<T>();
    gemm(g, "lora_backward (dinp)");
  }
}

namespace {
// hi + lo pairs: hi = bf16(v), lo = bf16(v - hi); hi + lo carries v to about 2^-16 of |v|.
__global__ void lora_split_k(bf16* Acat, bf16* Bcat, const float* A, const float* B, int64_t IC, int64_t OC, int64_t R) {
  const int64_t na = R * IC, nb = OC * R;
  GRID_STRIDE(i, na + nb) {
    if (i < na) {
      const float a = A[i];
      const bf16 h = __float2bfloat16(a);
      Acat[i] = h;
      Acat[na + i] = __float2bfloat16(a - __bfloat162float(h));
    } else {
      const int64_t j = i - na, o = j / R, r = j % R;
      const float b = B[j];
      const bf16 h = __float2bfloat16(b);
      bf16* row = Bcat + o * 3 * R;
      row[r] = h;
      row[R + r] = h;
      row[2 * R + r] = __float2bfloat16(b - __bfloat162float(h));
    }
  }
}
// xa2 (T, 2R): x A_hi^T | x A_lo^T  ->  v = their sum; xcat (T, 3R) = [v_hi | v_lo | v_hi], xa = v_hi
__global__ void lora_xcat_k(bf16* xcat, bf16* xa, const float* xa2, int64_t Tn, int64_t R) {
  GRID_STRIDE(i, Tn * R) {
    const int64_t t = i / R, r = i % R;
    const float v = xa2[t * 2 * R + r] + xa2[t * 2 * R + R + r];
    const bf16 h = __float2bfloat16(v);
    const bf16 l = __float2bfloat16(v - __bfloat162float(h));
    bf16* row = xcat + t * 3 * R;
    row[r] = h;
    row[R + r] = l;
    row[2 * R + r] = h;
    if (xa) xa[i] = h;
  }
}
// out (T, OC) = bf16(acc + scale * xcat (T, K) @ Bcat (OC, K)^T + bias): the adapter's product added to the base's
// fp32 sums and rounded once, in one pass over the outputs (the adapter GEMM into an fp32 C and a rounding pass
// after it moved 14 bytes an output, this 6). Tiles of 64 rows x 64 outputs, 4 warps of 16 rows, K through
// shared memory 32 at a time (rows padded to 40: the 8 rows of an ldmatrix fall in distinct bank groups).
constexpr int kLbBM = 64, kLbBN = 64, kLbBK = 32, kLbSD = kLbBK + 8;
__global__ void __launch_bounds__(128) lora_b_round_k(bf16* __restrict__ out, const float* __restrict__ acc,
                                                      const bf16* __restrict__ xcat, const bf16* __restrict__ Bcat,
                                                      const bf16* __restrict__ bias, int64_t Tn, int64_t OC,
                                                      int64_t K, float scale) {
  __shared__ __align__(16) bf16 sX[kLbBM * kLbSD];
  __shared__ __align__(16) bf16 sB[kLbBN * kLbSD];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kLbBM, o0 = static_cast<int64_t>(blockIdx.x) * kLbBN;
  // rows of whole 16-byte chunks (the pairs are 3R wide: a rank that is a multiple of 8, aligned buffers)
  const bool vec = K % 8 == 0 && (reinterpret_cast<uintptr_t>(xcat) | reinterpret_cast<uintptr_t>(Bcat)) % 16 == 0;
  float c[kLbBN / 8][4];
#pragma unroll
  for (int j = 0; j < kLbBN / 8; j++) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kLbBK) {
    if (vec) {  // 64 rows x 4 chunks of 8, for each operand: 2 chunks a thread
      for (int i = tid; i < kLbBM * (kLbBK / 8); i += 128) {
        const int r = i / (kLbBK / 8), kc = (i % (kLbBK / 8)) * 8;
        const int64_t k = k0 + kc, t = t0 + r, o = o0 + r;
        const uint4 zero4 = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(sX + r * kLbSD + kc) =
            t < Tn && k < K ? *reinterpret_cast<const uint4*>(xcat + t * K + k) : zero4;
        *reinterpret_cast<uint4*>(sB + r * kLbSD + kc) =
            o < OC && k < K ? *reinterpret_cast<const uint4*>(Bcat + o * K + k) : zero4;
      }
    } else {
      for (int i = tid; i < kLbBM * kLbBK; i += 128) {
        const int r = i / kLbBK, kk = i % kLbBK;
        const int64_t k = k0 + kk, t = t0 + r, o = o0 + r;
        sX[r * kLbSD + kk] = t < Tn && k < K ? xcat[t * K + k] : __float2bfloat16(0.0f);
        sB[r * kLbSD + kk] = o < OC && k < K ? Bcat[o * K + k] : __float2bfloat16(0.0f);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kLbBK; kk += 16) {
      uint32_t a[4];
      ldsm4(a, sX + (warp * 16 + (lane & 15)) * kLbSD + kk + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < kLbBN / 16; np++) {
        uint32_t b[4];
        ldsm4(b, sB + (np * 16 + (lane & 7) + (lane >> 4) * 8) * kLbSD + kk + ((lane >> 3) & 1) * 8);
        mma(c[2 * np], a, b[0], b[1]);
        mma(c[2 * np + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();
  }
  // each thread holds outputs (col, col + 1) of its rows: one float2 load and one bf16 pair store when both
  // exist and OC is even (8- and 4-byte aligned), else one at a time
  const bool pairs = OC % 2 == 0;
#pragma unroll
  for (int j = 0; j < kLbBN / 8; j++) {
    const int64_t col = o0 + j * 8 + 2 * t4;
    float b0 = 0.0f, b1 = 0.0f;
    if (bias && col < OC) b0 = __bfloat162float(bias[col]);
    if (bias && col + 1 < OC) b1 = __bfloat162float(bias[col + 1]);
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int64_t row = t0 + warp * 16 + g + h * 8;
      if (row >= Tn || col >= OC) continue;
      const float s0 = scale * c[j][2 * h], s1 = scale * c[j][2 * h + 1];
      if (pairs && col + 1 < OC) {
        const float2 a = *reinterpret_cast<const float2*>(acc + row * OC + col);
        *reinterpret_cast<__nv_bfloat162*>(out + row * OC + col) = __floats2bfloat162_rn(a.x + s0 + b0, a.y + s1 + b1);
      } else {
        out[row * OC + col] = __float2bfloat16(acc[row * OC + col] + s0 + b0);
        if (col + 1 < OC) out[row * OC + col + 1] = __float2bfloat16(acc[row * OC + col + 1] + s1 + b1);
      }
    }
  }
}
// The fused epilogue above unless VQALAB_CUDA_LORA_FUSED=0 (the adapter GEMM and a rounding pass: a dev A/B)
bool lora_fused_epilogue() {
  static const bool on = [] {
    const char* v = std::getenv("VQALAB_CUDA_LORA_FUSED");
    return !(v && v[0] == '0');
  }();
  return on;
}

// out = bf16(acc + bias): the one rounding
__global__ void bias_round_k(bf16* out, const float* acc, const bf16* bias, int64_t Tn, int64_t OC) {
  GRID_STRIDE(i, Tn * OC) {
    float v = acc[i];
    if (bias) v += __bfloat162float(bias[i % OC]);
    out[i] = __float2bfloat16(v);
  }
}
}  // namespace

void lora_split(bf16* Acat, bf16* Bcat, const float* A, const float* B, int64_t IC, int64_t OC, int64_t R) {
  const int64_t n = R * (IC + OC);
  if (n == 0) return;
  lora_split_k<<<blocks_for(n), 256, 0, stream()>>>(Acat, Bcat, A, B, IC, OC, R);
  CU_LAUNCHED("lora_split");
}

void linear_lora_forward(bf16* out, bf16* xa, const bf16* inp, const bf16* W, const bf16* bias, const bf16* Acat,
                         const bf16* Bcat, int64_t Tn, int64_t IC, int64_t OC, int64_t R, float scale, float* acc,
                         float* xa2, bf16* xcat) {
  if (Tn == 0) return;
  {  // acc^T (OC, T) = W (OC, IC) @ X^T (IC, T), fp32 out
    GemmArgs g;
    g.ta = true;
    g.m = OC; g.n = Tn; g.k = IC;
    g.A = W; g.lda = IC;
    g.B = inp; g.ldb = IC;
    g.C = acc; g.ldc = OC;
    g.ab = DType::BF16; g.c = DType::F32;
    gemm(g, "linear_lora_forward (base)");
  }
  {  // xa2^T (2R, T) = [A_hi; A_lo] (2R, IC) @ X^T, fp32 out
    GemmArgs g;
    g.ta = true;
    g.m = 2 * R; g.n = Tn; g.k = IC;
    g.A = Acat; g.lda = IC;
    g.B = inp; g.ldb = IC;
    g.C = xa2; g.ldc = 2 * R;
    g.ab = DType::BF16; g.c = DType::F32;
    gemm(g, "linear_lora_forward (x A^T)");
  }
  lora_xcat_k<<<blocks_for(Tn * R), 256, 0, stream()>>>(xcat, xa, xa2, Tn, R);
  CU_LAUNCHED("linear_lora_forward (x A^T pairs)");
  if (lora_fused_epilogue()) {
    const dim3 grid(static_cast<unsigned>((OC + kLbBN - 1) / kLbBN), static_cast<unsigned>((Tn + kLbBM - 1) / kLbBM));
    lora_b_round_k<<<grid, 128, 0, stream()>>>(out, acc, xcat, Bcat, bias, Tn, OC, 3 * R, scale);
    CU_LAUNCHED("linear_lora_forward (B + round)");
    return;
  }
  {  // acc^T (OC, T) += scale * [B_hi | B_hi | B_lo] (OC, 3R) @ [v_hi | v_lo | v_hi]^T (3R, T)
    GemmArgs g;
    g.ta = true;
    g.m = OC; g.n = Tn; g.k = 3 * R;
    g.A = Bcat; g.lda = 3 * R;
    g.B = xcat; g.ldb = 3 * R;
    g.C = acc; g.ldc = OC;
    g.alpha = scale; g.beta = 1.0f;
    g.ab = DType::BF16; g.c = DType::F32;
    gemm(g, "linear_lora_forward (B)");
  }
  bias_round_k<<<blocks_for(Tn * OC), 256, 0, stream()>>>(out, acc, bias, Tn, OC);
  CU_LAUNCHED("linear_lora_forward (round)");
}

#define VQ_INST(T) \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, bool); \
  template void linear_backward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int64_t, int64_t, \
  bool); \
  template void lora_forward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t, float); \
  template void lora_backward<T>(T*, float*, float*, const T*, const T*, const T*, const T*, const T*, int64_t, \
  int64_t, int64_t, int64_t, float);
VQ_INST(float)
VQ_INST(bf16)

}  // namespace cu
}  // namespace vq
