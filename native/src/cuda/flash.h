// Fused (flash-style) attention over spans on the tensor cores (mma.sync m16n8k16, bf16 in, fp32
// accumulation): scores, masked online softmax and P·V in one kernel, never writing the scores to
// memory. The backward is two kernels: dK/dV (one block per 64 keys and query head, walking the query
// tiles that read those keys) and dQ (one block per 64 query rows, walking their key blocks), plus the
// row sums D = rowsum(dO * O). Same contract as cu::attention_forward/backward (ops.h), except that
// the spans are DEVICE memory (so a decode step can be captured in a CUDA graph).
//
// Supported: bf16, head dim D in {16, 64, 80, 128} (the fixtures' 16, the vision tower's 80, the LM's 128).
// flash_supported() says whether a call can take this path; ops_attention.cu takes the cuBLASLt tile path
// otherwise (fp32, other D) or when the model's CudaOptions::attention is gemm.
//
// The kernels (one choice per call; the only switch is set_flash_forward below, a dev A/B of the forward's tile
// kernel that the engine's options never set): calls with enough 64-row query tiles to fill the card take the
// 4-warp tile kernels, pipelined (the next key block is copied while the current one is computed; full blocks
// skip the mask) except the forward at D 128, where one stage is faster; smaller calls (decode steps) take the
// decode kernel (flash_decode.cuh), whose tiles pack the (row, query head) pairs of one KV head so that each
// key/value block it loads serves every query head of that KV head. The alternatives measured against these
// (pipelined everywhere, one stage everywhere, single-warp blocks for small calls, the per-head decode kernel the
// packed one replaced) live in native/dev/flash_variants.cu with test_ops' comparison.
//
// A query tile's key range is the union of its rows' spans (at most two intervals); key blocks that
// none of the tile's rows reads are skipped, the rest are masked per element, so the work done is
// close to what the spans ask for (packed prompts + completions, vision frames, decode rows).
#pragma once
#include <cstdint>

#include "cuda/cuda_common.h"
#include "ops/ops.h"

namespace vq {
namespace cu {

bool flash_supported(int64_t D);

// out (Tq, NH, D), lse (Tq, NH) fp32 natural log; q (Tq, NH, D); k, v (Tk, KVH, D); spans (Tq) device.
void flash_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int64_t Tq,
                   int64_t Tk, int64_t NH, int64_t KVH, int64_t D);
// Which kernel flash_forward takes for calls with enough query tiles to fill the card (smaller calls always take
// the decode kernel): tile = fwd_k / fwd_p (16 query rows per warp, the default); wide = fwd_w with 4 warps of 32
// rows (128-row tiles); wide64 = fwd_w with 2 warps of 32 rows (64-row tiles: as many blocks as tile).
// (flash_forward_wide.cuh). Process-wide, for the A/B of native/dev (VQALAB_CUDA_FLASH_FWD, dev_options.h): the
// engine's options do not set it.
enum class FlashForward { tile, wide, wide64 };
void set_flash_forward(FlashForward kind);
FlashForward flash_forward_kind();
const char* flash_forward_name(FlashForward kind);

// dq (Tq, NH, D) +=, dk, dv (Tk, KVH, D) += (any may be null); spans device.
void flash_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                    const bf16* out, const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH,
                    int64_t KVH, int64_t D);

// The FLOPs attention over these spans needs (host spans): 4 * NH * D * sum of keys per row (forward;
// the backward is 2.5 times that). What the MFU figures count for attention.
double attention_flops(const Span* spans_host, int64_t Tq, int64_t NH, int64_t D);

}  // namespace cu
}  // namespace vq
