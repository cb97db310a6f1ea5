// Batched sampling on the GPU (shared prefill, decode steps over every request's rows, CUDA graphs).
#include "cuda/model_internal.cuh"

namespace vq {

// W' = W + s B A for every adapter of the LM, from the adapters' fp32 master (bf16: lmaster_; fp32: lw_), summed
// in fp32 and rounded once. Column-major (gemm.h): W'^T (in, out) = s A^T (in, r) B^T (r, out) + W^T.
// Held for one sampling call (lin_forward reads it while merged_on_).
template <typename T>
void CudaModel<T>::merge_lora_weights() {
  const auto& slots = h_.lora_slots();
  std::vector<int> weight(slots.size(), -1);
  for (const TextLayerW& L : h_.text_layers())
    for (const Lin* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
      if (l->lora >= 0) weight[l->lora] = l->w;
  merged_off_.assign(slots.size(), -1);
  int64_t total = 0;
  for (size_t i = 0; i < slots.size(); i++)
    if (weight[i] >= 0) {
      merged_off_[i] = total;
      total += slots[i].in * slots[i].out;
    }
  if (total == 0) return;
  merged_.fit(total);
  const float* ad = std::is_same<T, float>::value ? reinterpret_cast<const float*>(lw_.p) : lmaster_.p;
  VQ_CHECK(ad, "LoRA merge: the adapters' fp32 values are not on the device");
  const int64_t R = h_.lora_rank();
  if constexpr (std::is_same<T, float>::value) {
    for (size_t i = 0; i < slots.size(); i++) {
      if (merged_off_[i] < 0) continue;
      const LoraInfo& li = slots[i];
      float* dst = merged_.p + merged_off_[i];
      CU_CHECK(cudaMemcpyAsync(dst, P(weight[i]), li.in * li.out * sizeof(float), cudaMemcpyDeviceToDevice,
                               cu::stream()),
               "LoRA merge");
      cu::GemmArgs g;  // dst^T (in, out) += s A^T (in, R) B^T (R, out)
      g.m = li.in; g.n = li.out; g.k = R;
      g.alpha = h_.lora_scale(); g.beta = 1.0f;
      g.A = ad + li.a_off; g.lda = li.in;
      g.B = ad + li.b_off; g.ldb = R;
      g.C = dst; g.ldc = li.in;
      cu::gemm(g, "LoRA merge");
    }
  } else {
    // bf16: one tensor-core GEMM per adapter over the hi/lo pairs of its fp32 master (cu::lora_split, as the
    // one-rounding linear): W + s (B_hi A_hi + B_hi A_lo + B_lo A_hi), summed in fp32 with W read as C and
    // rounded once into the merged copy. A fp32 GEMM from fp32 copies of W took 15 ms at 2B (r 64).
    int64_t scratch = 0;
    for (size_t i = 0; i < slots.size(); i++)
      if (merged_off_[i] >= 0) scratch = std::max(scratch, 3 * R * (slots[i].in + slots[i].out));
    DArray<cu::bf16> pairs("LoRA merge (hi/lo pairs)");
    pairs.fit(scratch);
    for (size_t i = 0; i < slots.size(); i++) {
      if (merged_off_[i] < 0) continue;
      const LoraInfo& li = slots[i];
      cu::bf16* A3 = pairs.p;                 // (3R, in): A_hi, A_lo, A_hi
      cu::bf16* Bcat = pairs.p + 3 * R * li.in;  // (out, 3R): B_hi | B_hi | B_lo per row
      cu::lora_split(A3, Bcat, ad + li.a_off, ad + li.b_off, li.in, li.out, R);
      CU_CHECK(cudaMemcpyAsync(A3 + 2 * R * li.in, A3, R * li.in * sizeof(cu::bf16), cudaMemcpyDeviceToDevice,
                               cu::stream()),
               "LoRA merge");
      cu::GemmArgs g;  // merged^T (in, out) = W^T + s A3^T (in, 3R) Bcat^T (3R, out)
      g.m = li.in; g.n = li.out; g.k = 3 * R;
      g.alpha = h_.lora_scale(); g.beta = 1.0f;
      g.A = A3; g.lda = li.in;
      g.B = Bcat; g.ldb = 3 * R;
      g.C = merged_.p + merged_off_[i]; g.ldc = li.in;
      g.Cin = P(weight[i]);
      g.ab = g.c = cu::DType::BF16;
      cu::gemm(g, "LoRA merge");
    }
  }
}

// ---- sampling: every prompt's rows in one batch ----
//
// The prompts (and their images) are prefilled together, each into its own region of one KV cache
// (region r holds its Lp rows, then n * max_tokens rows, sample g's from Lp + g * max_tokens). Every
// decode step runs all active rows of all requests: a row attends to its prompt's rows and its own.
// A step's inputs (ids, cache slots, spans, rope tables, sampling parameters) are staged in pinned
// memory and go up in one copy; with the flash path the step is captured once per batch size as a
// CUDA graph and replayed. Tokens come back every step (stop ids, max_tokens).
template <typename T>
std::vector<SampleResult> CudaModel<T>::sample_many(const std::vector<SampleRequest>& qs) {
  DevGuard guard(dev_, st_, opt_.sync_every_op);
  HostPhase hp_all(opt_.profile, "sample_many (whole call)");
  const int64_t H = tc().hidden, V = tc().vocab, D = tc().head_dim, KVD = tc().kv_heads * tc().head_dim, half = D / 2;
  const size_t nq = qs.size();
  std::vector<SampleResult> res(nq);
  if (nq == 0) return res;
  std::vector<int64_t> region(nq), Lp(nq), next(nq);
  int64_t rows_total = 0, NP = 0;
  for (size_t r = 0; r < nq; r++) {
    region[r] = rows_total;
    Lp[r] = static_cast<int64_t>(qs[r].prompt.ids.size());
    rows_total += Lp[r] + static_cast<int64_t>(qs[r].n) * qs[r].max_tokens;
    NP += Lp[r];
  }
  // Zeroed: a tile of query rows reads whole key blocks over the union of its rows' ranges, which can
  // cover slots not written yet (other samples' future tokens, the gap between prompts' regions).
  // Their probabilities are 0, but 0 * NaN is NaN: stale pool memory must not hold NaN patterns there.
  {
    HostPhase hp(opt_.profile, "sample: KV cache fit + zero");
    zero(kc_.fit(tc().layers * rows_total * KVD), tc().layers * rows_total * KVD);
    zero(vc_.fit(tc().layers * rows_total * KVD), tc().layers * rows_total * KVD);
  }
  HostPhase hp_stage(opt_.profile, "sample: prompt staging");

  // LoRA: the adapters merged into a copy of their weights for this call (prefill and decode steps)
  struct Unmerge {
    CudaModel& m;
    ~Unmerge() {
      m.merged_on_ = false;
      m.merged_.release();
    }
  } unmerge{*this};
  if (opt_.lora_merged_sampling && h_.lora_active() && h_.lora_enabled()) {
    Phase ph(opt_.profile, "sample: LoRA merge");
    merge_lora_weights();
    merged_on_ = true;
  }
  CuActs<T> a;
  std::vector<const Image*> imgs;
  for (const auto& q : qs)
    for (const Image& im : q.prompt.images) imgs.push_back(&im);
  // prefill every prompt, packed; every input goes up before the first kernel
  std::vector<int32_t> ids(NP), pos(3 * NP);
  std::vector<int64_t> slots(NP), last(nq);
  a.spans.resize(NP);
  a.img_rows_h.clear();
  {
    int64_t off = 0;
    for (size_t r = 0; r < nq; r++) {
      const Prompt& p = qs[r].prompt;
      std::vector<int32_t> pp;
      next[r] = h_.rope_index(p, pp);
      for (int64_t i = 0; i < Lp[r]; i++) {
        ids[off + i] = p.ids[i];
        if (h_.is_visual(p.ids[i]) && !p.images.empty()) a.img_rows_h.push_back(off + i);
        for (int ax = 0; ax < 3; ax++) pos[ax * NP + off + i] = pp[ax * Lp[r] + i];
        a.spans[off + i] = Span{0, 0, static_cast<int32_t>(region[r]), static_cast<int32_t>(region[r] + i + 1)};
        slots[off + i] = region[r] + i;
      }
      off += Lp[r];
      last[r] = off - 1;
    }
  }
  DArray<int32_t> dids("token ids");
  lm_prepare(a, dids, ids, pos, NP);
  DArray<int64_t> dslots("cache slots");
  upload(dslots, slots.data(), NP);
  hp_stage.stop();
  if (!imgs.empty()) {
    HostPhase hp(opt_.profile, "sample: vision (host)");
    image_features(a, imgs, false, "sample: vision");
  }
  DArray<float> x("text activations");
  embed_prompts(a, x, dids.p, NP);
  {
    Phase ph(opt_.profile, "sample: LM prefill");
    text_forward(a, NP, x, a.cos.p, a.sin.p, a.spans.data(), a.dspans.p, false, kc_.p, vc_.p, rows_total, dslots.p,
                 true);
  }

  // rows: (request, sample); step 0 draws from the prompt's last row
  struct Row { size_t r; int64_t g; };
  std::vector<Row> active;
  for (size_t r = 0; r < nq; r++) {
    res[r].tokens.resize(qs[r].n);
    res[r].logprobs.resize(qs[r].n);
    res[r].stopped.assign(qs[r].n, false);
    for (int64_t g = 0; g < qs[r].n; g++) active.push_back({r, g});
  }
  const int64_t Bmax = static_cast<int64_t>(active.size());
  if (Bmax == 0) return res;
  // staging for a step's inputs (sized for Bmax so that addresses stay put for the graphs)
  auto align = [](size_t v) { return (v + 255) & ~size_t(255); };
  const size_t o_ids = 0, o_slots = align(o_ids + Bmax * 4), o_spans = align(o_slots + Bmax * 8),
               o_cos = align(o_spans + Bmax * sizeof(Span)), o_sin = align(o_cos + Bmax * half * 4),
               o_temp = align(o_sin + Bmax * half * 4), o_seed = align(o_temp + Bmax * 4), o_g = align(o_seed + Bmax * 8),
               o_t = align(o_g + Bmax * 8), o_rows = align(o_t + Bmax * 8), total = align(o_rows + Bmax * 8);
  char* hs = static_cast<char*>(steph_.fit(total, "decode step staging"));
  char* ds = stepd_.fit(static_cast<int64_t>(total));
  // the graphs capture this call's buffers: drop them when it returns (normally or not)
  struct DropGraphs {
    std::map<int64_t, cudaGraphExec_t>& g;
    ~DropGraphs() {
      for (auto& kv : g) cudaGraphExecDestroy(kv.second);
      g.clear();
    }
  } drop_graphs{graphs_};
  struct Release {
    CudaModel& m;
    ~Release() {
      m.release_scratch();
      m.kc_.release();
      m.vc_.release();
    }
  } release{*this};
  auto H_ = [&](size_t o) { return hs + o; };
  auto D_ = [&](size_t o) { return ds + o; };
  DArray<float> xs("decode activations"), dlp("sampling");
  DArray<T> hrep("sampling"), logits("sampling logits");
  DArray<int32_t> dtok("sampling");
  xs.fit(Bmax * H);
  hrep.fit(Bmax * H);
  logits.fit(Bmax * V);
  dtok.fit(Bmax);
  dlp.fit(Bmax);
  std::vector<int32_t> tok(Bmax);
  std::vector<float> lp(Bmax);
  bool host_draw_any = false;
  for (const auto& q : qs)
    host_draw_any |= q.temperature > 0.0f && ((q.top_k > 0 && q.top_k < V) || q.top_p < 1.0f);

  // sampling parameters of the active rows into the staging (before the copy)
  auto stage_params = [&](const std::vector<Row>& rows, int64_t t) {
    for (size_t b = 0; b < rows.size(); b++) {
      const SampleRequest& q = qs[rows[b].r];
      reinterpret_cast<float*>(H_(o_temp))[b] = q.temperature;
      reinterpret_cast<uint64_t*>(H_(o_seed))[b] = q.seed;
      reinterpret_cast<int64_t*>(H_(o_g))[b] = rows[b].g;
      reinterpret_cast<int64_t*>(H_(o_t))[b] = t;
    }
  };
  // draws token t of the rows from `logits` (B, V) and books them; returns the rows that go on
  auto pick = [&](const std::vector<Row>& rows, int64_t t, bool sampled_on_device) {
    const int64_t B = static_cast<int64_t>(rows.size());
    if (!sampled_on_device)
      cu::sample_rows_multi(dtok.p, dlp.p, logits.p, reinterpret_cast<const float*>(D_(o_temp)),
                            reinterpret_cast<const uint64_t*>(D_(o_seed)), reinterpret_cast<const int64_t*>(D_(o_g)),
                            reinterpret_cast<const int64_t*>(D_(o_t)), B, V);
    CU_CHECK(cudaMemcpyAsync(tok.data(), dtok.p, B * sizeof(int32_t), cudaMemcpyDeviceToHost, st_), "sample");
    download(lp.data(), dlp.p, B);
    if (host_draw_any) {  // top-k / top-p rows: the CPU's sampler on their logits
      std::vector<float> row(V);
      for (int64_t b = 0; b < B; b++) {
        const SampleRequest& q = qs[rows[b].r];
        if (!(q.temperature > 0.0f && ((q.top_k > 0 && q.top_k < V) || q.top_p < 1.0f))) continue;
        const std::vector<float> hl = download_f32(logits.p + b * V, V);
        tok[b] = sample_token(hl.data(), V, q, static_cast<uint64_t>(rows[b].g), static_cast<uint64_t>(t), &lp[b]);
      }
    }
    std::vector<Row> go;
    for (int64_t b = 0; b < B; b++) {
      const SampleRequest& q = qs[rows[b].r];
      SampleResult& sr = res[rows[b].r];
      sr.tokens[rows[b].g].push_back(tok[b]);
      sr.logprobs[rows[b].g].push_back(lp[b]);
      if (std::find(q.stop.begin(), q.stop.end(), tok[b]) != q.stop.end()) sr.stopped[rows[b].g] = true;
      else if (t + 1 < q.max_tokens) go.push_back(rows[b]);
    }
    return go;
  };
  {
    HostPhase hp(opt_.profile, "sample: first token (host)");
    std::vector<int64_t> src(Bmax);
    for (int64_t b = 0; b < Bmax; b++) src[b] = last[active[b].r];
    DArray<int64_t> dsrc("sampling");
    upload(dsrc, src.data(), Bmax);
    cu::gather_rows(hrep.p, static_cast<const T*>(a.hf.p), dsrc.p, Bmax, H);
    cu::linear_forward(logits.p, hrep.p, P(h_.head_param()), static_cast<const T*>(nullptr), Bmax, H, V);
    stage_params(active, 0);
    CU_CHECK(cudaMemcpyAsync(ds, hs, total, cudaMemcpyHostToDevice, st_), "decode step inputs");
    active = pick(active, 0, false);
  }
  // graphs need the flash path (device spans; the cuBLASLt path plans tiles on the host)
  const bool graphs = opt_.graphs && std::is_same<T, cu::bf16>::value && opt_.attention == CudaAttention::fused &&
                      cu::flash_supported(D);
  std::vector<Span> sp;
  Phase ph_decode(opt_.profile, "sample: decode steps");
  HostPhase hp_decode(opt_.profile, "sample: decode steps (host)");
  for (int64_t t = 1; !active.empty(); t++) {
    h_.check_cancel();
    const int64_t B = static_cast<int64_t>(active.size());
    sp.resize(B);
    std::vector<int32_t> bpos(3 * B);
    for (int64_t b = 0; b < B; b++) {
      const size_t r = active[b].r;
      const int64_t base = region[r] + Lp[r] + active[b].g * qs[r].max_tokens;
      reinterpret_cast<int32_t*>(H_(o_ids))[b] = res[r].tokens[active[b].g].back();
      reinterpret_cast<int64_t*>(H_(o_slots))[b] = base + t - 1;
      sp[b] = Span{static_cast<int32_t>(region[r]), static_cast<int32_t>(region[r] + Lp[r]), static_cast<int32_t>(base),
                   static_cast<int32_t>(base + t)};
      for (int ax = 0; ax < 3; ax++) bpos[ax * B + b] = static_cast<int32_t>(next[r] + t - 1);
    }
    std::memcpy(H_(o_spans), sp.data(), B * sizeof(Span));
    rope_mrope_table(reinterpret_cast<float*>(H_(o_cos)), reinterpret_cast<float*>(H_(o_sin)), bpos.data(),
                     tc().section, B, D, tc().theta, tc().mrope_interleaved);
    stage_params(active, t);
    CU_CHECK(cudaMemcpyAsync(ds, hs, total, cudaMemcpyHostToDevice, st_), "decode step inputs");
    auto step = [&] {
      cu::embedding_forward(xs.p, reinterpret_cast<const int32_t*>(D_(o_ids)), P(h_.embed_param()), B, H);
      text_forward(a, B, xs, reinterpret_cast<const float*>(D_(o_cos)), reinterpret_cast<const float*>(D_(o_sin)),
                   sp.data(), reinterpret_cast<const Span*>(D_(o_spans)), false, kc_.p, vc_.p, rows_total,
                   reinterpret_cast<const int64_t*>(D_(o_slots)));
      {
        Phase ph(opt_.profile, "  decode: head");
        cu::linear_forward(logits.p, a.hf.p, P(h_.head_param()), static_cast<const T*>(nullptr), B, H, V);
      }
      Phase ph(opt_.profile, "  decode: sampling");
      cu::sample_rows_multi(dtok.p, dlp.p, logits.p, reinterpret_cast<const float*>(D_(o_temp)),
                            reinterpret_cast<const uint64_t*>(D_(o_seed)), reinterpret_cast<const int64_t*>(D_(o_g)),
                            reinterpret_cast<const int64_t*>(D_(o_t)), B, V);
    };
    auto it = graphs ? graphs_.find(B) : graphs_.end();
    if (it != graphs_.end()) {
      CU_CHECK(cudaGraphLaunch(it->second, st_), "decode step (graph)");
      if (cu::op_profiling()) cu::op_mark("decode step (graph)");  // else the next op's mark takes the step's time
    } else {
      HostPhase hp(opt_.profile, "sample: eager step + capture");
      step();  // eager: also sizes every buffer, so a capture afterwards allocates nothing
      if (graphs && t >= 1) {
        cudaGraph_t gr = nullptr;
        bool ok = cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
        if (ok) {
          try {
            step();
          } catch (...) {
            ok = false;
          }
          ok = cudaStreamEndCapture(st_, &gr) == cudaSuccess && ok;
        }
        cudaGraphExec_t ex = nullptr;
        if (ok && gr) ok = cudaGraphInstantiate(&ex, gr, 0) == cudaSuccess;
        if (gr) cudaGraphDestroy(gr);
        cudaGetLastError();
        if (ok && ex) graphs_[B] = ex;  // used from the next step on (this step ran eagerly)
        else opt_.graphs = false;
      }
    }
    active = pick(active, t, true);
  }
  return res;
}

#define VQ_INST(T) \
  template std::vector<SampleResult> CudaModel<T>::sample_many(const std::vector<SampleRequest>&); \
  template void CudaModel<T>::merge_lora_weights();
VQ_INST(float)
VQ_INST(cu::bf16)

}  // namespace vq
