// The fused attention forward (flash.h): the dispatch by head dim and size of the call (the kernels over query
// tiles: flash_forward_kernels.cuh; the GQA-packed decode kernel for small calls: flash_decode.cuh).
#include "cuda/flash_decode.cuh"
#include "cuda/flash_forward_kernels.cuh"

namespace vq {
namespace cu {

namespace {

template <int D>
void forward_d(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int Tq, int Tk,
               int NH, int KVH, float sl2) {
  if (wide_call(Tq, NH)) {
    // measured on an H200 (test_ops --bench): the two stages pay at D 80 (vision, 92 -> 138 TFLOP/s) but
    // not at D 128 (LM, 41 -> 36: twice the shared memory, fewer blocks per SM)
    if constexpr (D == 128) launch_tiles<D, 4>(fwd_k<D, 4>, 1, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
    else launch_tiles<D, 4>(fwd_p<D, 4>, 2, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  } else {
    launch_decode<D>(dec_tiles(Tq, NH, KVH, 0), out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  }
  CU_LAUNCHED("attention_forward (flash)");
}

}  // namespace

void flash_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int64_t Tq,
                   int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const float sl2 = kLog2e / std::sqrt(static_cast<float>(D));
  VQ_FLASH_SWITCH(D, (forward_d<DD>(out, lse, q, k, v, spans, static_cast<int>(Tq), static_cast<int>(Tk),
                                    static_cast<int>(NH), static_cast<int>(KVH), sl2)));
}

}  // namespace cu
}  // namespace vq
