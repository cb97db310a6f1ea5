// Flash-style attention over spans on the tensor cores (see flash.h). The kernels: flash_forward.cu,
// flash_backward.cu (their common step and the fragment layout: flash_common.cuh). Here: which path runs
// (environment and test overrides) and the FLOP count.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/flash.h"

namespace vq {
namespace cu {

bool flash_supported(int64_t D) { return D == 16 || D == 64 || D == 80 || D == 128; }

namespace flash_detail {
int g_flash_override = -1, g_pipe_override = -1;
bool pipelined() {
  static const bool on = [] {
    const char* e = std::getenv("VQALAB_CUDA_FLASH");
    return !(e && std::strcmp(e, "simple") == 0);
  }();
  return g_pipe_override >= 0 ? g_pipe_override == 1 : on;
}
bool pipeline_forced() { return g_pipe_override == 1; }
// Small calls (decode steps) take dec_k unless a test or benchmark chose the kernels (override) or
// VQALAB_CUDA_DECODE=0.
bool split_decode() {
  static const bool on = [] {
    const char* e = std::getenv("VQALAB_CUDA_DECODE");
    return !(e && e[0] == '0');
  }();
  return on && g_pipe_override < 0;
}
}  // namespace flash_detail
void flash_override(int mode) { flash_detail::g_flash_override = mode; }
void flash_pipeline_override(int mode) { flash_detail::g_pipe_override = mode; }
bool flash_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("VQALAB_CUDA_ATTN");
    return !(e && std::strcmp(e, "gemm") == 0);
  }();
  return flash_detail::g_flash_override >= 0 ? flash_detail::g_flash_override == 1 : on;
}

double attention_flops(const Span* sp, int64_t Tq, int64_t NH, int64_t D) {
  double keys = 0.0;
  for (int64_t i = 0; i < Tq; i++)
    keys += static_cast<double>(std::max(0, sp[i].a1 - sp[i].a0)) + static_cast<double>(std::max(0, sp[i].b1 - sp[i].b0));
  return 4.0 * static_cast<double>(NH) * static_cast<double>(D) * keys;
}

}  // namespace cu
}  // namespace vq
