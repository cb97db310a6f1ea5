// Qwen2-VL forward and backward over the ops, with the shared prefix packed in one pass.
//
// Packing: a request (prompt P, completions c_1..c_G) becomes one sequence of rows
//   [ P (Lp rows) | c_1 | c_2 | ... | c_G ]
// The prompt rows attend causally among themselves; the rows of c_g attend to all Lp prompt rows and
// causally to c_g's own rows (attention spans, ops.h). So the prompt (and its image) is computed once,
// and in backward every completion's gradient flows into the same prompt rows and sums exactly.
// M-RoPE positions: the prompt's as transformers' get_rope_index; completion token t of every group
// member at max_prompt_position + 1 + t, as if it followed the prompt alone.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.h"
#include "cpu/threadpool.h"
#include "activations.h"
#include "model.h"

namespace vq {

Model::~Model() = default;

namespace {
inline void fit(std::vector<float>& v, int64_t n) { v.resize(static_cast<size_t>(n)); }
inline std::vector<float> zeros(int64_t n) { return std::vector<float>(static_cast<size_t>(n), 0.0f); }
}  // namespace

void Model::check_cancel() const {
  if (call_id_ != 0 && cancel_id_.load(std::memory_order_relaxed) == call_id_) throw Error("interrupted");
}

// ---- linear modules with optional LoRA -----------------------------------------------------------

void Model::lin_forward(const Lin& l, float* out, const float* inp, int64_t T) const {
  if (l.lora >= 0 && lora_enabled_ && !merged_.empty()) {  // a sampling run on merged weights (model.h)
    auto mk = merged_.find(l.lora);
    if (mk != merged_.end()) return linear_forward_packed(out, inp, mk->second, l.b >= 0 ? P(l.b) : nullptr, T, l.in, l.out);
  }
  auto pk = packed_.find(l.w);
  if (pk != packed_.end()) linear_forward_packed(out, inp, pk->second, l.b >= 0 ? P(l.b) : nullptr, T, l.in, l.out);
  else linear_forward(out, inp, P(l.w), l.b >= 0 ? P(l.b) : nullptr, T, l.in, l.out);
  if (l.lora >= 0 && lora_enabled_) {
    const LoraInfo& li = lora_[l.lora];
    std::vector<float> xa(static_cast<size_t>(T * lora_rank_));
    lora_forward(out, xa.data(), inp, lparams_.data() + li.a_off, lparams_.data() + li.b_off, T, l.in, l.out,
                 lora_rank_, lora_scale_);
  }
}

void Model::lin_backward(const Lin& l, float* dinp, const float* dout, const float* inp, int64_t T) {
  float* dw = G(l.w);
  float* db = l.b >= 0 ? G(l.b) : nullptr;
  if (dinp || dw || db) linear_backward(dinp, dw, db, dout, inp, P(l.w), T, l.in, l.out);
  if (l.lora >= 0 && lora_enabled_) {
    const LoraInfo& li = lora_[l.lora];
    const float* A = lparams_.data() + li.a_off;
    const float* B = lparams_.data() + li.b_off;
    std::vector<float> xa(static_cast<size_t>(T * lora_rank_));
    linear_forward(xa.data(), inp, A, nullptr, T, l.in, lora_rank_);  // recomputed rather than stored
    float* dA = lgrads_.empty() ? nullptr : lgrads_.data() + li.a_off;
    float* dB = lgrads_.empty() ? nullptr : lgrads_.data() + li.b_off;
    lora_backward(dinp, dA, dB, dout, inp, xa.data(), A, B, T, l.in, l.out, lora_rank_, lora_scale_);
  }
}

// ---- prompt checks and M-RoPE positions ---------------------------------------------------------

std::vector<VisualRun> Model::visual_runs(const Prompt& p) const {
  const int m = cfg_.vision.merge;
  std::vector<VisualRun> runs;
  for (const Image& im : p.images) {
    VisualRun r;
    r.token = im.video ? cfg_.video_token_id : cfg_.image_token_id;
    r.gh = im.h / m;
    r.gw = im.w / m;
    if (im.video && cfg_.family == Family::qwen3_vl) {
      // Qwen3-VL: get_rope_index splits a video's grid into t grids of one temporal patch each
      r.t = 1;
      for (int i = 0; i < im.t; i++) runs.push_back(r);
      continue;
    }
    r.t = im.t;
    // Qwen2.5-VL (transformers 5): time interval tokens_per_second * int(second_per_grid), the seconds
    // truncated to whole ones first (0.5 s -> every temporal patch at time 0; 4/3 s -> steps of 1 s)
    if (im.video && cfg_.family == Family::qwen2_5_vl)
      r.tscale = std::trunc(static_cast<double>(im.second_per_grid)) * static_cast<double>(cfg_.tokens_per_second);
    runs.push_back(r);
  }
  return runs;
}

void Model::check_prompt(const Prompt& p, const char* what) const {
  const int64_t V = cfg_.text.vocab;
  const int m = cfg_.vision.merge;
  VQ_CHECK(!p.ids.empty(), what << ": the prompt is empty");
  for (size_t i = 0; i < p.ids.size(); i++)
    VQ_CHECK(p.ids[i] >= 0 && p.ids[i] < V, what << ": token id " << p.ids[i] << " at position " << i
                                                 << " is outside the vocabulary [0, " << V << ")");
  int64_t expected_img = 0, expected_vid = 0;
  for (size_t k = 0; k < p.images.size(); k++) {
    const Image& im = p.images[k];
    const char* kind = im.video ? "video" : "image";
    VQ_CHECK(cfg_.vision.depth > 0, what << ": the model has no vision tower");
    VQ_CHECK(!im.video || cfg_.video_token_id >= 0, what << ": input " << k << " is a video but the config has no video_token_id");
    VQ_CHECK(im.t >= 1 && im.h % m == 0 && im.w % m == 0 && im.h > 0 && im.w > 0,
             what << ": " << kind << " " << k << " grid [" << im.t << ", " << im.h << ", " << im.w
                  << "] must have h and w divisible by the merge size " << m);
    VQ_CHECK(static_cast<int64_t>(im.pixels.size()) == static_cast<int64_t>(im.t) * im.h * im.w * cfg_.vision.patch_dim(),
             what << ": " << kind << " " << k << " has " << im.pixels.size() << " pixel values; grid [" << im.t << ", "
                  << im.h << ", " << im.w << "] needs " << int64_t(im.t) * im.h * im.w * cfg_.vision.patch_dim());
    VQ_CHECK(!im.video || (std::isfinite(im.second_per_grid) && im.second_per_grid > 0.0f),
             what << ": video " << k << " has second_per_grid " << im.second_per_grid << "; expected a positive number");
    (im.video ? expected_vid : expected_img) += static_cast<int64_t>(im.t) * im.h * im.w / (m * m);
  }
  int64_t count_img = 0, count_vid = 0;
  for (int32_t id : p.ids) {
    count_img += id == cfg_.image_token_id;
    count_vid += cfg_.video_token_id >= 0 && id == cfg_.video_token_id;
  }
  VQ_CHECK(count_img == expected_img, what << ": the prompt has " << count_img << " image tokens but its image grids need "
                                           << expected_img);
  VQ_CHECK(count_vid == expected_vid, what << ": the prompt has " << count_vid << " video tokens but its video grids need "
                                           << expected_vid);
  // every run (an image, a video; Qwen3-VL: one temporal patch of a video) is one contiguous run of its
  // token, in the order of the inputs (what get_rope_index assumes)
  size_t st = 0;
  const std::vector<VisualRun> runs = visual_runs(p);
  for (size_t k = 0; k < runs.size(); k++) {
    const VisualRun& r = runs[k];
    const int64_t n = r.tokens();
    while (st < p.ids.size() && !is_visual(p.ids[st])) st++;
    VQ_CHECK(st < p.ids.size() && p.ids[st] == r.token,
             what << ": visual run " << k << " (" << (r.token == cfg_.image_token_id ? "image" : "video")
                  << " tokens) should start at position " << st << " but finds "
                  << (st < p.ids.size() ? (p.ids[st] == cfg_.image_token_id ? "image tokens" : "video tokens") : "the end")
                  << "; images and videos must come in the prompt's order");
    for (int64_t j = 0; j < n; j++)
      VQ_CHECK(st + j < p.ids.size() && p.ids[st + j] == r.token,
               what << ": visual run " << k << " needs " << n << " consecutive tokens from position " << st
                    << " but the run ends after " << j);
    st += n;
  }
}

int32_t Model::rope_index(const Prompt& p, std::vector<int32_t>& pos) const {
  // transformers' get_rope_index (5.x): text runs count up from where the previous run ended; a visual
  // run's tokens take (t, h, w) grid positions (after merging) offset by the position where it starts,
  // and the next run starts max(h, w) after that start: the time axis does not move it, so a video's
  // later time positions may pass the text after it. Returns the largest position + 1, where
  // generation goes on (transformers' rope delta + length). Video time positions: see Image.
  const int64_t L = static_cast<int64_t>(p.ids.size());
  pos.assign(3 * L, 0);
  int64_t st = 0;
  int32_t cur = 0, top = -1;
  for (const VisualRun& r : visual_runs(p)) {
    int64_t ed = st;
    while (ed < L && p.ids[ed] != r.token) ed++;
    for (int64_t i = st; i < ed; i++)
      for (int a = 0; a < 3; a++) pos[a * L + i] = cur + static_cast<int32_t>(i - st);
    const int32_t base = cur + static_cast<int32_t>(ed - st);
    int64_t idx = ed;
    int32_t tmax = 0;
    for (int ti = 0; ti < r.t; ti++) {
      const int32_t tp = r.tscale == 1.0 ? ti : static_cast<int32_t>(std::floor(ti * r.tscale));
      tmax = std::max(tmax, tp);
      for (int hi = 0; hi < r.gh; hi++)
        for (int wi = 0; wi < r.gw; wi++, idx++) {
          pos[0 * L + idx] = base + tp;
          pos[1 * L + idx] = base + hi;
          pos[2 * L + idx] = base + wi;
        }
    }
    top = std::max(top, base + std::max(tmax, std::max(r.gh - 1, r.gw - 1)));
    cur = base + std::max(r.gh, r.gw);
    st = idx;
  }
  for (int64_t i = st; i < L; i++)
    for (int a = 0; a < 3; a++) pos[a * L + i] = cur + static_cast<int32_t>(i - st);
  if (st < L) top = std::max(top, cur + static_cast<int32_t>(L - st) - 1);
  return top + 1;
}

// ---- vision tower ------------------------------------------------------------------------------

void Model::vision_norm_forward(float* out, float* mean, float* rstd, const float* x, int w, int b, int64_t N,
                                int64_t C) const {
  // LayerNorm with bias (Qwen2-VL, Qwen3-VL) or RMSNorm (Qwen2.5-VL: b < 0); eps 1e-6 in every family
  if (b < 0) rmsnorm_forward(out, rstd, x, P(w), N, C, 1e-6f);
  else layernorm_forward(out, mean, rstd, x, P(w), P(b), N, C, 1e-6f);
}

void Model::vision_norm_backward(float* dx, const float* dout, const float* x, int w, int b, const float* mean,
                                 const float* rstd, int64_t N, int64_t C) {
  if (b < 0) rmsnorm_backward(dx, G(w), dout, x, P(w), rstd, N, C);
  else layernorm_backward(dx, G(w), G(b), dout, x, P(w), mean, rstd, N, C);
}

void Model::merger_forward(const MergerW& mw, MergerActs& ma, const float* x, int64_t N) {
  // x (N, E) -> ma.out (N / merge^2, H). Post-shuffle (DeepStack): the norm runs over each merged row.
  const VisionConfig& vc = cfg_.vision;
  const int64_t E = vc.embed_dim, mm = vc.merge * vc.merge, Nm = N / mm, M = E * mm, H = vc.out_hidden;
  const int64_t rows = mw.postshuffle ? Nm : N, C = mw.postshuffle ? M : E;
  ma.x.assign(x, x + N * E);
  fit(ma.ln, N * E); fit(ma.mean, rows); fit(ma.rstd, rows);
  vision_norm_forward(ma.ln.data(), ma.mean.data(), ma.rstd.data(), x, mw.nw, mw.nb, rows, C);
  fit(ma.h, Nm * M); fit(ma.hact, Nm * M); fit(ma.out, Nm * H);
  lin_forward(mw.fc1, ma.h.data(), ma.ln.data(), Nm);
  gelu_forward(ma.hact.data(), ma.h.data(), Nm * M);
  lin_forward(mw.fc2, ma.out.data(), ma.hact.data(), Nm);
}

void Model::merger_backward(const MergerW& mw, MergerActs& ma, float* dx, const float* dout, int64_t N) {
  // dx (N, E) +=; dout (N / merge^2, H)
  const VisionConfig& vc = cfg_.vision;
  const int64_t E = vc.embed_dim, mm = vc.merge * vc.merge, Nm = N / mm, M = E * mm;
  const int64_t rows = mw.postshuffle ? Nm : N, C = mw.postshuffle ? M : E;
  std::vector<float> dhact = zeros(Nm * M), dh = zeros(Nm * M), dln = zeros(N * E);
  lin_backward(mw.fc2, dhact.data(), dout, ma.hact.data(), Nm);
  gelu_backward(dh.data(), dhact.data(), ma.h.data(), Nm * M);
  lin_backward(mw.fc1, dln.data(), dh.data(), ma.ln.data(), Nm);
  vision_norm_backward(dx, dln.data(), ma.x.data(), mw.nw, mw.nb, ma.mean.data(), ma.rstd.data(), rows, C);
}

namespace {
// torch.linspace(0, end, steps) in fp32, as ATen computes it (from both ends toward the middle).
float linspace_at(float end, int64_t steps, int64_t i) {
  if (steps == 1) return 0.0f;
  const float step = end / static_cast<float>(steps - 1);
  return i < steps / 2 ? step * static_cast<float>(i) : end - step * static_cast<float>(steps - i - 1);
}
}  // namespace

void Model::vision_forward(Activations& a, const Prompt& p, bool keep) {
  const VisionConfig& vc = cfg_.vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, F = vc.mlp_hidden, PD = vc.patch_dim();
  const int m = vc.merge;
  const int64_t mm = static_cast<int64_t>(m) * m;
  int64_t N = 0;
  for (const Image& im : p.images) N += static_cast<int64_t>(im.t) * im.h * im.w;
  a.N = N;
  fit(a.patches, N * PD);
  std::vector<int32_t> hpos(N), wpos(N), gh(N), gw(N);  // per row: position, and its image's grid
  a.vspans.resize(N);
  int64_t row = 0;
  for (const Image& im : p.images) {
    std::memcpy(a.patches.data() + row * PD, im.pixels.data(), im.pixels.size() * sizeof(float));
    for (int ti = 0; ti < im.t; ti++) {
      const int64_t frame = row;
      for (int bh = 0; bh < im.h / m; bh++)
        for (int bw = 0; bw < im.w / m; bw++)
          for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++, row++) {
              hpos[row] = bh * m + i;
              wpos[row] = bw * m + j;
              gh[row] = im.h;
              gw[row] = im.w;
            }
      for (int64_t r = frame; r < row; r++) a.vspans[r] = Span{0, 0, static_cast<int32_t>(frame), static_cast<int32_t>(row)};
    }
  }

  // Qwen2.5-VL: windows of (window_size / patch / merge)^2 merged units per frame, padded at the
  // bottom/right edges (transformers' get_window_index). The tower runs on the rows permuted into
  // window order (every op but attention is row-wise; frames stay contiguous), the merger's output
  // goes back to the processor's order.
  a.win.clear();
  a.wspans.clear();
  if (vc.window_size > 0) {
    const int vw = vc.window_size / m / vc.patch_size;
    a.wspans.resize(N);
    int64_t unit0 = 0, wrow = 0;
    for (const Image& im : p.images) {
      const int lh = im.h / m, lw = im.w / m;
      const int nwh = (lh + vw - 1) / vw, nww = (lw + vw - 1) / vw;
      for (int ti = 0; ti < im.t; ti++)
        for (int wh = 0; wh < nwh; wh++)
          for (int ww = 0; ww < nww; ww++) {
            const int64_t start = wrow;
            for (int i = wh * vw; i < std::min(lh, (wh + 1) * vw); i++)
              for (int j = ww * vw; j < std::min(lw, (ww + 1) * vw); j++) {
                a.win.push_back(unit0 + (static_cast<int64_t>(ti) * lh + i) * lw + j);
                wrow += mm;
              }
            for (int64_t r = start; r < wrow; r++) a.wspans[r] = Span{0, 0, static_cast<int32_t>(start), static_cast<int32_t>(wrow)};
          }
      unit0 += static_cast<int64_t>(im.t) * lh * lw;
    }
    std::vector<float> pw(a.patches.size());
    std::vector<int32_t> hp(N), wp(N), ghp(N), gwp(N);
    for (size_t u = 0; u < a.win.size(); u++)
      for (int64_t r = 0; r < mm; r++) {
        const int64_t dst = static_cast<int64_t>(u) * mm + r, src = a.win[u] * mm + r;
        std::memcpy(pw.data() + dst * PD, a.patches.data() + src * PD, PD * sizeof(float));
        hp[dst] = hpos[src]; wp[dst] = wpos[src]; ghp[dst] = gh[src]; gwp[dst] = gw[src];
      }
    a.patches = std::move(pw);
    hpos = std::move(hp); wpos = std::move(wp); gh = std::move(ghp); gw = std::move(gwp);
  }
  fit(a.vcos, N * hd / 2);
  fit(a.vsin, N * hd / 2);
  rope_vision_table(a.vcos.data(), a.vsin.data(), hpos.data(), wpos.data(), N, hd, vc.theta);

  // patch embedding: a GEMM over the flattened (C, T, P, P) patches
  std::vector<float> x(static_cast<size_t>(N * E));
  linear_forward(x.data(), a.patches.data(), P(patch_), patch_b_ >= 0 ? P(patch_b_) : nullptr, N, PD, E);

  // Qwen3-VL: learned position embeddings on a side x side grid, bilinearly interpolated to the image's
  // grid (transformers' fast_pos_embed_interpolate: linspace over the grid, floor/ceil neighbours)
  if (pos_embed_ >= 0) {
    const int S = static_cast<int>(std::lround(std::sqrt(static_cast<double>(vc.num_pos))));
    fit(a.pw, N * 4);
    a.pidx.resize(static_cast<size_t>(N * 4));
    const float* pe = P(pos_embed_);
    for (int64_t r = 0; r < N; r++) {
      const float hi = linspace_at(static_cast<float>(S - 1), gh[r], hpos[r]);
      const float wi = linspace_at(static_cast<float>(S - 1), gw[r], wpos[r]);
      const int hf = static_cast<int>(hi), wf = static_cast<int>(wi);
      const int hc = std::min(hf + 1, S - 1), wc = std::min(wf + 1, S - 1);
      const float dh = hi - static_cast<float>(hf), dw = wi - static_cast<float>(wf);
      const int32_t idx[4] = {hf * S + wf, hf * S + wc, hc * S + wf, hc * S + wc};
      const float wt[4] = {(1.0f - dh) * (1.0f - dw), (1.0f - dh) * dw, dh * (1.0f - dw), dh * dw};
      float* xr = x.data() + r * E;
      for (int64_t c = 0; c < E; c++) {
        float s = 0.0f;
        for (int k = 0; k < 4; k++) s += pe[idx[k] * E + c] * wt[k];
        xr[c] += s;
      }
      for (int k = 0; k < 4; k++) {
        a.pidx[r * 4 + k] = idx[k];
        a.pw[r * 4 + k] = wt[k];
      }
    }
  }

  a.vblocks.resize(keep ? blocks_.size() : 1);
  a.ds.assign(vc.deepstack.size(), MergerActs{});
  a.ds_block.clear();
  a.ds_merger.clear();
  std::vector<float> qkv(static_cast<size_t>(N * 3 * E)), tmp(static_cast<size_t>(N * E));
  for (size_t bi = 0; bi < blocks_.size(); bi++) {
    check_cancel();
    const VisionBlockW& B = blocks_[bi];
    VisionBlockActs& A = a.vblocks[keep ? bi : 0];
    const bool windowed = !a.wspans.empty() &&
                          std::find(vc.fullatt.begin(), vc.fullatt.end(), static_cast<int>(bi)) == vc.fullatt.end();
    const Span* spans = windowed ? a.wspans.data() : a.vspans.data();
    if (keep) A.x = x;
    fit(A.ln1, N * E); fit(A.mean1, N); fit(A.rstd1, N);
    vision_norm_forward(A.ln1.data(), A.mean1.data(), A.rstd1.data(), x.data(), B.n1w, B.n1b, N, E);
    lin_forward(B.qkv, qkv.data(), A.ln1.data(), N);
    fit(A.q, N * E); fit(A.k, N * E); fit(A.v, N * E);
    for (int64_t r = 0; r < N; r++) {  // (N, 3, NH, hd) -> q, k, v (N, NH, hd)
      std::memcpy(A.q.data() + r * E, qkv.data() + r * 3 * E, E * sizeof(float));
      std::memcpy(A.k.data() + r * E, qkv.data() + r * 3 * E + E, E * sizeof(float));
      std::memcpy(A.v.data() + r * E, qkv.data() + r * 3 * E + 2 * E, E * sizeof(float));
    }
    rope_forward(A.q.data(), A.q.data(), a.vcos.data(), a.vsin.data(), N, NH, hd);
    rope_forward(A.k.data(), A.k.data(), a.vcos.data(), a.vsin.data(), N, NH, hd);
    fit(A.att, N * E); fit(A.lse, N * NH);
    attention_forward(A.att.data(), A.lse.data(), A.q.data(), A.k.data(), A.v.data(), spans, N, N, NH, NH, hd);
    lin_forward(B.proj, tmp.data(), A.att.data(), N);
    residual_forward(x.data(), x.data(), tmp.data(), N * E);
    if (keep) A.xmid = x;
    fit(A.ln2, N * E); fit(A.mean2, N); fit(A.rstd2, N);
    vision_norm_forward(A.ln2.data(), A.mean2.data(), A.rstd2.data(), x.data(), B.n2w, B.n2b, N, E);
    fit(A.fc1, N * F); fit(A.act, N * F);
    lin_forward(B.fc1, A.fc1.data(), A.ln2.data(), N);
    switch (vc.act) {
      case VisionAct::silu:  // gated: down(silu(gate) * up)
        fit(A.up, N * F);
        lin_forward(B.up, A.up.data(), A.ln2.data(), N);
        swiglu_forward(A.act.data(), A.fc1.data(), A.up.data(), N * F);
        break;
      case VisionAct::quick_gelu: quick_gelu_forward(A.act.data(), A.fc1.data(), N * F); break;
      case VisionAct::gelu: gelu_forward(A.act.data(), A.fc1.data(), N * F); break;
      case VisionAct::gelu_tanh: gelu_tanh_forward(A.act.data(), A.fc1.data(), N * F); break;
    }
    lin_forward(B.fc2, tmp.data(), A.act.data(), N);
    residual_forward(x.data(), x.data(), tmp.data(), N * E);
    // DeepStack: this block's output through its merger; the k-th feature made is added after text layer k
    for (size_t k = 0; k < vc.deepstack.size(); k++)
      if (vc.deepstack[k] == static_cast<int>(bi)) {
        const size_t j = a.ds_block.size();
        a.ds_block.push_back(static_cast<int>(bi));
        a.ds_merger.push_back(static_cast<int>(k));
        merger_forward(ds_mergers_[k], a.ds[j], x.data(), N);
      }
  }
  // patch merger: norm, then groups of merge^2 neighbouring patches -> MLP (gelu)
  const int64_t Nm = N / mm, M = E * mm, H = vc.out_hidden;
  a.vxf = std::move(x);
  fit(a.mln, N * E); fit(a.mmean, N); fit(a.mrstd, N);
  vision_norm_forward(a.mln.data(), a.mmean.data(), a.mrstd.data(), a.vxf.data(), mln_w_, mln_b_, N, E);
  fit(a.m0, Nm * M); fit(a.m0act, Nm * M); fit(a.img, Nm * H);
  lin_forward(m0_, a.m0.data(), a.mln.data(), Nm);
  gelu_forward(a.m0act.data(), a.m0.data(), Nm * M);
  lin_forward(m2_, a.img.data(), a.m0act.data(), Nm);
  if (!a.win.empty()) {  // back to the processor's order: merged row u is unit win[u]
    std::vector<float> img(a.img.size());
    for (size_t u = 0; u < a.win.size(); u++)
      std::memcpy(img.data() + a.win[u] * H, a.img.data() + static_cast<int64_t>(u) * H, H * sizeof(float));
    a.img = std::move(img);
  }
}

void Model::image_features(Activations& a, const Prompt& p, bool keep) {
  if (!vcache_.on() || !vision_cacheable(keep)) return vision_forward(a, p, keep);
  const int64_t H = cfg_.vision.out_hidden, mm = static_cast<int64_t>(cfg_.vision.merge) * cfg_.vision.merge;
  const uint64_t ver = vision_version();
  const size_t n = p.images.size();
  std::vector<int64_t> rows(n), first(n);
  int64_t total = 0;
  for (size_t k = 0; k < n; k++) {
    const Image& im = p.images[k];
    rows[k] = static_cast<int64_t>(im.t) * im.h * im.w / mm;
    first[k] = total;
    total += rows[k];
  }
  std::vector<float> img(static_cast<size_t>(total * H));
  Prompt missing;  // the images the cache does not hold, in order (their pixels are views, not copies)
  std::vector<size_t> which;
  for (size_t k = 0; k < n; k++) {
    const std::vector<float>* hit = vcache_.find(p.images[k], ver);
    if (hit) {
      std::memcpy(img.data() + first[k] * H, hit->data(), hit->size() * sizeof(float));
    } else {
      missing.images.emplace_back();
      Image& im = missing.images.back();
      im.pixels.view(p.images[k].pixels.data(), p.images[k].pixels.size());
      im.t = p.images[k].t;
      im.h = p.images[k].h;
      im.w = p.images[k].w;
      im.video = p.images[k].video;
      im.second_per_grid = p.images[k].second_per_grid;
      which.push_back(k);
    }
  }
  if (!which.empty()) {
    vision_forward(a, missing, false);  // nothing of the tower is kept: no gradient goes into it here
    int64_t src = 0;
    for (size_t k : which) {
      const float* f = a.img.data() + src * H;
      std::memcpy(img.data() + first[k] * H, f, rows[k] * H * sizeof(float));
      vcache_.put(p.images[k], ver, std::vector<float>(f, f + rows[k] * H), static_cast<size_t>(rows[k] * H) * sizeof(float));
      src += rows[k];
    }
  }
  a.img = std::move(img);
}

void Model::set_vision_cache(size_t max_bytes) {
  vcache_.set_max_bytes(max_bytes);
  if (device_) device_->set_vision_cache(max_bytes);
}

VisionCacheStats Model::vision_cache_stats() const { return device_ ? device_->vision_cache_stats() : vcache_.stats(); }

void Model::vision_backward(Activations& a, const float* dimg_in) {
  const VisionConfig& vc = cfg_.vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, F = vc.mlp_hidden, PD = vc.patch_dim();
  const int m = vc.merge;
  const int64_t N = a.N, Nm = N / (m * m), M = E * m * m, H = vc.out_hidden;
  std::vector<float> dimg_w;
  const float* dimg = dimg_in;
  if (!a.win.empty()) {  // into the window order the tower ran in
    dimg_w.resize(static_cast<size_t>(Nm * H));
    for (size_t u = 0; u < a.win.size(); u++)
      std::memcpy(dimg_w.data() + static_cast<int64_t>(u) * H, dimg_in + a.win[u] * H, H * sizeof(float));
    dimg = dimg_w.data();
  }
  // merger
  std::vector<float> dm0act = zeros(Nm * M), dm0 = zeros(Nm * M), dmln = zeros(N * E), dx = zeros(N * E);
  lin_backward(m2_, dm0act.data(), dimg, a.m0act.data(), Nm);
  gelu_backward(dm0.data(), dm0act.data(), a.m0.data(), Nm * M);
  lin_backward(m0_, dmln.data(), dm0.data(), a.mln.data(), Nm);
  vision_norm_backward(dx.data(), dmln.data(), a.vxf.data(), mln_w_, mln_b_, a.mmean.data(), a.mrstd.data(), N, E);
  // blocks, last to first; dx is the gradient of the block's output
  std::vector<float> dact(N * F), dfc1(N * F), dup, dln(N * E), datt(N * E), dq(N * E), dk(N * E), dv(N * E);
  std::vector<float> dqr(N * E), dkr(N * E), dqkv(N * 3 * E), qkv_in;
  if (vc.act == VisionAct::silu) dup.resize(static_cast<size_t>(N * F));
  for (size_t bi = blocks_.size(); bi-- > 0;) {
    check_cancel();
    const VisionBlockW& B = blocks_[bi];
    VisionBlockActs& A = a.vblocks[bi];
    const bool windowed = !a.wspans.empty() &&
                          std::find(vc.fullatt.begin(), vc.fullatt.end(), static_cast<int>(bi)) == vc.fullatt.end();
    const Span* spans = windowed ? a.wspans.data() : a.vspans.data();
    // DeepStack features read this block's output
    for (size_t j = 0; j < a.ds_block.size(); j++)
      if (a.ds_block[j] == static_cast<int>(bi) && j < a.dds.size() && !a.dds[j].empty())
        merger_backward(ds_mergers_[a.ds_merger[j]], a.ds[j], dx.data(), a.dds[j].data(), N);
    // MLP: x = xmid + fc2(act(fc1(ln2(xmid))))
    std::fill(dact.begin(), dact.end(), 0.0f);
    lin_backward(B.fc2, dact.data(), dx.data(), A.act.data(), N);
    std::fill(dfc1.begin(), dfc1.end(), 0.0f);
    std::fill(dln.begin(), dln.end(), 0.0f);
    switch (vc.act) {
      case VisionAct::silu:
        std::fill(dup.begin(), dup.end(), 0.0f);
        swiglu_backward(dfc1.data(), dup.data(), dact.data(), A.fc1.data(), A.up.data(), N * F);
        lin_backward(B.up, dln.data(), dup.data(), A.ln2.data(), N);
        break;
      case VisionAct::quick_gelu: quick_gelu_backward(dfc1.data(), dact.data(), A.fc1.data(), N * F); break;
      case VisionAct::gelu: gelu_backward(dfc1.data(), dact.data(), A.fc1.data(), N * F); break;
      case VisionAct::gelu_tanh: gelu_tanh_backward(dfc1.data(), dact.data(), A.fc1.data(), N * F); break;
    }
    lin_backward(B.fc1, dln.data(), dfc1.data(), A.ln2.data(), N);
    vision_norm_backward(dx.data(), dln.data(), A.xmid.data(), B.n2w, B.n2b, A.mean2.data(), A.rstd2.data(), N, E);
    // attention: xmid = x + proj(attn(rope(q), rope(k), v))
    std::fill(datt.begin(), datt.end(), 0.0f);
    lin_backward(B.proj, datt.data(), dx.data(), A.att.data(), N);
    std::fill(dq.begin(), dq.end(), 0.0f);
    std::fill(dk.begin(), dk.end(), 0.0f);
    std::fill(dv.begin(), dv.end(), 0.0f);
    attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), A.q.data(), A.k.data(), A.v.data(),
                       A.att.data(), A.lse.data(), spans, N, N, NH, NH, hd);
    std::fill(dqr.begin(), dqr.end(), 0.0f);
    std::fill(dkr.begin(), dkr.end(), 0.0f);
    rope_backward(dqr.data(), dq.data(), a.vcos.data(), a.vsin.data(), N, NH, hd);
    rope_backward(dkr.data(), dk.data(), a.vcos.data(), a.vsin.data(), N, NH, hd);
    for (int64_t r = 0; r < N; r++) {
      std::memcpy(dqkv.data() + r * 3 * E, dqr.data() + r * E, E * sizeof(float));
      std::memcpy(dqkv.data() + r * 3 * E + E, dkr.data() + r * E, E * sizeof(float));
      std::memcpy(dqkv.data() + r * 3 * E + 2 * E, dv.data() + r * E, E * sizeof(float));
    }
    std::fill(dln.begin(), dln.end(), 0.0f);
    lin_backward(B.qkv, dln.data(), dqkv.data(), A.ln1.data(), N);
    vision_norm_backward(dx.data(), dln.data(), A.x.data(), B.n1w, B.n1b, A.mean1.data(), A.rstd1.data(), N, E);
  }
  // position embeddings (Qwen3-VL): scatter the interpolation weights' share of every row
  if (float* dpe = pos_embed_ >= 0 ? G(pos_embed_) : nullptr)
    for (int64_t r = 0; r < N; r++)
      for (int k = 0; k < 4; k++) {
        float* d = dpe + static_cast<int64_t>(a.pidx[r * 4 + k]) * E;
        const float w = a.pw[r * 4 + k];
        const float* s = dx.data() + r * E;
        for (int64_t c = 0; c < E; c++) d[c] += w * s[c];
      }
  // patch embedding (no gradient for the pixels)
  float* dw = G(patch_);
  float* db = patch_b_ >= 0 ? G(patch_b_) : nullptr;
  if (dw || db) linear_backward(nullptr, dw, db, dx.data(), a.patches.data(), P(patch_), N, PD, E);
}

// ---- language model ----------------------------------------------------------------------------

void Model::text_rope_table(float* cos, float* sin, const int32_t* pos, int64_t T) const {
  const TextConfig& tc = cfg_.text;
  rope_mrope_table(cos, sin, pos, tc.section, T, tc.head_dim, tc.theta, tc.mrope_interleaved);
}

void Model::text_forward(Activations& a, int64_t T, float* x, const float* cos, const float* sin, const Span* spans,
                         bool keep, float* kcache, float* vcache, int64_t cache_rows, const int64_t* slots,
                         const std::vector<int64_t>* ds_rows) {
  const TextConfig& tc = cfg_.text;
  const int64_t H = tc.hidden, NH = tc.heads, KVH = tc.kv_heads, D = tc.head_dim, I = tc.inter;
  const int64_t KVD = KVH * D;
  a.layers.resize(keep ? layers_.size() : 1);
  std::vector<float> tmp(static_cast<size_t>(T * H));
  for (size_t li = 0; li < layers_.size(); li++) {
    check_cancel();
    const TextLayerW& L = layers_[li];
    TextLayerActs& A = a.layers[keep ? li : 0];
    if (keep) A.x.assign(x, x + T * H);
    fit(A.h1, T * H); fit(A.rstd1, T);
    rmsnorm_forward(A.h1.data(), A.rstd1.data(), x, P(L.ln1), T, H, tc.eps);
    fit(A.q, T * NH * D); fit(A.k, T * KVD); fit(A.v, T * KVD);
    if (tc.qk_norm) {  // Qwen3-VL: RMSNorm over each head's D values of q and k, before the rotary embedding
      fit(A.qraw, T * NH * D); fit(A.kraw, T * KVD); fit(A.qrstd, T * NH); fit(A.krstd, T * KVH);
      lin_forward(L.q, A.qraw.data(), A.h1.data(), T);
      lin_forward(L.k, A.kraw.data(), A.h1.data(), T);
      rmsnorm_forward(A.q.data(), A.qrstd.data(), A.qraw.data(), P(L.qn), T * NH, D, tc.eps);
      rmsnorm_forward(A.k.data(), A.krstd.data(), A.kraw.data(), P(L.kn), T * KVH, D, tc.eps);
    } else {
      lin_forward(L.q, A.q.data(), A.h1.data(), T);
      lin_forward(L.k, A.k.data(), A.h1.data(), T);
    }
    lin_forward(L.v, A.v.data(), A.h1.data(), T);
    rope_forward(A.q.data(), A.q.data(), cos, sin, T, NH, D);
    rope_forward(A.k.data(), A.k.data(), cos, sin, T, KVH, D);
    fit(A.att, T * NH * D); fit(A.lse, T * NH);
    if (kcache) {
      float* kc = kcache + static_cast<int64_t>(li) * cache_rows * KVD;
      float* vc = vcache + static_cast<int64_t>(li) * cache_rows * KVD;
      for (int64_t t = 0; t < T; t++) {
        std::memcpy(kc + slots[t] * KVD, A.k.data() + t * KVD, KVD * sizeof(float));
        std::memcpy(vc + slots[t] * KVD, A.v.data() + t * KVD, KVD * sizeof(float));
      }
      attention_forward(A.att.data(), A.lse.data(), A.q.data(), kc, vc, spans, T, cache_rows, NH, KVH, D);
    } else {
      attention_forward(A.att.data(), A.lse.data(), A.q.data(), A.k.data(), A.v.data(), spans, T, T, NH, KVH, D);
    }
    lin_forward(L.o, tmp.data(), A.att.data(), T);
    residual_forward(x, x, tmp.data(), T * H);
    if (keep) A.xmid.assign(x, x + T * H);
    fit(A.h2, T * H); fit(A.rstd2, T);
    rmsnorm_forward(A.h2.data(), A.rstd2.data(), x, P(L.ln2), T, H, tc.eps);
    fit(A.gate, T * I); fit(A.up, T * I); fit(A.act, T * I);
    lin_forward(L.gate, A.gate.data(), A.h2.data(), T);
    lin_forward(L.up, A.up.data(), A.h2.data(), T);
    swiglu_forward(A.act.data(), A.gate.data(), A.up.data(), T * I);
    lin_forward(L.down, tmp.data(), A.act.data(), T);
    residual_forward(x, x, tmp.data(), T * H);
    // DeepStack (Qwen3-VL): the li-th vision feature is added to the image rows after layer li
    if (ds_rows && li < a.ds.size() && !ds_rows->empty()) {
      const float* f = a.ds[li].out.data();
      for (size_t r = 0; r < ds_rows->size(); r++) {
        float* xr = x + (*ds_rows)[r] * H;
        for (int64_t c = 0; c < H; c++) xr[c] += f[r * H + c];
      }
    }
  }
}

void Model::text_backward(Activations& a, int64_t T, float* dx) {
  // dx (T, H): in, the gradient of the last layer's output; out, of the first layer's input.
  const TextConfig& tc = cfg_.text;
  const int64_t H = tc.hidden, NH = tc.heads, KVH = tc.kv_heads, D = tc.head_dim, I = tc.inter;
  const int64_t KVD = KVH * D;
  std::vector<float> dact(T * I), dgate(T * I), dup(T * I), dh(T * H), datt(T * NH * D);
  std::vector<float> dq(T * NH * D), dk(T * KVD), dv(T * KVD), dqr(T * NH * D), dkr(T * KVD);
  std::vector<float> dqn, dkn;
  if (tc.qk_norm) {
    dqn.resize(static_cast<size_t>(T * NH * D));
    dkn.resize(static_cast<size_t>(T * KVD));
  }
  const bool ds = !a.ds.empty() && !a.img_rows.empty();
  if (ds) a.dds.assign(a.ds.size(), {});
  for (size_t li = layers_.size(); li-- > 0;) {
    check_cancel();
    const TextLayerW& L = layers_[li];
    TextLayerActs& A = a.layers[li];
    // DeepStack: the feature added after this layer receives the gradient of the layer's output rows
    if (ds && li < a.ds.size()) {
      a.dds[li].resize(a.img_rows.size() * H);
      for (size_t r = 0; r < a.img_rows.size(); r++)
        std::memcpy(a.dds[li].data() + r * H, dx + a.img_rows[r] * H, H * sizeof(float));
    }
    // MLP: x = xmid + down(silu(gate(h2)) * up(h2)), h2 = rmsnorm(xmid)
    std::fill(dact.begin(), dact.end(), 0.0f);
    lin_backward(L.down, dact.data(), dx, A.act.data(), T);
    std::fill(dgate.begin(), dgate.end(), 0.0f);
    std::fill(dup.begin(), dup.end(), 0.0f);
    swiglu_backward(dgate.data(), dup.data(), dact.data(), A.gate.data(), A.up.data(), T * I);
    std::fill(dh.begin(), dh.end(), 0.0f);
    lin_backward(L.gate, dh.data(), dgate.data(), A.h2.data(), T);
    lin_backward(L.up, dh.data(), dup.data(), A.h2.data(), T);
    rmsnorm_backward(dx, G(L.ln2), dh.data(), A.xmid.data(), P(L.ln2), A.rstd2.data(), T, H);
    // attention: xmid = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1))), h1 = rmsnorm(x)
    std::fill(datt.begin(), datt.end(), 0.0f);
    lin_backward(L.o, datt.data(), dx, A.att.data(), T);
    std::fill(dq.begin(), dq.end(), 0.0f);
    std::fill(dk.begin(), dk.end(), 0.0f);
    std::fill(dv.begin(), dv.end(), 0.0f);
    attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), A.q.data(), A.k.data(), A.v.data(),
                       A.att.data(), A.lse.data(), a.spans.data(), T, T, NH, KVH, D);
    std::fill(dqr.begin(), dqr.end(), 0.0f);
    std::fill(dkr.begin(), dkr.end(), 0.0f);
    rope_backward(dqr.data(), dq.data(), a.cos.data(), a.sin.data(), T, NH, D);
    rope_backward(dkr.data(), dk.data(), a.cos.data(), a.sin.data(), T, KVH, D);
    std::fill(dh.begin(), dh.end(), 0.0f);
    if (tc.qk_norm) {
      std::fill(dqn.begin(), dqn.end(), 0.0f);
      std::fill(dkn.begin(), dkn.end(), 0.0f);
      rmsnorm_backward(dqn.data(), G(L.qn), dqr.data(), A.qraw.data(), P(L.qn), A.qrstd.data(), T * NH, D);
      rmsnorm_backward(dkn.data(), G(L.kn), dkr.data(), A.kraw.data(), P(L.kn), A.krstd.data(), T * KVH, D);
      lin_backward(L.q, dh.data(), dqn.data(), A.h1.data(), T);
      lin_backward(L.k, dh.data(), dkn.data(), A.h1.data(), T);
    } else {
      lin_backward(L.q, dh.data(), dqr.data(), A.h1.data(), T);
      lin_backward(L.k, dh.data(), dkr.data(), A.h1.data(), T);
    }
    lin_backward(L.v, dh.data(), dv.data(), A.h1.data(), T);
    rmsnorm_backward(dx, G(L.ln1), dh.data(), A.x.data(), P(L.ln1), A.rstd1.data(), T, H);
  }
}

// ---- one request: prompt once, completions packed after it --------------------------------------

void Model::forward_one(Activations& a, const ForwardRequest& r, ForwardResult& out, bool keep) {
  const TextConfig& tc = cfg_.text;
  const int64_t H = tc.hidden, V = tc.vocab, D = tc.head_dim;
  const Prompt& p = r.prompt;
  const int64_t Lp = static_cast<int64_t>(p.ids.size());
  const int64_t G = static_cast<int64_t>(r.completions.size());
  int64_t T = Lp;
  for (const auto& c : r.completions) T += static_cast<int64_t>(c.size());
  a.T = T;

  if (!p.images.empty()) image_features(a, p, keep);

  // rows: ids, embeddings, image rows
  a.ids.assign(p.ids.begin(), p.ids.end());
  for (const auto& c : r.completions) a.ids.insert(a.ids.end(), c.begin(), c.end());
  std::vector<float> x(static_cast<size_t>(T * H));
  embedding_forward(x.data(), a.ids.data(), P(embed_), T, H);
  a.img_rows.clear();
  for (int64_t i = 0; i < Lp; i++)
    if (is_visual(p.ids[i]) && !p.images.empty()) a.img_rows.push_back(i);
  for (size_t k = 0; k < a.img_rows.size(); k++) {
    std::memcpy(x.data() + a.img_rows[k] * H, a.img.data() + k * H, H * sizeof(float));
    a.ids[a.img_rows[k]] = -1;
  }

  // positions and spans
  std::vector<int32_t> ppos;
  const int32_t next = rope_index(p, ppos);
  std::vector<int32_t> pos(3 * T);
  std::vector<int64_t> start(G);
  a.spans.resize(T);
  for (int64_t i = 0; i < Lp; i++) {
    for (int ax = 0; ax < 3; ax++) pos[ax * T + i] = ppos[ax * Lp + i];
    a.spans[i] = Span{0, 0, 0, static_cast<int32_t>(i + 1)};
  }
  int64_t row = Lp;
  for (int64_t g = 0; g < G; g++) {
    start[g] = row;
    for (size_t t = 0; t < r.completions[g].size(); t++, row++) {
      for (int ax = 0; ax < 3; ax++) pos[ax * T + row] = next + static_cast<int32_t>(t);
      a.spans[row] = Span{0, static_cast<int32_t>(Lp), static_cast<int32_t>(start[g]), static_cast<int32_t>(row + 1)};
    }
  }
  fit(a.cos, T * D / 2);
  fit(a.sin, T * D / 2);
  text_rope_table(a.cos.data(), a.sin.data(), pos.data(), T);

  text_forward(a, T, x.data(), a.cos.data(), a.sin.data(), a.spans.data(), keep, nullptr, nullptr, 0, nullptr,
               &a.img_rows);

  fit(a.hf, T * H);
  fit(a.rstdf, T);
  rmsnorm_forward(a.hf.data(), a.rstdf.data(), x.data(), P(norm_), T, H, tc.eps);
  if (keep) a.xf = std::move(x);

  // head rows and log-probs of the completion tokens
  a.head_rows.clear();
  a.targets.clear();
  a.comp_off.assign(G, 0);
  a.comp_len.assign(G, 0);
  for (int64_t g = 0; g < G; g++) {
    a.comp_off[g] = static_cast<int64_t>(a.head_rows.size());
    a.comp_len[g] = static_cast<int64_t>(r.completions[g].size());
    for (size_t t = 0; t < r.completions[g].size(); t++) {
      a.head_rows.push_back(t == 0 ? Lp - 1 : start[g] + static_cast<int64_t>(t) - 1);
      a.targets.push_back(r.completions[g][t]);
    }
  }
  const int64_t R = static_cast<int64_t>(a.head_rows.size());
  fit(a.hrows, R * H);
  for (int64_t i = 0; i < R; i++) std::memcpy(a.hrows.data() + i * H, a.hf.data() + a.head_rows[i] * H, H * sizeof(float));
  fit(a.logits, R * V);
  linear_forward(a.logits.data(), a.hrows.data(), P(head_), nullptr, R, H, V);
  std::vector<float> lp(R), ent(R);
  fit(a.lse, R);
  logprob_forward(lp.data(), ent.data(), a.lse.data(), a.logits.data(), a.targets.data(), R, V);
  out.logprobs.resize(G);
  out.entropy.resize(G);
  for (int64_t g = 0; g < G; g++) {
    out.logprobs[g].assign(lp.begin() + a.comp_off[g], lp.begin() + a.comp_off[g] + a.comp_len[g]);
    out.entropy[g].assign(ent.begin() + a.comp_off[g], ent.begin() + a.comp_off[g] + a.comp_len[g]);
  }
  if (r.return_logits) {
    std::vector<float> all(static_cast<size_t>(T * V));
    linear_forward(all.data(), a.hf.data(), P(head_), nullptr, T, H, V);
    out.logits.resize(G);
    for (int64_t g = 0; g < G; g++) {
      const int64_t Lg = a.comp_len[g];
      auto& o = out.logits[g];
      o.resize(static_cast<size_t>((Lp + Lg) * V));
      std::memcpy(o.data(), all.data(), Lp * V * sizeof(float));
      std::memcpy(o.data() + Lp * V, all.data() + start[g] * V, Lg * V * sizeof(float));
    }
  }
  if (!keep) {
    a.logits.clear();
    a.logits.shrink_to_fit();
  }
}

void Model::backward_one(Activations& a, const std::vector<std::vector<float>>& grads) {
  const TextConfig& tc = cfg_.text;
  const int64_t H = tc.hidden, V = tc.vocab, T = a.T;
  const int64_t R = static_cast<int64_t>(a.head_rows.size());
  std::vector<float> dlogp(R, 0.0f);
  for (size_t g = 0; g < grads.size(); g++)
    for (size_t t = 0; t < grads[g].size(); t++) dlogp[a.comp_off[g] + t] = grads[g][t];
  std::vector<float> dlogits(static_cast<size_t>(R * V));
  logprob_backward(dlogits.data(), dlogp.data(), a.logits.data(), a.lse.data(), a.targets.data(), R, V);
  std::vector<float> dhrows = zeros(R * H);
  linear_backward(dhrows.data(), G(head_), nullptr, dlogits.data(), a.hrows.data(), P(head_), R, H, V);
  dlogits.clear();
  dlogits.shrink_to_fit();
  // the prompt's last row serves every completion's first token: its gradients add up here
  std::vector<float> dhf = zeros(T * H);
  for (int64_t i = 0; i < R; i++) {
    float* d = dhf.data() + a.head_rows[i] * H;
    const float* s = dhrows.data() + i * H;
    for (int64_t c = 0; c < H; c++) d[c] += s[c];
  }
  std::vector<float> dx = zeros(T * H);
  rmsnorm_backward(dx.data(), G(norm_), dhf.data(), a.xf.data(), P(norm_), a.rstdf.data(), T, H);
  text_backward(a, T, dx.data());
  if (float* dwte = G(embed_)) embedding_backward(dwte, dx.data(), a.ids.data(), T, H);
  if (!a.img_rows.empty() && vision_trainable()) {
    std::vector<float> dimg(a.img_rows.size() * H);
    for (size_t k = 0; k < a.img_rows.size(); k++)
      std::memcpy(dimg.data() + k * H, dx.data() + a.img_rows[k] * H, H * sizeof(float));
    vision_backward(a, dimg.data());
  }
}

std::vector<ForwardResult> Model::forward(const std::vector<ForwardRequest>& reqs, bool keep) {
  for (size_t i = 0; i < reqs.size(); i++) {
    const std::string what = "request " + std::to_string(i);
    check_prompt(reqs[i].prompt, what.c_str());
    for (size_t g = 0; g < reqs[i].completions.size(); g++)
      for (int32_t id : reqs[i].completions[g])
        VQ_CHECK(id >= 0 && id < cfg_.text.vocab, what << ": completion " << g << " has token id " << id
                                                     << " outside the vocabulary [0, " << cfg_.text.vocab << ")");
  }
  if (device_) return device_->forward(reqs, keep);
  if (keep) saved_.clear();  // a forward without keep leaves kept activations alone
  std::vector<ForwardResult> out(reqs.size());
  for (size_t i = 0; i < reqs.size(); i++) {
    auto a = std::make_unique<Activations>();
    forward_one(*a, reqs[i], out[i], keep);
    if (keep) saved_.push_back(std::move(a));
  }
  return out;
}

std::vector<SampleResult> Model::sample_many(const std::vector<SampleRequest>& reqs) {
  for (size_t i = 0; i < reqs.size(); i++) {
    const std::string what = "sample request " + std::to_string(i);
    check_prompt(reqs[i].prompt, what.c_str());
  }
  if (device_) return device_->sample_many(reqs);
  std::vector<SampleResult> out;
  for (const auto& q : reqs) out.push_back(sample(q));
  return out;
}

void Model::backward(const std::vector<std::vector<std::vector<float>>>& grads) {
  if (device_) return device_->backward(grads);
  VQ_CHECK(!saved_.empty(), "backward needs a forward with keepForBackward: true first");
  VQ_CHECK(grads.size() == saved_.size(), "backward got gradients for " << grads.size() << " requests but the last forward had "
                                                                     << saved_.size());
  for (size_t i = 0; i < grads.size(); i++) {
    VQ_CHECK(grads[i].size() == saved_[i]->comp_len.size(), "request " << i << ": gradients for " << grads[i].size()
                                                                       << " completions, the forward had " << saved_[i]->comp_len.size());
    for (size_t g = 0; g < grads[i].size(); g++)
      VQ_CHECK(static_cast<int64_t>(grads[i][g].size()) == saved_[i]->comp_len[g],
               "request " << i << " completion " << g << ": " << grads[i][g].size() << " gradients for "
                          << saved_[i]->comp_len[g] << " tokens");
  }
  ensure_grads();
  try {
    for (size_t i = 0; i < grads.size(); i++) backward_one(*saved_[i], grads[i]);
  } catch (...) {
    saved_.clear();  // an interrupted backward leaves partial gradients: the caller zeroes them
    throw;
  }
  saved_.clear();
}

}  // namespace vq
