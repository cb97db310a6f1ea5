// The text decoder on the GPU: its inputs (ids, image rows, spans, M-RoPE tables), the embeddings with image
// rows, the layers forward (with or without a KV cache) and backward.
#include "cuda/model_internal.cuh"

namespace vq {

template <typename T>
void CudaModel<T>::text_layer(size_t li, CuTextLayer<T>& A, int64_t n, float* x, const float* xprev, const T* rprev,
                              float* xmid, T* mlp_out, const float* cos, const float* sin, const Span* spans,
                              const Span* dspans, T* kcache, T* vcache, int64_t cache_rows, const int64_t* slots) {
  const int64_t H = tc().hidden, NH = tc().heads, KVH = tc().kv_heads, D = tc().head_dim, I = tc().inter, KVD = KVH * D;
  const TextLayerW& L = h_.text_layers()[li];
  // LoRA: each adapted linear's x A^T kept in A.lxa (slot k of 7: q k v o gate up down) for the backward; not
  // with a KV cache (sampling: no backward follows, and a decode step's eager run would size it for nothing)
  const int64_t R = !kcache && h_.lora_active() && h_.lora_enabled() ? h_.lora_rank() : 0;
  T* lxa = R ? A.lxa.fit(7 * n * R) : nullptr;
  auto xk = [&](const Lin& l, int k) { return lxa && l.lora >= 0 ? lxa + k * n * R : nullptr; };
  // Decode steps (a cache and few rows) are profiled op by op: with graphs off (opt_.graphs) these
  // phases say where a step's time goes (docs/cuda.md, Design, "Profile").
  const bool dec = opt_.profile && kcache && n <= 512;
  Phase ph_norm(dec, "  decode: norm 1");
  if (rprev)
    cu::residual_rmsnorm_forward(A.h1.fit(n * H), A.rstd1.fit(n), x, xprev, rprev, P(L.ln1), n, H, tc().eps);
  else
    cu::rmsnorm_forward(A.h1.fit(n * H), A.rstd1.fit(n), static_cast<const float*>(x), P(L.ln1), n, H, tc().eps);
  ph_norm.stop();
  Phase ph_qkv(dec, "  decode: q/k/v linear");
  if (tc().qk_norm) {  // Qwen3-VL: per-head RMSNorm of q and k before the rotary embedding
    lin_forward(L.q, A.qraw.fit(n * NH * D), A.h1.p, n, xk(L.q, 0));
    lin_forward(L.k, A.kraw.fit(n * KVD), A.h1.p, n, xk(L.k, 1));
    qk_norm_forward(L, A, n);
  } else {
    lin_forward(L.q, A.q.fit(n * NH * D), A.h1.p, n, xk(L.q, 0));
    lin_forward(L.k, A.k.fit(n * KVD), A.h1.p, n, xk(L.k, 1));
  }
  lin_forward(L.v, A.v.fit(n * KVD), A.h1.p, n, xk(L.v, 2));
  ph_qkv.stop();
  Phase ph_rope(dec, "  decode: rope + cache write");
  cu::rope_forward(A.q.p, A.q.p, cos, sin, n, NH, D);
  cu::rope_forward(A.k.p, A.k.p, cos, sin, n, KVH, D);
  A.att.fit(n * NH * D);
  A.lse.fit(n * NH);
  if (kcache) {
    T* kc = kcache + static_cast<int64_t>(li) * cache_rows * KVD;
    T* vc = vcache + static_cast<int64_t>(li) * cache_rows * KVD;
    cu::scatter_rows(kc, static_cast<const T*>(A.k.p), slots, n, KVD);
    cu::scatter_rows(vc, static_cast<const T*>(A.v.p), slots, n, KVD);
    ph_rope.stop();
    Phase ph(opt_.profile, dec ? "  decode: attention" : "  LM attention fwd (cache)");
    cu::attention_forward_dev(A.att.p, A.lse.p, A.q.p, kc, vc, spans, dspans, n, cache_rows, NH, KVH, D,
                              opt_.attention);
  } else {
    Phase ph(opt_.profile, "  LM attention fwd");
    cu::attention_forward_dev(A.att.p, A.lse.p, A.q.p, A.k.p, A.v.p, spans, dspans, n, n, NH, KVH, D, opt_.attention);
  }
  ph_rope.stop();
  Phase ph_o(dec, "  decode: o linear");
  lin_forward(L.o, tmp_.fit(n * H), A.att.p, n, xk(L.o, 3));
  ph_o.stop();
  Phase ph_n2(dec, "  decode: norm 2");
  cu::residual_rmsnorm_forward(A.h2.fit(n * H), A.rstd2.fit(n), xmid, x, tmp_.p, P(L.ln2), n, H, tc().eps);
  ph_n2.stop();
  Phase ph_gu(dec, "  decode: gate/up linear");
  lin_forward(L.gate, A.gate.fit(n * I), A.h2.p, n, xk(L.gate, 4));
  lin_forward(L.up, A.up.fit(n * I), A.h2.p, n, xk(L.up, 5));
  ph_gu.stop();
  Phase ph_act(dec, "  decode: swiglu");
  cu::swiglu_forward(A.act.fit(n * I), A.gate.p, A.up.p, n * I);
  ph_act.stop();
  Phase ph_down(dec, "  decode: down linear");
  if (mlp_out) lin_forward(L.down, mlp_out, A.act.p, n, xk(L.down, 6));
}

// x0: the embeddings (n, H) fp32; with keep it becomes layer 0's saved input. Leaves the final norm's
// output in a.hf (and the final residual in a.xf with keep).
template <typename T>
void CudaModel<T>::text_forward(CuActs<T>& a, int64_t n, DArray<float>& x0, const float* cos, const float* sin,
                                const Span* spans, const Span* dspans, bool keep, T* kcache, T* vcache,
                                int64_t cache_rows, const int64_t* slots, bool deepstack) {
  const int64_t H = tc().hidden;
  const bool full = keep && !a.ckpt;
  const size_t nl = h_.text_layers().size();
  a.layers.resize(keep ? nl : 0);
  const float* xprev = nullptr;
  const T* rprev = nullptr;
  T* mlp = mlp_.fit(n * H);
  float* x0p = x0.p;
  for (size_t li = 0; li < nl; li++) {
    h_.check_cancel();
    CuTextLayer<T>& A = full ? a.layers[li] : tscr_;
    float* x;
    float* xm;
    if (keep) {
      if (li == 0) a.layers[0].x = std::move(x0);
      x = a.layers[li].x.fit(n * H);
      xm = full ? a.layers[li].xmid.fit(n * H) : tscr_.xmid.fit(n * H);
    } else {
      x = xm = x0p;
    }
    text_layer(li, A, n, x, xprev, rprev, xm, mlp, cos, sin, spans, dspans, kcache, vcache, cache_rows, slots);
    xprev = xm;
    rprev = mlp;
    if (deepstack && deepstack_after(a, li)) {
      // Qwen3-VL: the layer's output, materialised where the next layer (or the final norm) reads it, plus
      // DeepStack feature li at the image rows
      float* out = keep ? (li + 1 < nl ? a.layers[li + 1].x.fit(n * H) : a.xf.fit(n * H)) : x0p;
      cu::residual_add(out, xm, mlp, n * H);
      deepstack_add(a, li, out);
      xprev = out;
      rprev = nullptr;
    }
  }
  if (nl == 0) {
    if (keep) { a.xf = std::move(x0); x0p = a.xf.p; }
    cu::rmsnorm_forward(a.hf.fit(n * H), a.rstdf.fit(n), static_cast<const float*>(x0p), P(h_.final_norm_param()), n, H, tc().eps);
    return;
  }
  float* xf = keep ? a.xf.fit(n * H) : x0p;
  cu::residual_rmsnorm_forward(a.hf.fit(n * H), a.rstdf.fit(n), xf, xprev, rprev, P(h_.final_norm_param()), n, H, tc().eps);
}

template <typename T>
void CudaModel<T>::text_backward(CuActs<T>& a, int64_t n, float* dx, T* dxT) {
  const int64_t H = tc().hidden, NH = tc().heads, KVH = tc().kv_heads, D = tc().head_dim, I = tc().inter, KVD = KVH * D;
  DArray<T> dact("text gradients"), dgate("text gradients"), dup("text gradients"), dh("text gradients"),
      datt("text gradients"), dq("text gradients"), dk("text gradients"), dv("text gradients"), dqr("text gradients"),
      dkr("text gradients");
  dact.fit(n * I); dgate.fit(n * I); dup.fit(n * I); dh.fit(n * H); datt.fit(n * NH * D);
  dq.fit(n * NH * D); dk.fit(n * KVD); dv.fit(n * KVD); dqr.fit(n * NH * D); dkr.fit(n * KVD);
  DArray<T> dqn("text gradients"), dkn("text gradients");  // Qwen3-VL: of q, k before their norms
  if (tc().qk_norm) { dqn.fit(n * NH * D); dkn.fit(n * KVD); }
  const bool ds_grads = vision_trainable();  // DeepStack features need gradients only for the tower
  const int64_t R = h_.lora_active() && h_.lora_enabled() ? h_.lora_rank() : 0;
  for (size_t li = h_.text_layers().size(); li-- > 0;) {
    h_.check_cancel();
    const TextLayerW& L = h_.text_layers()[li];
    const float* x = a.layers[li].x.p;
    CuTextLayer<T>* Ap = &a.layers[li];
    if (a.ckpt) {  // recompute the layer from its input (no MLP output needed)
      text_layer(li, tscr_, n, const_cast<float*>(x), nullptr, nullptr, tscr_.xmid.fit(n * H), nullptr, a.cos.p,
                 a.sin.p, a.spans.data(), a.dspans.p, nullptr, nullptr, 0, nullptr);
      Ap = &tscr_;
    }
    CuTextLayer<T>& A = *Ap;
    // the forward's x A^T per adapted linear (text_layer's slots); the checkpointed recompute above wrote them too,
    // except down's (it ran without an MLP output): that one is recomputed
    const T* lxa = R && A.lxa.n == 7 * n * R ? A.lxa.p : nullptr;
    auto xs = [&](const Lin& l, int k) -> const T* { return lxa && l.lora >= 0 ? lxa + k * n * R : nullptr; };
    if (ds_grads && deepstack_after(a, li)) deepstack_grad(a, li, dx);  // dx: of this layer's output
    lin_backward(L.down, dact.p, dxT, A.act.p, n, false, a.ckpt ? nullptr : xs(L.down, 6));
    cu::swiglu_backward(dgate.p, dup.p, dact.p, A.gate.p, A.up.p, n * I, false);
    lin_backward(L.gate, dh.p, dgate.p, A.h2.p, n, false, xs(L.gate, 4));
    lin_backward(L.up, dh.p, dup.p, A.h2.p, n, true, xs(L.up, 5));
    cu::rmsnorm_backward(dx, G(L.ln2), dh.p, static_cast<const float*>(A.xmid.p), P(L.ln2), A.rstd2.p, n, H, dxT);
    lin_backward(L.o, datt.p, dxT, A.att.p, n, false, xs(L.o, 3));
    zero(dq.p, n * NH * D);
    zero(dk.p, n * KVD);
    zero(dv.p, n * KVD);
    {
      Phase ph(opt_.profile, "  LM attention bwd");
      cu::attention_backward_dev(dq.p, dk.p, dv.p, datt.p, A.q.p, A.k.p, A.v.p, A.att.p, A.lse.p, a.spans.data(),
                                 a.dspans.p, n, n, NH, KVH, D, opt_.attention);
    }
    cu::rope_backward(dqr.p, dq.p, a.cos.p, a.sin.p, n, NH, D, false);
    cu::rope_backward(dkr.p, dk.p, a.cos.p, a.sin.p, n, KVH, D, false);
    if (tc().qk_norm) {
      qk_norm_backward(L, A, dqr.p, dkr.p, dqn.p, dkn.p, n);
      lin_backward(L.q, dh.p, dqn.p, A.h1.p, n, false, xs(L.q, 0));
      lin_backward(L.k, dh.p, dkn.p, A.h1.p, n, true, xs(L.k, 1));
    } else {
      lin_backward(L.q, dh.p, dqr.p, A.h1.p, n, false, xs(L.q, 0));
      lin_backward(L.k, dh.p, dkr.p, A.h1.p, n, true, xs(L.k, 1));
    }
    lin_backward(L.v, dh.p, dv.p, A.h1.p, n, true, xs(L.v, 2));
    cu::rmsnorm_backward(dx, G(L.ln1), dh.p, x, P(L.ln1), A.rstd1.p, n, H, dxT);
  }
}

// The LM's inputs of n packed rows on the device, before any kernel of the call is queued: the token
// ids (dids: as given, for the embedding; a.ids: -1 at image rows, for its backward), the image rows,
// the spans (from a.spans) and the M-RoPE tables (computed on the device from the positions).
template <typename T>
void CudaModel<T>::lm_prepare(CuActs<T>& a, DArray<int32_t>& dids, const std::vector<int32_t>& ids,
                              const std::vector<int32_t>& pos, int64_t n) {
  const int64_t D = tc().head_dim;
  upload(dids, ids.data(), n);
  if (!a.img_rows_h.empty()) {
    std::vector<int32_t> masked(ids);
    for (int64_t i : a.img_rows_h) masked[i] = -1;  // the embedding backward skips image rows
    upload(a.ids, masked.data(), n);
    upload(a.img_rows, a.img_rows_h.data(), static_cast<int64_t>(a.img_rows_h.size()));
  } else {
    upload(a.ids, ids.data(), n);
  }
  upload(a.dspans, a.spans.data(), n);
  DArray<int32_t> dpos("positions");
  upload(dpos, pos.data(), 3 * n);
  cu::rope_mrope_table(a.cos.fit(n * D / 2), a.sin.fit(n * D / 2), dpos.p, tc().section, n, D, tc().theta,
                       tc().mrope_interleaved);
}

// Embeddings of n packed rows (dids on the device) with the image rows a.img_rows replaced by a.img,
// into x (n, H) fp32.
template <typename T>
void CudaModel<T>::embed_prompts(CuActs<T>& a, DArray<float>& x, const int32_t* dids, int64_t n) {
  const int64_t H = tc().hidden;
  cu::embedding_forward(x.fit(n * H), dids, P(h_.embed_param()), n, H);
  if (!a.img_rows_h.empty())
    cu::scatter_rows(x.p, static_cast<const T*>(a.img.p), a.img_rows.p, static_cast<int64_t>(a.img_rows_h.size()), H);
}

#define VQ_INST(T) \
  template void CudaModel<T>::text_layer(size_t, CuTextLayer<T>&, int64_t, float*, const float*, const T*, float*, T*, const float*, const float*, const Span*, const Span*, T*, T*, int64_t, const int64_t*); \
  template void CudaModel<T>::text_forward(CuActs<T>&, int64_t, DArray<float>&, const float*, const float*, const Span*, const Span*, bool, T*, T*, int64_t, const int64_t*, bool); \
  template void CudaModel<T>::text_backward(CuActs<T>&, int64_t, float*, T*); \
  template void CudaModel<T>::lm_prepare(CuActs<T>&, DArray<int32_t>&, const std::vector<int32_t>&, const std::vector<int32_t>&, int64_t); \
  template void CudaModel<T>::embed_prompts(CuActs<T>&, DArray<float>&, const int32_t*, int64_t);
VQ_INST(float)
VQ_INST(cu::bf16)

}  // namespace vq
