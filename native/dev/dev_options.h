// The CudaOptions of the C++ test and benchmark programs (native/dev): cuda_options.h's defaults, overridden by
// the VQALAB_CUDA_* variables that src/engine/cuda-options.ts takes as its fallback, with the same names and
// values (docs/cuda.md, "Options"): VQALAB_CUDA_OFFLOAD, _BF16_MOMENTS, _CHECKPOINT, _GRAPH, _LORA_PAIRS, _LORA_MERGED, _SYNC,
// _PROFILE (0 or 1), _PACK_ROWS (a positive integer), _ATTN (fused or gemm). The engine itself (native/src)
// reads none of them. A malformed value stops the program with a message naming the variable.
// Not a CudaOptions field and not in TypeScript: VQALAB_CUDA_FLASH_FWD (tile, wide or wide64; unset: tile), the
// forward tile kernel of the fused attention for the whole process (cu::set_flash_forward, flash.h), for an A/B
// of fwd_w (cuda/flash_forward_wide.cuh) in test_ops, test_model and bench_grpo.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/cuda_options.h"
#include "cuda/flash.h"

namespace vq {
namespace dev {

[[noreturn]] inline void bad_env(const char* name, const char* value, const char* expected) {
  std::fprintf(stderr, "environment variable %s: expected %s, got \"%s\"\n", name, expected, value);
  std::exit(2);
}

inline void env_bool(const char* name, bool& field) {
  const char* e = std::getenv(name);
  if (!e || !*e) return;
  if (std::strcmp(e, "1") == 0) field = true;
  else if (std::strcmp(e, "0") == 0) field = false;
  else bad_env(name, e, "0 or 1");
}

inline CudaOptions cuda_options_from_env() {
  for (const char* retired : {"VQALAB_CUDA_FLASH", "VQALAB_CUDA_DECODE"}) {
    const char* e = std::getenv(retired);
    if (e && *e) bad_env(retired, e, "it unset (no longer read: the attention variants are in native/dev/flash_variants.cu)");
  }
  CudaOptions o;
  env_bool("VQALAB_CUDA_OFFLOAD", o.offload_optimizer);
  env_bool("VQALAB_CUDA_BF16_MOMENTS", o.bf16_moments);
  env_bool("VQALAB_CUDA_CHECKPOINT", o.checkpoint);
  env_bool("VQALAB_CUDA_GRAPH", o.graphs);
  env_bool("VQALAB_CUDA_LORA_PAIRS", o.lora_single_rounding);
  env_bool("VQALAB_CUDA_LORA_MERGED", o.lora_merged_sampling);
  env_bool("VQALAB_CUDA_SYNC", o.sync_every_op);
  env_bool("VQALAB_CUDA_PROFILE", o.profile);
  if (const char* e = std::getenv("VQALAB_CUDA_PACK_ROWS"); e && *e) {
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    if (*end != '\0' || v < 1) bad_env("VQALAB_CUDA_PACK_ROWS", e, "a positive integer");
    o.pack_rows = v;
  }
  if (const char* e = std::getenv("VQALAB_CUDA_ATTN"); e && *e) {
    if (std::strcmp(e, "fused") == 0) o.attention = CudaAttention::fused;
    else if (std::strcmp(e, "gemm") == 0) o.attention = CudaAttention::gemm;
    else bad_env("VQALAB_CUDA_ATTN", e, "fused or gemm");
  }
  return o;
}

inline cu::FlashForward flash_forward_from_env() {
  const char* e = std::getenv("VQALAB_CUDA_FLASH_FWD");
  if (!e || !*e || std::strcmp(e, "tile") == 0) return cu::FlashForward::tile;
  if (std::strcmp(e, "wide") == 0) return cu::FlashForward::wide;
  if (std::strcmp(e, "wide64") == 0) return cu::FlashForward::wide64;
  bad_env("VQALAB_CUDA_FLASH_FWD", e, "tile, wide or wide64");
}

}  // namespace dev
}  // namespace vq
