// Sampling G completions of one prompt with a KV cache.
//
// The prompt (and its images) is prefilled once into the cache; sample g's tokens live in their own
// cache rows [Lp + g*max_tokens, ...), and every decode step runs the still-active samples as one
// batch whose rows attend to the prompt's rows plus their own (attention spans). Randomness is a pure
// function of (seed, sample index, step) (a counter-based hash, the same on CPU and CUDA), and a row's
// arithmetic does not depend on the other rows of the batch, so sample g is the same whatever n is.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "common.h"
#include "cpu/threadpool.h"
#include "activations.h"
#include "model.h"

namespace vq {

namespace {

uint64_t splitmix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) for (seed, sample, step).
double uniform01(uint64_t seed, uint64_t g, uint64_t t) {
  const uint64_t h = splitmix(splitmix(splitmix(seed) ^ g) ^ (t * 0xD1B54A32D192ED03ull));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace

// Picks a token from one row of logits (V); writes its log-prob under the unfiltered, temperature-1
// distribution. temperature 0: argmax (lowest index on ties). Otherwise logits / temperature, then
// top-k, then top-p (the smallest set, in descending order, whose mass reaches top_p), then inverse-CDF
// sampling with u = uniform01(seed, g, t) over the kept set in descending order.
int32_t sample_token(const float* logits, int64_t V, const SampleRequest& q, uint64_t g, uint64_t t, float* logprob) {
  float mx = -std::numeric_limits<float>::infinity();
  int64_t arg = 0;
  for (int64_t j = 0; j < V; j++)
    if (logits[j] > mx) {
      mx = logits[j];
      arg = j;
    }
  double s = 0.0;
  for (int64_t j = 0; j < V; j++) s += std::exp(static_cast<double>(logits[j]) - mx);
  const double lse = mx + std::log(s);
  int64_t tok = arg;
  if (q.temperature > 0.0f) {
    const double invT = 1.0 / q.temperature;
    std::vector<int32_t> cand;
    const bool topk = q.top_k > 0 && q.top_k < V;
    const bool topp = q.top_p < 1.0f;
    auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    if (topk || topp) {
      cand.resize(V);
      for (int64_t j = 0; j < V; j++) cand[j] = static_cast<int32_t>(j);
      if (topk) {
        std::partial_sort(cand.begin(), cand.begin() + q.top_k, cand.end(), before);
        cand.resize(q.top_k);
      } else {
        std::sort(cand.begin(), cand.end(), before);
      }
    }
    const int64_t n = cand.empty() ? V : static_cast<int64_t>(cand.size());
    auto id = [&](int64_t i) -> int64_t { return cand.empty() ? i : cand[i]; };
    std::vector<double> w(n);
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
      w[i] = std::exp((static_cast<double>(logits[id(i)]) - mx) * invT);
      total += w[i];
    }
    int64_t keep = n;
    if (topp) {
      double cum = 0.0;
      keep = 0;
      while (keep < n && (keep == 0 || cum < q.top_p * total)) cum += w[keep++];
      total = cum;
    }
    const double u = uniform01(q.seed, g, t) * total;
    double cum = 0.0;
    tok = id(keep - 1);
    for (int64_t i = 0; i < keep; i++) {
      cum += w[i];
      if (u < cum) {
        tok = id(i);
        break;
      }
    }
  }
  *logprob = static_cast<float>(static_cast<double>(logits[tok]) - lse);
  return static_cast<int32_t>(tok);
}

SampleResult Model::sample(const SampleRequest& q) {
  check_prompt(q.prompt, "sample");
  if (device_) return device_->sample(q);
  const TextConfig& tc = cfg_.text;
  const int64_t H = tc.hidden, V = tc.vocab, D = tc.head_dim, KVD = tc.kv_heads * tc.head_dim;
  const Prompt& p = q.prompt;
  const int64_t Lp = static_cast<int64_t>(p.ids.size());
  const int64_t n = q.n, maxT = q.max_tokens;
  const int64_t rows = Lp + n * maxT;
  std::vector<float> kc(static_cast<size_t>(tc.layers * rows * KVD)), vc(kc.size());

  auto own = std::make_unique<Activations>();
  Activations& a = *own;
  // Pack every language-model weight once for all the decode steps (the arithmetic is the same as
  // unpacked, so log-probs equal forward's bit for bit where the rows do).
  struct Unpack {
    std::map<int, PackedB>& p;
    ~Unpack() { p.clear(); }
  } unpack{packed_};
  for (const TextLayerW& L : layers_)
    for (const Lin* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
      sgemm_pack_b(packed_[l->w], true, l->in, l->out, P(l->w), l->in);
  sgemm_pack_b(packed_[head_], true, tc.hidden, tc.vocab, P(head_), tc.hidden);
  if (!p.images.empty()) vision_forward(a, p, false);

  // prefill the prompt
  std::vector<float> x(static_cast<size_t>(Lp * H));
  embedding_forward(x.data(), p.ids.data(), P(embed_), Lp, H);
  {
    int64_t k = 0;
    for (int64_t i = 0; i < Lp; i++)
      if (p.ids[i] == cfg_.image_token_id && !p.images.empty())
        std::memcpy(x.data() + i * H, a.img.data() + (k++) * H, H * sizeof(float));
  }
  std::vector<int32_t> pos;
  const int32_t next = rope_index(p, pos);
  std::vector<float> cs(Lp * D / 2), sn(Lp * D / 2);
  rope_mrope_table(cs.data(), sn.data(), pos.data(), tc.section, Lp, D, tc.theta);
  std::vector<Span> spans(Lp);
  std::vector<int64_t> slots(Lp);
  for (int64_t i = 0; i < Lp; i++) {
    spans[i] = Span{0, 0, 0, static_cast<int32_t>(i + 1)};
    slots[i] = i;
  }
  text_forward(a, Lp, x.data(), cs.data(), sn.data(), spans.data(), false, kc.data(), vc.data(), rows, slots.data());
  std::vector<float> h(H), rstd(1), logits(V);
  rmsnorm_forward(h.data(), rstd.data(), x.data() + (Lp - 1) * H, P(norm_), 1, H, tc.eps);
  linear_forward_packed(logits.data(), h.data(), packed_.at(head_), nullptr, 1, H, V);

  SampleResult res;
  res.tokens.resize(n);
  res.logprobs.resize(n);
  res.stopped.assign(n, false);
  std::vector<int64_t> active;
  auto take = [&](int64_t g, const float* row, int64_t t) {
    float lp;
    const int32_t tok = sample_token(row, V, q, static_cast<uint64_t>(g), static_cast<uint64_t>(t), &lp);
    res.tokens[g].push_back(tok);
    res.logprobs[g].push_back(lp);
    if (std::find(q.stop.begin(), q.stop.end(), tok) != q.stop.end()) res.stopped[g] = true;
    else if (t + 1 < maxT) active.push_back(g);
  };
  for (int64_t g = 0; g < n; g++) take(g, logits.data(), 0);

  // decode: feed token t-1 of every active sample, pick token t
  for (int64_t t = 1; t < maxT && !active.empty(); t++) {
    check_cancel();
    const std::vector<int64_t> rowsg = active;
    active.clear();
    const int64_t B = static_cast<int64_t>(rowsg.size());
    std::vector<int32_t> ids(B);
    std::vector<int32_t> bpos(3 * B, next + static_cast<int32_t>(t - 1));
    spans.resize(B);
    slots.resize(B);
    for (int64_t b = 0; b < B; b++) {
      const int64_t g = rowsg[b];
      ids[b] = res.tokens[g].back();
      const int64_t base = Lp + g * maxT;
      slots[b] = base + t - 1;
      spans[b] = Span{0, static_cast<int32_t>(Lp), static_cast<int32_t>(base), static_cast<int32_t>(base + t)};
    }
    x.resize(static_cast<size_t>(B * H));
    embedding_forward(x.data(), ids.data(), P(embed_), B, H);
    cs.resize(B * D / 2);
    sn.resize(B * D / 2);
    rope_mrope_table(cs.data(), sn.data(), bpos.data(), tc.section, B, D, tc.theta);
    text_forward(a, B, x.data(), cs.data(), sn.data(), spans.data(), false, kc.data(), vc.data(), rows, slots.data());
    h.resize(B * H);
    rstd.resize(B);
    logits.resize(static_cast<size_t>(B * V));
    rmsnorm_forward(h.data(), rstd.data(), x.data(), P(norm_), B, H, tc.eps);
    linear_forward_packed(logits.data(), h.data(), packed_.at(head_), nullptr, B, H, V);
    for (int64_t b = 0; b < B; b++) take(rowsg[b], logits.data() + b * V, t);
    std::sort(active.begin(), active.end());
  }
  return res;
}

}  // namespace vq
