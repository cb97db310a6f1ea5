#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "cpu/gemm.h"
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

// ---- blocked path: groups of rows with a common span shape, through the GEMM ---------------------
//
// Consecutive rows whose spans share a0, a1, b0 and whose b1 is constant (a bidirectional image frame)
// or grows by one per row (causal text: a prompt, a completion) form a group. A group's scores for one
// head are two GEMMs (S = scale * Q K^T over the A and B keys), then a masked softmax per row, then
// O = P V (two GEMMs); backward is the same with dP = dO V^T, dS = P (dP - rowsum(dO O)), dQ = dS K,
// dK = dS^T Q, dV = P^T dO. Rows go in chunks of kChunkRows so S stays small. Groups and heads run
// one after the other (each GEMM uses every thread), so dK/dV sum in a fixed order. Smaller groups
// (decode rows) take the row path.

namespace {

// Groups of at least this many rows take the blocked path (VQALAB_ATTN_BLOCK_ROWS overrides, for tuning).
int64_t gemm_rows() {
  static const int64_t n = [] {
    const char* e = std::getenv("VQALAB_ATTN_BLOCK_ROWS");
    return e ? std::max<int64_t>(1, std::atoll(e)) : int64_t{8};
  }();
  return n;
}
constexpr int64_t kChunkRows = 128;

struct Group {
  int64_t r0, r1;  // rows [r0, r1)
};

std::vector<Group> find_groups(const Span* sp, int64_t Tq) {
  std::vector<Group> out;
  int64_t r = 0;
  while (r < Tq) {
    int64_t e = r + 1;
    int mode = 0;  // 0 unknown, 1 constant b1, 2 causal b1
    while (e < Tq && sp[e].a0 == sp[r].a0 && sp[e].a1 == sp[r].a1 && sp[e].b0 == sp[r].b0) {
      const int m = sp[e].b1 == sp[e - 1].b1 ? 1 : (sp[e].b1 == sp[e - 1].b1 + 1 ? 2 : 0);
      if (m == 0 || (mode != 0 && m != mode)) break;
      mode = m;
      e++;
    }
    out.push_back({r, e});
    r = e;
  }
  return out;
}

// S (m, nk) = scale * [Q K_a^T | Q K_b^T] for rows c0..c0+m of head h.
void group_scores(float* S, int64_t nk, const float* q, const float* k, const Span& sp, int64_t nB, int64_t c0,
                  int64_t m, int64_t h, int64_t kvh, int64_t NH, int64_t KVH, int64_t D, float scale) {
  const int64_t nA = sp.a1 - sp.a0;
  const float* qh = q + (c0 * NH + h) * D;
  if (nA > 0) sgemm(false, true, m, nA, D, scale, qh, NH * D, k + (sp.a0 * KVH + kvh) * D, KVH * D, 0.0f, S, nk);
  if (nB > 0) sgemm(false, true, m, nB, D, scale, qh, NH * D, k + (sp.b0 * KVH + kvh) * D, KVH * D, 0.0f, S + nA, nk);
}

// One head of rows c0..c0+m of a group: scores, masked softmax (P into S), O = P V.
void group_forward_head(float* out, float* lse, const float* q, const float* k, const float* v, const Span* spans,
                        const Span& sp, int64_t nB, int64_t c0, int64_t m, int64_t h, int64_t NH, int64_t KVH,
                        int64_t D, float scale, std::vector<float>& S) {
  const int64_t nA = sp.a1 - sp.a0, nk = nA + nB;
  const int64_t kvh = h / (NH / KVH);
  if (static_cast<int64_t>(S.size()) < m * nk) S.resize(m * nk);
  group_scores(S.data(), nk, q, k, sp, nB, c0, m, h, kvh, NH, KVH, D, scale);
  for (int64_t i = 0; i < m; i++) {
    float* row = S.data() + i * nk;
    const int64_t valid = nA + (spans[c0 + i].b1 - sp.b0);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < valid; j++) mx = std::max(mx, row[j]);
    float sum = 0.0f;
    for (int64_t j = 0; j < valid; j++) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < valid; j++) row[j] *= inv;
    for (int64_t j = valid; j < nk; j++) row[j] = 0.0f;
    lse[(c0 + i) * NH + h] = mx + std::log(sum);
  }
  float* oh = out + (c0 * NH + h) * D;
  if (nA > 0) sgemm(false, false, m, D, nA, 1.0f, S.data(), nk, v + (sp.a0 * KVH + kvh) * D, KVH * D, 0.0f, oh, NH * D);
  if (nB > 0)
    sgemm(false, false, m, D, nB, 1.0f, S.data() + nA, nk, v + (sp.b0 * KVH + kvh) * D, KVH * D, nA > 0 ? 1.0f : 0.0f,
          oh, NH * D);
}

// Heads run in parallel (each head's GEMMs then run on its thread) when there are enough of them;
// otherwise one after the other with every thread inside each GEMM.
void group_forward(float* out, float* lse, const float* q, const float* k, const float* v, const Span* spans,
                   const Group& g, int64_t NH, int64_t KVH, int64_t D, float scale) {
  const Span& sp = spans[g.r0];
  int64_t b1max = 0;
  for (int64_t r = g.r0; r < g.r1; r++) b1max = std::max<int64_t>(b1max, spans[r].b1);
  const int64_t nB = std::max<int64_t>(0, b1max - sp.b0);
  const int nt = ThreadPool::get().size();
  std::vector<std::vector<float>> S(nt);
  for (int64_t c0 = g.r0; c0 < g.r1; c0 += kChunkRows) {
    const int64_t m = std::min(kChunkRows, g.r1 - c0);
    if (NH >= nt) {
      ThreadPool::get().parallel_tasks(NH, [&](int64_t h, int t) {
        group_forward_head(out, lse, q, k, v, spans, sp, nB, c0, m, h, NH, KVH, D, scale, S[t]);
      });
    } else {
      for (int64_t h = 0; h < NH; h++) group_forward_head(out, lse, q, k, v, spans, sp, nB, c0, m, h, NH, KVH, D, scale, S[0]);
    }
  }
}

// Backward of one head over rows c0..c0+m of a group; dK/dV of its kv head accumulate.
void group_backward_head(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                         const float* v, const float* out, const float* lse, const Span* spans, const Span& sp,
                         int64_t nB, int64_t c0, int64_t m, int64_t h, int64_t NH, int64_t KVH, int64_t D, float scale,
                         std::vector<float>& P, std::vector<float>& dS) {
  const int64_t nA = sp.a1 - sp.a0, nk = nA + nB;
  const int64_t kvh = h / (NH / KVH);
  if (static_cast<int64_t>(P.size()) < m * nk) P.resize(m * nk);
  if (static_cast<int64_t>(dS.size()) < m * nk) dS.resize(m * nk);
  const float* qh = q + (c0 * NH + h) * D;
  const float* gh = dout + (c0 * NH + h) * D;
  const float* ka = k + (sp.a0 * KVH + kvh) * D;
  const float* kb = k + (sp.b0 * KVH + kvh) * D;
  const float* va = v + (sp.a0 * KVH + kvh) * D;
  const float* vb = v + (sp.b0 * KVH + kvh) * D;
  group_scores(P.data(), nk, q, k, sp, nB, c0, m, h, kvh, NH, KVH, D, scale);
  // dP = dO V^T
  if (nA > 0) sgemm(false, true, m, nA, D, 1.0f, gh, NH * D, va, KVH * D, 0.0f, dS.data(), nk);
  if (nB > 0) sgemm(false, true, m, nB, D, 1.0f, gh, NH * D, vb, KVH * D, 0.0f, dS.data() + nA, nk);
  for (int64_t i = 0; i < m; i++) {
    float* p = P.data() + i * nk;
    float* d = dS.data() + i * nk;
    const int64_t valid = nA + (spans[c0 + i].b1 - sp.b0);
    const float l = lse[(c0 + i) * NH + h];
    const float di = dot(gh + i * NH * D, out + ((c0 + i) * NH + h) * D, D);
    for (int64_t j = 0; j < valid; j++) {
      p[j] = std::exp(p[j] - l);
      d[j] = p[j] * (d[j] - di) * scale;
    }
    for (int64_t j = valid; j < nk; j++) p[j] = d[j] = 0.0f;
  }
  float* dqh = dq + (c0 * NH + h) * D;
  if (nA > 0) {
    sgemm(false, false, m, D, nA, 1.0f, dS.data(), nk, ka, KVH * D, 1.0f, dqh, NH * D);
    sgemm(true, false, nA, D, m, 1.0f, dS.data(), nk, qh, NH * D, 1.0f, dk + (sp.a0 * KVH + kvh) * D, KVH * D);
    sgemm(true, false, nA, D, m, 1.0f, P.data(), nk, gh, NH * D, 1.0f, dv + (sp.a0 * KVH + kvh) * D, KVH * D);
  }
  if (nB > 0) {
    sgemm(false, false, m, D, nB, 1.0f, dS.data() + nA, nk, kb, KVH * D, 1.0f, dqh, NH * D);
    sgemm(true, false, nB, D, m, 1.0f, dS.data() + nA, nk, qh, NH * D, 1.0f, dk + (sp.b0 * KVH + kvh) * D, KVH * D);
    sgemm(true, false, nB, D, m, 1.0f, P.data() + nA, nk, gh, NH * D, 1.0f, dv + (sp.b0 * KVH + kvh) * D, KVH * D);
  }
}

// KV heads run in parallel when there are enough (the query heads of one kv head, which add to the
// same dK/dV rows, stay on one thread, in order); otherwise heads one after the other.
void group_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                    const float* out, const float* lse, const Span* spans, const Group& g, int64_t NH, int64_t KVH,
                    int64_t D, float scale) {
  const Span& sp = spans[g.r0];
  int64_t b1max = 0;
  for (int64_t r = g.r0; r < g.r1; r++) b1max = std::max<int64_t>(b1max, spans[r].b1);
  const int64_t nB = std::max<int64_t>(0, b1max - sp.b0);
  const int nt = ThreadPool::get().size();
  const int64_t group = NH / KVH;
  std::vector<std::vector<float>> P(nt), dS(nt);
  auto kv_head = [&](int64_t kvh, int t) {
    for (int64_t c0 = g.r0; c0 < g.r1; c0 += kChunkRows) {
      const int64_t m = std::min(kChunkRows, g.r1 - c0);
      for (int64_t h = kvh * group; h < (kvh + 1) * group; h++)
        group_backward_head(dq, dk, dv, dout, q, k, v, out, lse, spans, sp, nB, c0, m, h, NH, KVH, D, scale, P[t], dS[t]);
    }
  };
  if (KVH >= nt) ThreadPool::get().parallel_tasks(KVH, kv_head);
  else
    for (int64_t kvh = 0; kvh < KVH; kvh++) kv_head(kvh, 0);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const Span* spans,
                       int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  // out (Tq, NH, D); lse (Tq, NH); q (Tq, NH, D); k, v (Tk, KVH, D); spans (Tq)
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<int64_t> rows;  // rows of small groups: the row path
  for (const Group& g : find_groups(spans, Tq)) {
    if (g.r1 - g.r0 >= gemm_rows()) {
      group_forward(out, lse, q, k, v, spans, g, NH, KVH, D, scale);
    } else {
      for (int64_t r = g.r0; r < g.r1; r++) rows.push_back(r);
    }
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  parallel_for(n * NH, 4, [&](int64_t w0, int64_t w1, int) {
    std::vector<float> s;
    for (int64_t w = w0; w < w1; w++) {
      const int64_t r = rows[w / NH], h = w % NH;
      attention_rows(out, lse, q, k, v, spans, r * NH + h, r * NH + h + 1, NH, KVH, D, scale, s);
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const Span* spans, int64_t Tq,
                        int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  // dq (Tq, NH, D) +=; dk, dv (Tk, KVH, D) +=; dout, out, q (Tq, NH, D); k, v (Tk, KVH, D); lse (Tq, NH)
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<int64_t> rows;
  for (const Group& g : find_groups(spans, Tq)) {
    if (g.r1 - g.r0 >= gemm_rows()) {
      group_backward(dq, dk, dv, dout, q, k, v, out, lse, spans, g, NH, KVH, D, scale);
    } else {
      for (int64_t r = g.r0; r < g.r1; r++) rows.push_back(r);
    }
  }
  if (rows.empty()) return;
  // Row path: each part of the rows sums its dk/dv into a private buffer (several rows see the
  // same keys); the buffers are added up in part order afterwards.
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t kvsize = Tk * KVH * D;
  const int nparts = ThreadPool::get().parts_for(n * NH, 4);
  std::vector<float> pdk(static_cast<size_t>(nparts > 1 ? nparts : 0) * kvsize, 0.0f);
  std::vector<float> pdv(pdk.size(), 0.0f);
  parallel_for(n * NH, 4, [&](int64_t w0, int64_t w1, int part) {
    float* dkp = nparts > 1 ? pdk.data() + part * kvsize : dk;
    float* dvp = nparts > 1 ? pdv.data() + part * kvsize : dv;
    std::vector<float> p;
    for (int64_t w = w0; w < w1; w++) {
      const int64_t r = rows[w / NH], h = w % NH;
      attention_bwd_rows(dq, dkp, dvp, dout, q, k, v, out, lse, spans, r * NH + h, r * NH + h + 1, NH, KVH, D, scale, p);
    }
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
