// Sampling with a KV cache: several prompts, each with n completions, in one batched decode loop.
//
// Each prompt (and its images) is prefilled once, alone, into its own region of one KV cache; sample g
// of a request writes its keys and values to rows [region + Lp + g*max_tokens, ...). Every decode step
// runs the active rows of every request as one batch (the GEMMs see all of them); a row attends to its
// prompt's rows plus its own (attention spans). Requests join at step boundaries (SampleInbox) and
// leave when their rows have stopped or when cancelled; their cache regions are reused.
//
// Randomness is a pure function of (seed, sample index, step) (a counter-based hash, the same on CPU
// and CUDA), and a row's arithmetic does not depend on the other rows of the batch, so a request's
// samples are the same whatever n is and whatever else runs with it (tested bit for bit).
#include <algorithm>
#include <cstddef>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>

#include "common.h"
#include "cpu/threadpool.h"
#include "activations.h"
#include "model.h"
#include "sampler.h"

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

// ---- inbox --------------------------------------------------------------------------------------

bool SampleInbox::add(std::vector<std::pair<int32_t, SampleRequest>>&& reqs) {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return false;
  for (auto& r : reqs) adds_.push_back(std::move(r));
  return true;
}

bool SampleInbox::add(int32_t id, SampleRequest q) {
  std::vector<std::pair<int32_t, SampleRequest>> v;
  v.emplace_back(id, std::move(q));
  return add(std::move(v));
}

void SampleInbox::cancel(int32_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!closed_) cancels_.push_back(id);
}

void SampleInbox::close() {
  std::lock_guard<std::mutex> lk(mu_);
  closed_ = true;
  adds_.clear();
  cancels_.clear();
}

bool SampleInbox::take(std::vector<std::pair<int32_t, SampleRequest>>& adds, std::vector<int32_t>& cancels, bool idle) {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return false;
  if (idle && adds_.empty()) {
    closed_ = true;  // nothing to do: later adds go to a new run
    cancels_.clear();
    return false;
  }
  adds.swap(adds_);
  cancels.swap(cancels_);
  adds_.clear();
  cancels_.clear();
  return true;
}

namespace {

// The KV cache of a run: (layers, rows, width) for keys and for values, handed out to requests in
// contiguous regions of rows. It grows (by copying, a quarter at least) when a request does not fit
// any free region; freed regions merge with their neighbours.
class KvArena {
 public:
  KvArena(int64_t layers, int64_t width) : L_(layers), W_(width) {}
  int64_t rows() const { return cap_; }
  float* k() { return k_.get(); }
  float* v() { return v_.get(); }

  int64_t alloc(int64_t n) {
    for (int pass = 0; pass < 2; pass++) {
      for (size_t i = 0; i < free_.size(); i++) {
        if (free_[i].second < n) continue;
        const int64_t at = free_[i].first;
        free_[i].first += n;
        free_[i].second -= n;
        if (free_[i].second == 0) free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
        return at;
      }
      grow(cap_ + std::max(n, cap_ / 4));
    }
    VQ_FAIL("KV cache: no room for " << n << " rows after growing");
  }

  void release(int64_t at, int64_t n) {
    if (n <= 0) return;
    auto it = std::lower_bound(free_.begin(), free_.end(), std::make_pair(at, int64_t{0}));
    it = free_.insert(it, {at, n});
    auto nx = it + 1;
    if (nx != free_.end() && it->first + it->second == nx->first) {
      it->second += nx->second;
      free_.erase(nx);
    }
    if (it != free_.begin()) {
      auto pv = it - 1;
      if (pv->first + pv->second == it->first) {
        pv->second += it->second;
        free_.erase(it);
      }
    }
  }

 private:
  int64_t L_, W_, cap_ = 0;
  std::unique_ptr<float[]> k_, v_;  // (L, cap, W); rows are written before they are read
  std::vector<std::pair<int64_t, int64_t>> free_;  // (first row, count), sorted, disjoint

  void grow(int64_t cap) {
    std::unique_ptr<float[]> k(new float[static_cast<size_t>(L_ * cap * W_)]);
    std::unique_ptr<float[]> v(new float[static_cast<size_t>(L_ * cap * W_)]);
    if (cap_ > 0)
      for (int64_t l = 0; l < L_; l++) {
        std::memcpy(k.get() + l * cap * W_, k_.get() + l * cap_ * W_, static_cast<size_t>(cap_ * W_) * sizeof(float));
        std::memcpy(v.get() + l * cap * W_, v_.get() + l * cap_ * W_, static_cast<size_t>(cap_ * W_) * sizeof(float));
      }
    k_ = std::move(k);
    v_ = std::move(v);
    const int64_t old = cap_;
    cap_ = cap;
    release(old, cap - old);
  }
};

// A request in a run.
struct Live {
  int32_t id = 0;
  SampleRequest q;
  int64_t Lp = 0;       // prompt rows
  int32_t next = 0;     // M-RoPE position of the first completion token
  int64_t region = 0;   // first cache row: the prompt, then n * max_tokens rows
  int64_t rows = 0;     // cache rows held
  int64_t active = 0;   // rows still decoding
  SampleResult res;
};

struct LiveRow {
  Live* r;
  int64_t g;  // sample index within the request
};

// ---- a run on a device --------------------------------------------------------------------------
//
// With a device attached (the CUDA backend, Model::device()), the device samples. The run keeps the
// same contract as on the CPU (requests arrive and are cancelled through the inbox; each one ends with
// done() or failed(); the run returns when nothing is active or waiting), but it admits requests in
// groups: every request that has arrived when the device is free is admitted together and handed to
// sample_admitted_on_device(), the one place that calls the device. A streaming request's tokens reach
// the sink when its result is complete (in step order), not step by step.

struct DeviceRun {
  Model& m;
  DeviceModel& d;
  SampleInbox& inbox;
  SampleSink& sink;
  std::vector<std::pair<int32_t, SampleRequest>> waiting;  // arrived, not admitted yet
  std::vector<int32_t> cancelled;                           // cancels for admitted requests

  // Takes arrivals and cancellations from the inbox (a cancel for a waiting request ends it at once);
  // throws when the whole call was interrupted. False when the inbox closed (idle and nothing came).
  bool poll(bool idle) {
    m.check_cancel();
    std::vector<std::pair<int32_t, SampleRequest>> adds;
    std::vector<int32_t> cancels;
    if (!inbox.take(adds, cancels, idle)) return false;
    for (auto& a : adds) waiting.push_back(std::move(a));
    for (int32_t id : cancels) {
      auto w = std::find_if(waiting.begin(), waiting.end(), [&](const auto& a) { return a.first == id; });
      if (w != waiting.end()) {
        waiting.erase(w);
        sink.failed(id, "cancelled", true);
      } else {
        cancelled.push_back(id);
      }
    }
    sink.flush();
    return true;
  }
  // Between two requests of an admitted group: true when request `id` was cancelled meanwhile.
  bool cancelled_since(int32_t id) {
    poll(false);
    return std::find(cancelled.begin(), cancelled.end(), id) != cancelled.end();
  }
  // Reports what was produced. After the last request of a group, with nothing waiting, the inbox
  // closes first (unless something arrived), as on the CPU: a caller reacting to this result starts
  // a new run instead of racing this one's end.
  void report(bool last) {
    if (last && waiting.empty()) poll(true);
    sink.flush();
  }
  // Reports one finished request: its tokens first when it streams, in step order, then the result.
  void finish(int32_t id, const SampleRequest& q, SampleResult&& r, bool last) {
    if (q.stream) {
      size_t steps = 0;
      for (const auto& t : r.tokens) steps = std::max(steps, t.size());
      for (size_t t = 0; t < steps; t++)
        for (size_t g = 0; g < r.tokens.size(); g++)
          if (t < r.tokens[g].size())
            sink.token(TokenEvent{id, static_cast<int32_t>(g), r.tokens[g][t], r.logprobs[g][t]});
    }
    sink.done(id, std::move(r));
    report(last);
  }
};

// THE DEVICE HOOK: samples the requests a run admitted together. A device that batches
// (DeviceModel::batches(): the CUDA backend) gets them in one sample_many call: the cancelled ones are
// dropped and each prompt is checked first, then one call prefills every prompt and decodes all their
// rows together (docs/cuda.md); a request cancelled while that call ran is reported cancelled, its
// result dropped; a failure of the call fails the whole group. Any other device: one
// DeviceModel::sample per request, in order, cancellation honoured between requests.
void sample_group_on_device(DeviceRun& run, std::vector<std::pair<int32_t, SampleRequest>>& admitted) {
  std::vector<int32_t> ids;
  std::vector<SampleRequest> qs;
  for (auto& [id, q] : admitted) {
    if (run.cancelled_since(id)) {
      run.sink.failed(id, "cancelled", true);
      run.report(false);
      continue;
    }
    try {
      run.m.check_prompt(q.prompt, "sample");
    } catch (const Error& e) {
      run.sink.failed(id, e.what(), false);
      run.report(false);
      continue;
    }
    ids.push_back(id);
    qs.push_back(std::move(q));
  }
  if (qs.empty()) {
    run.report(true);
    return;
  }
  std::vector<SampleResult> rs;
  try {
    rs = run.d.sample_many(qs);
  } catch (const Error& e) {
    run.m.check_cancel();  // the whole call was interrupted: that is not these requests' failure
    for (size_t i = 0; i < ids.size(); i++) run.sink.failed(ids[i], e.what(), false);
    run.report(true);
    return;
  }
  for (size_t i = 0; i < ids.size(); i++) {
    const bool last = i + 1 == ids.size();
    if (run.cancelled_since(ids[i])) {
      run.sink.failed(ids[i], "cancelled", true);
      run.report(last);
      continue;
    }
    run.finish(ids[i], qs[i], std::move(rs[i]), last);
  }
}

void sample_admitted_on_device(DeviceRun& run, std::vector<std::pair<int32_t, SampleRequest>>& admitted) {
  if (run.d.batches()) return sample_group_on_device(run, admitted);
  for (auto& [id, q] : admitted) {
    const bool last = &q == &admitted.back().second;
    if (run.cancelled_since(id)) {
      run.sink.failed(id, "cancelled", true);
      run.report(last);
      continue;
    }
    SampleResult r;
    try {
      run.m.check_prompt(q.prompt, "sample");
      r = run.d.sample(q);
    } catch (const Error& e) {
      run.m.check_cancel();  // the whole call was interrupted: that is not this request's failure
      run.sink.failed(id, e.what(), false);
      run.report(last);
      continue;
    }
    if (run.cancelled_since(id)) {
      run.sink.failed(id, "cancelled", true);
      run.report(last);
      continue;
    }
    run.finish(id, q, std::move(r), last);
  }
}

void sample_run_on_device(Model& m, DeviceModel& d, SampleInbox& inbox, SampleSink& sink) {
  DeviceRun run{m, d, inbox, sink, {}, {}};
  while (run.poll(run.waiting.empty())) {
    if (run.waiting.empty()) continue;
    std::vector<std::pair<int32_t, SampleRequest>> admitted;
    admitted.swap(run.waiting);
    sample_admitted_on_device(run, admitted);
    run.cancelled.clear();  // ids are not reused within a run; cancels of finished requests are moot
  }
}

}  // namespace

void Model::ensure_packed() {
  const TextConfig& tc = cfg_.text;
  auto pack = [&](int w, int64_t in, int64_t out) {
    auto it = packed_.find(w);
    if (it != packed_.end() && !it->second.empty()) return;
    PackedB pb;  // complete before it enters the table (an exception leaves no half-packed entry)
    sgemm_pack_b(pb, true, in, out, P(w), in);
    packed_[w] = std::move(pb);
  };
  for (const TextLayerW& L : layers_)
    for (const Lin* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) pack(l->w, l->in, l->out);
  pack(head_, tc.hidden, tc.vocab);
}

void Model::merge_lora_packed() {
  merged_.clear();
  for (const TextLayerW& L : layers_)
    for (const Lin* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) {
      if (l->lora < 0) continue;
      const LoraInfo& li = lora_[l->lora];
      const int64_t in = l->in, out = l->out, R = lora_rank_;
      // B A (out, in) = B (out, R) x (A^T)^T: linear_forward with A^T (in, R) as the weight
      std::vector<float> at(static_cast<size_t>(in * R)), ba(static_cast<size_t>(out * in));
      const float* A = lparams_.data() + li.a_off;
      for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < in; i++) at[i * R + r] = A[r * in + i];
      linear_forward(ba.data(), lparams_.data() + li.b_off, at.data(), nullptr, out, R, in);
      const float* W = P(l->w);
      for (int64_t k = 0; k < out * in; k++) ba[k] = W[k] + lora_scale_ * ba[k];
      PackedB pb;
      sgemm_pack_b(pb, true, in, out, ba.data(), in);
      merged_[l->lora] = std::move(pb);
    }
}

void Model::sample_run(SampleInbox& inbox, SampleSink& sink) {
  struct Closer {
    SampleInbox& in;
    ~Closer() { in.close(); }
  } closer{inbox};
  if (device_) return sample_run_on_device(*this, *device_, inbox, sink);
  const TextConfig& tc = cfg_.text;
  const int64_t H = tc.hidden, V = tc.vocab, D = tc.head_dim, KVD = tc.kv_heads * tc.head_dim;
  KvArena kv(tc.layers, KVD);
  auto own = std::make_unique<Activations>();
  Activations& a = *own;
  // Every language-model weight packed for all the decode steps (the arithmetic is the same as
  // unpacked, so log-probs equal forward's bit for bit where the rows do); kept for the next run
  // unless VQALAB_PACK_CACHE=0 (model.h, packed_).
  struct Unpack {
    Model& m;
    ~Unpack() { if (!m.keep_packed_) m.drop_packed(); }
  } unpack{*this};
  ensure_packed();
  struct Unmerge {
    Model& m;
    ~Unmerge() { m.merged_.clear(); }
  } unmerge{*this};
  if (lora_merged_sampling_ && !lora_.empty() && lora_enabled_) merge_lora_packed();

  std::vector<std::unique_ptr<Live>> live;
  std::vector<LiveRow> rows, kept;
  std::vector<float> x, cs, sn, h, rstd, logits;
  std::vector<Span> spans;
  std::vector<int64_t> slots;
  std::vector<int32_t> ids, pos;

  // Samples token t of row g from `row`; true while the row goes on.
  auto take = [&](Live& r, int64_t g, const float* row, int64_t t) {
    float lp;
    const int32_t tok = sample_token(row, V, r.q, static_cast<uint64_t>(g), static_cast<uint64_t>(t), &lp);
    r.res.tokens[g].push_back(tok);
    r.res.logprobs[g].push_back(lp);
    if (r.q.stream) sink.token(TokenEvent{r.id, static_cast<int32_t>(g), tok, lp});
    if (std::find(r.q.stop.begin(), r.q.stop.end(), tok) != r.q.stop.end()) {
      r.res.stopped[g] = true;
      return false;
    }
    return t + 1 < r.q.max_tokens;
  };
  auto leave = [&](Live* r, bool finished, const std::string& why) {
    kv.release(r->region, r->rows);
    const int32_t id = r->id;
    SampleResult res = std::move(r->res);
    live.erase(std::find_if(live.begin(), live.end(), [&](const std::unique_ptr<Live>& p) { return p.get() == r; }));
    if (finished) sink.done(id, std::move(res));
    else sink.failed(id, why, true);
  };

  // Prefills a request's prompt into its cache region and samples the first token of its n rows.
  auto prefill = [&](Live& r) {
    const Prompt& p = r.q.prompt;
    check_prompt(p, "sample");
    const int64_t n = r.q.n, maxT = r.q.max_tokens;
    r.Lp = static_cast<int64_t>(p.ids.size());
    r.rows = r.Lp + n * maxT;
    r.region = kv.alloc(r.rows);
    struct Undo {
      KvArena& kv;
      Live& r;
      bool armed = true;
      ~Undo() { if (armed) kv.release(r.region, r.rows); }
    } undo{kv, r};
    if (!p.images.empty()) image_features(a, p, false);
    const int64_t Lp = r.Lp;
    x.resize(static_cast<size_t>(Lp * H));
    embedding_forward(x.data(), p.ids.data(), P(embed_), Lp, H);
    std::vector<int64_t> img_rows;  // DeepStack (Qwen3-VL) adds to these rows
    for (int64_t i = 0; i < Lp; i++)
      if (is_visual(p.ids[i]) && !p.images.empty()) {
        std::memcpy(x.data() + i * H, a.img.data() + static_cast<int64_t>(img_rows.size()) * H, H * sizeof(float));
        img_rows.push_back(i);
      }
    r.next = rope_index(p, pos);
    cs.resize(Lp * D / 2);
    sn.resize(Lp * D / 2);
    text_rope_table(cs.data(), sn.data(), pos.data(), Lp);
    spans.resize(Lp);
    slots.resize(Lp);
    const int32_t r0 = static_cast<int32_t>(r.region);
    for (int64_t i = 0; i < Lp; i++) {
      spans[i] = Span{0, 0, r0, static_cast<int32_t>(r0 + i + 1)};
      slots[i] = r.region + i;
    }
    text_forward(a, Lp, x.data(), cs.data(), sn.data(), spans.data(), false, kv.k(), kv.v(), kv.rows(), slots.data(),
                 &img_rows);
    h.resize(H);
    rstd.resize(1);
    logits.resize(V);
    rmsnorm_forward(h.data(), rstd.data(), x.data() + (Lp - 1) * H, P(norm_), 1, H, tc.eps);
    linear_forward_packed(logits.data(), h.data(), packed_.at(head_), nullptr, 1, H, V);
    undo.armed = false;
    r.res.tokens.assign(n, {});
    r.res.logprobs.assign(n, {});
    r.res.stopped.assign(n, false);
    for (int64_t g = 0; g < n; g++)
      if (take(r, g, logits.data(), 0)) {
        rows.push_back(LiveRow{&r, g});
        r.active++;
      }
  };

  std::vector<std::pair<int32_t, SampleRequest>> adds;
  std::vector<int32_t> cancels;
  bool taken = false;  // the next adds and cancels were taken already (by report)
  // Reports what a phase produced. When nothing is left active, the inbox closes first (unless
  // something arrived: that is taken for the next iteration), so that a caller reacting to these
  // results (its request done) starts a new run instead of racing this one's end. False: the run ends.
  auto report = [&]() -> bool {
    if (rows.empty()) {
      adds.clear();
      cancels.clear();
      if (!inbox.take(adds, cancels, true)) {
        sink.flush();
        return false;
      }
      taken = true;
    }
    sink.flush();
    return true;
  };
  for (;;) {
    check_cancel();
    if (!taken) {
      adds.clear();
      cancels.clear();
      if (!inbox.take(adds, cancels, rows.empty())) break;
    }
    taken = false;

    // Cancellations: the request's rows leave the batch, its cache region is freed.
    std::vector<bool> skip(adds.size(), false);
    for (int32_t id : cancels) {
      for (size_t i = 0; i < adds.size(); i++)
        if (adds[i].first == id && !skip[i]) {
          skip[i] = true;
          sink.failed(id, "cancelled", true);
        }
      auto it = std::find_if(live.begin(), live.end(), [&](const std::unique_ptr<Live>& p) { return p->id == id; });
      if (it == live.end()) continue;
      Live* r = it->get();
      rows.erase(std::remove_if(rows.begin(), rows.end(), [&](const LiveRow& w) { return w.r == r; }), rows.end());
      leave(r, false, "cancelled");
    }

    // Arrivals: prefill each prompt alone; its first tokens come from the prompt's last row.
    for (size_t i = 0; i < adds.size(); i++) {
      if (skip[i]) continue;
      live.push_back(std::make_unique<Live>());
      Live& r = *live.back();
      r.id = adds[i].first;
      r.q = std::move(adds[i].second);
      try {
        prefill(r);
      } catch (const Error& e) {
        check_cancel();  // the whole call was interrupted: that is not this request's failure
        rows.erase(std::remove_if(rows.begin(), rows.end(), [&](const LiveRow& w) { return w.r == &r; }), rows.end());
        const int32_t id = r.id;
        live.pop_back();
        sink.failed(id, e.what(), false);
        continue;
      }
      if (r.active == 0) leave(&r, true, "");
    }
    if (!report()) break;
    if (rows.empty()) continue;

    // One decode step: feed token t-1 of every active row, pick token t.
    const int64_t B = static_cast<int64_t>(rows.size());
    ids.resize(B);
    pos.resize(3 * B);
    spans.resize(B);
    slots.resize(B);
    std::vector<int64_t> step(B);
    for (int64_t b = 0; b < B; b++) {
      const Live& r = *rows[b].r;
      const int64_t g = rows[b].g;
      const int64_t t = static_cast<int64_t>(r.res.tokens[g].size());
      step[b] = t;
      ids[b] = r.res.tokens[g].back();
      const int64_t base = r.region + r.Lp + g * r.q.max_tokens;
      slots[b] = base + t - 1;
      spans[b] = Span{static_cast<int32_t>(r.region), static_cast<int32_t>(r.region + r.Lp), static_cast<int32_t>(base),
                      static_cast<int32_t>(base + t)};
      for (int ax = 0; ax < 3; ax++) pos[ax * B + b] = r.next + static_cast<int32_t>(t - 1);
    }
    x.resize(static_cast<size_t>(B * H));
    embedding_forward(x.data(), ids.data(), P(embed_), B, H);
    cs.resize(B * D / 2);
    sn.resize(B * D / 2);
    text_rope_table(cs.data(), sn.data(), pos.data(), B);
    text_forward(a, B, x.data(), cs.data(), sn.data(), spans.data(), false, kv.k(), kv.v(), kv.rows(), slots.data());
    h.resize(B * H);
    rstd.resize(B);
    logits.resize(static_cast<size_t>(B * V));
    rmsnorm_forward(h.data(), rstd.data(), x.data(), P(norm_), B, H, tc.eps);
    linear_forward_packed(logits.data(), h.data(), packed_.at(head_), nullptr, B, H, V);
    kept.clear();
    for (int64_t b = 0; b < B; b++) {
      Live* r = rows[b].r;
      if (take(*r, rows[b].g, logits.data() + b * V, step[b])) kept.push_back(rows[b]);
      else if (--r->active == 0) leave(r, true, "");
    }
    rows.swap(kept);
    if (!report()) break;
  }
}

SampleResult Model::sample(const SampleRequest& q) {
  check_prompt(q.prompt, "sample");
  if (device_) return device_->sample(q);
  struct One : SampleSink {
    SampleResult res;
    std::string err;
    void done(int32_t, SampleResult&& r) override { res = std::move(r); }
    void failed(int32_t, const std::string& why, bool) override { err = why; }
  } sink;
  SampleInbox inbox;
  SampleRequest copy = q;
  copy.stream = false;
  inbox.add(0, std::move(copy));
  sample_run(inbox, sink);
  if (!sink.err.empty()) throw Error(sink.err);
  return std::move(sink.res);
}

}  // namespace vq
