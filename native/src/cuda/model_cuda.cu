// Qwen2-VL on the GPU: model.cc's forward/backward and sampler.cc's decode over the CUDA ops, with the
// same shared-prefix packing, spans, M-RoPE positions and head-row gathering (read model.cc first).
// T = bf16 (weights' working copy and activations) or float (everything fp32: the parity mode of the
// tests). The residual stream is fp32 in both (docs/cuda.md, "Numerics").
//
// Beyond model.cc: the requests of one forward call are packed into one sequence (their images into
// one vision batch), up to CudaOptions::pack_rows LM rows per pack; sample_many prefills every prompt
// at once and decodes all their rows in each step (CUDA graphs for the steps); norms are fused with
// the residual add that precedes them; attention is the fused kernel of flash.cu where it applies.
//
// Memory: the working weights live on the device from the start; gradients at the first backward;
// the fp32 master (bf16 mode) and the moments at the first step (or in pinned host memory with the
// offload option), so a model that only runs forward or sample (a reference model) holds nothing but
// its bf16 weights. With LoRA the base has no gradient, master or moments at all. The host Model keeps
// its fp32 copy for checkpoints: pull() brings the device's trained weights back before a save.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>
#include <random>

#include "activations.h"
#include "cuda/cuda_common.h"
#include "cuda/flash.h"
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

bool env_flag(const char* name, bool def) {
  const char* e = std::getenv(name);
  if (!e || !*e) return def;
  return !(e[0] == '0' || e[0] == 'n' || e[0] == 'N' || e[0] == 'f' || e[0] == 'F');
}
int64_t env_int(const char* name, int64_t def) {
  const char* e = std::getenv(name);
  if (!e || !*e) return def;
  const long long v = std::atoll(e);
  return v > 0 ? v : def;
}

// Pinned host memory that frees itself (the offloaded optimizer state, decode-step staging).
struct Pinned {
  void* p = nullptr;
  size_t bytes = 0;
  Pinned() = default;
  Pinned(const Pinned&) = delete;
  ~Pinned() { release(); }
  void release() {
    if (p) cudaFreeHost(p);
    p = nullptr;
    bytes = 0;
  }
  void* fit(size_t b, const char* what) {
    if (b > bytes) {
      release();
      const cudaError_t e = cudaHostAlloc(&p, b, cudaHostAllocDefault);
      if (e != cudaSuccess) {
        cudaGetLastError();
        p = nullptr;
        VQ_FAIL("out of pinned host memory: " << what << " needs " << (b >> 20) << " MiB (" << cudaGetErrorString(e)
                                              << "); hint: bf16 optimizer moments halve it, or turn offload off");
      }
      bytes = b;
    }
    return p;
  }
  template <typename U> U* as() const { return static_cast<U*>(p); }
};

// Phase timings (VQALAB_CUDA_PROFILE=1): CUDA events around the model's phases, summed by name when
// cuda_profile_report() is called; nothing is recorded while a stream is being captured (graphs).
struct ProfRec {
  const char* name;
  cudaEvent_t a, b;
};
std::mutex g_prof_mu;
std::vector<ProfRec> g_prof;
bool prof_on() {
  static const bool on = env_flag("VQALAB_CUDA_PROFILE", false);
  return on;
}
struct Phase {
  long idx = -1;
  explicit Phase(const char* name) {
    if (!prof_on()) return;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(cu::stream(), &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return;
    cudaEvent_t a = nullptr, b = nullptr;
    if (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess) return;
    cudaEventRecord(a, cu::stream());
    std::lock_guard<std::mutex> l(g_prof_mu);
    g_prof.push_back(ProfRec{name, a, b});
    idx = static_cast<long>(g_prof.size()) - 1;
  }
  ~Phase() {
    if (idx < 0) return;
    std::lock_guard<std::mutex> l(g_prof_mu);
    cudaEventRecord(g_prof[idx].b, cu::stream());
  }
  Phase(const Phase&) = delete;
};

}  // namespace

std::string cuda_profile_report() {
  std::lock_guard<std::mutex> l(g_prof_mu);
  if (g_prof.empty()) return prof_on() ? "profile: nothing recorded\n" : "profile: off (VQALAB_CUDA_PROFILE=1)\n";
  cudaDeviceSynchronize();
  std::map<std::string, std::pair<double, int>> sum;
  std::vector<std::string> order;
  for (const ProfRec& r : g_prof) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, r.a, r.b);
    auto it = sum.find(r.name);
    if (it == sum.end()) { order.push_back(r.name); it = sum.emplace(r.name, std::make_pair(0.0, 0)).first; }
    it->second.first += ms;
    it->second.second++;
    cudaEventDestroy(r.a);
    cudaEventDestroy(r.b);
  }
  g_prof.clear();
  std::string out;
  for (const std::string& n : order) {
    char b[160];
    std::snprintf(b, sizeof b, "  %-28s %9.2f ms  (%d)\n", n.c_str(), sum[n].first, sum[n].second);
    out += b;
  }
  return out;
}

int64_t cuda_default_pack_rows(int device) {
  cudaDeviceProp prop;
  CU_CHECK(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return prop.totalGlobalMem >= (40ull << 30) ? 4096 : 2048;
}

CudaOptions cuda_options_from_env() {
  CudaOptions o;
  o.offload_optimizer = env_flag("VQALAB_CUDA_OFFLOAD", false);
  o.bf16_moments = env_flag("VQALAB_CUDA_BF16_MOMENTS", false);
  o.checkpoint = env_flag("VQALAB_CUDA_CHECKPOINT", false);
  o.pack_rows = env_int("VQALAB_CUDA_PACK_ROWS", o.pack_rows);
  o.graphs = env_flag("VQALAB_CUDA_GRAPH", true);
  return o;
}

// Activations. The residual stream (x: a layer's input, xmid: after its attention) is fp32 whatever
// T is; the rest is T. With checkpointing only x is kept per layer.
template <typename T>
struct CuVisionBlock {
  DArray<float> x{"vision activations"}, xmid{"vision activations"};
  DArray<T> ln1{"vision activations"}, q{"vision activations"}, k{"vision activations"}, v{"vision activations"},
      att{"vision activations"}, ln2{"vision activations"}, fc1{"vision activations"}, act{"vision activations"},
      up{"vision activations"};  // Qwen2.5-VL's gated MLP: up_proj (fc1 is gate_proj)
  DArray<float> mean1{"vision activations"}, rstd1{"vision activations"}, lse{"vision activations"},
      mean2{"vision activations"}, rstd2{"vision activations"};
};
template <typename T>
struct CuTextLayer {
  DArray<float> x{"text activations"}, xmid{"text activations"};
  DArray<T> h1{"text activations"}, q{"text activations"}, k{"text activations"}, v{"text activations"},
      att{"text activations"}, h2{"text activations"}, gate{"text activations"}, up{"text activations"},
      act{"text activations"};
  DArray<float> rstd1{"text activations"}, lse{"text activations"}, rstd2{"text activations"};
};
// One pack: the requests of a forward call packed into one sequence (their images into one vision
// batch), or the prompts of a sampling batch.
template <typename T>
struct CuActs {
  int64_t N = 0, rows = 0;
  bool ckpt = false;
  DArray<T> patches{"vision patches"};
  DArray<float> vcos{"rope tables"}, vsin{"rope tables"};
  std::vector<Span> vspans;
  DArray<Span> dvspans{"attention spans"};
  // Qwen2.5-VL windows: the tower runs on the patches in window order; win[u] is the processor-order
  // merged unit at window-order position u (empty: no windows); wspans are the windows' spans.
  std::vector<int64_t> win_h;
  DArray<int64_t> win{"window order"};
  std::vector<Span> wspans;
  DArray<Span> dwspans{"attention spans"};
  std::vector<CuVisionBlock<T>> vblocks;
  DArray<float> vxf{"vision activations"}, mmean{"vision activations"}, mrstd{"vision activations"};
  DArray<T> mln{"vision activations"}, m0{"vision activations"}, m0act{"vision activations"}, img{"image embeddings"};
  DArray<int32_t> ids{"token ids"};  // -1 at image rows
  std::vector<int64_t> img_rows_h;
  DArray<int64_t> img_rows{"image rows"};
  DArray<float> cos{"rope tables"}, sin{"rope tables"};
  std::vector<Span> spans;
  DArray<Span> dspans{"attention spans"};
  std::vector<CuTextLayer<T>> layers;
  DArray<float> xf{"text activations"}, rstdf{"text activations"}, lse{"log-probs"};
  DArray<T> hf{"text activations"}, hrows{"head rows"}, logits{"logits"};
  DArray<int64_t> head_rows{"head rows"};
  DArray<int32_t> targets{"targets"};
  std::vector<int64_t> comp_off, comp_len;  // per completion of every request of the pack, in order
  std::vector<size_t> req_ncomp;            // completions per request
};

template <typename T>
class CudaModel final : public DeviceModel {
 public:
  CudaModel(Model& h, int dev, const CudaOptions& opt) : h_(h), dev_(dev), opt_(opt) {
    int n = 0;
    CU_CHECK(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
    VQ_CHECK(dev >= 0 && dev < n, "device cuda:" << dev << " does not exist (" << n << " CUDA device"
                                                  << (n == 1 ? "" : "s") << " visible)");
    CU_CHECK(cudaSetDevice(dev), "cudaSetDevice");
    CU_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking), "cudaStreamCreate");
    CU_CHECK(cudaStreamCreateWithFlags(&st2_, cudaStreamNonBlocking), "cudaStreamCreate");
    {  // keep freed pool memory for reuse instead of returning it at every synchronisation
      cudaMemPool_t pool;
      CU_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
      uint64_t thr = UINT64_MAX;
      CU_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr), "cudaMemPoolSetAttribute");
    }
    if (std::is_same<T, float>::value) opt_.offload_optimizer = opt_.bf16_moments = false;  // the fp32 parity mode
    if (opt_.pack_rows <= 0) opt_.pack_rows = cuda_default_pack_rows(dev);
    DevGuard g(dev_, st_);
    w_.what = "the model's weights";
    w_.fit(static_cast<int64_t>(h_.params_.size()));
    upload_f32(w_.p, h_.params_.data(), w_.n);
    if (!h_.lora_.empty()) {
      lw_.what = "the LoRA adapters";
      lw_.fit(static_cast<int64_t>(h_.lparams_.size()));
      upload_f32(lw_.p, h_.lparams_.data(), lw_.n);
      if constexpr (std::is_same<T, cu::bf16>::value) {  // the fp32 master from the start: the hi/lo pairs need it
        lmaster_.what = "the fp32 master of the LoRA adapters";
        upload(lmaster_, h_.lparams_.data(), lw_.n);
        split_lora();
      }
    }
    push_moments();
    CU_CHECK(cudaStreamSynchronize(st_), "loading the weights");
  }
  ~CudaModel() override {
    {
      DevGuard g(dev_, st_);
      for (auto& kv : graphs_) cudaGraphExecDestroy(kv.second);
      graphs_.clear();
      saved_.clear();
      w_.release(); master_.release(); grads_.release(); m_.release(); v_.release(); mb_.release(); vb_.release();
      lw_.release(); lmaster_.release(); lgrads_.release(); lm_.release(); lv_.release(); lsplit_.release();
      kc_.release(); vc_.release();
      tscr_ = CuTextLayer<T>();
      vscr_ = CuVisionBlock<T>();
      tmp_.release(); mlp_.release(); qkv_.release(); xa_.release(); stepd_.release();
      cudaStreamSynchronize(st_);
    }
    cudaStreamDestroy(st2_);
    cudaStreamDestroy(st_);
  }

  bool set_checkpoint_activations(bool on) override {
    opt_.checkpoint = on;  // read at each training forward (layer_forward's `ckpt`)
    return true;
  }

  std::string name() const override {
    return "cuda:" + std::to_string(dev_) + (std::is_same<T, float>::value ? " (fp32)" : " (bf16)");
  }

  // The values go to the device's working weights and, in fp32, to the host Model (the checkpoint
  // copy, from which the fp32 master is made at the first step): no device master is allocated, so a
  // model that never steps (a reference) holds only its working weights, as a loaded one does.
  void randomize(uint64_t seed, float scale) {
    DevGuard g(dev_, st_);
    int64_t biggest = 0;
    for (const ParamInfo& p : h_.info_) biggest = std::max(biggest, p.size);
    DArray<float> tmp("randomize staging");
    tmp.fit(biggest);
    for (const ParamInfo& p : h_.info_) {
      float* dst = tmp.p;
      const bool norm = p.shape.size() == 1 && p.name.find("bias") == std::string::npos;
      if (norm) cu::fill(dst, 1.0f, p.size);
      else {
        randomize_k<<<1024, 256, 0, cu::stream()>>>(dst, p.size, seed, scale, p.offset);
        CU_LAUNCHED("randomize");
      }
      cu::convert(w_.p + p.offset, static_cast<const float*>(dst), p.size);
      download(h_.params_.data() + p.offset, dst, p.size);  // synchronises before tmp is reused
    }
    if (master_.p) CU_CHECK(cudaMemcpyAsync(master_.p, h_.params_.data(), master_.n * sizeof(float), cudaMemcpyHostToDevice, st_), "randomize");
    if (hmaster_.p) std::memcpy(hmaster_.p, h_.params_.data(), h_.params_.size() * sizeof(float));
    CU_CHECK(cudaStreamSynchronize(st_), "randomize");
  }

  // ---- forward: requests packed up to opt_.pack_rows LM rows ----
  std::vector<ForwardResult> forward(const std::vector<ForwardRequest>& reqs, bool keep) override {
    DevGuard g(dev_, st_);
    if (keep) { saved_.clear(); nreq_saved_ = 0; }
    std::vector<ForwardResult> out(reqs.size());
    std::vector<std::unique_ptr<CuActs<T>>> kept;
    size_t i = 0;
    while (i < reqs.size()) {
      size_t j = i;
      int64_t rows = 0;
      while (j < reqs.size()) {
        int64_t r = static_cast<int64_t>(reqs[j].prompt.ids.size());
        for (const auto& c : reqs[j].completions) r += static_cast<int64_t>(c.size());
        if (j > i && rows + r > opt_.pack_rows) break;
        rows += r;
        j++;
      }
      auto a = std::make_unique<CuActs<T>>();
      forward_pack(*a, reqs, i, j, out, keep);
      if (keep) kept.push_back(std::move(a));
      i = j;
    }
    if (keep) {
      saved_ = std::move(kept);
      nreq_saved_ = reqs.size();
    }
    release_scratch();
    return out;
  }

  void backward(const std::vector<std::vector<std::vector<float>>>& grads) override {
    VQ_CHECK(!saved_.empty(), "backward needs a forward with keepForBackward: true first");
    VQ_CHECK(grads.size() == nreq_saved_, "backward got gradients for " << grads.size()
                                              << " requests but the last forward had " << nreq_saved_);
    size_t r = 0;
    for (const auto& a : saved_)
      for (size_t k = 0; k < a->req_ncomp.size(); k++, r++) {
        VQ_CHECK(grads[r].size() == a->req_ncomp[k], "request " << r << ": gradients for " << grads[r].size()
                                                                << " completions, the forward had " << a->req_ncomp[k]);
      }
    r = 0;
    for (const auto& a : saved_) {
      size_t c = 0;
      for (size_t k = 0; k < a->req_ncomp.size(); k++, r++)
        for (size_t gi = 0; gi < grads[r].size(); gi++, c++)
          VQ_CHECK(static_cast<int64_t>(grads[r][gi].size()) == a->comp_len[c],
                   "request " << r << " completion " << gi << ": " << grads[r][gi].size() << " gradients for "
                              << a->comp_len[c] << " tokens");
    }
    DevGuard g(dev_, st_);
    ensure_grads();
    try {
      size_t r0 = 0;
      for (auto& a : saved_) {
        backward_pack(*a, grads, r0);
        r0 += a->req_ncomp.size();
        a.reset();  // free the pack's activations as soon as its gradients are in
      }
    } catch (...) {
      saved_.clear();
      throw;
    }
    saved_.clear();
    release_scratch();
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
    Phase ph("optimizer step");
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
    h_.step_++;
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
        const std::vector<float>& hp = lora ? h_.lparams_ : h_.params_;
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
      cu::adamw_update(p32, gr.p, lm_.p, lv_.p, w.n, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, h_.step_, scale, copy);
      split_lora();
    } else {
      for (const auto& pi : h_.info_) {
        const float wd = pi.shape.size() >= 2 ? o.weight_decay : 0.0f;
        cu::bf16* cp = copy ? copy + pi.offset : nullptr;
        if (bm)
          cu::adamw_update_bf16m(p32 + pi.offset, gr.p + pi.offset, mb_.p + pi.offset, vb_.p + pi.offset, pi.size, o.lr,
                                 o.beta1, o.beta2, o.eps, wd, h_.step_, scale, cp);
        else
          cu::adamw_update(p32 + pi.offset, gr.p + pi.offset, m_.p + pi.offset, v_.p + pi.offset, pi.size, o.lr, o.beta1,
                           o.beta2, o.eps, wd, h_.step_, scale, cp);
      }
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
    const size_t n = hp.size();
    if (!lora && hmaster_.p) {
      std::memcpy(hp.data(), hmaster_.p, n * sizeof(float));
    } else {
      DArray<float>& master = lora ? lmaster_ : master_;
      if constexpr (std::is_same<T, float>::value) download(hp.data(), (lora ? lw_ : w_).p, static_cast<int64_t>(n));
      else if (master.p) download(hp.data(), master.p, static_cast<int64_t>(n));
    }
    std::vector<float>& hm = lora ? h_.lm_ : h_.m_;
    std::vector<float>& hv = lora ? h_.lv_ : h_.v_;
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
    if (hmaster_.p) std::memcpy(hmaster_.p, h_.params_.data(), h_.params_.size() * sizeof(float));
    if (lw_.p) upload_f32(lw_.p, h_.lparams_.data(), lw_.n);
    if (lmaster_.p) CU_CHECK(cudaMemcpyAsync(lmaster_.p, h_.lparams_.data(), lmaster_.n * sizeof(float), cudaMemcpyHostToDevice, st_), "push");
    split_lora();
    push_moments();
    CU_CHECK(cudaStreamSynchronize(st_), "push");
    host_stale_ = false;
  }

  SampleResult sample(const SampleRequest& q) override { return sample_many({q})[0]; }
  bool batches() const override { return true; }
  std::vector<SampleResult> sample_many(const std::vector<SampleRequest>& qs) override;

 private:
  Model& h_;
  int dev_;
  CudaOptions opt_;
  cudaStream_t st_ = nullptr, st2_ = nullptr;
  DArray<T> w_, lw_;
  DArray<float> master_, grads_, m_, v_, lmaster_, lgrads_, lm_, lv_;
  DArray<cu::bf16> mb_, vb_;       // bf16 moments (device)
  Pinned hmaster_, hm_, hv_;       // offloaded master and moments (host)
  DArray<T> kc_{"the KV cache"}, vc_{"the KV cache"};
  std::vector<std::unique_ptr<CuActs<T>>> saved_;
  size_t nreq_saved_ = 0;
  bool host_stale_ = false;
  DArray<T> xa_{"LoRA activations"};
  // bf16: each adapter as hi/lo bf16 pairs of its fp32 master (cu::lora_split), rebuilt after every change
  // of the adapters (load, push, step), and the scratch of cu::linear_lora_forward
  DArray<cu::bf16> lsplit_{"the LoRA adapters (hi/lo pairs)"};
  bool lora_pairs_ = env_flag("VQALAB_CUDA_LORA_PAIRS", true);  // 0: linear_forward + lora_forward (two roundings)
  std::vector<int64_t> lsplit_off_;
  DArray<float> lacc_{"LoRA activations"}, lxa2_{"LoRA activations"};
  DArray<cu::bf16> lxcat_{"LoRA activations"};
  // scratch reused across layers and calls
  CuTextLayer<T> tscr_;
  CuVisionBlock<T> vscr_;
  DArray<T> tmp_{"activations"}, mlp_{"activations"}, qkv_{"vision activations"};
  // decode steps: inputs staged in pinned memory and copied in one transfer; graphs by batch size
  Pinned steph_;
  DArray<char> stepd_{"decode step inputs"};
  std::map<int64_t, cudaGraphExec_t> graphs_;

  // Scratch goes back to the pool after each call (reused within it): a rollout's large batch does not
  // hold memory through the training step that follows.
  void release_scratch() {
    tscr_ = CuTextLayer<T>();
    vscr_ = CuVisionBlock<T>();
    tmp_.release();
    mlp_.release();
    qkv_.release();
    xa_.release();
    lacc_.release();
    lxa2_.release();
    lxcat_.release();
  }

  void split_lora() {
    if constexpr (std::is_same<T, cu::bf16>::value) {
      if (h_.lora_.empty() || !lmaster_.p) return;
      const int64_t R = h_.lora_rank_;
      if (lsplit_off_.empty()) {
        int64_t off = 0;
        for (const auto& li : h_.lora_) {
          lsplit_off_.push_back(off);
          off += 2 * R * li.in + 3 * li.out * R;
        }
        lsplit_.fit(off);
      }
      for (size_t k = 0; k < h_.lora_.size(); k++) {
        const LoraInfo& li = h_.lora_[k];
        cu::bf16* A = lsplit_.p + lsplit_off_[k];
        cu::lora_split(A, A + 2 * R * li.in, lmaster_.p + li.a_off, lmaster_.p + li.b_off, li.in, li.out, R);
      }
    }
  }

  void push_moments() {
    const bool lora = !h_.lora_.empty();
    const std::vector<float>& hm = lora ? h_.lm_ : h_.m_;
    const std::vector<float>& hv = lora ? h_.lv_ : h_.v_;
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
  void copy_host_moments() {
    const size_t n = h_.params_.size();
    if (h_.m_.size() != n) {
      std::memset(hm_.p, 0, hm_.bytes);
      std::memset(hv_.p, 0, hv_.bytes);
    } else if (opt_.bf16_moments) {
      for (size_t i = 0; i < n; i++) {
        hm_.as<cu::bf16>()[i] = __float2bfloat16(h_.m_[i]);
        hv_.as<cu::bf16>()[i] = __float2bfloat16(h_.v_[i]);
      }
    } else {
      std::memcpy(hm_.p, h_.m_.data(), n * sizeof(float));
      std::memcpy(hv_.p, h_.v_.data(), n * sizeof(float));
    }
  }

  // AdamW with the master weights and moments in pinned host memory: chunks of whole tensors (large
  // ones split) go up, are updated on the GPU (writing the bf16 working copy in place) and come back
  // on a second stream while the next chunk goes up.
  template <typename M>
  void step_offload(const AdamWOptions& o, float scale) {
    const int64_t n = w_.n;
    if (!hmaster_.p) {
      hmaster_.fit(n * sizeof(float), "the offloaded fp32 master weights");
      if (master_.p) {  // randomize() left it on the device
        CU_CHECK(cudaMemcpyAsync(hmaster_.p, master_.p, n * sizeof(float), cudaMemcpyDeviceToHost, st_), "offload");
        CU_CHECK(cudaStreamSynchronize(st_), "offload");
        master_.release();
      } else {
        std::memcpy(hmaster_.p, h_.params_.data(), n * sizeof(float));
      }
      hm_.fit(n * sizeof(M), "the offloaded AdamW moments");
      hv_.fit(n * sizeof(M), "the offloaded AdamW moments");
      copy_host_moments();
    }
    struct Piece { int64_t off, size; float wd; };
    const int64_t chunk = 32ll << 20;
    std::vector<Piece> pieces;
    for (const auto& pi : h_.info_)
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
                           o.beta1, o.beta2, o.eps, pieces[k].wd, h_.step_, scale,
                           reinterpret_cast<cu::bf16*>(w_.p) + pieces[k].off);
        else
          cu::adamw_update_bf16m(sp[b].p + rel, grads_.p + pieces[k].off, sm[b].p + rel, sv[b].p + rel, pieces[k].size,
                                 o.lr, o.beta1, o.beta2, o.eps, pieces[k].wd, h_.step_, scale,
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

  const T* P(int i) const { return w_.p + h_.info_[i].offset; }
  float* G(int i) { return (h_.lora_.empty() && grads_.p) ? grads_.p + h_.info_[i].offset : nullptr; }
  bool vision_trainable() const { return h_.vision_trainable(); }
  const TextConfig& tc() const { return h_.cfg_.text; }

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
    if constexpr (std::is_same<T, cu::bf16>::value) {  // bf16 with an adapter: one rounding (ops.h)
      if (l.lora >= 0 && h_.lora_enabled_ && lora_pairs_) {
        const LoraInfo& li = h_.lora_[l.lora];
        const int64_t R = h_.lora_rank_;
        const cu::bf16* A = lsplit_.p + lsplit_off_[l.lora];
        cu::linear_lora_forward(out, nullptr, inp, P(l.w), l.b >= 0 ? P(l.b) : nullptr, A, A + 2 * R * li.in, n, l.in,
                                l.out, R, h_.lora_scale_, lacc_.fit(n * l.out), lxa2_.fit(n * 2 * R),
                                lxcat_.fit(n * 3 * R));
        return;
      }
    }
    cu::linear_forward(out, inp, P(l.w), l.b >= 0 ? P(l.b) : static_cast<const T*>(nullptr), n, l.in, l.out);
    if (l.lora >= 0 && h_.lora_enabled_) {
      const LoraInfo& li = h_.lora_[l.lora];
      cu::lora_forward(out, xa_.fit(n * h_.lora_rank_), inp, lw_.p + li.a_off, lw_.p + li.b_off, n, l.in, l.out,
                       h_.lora_rank_, h_.lora_scale_);
    }
  }
  // acc = false: dinp is overwritten by this linear (the first of several that add into it)
  void lin_backward(const Lin& l, T* dinp, const T* dout, const T* inp, int64_t n, bool acc = true) {
    float* dw = G(l.w);
    float* db = l.b >= 0 ? G(l.b) : nullptr;
    if (dinp || dw || db) cu::linear_backward(dinp, dw, db, dout, inp, P(l.w), n, l.in, l.out, acc);
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

  void vision_prepare(CuActs<T>& a, const std::vector<const Image*>& imgs);
  // Qwen2.5-VL: block bi attends within windows (not one of fullatt_block_indexes)
  bool windowed_block(const CuActs<T>& a, size_t bi) const {
    const auto& f = h_.cfg_.vision.fullatt;
    return !a.win_h.empty() && std::find(f.begin(), f.end(), static_cast<int>(bi)) == f.end();
  }
  void vision_forward(CuActs<T>& a, bool keep);
  void lm_prepare(CuActs<T>& a, DArray<int32_t>& dids, const std::vector<int32_t>& ids, const std::vector<int32_t>& pos,
                  int64_t n);
  void vision_block(size_t bi, CuVisionBlock<T>& A, CuActs<T>& a, float* x, const float* xprev, const T* rprev,
                    float* xmid, T* mlp_out);
  void vision_backward(CuActs<T>& a, const T* dimg);
  void text_forward(CuActs<T>& a, int64_t n, DArray<float>& x0, const float* cos, const float* sin, const Span* spans,
                    const Span* dspans, bool keep, T* kcache, T* vcache, int64_t cache_rows, const int64_t* slots);
  void text_layer(size_t li, CuTextLayer<T>& A, int64_t n, float* x, const float* xprev, const T* rprev, float* xmid,
                  T* mlp_out, const float* cos, const float* sin, const Span* spans, const Span* dspans, T* kcache,
                  T* vcache, int64_t cache_rows, const int64_t* slots);
  void text_backward(CuActs<T>& a, int64_t n, float* dx, T* dxT);
  void forward_pack(CuActs<T>& a, const std::vector<ForwardRequest>& reqs, size_t i0, size_t i1,
                    std::vector<ForwardResult>& out, bool keep);
  void backward_pack(CuActs<T>& a, const std::vector<std::vector<std::vector<float>>>& grads, size_t r0);
  void embed_prompts(CuActs<T>& a, DArray<float>& x, const int32_t* dids, int64_t n);
};

// ---- vision tower ----
// Block bi: x = xprev + rprev (the previous block's MLP output; fused with the first norm) unless rprev
// is null (x is read as is); xmid = x + attention; mlp_out = the MLP's output (not added here).
template <typename T>
void CudaModel<T>::vision_block(size_t bi, CuVisionBlock<T>& A, CuActs<T>& a, float* x, const float* xprev,
                                const T* rprev, float* xmid, T* mlp_out) {
  const VisionConfig& vc = h_.cfg_.vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, F = vc.mlp_hidden, N = a.N;
  const VisionBlockW& B = h_.blocks_[bi];
  const bool rms = B.n1b < 0;  // Qwen2.5-VL: RMSNorm (weight only)
  if (rms) cu::residual_rmsnorm_forward(A.ln1.fit(N * E), A.rstd1.fit(N), x, rprev ? xprev : x, rprev, P(B.n1w), N, E, 1e-6f);
  else if (rprev)
    cu::residual_layernorm_forward(A.ln1.fit(N * E), A.mean1.fit(N), A.rstd1.fit(N), x, xprev, rprev, P(B.n1w), P(B.n1b),
                                   N, E, 1e-6f);
  else
    cu::layernorm_forward(A.ln1.fit(N * E), A.mean1.fit(N), A.rstd1.fit(N), static_cast<const float*>(x), P(B.n1w),
                          P(B.n1b), N, E, 1e-6f);
  lin_forward(B.qkv, qkv_.fit(N * 3 * E), A.ln1.p, N);
  cu::split_qkv(A.q.fit(N * E), A.k.fit(N * E), A.v.fit(N * E), qkv_.p, N, E);
  cu::rope_forward(A.q.p, A.q.p, a.vcos.p, a.vsin.p, N, NH, hd);
  cu::rope_forward(A.k.p, A.k.p, a.vcos.p, a.vsin.p, N, NH, hd);
  {
    Phase ph("  vision attention fwd");
    const bool windowed = windowed_block(a, bi);
    cu::attention_forward_dev(A.att.fit(N * E), A.lse.fit(N * NH), A.q.p, A.k.p, A.v.p,
                              windowed ? a.wspans.data() : a.vspans.data(), windowed ? a.dwspans.p : a.dvspans.p,
                              N, N, NH, NH, hd);
  }
  lin_forward(B.proj, tmp_.fit(N * E), A.att.p, N);
  if (rms) cu::residual_rmsnorm_forward(A.ln2.fit(N * E), A.rstd2.fit(N), xmid, x, tmp_.p, P(B.n2w), N, E, 1e-6f);
  else
    cu::residual_layernorm_forward(A.ln2.fit(N * E), A.mean2.fit(N), A.rstd2.fit(N), xmid, x, tmp_.p, P(B.n2w), P(B.n2b),
                                   N, E, 1e-6f);
  lin_forward(B.fc1, A.fc1.fit(N * F), A.ln2.p, N);
  if (vc.act == VisionAct::silu) {  // gated: down(silu(gate) * up)
    lin_forward(B.up, A.up.fit(N * F), A.ln2.p, N);
    cu::swiglu_forward(A.act.fit(N * F), A.fc1.p, A.up.p, N * F);
  } else if (vc.quick_gelu) cu::quick_gelu_forward(A.act.fit(N * F), A.fc1.p, N * F);
  else cu::gelu_forward(A.act.fit(N * F), A.fc1.p, N * F);
  if (mlp_out) lin_forward(B.fc2, mlp_out, A.act.p, N);
}

// The vision tower's inputs on the device: patches (each image's pixels copied straight from its
// buffer), the 2D rotary tables (computed on the device from the patch positions) and the frame spans.
// Called before any of the call's kernels is queued: a copy from pageable memory waits for the stream.
template <typename T>
void CudaModel<T>::vision_prepare(CuActs<T>& a, const std::vector<const Image*>& imgs) {
  const VisionConfig& vc = h_.cfg_.vision;
  const int64_t E = vc.embed_dim, NH = vc.num_heads, hd = E / NH, PD = vc.patch_dim();
  const int m = vc.merge;
  int64_t N = 0;
  for (const Image* im : imgs) N += static_cast<int64_t>(im->t) * im->h * im->w;
  a.N = N;
  std::vector<int32_t> hw(2 * N);  // hpos, then wpos
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
    std::vector<int32_t> hwp(2 * N);
    for (size_t u = 0; u < a.win_h.size(); u++)
      for (int64_t r = 0; r < mm; r++) {
        const int64_t dst = static_cast<int64_t>(u) * mm + r, src = a.win_h[u] * mm + r;
        hwp[dst] = hw[src];
        hwp[N + dst] = hw[N + src];
      }
    hw = std::move(hwp);
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
  DArray<int32_t> dhw("patch positions");
  upload(dhw, hw.data(), 2 * N);
  cu::rope_vision_table(a.vcos.fit(N * hd / 2), a.vsin.fit(N * hd / 2), dhw.p, dhw.p + N, N, hd, vc.theta);
}

// The tower over the prepared inputs (vision_prepare).
template <typename T>
void CudaModel<T>::vision_forward(CuActs<T>& a, bool keep) {
  const VisionConfig& vc = h_.cfg_.vision;
  const int64_t E = vc.embed_dim, PD = vc.patch_dim();
  const int m = vc.merge;
  const int64_t N = a.N;
  const bool full = keep && !a.ckpt;
  const size_t nb = h_.blocks_.size();
  a.vblocks.resize(keep ? nb : 0);
  // the patch embedding, then the fp32 residual stream
  DArray<float> x0("vision activations");
  {
    T* pe = tmp_.fit(N * E);
    cu::linear_forward(pe, a.patches.p, P(h_.patch_), static_cast<const T*>(nullptr), N, PD, E);
    cu::convert(x0.fit(N * E), static_cast<const T*>(pe), N * E);
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
  }
  const int64_t Nm = N / (m * m), M = E * m * m, H = vc.out_hidden;
  float* xf = keep ? a.vxf.fit(N * E) : x0.p;
  const bool rms = h_.mln_b_ < 0;  // Qwen2.5-VL: the merger's ln_q is an RMSNorm
  if (nb == 0) {  // no blocks: the merger reads the patch embedding
    if (keep) a.vxf = std::move(x0);
    xf = keep ? a.vxf.p : x0.p;
    if (rms) cu::rmsnorm_forward(a.mln.fit(N * E), a.mrstd.fit(N), static_cast<const float*>(xf), P(h_.mln_w_), N, E, 1e-6f);
    else
      cu::layernorm_forward(a.mln.fit(N * E), a.mmean.fit(N), a.mrstd.fit(N), static_cast<const float*>(xf), P(h_.mln_w_),
                            P(h_.mln_b_), N, E, 1e-6f);
  } else if (rms) {
    cu::residual_rmsnorm_forward(a.mln.fit(N * E), a.mrstd.fit(N), xf, xprev, rprev, P(h_.mln_w_), N, E, 1e-6f);
  } else {
    cu::residual_layernorm_forward(a.mln.fit(N * E), a.mmean.fit(N), a.mrstd.fit(N), xf, xprev, rprev, P(h_.mln_w_),
                                   P(h_.mln_b_), N, E, 1e-6f);
  }
  lin_forward(h_.m0_, a.m0.fit(Nm * M), a.mln.p, Nm);
  cu::gelu_forward(a.m0act.fit(Nm * M), a.m0.p, Nm * M);
  if (a.win_h.empty()) {
    lin_forward(h_.m2_, a.img.fit(Nm * H), a.m0act.p, Nm);
  } else {  // back to the processor's order: img[win[u]] = merged unit u
    DArray<T> w("image embeddings");
    lin_forward(h_.m2_, w.fit(Nm * H), a.m0act.p, Nm);
    cu::scatter_rows(a.img.fit(Nm * H), static_cast<const T*>(w.p), a.win.p, Nm, H);
  }
}

template <typename T>
void CudaModel<T>::vision_backward(CuActs<T>& a, const T* dimg) {
  const VisionConfig& vc = h_.cfg_.vision;
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
    lin_backward(h_.m2_, dm0act.fit(Nm * M), dimg, a.m0act.p, Nm, false);
    cu::gelu_backward(dm0.fit(Nm * M), dm0act.p, a.m0.p, Nm * M, false);
    lin_backward(h_.m0_, dmln.fit(N * E), dm0.p, a.mln.p, Nm, false);
    if (h_.mln_b_ < 0)
      cu::rmsnorm_backward(dx.p, G(h_.mln_w_), dmln.p, static_cast<const float*>(a.vxf.p), P(h_.mln_w_), a.mrstd.p, N, E,
                           dxT.p);
    else
      cu::layernorm_backward(dx.p, G(h_.mln_w_), G(h_.mln_b_), dmln.p, static_cast<const float*>(a.vxf.p), P(h_.mln_w_),
                             a.mmean.p, a.mrstd.p, N, E, dxT.p);
  }
  DArray<T> dact("vision gradients"), dfc1("vision gradients"), dln("vision gradients"), datt("vision gradients"),
      dq("vision gradients"), dk("vision gradients"), dv("vision gradients"), dqr("vision gradients"),
      dkr("vision gradients"), dqkv("vision gradients"), dup("vision gradients");
  if (vc.act == VisionAct::silu) dup.fit(N * F);
  dact.fit(N * F); dfc1.fit(N * F); dln.fit(N * E); datt.fit(N * E); dq.fit(N * E); dk.fit(N * E); dv.fit(N * E);
  dqr.fit(N * E); dkr.fit(N * E); dqkv.fit(N * 3 * E);
  for (size_t bi = h_.blocks_.size(); bi-- > 0;) {
    h_.check_cancel();
    const VisionBlockW& B = h_.blocks_[bi];
    const float* x = a.vblocks[bi].x.p;
    CuVisionBlock<T>* Ap = &a.vblocks[bi];
    if (a.ckpt) {  // recompute the block from its input
      vision_block(bi, vscr_, a, const_cast<float*>(x), nullptr, nullptr, vscr_.xmid.fit(N * E), nullptr);
      Ap = &vscr_;
    }
    CuVisionBlock<T>& A = *Ap;
    const bool rms = B.n1b < 0;
    lin_backward(B.fc2, dact.p, dxT.p, A.act.p, N, false);
    if (vc.act == VisionAct::silu) {
      cu::swiglu_backward(dfc1.p, dup.p, dact.p, A.fc1.p, A.up.p, N * F, false);
      lin_backward(B.fc1, dln.p, dfc1.p, A.ln2.p, N, false);
      lin_backward(B.up, dln.p, dup.p, A.ln2.p, N, true);
    } else {
      if (vc.quick_gelu) cu::quick_gelu_backward(dfc1.p, dact.p, A.fc1.p, N * F, false);
      else cu::gelu_backward(dfc1.p, dact.p, A.fc1.p, N * F, false);
      lin_backward(B.fc1, dln.p, dfc1.p, A.ln2.p, N, false);
    }
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
      Phase ph("  vision attention bwd");
      const bool windowed = windowed_block(a, bi);
      cu::attention_backward_dev(dq.p, dk.p, dv.p, datt.p, A.q.p, A.k.p, A.v.p, A.att.p, A.lse.p,
                                 windowed ? a.wspans.data() : a.vspans.data(), windowed ? a.dwspans.p : a.dvspans.p,
                                 N, N, NH, NH, hd);
    }
    cu::rope_backward(dqr.p, dq.p, a.vcos.p, a.vsin.p, N, NH, hd, false);
    cu::rope_backward(dkr.p, dk.p, a.vcos.p, a.vsin.p, N, NH, hd, false);
    cu::join_qkv(dqkv.p, dqr.p, dkr.p, dv.p, N, E);
    lin_backward(B.qkv, dln.p, dqkv.p, A.ln1.p, N, false);
    if (rms) cu::rmsnorm_backward(dx.p, G(B.n1w), dln.p, x, P(B.n1w), A.rstd1.p, N, E, dxT.p);
    else cu::layernorm_backward(dx.p, G(B.n1w), G(B.n1b), dln.p, x, P(B.n1w), A.mean1.p, A.rstd1.p, N, E, dxT.p);
  }
  if (float* dw = G(h_.patch_))
    cu::linear_backward(static_cast<T*>(nullptr), dw, static_cast<float*>(nullptr), dxT.p, a.patches.p, P(h_.patch_), N,
                        PD, E);
}

// ---- language model ----
template <typename T>
void CudaModel<T>::text_layer(size_t li, CuTextLayer<T>& A, int64_t n, float* x, const float* xprev, const T* rprev,
                              float* xmid, T* mlp_out, const float* cos, const float* sin, const Span* spans,
                              const Span* dspans, T* kcache, T* vcache, int64_t cache_rows, const int64_t* slots) {
  const int64_t H = tc().hidden, NH = tc().heads, KVH = tc().kv_heads, D = tc().head_dim, I = tc().inter, KVD = KVH * D;
  const TextLayerW& L = h_.layers_[li];
  if (rprev)
    cu::residual_rmsnorm_forward(A.h1.fit(n * H), A.rstd1.fit(n), x, xprev, rprev, P(L.ln1), n, H, tc().eps);
  else
    cu::rmsnorm_forward(A.h1.fit(n * H), A.rstd1.fit(n), static_cast<const float*>(x), P(L.ln1), n, H, tc().eps);
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
    cu::scatter_rows(kc, static_cast<const T*>(A.k.p), slots, n, KVD);
    cu::scatter_rows(vc, static_cast<const T*>(A.v.p), slots, n, KVD);
    Phase ph("  LM attention fwd (cache)");
    cu::attention_forward_dev(A.att.p, A.lse.p, A.q.p, kc, vc, spans, dspans, n, cache_rows, NH, KVH, D);
  } else {
    Phase ph("  LM attention fwd");
    cu::attention_forward_dev(A.att.p, A.lse.p, A.q.p, A.k.p, A.v.p, spans, dspans, n, n, NH, KVH, D);
  }
  lin_forward(L.o, tmp_.fit(n * H), A.att.p, n);
  cu::residual_rmsnorm_forward(A.h2.fit(n * H), A.rstd2.fit(n), xmid, x, tmp_.p, P(L.ln2), n, H, tc().eps);
  lin_forward(L.gate, A.gate.fit(n * I), A.h2.p, n);
  lin_forward(L.up, A.up.fit(n * I), A.h2.p, n);
  cu::swiglu_forward(A.act.fit(n * I), A.gate.p, A.up.p, n * I);
  if (mlp_out) lin_forward(L.down, mlp_out, A.act.p, n);
}

// x0: the embeddings (n, H) fp32; with keep it becomes layer 0's saved input. Leaves the final norm's
// output in a.hf (and the final residual in a.xf with keep).
template <typename T>
void CudaModel<T>::text_forward(CuActs<T>& a, int64_t n, DArray<float>& x0, const float* cos, const float* sin,
                                const Span* spans, const Span* dspans, bool keep, T* kcache, T* vcache,
                                int64_t cache_rows, const int64_t* slots) {
  const int64_t H = tc().hidden;
  const bool full = keep && !a.ckpt;
  const size_t nl = h_.layers_.size();
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
  }
  if (nl == 0) {
    if (keep) { a.xf = std::move(x0); x0p = a.xf.p; }
    cu::rmsnorm_forward(a.hf.fit(n * H), a.rstdf.fit(n), static_cast<const float*>(x0p), P(h_.norm_), n, H, tc().eps);
    return;
  }
  float* xf = keep ? a.xf.fit(n * H) : x0p;
  cu::residual_rmsnorm_forward(a.hf.fit(n * H), a.rstdf.fit(n), xf, xprev, rprev, P(h_.norm_), n, H, tc().eps);
}

template <typename T>
void CudaModel<T>::text_backward(CuActs<T>& a, int64_t n, float* dx, T* dxT) {
  const int64_t H = tc().hidden, NH = tc().heads, KVH = tc().kv_heads, D = tc().head_dim, I = tc().inter, KVD = KVH * D;
  DArray<T> dact("text gradients"), dgate("text gradients"), dup("text gradients"), dh("text gradients"),
      datt("text gradients"), dq("text gradients"), dk("text gradients"), dv("text gradients"), dqr("text gradients"),
      dkr("text gradients");
  dact.fit(n * I); dgate.fit(n * I); dup.fit(n * I); dh.fit(n * H); datt.fit(n * NH * D);
  dq.fit(n * NH * D); dk.fit(n * KVD); dv.fit(n * KVD); dqr.fit(n * NH * D); dkr.fit(n * KVD);
  for (size_t li = h_.layers_.size(); li-- > 0;) {
    h_.check_cancel();
    const TextLayerW& L = h_.layers_[li];
    const float* x = a.layers[li].x.p;
    CuTextLayer<T>* Ap = &a.layers[li];
    if (a.ckpt) {  // recompute the layer from its input (no MLP output needed)
      text_layer(li, tscr_, n, const_cast<float*>(x), nullptr, nullptr, tscr_.xmid.fit(n * H), nullptr, a.cos.p,
                 a.sin.p, a.spans.data(), a.dspans.p, nullptr, nullptr, 0, nullptr);
      Ap = &tscr_;
    }
    CuTextLayer<T>& A = *Ap;
    lin_backward(L.down, dact.p, dxT, A.act.p, n, false);
    cu::swiglu_backward(dgate.p, dup.p, dact.p, A.gate.p, A.up.p, n * I, false);
    lin_backward(L.gate, dh.p, dgate.p, A.h2.p, n, false);
    lin_backward(L.up, dh.p, dup.p, A.h2.p, n, true);
    cu::rmsnorm_backward(dx, G(L.ln2), dh.p, static_cast<const float*>(A.xmid.p), P(L.ln2), A.rstd2.p, n, H, dxT);
    lin_backward(L.o, datt.p, dxT, A.att.p, n, false);
    zero(dq.p, n * NH * D);
    zero(dk.p, n * KVD);
    zero(dv.p, n * KVD);
    {
      Phase ph("  LM attention bwd");
      cu::attention_backward_dev(dq.p, dk.p, dv.p, datt.p, A.q.p, A.k.p, A.v.p, A.att.p, A.lse.p, a.spans.data(),
                                 a.dspans.p, n, n, NH, KVH, D);
    }
    cu::rope_backward(dqr.p, dq.p, a.cos.p, a.sin.p, n, NH, D, false);
    cu::rope_backward(dkr.p, dk.p, a.cos.p, a.sin.p, n, KVH, D, false);
    lin_backward(L.q, dh.p, dqr.p, A.h1.p, n, false);
    lin_backward(L.k, dh.p, dkr.p, A.h1.p, n, true);
    lin_backward(L.v, dh.p, dv.p, A.h1.p, n, true);
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
  cu::rope_mrope_table(a.cos.fit(n * D / 2), a.sin.fit(n * D / 2), dpos.p, tc().section, n, D, tc().theta);
}

// Embeddings of n packed rows (dids on the device) with the image rows a.img_rows replaced by a.img,
// into x (n, H) fp32.
template <typename T>
void CudaModel<T>::embed_prompts(CuActs<T>& a, DArray<float>& x, const int32_t* dids, int64_t n) {
  const int64_t H = tc().hidden;
  cu::embedding_forward(x.fit(n * H), dids, P(h_.embed_), n, H);
  if (!a.img_rows_h.empty())
    cu::scatter_rows(x.p, static_cast<const T*>(a.img.p), a.img_rows.p, static_cast<int64_t>(a.img_rows_h.size()), H);
}

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
  if (!imgs.empty()) {
    vision_prepare(a, imgs);
    // the vision tower keeps its activations only when its gradients are wanted (backward_pack skips
    // it for a frozen tower: LoRA on the LM alone)
    Phase ph(keep ? "vision forward (keep)" : "vision forward");
    vision_forward(a, keep && vision_trainable());
  }
  DArray<float> x("text activations");
  embed_prompts(a, x, dids.p, Tn);
  {
    Phase ph(keep ? "LM forward (keep)" : "LM forward");
    text_forward(a, Tn, x, a.cos.p, a.sin.p, a.spans.data(), a.dspans.p, keep, nullptr, nullptr, 0, nullptr);
  }
  Phase ph_head("head + log-probs forward");
  std::vector<float> hlp(R), hent(R);
  if (R > 0) {
    cu::gather_rows(a.hrows.fit(R * H), static_cast<const T*>(a.hf.p), a.head_rows.p, R, H);
    cu::linear_forward(a.logits.fit(R * V), a.hrows.p, P(h_.head_), static_cast<const T*>(nullptr), R, H, V);
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
      cu::linear_forward(all.p, a.hf.p + o0 * H, P(h_.head_), static_cast<const T*>(nullptr), rows, H, V);
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
    Phase ph("head backward");
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
    cu::linear_backward(dhrows.fit(R * H), G(h_.head_), static_cast<float*>(nullptr), a.logits.p,
                        a.hrows.p, P(h_.head_), R, H, V, false);
    a.logits.release();
    zero(dhf.fit(Tn * H), Tn * H);
    cu::scatter_add_rows(dhf.p, dhrows.p, a.head_rows.p, R, H);
    cu::rmsnorm_backward(dx.p, G(h_.norm_), dhf.p, static_cast<const float*>(a.xf.p), P(h_.norm_), a.rstdf.p, Tn, H,
                         dxT.p);
  }
  {
    Phase ph("LM backward");
    text_backward(a, Tn, dx.p, dxT.p);
  }
  if (float* dwte = G(h_.embed_)) cu::embedding_backward(dwte, static_cast<const float*>(dx.p), a.ids.p, Tn, H);
  if (!a.img_rows_h.empty() && vision_trainable()) {
    const int64_t ni = static_cast<int64_t>(a.img_rows_h.size());
    DArray<T> dimg("vision gradients");
    cu::gather_rows(dimg.fit(ni * H), static_cast<const float*>(dx.p), a.img_rows.p, ni, H);
    dx.release();
    dxT.release();
    Phase ph("vision backward");
    vision_backward(a, dimg.p);
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
  DevGuard guard(dev_, st_);
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
  zero(kc_.fit(tc().layers * rows_total * KVD), tc().layers * rows_total * KVD);
  zero(vc_.fit(tc().layers * rows_total * KVD), tc().layers * rows_total * KVD);

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
  if (!imgs.empty()) {
    vision_prepare(a, imgs);
    Phase ph("sample: vision");
    vision_forward(a, false);
  }
  DArray<float> x("text activations");
  embed_prompts(a, x, dids.p, NP);
  {
    Phase ph("sample: LM prefill");
    text_forward(a, NP, x, a.cos.p, a.sin.p, a.spans.data(), a.dspans.p, false, kc_.p, vc_.p, rows_total, dslots.p);
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
    std::vector<int64_t> src(Bmax);
    for (int64_t b = 0; b < Bmax; b++) src[b] = last[active[b].r];
    DArray<int64_t> dsrc("sampling");
    upload(dsrc, src.data(), Bmax);
    cu::gather_rows(hrep.p, static_cast<const T*>(a.hf.p), dsrc.p, Bmax, H);
    cu::linear_forward(logits.p, hrep.p, P(h_.head_), static_cast<const T*>(nullptr), Bmax, H, V);
    stage_params(active, 0);
    CU_CHECK(cudaMemcpyAsync(ds, hs, total, cudaMemcpyHostToDevice, st_), "decode step inputs");
    active = pick(active, 0, false);
  }
  // graphs need the flash path (device spans; the cuBLASLt path plans tiles on the host)
  const bool graphs = opt_.graphs && std::is_same<T, cu::bf16>::value && cu::flash_enabled() && cu::flash_supported(D);
  std::vector<Span> sp;
  Phase ph_decode("sample: decode steps");
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
                     tc().section, B, D, tc().theta);
    stage_params(active, t);
    CU_CHECK(cudaMemcpyAsync(ds, hs, total, cudaMemcpyHostToDevice, st_), "decode step inputs");
    auto step = [&] {
      cu::embedding_forward(xs.p, reinterpret_cast<const int32_t*>(D_(o_ids)), P(h_.embed_), B, H);
      text_forward(a, B, xs, reinterpret_cast<const float*>(D_(o_cos)), reinterpret_cast<const float*>(D_(o_sin)),
                   sp.data(), reinterpret_cast<const Span*>(D_(o_spans)), false, kc_.p, vc_.p, rows_total,
                   reinterpret_cast<const int64_t*>(D_(o_slots)));
      cu::linear_forward(logits.p, a.hf.p, P(h_.head_), static_cast<const T*>(nullptr), B, H, V);
      cu::sample_rows_multi(dtok.p, dlp.p, logits.p, reinterpret_cast<const float*>(D_(o_temp)),
                            reinterpret_cast<const uint64_t*>(D_(o_seed)), reinterpret_cast<const int64_t*>(D_(o_g)),
                            reinterpret_cast<const int64_t*>(D_(o_t)), B, V);
    };
    auto it = graphs ? graphs_.find(B) : graphs_.end();
    if (it != graphs_.end()) {
      CU_CHECK(cudaGraphLaunch(it->second, st_), "decode step (graph)");
    } else {
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

std::unique_ptr<DeviceModel> make_cuda_model(Model& host, int device, bool bf16, const CudaOptions& opts) {
  std::string why;
  VQ_CHECK(cuda_available(&why), "device cuda:" << device << " is not available: " << why);
  if (bf16) return std::make_unique<CudaModel<cu::bf16>>(host, device, opts);
  return std::make_unique<CudaModel<float>>(host, device, opts);
}
std::unique_ptr<DeviceModel> make_cuda_model(Model& host, int device, bool bf16) {
  return make_cuda_model(host, device, bf16, cuda_options_from_env());
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
void cuda_mem_info(size_t* free_bytes, size_t* total_bytes, size_t* pool_idle_bytes) {
  CU_CHECK(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
  const size_t reserved = cu::pool_reserved(), used = cu::pool_used();
  *pool_idle_bytes = reserved > used ? reserved - used : 0;
}
void cuda_sync() { CU_CHECK(cudaDeviceSynchronize(), "cuda_sync"); }

template class CudaModel<float>;
template class CudaModel<cu::bf16>;

}  // namespace vq
