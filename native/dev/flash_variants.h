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
  // (the engine: one stage for the forward at D 128, the GQA-packed decode kernel for small calls)
  pipelined,
  // one stage everywhere, forward and backward (the backward's one-stage kernels live only here); single-warp
  // blocks for small calls
  simple,
  // the forward fwd_w (cuda/flash_forward_wide.cuh: 32 query rows per warp) at every call size, with 4 warps
  // (128-row tiles) or 2 (64-row tiles); the engine's backward. (The engine takes fwd_w only for calls that fill the
  // card, and only when cu::set_flash_forward picks it.)
  wide,
  wide64,
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

// The decode kernels (small calls) on DEVICE spans, as the engine's decode steps call them: the GQA-packed kernel
// (cuda/flash_decode.cuh) at a given tile layout, or the per-query-head kernel it replaced (for the comparison).
enum class DecodeKernel { packed, per_head };
// rows_per_tile (packed only): 0 = the engine's choice (what cu::flash_forward takes for a small call), -1 = 16
// flattened (row, head) pairs, n > 0 = n rows (at most decode_max_tile_rows).
void decode_forward(DecodeKernel kern, int rows_per_tile, cu::bf16* out, float* lse, const cu::bf16* q,
                    const cu::bf16* k, const cu::bf16* vv, const Span* dspans, int64_t Tq, int64_t Tk, int64_t NH,
                    int64_t KVH, int64_t D);
// The rows per tile of that layout (-1: flattened pairs that are not whole rows).
int decode_tile_rows(int64_t Tq, int64_t NH, int64_t KVH, int rows_per_tile);
// The most rows a tile holds: 16 / (query heads per KV head, in chunks of at most 16).
int decode_max_tile_rows(int64_t NH, int64_t KVH);

}  // namespace dev
}  // namespace vq
