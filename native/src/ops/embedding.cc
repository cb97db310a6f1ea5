#include <cstring>

#include "cpu/threadpool.h"
#include "ops/ops.h"

namespace vq {

void embedding_forward(float* out, const int32_t* ids, const float* wte, int64_t T, int64_t C) {
  // out (T, C); ids (T); wte (V, C)
  parallel_for(T, 64, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; t++) std::memcpy(out + t * C, wte + static_cast<int64_t>(ids[t]) * C, C * sizeof(float));
  });
}

void embedding_backward(float* dwte, const float* dout, const int32_t* ids, int64_t T, int64_t C) {
  // dwte (V, C) += ; dout (T, C); ids (T). Split by columns so that repeated ids never race.
  parallel_for(C, 64, [&](int64_t c0, int64_t c1, int) {
    for (int64_t t = 0; t < T; t++) {
      if (ids[t] < 0) continue;
      float* row = dwte + static_cast<int64_t>(ids[t]) * C;
      const float* g = dout + t * C;
      for (int64_t c = c0; c < c1; c++) row[c] += g[c];
    }
  });
}

}  // namespace vq
