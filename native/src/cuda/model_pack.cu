// One pack of a forward call on the GPU: requests packed into one sequence (shared prompt, completions after
// it), vision and text forward, the head over the completion rows and the log-probs; and its backward.
#include "cuda/model_internal.cuh"

namespace vq {

template <typename T>
void CudaModel<T>::forward_pack(CuActs<T>& a, const std::vector<ForwardRequest>& reqs, size_t i0, size_t i1,
                                std::vector<ForwardResult>& out, bool keep) {
  const int64_t H = tc().hidden, V = tc().vocab, D = tc().head_dim;
  a.ckpt = keep && opt_.checkpoint;
  std::vector<const Image*> imgs;
  for (size_t r = i0; r < i1; r++)
    for (const Image& im : reqs[r].prompt.images) imgs.push_back(&im);
  int64_t Tn = 0;
  for (size_t r = i0; r < i1; r++) {
    Tn += static_cast<int64_t>(reqs[r].prompt.ids.size());
    for (const auto& c : reqs[r].completions) Tn += static_cast<int64_t>(c.size());
  }
  a.rows = Tn;
  std::vector<int32_t> ids(Tn), pos(3 * Tn);
  std::vector<int64_t> head_rows;
  std::vector<int32_t> targets;
  std::vector<std::vector<int64_t>> starts(i1 - i0);
  std::vector<int64_t> offs(i1 - i0);
  a.spans.resize(Tn);
  a.img_rows_h.clear();
  a.comp_off.clear();
  a.comp_len.clear();
  a.req_ncomp.clear();
  int64_t off = 0;
  for (size_t r = i0; r < i1; r++) {
    const Prompt& p = reqs[r].prompt;
    const int64_t Lp = static_cast<int64_t>(p.ids.size());
    offs[r - i0] = off;
    std::vector<int32_t> ppos;
    const int32_t next = h_.rope_index(p, ppos);
    for (int64_t i = 0; i < Lp; i++) {
      ids[off + i] = p.ids[i];
      if (h_.is_visual(p.ids[i]) && !p.images.empty()) a.img_rows_h.push_back(off + i);
      for (int ax = 0; ax < 3; ax++) pos[ax * Tn + off + i] = ppos[ax * Lp + i];
      a.spans[off + i] = Span{0, 0, static_cast<int32_t>(off), static_cast<int32_t>(off + i + 1)};
    }
    int64_t row = off + Lp;
    auto& st = starts[r - i0];
    for (const auto& c : reqs[r].completions) {
      st.push_back(row);
      a.comp_off.push_back(static_cast<int64_t>(head_rows.size()));
      a.comp_len.push_back(static_cast<int64_t>(c.size()));
      for (size_t t = 0; t < c.size(); t++, row++) {
        ids[row] = c[t];
        for (int ax = 0; ax < 3; ax++) pos[ax * Tn + row] = next + static_cast<int32_t>(t);
        a.spans[row] = Span{static_cast<int32_t>(off), static_cast<int32_t>(off + Lp), static_cast<int32_t>(st.back()),
                            static_cast<int32_t>(row + 1)};
        head_rows.push_back(t == 0 ? off + Lp - 1 : st.back() + static_cast<int64_t>(t) - 1);
        targets.push_back(c[t]);
      }
    }
    a.req_ncomp.push_back(reqs[r].completions.size());
    off = row;
  }
  // every input goes up first (copies from pageable memory wait for the stream), then the kernels
  const int64_t R = static_cast<int64_t>(head_rows.size());
  DArray<int32_t> dids("token ids");
  lm_prepare(a, dids, ids, pos, Tn);
  if (R > 0) {
    upload(a.head_rows, head_rows.data(), R);
    upload(a.targets, targets.data(), R);
  }
  // the vision tower keeps its activations only when its gradients are wanted (backward_pack skips it
  // for a frozen tower: LoRA on the LM alone); then the rollout's cached features serve instead
  if (!imgs.empty()) image_features(a, imgs, keep, keep && vision_trainable() ? "vision forward (keep)" : "vision forward");
  DArray<float> x("text activations");
  embed_prompts(a, x, dids.p, Tn);
  {
    Phase ph(opt_.profile, keep ? "LM forward (keep)" : "LM forward");
    text_forward(a, Tn, x, a.cos.p, a.sin.p, a.spans.data(), a.dspans.p, keep, nullptr, nullptr, 0, nullptr, true);
  }
  Phase ph_head(opt_.profile, "head + log-probs forward");
  std::vector<float> hlp(R), hent(R);
  if (R > 0) {
    cu::gather_rows(a.hrows.fit(R * H), static_cast<const T*>(a.hf.p), a.head_rows.p, R, H);
    cu::linear_forward(a.logits.fit(R * V), a.hrows.p, P(h_.head_param()), static_cast<const T*>(nullptr), R, H, V);
    DArray<float> lp("log-probs"), ent("log-probs");
    cu::logprob_forward(lp.fit(R), ent.fit(R), a.lse.fit(R), a.logits.p, a.targets.p, R, V);
    download(hlp.data(), lp.p, R);
    download(hent.data(), ent.p, R);
  }
  size_t c = 0;
  for (size_t r = i0; r < i1; r++) {
    ForwardResult& o = out[r];
    const size_t G = reqs[r].completions.size();
    o.logprobs.resize(G);
    o.entropy.resize(G);
    for (size_t gi = 0; gi < G; gi++, c++) {
      o.logprobs[gi].assign(hlp.begin() + a.comp_off[c], hlp.begin() + a.comp_off[c] + a.comp_len[c]);
      o.entropy[gi].assign(hent.begin() + a.comp_off[c], hent.begin() + a.comp_off[c] + a.comp_len[c]);
    }
    if (reqs[r].return_logits) {
      const int64_t o0 = offs[r - i0], Lp = static_cast<int64_t>(reqs[r].prompt.ids.size());
      int64_t rows = Lp;
      for (const auto& cc : reqs[r].completions) rows += static_cast<int64_t>(cc.size());
      DArray<T> all("full logits (returnLogits)");
      all.fit(rows * V);
      cu::linear_forward(all.p, a.hf.p + o0 * H, P(h_.head_param()), static_cast<const T*>(nullptr), rows, H, V);
      const std::vector<float> hall = download_f32(all.p, rows * V);
      o.logits.resize(G);
      for (size_t gi = 0; gi < G; gi++) {
        const int64_t Lg = static_cast<int64_t>(reqs[r].completions[gi].size());
        const int64_t st = starts[r - i0][gi] - o0;
        auto& lg = o.logits[gi];
        lg.resize(static_cast<size_t>((Lp + Lg) * V));
        std::memcpy(lg.data(), hall.data(), Lp * V * sizeof(float));
        std::memcpy(lg.data() + Lp * V, hall.data() + st * V, Lg * V * sizeof(float));
      }
    }
  }
  if (!keep) a.logits.release();
  CU_CHECK(cudaStreamSynchronize(st_), "forward");
}

template <typename T>
void CudaModel<T>::backward_pack(CuActs<T>& a, const std::vector<std::vector<std::vector<float>>>& grads, size_t r0) {
  const int64_t H = tc().hidden, V = tc().vocab, Tn = a.rows;
  int64_t R = 0;
  for (int64_t l : a.comp_len) R += l;
  DArray<float> dx("text gradients");
  DArray<T> dxT("text gradients");
  zero(dx.fit(Tn * H), Tn * H);
  zero(dxT.fit(Tn * H), Tn * H);
  if (R > 0) {
    Phase ph(opt_.profile, "head backward");
    std::vector<float> dlogp(R, 0.0f);
    size_t c = 0;
    for (size_t k = 0; k < a.req_ncomp.size(); k++)
      for (size_t gi = 0; gi < a.req_ncomp[k]; gi++, c++) {
        const auto& gv = grads[r0 + k][gi];
        for (size_t t = 0; t < gv.size(); t++) dlogp[a.comp_off[c] + t] = gv[t];
      }
    DArray<float> ddlogp("log-prob gradients");
    upload(ddlogp, dlogp.data(), R);
    cu::logprob_backward(a.logits.p, ddlogp.p, a.logits.p, a.lse.p, a.targets.p, R, V);  // in place
    DArray<T> dhrows("head gradients"), dhf("head gradients");
    cu::linear_backward(dhrows.fit(R * H), G(h_.head_param()), static_cast<float*>(nullptr), a.logits.p,
                        a.hrows.p, P(h_.head_param()), R, H, V, false);
    a.logits.release();
    zero(dhf.fit(Tn * H), Tn * H);
    cu::scatter_add_rows(dhf.p, dhrows.p, a.head_rows.p, R, H);
    cu::rmsnorm_backward(dx.p, G(h_.final_norm_param()), dhf.p, static_cast<const float*>(a.xf.p), P(h_.final_norm_param()), a.rstdf.p, Tn, H,
                         dxT.p);
  }
  {
    Phase ph(opt_.profile, "LM backward");
    text_backward(a, Tn, dx.p, dxT.p);
  }
  if (float* dwte = G(h_.embed_param())) cu::embedding_backward(dwte, static_cast<const float*>(dx.p), a.ids.p, Tn, H);
  if (!a.img_rows_h.empty() && vision_trainable()) {
    const int64_t ni = static_cast<int64_t>(a.img_rows_h.size());
    DArray<T> dimg("vision gradients");
    cu::gather_rows(dimg.fit(ni * H), static_cast<const float*>(dx.p), a.img_rows.p, ni, H);
    dx.release();
    dxT.release();
    Phase ph(opt_.profile, "vision backward");
    vision_backward(a, dimg.p);
  }
}

#define VQ_INST(T) \
  template void CudaModel<T>::forward_pack(CuActs<T>&, const std::vector<ForwardRequest>&, size_t, size_t, std::vector<ForwardResult>&, bool); \
  template void CudaModel<T>::backward_pack(CuActs<T>&, const std::vector<std::vector<std::vector<float>>>&, size_t);
VQ_INST(float)
VQ_INST(cu::bf16)

}  // namespace vq
