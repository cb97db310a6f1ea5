// The one door to cuBLASLt (gemm.cu is the only file that includes its header).
//
// Column-major, as cuBLAS: D (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * C, with C = D (or C read
// from Cin), optional bias (m) added per column (batch 1 only), batch > 1 with strides in elements (a stride of
// 0 broadcasts a matrix). A and B share a type (fp32 or bf16); D is that type or fp32; fp32 compute
// (no TF32). The descriptors and the algorithm are made once per shape, types, strides and pointer alignment
// and cached: a call then costs the host one map lookup and the launch (LoRA's many small GEMMs are
// otherwise issued slower than the device runs them).
#pragma once
#include <cstdint>

#include "cuda/cuda_common.h"

namespace vq {
namespace cu {

struct GemmArgs {
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f, beta = 0.0f;
  const void* A = nullptr; int64_t lda = 0, sA = 0;
  const void* B = nullptr; int64_t ldb = 0, sB = 0;
  void* C = nullptr; int64_t ldc = 0, sC = 0;
  const void* Cin = nullptr;  // beta's C read from here instead of C (same type and layout); D is still C
  DType ab = DType::F32, c = DType::F32;
  int batch = 1;
  const void* bias = nullptr;  // type c, length m
};

void gemm(const GemmArgs& g, const char* op);

// FLOPs (2 m n k batch) issued through gemm() on this thread since the last reset.
double gemm_flops(bool reset);
// Adds FLOPs done outside cuBLASLt (the fused attention kernels) to the same counter.
void add_flops(double f);

}  // namespace cu
}  // namespace vq
