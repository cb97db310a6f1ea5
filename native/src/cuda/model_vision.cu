// The vision tower on the GPU: patch inputs, 2D rotary tables and frame/window spans (vision_prepare), the
// blocks forward and backward, and the patch merger. Family differences are called from model_family.cu.
#include "cuda/model_internal.cuh"

namespace vq {

// Block bi: x = xprev + rprev (the previous block's MLP output; fused with the first norm) unless rprev
// is null (x is read as is); xmid = x + attention; mlp_out = the MLP's output (not added here).
template <typename T>
void CudaModel<T>::vision_block(size_t bi, CuVisionBlock<T>& A, CuActs<T>& a, float* x, const float* xprev,
                                const T* rprev, float* xmid, T* mlp_out) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, N = a.N;
  const VisionBlockW& B = h_.vision_blocks()[bi];
  const bool rms = B.n1b < 0;  // Qwen2.5-VL: RMSNorm (weight only)
  if (rms) cu::residual_rmsnorm_forward(A.ln1.fit(N * E), A.rstd1.fit(N), x, rprev ? xprev : x, rprev, P(B.n1w), N, E, 1e-6f);
  else if (rprev)
    cu::residual_layernorm_forward(A.ln1.fit(N * E), A.mean1.fit(N), A.rstd1.fit(N), x, xprev, rprev, P(B.n1w), P(B.n1b),
                                   N, E, 1e-6f);
  else
    cu::layernorm_forward(A.ln1.fit(N * E), A.mean1.fit(N), A.rstd1.fit(N), static_cast<const float*>(x), P(B.n1w),
                          P(B.n1b), N, E, 1e-6f);
  lin_forward(B.qkv, qkv_.fit(N * 3 * E), A.ln1.p, N);
  cu::split_qkv_rope(A.q.fit(N * E), A.k.fit(N * E), A.v.fit(N * E), qkv_.p, a.vcos.p, a.vsin.p, N, NH, hd);
  {
    Phase ph(opt_.profile, "  vision attention fwd");
    const bool windowed = windowed_block(a, bi);
    cu::attention_forward_dev(A.att.fit(N * E), A.lse.fit(N * NH), A.q.p, A.k.p, A.v.p,
                              windowed ? a.wspans.data() : a.vspans.data(), windowed ? a.dwspans.p : a.dvspans.p,
                              N, N, NH, NH, hd, opt_.attention);
  }
  lin_forward(B.proj, tmp_.fit(N * E), A.att.p, N);
  if (rms) cu::residual_rmsnorm_forward(A.ln2.fit(N * E), A.rstd2.fit(N), xmid, x, tmp_.p, P(B.n2w), N, E, 1e-6f);
  else
    cu::residual_layernorm_forward(A.ln2.fit(N * E), A.mean2.fit(N), A.rstd2.fit(N), xmid, x, tmp_.p, P(B.n2w), P(B.n2b),
                                   N, E, 1e-6f);
  vision_mlp_forward(B, A, N);
  if (mlp_out) lin_forward(B.fc2, mlp_out, A.act.p, N);
}

// The vision tower's inputs on the device: patches (each image's pixels copied straight from its
// buffer), the 2D rotary tables (computed on the device from the patch positions) and the frame spans.
// Called before any of the call's kernels is queued: a copy from pageable memory waits for the stream.
template <typename T>
void CudaModel<T>::vision_prepare(CuActs<T>& a, const std::vector<const Image*>& imgs) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, PD = vc.patch_dim();
  const int m = vc.merge;
  int64_t N = 0;
  for (const Image* im : imgs) N += static_cast<int64_t>(im->t) * im->h * im->w;
  a.N = N;
  std::vector<int32_t> hw(2 * N);    // hpos, then wpos
  std::vector<int32_t> grid(2 * N);  // the grid h, then w, of each row's image (Qwen3-VL position embeddings)
  a.vspans.resize(N);
  int64_t row = 0;
  for (const Image* im : imgs) {
    for (int ti = 0; ti < im->t; ti++) {
      const int64_t frame = row;
      for (int bh = 0; bh < im->h / m; bh++)
        for (int bw = 0; bw < im->w / m; bw++)
          for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++, row++) {
              hw[row] = bh * m + i;
              hw[N + row] = bw * m + j;
              grid[row] = im->h;
              grid[N + row] = im->w;
            }
      for (int64_t r = frame; r < row; r++) a.vspans[r] = Span{0, 0, static_cast<int32_t>(frame), static_cast<int32_t>(row)};
    }
  }
  // Qwen2.5-VL: windows of (window_size / patch / merge)^2 merged units per frame, padded at the bottom /
  // right edges (transformers' get_window_index; the CPU engine's vision_forward does the same)
  a.win_h.clear();
  a.wspans.clear();
  const int64_t mm = static_cast<int64_t>(m) * m;
  if (vc.window_size > 0) {
    const int vw = vc.window_size / m / vc.patch_size;
    a.wspans.resize(N);
    int64_t unit0 = 0, wrow = 0;
    for (const Image* im : imgs) {
      const int lh = im->h / m, lw = im->w / m;
      const int nwh = (lh + vw - 1) / vw, nww = (lw + vw - 1) / vw;
      for (int ti = 0; ti < im->t; ti++)
        for (int wh = 0; wh < nwh; wh++)
          for (int ww = 0; ww < nww; ww++) {
            const int64_t start = wrow;
            for (int i = wh * vw; i < std::min(lh, (wh + 1) * vw); i++)
              for (int j = ww * vw; j < std::min(lw, (ww + 1) * vw); j++) {
                a.win_h.push_back(unit0 + (static_cast<int64_t>(ti) * lh + i) * lw + j);
                wrow += mm;
              }
            for (int64_t r = start; r < wrow; r++) a.wspans[r] = Span{0, 0, static_cast<int32_t>(start), static_cast<int32_t>(wrow)};
          }
      unit0 += static_cast<int64_t>(im->t) * lh * lw;
    }
    std::vector<int32_t> hwp(2 * N), gridp(2 * N);
    for (size_t u = 0; u < a.win_h.size(); u++)
      for (int64_t r = 0; r < mm; r++) {
        const int64_t dst = static_cast<int64_t>(u) * mm + r, src = a.win_h[u] * mm + r;
        hwp[dst] = hw[src];
        hwp[N + dst] = hw[N + src];
        gridp[dst] = grid[src];
        gridp[N + dst] = grid[N + src];
      }
    hw = std::move(hwp);
    grid = std::move(gridp);
  }
  {
    T* patches = a.patches.fit(N * PD);
    DArray<float> stage("vision patches (fp32)");
    float* dst = std::is_same<T, float>::value ? reinterpret_cast<float*>(patches) : stage.fit(N * PD);
    int64_t off = 0;
    for (const Image* im : imgs) {
      const int64_t n = static_cast<int64_t>(im->pixels.size());
      VQ_CHECK(off + n <= N * PD, "vision input: an image has more pixel values than its grid needs");
      CU_CHECK(cudaMemcpyAsync(dst + off, im->pixels.data(), n * sizeof(float), cudaMemcpyHostToDevice, cu::stream()),
               "upload (pixels)");
      off += n;
    }
    if (!std::is_same<T, float>::value) cu::convert(patches, static_cast<const float*>(stage.p), N * PD);
  }
  if (!a.win_h.empty()) {  // patches into window order: row u*mm + r <- row win[u]*mm + r
    std::vector<int64_t> rows(static_cast<size_t>(N));
    for (size_t u = 0; u < a.win_h.size(); u++)
      for (int64_t r = 0; r < mm; r++) rows[u * mm + r] = a.win_h[u] * mm + r;
    DArray<int64_t> drows("window order");
    upload(drows, rows.data(), N);
    upload(a.win, a.win_h.data(), static_cast<int64_t>(a.win_h.size()));
    upload(a.dwspans, a.wspans.data(), N);
    DArray<T> ordered("vision patches");
    cu::gather_rows(ordered.fit(N * PD), static_cast<const T*>(a.patches.p), drows.p, N, PD);
    a.patches = std::move(ordered);
  }
  upload(a.dvspans, a.vspans.data(), N);
  if (h_.pos_embed_param() >= 0) pos_embed_prepare(a, hw, grid);
  DArray<int32_t> dhw("patch positions");
  upload(dhw, hw.data(), 2 * N);
  cu::rope_vision_table(a.vcos.fit(N * hd / 2), a.vsin.fit(N * hd / 2), dhw.p, dhw.p + N, N, hd, vc.theta);
}

// The tower over the prepared inputs (vision_prepare).
template <typename T>
void CudaModel<T>::vision_forward(CuActs<T>& a, bool keep) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t E = vc.embed_dim, PD = vc.patch_dim();
  const int m = vc.merge;
  const int64_t N = a.N;
  const bool full = keep && !a.ckpt;
  const size_t nb = h_.vision_blocks().size();
  a.vblocks.resize(keep ? nb : 0);
  a.ds.clear();
  // the patch embedding (Qwen3-VL: with a bias, plus the interpolated position embeddings), then the fp32
  // residual stream
  DArray<float> x0("vision activations");
  {
    T* pe = tmp_.fit(N * E);
    cu::linear_forward(pe, a.patches.p, P(h_.patch_param()), h_.patch_bias_param() >= 0 ? P(h_.patch_bias_param()) : static_cast<const T*>(nullptr),
                       N, PD, E);
    cu::convert(x0.fit(N * E), static_cast<const T*>(pe), N * E);
    if (h_.pos_embed_param() >= 0) pos_embed_forward(a, x0.p);
  }
  const float* xprev = nullptr;
  const T* rprev = nullptr;
  T* mlp = mlp_.fit(N * E);
  for (size_t bi = 0; bi < nb; bi++) {
    h_.check_cancel();
    CuVisionBlock<T>& A = full ? a.vblocks[bi] : vscr_;
    float* x;
    float* xm;
    if (keep) {
      if (bi == 0) a.vblocks[0].x = std::move(x0);
      x = a.vblocks[bi].x.fit(N * E);
      xm = full ? a.vblocks[bi].xmid.fit(N * E) : vscr_.xmid.fit(N * E);
    } else {
      x = xm = x0.p;
    }
    vision_block(bi, A, a, x, xprev, rprev, xm, mlp);
    xprev = xm;
    rprev = mlp;
    if (std::find(vc.deepstack.begin(), vc.deepstack.end(), static_cast<int>(bi)) != vc.deepstack.end()) {
      // DeepStack reads this block's output: materialised where the next block (or the merger) reads it
      float* out = keep ? (bi + 1 < nb ? a.vblocks[bi + 1].x.fit(N * E) : a.vxf.fit(N * E)) : x0.p;
      cu::residual_add(out, xm, mlp, N * E);
      deepstack_merge(a, bi, out);
      xprev = out;
      rprev = nullptr;
    }
  }
  const int64_t Nm = N / (m * m), M = E * m * m, H = vc.out_hidden;
  float* xf = keep ? a.vxf.fit(N * E) : x0.p;
  const bool rms = h_.merger_norm_bias_param() < 0;  // Qwen2.5-VL: the merger's ln_q is an RMSNorm
  if (nb == 0) {  // no blocks: the merger reads the patch embedding
    if (keep) a.vxf = std::move(x0);
    xf = keep ? a.vxf.p : x0.p;
    if (rms) cu::rmsnorm_forward(a.mln.fit(N * E), a.mrstd.fit(N), static_cast<const float*>(xf), P(h_.merger_norm_param()), N, E, 1e-6f);
    else
      cu::layernorm_forward(a.mln.fit(N * E), a.mmean.fit(N), a.mrstd.fit(N), static_cast<const float*>(xf), P(h_.merger_norm_param()),
                            P(h_.merger_norm_bias_param()), N, E, 1e-6f);
  } else if (rms) {
    cu::residual_rmsnorm_forward(a.mln.fit(N * E), a.mrstd.fit(N), xf, xprev, rprev, P(h_.merger_norm_param()), N, E, 1e-6f);
  } else {
    cu::residual_layernorm_forward(a.mln.fit(N * E), a.mmean.fit(N), a.mrstd.fit(N), xf, xprev, rprev, P(h_.merger_norm_param()),
                                   P(h_.merger_norm_bias_param()), N, E, 1e-6f);
  }
  lin_forward(h_.merger_fc1(), a.m0.fit(Nm * M), a.mln.p, Nm);
  cu::gelu_forward(a.m0act.fit(Nm * M), a.m0.p, Nm * M);
  if (a.win_h.empty()) {
    lin_forward(h_.merger_fc2(), a.img.fit(Nm * H), a.m0act.p, Nm);
  } else {  // back to the processor's order: img[win[u]] = merged unit u
    DArray<T> w("image embeddings");
    lin_forward(h_.merger_fc2(), w.fit(Nm * H), a.m0act.p, Nm);
    cu::scatter_rows(a.img.fit(Nm * H), static_cast<const T*>(w.p), a.win.p, Nm, H);
  }
}

template <typename T>
void CudaModel<T>::image_features(CuActs<T>& a, const std::vector<const Image*>& imgs, bool keep, const char* phase) {
  if (!vcache_.on() || !h_.vision_cacheable(keep)) {
    vision_prepare(a, imgs);
    Phase ph(opt_.profile, phase);
    vision_forward(a, keep && vision_trainable());
    return;
  }
  const VisionConfig& vc = h_.config().vision;
  const int64_t H = vc.out_hidden, mm = static_cast<int64_t>(vc.merge) * vc.merge;
  const uint64_t ver = h_.vision_version();
  const size_t n = imgs.size();
  std::vector<int64_t> rows(n), first(n);
  int64_t total = 0;
  for (size_t k = 0; k < n; k++) {
    rows[k] = static_cast<int64_t>(imgs[k]->t) * imgs[k]->h * imgs[k]->w / mm;
    first[k] = total;
    total += rows[k];
  }
  std::vector<const DArray<T>*> hit(n);
  std::vector<const Image*> missing;
  for (size_t k = 0; k < n; k++) {
    hit[k] = vcache_.find(*imgs[k], ver);
    if (!hit[k]) missing.push_back(imgs[k]);
  }
  DArray<T> fresh("image embeddings");
  if (!missing.empty()) {
    vision_prepare(a, missing);
    Phase ph(opt_.profile, phase);
    vision_forward(a, false);  // nothing of the tower is kept: no gradient goes into it in this call
    fresh = std::move(a.img);
  }
  Phase ph(opt_.profile, "vision features (cached + new)");
  T* img = a.img.fit(total * H);
  const auto d2d = [](T* dst, const T* src, int64_t count) {
    CU_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToDevice, cu::stream()), "vision feature cache");
  };
  for (size_t k = 0; k < n; k++)  // every hit before the first put(), which may evict
    if (hit[k]) d2d(img + first[k] * H, hit[k]->p, rows[k] * H);
  int64_t src = 0;
  for (size_t k = 0; k < n; k++) {
    if (hit[k]) continue;
    d2d(img + first[k] * H, fresh.p + src * H, rows[k] * H);
    DArray<T> kept("the vision feature cache");
    d2d(kept.fit(rows[k] * H), fresh.p + src * H, rows[k] * H);
    vcache_.put(*imgs[k], ver, std::move(kept), static_cast<size_t>(rows[k] * H) * sizeof(T));
    src += rows[k];
  }
}

template <typename T>
void CudaModel<T>::vision_backward(CuActs<T>& a, const T* dimg) {
  const VisionConfig& vc = h_.config().vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, F = vc.mlp_hidden, PD = vc.patch_dim();
  const int m = vc.merge;
  const int64_t N = a.N, Nm = N / (m * m), M = E * m * m;
  DArray<float> dx("vision gradients");
  DArray<T> dxT("vision gradients");
  zero(dx.fit(N * E), N * E);
  dxT.fit(N * E);
  {
    DArray<T> dm0act("vision gradients"), dm0("vision gradients"), dmln("vision gradients"), dwin("vision gradients");
    if (!a.win_h.empty()) {  // the image gradient into window order
      cu::gather_rows(dwin.fit(Nm * vc.out_hidden), dimg, a.win.p, Nm, vc.out_hidden);
      dimg = dwin.p;
    }
    lin_backward(h_.merger_fc2(), dm0act.fit(Nm * M), dimg, a.m0act.p, Nm, false);
    cu::gelu_backward(dm0.fit(Nm * M), dm0act.p, a.m0.p, Nm * M, false);
    lin_backward(h_.merger_fc1(), dmln.fit(N * E), dm0.p, a.mln.p, Nm, false);
    if (h_.merger_norm_bias_param() < 0)
      cu::rmsnorm_backward(dx.p, G(h_.merger_norm_param()), dmln.p, static_cast<const float*>(a.vxf.p), P(h_.merger_norm_param()), a.mrstd.p, N, E,
                           dxT.p);
    else
      cu::layernorm_backward(dx.p, G(h_.merger_norm_param()), G(h_.merger_norm_bias_param()), dmln.p, static_cast<const float*>(a.vxf.p), P(h_.merger_norm_param()),
                             a.mmean.p, a.mrstd.p, N, E, dxT.p);
  }
  DArray<T> dact("vision gradients"), dfc1("vision gradients"), dln("vision gradients"), datt("vision gradients"),
      dq("vision gradients"), dk("vision gradients"), dv("vision gradients"), dqr("vision gradients"),
      dkr("vision gradients"), dqkv("vision gradients"), dup("vision gradients");
  if (vc.act == VisionAct::silu) dup.fit(N * F);
  dact.fit(N * F); dfc1.fit(N * F); dln.fit(N * E); datt.fit(N * E); dq.fit(N * E); dk.fit(N * E); dv.fit(N * E);
  dqr.fit(N * E); dkr.fit(N * E); dqkv.fit(N * 3 * E);
  for (size_t bi = h_.vision_blocks().size(); bi-- > 0;) {
    h_.check_cancel();
    const VisionBlockW& B = h_.vision_blocks()[bi];
    const float* x = a.vblocks[bi].x.p;
    CuVisionBlock<T>* Ap = &a.vblocks[bi];
    if (a.ckpt) {  // recompute the block from its input
      vision_block(bi, vscr_, a, const_cast<float*>(x), nullptr, nullptr, vscr_.xmid.fit(N * E), nullptr);
      Ap = &vscr_;
    }
    CuVisionBlock<T>& A = *Ap;
    const bool rms = B.n1b < 0;
    deepstack_merge_backward(a, bi, dx.p, dxT.p);  // Qwen3-VL: the mergers that read this block's output
    lin_backward(B.fc2, dact.p, dxT.p, A.act.p, N, false);
    vision_mlp_backward(B, A, dln.p, dact.p, dfc1.p, dup.p, N);
    if (rms)
      cu::rmsnorm_backward(dx.p, G(B.n2w), dln.p, static_cast<const float*>(A.xmid.p), P(B.n2w), A.rstd2.p, N, E, dxT.p);
    else
      cu::layernorm_backward(dx.p, G(B.n2w), G(B.n2b), dln.p, static_cast<const float*>(A.xmid.p), P(B.n2w), A.mean2.p,
                             A.rstd2.p, N, E, dxT.p);
    lin_backward(B.proj, datt.p, dxT.p, A.att.p, N, false);
    zero(dq.p, N * E);
    zero(dk.p, N * E);
    zero(dv.p, N * E);
    {
      Phase ph(opt_.profile, "  vision attention bwd");
      const bool windowed = windowed_block(a, bi);
      cu::attention_backward_dev(dq.p, dk.p, dv.p, datt.p, A.q.p, A.k.p, A.v.p, A.att.p, A.lse.p,
                                 windowed ? a.wspans.data() : a.vspans.data(), windowed ? a.dwspans.p : a.dvspans.p,
                                 N, N, NH, NH, hd, opt_.attention);
    }
    cu::rope_backward(dqr.p, dq.p, a.vcos.p, a.vsin.p, N, NH, hd, false);
    cu::rope_backward(dkr.p, dk.p, a.vcos.p, a.vsin.p, N, NH, hd, false);
    cu::join_qkv(dqkv.p, dqr.p, dkr.p, dv.p, N, E);
    lin_backward(B.qkv, dln.p, dqkv.p, A.ln1.p, N, false);
    if (rms) cu::rmsnorm_backward(dx.p, G(B.n1w), dln.p, x, P(B.n1w), A.rstd1.p, N, E, dxT.p);
    else cu::layernorm_backward(dx.p, G(B.n1w), G(B.n1b), dln.p, x, P(B.n1w), A.mean1.p, A.rstd1.p, N, E, dxT.p);
  }
  if (h_.pos_embed_param() >= 0) pos_embed_backward(a, dx.p);
  float* dw = G(h_.patch_param());
  float* db = h_.patch_bias_param() >= 0 ? G(h_.patch_bias_param()) : nullptr;
  if (dw || db)
    cu::linear_backward(static_cast<T*>(nullptr), dw, db, dxT.p, a.patches.p, P(h_.patch_param()), N, PD, E);
}

#define VQ_INST(T) \
  template void CudaModel<T>::vision_block(size_t, CuVisionBlock<T>&, CuActs<T>&, float*, const float*, const T*, float*, T*); \
  template void CudaModel<T>::vision_prepare(CuActs<T>&, const std::vector<const Image*>&); \
  template void CudaModel<T>::vision_forward(CuActs<T>&, bool); \
  template void CudaModel<T>::image_features(CuActs<T>&, const std::vector<const Image*>&, bool, const char*); \
  template void CudaModel<T>::vision_backward(CuActs<T>&, const T*);
VQ_INST(float)
VQ_INST(cu::bf16)

}  // namespace vq
