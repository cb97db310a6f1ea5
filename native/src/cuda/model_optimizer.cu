// The CUDA model's optimizer and host synchronisation: AdamW on the device (fp32 or bf16 moments) or with
// its state offloaded to pinned host memory, gradient zeroing, pull/push of weights and moments, and the
// bf16 hi/lo pairs of the LoRA adapters.
#include "collective.h"
#include "cuda/model_internal.cuh"

namespace vq {

template <typename T>
void CudaModel<T>::zero_grad() {
  DevGuard g(dev_, st_, opt_.sync_every_op);
  if (grads_.p) zero(grads_.p, grads_.n);
  if (lgrads_.p) zero(lgrads_.p, lgrads_.n);
  CU_CHECK(cudaStreamSynchronize(st_), "zero_grad");
}

template <typename T>
StepResult CudaModel<T>::step(const AdamWOptions& o) {
  HostPhase hp_whole(opt_.profile, "optimizer step (whole call)");
  DevGuard g(dev_, st_, opt_.sync_every_op);
  Phase ph(opt_.profile, "optimizer step");
  StepResult r;
  const bool lora = h_.lora_active();
  DArray<float>& gr = lora ? lgrads_ : grads_;
  if (!gr.p) {
    r.skipped = true;
    r.reason = "no gradients (call backward first)";
    return r;
  }
  const double ss = cu::sum_squares(gr.p, gr.n);
  r.grad_norm = std::sqrt(ss);
  if (!std::isfinite(ss)) {
    std::string where;
    if (lora) {
      for (const auto& li : h_.lora_slots()) {
        if (!cu::all_finite(gr.p + li.a_off, h_.lora_rank() * li.in)) { where = li.module + ".lora_A.weight"; break; }
        if (!cu::all_finite(gr.p + li.b_off, li.out * h_.lora_rank())) { where = li.module + ".lora_B.weight"; break; }
      }
    } else {
      for (const auto& pi : h_.param_table())
        if (!cu::all_finite(gr.p + pi.offset, pi.size)) { where = pi.name; break; }
    }
    r.skipped = true;
    r.reason = "non-finite gradient (NaN or Inf) in " + where;
    return r;
  }
  h_.count_step();
  float scale = 1.0f;
  if (o.max_grad_norm > 0.0f) {
    const double coef = o.max_grad_norm / (r.grad_norm + 1e-6);
    if (coef < 1.0) scale = static_cast<float>(coef);
  }
  if (!lora && opt_.offload_optimizer) {
    if (opt_.bf16_moments) step_offload<cu::bf16>(o, scale);
    else step_offload<float>(o, scale);
    CU_CHECK(cudaStreamSynchronize(st_), "step");
    host_stale_ = true;
    return r;
  }
  DArray<T>& w = lora ? lw_ : w_;
  DArray<float>& master = lora ? lmaster_ : master_;
  float* p32;
  cu::bf16* copy = nullptr;
  if constexpr (std::is_same<T, float>::value) {
    p32 = w.p;
  } else {
    if (!master.p) {  // the host copy is exact until the first step
      master.what = "the fp32 master weights";
      master.fit(w.n);
      const std::vector<float>& hp = h_.host_arrays(lora).values;
      CU_CHECK(cudaMemcpyAsync(master.p, hp.data(), w.n * sizeof(float), cudaMemcpyHostToDevice, st_), "master weights");
    }
    p32 = master.p;
    copy = w.p;
  }
  const bool bm = !lora && opt_.bf16_moments;
  if (bm) {
    if (!mb_.p) {
      mb_.what = vb_.what = "the AdamW moments (bf16)";
      zero(mb_.fit(w.n), w.n);
      zero(vb_.fit(w.n), w.n);
    }
  } else {
    DArray<float>& m = lora ? lm_ : m_;
    DArray<float>& v = lora ? lv_ : v_;
    if (!m.p) {
      m.what = v.what = "the AdamW moments";
      zero(m.fit(w.n), w.n);
      zero(v.fit(w.n), w.n);
    }
  }
  if (lora) {
    cu::adamw_update(p32, gr.p, lm_.p, lv_.p, w.n, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, h_.step_count(), scale, copy);
    split_lora();
  } else {
    for (const auto& pi : h_.param_table()) {
      const float wd = pi.shape.size() >= 2 ? o.weight_decay : 0.0f;
      cu::bf16* cp = copy ? copy + pi.offset : nullptr;
      if (bm)
        cu::adamw_update_bf16m(p32 + pi.offset, gr.p + pi.offset, mb_.p + pi.offset, vb_.p + pi.offset, pi.size, o.lr,
                               o.beta1, o.beta2, o.eps, wd, h_.step_count(), scale, cp);
      else
        cu::adamw_update(p32 + pi.offset, gr.p + pi.offset, m_.p + pi.offset, v_.p + pi.offset, pi.size, o.lr, o.beta1,
                         o.beta2, o.eps, wd, h_.step_count(), scale, cp);
    }
  }
  CU_CHECK(cudaStreamSynchronize(st_), "step");
  host_stale_ = true;
  return r;
}

template <typename T>
void CudaModel<T>::pull() {
  if (!host_stale_) return;
  DevGuard g(dev_, st_, opt_.sync_every_op);
  const bool lora = h_.lora_active();
  std::vector<float>& hp = h_.host_arrays(lora).values;
  const size_t n = hp.size();
  if (!lora && hmaster_.p) {
    std::memcpy(hp.data(), hmaster_.p, n * sizeof(float));
  } else {
    DArray<float>& master = lora ? lmaster_ : master_;
    if constexpr (std::is_same<T, float>::value) download(hp.data(), (lora ? lw_ : w_).p, static_cast<int64_t>(n));
    else if (master.p) download(hp.data(), master.p, static_cast<int64_t>(n));
  }
  std::vector<float>& hm = h_.host_arrays(lora).m;
  std::vector<float>& hv = h_.host_arrays(lora).v;
  auto from_bf16 = [&](std::vector<float>& dst, const cu::bf16* src) {
    for (size_t i = 0; i < n; i++) dst[i] = __bfloat162float(src[i]);
  };
  if (!lora && hm_.p) {
    hm.resize(n);
    hv.resize(n);
    if (opt_.bf16_moments) { from_bf16(hm, hm_.as<cu::bf16>()); from_bf16(hv, hv_.as<cu::bf16>()); }
    else { std::memcpy(hm.data(), hm_.p, n * sizeof(float)); std::memcpy(hv.data(), hv_.p, n * sizeof(float)); }
  } else if (!lora && mb_.p) {
    hm.resize(n);
    hv.resize(n);
    std::vector<cu::bf16> b(n);
    CU_CHECK(cudaMemcpyAsync(b.data(), mb_.p, n * sizeof(cu::bf16), cudaMemcpyDeviceToHost, st_), "download");
    CU_CHECK(cudaStreamSynchronize(st_), "download");
    from_bf16(hm, b.data());
    CU_CHECK(cudaMemcpyAsync(b.data(), vb_.p, n * sizeof(cu::bf16), cudaMemcpyDeviceToHost, st_), "download");
    CU_CHECK(cudaStreamSynchronize(st_), "download");
    from_bf16(hv, b.data());
  } else {
    DArray<float>& m = lora ? lm_ : m_;
    DArray<float>& v = lora ? lv_ : v_;
    if (m.p) {
      hm.resize(n);
      hv.resize(n);
      download(hm.data(), m.p, m.n);
      download(hv.data(), v.p, v.n);
    }
  }
  host_stale_ = false;
}

template <typename T>
void CudaModel<T>::pull_grads() {
  DevGuard g(dev_, st_, opt_.sync_every_op);
  const bool lora = h_.lora_active();
  DArray<float>& gr = lora ? lgrads_ : grads_;
  std::vector<float>& hg = h_.host_arrays(lora).grads;
  if (!gr.p) return;
  hg.resize(static_cast<size_t>(gr.n));
  download(hg.data(), gr.p, gr.n);
}

template <typename T>
void CudaModel<T>::push() {
  DevGuard g(dev_, st_, opt_.sync_every_op);
  h_.vision_weights_changed();  // the host's weights (any of them) replace the device's
  const std::vector<float>& hw = h_.host_arrays(false).values;
  const std::vector<float>& hl = h_.host_arrays(true).values;
  upload_f32(w_.p, hw.data(), w_.n);
  if (master_.p) CU_CHECK(cudaMemcpyAsync(master_.p, hw.data(), master_.n * sizeof(float), cudaMemcpyHostToDevice, st_), "push");
  if (hmaster_.p) std::memcpy(hmaster_.p, hw.data(), hw.size() * sizeof(float));
  if (lw_.p) upload_f32(lw_.p, hl.data(), lw_.n);
  if (lmaster_.p) CU_CHECK(cudaMemcpyAsync(lmaster_.p, hl.data(), lmaster_.n * sizeof(float), cudaMemcpyHostToDevice, st_), "push");
  split_lora();
  push_moments();
  CU_CHECK(cudaStreamSynchronize(st_), "push");
  host_stale_ = false;
}

template <typename T>
void CudaModel<T>::split_lora() {
  if constexpr (std::is_same<T, cu::bf16>::value) {
    if (!h_.lora_active() || !lmaster_.p || !opt_.lora_single_rounding) return;
    const int64_t R = h_.lora_rank();
    if (lsplit_off_.empty()) {
      int64_t off = 0;
      for (const auto& li : h_.lora_slots()) {
        lsplit_off_.push_back(off);
        off += 2 * R * li.in + 3 * li.out * R;
      }
      lsplit_.fit(off);
    }
    for (size_t k = 0; k < h_.lora_slots().size(); k++) {
      const LoraInfo& li = h_.lora_slots()[k];
      cu::bf16* A = lsplit_.p + lsplit_off_[k];
      cu::lora_split(A, A + 2 * R * li.in, lmaster_.p + li.a_off, lmaster_.p + li.b_off, li.in, li.out, R);
    }
  }
}

template <typename T>
void CudaModel<T>::push_moments() {
  const bool lora = h_.lora_active();
  const std::vector<float>& hm = h_.host_arrays(lora).m;
  const std::vector<float>& hv = h_.host_arrays(lora).v;
  if (hm.empty()) return;
  const int64_t n = static_cast<int64_t>(hm.size());
  if (!lora && opt_.offload_optimizer) {  // into the host state now if it exists, else at the first step
    if (hm_.p) copy_host_moments();
    return;
  }
  if (!lora && opt_.bf16_moments) {
    DArray<float> stage("moments staging");
    upload(stage, hm.data(), n);
    cu::to_bf16(mb_.fit(n), stage.p, n);
    CU_CHECK(cudaStreamSynchronize(st_), "moments");
    upload(stage, hv.data(), n);
    cu::to_bf16(vb_.fit(n), stage.p, n);
    CU_CHECK(cudaStreamSynchronize(st_), "moments");
    return;
  }
  DArray<float>& m = lora ? lm_ : m_;
  DArray<float>& v = lora ? lv_ : v_;
  upload(m, hm.data(), n);
  upload(v, hv.data(), n);
}

template <typename T>
void CudaModel<T>::copy_host_moments() {
  const HostArrays h = h_.host_arrays(false);
  const size_t n = h.values.size();
  if (h.m.size() != n) {
    std::memset(hm_.p, 0, hm_.bytes);
    std::memset(hv_.p, 0, hv_.bytes);
  } else if (opt_.bf16_moments) {
    for (size_t i = 0; i < n; i++) {
      hm_.as<cu::bf16>()[i] = __float2bfloat16(h.m[i]);
      hv_.as<cu::bf16>()[i] = __float2bfloat16(h.v[i]);
    }
  } else {
    std::memcpy(hm_.p, h.m.data(), n * sizeof(float));
    std::memcpy(hv_.p, h.v.data(), n * sizeof(float));
  }
}

// AdamW with the master weights and moments in pinned host memory: chunks of whole tensors (large
// ones split) go up, are updated on the GPU (writing the bf16 working copy in place) and come back
// on a second stream while the next chunk goes up.
template <typename T>
template <typename M>
void CudaModel<T>::step_offload(const AdamWOptions& o, float scale) {
  const int64_t n = w_.n;
  if (!hmaster_.p) {
    hmaster_.fit(n * sizeof(float), "the offloaded fp32 master weights");
    if (master_.p) {  // randomize() left it on the device
      CU_CHECK(cudaMemcpyAsync(hmaster_.p, master_.p, n * sizeof(float), cudaMemcpyDeviceToHost, st_), "offload");
      CU_CHECK(cudaStreamSynchronize(st_), "offload");
      master_.release();
    } else {
      std::memcpy(hmaster_.p, h_.host_arrays(false).values.data(), n * sizeof(float));
    }
    hm_.fit(n * sizeof(M), "the offloaded AdamW moments");
    hv_.fit(n * sizeof(M), "the offloaded AdamW moments");
    copy_host_moments();
  }
  struct Piece { int64_t off, size; float wd; };
  const int64_t chunk = 32ll << 20;
  std::vector<Piece> pieces;
  for (const auto& pi : h_.param_table())
    for (int64_t s = 0; s < pi.size; s += chunk)
      pieces.push_back({pi.offset + s, std::min(chunk, pi.size - s), pi.shape.size() >= 2 ? o.weight_decay : 0.0f});
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.off < b.off; });
  DArray<float> sp[2] = {DArray<float>("offload staging"), DArray<float>("offload staging")};
  DArray<M> sm[2] = {DArray<M>("offload staging"), DArray<M>("offload staging")};
  DArray<M> sv[2] = {DArray<M>("offload staging"), DArray<M>("offload staging")};
  cudaEvent_t done[2], freed[2];
  for (int b = 0; b < 2; b++) {
    sp[b].fit(chunk); sm[b].fit(chunk); sv[b].fit(chunk);
    CU_CHECK(cudaEventCreateWithFlags(&done[b], cudaEventDisableTiming), "offload");
    CU_CHECK(cudaEventCreateWithFlags(&freed[b], cudaEventDisableTiming), "offload");
    CU_CHECK(cudaEventRecord(freed[b], st2_), "offload");
  }
  float* hp = hmaster_.as<float>();
  M* hmm = hm_.as<M>();
  M* hvv = hv_.as<M>();
  size_t i = 0;
  int c = 0;
  while (i < pieces.size()) {
    const int64_t c0 = pieces[i].off;
    size_t j = i;
    while (j < pieces.size() && pieces[j].off + pieces[j].size - c0 <= chunk) j++;
    const int64_t cn = pieces[j - 1].off + pieces[j - 1].size - c0;
    const int b = c & 1;
    CU_CHECK(cudaStreamWaitEvent(st_, freed[b], 0), "offload");
    CU_CHECK(cudaMemcpyAsync(sp[b].p, hp + c0, cn * sizeof(float), cudaMemcpyHostToDevice, st_), "offload up");
    CU_CHECK(cudaMemcpyAsync(sm[b].p, hmm + c0, cn * sizeof(M), cudaMemcpyHostToDevice, st_), "offload up");
    CU_CHECK(cudaMemcpyAsync(sv[b].p, hvv + c0, cn * sizeof(M), cudaMemcpyHostToDevice, st_), "offload up");
    for (size_t k = i; k < j; k++) {
      const int64_t rel = pieces[k].off - c0;
      if constexpr (std::is_same<M, float>::value)
        cu::adamw_update(sp[b].p + rel, grads_.p + pieces[k].off, sm[b].p + rel, sv[b].p + rel, pieces[k].size, o.lr,
                         o.beta1, o.beta2, o.eps, pieces[k].wd, h_.step_count(), scale,
                         reinterpret_cast<cu::bf16*>(w_.p) + pieces[k].off);
      else
        cu::adamw_update_bf16m(sp[b].p + rel, grads_.p + pieces[k].off, sm[b].p + rel, sv[b].p + rel, pieces[k].size,
                               o.lr, o.beta1, o.beta2, o.eps, pieces[k].wd, h_.step_count(), scale,
                               reinterpret_cast<cu::bf16*>(w_.p) + pieces[k].off);
    }
    CU_CHECK(cudaEventRecord(done[b], st_), "offload");
    CU_CHECK(cudaStreamWaitEvent(st2_, done[b], 0), "offload");
    CU_CHECK(cudaMemcpyAsync(hp + c0, sp[b].p, cn * sizeof(float), cudaMemcpyDeviceToHost, st2_), "offload down");
    CU_CHECK(cudaMemcpyAsync(hmm + c0, sm[b].p, cn * sizeof(M), cudaMemcpyDeviceToHost, st2_), "offload down");
    CU_CHECK(cudaMemcpyAsync(hvv + c0, sv[b].p, cn * sizeof(M), cudaMemcpyDeviceToHost, st2_), "offload down");
    CU_CHECK(cudaEventRecord(freed[b], st2_), "offload");
    i = j;
    c++;
  }
  CU_CHECK(cudaStreamSynchronize(st2_), "offload");
  CU_CHECK(cudaStreamSynchronize(st_), "offload");
  for (int b = 0; b < 2; b++) {
    cudaEventDestroy(done[b]);
    cudaEventDestroy(freed[b]);
  }
}

// Data parallel: the gradient buffer summed over the ranks in buckets. NCCL reduces in place on the model's
// stream; a host collective (cpu) gets each bucket staged through host memory.
template <typename T>
void CudaModel<T>::all_reduce_grads(Collective& c, int64_t bucket) {
  DevGuard g(dev_, st_, opt_.sync_every_op);
  ensure_grads();  // a rank with no backward this update takes part with zeros
  DArray<float>& gr = h_.lora_active() ? lgrads_ : grads_;
  const int64_t n = static_cast<int64_t>(gr.n);
  std::vector<float> host;
  for (int64_t off = 0; off < n; off += bucket) {
    const int64_t m = std::min(bucket, n - off);
    if (c.device_buffers()) {
      c.all_reduce_sum(gr.p + off, m, st_);
      continue;
    }
    host.resize(static_cast<size_t>(m));
    CU_CHECK(cudaMemcpyAsync(host.data(), gr.p + off, m * sizeof(float), cudaMemcpyDeviceToHost, st_), "all_reduce stage");
    CU_CHECK(cudaStreamSynchronize(st_), "all_reduce stage");
    c.all_reduce_sum(host.data(), m, nullptr);
    CU_CHECK(cudaMemcpyAsync(gr.p + off, host.data(), m * sizeof(float), cudaMemcpyHostToDevice, st_), "all_reduce stage");
  }
  CU_CHECK(cudaStreamSynchronize(st_), "all_reduce");
}

#define VQ_INST(T) \
  template void CudaModel<T>::zero_grad(); \
  template StepResult CudaModel<T>::step(const AdamWOptions&); \
  template void CudaModel<T>::pull(); \
  template void CudaModel<T>::pull_grads(); \
  template void CudaModel<T>::all_reduce_grads(Collective&, int64_t); \
  template void CudaModel<T>::push(); \
  template void CudaModel<T>::split_lora(); \
  template void CudaModel<T>::push_moments(); \
  template void CudaModel<T>::copy_host_moments();
VQ_INST(float)
VQ_INST(cu::bf16)

}  // namespace vq
