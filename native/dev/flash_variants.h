// Fused attention kernels kept for comparison with the engine's choice (flash.h, "The kernels"): test_ops checks
// each variant against the CPU reference and times it (--bench); the engine never takes them. bf16 only, head
// dims flash_supported().
#pragma once
#include <cstdint>

#include "cuda/cuda_common.h"
#include "ops/ops.h"

namespace vq {
namespace dev {

enum class FlashVariant {
  // the two-stage (pipelined) kernels at every head dim, forward and backward; single-warp blocks for small calls
  // (the engine: one stage for the forward at D 128, the split decode kernel for small calls)
  pipelined,
  // one stage everywhere, forward and backward (the backward's one-stage kernels live only here); single-warp
  // blocks for small calls
  simple,
};
const char* variant_name(FlashVariant v);

// As cu::attention_forward / attention_backward: spans in HOST memory (uploaded here), same outputs and
// accumulation.
void attention_forward(FlashVariant v, cu::bf16* out, float* lse, const cu::bf16* q, const cu::bf16* k,
                       const cu::bf16* vv, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH,
                       int64_t D);
void attention_backward(FlashVariant v, cu::bf16* dq, cu::bf16* dk, cu::bf16* dv, const cu::bf16* dout,
                        const cu::bf16* q, const cu::bf16* k, const cu::bf16* vv, const cu::bf16* out,
                        const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH,
                        int64_t D);

}  // namespace dev
}  // namespace vq
