// Internal to the CUDA model (native/src/cuda/model_*.cu): the CudaModel class, its activations and the
// host-side helpers they share. The files by layer: model_cuda.cu (construction, forward/backward entry
// points, factory), model_vision.cu (vision tower), model_text.cu (text decoder), model_family.cu (what
// differs per Qwen-VL family: vision MLP and norms, position embeddings, q/k norms, DeepStack),
// model_pack.cu (packing requests, head and log-probs), model_optimizer.cu (AdamW, offload, host sync),
// model_sample.cu (batched sampling), model_profile.cu (phase timings).
#pragma once
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

// For the duration of one call of a model: its device, its stream and its debug mode (CudaOptions::sync_every_op)
// for every op this thread launches (cuda_common.h says why these are per thread).
struct DevGuard {
  int prev = -1;
  cudaStream_t prev_stream;
  bool prev_sync;
  DevGuard(int dev, cudaStream_t s, bool sync) {
    cudaGetDevice(&prev);
    CU_CHECK(cudaSetDevice(dev), "cudaSetDevice");
    prev_stream = cu::stream();
    prev_sync = cu::debug_sync();
    cu::set_stream(s);
    cu::set_debug_sync(sync);
  }
  ~DevGuard() {
    cu::set_debug_sync(prev_sync);
    cu::set_stream(prev_stream);
    if (prev >= 0) cudaSetDevice(prev);
  }
};

template <typename U>
inline void upload(DArray<U>& d, const U* h, int64_t n) {
  d.fit(n);
  if (n) CU_CHECK(cudaMemcpyAsync(d.p, h, n * sizeof(U), cudaMemcpyHostToDevice, cu::stream()), "upload");
}

// host fp32 -> device T (through an fp32 staging buffer when T is bf16)
template <typename T>
inline void upload_f32(T* dst, const float* h, int64_t n) {
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
inline std::vector<float> download_f32(const T* d, int64_t n) {
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

inline void download(float* h, const float* d, int64_t n) {
  if (!n) return;
  CU_CHECK(cudaMemcpyAsync(h, d, n * sizeof(float), cudaMemcpyDeviceToHost, cu::stream()), "download");
  CU_CHECK(cudaStreamSynchronize(cu::stream()), "download");
}

template <typename U>
inline void zero(U* p, int64_t n) {
  if (n) CU_CHECK(cudaMemsetAsync(p, 0, n * sizeof(U), cu::stream()), "memset");
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

// Phase timings (CudaOptions::profile, model_profile.cu): CUDA events around the model's phases, summed by
// name when cuda_profile_report() is called; nothing is recorded when `on` is false, `name` is null, or while a
// stream is being captured (graphs).
struct Phase {
  long idx = -1;
  const char* prev_ctx = nullptr;  // the op profile's phase before this one (a top-level phase sets its own)
  bool ctx = false;
  Phase(bool on, const char* name);
  ~Phase() { stop(); }
  void stop();  // records the end now (once)
  Phase(const Phase&) = delete;
};
// Host wall time of a named section (CudaOptions::profile), summed by name into the same report:
// where the host, not the device, spends a call (staging, uploads, waits on the device).
struct HostPhase {
  const char* name = nullptr;
  double t0 = 0;
  HostPhase(bool on, const char* name);
  ~HostPhase() { stop(); }
  void stop();  // records now (once)
  HostPhase(const HostPhase&) = delete;
};

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
  // Qwen3-VL: q and k before their per-head RMSNorm, and its rstd (rows, heads)
  DArray<T> qraw{"text activations"}, kraw{"text activations"};
  DArray<float> qrstd{"text activations"}, krstd{"text activations"};
  // LoRA: x A^T of the seven adapted linears (q k v o gate up down; rows, rank each), which their
  // backward reads instead of recomputing it
  DArray<T> lxa{"LoRA activations"};
};
// One DeepStack merger (Qwen3-VL): its input is a block's output (fp32, x: a buffer of the tower kept
// for backward), normed over each merged row (E * merge^2), then fc1, gelu, fc2 -> out (Nm, H).
template <typename T>
struct CuMergerActs {
  const float* x = nullptr;
  int block = -1, merger = -1;  // the vision block it reads, the merger (index into deepstack) it uses
  DArray<T> ln{"DeepStack activations"}, h{"DeepStack activations"}, hact{"DeepStack activations"},
      out{"DeepStack features"};
  DArray<float> mean{"DeepStack activations"}, rstd{"DeepStack activations"};
  DArray<T> dout{"DeepStack gradients"};  // the gradient of out (text_backward fills it)
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
  // Qwen3-VL: learned position embeddings, 4 interpolated rows per patch (idx, weights (N, 4))
  DArray<int32_t> pidx{"position embeddings"};
  DArray<float> pw{"position embeddings"};
  // Qwen3-VL DeepStack features, in the order they are made (= the text layer after which each is added)
  std::vector<CuMergerActs<T>> ds;
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
  CudaModel(Model& h, int dev, const CudaOptions& opt);
  ~CudaModel() override;

  int64_t pack_rows() const override { return opt_.pack_rows; }
  void set_vision_cache(size_t max_bytes) override {
    DevGuard g(dev_, st_, opt_.sync_every_op);
    vcache_.set_max_bytes(max_bytes);
  }
  VisionCacheStats vision_cache_stats() const override { return vcache_.stats(); }
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
  void randomize(uint64_t seed, float scale);

  // ---- forward: requests packed up to opt_.pack_rows LM rows ----
  std::vector<ForwardResult> forward(const std::vector<ForwardRequest>& reqs, bool keep) override;

  void backward(const std::vector<std::vector<std::vector<float>>>& grads) override;

  void zero_grad() override;

  StepResult step(const AdamWOptions& o) override;

  void pull() override;

  void pull_grads() override;

  void all_reduce_grads(Collective& c, int64_t bucket) override;

  void push() override;

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
  std::vector<int64_t> lsplit_off_;
  DArray<float> lacc_{"LoRA activations"}, lxa2_{"LoRA activations"};
  DArray<cu::bf16> lxcat_{"LoRA activations"};
  // LoRA-merged LM weights of the sampling call in progress (CudaOptions::lora_merged_sampling): W + s B A per
  // adapter slot at merged_off_[slot] (-1: not merged, a vision slot), used by lin_forward while merged_on_
  DArray<T> merged_{"the LoRA-merged weights (sampling)"};
  std::vector<int64_t> merged_off_;
  bool merged_on_ = false;
  void merge_lora_weights();
  // scratch reused across layers and calls
  CuTextLayer<T> tscr_;
  CuVisionBlock<T> vscr_;
  DArray<T> tmp_{"activations"}, mlp_{"activations"}, qkv_{"vision activations"};
  // decode steps: inputs staged in pinned memory and copied in one transfer; graphs by batch size
  Pinned steph_;
  DArray<char> stepd_{"decode step inputs"};
  std::map<int64_t, cudaGraphExec_t> graphs_;
  // merged vision features by image key (vision_cache.h): the rollout's serve the update's forwards
  VisionFeatureCache<DArray<T>> vcache_{default_vision_cache_bytes()};

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

  void split_lora();

  void push_moments();
  void copy_host_moments();

  // AdamW with the master weights and moments in pinned host memory: chunks of whole tensors (large
  // ones split) go up, are updated on the GPU (writing the bf16 working copy in place) and come back
  // on a second stream while the next chunk goes up.
  template <typename M>
  void step_offload(const AdamWOptions& o, float scale);

  const T* P(int i) const { return w_.p + h_.param_table()[i].offset; }
  float* G(int i) { return (!h_.lora_active() && grads_.p) ? grads_.p + h_.param_table()[i].offset : nullptr; }
  bool vision_trainable() const { return h_.vision_trainable(); }
  const TextConfig& tc() const { return h_.config().text; }

  void ensure_grads() {
    if (h_.lora_active()) {
      if (!lgrads_.p) { lgrads_.what = "the LoRA gradients"; lgrads_.fit(lw_.n); zero(lgrads_.p, lgrads_.n); }
    } else if (!grads_.p) {
      grads_.what = "the gradients (fp32, one per weight)";
      grads_.fit(w_.n);
      zero(grads_.p, grads_.n);
    }
  }

  // xa_keep: where x A^T of the adapter goes (for lin_backward's xa_saved); nullptr: scratch
  void lin_forward(const Lin& l, T* out, const T* inp, int64_t n, T* xa_keep = nullptr) {
    if (merged_on_ && l.lora >= 0 && h_.lora_enabled() && merged_off_[l.lora] >= 0) {  // sampling: W + s B A
      cu::linear_forward(out, inp, static_cast<const T*>(merged_.p + merged_off_[l.lora]),
                         l.b >= 0 ? P(l.b) : static_cast<const T*>(nullptr), n, l.in, l.out);
      return;
    }
    if constexpr (std::is_same<T, cu::bf16>::value) {  // bf16 with an adapter: one rounding (ops.h) unless opted out
      if (l.lora >= 0 && h_.lora_enabled() && opt_.lora_single_rounding) {
        const LoraInfo& li = h_.lora_slots()[l.lora];
        const int64_t R = h_.lora_rank();
        const cu::bf16* A = lsplit_.p + lsplit_off_[l.lora];
        cu::linear_lora_forward(out, xa_keep, inp, P(l.w), l.b >= 0 ? P(l.b) : nullptr, A, A + 2 * R * li.in, n, l.in,
                                l.out, R, h_.lora_scale(), lacc_.fit(n * l.out), lxa2_.fit(n * 2 * R),
                                lxcat_.fit(n * 3 * R));
        return;
      }
    }
    cu::linear_forward(out, inp, P(l.w), l.b >= 0 ? P(l.b) : static_cast<const T*>(nullptr), n, l.in, l.out);
    if (l.lora >= 0 && h_.lora_enabled()) {
      const LoraInfo& li = h_.lora_slots()[l.lora];
      cu::lora_forward(out, xa_keep ? xa_keep : xa_.fit(n * h_.lora_rank()), inp, lw_.p + li.a_off, lw_.p + li.b_off, n, l.in, l.out,
                       h_.lora_rank(), h_.lora_scale());
    }
  }
  // acc = false: dinp is overwritten by this linear (the first of several that add into it)
  // xa_saved: the forward's x A^T of this adapter (lin_forward's xa_keep); nullptr: recomputed here
  void lin_backward(const Lin& l, T* dinp, const T* dout, const T* inp, int64_t n, bool acc = true,
                    const T* xa_saved = nullptr) {
    float* dw = G(l.w);
    float* db = l.b >= 0 ? G(l.b) : nullptr;
    if (dinp || dw || db) cu::linear_backward(dinp, dw, db, dout, inp, P(l.w), n, l.in, l.out, acc);
    if (l.lora >= 0 && h_.lora_enabled()) {
      const LoraInfo& li = h_.lora_slots()[l.lora];
      const T* A = lw_.p + li.a_off;
      const T* B = lw_.p + li.b_off;
      const T* xa = xa_saved;
      if (!xa) {
        T* r = xa_.fit(n * h_.lora_rank());
        cu::linear_forward(r, inp, A, static_cast<const T*>(nullptr), n, l.in, h_.lora_rank());
        xa = r;
      }
      float* dA = lgrads_.p ? lgrads_.p + li.a_off : nullptr;
      float* dB = lgrads_.p ? lgrads_.p + li.b_off : nullptr;
      cu::lora_backward(dinp, dA, dB, dout, inp, xa, A, B, n, l.in, l.out, h_.lora_rank(), h_.lora_scale());
    }
  }

  void vision_prepare(CuActs<T>& a, const std::vector<const Image*>& imgs);
  // Qwen2.5-VL: block bi attends within windows (not one of fullatt_block_indexes)
  bool windowed_block(const CuActs<T>& a, size_t bi) const {
    const auto& f = h_.config().vision.fullatt;
    return !a.win_h.empty() && std::find(f.begin(), f.end(), static_cast<int>(bi)) == f.end();
  }
  void vision_forward(CuActs<T>& a, bool keep);
  // a.img for `imgs`: the cached features of those the cache holds (when h_.vision_cacheable(keep)), the
  // tower (vision_prepare + vision_forward, timed as `phase`) for the others, which are then cached.
  void image_features(CuActs<T>& a, const std::vector<const Image*>& imgs, bool keep, const char* phase);
  void lm_prepare(CuActs<T>& a, DArray<int32_t>& dids, const std::vector<int32_t>& ids, const std::vector<int32_t>& pos,
                  int64_t n);
  void vision_block(size_t bi, CuVisionBlock<T>& A, CuActs<T>& a, float* x, const float* xprev, const T* rprev,
                    float* xmid, T* mlp_out);
  void vision_backward(CuActs<T>& a, const T* dimg);
  // deepstack: add a.ds's features at a.img_rows after the first layers (Qwen3-VL; not in decode steps)
  void text_forward(CuActs<T>& a, int64_t n, DArray<float>& x0, const float* cos, const float* sin, const Span* spans,
                    const Span* dspans, bool keep, T* kcache, T* vcache, int64_t cache_rows, const int64_t* slots,
                    bool deepstack = false);
  void text_layer(size_t li, CuTextLayer<T>& A, int64_t n, float* x, const float* xprev, const T* rprev, float* xmid,
                  T* mlp_out, const float* cos, const float* sin, const Span* spans, const Span* dspans, T* kcache,
                  T* vcache, int64_t cache_rows, const int64_t* slots);
  void text_backward(CuActs<T>& a, int64_t n, float* dx, T* dxT);
  void forward_pack(CuActs<T>& a, const std::vector<ForwardRequest>& reqs, size_t i0, size_t i1,
                    std::vector<ForwardResult>& out, bool keep);
  void backward_pack(CuActs<T>& a, const std::vector<std::vector<std::vector<float>>>& grads, size_t r0);
  void embed_prompts(CuActs<T>& a, DArray<float>& x, const int32_t* dids, int64_t n);

  // ---- what differs per family (model_family.cu) ----
  // The vision MLP up to its activation: act = f(fc1(ln2)) (Qwen2-VL quick_gelu / gelu, Qwen3-VL gelu_tanh)
  // or silu(fc1(ln2)) * up(ln2) (Qwen2.5-VL); and its backward into dln (overwritten).
  void vision_mlp_forward(const VisionBlockW& B, CuVisionBlock<T>& A, int64_t N);
  void vision_mlp_backward(const VisionBlockW& B, CuVisionBlock<T>& A, T* dln, const T* dact, T* dfc1, T* dup, int64_t N);
  // Qwen3-VL learned position embeddings: the interpolation rows and weights of every patch (hpos, wpos
  // and the grid of its image, in the tower's row order), added to x (N, E) fp32; their gradient.
  void pos_embed_prepare(CuActs<T>& a, const std::vector<int32_t>& hw, const std::vector<int32_t>& grid);
  void pos_embed_forward(CuActs<T>& a, float* x);
  void pos_embed_backward(CuActs<T>& a, const float* dx);
  // Qwen3-VL per-head q/k RMSNorm: q, k from the projections (A.qraw, A.kraw) into A.q, A.k; backward from
  // the gradients of the normed q, k (dq, dk) into those of the projections (dqn, dkn, overwritten).
  void qk_norm_forward(const TextLayerW& L, CuTextLayer<T>& A, int64_t n);
  void qk_norm_backward(const TextLayerW& L, CuTextLayer<T>& A, const T* dq, const T* dk, T* dqn, T* dkn, int64_t n);
  // DeepStack, vision side: after block bi, its output x (fp32, N rows) through the mergers that read it.
  void deepstack_merge(CuActs<T>& a, size_t bi, const float* x);
  // ... and their backward into dx (the gradient of block bi's output; dxT gets its T copy).
  void deepstack_merge_backward(CuActs<T>& a, size_t bi, float* dx, T* dxT);
  // Text side: after layer li, x (fp32, the layer's output) += feature li at the image rows; in backward
  // the feature's gradient is dx's image rows.
  bool deepstack_after(const CuActs<T>& a, size_t li) const {
    return li < a.ds.size() && !a.img_rows_h.empty();
  }
  void deepstack_add(CuActs<T>& a, size_t li, float* x);
  void deepstack_grad(CuActs<T>& a, size_t li, const float* dx);
};

}  // namespace vq
