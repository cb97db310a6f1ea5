// Qwen2-VL on the GPU: model.cc's forward/backward and sampler.cc's decode over the CUDA ops, with the
// same shared-prefix packing, spans, M-RoPE positions and head-row gathering (read model.cc first;
// this file mirrors it op for op). T = bf16 (weights' working copy and activations; fp32 master
// weights, gradients and AdamW moments) or float (everything fp32: the parity mode of the tests).
//
// Memory: the working weights live on the device from the start; gradients at the first backward;
// the fp32 master (bf16 mode) and the moments at the first step, so a model that only runs forward
// or sample (a reference model) holds nothing but its bf16 weights. With LoRA the base has no
// gradient, master or moments at all. The host Model keeps its fp32 copy for checkpoints: pull()
// brings the device's trained weights back before a save.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "activations.h"
#include "cuda/cuda_common.h"
#include "cuda/gemm.h"
#include "cuda/model_cuda.h"
#include "cuda/ops.h"

namespace vq {

using cu::DArray;

namespace {

struct DevGuard {
  int prev = -1;
  cudaStream_t prev_stream;
  DevGuard(int dev, cudaStream_t s) {
    cudaGetDevice(&prev);
    CU_CHECK(cudaSetDevice(dev), "cudaSetDevice");
    prev_stream = cu::stream();
    cu::set_stream(s);
  }
  ~DevGuard() {
    cu::set_stream(prev_stream);
    if (prev >= 0) cudaSetDevice(prev);
  }
};

template <typename U>
void upload(DArray<U>& d, const U* h, int64_t n) {
  d.fit(n);
  if (n) CU_CHECK(cudaMemcpyAsync(d.p, h, n * sizeof(U), cudaMemcpyHostToDevice, cu::stream()), "upload");
}

// host fp32 -> device T (through an fp32 staging buffer when T is bf16)
template <typename T>
void upload_f32(T* dst, const float* h, int64_t n) {
  if (!n) return;
  if constexpr (std::is_same<T, float>::value) {
    CU_CHECK(cudaMemcpyAsync(dst, h, n * sizeof(float), cudaMemcpyHostToDevice, cu::stream()), "upload");
  } else {
    const int64_t chunk = 64ll << 20;
    DArray<float> stage("upload staging");
    stage.fit(std::min(n, chunk));
    for (int64_t i = 0; i < n; i += chunk) {
      const int64_t m = std::min(chunk, n - i);
      CU_CHECK(cudaMemcpyAsync(stage.p, h + i, m * sizeof(float), cudaMemcpyHostToDevice, cu::stream()), "upload");
      cu::to_bf16(dst + i, stage.p, m);
    }
    CU_CHECK(cudaStreamSynchronize(cu::stream()), "upload");
  }
}

template <typename T>
std::vector<float> download_f32(const T* d, int64_t n) {
  std::vector<float> h(n);
  if (!n) return h;
  if constexpr (std::is_same<T, float>::value) {
    CU_CHECK(cudaMemcpyAsync(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost, cu::stream()), "download");
  } else {
    std::vector<cu::bf16> b(n);
    CU_CHECK(cudaMemcpyAsync(b.data(), d, n * sizeof(cu::bf16), cudaMemcpyDeviceToHost, cu::stream()), "download");
    CU_CHECK(cudaStreamSynchronize(cu::stream()), "download");
    for (int64_t i = 0; i < n; i++) h[i] = __bfloat162float(b[i]);
  }
  CU_CHECK(cudaStreamSynchronize(cu::stream()), "download");
  return h;
}

void download(float* h, const float* d, int64_t n) {
  if (!n) return;
  CU_CHECK(cudaMemcpyAsync(h, d, n * sizeof(float), cudaMemcpyDeviceToHost, cu::stream()), "download");
  CU_CHECK(cudaStreamSynchronize(cu::stream()), "download");
}

template <typename U>
void zero(U* p, int64_t n) {
  if (n) CU_CHECK(cudaMemsetAsync(p, 0, n * sizeof(U), cu::stream()), "memset");
}

__global__ void randomize_k(float* p, int64_t n, uint64_t seed, float scale, int64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = seed ^ (static_cast<uint64_t>(offset + i) * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = scale * (static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
}

}  // namespace

template <typename T>
struct CuVisionBlock {
  DArray<T> x, ln1, q, k, v, att, xmid, ln2, fc1, act;
  DArray<float> mean1, rstd1, lse, mean2, rstd2;
};
template <typename T>
struct CuTextLayer {
  DArray<T> x, h1, q, k, v, att, xmid, h2, gate, up, act;
  DArray<float> rstd1, lse, rstd2;
};
template <typename T>
struct CuActs {
  int64_t N = 0, rows = 0;
  DArray<T> patches;
  DArray<float> vcos, vsin;
  std::vector<Span> vspans;
  std::vector<CuVisionBlock<T>> vblocks;
  DArray<T> vxf, mln, m0, m0act, img;
  DArray<float> mmean, mrstd;
  DArray<int32_t> ids;  // -1 at image rows
  std::vector<int64_t> img_rows_h;
  DArray<int64_t> img_rows;
  DArray<float> cos, sin;
  std::vector<Span> spans;
  std::vector<CuTextLayer<T>> layers;
  DArray<T> xf, hf, hrows, logits;
  DArray<float> rstdf, lse;
  DArray<int64_t> head_rows;
  DArray<int32_t> targets;
  std::vector<int64_t> comp_off, comp_len;
};

template <typename T>
class CudaModel final : public DeviceModel {
 public:
  CudaModel(Model& h, int dev) : h_(h), dev_(dev) {
    int n = 0;
    CU_CHECK(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
    VQ_CHECK(dev >= 0 && dev < n, "device cuda:" << dev << " does not exist (" << n << " CUDA device"
                                                  << (n == 1 ? "" : "s") << " visible)");
    CU_CHECK(cudaSetDevice(dev), "cudaSetDevice");
    CU_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking), "cudaStreamCreate");
    {  // keep freed pool memory for reuse instead of returning it at every synchronisation
      cudaMemPool_t pool;
      CU_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
      uint64_t thr = UINT64_MAX;
      CU_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr), "cudaMemPoolSetAttribute");
    }
    DevGuard g(dev_, st_);
    w_.what = "the model's weights";
    w_.fit(static_cast<int64_t>(h_.params_.size()));
    upload_f32(w_.p, h_.params_.data(), w_.n);
    if (!h_.lora_.empty()) {
      lw_.what = "the LoRA adapters";
      lw_.fit(static_cast<int64_t>(h_.lparams_.size()));
      upload_f32(lw_.p, h_.lparams_.data(), lw_.n);
    }
    push_moments();
    CU_CHECK(cudaStreamSynchronize(st_), "loading the weights");
  }
  ~CudaModel() override {
    {
      DevGuard g(dev_, st_);
      saved_.clear();
      w_.release(); master_.release(); grads_.release(); m_.release(); v_.release();
      lw_.release(); lmaster_.release(); lgrads_.release(); lm_.release(); lv_.release();
      kc_.release(); vc_.release();
      cudaStreamSynchronize(st_);
    }
    cudaStreamDestroy(st_);
  }

  std::string name() const override {
    return "cuda:" + std::to_string(dev_) + (std::is_same<T, float>::value ? " (fp32)" : " (bf16)");
  }

  void randomize(uint64_t seed, float scale) {
    DevGuard g(dev_, st_);
    // fp32 values: into the weights (fp32 mode), into the master (bf16 full fine-tune: the step needs
    // it), or through a staging buffer (bf16 with LoRA: the base stays bf16 only)
    const bool keep_master = !std::is_same<T, float>::value && h_.lora_.empty();
    DArray<float> tmp("randomize staging");
    if (keep_master) master_.fit(w_.n);
    for (const ParamInfo& p : h_.info_) {
      float* dst;
      if constexpr (std::is_same<T, float>::value) dst = w_.p + p.offset;
      else dst = keep_master ? master_.p + p.offset : tmp.fit(p.size);
      const bool norm = p.shape.size() == 1 && p.name.find("bias") == std::string::npos;
      if (norm) cu::fill(dst, 1.0f, p.size);
      else {
        randomize_k<<<1024, 256, 0, cu::stream()>>>(dst, p.size, seed, scale, p.offset);
        CU_LAUNCHED("randomize");
      }
      if constexpr (!std::is_same<T, float>::value) cu::to_bf16(w_.p + p.offset, dst, p.size);
    }
    CU_CHECK(cudaStreamSynchronize(st_), "randomize");
    host_stale_ = true;
  }

  // ---- forward ----
  std::vector<ForwardResult> forward(const std::vector<ForwardRequest>& reqs, bool keep) override {
    DevGuard g(dev_, st_);
    if (keep) saved_.clear();
    std::vector<ForwardResult> out(reqs.size());
    std::vector<std::unique_ptr<CuActs<T>>> kept;
    for (size_t i = 0; i < reqs.size(); i++) {
      auto a = std::make_unique<CuActs<T>>();
      forward_one(*a, reqs[i], out[i], keep);
      if (keep) kept.push_back(std::move(a));
    }
    if (keep) saved_ = std::move(kept);
    return out;
  }

  void backward(const std::vector<std::vector<std::vector<float>>>& grads) override {
    VQ_CHECK(!saved_.empty(), "backward needs a forward with keepForBackward: true first");
    VQ_CHECK(grads.size() == saved_.size(), "backward got gradients for " << grads.size()
                                                << " requests but the last forward had " << saved_.size());
    for (size_t i = 0; i < grads.size(); i++) {
      VQ_CHECK(grads[i].size() == saved_[i]->comp_len.size(), "request " << i << ": gradients for " << grads[i].size()
                                                                         << " completions, the forward had "
                                                                         << saved_[i]->comp_len.size());
      for (size_t c = 0; c < grads[i].size(); c++)
        VQ_CHECK(static_cast<int64_t>(grads[i][c].size()) == saved_[i]->comp_len[c],
                 "request " << i << " completion " << c << ": " << grads[i][c].size() << " gradients for "
                            << saved_[i]->comp_len[c] << " tokens");
    }
    DevGuard g(dev_, st_);
    ensure_grads();
    try {
      for (size_t i = 0; i < grads.size(); i++) backward_one(*saved_[i], grads[i]);
    } catch (...) {
      saved_.clear();
      throw;
    }
    saved_.clear();
    CU_CHECK(cudaStreamSynchronize(st_), "backward");
  }

  void zero_grad() override {
    DevGuard g(dev_, st_);
    if (grads_.p) zero(grads_.p, grads_.n);
    if (lgrads_.p) zero(lgrads_.p, lgrads_.n);
    CU_CHECK(cudaStreamSynchronize(st_), "zero_grad");
  }

  StepResult step(const AdamWOptions& o) override {
    DevGuard g(dev_, st_);
    StepResult r;
    const bool lora = !h_.lora_.empty();
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
        for (const auto& li : h_.lora_) {
          if (!cu::all_finite(gr.p + li.a_off, h_.lora_rank_ * li.in)) { where = li.module + ".lora_A.weight"; break; }
          if (!cu::all_finite(gr.p + li.b_off, li.out * h_.lora_rank_)) { where = li.module + ".lora_B.weight"; break; }
        }
      } else {
        for (const auto& pi : h_.info_)
          if (!cu::all_finite(gr.p + pi.offset, pi.size)) { where = pi.name; break; }
      }
      r.skipped = true;
      r.reason = "non-finite gradient (NaN or Inf) in " + where;
      return r;
    }
    DArray<T>& w = lora ? lw_ : w_;
    DArray<float>& master = lora ? lmaster_ : master_;
    DArray<float>& m = lora ? lm_ : m_;
    DArray<float>& v = lora ? lv_ : v_;
    float* p32;
    cu::bf16* copy = nullptr;
    if constexpr (std::is_same<T, float>::value) {
      p32 = w.p;
    } else {
      if (!master.p) {  // the host copy is exact until the first step
        master.what = "the fp32 master weights";
        master.fit(w.n);
        const std::vector<float>& hp = lora ? h_.lparams_ : h_.params_;
        CU_CHECK(cudaMemcpyAsync(master.p, hp.data(), w.n * sizeof(float), cudaMemcpyHostToDevice, st_), "master weights");
      }
      p32 = master.p;
      copy = w.p;
    }
    if (!m.p) {
      m.what = "the AdamW moments";
      v.what = "the AdamW moments";
      m.fit(w.n);
      v.fit(w.n);
      zero(m.p, m.n);
      zero(v.p, v.n);
    }
    h_.step_++;
    float scale = 1.0f;
    if (o.max_grad_norm > 0.0f) {
      const double coef = o.max_grad_norm / (r.grad_norm + 1e-6);
      if (coef < 1.0) scale = static_cast<float>(coef);
    }
    if (lora) {
      cu::adamw_update(p32, gr.p, m.p, v.p, w.n, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, h_.step_, scale, copy);
    } else {
      for (const auto& pi : h_.info_)
        cu::adamw_update(p32 + pi.offset, gr.p + pi.offset, m.p + pi.offset, v.p + pi.offset, pi.size, o.lr, o.beta1,
                         o.beta2, o.eps, pi.shape.size() >= 2 ? o.weight_decay : 0.0f, h_.step_, scale,
                         copy ? copy + pi.offset : nullptr);
    }
    CU_CHECK(cudaStreamSynchronize(st_), "step");
    host_stale_ = true;
    return r;
  }

  void pull() override {
    if (!host_stale_) return;
    DevGuard g(dev_, st_);
    const bool lora = !h_.lora_.empty();
    std::vector<float>& hp = lora ? h_.lparams_ : h_.params_;
    DArray<float>& master = lora ? lmaster_ : master_;
    if constexpr (std::is_same<T, float>::value) download(hp.data(), (lora ? lw_ : w_).p, static_cast<int64_t>(hp.size()));
    else if (master.p) download(hp.data(), master.p, static_cast<int64_t>(hp.size()));
    DArray<float>& m = lora ? lm_ : m_;
    DArray<float>& v = lora ? lv_ : v_;
    if (m.p) {
      std::vector<float>& hm = lora ? h_.lm_ : h_.m_;
      std::vector<float>& hv = lora ? h_.lv_ : h_.v_;
      hm.resize(hp.size());
      hv.resize(hp.size());
      download(hm.data(), m.p, m.n);
      download(hv.data(), v.p, v.n);
    }
    host_stale_ = false;
  }

  void pull_grads() override {
    DevGuard g(dev_, st_);
    const bool lora = !h_.lora_.empty();
    DArray<float>& gr = lora ? lgrads_ : grads_;
    std::vector<float>& hg = lora ? h_.lgrads_ : h_.grads_;
    if (!gr.p) return;
    hg.resize(static_cast<size_t>(gr.n));
    download(hg.data(), gr.p, gr.n);
  }

  void push() override {
    DevGuard g(dev_, st_);
    upload_f32(w_.p, h_.params_.data(), w_.n);
    if (master_.p) CU_CHECK(cudaMemcpyAsync(master_.p, h_.params_.data(), master_.n * sizeof(float), cudaMemcpyHostToDevice, st_), "push");
    if (lw_.p) upload_f32(lw_.p, h_.lparams_.data(), lw_.n);
    if (lmaster_.p) CU_CHECK(cudaMemcpyAsync(lmaster_.p, h_.lparams_.data(), lmaster_.n * sizeof(float), cudaMemcpyHostToDevice, st_), "push");
    push_moments();
    CU_CHECK(cudaStreamSynchronize(st_), "push");
    host_stale_ = false;
  }

  SampleResult sample(const SampleRequest& q) override;

 private:
  Model& h_;
  int dev_;
  cudaStream_t st_ = nullptr;
  DArray<T> w_, lw_;
  DArray<float> master_, grads_, m_, v_, lmaster_, lgrads_, lm_, lv_;
  DArray<T> kc_{"the KV cache"}, vc_{"the KV cache"};
  std::vector<std::unique_ptr<CuActs<T>>> saved_;
  bool host_stale_ = false;
  DArray<T> xa_{"LoRA activations"};

  void push_moments() {
    const bool lora = !h_.lora_.empty();
    const std::vector<float>& hm = lora ? h_.lm_ : h_.m_;
    const std::vector<float>& hv = lora ? h_.lv_ : h_.v_;
    if (hm.empty()) return;
    DArray<float>& m = lora ? lm_ : m_;
    DArray<float>& v = lora ? lv_ : v_;
    upload(m, hm.data(), static_cast<int64_t>(hm.size()));
    upload(v, hv.data(), static_cast<int64_t>(hv.size()));
  }

  const T* P(int i) const { return w_.p + h_.info_[i].offset; }
  float* G(int i) { return (h_.lora_.empty() && grads_.p) ? grads_.p + h_.info_[i].offset : nullptr; }
  bool vision_trainable() const { return h_.vision_trainable(); }

  void ensure_grads() {
    if (!h_.lora_.empty()) {
      if (!lgrads_.p) { lgrads_.what = "the LoRA gradients"; lgrads_.fit(lw_.n); zero(lgrads_.p, lgrads_.n); }
    } else if (!grads_.p) {
      grads_.what = "the gradients (fp32, one per weight)";
      grads_.fit(w_.n);
      zero(grads_.p, grads_.n);
    }
  }

  void lin_forward(const Lin& l, T* out, const T* inp, int64_t n) {
    cu::linear_forward(out, inp, P(l.w), l.b >= 0 ? P(l.b) : static_cast<const T*>(nullptr), n, l.in, l.out);
    if (l.lora >= 0 && h_.lora_enabled_) {
      const LoraInfo& li = h_.lora_[l.lora];
      cu::lora_forward(out, xa_.fit(n * h_.lora_rank_), inp, lw_.p + li.a_off, lw_.p + li.b_off, n, l.in, l.out,
                       h_.lora_rank_, h_.lora_scale_);
    }
  }
  void lin_backward(const Lin& l, T* dinp, const T* dout, const T* inp, int64_t n) {
    float* dw = G(l.w);
    float* db = l.b >= 0 ? G(l.b) : nullptr;
    if (dinp || dw || db) cu::linear_backward(dinp, dw, db, dout, inp, P(l.w), n, l.in, l.out);
    if (l.lora >= 0 && h_.lora_enabled_) {
      const LoraInfo& li = h_.lora_[l.lora];
      const T* A = lw_.p + li.a_off;
      const T* B = lw_.p + li.b_off;
      T* xa = xa_.fit(n * h_.lora_rank_);
      cu::linear_forward(xa, inp, A, static_cast<const T*>(nullptr), n, l.in, h_.lora_rank_);
      float* dA = lgrads_.p ? lgrads_.p + li.a_off : nullptr;
      float* dB = lgrads_.p ? lgrads_.p + li.b_off : nullptr;
      cu::lora_backward(dinp, dA, dB, dout, inp, xa, A, B, n, l.in, l.out, h_.lora_rank_, h_.lora_scale_);
    }
  }

  void vision_forward(CuActs<T>& a, const Prompt& p, bool keep);
  void vision_backward(CuActs<T>& a, const T* dimg);
  void text_forward(CuActs<T>& a, int64_t n, T* x, const float* cos, const float* sin, const Span* spans, bool keep,
                    T* kcache, T* vcache, int64_t cache_rows, const int64_t* slots_dev);
  void text_backward(CuActs<T>& a, int64_t n, T* dx);
  void forward_one(CuActs<T>& a, const ForwardRequest& r, ForwardResult& out, bool keep);
  void backward_one(CuActs<T>& a, const std::vector<std::vector<float>>& g);
  // Prompt embeddings (Lp, H) with image rows replaced; fills a.ids/img rows (prompt part only).
};

// ---- vision tower ----
template <typename T>
void CudaModel<T>::vision_forward(CuActs<T>& a, const Prompt& p, bool keep) {
  const VisionConfig& vc = h_.cfg_.vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, F = vc.mlp_hidden, PD = vc.patch_dim();
  const int m = vc.merge;
  int64_t N = 0;
  for (const Image& im : p.images) N += static_cast<int64_t>(im.t) * im.h * im.w;
  a.N = N;
  std::vector<int32_t> hpos(N), wpos(N);
  a.vspans.resize(N);
  std::vector<float> pixels(static_cast<size_t>(N * PD));
  int64_t row = 0;
  for (const Image& im : p.images) {
    std::memcpy(pixels.data() + row * PD, im.pixels.data(), im.pixels.size() * sizeof(float));
    for (int ti = 0; ti < im.t; ti++) {
      const int64_t frame = row;
      for (int bh = 0; bh < im.h / m; bh++)
        for (int bw = 0; bw < im.w / m; bw++)
          for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++, row++) {
              hpos[row] = bh * m + i;
              wpos[row] = bw * m + j;
            }
      for (int64_t r = frame; r < row; r++) a.vspans[r] = Span{0, 0, static_cast<int32_t>(frame), static_cast<int32_t>(row)};
    }
  }
  upload_f32(a.patches.fit(N * PD), pixels.data(), N * PD);
  std::vector<float> cs(N * hd / 2), sn(N * hd / 2);
  rope_vision_table(cs.data(), sn.data(), hpos.data(), wpos.data(), N, hd, vc.theta);
  upload(a.vcos, cs.data(), N * hd / 2);
  upload(a.vsin, sn.data(), N * hd / 2);

  DArray<T> x("vision activations"), qkv("vision activations"), tmp("vision activations");
  x.fit(N * E);
  cu::linear_forward(x.p, a.patches.p, P(h_.patch_), static_cast<const T*>(nullptr), N, PD, E);
  a.vblocks.resize(keep ? h_.blocks_.size() : 1);
  qkv.fit(N * 3 * E);
  tmp.fit(N * E);
  for (size_t bi = 0; bi < h_.blocks_.size(); bi++) {
    h_.check_cancel();
    const VisionBlockW& B = h_.blocks_[bi];
    CuVisionBlock<T>& A = a.vblocks[keep ? bi : 0];
    if (keep) {
      A.x.fit(N * E);
      CU_CHECK(cudaMemcpyAsync(A.x.p, x.p, N * E * sizeof(T), cudaMemcpyDeviceToDevice, st_), "vision block input");
    }
    cu::layernorm_forward(A.ln1.fit(N * E), A.mean1.fit(N), A.rstd1.fit(N), x.p, P(B.n1w), P(B.n1b), N, E, 1e-6f);
    lin_forward(B.qkv, qkv.p, A.ln1.p, N);
    cu::split_qkv(A.q.fit(N * E), A.k.fit(N * E), A.v.fit(N * E), qkv.p, N, E);
    cu::rope_forward(A.q.p, A.q.p, a.vcos.p, a.vsin.p, N, NH, hd);
    cu::rope_forward(A.k.p, A.k.p, a.vcos.p, a.vsin.p, N, NH, hd);
    cu::attention_forward(A.att.fit(N * E), A.lse.fit(N * NH), A.q.p, A.k.p, A.v.p, a.vspans.data(), N, N, NH, NH, hd);
    lin_forward(B.proj, tmp.p, A.att.p, N);
    cu::residual_forward(x.p, x.p, tmp.p, N * E);
    if (keep) {
      A.xmid.fit(N * E);
      CU_CHECK(cudaMemcpyAsync(A.xmid.p, x.p, N * E * sizeof(T), cudaMemcpyDeviceToDevice, st_), "vision block mid");
    }
    cu::layernorm_forward(A.ln2.fit(N * E), A.mean2.fit(N), A.rstd2.fit(N), x.p, P(B.n2w), P(B.n2b), N, E, 1e-6f);
    lin_forward(B.fc1, A.fc1.fit(N * F), A.ln2.p, N);
    if (vc.quick_gelu) cu::quick_gelu_forward(A.act.fit(N * F), A.fc1.p, N * F);
    else cu::gelu_forward(A.act.fit(N * F), A.fc1.p, N * F);
    lin_forward(B.fc2, tmp.p, A.act.p, N);
    cu::residual_forward(x.p, x.p, tmp.p, N * E);
  }
  const int64_t Nm = N / (m * m), M = E * m * m, H = vc.out_hidden;
  a.vxf = std::move(x);
  cu::layernorm_forward(a.mln.fit(N * E), a.mmean.fit(N), a.mrstd.fit(N), a.vxf.p, P(h_.mln_w_), P(h_.mln_b_), N, E, 1e-6f);
  lin_forward(h_.m0_, a.m0.fit(Nm * M), a.mln.p, Nm);
  cu::gelu_forward(a.m0act.fit(Nm * M), a.m0.p, Nm * M);
  lin_forward(h_.m2_, a.img.fit(Nm * H), a.m0act.p, Nm);
}

template <typename T>
void CudaModel<T>::vision_backward(CuActs<T>& a, const T* dimg) {
  const VisionConfig& vc = h_.cfg_.vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, F = vc.mlp_hidden, PD = vc.patch_dim();
  const int m = vc.merge;
  const int64_t N = a.N, Nm = N / (m * m), M = E * m * m;
  DArray<T> dm0act("vision gradients"), dm0("vision gradients"), dmln("vision gradients"), dx("vision gradients");
  zero(dm0act.fit(Nm * M), Nm * M);
  zero(dm0.fit(Nm * M), Nm * M);
  zero(dmln.fit(N * E), N * E);
  zero(dx.fit(N * E), N * E);
  lin_backward(h_.m2_, dm0act.p, dimg, a.m0act.p, Nm);
  cu::gelu_backward(dm0.p, dm0act.p, a.m0.p, Nm * M);
  lin_backward(h_.m0_, dmln.p, dm0.p, a.mln.p, Nm);
  cu::layernorm_backward(dx.p, G(h_.mln_w_), G(h_.mln_b_), dmln.p, a.vxf.p, P(h_.mln_w_), a.mmean.p, a.mrstd.p, N, E);
  dm0act.release();
  dm0.release();
  dmln.release();
  DArray<T> dact("vision gradients"), dfc1("vision gradients"), dln("vision gradients"), datt("vision gradients"),
      dq("vision gradients"), dk("vision gradients"), dv("vision gradients"), dqr("vision gradients"),
      dkr("vision gradients"), dqkv("vision gradients");
  dact.fit(N * F); dfc1.fit(N * F); dln.fit(N * E); datt.fit(N * E); dq.fit(N * E); dk.fit(N * E); dv.fit(N * E);
  dqr.fit(N * E); dkr.fit(N * E); dqkv.fit(N * 3 * E);
  for (size_t bi = h_.blocks_.size(); bi-- > 0;) {
    h_.check_cancel();
    const VisionBlockW& B = h_.blocks_[bi];
    CuVisionBlock<T>& A = a.vblocks[bi];
    zero(dact.p, N * F);
    lin_backward(B.fc2, dact.p, dx.p, A.act.p, N);
    zero(dfc1.p, N * F);
    if (vc.quick_gelu) cu::quick_gelu_backward(dfc1.p, dact.p, A.fc1.p, N * F);
    else cu::gelu_backward(dfc1.p, dact.p, A.fc1.p, N * F);
    zero(dln.p, N * E);
    lin_backward(B.fc1, dln.p, dfc1.p, A.ln2.p, N);
    cu::layernorm_backward(dx.p, G(B.n2w), G(B.n2b), dln.p, A.xmid.p, P(B.n2w), A.mean2.p, A.rstd2.p, N, E);
    zero(datt.p, N * E);
    lin_backward(B.proj, datt.p, dx.p, A.att.p, N);
    zero(dq.p, N * E);
    zero(dk.p, N * E);
    zero(dv.p, N * E);
    cu::attention_backward(dq.p, dk.p, dv.p, datt.p, A.q.p, A.k.p, A.v.p, A.att.p, A.lse.p, a.vspans.data(), N, N, NH, NH, hd);
    zero(dqr.p, N * E);
    zero(dkr.p, N * E);
    cu::rope_backward(dqr.p, dq.p, a.vcos.p, a.vsin.p, N, NH, hd);
    cu::rope_backward(dkr.p, dk.p, a.vcos.p, a.vsin.p, N, NH, hd);
    cu::join_qkv(dqkv.p, dqr.p, dkr.p, dv.p, N, E);
    zero(dln.p, N * E);
    lin_backward(B.qkv, dln.p, dqkv.p, A.ln1.p, N);
    cu::layernorm_backward(dx.p, G(B.n1w), G(B.n1b), dln.p, A.x.p, P(B.n1w), A.mean1.p, A.rstd1.p, N, E);
  }
  if (float* dw = G(h_.patch_))
    cu::linear_backward(static_cast<T*>(nullptr), dw, static_cast<float*>(nullptr), dx.p, a.patches.p, P(h_.patch_), N, PD, E);
}

// ---- language model ----
template <typename T>
void CudaModel<T>::text_forward(CuActs<T>& a, int64_t n, T* x, const float* cos, const float* sin, const Span* spans,
                                bool keep, T* kcache, T* vcache, int64_t cache_rows, const int64_t* slots_dev) {
  const TextConfig& tc = h_.cfg_.text;
  const int64_t H = tc.hidden, NH = tc.heads, KVH = tc.kv_heads, D = tc.head_dim, I = tc.inter, KVD = KVH * D;
  a.layers.resize(keep ? h_.layers_.size() : 1);
  DArray<T> tmp("text activations");
  tmp.fit(n * H);
  for (size_t li = 0; li < h_.layers_.size(); li++) {
    h_.check_cancel();
    const TextLayerW& L = h_.layers_[li];
    CuTextLayer<T>& A = a.layers[keep ? li : 0];
    if (keep) {
      A.x.fit(n * H);
      CU_CHECK(cudaMemcpyAsync(A.x.p, x, n * H * sizeof(T), cudaMemcpyDeviceToDevice, st_), "layer input");
    }
    cu::rmsnorm_forward(A.h1.fit(n * H), A.rstd1.fit(n), x, P(L.ln1), n, H, tc.eps);
    lin_forward(L.q, A.q.fit(n * NH * D), A.h1.p, n);
    lin_forward(L.k, A.k.fit(n * KVD), A.h1.p, n);
    lin_forward(L.v, A.v.fit(n * KVD), A.h1.p, n);
    cu::rope_forward(A.q.p, A.q.p, cos, sin, n, NH, D);
    cu::rope_forward(A.k.p, A.k.p, cos, sin, n, KVH, D);
    A.att.fit(n * NH * D);
    A.lse.fit(n * NH);
    if (kcache) {
      T* kc = kcache + static_cast<int64_t>(li) * cache_rows * KVD;
      T* vc = vcache + static_cast<int64_t>(li) * cache_rows * KVD;
      cu::scatter_rows(kc, A.k.p, slots_dev, n, KVD);
      cu::scatter_rows(vc, A.v.p, slots_dev, n, KVD);
      cu::attention_forward(A.att.p, A.lse.p, A.q.p, kc, vc, spans, n, cache_rows, NH, KVH, D);
    } else {
      cu::attention_forward(A.att.p, A.lse.p, A.q.p, A.k.p, A.v.p, spans, n, n, NH, KVH, D);
    }
    lin_forward(L.o, tmp.p, A.att.p, n);
    cu::residual_forward(x, x, tmp.p, n * H);
    if (keep) {
      A.xmid.fit(n * H);
      CU_CHECK(cudaMemcpyAsync(A.xmid.p, x, n * H * sizeof(T), cudaMemcpyDeviceToDevice, st_), "layer mid");
    }
    cu::rmsnorm_forward(A.h2.fit(n * H), A.rstd2.fit(n), x, P(L.ln2), n, H, tc.eps);
    lin_forward(L.gate, A.gate.fit(n * I), A.h2.p, n);
    lin_forward(L.up, A.up.fit(n * I), A.h2.p, n);
    cu::swiglu_forward(A.act.fit(n * I), A.gate.p, A.up.p, n * I);
    lin_forward(L.down, tmp.p, A.act.p, n);
    cu::residual_forward(x, x, tmp.p, n * H);
  }
}

template <typename T>
void CudaModel<T>::text_backward(CuActs<T>& a, int64_t n, T* dx) {
  const TextConfig& tc = h_.cfg_.text;
  const int64_t H = tc.hidden, NH = tc.heads, KVH = tc.kv_heads, D = tc.head_dim, I = tc.inter, KVD = KVH * D;
  DArray<T> dact("text gradients"), dgate("text gradients"), dup("text gradients"), dh("text gradients"),
      datt("text gradients"), dq("text gradients"), dk("text gradients"), dv("text gradients"), dqr("text gradients"),
      dkr("text gradients");
  dact.fit(n * I); dgate.fit(n * I); dup.fit(n * I); dh.fit(n * H); datt.fit(n * NH * D);
  dq.fit(n * NH * D); dk.fit(n * KVD); dv.fit(n * KVD); dqr.fit(n * NH * D); dkr.fit(n * KVD);
  for (size_t li = h_.layers_.size(); li-- > 0;) {
    h_.check_cancel();
    const TextLayerW& L = h_.layers_[li];
    CuTextLayer<T>& A = a.layers[li];
    zero(dact.p, n * I);
    lin_backward(L.down, dact.p, dx, A.act.p, n);
    zero(dgate.p, n * I);
    zero(dup.p, n * I);
    cu::swiglu_backward(dgate.p, dup.p, dact.p, A.gate.p, A.up.p, n * I);
    zero(dh.p, n * H);
    lin_backward(L.gate, dh.p, dgate.p, A.h2.p, n);
    lin_backward(L.up, dh.p, dup.p, A.h2.p, n);
    cu::rmsnorm_backward(dx, G(L.ln2), dh.p, A.xmid.p, P(L.ln2), A.rstd2.p, n, H);
    zero(datt.p, n * NH * D);
    lin_backward(L.o, datt.p, dx, A.att.p, n);
    zero(dq.p, n * NH * D);
    zero(dk.p, n * KVD);
    zero(dv.p, n * KVD);
    cu::attention_backward(dq.p, dk.p, dv.p, datt.p, A.q.p, A.k.p, A.v.p, A.att.p, A.lse.p, a.spans.data(), n, n, NH,
                           KVH, D);
    zero(dqr.p, n * NH * D);
    zero(dkr.p, n * KVD);
    cu::rope_backward(dqr.p, dq.p, a.cos.p, a.sin.p, n, NH, D);
    cu::rope_backward(dkr.p, dk.p, a.cos.p, a.sin.p, n, KVH, D);
    zero(dh.p, n * H);
    lin_backward(L.q, dh.p, dqr.p, A.h1.p, n);
    lin_backward(L.k, dh.p, dkr.p, A.h1.p, n);
    lin_backward(L.v, dh.p, dv.p, A.h1.p, n);
    cu::rmsnorm_backward(dx, G(L.ln1), dh.p, A.x.p, P(L.ln1), A.rstd1.p, n, H);
  }
}

template <typename T>
void CudaModel<T>::forward_one(CuActs<T>& a, const ForwardRequest& r, ForwardResult& out, bool keep) {
  const TextConfig& tc = h_.cfg_.text;
  const int64_t H = tc.hidden, V = tc.vocab, D = tc.head_dim;
  const Prompt& p = r.prompt;
  const int64_t Lp = static_cast<int64_t>(p.ids.size());
  const int64_t G = static_cast<int64_t>(r.completions.size());
  int64_t Tn = Lp;
  for (const auto& c : r.completions) Tn += static_cast<int64_t>(c.size());
  a.rows = Tn;
  if (!p.images.empty()) vision_forward(a, p, keep);

  std::vector<int32_t> ids(p.ids.begin(), p.ids.end());
  for (const auto& c : r.completions) ids.insert(ids.end(), c.begin(), c.end());
  upload(a.ids, ids.data(), Tn);
  DArray<T> x("text activations");
  x.fit(Tn * H);
  cu::embedding_forward(x.p, a.ids.p, P(h_.embed_), Tn, H);
  a.img_rows_h.clear();
  for (int64_t i = 0; i < Lp; i++)
    if (p.ids[i] == h_.cfg_.image_token_id && !p.images.empty()) a.img_rows_h.push_back(i);
  if (!a.img_rows_h.empty()) {
    upload(a.img_rows, a.img_rows_h.data(), static_cast<int64_t>(a.img_rows_h.size()));
    cu::scatter_rows(x.p, a.img.p, a.img_rows.p, static_cast<int64_t>(a.img_rows_h.size()), H);
    for (int64_t i : a.img_rows_h) ids[i] = -1;
    upload(a.ids, ids.data(), Tn);
  }

  std::vector<int32_t> ppos;
  const int32_t next = h_.rope_index(p, ppos);
  std::vector<int32_t> pos(3 * Tn);
  std::vector<int64_t> start(G);
  a.spans.resize(Tn);
  for (int64_t i = 0; i < Lp; i++) {
    for (int ax = 0; ax < 3; ax++) pos[ax * Tn + i] = ppos[ax * Lp + i];
    a.spans[i] = Span{0, 0, 0, static_cast<int32_t>(i + 1)};
  }
  int64_t row = Lp;
  for (int64_t g = 0; g < G; g++) {
    start[g] = row;
    for (size_t t = 0; t < r.completions[g].size(); t++, row++) {
      for (int ax = 0; ax < 3; ax++) pos[ax * Tn + row] = next + static_cast<int32_t>(t);
      a.spans[row] = Span{0, static_cast<int32_t>(Lp), static_cast<int32_t>(start[g]), static_cast<int32_t>(row + 1)};
    }
  }
  {
    std::vector<float> cs(Tn * D / 2), sn(Tn * D / 2);
    rope_mrope_table(cs.data(), sn.data(), pos.data(), tc.section, Tn, D, tc.theta);
    upload(a.cos, cs.data(), Tn * D / 2);
    upload(a.sin, sn.data(), Tn * D / 2);
  }
  text_forward(a, Tn, x.p, a.cos.p, a.sin.p, a.spans.data(), keep, nullptr, nullptr, 0, nullptr);
  cu::rmsnorm_forward(a.hf.fit(Tn * H), a.rstdf.fit(Tn), x.p, P(h_.norm_), Tn, H, tc.eps);
  if (keep) a.xf = std::move(x);

  std::vector<int64_t> head_rows;
  std::vector<int32_t> targets;
  a.comp_off.assign(G, 0);
  a.comp_len.assign(G, 0);
  for (int64_t g = 0; g < G; g++) {
    a.comp_off[g] = static_cast<int64_t>(head_rows.size());
    a.comp_len[g] = static_cast<int64_t>(r.completions[g].size());
    for (size_t t = 0; t < r.completions[g].size(); t++) {
      head_rows.push_back(t == 0 ? Lp - 1 : start[g] + static_cast<int64_t>(t) - 1);
      targets.push_back(r.completions[g][t]);
    }
  }
  const int64_t R = static_cast<int64_t>(head_rows.size());
  out.logprobs.resize(G);
  out.entropy.resize(G);
  if (R > 0) {
    upload(a.head_rows, head_rows.data(), R);
    upload(a.targets, targets.data(), R);
    cu::gather_rows(a.hrows.fit(R * H), a.hf.p, a.head_rows.p, R, H);
    cu::linear_forward(a.logits.fit(R * V), a.hrows.p, P(h_.head_), static_cast<const T*>(nullptr), R, H, V);
    DArray<float> lp("log-probs"), ent("log-probs");
    cu::logprob_forward(lp.fit(R), ent.fit(R), a.lse.fit(R), a.logits.p, a.targets.p, R, V);
    std::vector<float> hlp(R), hent(R);
    download(hlp.data(), lp.p, R);
    download(hent.data(), ent.p, R);
    for (int64_t g = 0; g < G; g++) {
      out.logprobs[g].assign(hlp.begin() + a.comp_off[g], hlp.begin() + a.comp_off[g] + a.comp_len[g]);
      out.entropy[g].assign(hent.begin() + a.comp_off[g], hent.begin() + a.comp_off[g] + a.comp_len[g]);
    }
  }
  if (r.return_logits) {
    DArray<T> all("full logits (returnLogits)");
    all.fit(Tn * V);
    cu::linear_forward(all.p, a.hf.p, P(h_.head_), static_cast<const T*>(nullptr), Tn, H, V);
    const std::vector<float> hall = download_f32(all.p, Tn * V);
    out.logits.resize(G);
    for (int64_t g = 0; g < G; g++) {
      const int64_t Lg = a.comp_len[g];
      auto& o = out.logits[g];
      o.resize(static_cast<size_t>((Lp + Lg) * V));
      std::memcpy(o.data(), hall.data(), Lp * V * sizeof(float));
      std::memcpy(o.data() + Lp * V, hall.data() + start[g] * V, Lg * V * sizeof(float));
    }
  }
  if (!keep) a.logits.release();
  CU_CHECK(cudaStreamSynchronize(st_), "forward");
}

template <typename T>
void CudaModel<T>::backward_one(CuActs<T>& a, const std::vector<std::vector<float>>& grads) {
  const TextConfig& tc = h_.cfg_.text;
  const int64_t H = tc.hidden, V = tc.vocab, Tn = a.rows;
  int64_t R = 0;
  for (int64_t l : a.comp_len) R += l;
  DArray<T> dx("text gradients");
  zero(dx.fit(Tn * H), Tn * H);
  if (R > 0) {
    std::vector<float> dlogp(R, 0.0f);
    for (size_t g = 0; g < grads.size(); g++)
      for (size_t t = 0; t < grads[g].size(); t++) dlogp[a.comp_off[g] + t] = grads[g][t];
    DArray<float> ddlogp("log-prob gradients");
    upload(ddlogp, dlogp.data(), R);
    cu::logprob_backward(a.logits.p, ddlogp.p, a.logits.p, a.lse.p, a.targets.p, R, V);  // in place
    DArray<T> dhrows("head gradients"), dhf("head gradients");
    zero(dhrows.fit(R * H), R * H);
    cu::linear_backward(dhrows.p, G(h_.head_), static_cast<float*>(nullptr), a.logits.p, a.hrows.p, P(h_.head_), R, H, V);
    a.logits.release();
    zero(dhf.fit(Tn * H), Tn * H);
    cu::scatter_add_rows(dhf.p, dhrows.p, a.head_rows.p, R, H);
    cu::rmsnorm_backward(dx.p, G(h_.norm_), dhf.p, a.xf.p, P(h_.norm_), a.rstdf.p, Tn, H);
  }
  text_backward(a, Tn, dx.p);
  if (float* dwte = G(h_.embed_)) cu::embedding_backward(dwte, dx.p, a.ids.p, Tn, H);
  if (!a.img_rows_h.empty() && vision_trainable()) {
    const int64_t ni = static_cast<int64_t>(a.img_rows_h.size());
    DArray<T> dimg("vision gradients");
    cu::gather_rows(dimg.fit(ni * H), dx.p, a.img_rows.p, ni, H);
    vision_backward(a, dimg.p);
  }
}

// ---- sampling ----
template <typename T>
SampleResult CudaModel<T>::sample(const SampleRequest& q) {
  DevGuard guard(dev_, st_);
  const TextConfig& tc = h_.cfg_.text;
  const int64_t H = tc.hidden, V = tc.vocab, D = tc.head_dim, KVD = tc.kv_heads * tc.head_dim;
  const Prompt& p = q.prompt;
  const int64_t Lp = static_cast<int64_t>(p.ids.size());
  const int64_t n = q.n, maxT = q.max_tokens;
  const int64_t rows = Lp + n * maxT;
  kc_.fit(tc.layers * rows * KVD);
  vc_.fit(tc.layers * rows * KVD);
  // top-k / top-p sort the vocabulary: those rows are drawn on the host with the CPU's sampler
  const bool host_draw = q.temperature > 0.0f && ((q.top_k > 0 && q.top_k < V) || q.top_p < 1.0f);

  CuActs<T> a;
  if (!p.images.empty()) vision_forward(a, p, false);
  DArray<int32_t> dids("token ids");
  upload(dids, p.ids.data(), Lp);
  DArray<T> x("text activations");
  x.fit(Lp * H);
  cu::embedding_forward(x.p, dids.p, P(h_.embed_), Lp, H);
  {
    std::vector<int64_t> img_rows;
    for (int64_t i = 0; i < Lp; i++)
      if (p.ids[i] == h_.cfg_.image_token_id && !p.images.empty()) img_rows.push_back(i);
    if (!img_rows.empty()) {
      DArray<int64_t> dr("image rows");
      upload(dr, img_rows.data(), static_cast<int64_t>(img_rows.size()));
      cu::scatter_rows(x.p, a.img.p, dr.p, static_cast<int64_t>(img_rows.size()), H);
    }
  }
  std::vector<int32_t> pos;
  const int32_t next = h_.rope_index(p, pos);
  DArray<float> cs("rope tables"), sn("rope tables");
  {
    std::vector<float> c(Lp * D / 2), s(Lp * D / 2);
    rope_mrope_table(c.data(), s.data(), pos.data(), tc.section, Lp, D, tc.theta);
    upload(cs, c.data(), Lp * D / 2);
    upload(sn, s.data(), Lp * D / 2);
  }
  std::vector<Span> spans(Lp);
  std::vector<int64_t> slots(Lp);
  for (int64_t i = 0; i < Lp; i++) {
    spans[i] = Span{0, 0, 0, static_cast<int32_t>(i + 1)};
    slots[i] = i;
  }
  DArray<int64_t> dslots("cache slots");
  upload(dslots, slots.data(), Lp);
  text_forward(a, Lp, x.p, cs.p, sn.p, spans.data(), false, kc_.p, vc_.p, rows, dslots.p);
  DArray<T> hbuf("sampling"), logits("sampling logits");
  DArray<float> rstd("sampling"), dlp("sampling");
  DArray<int32_t> dtok("sampling");
  DArray<int64_t> dgs("sampling");
  cu::rmsnorm_forward(hbuf.fit(H), rstd.fit(1), x.p + (Lp - 1) * H, P(h_.norm_), 1, H, tc.eps);

  SampleResult res;
  res.tokens.resize(n);
  res.logprobs.resize(n);
  res.stopped.assign(n, false);
  std::vector<int64_t> active;
  // picks token t for the samples rowsg from logits (B, V) on the device
  auto pick = [&](const std::vector<int64_t>& rowsg, int64_t t) {
    const int64_t B = static_cast<int64_t>(rowsg.size());
    std::vector<int32_t> tok(B);
    std::vector<float> lp(B);
    if (host_draw) {
      const std::vector<float> hl = download_f32(logits.p, B * V);
      for (int64_t b = 0; b < B; b++)
        tok[b] = sample_token(hl.data() + b * V, V, q, static_cast<uint64_t>(rowsg[b]), static_cast<uint64_t>(t), &lp[b]);
    } else {
      upload(dgs, rowsg.data(), B);
      cu::sample_rows(dtok.fit(B), dlp.fit(B), logits.p, dgs.p, B, V, q.temperature, q.seed, static_cast<uint64_t>(t));
      CU_CHECK(cudaMemcpyAsync(tok.data(), dtok.p, B * sizeof(int32_t), cudaMemcpyDeviceToHost, st_), "sample");
      download(lp.data(), dlp.p, B);
    }
    for (int64_t b = 0; b < B; b++) {
      const int64_t g = rowsg[b];
      res.tokens[g].push_back(tok[b]);
      res.logprobs[g].push_back(lp[b]);
      if (std::find(q.stop.begin(), q.stop.end(), tok[b]) != q.stop.end()) res.stopped[g] = true;
      else if (t + 1 < maxT) active.push_back(g);
    }
  };
  {
    // step 0: every sample draws from the prompt's last row
    logits.fit(n * V);
    DArray<T> hrep("sampling");
    std::vector<int64_t> zeros_rows(n, 0);
    DArray<int64_t> dz("sampling");
    upload(dz, zeros_rows.data(), n);
    cu::gather_rows(hrep.fit(n * H), hbuf.p, dz.p, n, H);
    cu::linear_forward(logits.p, hrep.p, P(h_.head_), static_cast<const T*>(nullptr), n, H, V);
    std::vector<int64_t> all(n);
    for (int64_t g = 0; g < n; g++) all[g] = g;
    pick(all, 0);
  }
  for (int64_t t = 1; t < maxT && !active.empty(); t++) {
    h_.check_cancel();
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
    upload(dids, ids.data(), B);
    upload(dslots, slots.data(), B);
    x.fit(B * H);
    cu::embedding_forward(x.p, dids.p, P(h_.embed_), B, H);
    {
      std::vector<float> c(B * D / 2), s(B * D / 2);
      rope_mrope_table(c.data(), s.data(), bpos.data(), tc.section, B, D, tc.theta);
      upload(cs, c.data(), B * D / 2);
      upload(sn, s.data(), B * D / 2);
    }
    text_forward(a, B, x.p, cs.p, sn.p, spans.data(), false, kc_.p, vc_.p, rows, dslots.p);
    cu::rmsnorm_forward(hbuf.fit(B * H), rstd.fit(B), x.p, P(h_.norm_), B, H, tc.eps);
    logits.fit(B * V);
    cu::linear_forward(logits.p, hbuf.p, P(h_.head_), static_cast<const T*>(nullptr), B, H, V);
    pick(rowsg, t);
    std::sort(active.begin(), active.end());
  }
  return res;
}

// ---- factory and tools ----
bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why) *why = e != cudaSuccess ? std::string("no usable CUDA driver or device (") + cudaGetErrorString(e) + ")"
                                     : std::string("no CUDA device is visible");
    cudaGetLastError();
    return false;
  }
  return true;
}

std::unique_ptr<DeviceModel> make_cuda_model(Model& host, int device, bool bf16) {
  std::string why;
  VQ_CHECK(cuda_available(&why), "device cuda:" << device << " is not available: " << why);
  if (bf16) return std::make_unique<CudaModel<cu::bf16>>(host, device);
  return std::make_unique<CudaModel<float>>(host, device);
}

void cuda_randomize(DeviceModel& d, uint64_t seed, float scale) {
  if (auto* b = dynamic_cast<CudaModel<cu::bf16>*>(&d)) return b->randomize(seed, scale);
  if (auto* f = dynamic_cast<CudaModel<float>*>(&d)) return f->randomize(seed, scale);
  VQ_FAIL("cuda_randomize: not a CUDA model");
}

double cuda_gemm_flops(bool reset) { return cu::gemm_flops(reset); }
size_t cuda_peak_bytes(bool reset) {
  const size_t p = cu::pool_peak();
  if (reset) cu::pool_reset_peak();
  return p;
}
size_t cuda_used_bytes() { return cu::pool_used(); }
void cuda_sync() { CU_CHECK(cudaDeviceSynchronize(), "cuda_sync"); }

template class CudaModel<float>;
template class CudaModel<cu::bf16>;

}  // namespace vq
