// Flash-style attention over spans on the tensor cores (see flash.h). The kernels: flash_forward_kernels.cuh and
// flash_forward.cu, flash_backward_steps.cuh and flash_backward.cu (their common step and the fragment layout:
// flash_common.cuh). Here: the head dims they take and the FLOP count.
#include <algorithm>

#include "cuda/flash.h"

namespace vq {
namespace cu {

bool flash_supported(int64_t D) { return D == 16 || D == 64 || D == 80 || D == 128; }

double attention_flops(const Span* sp, int64_t Tq, int64_t NH, int64_t D) {
  double keys = 0.0;
  for (int64_t i = 0; i < Tq; i++)
    keys += static_cast<double>(std::max(0, sp[i].a1 - sp[i].a0)) + static_cast<double>(std::max(0, sp[i].b1 - sp[i].b0));
  return 4.0 * static_cast<double>(NH) * static_cast<double>(D) * keys;
}

}  // namespace cu
}  // namespace vq
