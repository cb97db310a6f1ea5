// The fused attention forward (flash.h): the dispatch by head dim and size of the call (the kernels over query
// tiles: flash_forward_kernels.cuh and, when set_flash_forward picks it, flash_forward_wide.cuh; the GQA-packed
// decode kernel for small calls: flash_decode.cuh).
#include <atomic>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda/flash_decode.cuh"
#include "cuda/flash_forward_kernels.cuh"
#include "cuda/flash_forward_wide.cuh"

namespace vq {
namespace cu {

namespace {

// The starting choice: VQALAB_CUDA_FLASH_FWD=wide|wide64 (a dev A/B through the addon too; anything else: tile).
FlashForward initial_flash_forward() {
  const char* v = std::getenv("VQALAB_CUDA_FLASH_FWD");
  if (v && std::string(v) == "wide") return FlashForward::wide;
  if (v && std::string(v) == "wide64") return FlashForward::wide64;
  if (v && *v && std::string(v) != "tile")  // a dev switch read at load: said once, not thrown
    std::fprintf(stderr, "vqalab: VQALAB_CUDA_FLASH_FWD=%s is not one of tile, wide, wide64; using tile\n", v);
  return FlashForward::tile;
}
std::atomic<FlashForward> g_flash_forward{initial_flash_forward()};

template <int D>
void forward_d(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int Tq, int Tk,
               int NH, int KVH, float sl2) {
  if (!wide_call(Tq, NH)) {
    launch_decode<D>(dec_tiles(Tq, NH, KVH, 0), out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
  } else {  // the same test for every kind, so an A/B of the kinds compares only the tile kernels
    switch (g_flash_forward.load(std::memory_order_relaxed)) {
      case FlashForward::wide: launch_wide<D, 4>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2); break;
      case FlashForward::wide64: launch_wide<D, 2>(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2); break;
      case FlashForward::tile:
        // measured on an H200 (test_ops --bench): the two stages pay at D 80 (vision, 92 -> 138 TFLOP/s) but
        // not at D 128 (LM, 41 -> 36: twice the shared memory, fewer blocks per SM)
        if constexpr (D == 128) launch_tiles<D, 4>(fwd_k<D, 4>, 1, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
        else launch_tiles<D, 4>(fwd_p<D, 4>, 2, out, lse, q, k, v, spans, Tq, Tk, NH, KVH, sl2);
        break;
    }
  }
  CU_LAUNCHED("attention_forward (flash)");
}

}  // namespace

void set_flash_forward(FlashForward kind) { g_flash_forward.store(kind, std::memory_order_relaxed); }
FlashForward flash_forward_kind() { return g_flash_forward.load(std::memory_order_relaxed); }
const char* flash_forward_name(FlashForward kind) {
  switch (kind) {
    case FlashForward::wide: return "wide";
    case FlashForward::wide64: return "wide64";
    case FlashForward::tile: break;
  }
  return "tile";
}

void flash_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Span* spans, int64_t Tq,
                   int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if (Tq == 0) return;
  const float sl2 = kLog2e / std::sqrt(static_cast<float>(D));
  VQ_FLASH_SWITCH(D, (forward_d<DD>(out, lse, q, k, v, spans, static_cast<int>(Tq), static_cast<int>(Tk),
                                    static_cast<int>(NH), static_cast<int>(KVH), sl2)));
}

}  // namespace cu
}  // namespace vq
