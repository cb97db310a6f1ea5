// What differs between the Qwen-VL families on the GPU, each in one named place (model.cc is the reference;
// docs/engine.md lists the differences):
//   vision MLP      Qwen2-VL fc1 -> quick_gelu | gelu -> fc2; Qwen2.5-VL down(silu(gate) * up); Qwen3-VL
//                   linear_fc1 -> gelu_tanh -> linear_fc2
//   position embs   Qwen3-VL: a learned side x side table, bilinearly interpolated to each image's grid
//   q/k norms       Qwen3-VL: per-head RMSNorm of q and k before the rotary embedding
//   DeepStack       Qwen3-VL: the outputs of listed vision blocks, each through its own merger, added to the
//                   image rows of the first text layers' outputs
// (Qwen2.5-VL's RMSNorm and windows are read where they apply: vision_block, vision_prepare.)
#include "cuda/model_internal.cuh"

namespace vq {

namespace {
// torch.linspace(0, end, steps) in fp32, as ATen computes it (model.cc's linspace_at).
float linspace_at(float end, int64_t steps, int64_t i) {
  if (steps == 1) return 0.0f;
  const float step = end / static_cast<float>(steps - 1);
  return i < steps / 2 ? step * static_cast<float>(i) : end - step * static_cast<float>(steps - i - 1);
}
}  // namespace

// ---- vision MLP ----
template <typename T>
void CudaModel<T>::vision_mlp_forward(const VisionBlockW& B, CuVisionBlock<T>& A, int64_t N) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t NF = N * vc.mlp_hidden;
  lin_forward(B.fc1, A.fc1.fit(NF), A.ln2.p, N);
  switch (vc.act) {
    case VisionAct::silu:  // gated: down(silu(gate) * up)
      lin_forward(B.up, A.up.fit(NF), A.ln2.p, N);
      cu::swiglu_forward(A.act.fit(NF), A.fc1.p, A.up.p, NF);
      break;
    case VisionAct::quick_gelu: cu::quick_gelu_forward(A.act.fit(NF), A.fc1.p, NF); break;
    case VisionAct::gelu: cu::gelu_forward(A.act.fit(NF), A.fc1.p, NF); break;
    case VisionAct::gelu_tanh: cu::gelu_tanh_forward(A.act.fit(NF), A.fc1.p, NF); break;
  }
}

template <typename T>
void CudaModel<T>::vision_mlp_backward(const VisionBlockW& B, CuVisionBlock<T>& A, T* dln, const T* dact, T* dfc1,
                                       T* dup, int64_t N) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t NF = N * vc.mlp_hidden;
  switch (vc.act) {
    case VisionAct::silu:
      cu::swiglu_backward(dfc1, dup, dact, A.fc1.p, A.up.p, NF, false);
      lin_backward(B.fc1, dln, dfc1, A.ln2.p, N, false);
      lin_backward(B.up, dln, dup, A.ln2.p, N, true);
      return;
    case VisionAct::quick_gelu: cu::quick_gelu_backward(dfc1, dact, A.fc1.p, NF, false); break;
    case VisionAct::gelu: cu::gelu_backward(dfc1, dact, A.fc1.p, NF, false); break;
    case VisionAct::gelu_tanh: cu::gelu_tanh_backward(dfc1, dact, A.fc1.p, NF, false); break;
  }
  lin_backward(B.fc1, dln, dfc1, A.ln2.p, N, false);
}

// ---- Qwen3-VL learned position embeddings ----
// hw: hpos (N), then wpos (N); grid: the patch grid's h (N), then w (N) of each row's image; both in the
// tower's row order. The interpolation (rows and weights) is computed here as model.cc does, and goes up.
template <typename T>
void CudaModel<T>::pos_embed_prepare(CuActs<T>& a, const std::vector<int32_t>& hw, const std::vector<int32_t>& grid) {
  const int64_t N = a.N;
  const int S = static_cast<int>(std::lround(std::sqrt(static_cast<double>(h_.config().vision.num_pos))));
  std::vector<int32_t> idx(static_cast<size_t>(4 * N));
  std::vector<float> w(static_cast<size_t>(4 * N));
  for (int64_t r = 0; r < N; r++) {
    const float hi = linspace_at(static_cast<float>(S - 1), grid[r], hw[r]);
    const float wi = linspace_at(static_cast<float>(S - 1), grid[N + r], hw[N + r]);
    const int hf = static_cast<int>(hi), wf = static_cast<int>(wi);
    const int hc = std::min(hf + 1, S - 1), wc = std::min(wf + 1, S - 1);
    const float dh = hi - static_cast<float>(hf), dw = wi - static_cast<float>(wf);
    const int32_t ix[4] = {hf * S + wf, hf * S + wc, hc * S + wf, hc * S + wc};
    const float wt[4] = {(1.0f - dh) * (1.0f - dw), (1.0f - dh) * dw, dh * (1.0f - dw), dh * dw};
    for (int k = 0; k < 4; k++) {
      idx[r * 4 + k] = ix[k];
      w[r * 4 + k] = wt[k];
    }
  }
  upload(a.pidx, idx.data(), 4 * N);
  upload(a.pw, w.data(), 4 * N);
}

template <typename T>
void CudaModel<T>::pos_embed_forward(CuActs<T>& a, float* x) {
  cu::pos_embed_forward(x, P(h_.pos_embed_param()), a.pidx.p, a.pw.p, a.N, h_.config().vision.embed_dim);
}

template <typename T>
void CudaModel<T>::pos_embed_backward(CuActs<T>& a, const float* dx) {
  if (float* dpe = G(h_.pos_embed_param())) cu::pos_embed_backward(dpe, dx, a.pidx.p, a.pw.p, a.N, h_.config().vision.embed_dim);
}

// ---- Qwen3-VL q/k norms ----
template <typename T>
void CudaModel<T>::qk_norm_forward(const TextLayerW& L, CuTextLayer<T>& A, int64_t n) {
  const int64_t NH = tc().heads, KVH = tc().kv_heads, D = tc().head_dim;
  cu::rmsnorm_forward<T, T>(A.q.fit(n * NH * D), A.qrstd.fit(n * NH), A.qraw.p, P(L.qn), n * NH, D, tc().eps);
  cu::rmsnorm_forward<T, T>(A.k.fit(n * KVH * D), A.krstd.fit(n * KVH), A.kraw.p, P(L.kn), n * KVH, D, tc().eps);
}

template <typename T>
void CudaModel<T>::qk_norm_backward(const TextLayerW& L, CuTextLayer<T>& A, const T* dq, const T* dk, T* dqn, T* dkn,
                                    int64_t n) {
  const int64_t NH = tc().heads, KVH = tc().kv_heads, D = tc().head_dim;
  zero(dqn, n * NH * D);
  zero(dkn, n * KVH * D);
  cu::rmsnorm_backward<T, T>(dqn, G(L.qn), dq, A.qraw.p, P(L.qn), A.qrstd.p, n * NH, D);
  cu::rmsnorm_backward<T, T>(dkn, G(L.kn), dk, A.kraw.p, P(L.kn), A.krstd.p, n * KVH, D);
}

// ---- Qwen3-VL DeepStack ----
template <typename T>
void CudaModel<T>::deepstack_merge(CuActs<T>& a, size_t bi, const float* x) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t E = vc.embed_dim, mm = static_cast<int64_t>(vc.merge) * vc.merge, N = a.N, Nm = N / mm, M = E * mm,
                H = vc.out_hidden;
  for (size_t k = 0; k < vc.deepstack.size(); k++) {
    if (vc.deepstack[k] != static_cast<int>(bi)) continue;
    const MergerW& mw = h_.deepstack_mergers()[k];
    a.ds.emplace_back();
    CuMergerActs<T>& m = a.ds.back();
    m.x = x;
    m.block = static_cast<int>(bi);
    m.merger = static_cast<int>(k);
    const int64_t rows = mw.postshuffle ? Nm : N, C = mw.postshuffle ? M : E;
    if (mw.nb < 0) cu::rmsnorm_forward(m.ln.fit(N * E), m.rstd.fit(rows), x, P(mw.nw), rows, C, 1e-6f);
    else cu::layernorm_forward(m.ln.fit(N * E), m.mean.fit(rows), m.rstd.fit(rows), x, P(mw.nw), P(mw.nb), rows, C, 1e-6f);
    lin_forward(mw.fc1, m.h.fit(Nm * M), m.ln.p, Nm);
    cu::gelu_forward(m.hact.fit(Nm * M), m.h.p, Nm * M);
    lin_forward(mw.fc2, m.out.fit(Nm * H), m.hact.p, Nm);
  }
}

template <typename T>
void CudaModel<T>::deepstack_merge_backward(CuActs<T>& a, size_t bi, float* dx, T* dxT) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t E = vc.embed_dim, mm = static_cast<int64_t>(vc.merge) * vc.merge, N = a.N, Nm = N / mm, M = E * mm;
  for (CuMergerActs<T>& m : a.ds) {
    if (m.block != static_cast<int>(bi) || !m.dout.p) continue;
    const MergerW& mw = h_.deepstack_mergers()[m.merger];
    const int64_t rows = mw.postshuffle ? Nm : N, C = mw.postshuffle ? M : E;
    DArray<T> dhact("DeepStack gradients"), dh("DeepStack gradients"), dln("DeepStack gradients");
    lin_backward(mw.fc2, dhact.fit(Nm * M), m.dout.p, m.hact.p, Nm, false);
    cu::gelu_backward(dh.fit(Nm * M), dhact.p, m.h.p, Nm * M, false);
    lin_backward(mw.fc1, dln.fit(N * E), dh.p, m.ln.p, Nm, false);
    if (mw.nb < 0) cu::rmsnorm_backward(dx, G(mw.nw), dln.p, m.x, P(mw.nw), m.rstd.p, rows, C, dxT);
    else cu::layernorm_backward(dx, G(mw.nw), G(mw.nb), dln.p, m.x, P(mw.nw), m.mean.p, m.rstd.p, rows, C, dxT);
    m.dout.release();
  }
}

template <typename T>
void CudaModel<T>::deepstack_add(CuActs<T>& a, size_t li, float* x) {
  const int64_t H = tc().hidden;
  cu::add_rows(x, static_cast<const T*>(a.ds[li].out.p), a.img_rows.p, static_cast<int64_t>(a.img_rows_h.size()), H);
}

template <typename T>
void CudaModel<T>::deepstack_grad(CuActs<T>& a, size_t li, const float* dx) {
  const int64_t H = tc().hidden, ni = static_cast<int64_t>(a.img_rows_h.size());
  cu::gather_rows(a.ds[li].dout.fit(ni * H), dx, a.img_rows.p, ni, H);
}

#define VQ_INST(T)                                                                                                    \
  template void CudaModel<T>::vision_mlp_forward(const VisionBlockW&, CuVisionBlock<T>&, int64_t);                    \
  template void CudaModel<T>::vision_mlp_backward(const VisionBlockW&, CuVisionBlock<T>&, T*, const T*, T*, T*,       \
                                                  int64_t);                                                           \
  template void CudaModel<T>::pos_embed_prepare(CuActs<T>&, const std::vector<int32_t>&, const std::vector<int32_t>&); \
  template void CudaModel<T>::pos_embed_forward(CuActs<T>&, float*);                                                  \
  template void CudaModel<T>::pos_embed_backward(CuActs<T>&, const float*);                                           \
  template void CudaModel<T>::qk_norm_forward(const TextLayerW&, CuTextLayer<T>&, int64_t);                           \
  template void CudaModel<T>::qk_norm_backward(const TextLayerW&, CuTextLayer<T>&, const T*, const T*, T*, T*,        \
                                               int64_t);                                                              \
  template void CudaModel<T>::deepstack_merge(CuActs<T>&, size_t, const float*);                                      \
  template void CudaModel<T>::deepstack_merge_backward(CuActs<T>&, size_t, float*, T*);                               \
  template void CudaModel<T>::deepstack_add(CuActs<T>&, size_t, float*);                                              \
  template void CudaModel<T>::deepstack_grad(CuActs<T>&, size_t, const float*);
VQ_INST(float)
VQ_INST(cu::bf16)

}  // namespace vq
