#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/threadpool.h"
#include "ops/ops.h"
#include "ops/simd.h"

namespace vq {

// One (query row, head): scores over the row's spans into `s`.
static inline void scores(float* s, const float* qv, const float* k, const Span& sp, int64_t KVH, int64_t kvh,
                          int64_t D, float scale) {
  int64_t n = 0;
  for (int64_t j = sp.a0; j < sp.a1; j++) s[n++] = scale * dot(qv, k + (j * KVH + kvh) * D, D);
  for (int64_t j = sp.b0; j < sp.b1; j++) s[n++] = scale * dot(qv, k + (j * KVH + kvh) * D, D);
}

// Forward of the (query row, head) pairs w0..w1.
VQ_HOT static void attention_rows(float* out, float* lse, const float* q, const float* k, const float* v,
                                  const Span* spans, int64_t w0, int64_t w1, int64_t NH, int64_t KVH, int64_t D,
                                  float scale, std::vector<float>& s) {
  const int64_t group = NH / KVH;
  for (int64_t w = w0; w < w1; w++) {
    const int64_t i = w / NH, h = w % NH, kvh = h / group;
    const Span& sp = spans[i];
    const int64_t len = (sp.a1 - sp.a0) + (sp.b1 - sp.b0);
    if (static_cast<int64_t>(s.size()) < len) s.resize(len);
    const float* qv = q + (i * NH + h) * D;
    float* o = out + (i * NH + h) * D;
    scores(s.data(), qv, k, sp, KVH, kvh, D, scale);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < len; j++) mx = std::max(mx, s[j]);
    float sum = 0.0f;
    for (int64_t j = 0; j < len; j++) {
      s[j] = std::exp(s[j] - mx);
      sum += s[j];
    }
    const float inv = 1.0f / sum;
    std::fill(o, o + D, 0.0f);
    int64_t n = 0;
    for (int64_t j = sp.a0; j < sp.a1; j++) axpy(o, s[n++] * inv, v + (j * KVH + kvh) * D, D);
    for (int64_t j = sp.b0; j < sp.b1; j++) axpy(o, s[n++] * inv, v + (j * KVH + kvh) * D, D);
    lse[i * NH + h] = mx + std::log(sum);
  }
}

// Backward of the (query row, head) pairs w0..w1; dk/dv into the part's buffers.
VQ_HOT static void attention_bwd_rows(float* dq, float* dkp, float* dvp, const float* dout, const float* q,
                                      const float* k, const float* v, const float* out, const float* lse,
                                      const Span* spans, int64_t w0, int64_t w1, int64_t NH, int64_t KVH, int64_t D,
                                      float scale, std::vector<float>& p) {
  const int64_t group = NH / KVH;
  for (int64_t w = w0; w < w1; w++) {
    const int64_t i = w / NH, h = w % NH, kvh = h / group;
    const Span& sp = spans[i];
    const int64_t len = (sp.a1 - sp.a0) + (sp.b1 - sp.b0);
    if (static_cast<int64_t>(p.size()) < len) p.resize(len);
    const float* qv = q + (i * NH + h) * D;
    const float* g = dout + (i * NH + h) * D;
    const float di = dot(g, out + (i * NH + h) * D, D);  // sum_j P_ij dP_ij
    scores(p.data(), qv, k, sp, KVH, kvh, D, scale);
    const float l = lse[i * NH + h];
    float* dqv = dq + (i * NH + h) * D;
    int64_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
      const int64_t j0 = pass ? sp.b0 : sp.a0, j1 = pass ? sp.b1 : sp.a1;
      for (int64_t j = j0; j < j1; j++, n++) {
        const float pj = std::exp(p[n] - l);
        const float* kj = k + (j * KVH + kvh) * D;
        const float* vj = v + (j * KVH + kvh) * D;
        const float ds = pj * (dot(g, vj, D) - di) * scale;
        axpy(dqv, ds, kj, D);
        axpy(dkp + (j * KVH + kvh) * D, ds, qv, D);
        axpy(dvp + (j * KVH + kvh) * D, pj, g, D);
      }
    }
  }
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const Span* spans,
                       int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  // out (Tq, NH, D); lse (Tq, NH); q (Tq, NH, D); k, v (Tk, KVH, D); spans (Tq)
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  parallel_for(Tq * NH, 4, [&](int64_t w0, int64_t w1, int) {
    std::vector<float> s;
    attention_rows(out, lse, q, k, v, spans, w0, w1, NH, KVH, D, scale, s);
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const Span* spans, int64_t Tq,
                        int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  // dq (Tq, NH, D) +=; dk, dv (Tk, KVH, D) +=; dout, out, q (Tq, NH, D); k, v (Tk, KVH, D); lse (Tq, NH)
  // Each part of the query rows sums its dk/dv into a private buffer (several rows see the same keys);
  // the buffers are added up in part order afterwards.
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t kvsize = Tk * KVH * D;
  const int nparts = ThreadPool::get().parts_for(Tq * NH, 4);
  std::vector<float> pdk(static_cast<size_t>(nparts > 1 ? nparts : 0) * kvsize, 0.0f);
  std::vector<float> pdv(pdk.size(), 0.0f);
  parallel_for(Tq * NH, 4, [&](int64_t w0, int64_t w1, int part) {
    float* dkp = nparts > 1 ? pdk.data() + part * kvsize : dk;
    float* dvp = nparts > 1 ? pdv.data() + part * kvsize : dv;
    std::vector<float> p;
    attention_bwd_rows(dq, dkp, dvp, dout, q, k, v, out, lse, spans, w0, w1, NH, KVH, D, scale, p);
  });
  if (nparts > 1) {
    parallel_for(kvsize, 4096, [&](int64_t e0, int64_t e1, int) {
      for (int pt = 0; pt < nparts; pt++) {
        const float* a = pdk.data() + pt * kvsize;
        const float* b = pdv.data() + pt * kvsize;
        for (int64_t e = e0; e < e1; e++) {
          dk[e] += a[e];
          dv[e] += b[e];
        }
      }
    });
  }
}

}  // namespace vq
