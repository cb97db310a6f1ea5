// Qwen2-VL over the ops of ops/ops.h: parameters, forward, backward, shared-prefix packing, KV cache,
// LoRA, AdamW, checkpoints. Plain structs over one contiguous fp32 parameter buffer (llm.c's manner);
// gradients and optimizer moments are allocated on first use.
#pragma once
#include <cstdint>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/gemm.h"
#include "ops/ops.h"
#include "vision_cache.h"

namespace vq {

// ---- configuration (validated and normalised by src/engine/config.ts) ---------------------------
// The Qwen-VL family (config.json model_type). The parameter table, the vision tower and the text
// stack follow it; docs/engine.md lists what differs.
enum class Family { qwen2_vl = 0, qwen2_5_vl = 1, qwen3_vl = 2 };
// The vision MLP's activation: quick_gelu / gelu (Qwen2-VL fc1 -> act -> fc2), silu (Qwen2.5-VL's gated
// MLP: down(silu(gate) * up)), gelu_tanh (Qwen3-VL, linear_fc1 -> act -> linear_fc2).
enum class VisionAct { quick_gelu = 0, gelu = 1, silu = 2, gelu_tanh = 3 };

struct VisionConfig {
  int depth = 0;            // blocks
  int embed_dim = 0;        // E
  int num_heads = 0;        // heads (head dim E / heads)
  int mlp_hidden = 0;       // E * mlp_ratio
  int out_hidden = 0;       // the merger's output = the LM hidden size
  int in_channels = 3;
  int patch_size = 14;
  int temporal_patch_size = 2;
  int merge = 2;            // spatial_merge_size
  bool quick_gelu = true;   // hidden_act: quick_gelu (else exact gelu); Qwen2-VL only
  VisionAct act = VisionAct::quick_gelu;
  float theta = 10000.0f;   // 2D rotary base
  bool rmsnorm = false;     // Qwen2.5-VL: RMSNorm in blocks and merger (else LayerNorm with bias)
  int window_size = 0;      // Qwen2.5-VL: window side in pixels (0: no windows)
  std::vector<int> fullatt;    // Qwen2.5-VL: blocks attending over the whole frame
  int num_pos = 0;          // Qwen3-VL: learned position embeddings (side^2), interpolated to the grid
  std::vector<int> deepstack;  // Qwen3-VL: blocks whose outputs feed the DeepStack mergers
  int patch_dim() const { return in_channels * temporal_patch_size * patch_size * patch_size; }
};

struct TextConfig {
  int vocab = 0, hidden = 0, inter = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  float eps = 1e-6f;
  float theta = 1e6f;
  int32_t section[3] = {0, 0, 0};  // mrope_section, sums to head_dim / 2
  bool tied = false;
  bool qkv_bias = true;            // Qwen3-VL: false
  bool qk_norm = false;            // Qwen3-VL: per-head RMSNorm of q and k (q_norm, k_norm) before rope
  bool mrope_interleaved = false;  // Qwen3-VL: interleaved M-RoPE
};

struct ModelConfig {
  Family family = Family::qwen2_vl;
  TextConfig text;
  VisionConfig vision;
  int image_token_id = -1;
  int video_token_id = -1;        // -1: the model takes no video
  float tokens_per_second = 1.0f; // Qwen2.5-VL: M-RoPE time positions per second of video
};

// ---- inputs ------------------------------------------------------------------------------------
// An image's pixel values: owned, or a view of memory that the caller keeps alive and unchanged until
// the call that reads it has returned (the N-API layer: a JavaScript Float32Array, held by a reference
// until the call settles — a step's images are not copied once per call).
class Pixels {
 public:
  // Owned values (the view, if any, is dropped).
  void resize(size_t n) {
    view_ = nullptr;
    n_ = 0;
    own_.resize(n);
  }
  std::vector<float>::iterator begin() { return own_.begin(); }
  std::vector<float>::iterator end() { return own_.end(); }
  // A view of n values at p (the owned values are freed).
  void view(const float* p, size_t n) {
    std::vector<float>().swap(own_);
    view_ = p;
    n_ = n;
  }
  const float* data() const { return view_ ? view_ : own_.data(); }
  size_t size() const { return view_ ? n_ : own_.size(); }

 private:
  std::vector<float> own_;
  const float* view_ = nullptr;
  size_t n_ = 0;
};

struct Image {
  Pixels pixels;  // (t*h*w, patch_dim), the processor's order
  int t = 1, h = 0, w = 0;    // grid_thw in patches
  // A video: its tokens are video_token_id. Qwen2-VL: time position = temporal patch index; Qwen2.5-VL:
  // index * tokens_per_second * int(second_per_grid) (transformers 5 truncates the seconds); Qwen3-VL:
  // every temporal patch is its own run of tokens (the processor puts a timestamp text and vision
  // start/end between them), time position 0.
  bool video = false;
  // seconds one temporal patch spans: temporal_patch_size / the sampled fps (frames kept / frames in
  // the clip * the clip's fps), transformers' second_per_grid_ts (a float32 there too)
  float second_per_grid = 1.0f;
  // Identifies these pixels for the vision feature cache (vision_cache.h): minted by TypeScript once per
  // processed pixel array. 0: not cached.
  uint64_t key = 0;
};

// One contiguous run of visual tokens in a prompt (visual_runs): an image, a video, or (Qwen3-VL) one
// temporal patch of a video.
struct VisualRun {
  int32_t token = 0;  // image_token_id or video_token_id
  int t = 1, gh = 0, gw = 0;  // grid after merging (gh = h / merge)
  double tscale = 1.0;        // time position of temporal patch i: floor(i * tscale)
  int64_t tokens() const { return static_cast<int64_t>(t) * gh * gw; }
};

struct Prompt {
  std::vector<int32_t> ids;  // image pad tokens expanded
  std::vector<Image> images;
};

struct ForwardRequest {
  Prompt prompt;
  std::vector<std::vector<int32_t>> completions;
  bool return_logits = false;
};

struct ForwardResult {
  std::vector<std::vector<float>> logprobs, entropy;
  std::vector<std::vector<float>> logits;  // (Lp + Lg, V) per completion when asked
};

struct SampleRequest {
  Prompt prompt;
  int n = 1;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;
  int max_tokens = 16;
  std::vector<int32_t> stop;
  uint64_t seed = 0;
  bool stream = false;  // sample_run: report each token to the sink as it is produced
};

struct SampleResult {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> logprobs;
  std::vector<bool> stopped;  // true: a stop id ended it; false: max_tokens
};

struct AdamWOptions {
  float lr = 1e-5f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f, max_grad_norm = 0.0f;
};

struct StepResult {
  double grad_norm = 0.0;
  bool skipped = false;
  std::string reason;
};

struct LoraOptions {
  int rank = 0;
  float alpha = 0.0f;
  std::vector<std::string> targets;  // module names: q_proj, ..., qkv, proj, fc1, fc2
  bool vision = false;
  uint64_t seed = 0;
};

// ---- parameters --------------------------------------------------------------------------------
struct ParamInfo {
  std::string name;  // published name (model.layers.0..., visual.blocks.0..., lm_head.weight)
  std::vector<int64_t> shape;
  int64_t offset = 0, size = 0;
  bool vision = false;
};

// A linear module: weight, optional bias, optional LoRA adapter (indices into the tables).
struct Lin {
  int w = -1, b = -1, lora = -1;
  int64_t in = 0, out = 0;
  std::string module;  // published module path, e.g. model.layers.0.self_attn.q_proj
};

struct LoraInfo {
  std::string module;
  int64_t in = 0, out = 0;
  int64_t a_off = 0, b_off = 0;  // A (r, in), B (out, r) in the adapter buffer
  bool vision = false;
};

struct TextLayerW {
  int ln1 = -1, ln2 = -1;
  int qn = -1, kn = -1;  // Qwen3-VL: q_norm, k_norm (head_dim)
  Lin q, k, v, o, gate, up, down;
};

// fc1 -> act -> fc2 (Qwen2-VL fc1/fc2, Qwen3-VL linear_fc1/linear_fc2); Qwen2.5-VL's gated MLP uses
// fc1 = gate_proj, up = up_proj, fc2 = down_proj. n1b/n2b are -1 with RMSNorm.
struct VisionBlockW {
  int n1w = -1, n1b = -1, n2w = -1, n2b = -1;
  Lin qkv, proj, fc1, fc2, up;
};

// The patch merger: norm (over E, or over E·merge² when post-shuffle: Qwen3-VL's DeepStack mergers),
// then fc1, gelu, fc2. nb is -1 with RMSNorm (Qwen2.5-VL).
struct MergerW {
  int nw = -1, nb = -1;
  bool postshuffle = false;
  Lin fc1, fc2;
};

// The host fp32 arrays of one parameter set (all weights, or the LoRA adapters): values, gradients and
// AdamW moments. Gradients and moments stay empty until first used; a device backend sizes and fills
// them when it brings its state back (DeviceModel::pull, pull_grads).
struct HostArrays {
  std::vector<float>& values;
  std::vector<float>& grads;
  std::vector<float>& m;
  std::vector<float>& v;
};

struct Activations;  // model.cc
struct MergerActs;   // activations.h
class SampleInbox;   // sampler.h
class SampleSink;    // sampler.h
class Collective;    // collective.h

// The heavy calls on another device (the CUDA backend, native/src/cuda/model_cuda.cu). A Model with a
// device keeps its host tables (names, shapes, LoRA layout) and its host copy of the weights as the
// checkpoint side; the device holds the working weights, gradients, moments and activations.
class DeviceModel {
 public:
  virtual ~DeviceModel() = default;
  virtual std::vector<ForwardResult> forward(const std::vector<ForwardRequest>& reqs, bool keep) = 0;
  virtual void backward(const std::vector<std::vector<std::vector<float>>>& grads) = 0;
  virtual SampleResult sample(const SampleRequest& req) = 0;
  // Several prompts in one batch (prefill together, every prompt's rows in each decode step).
  virtual std::vector<SampleResult> sample_many(const std::vector<SampleRequest>& reqs) {
    std::vector<SampleResult> r;
    for (const auto& q : reqs) r.push_back(sample(q));
    return r;
  }
  // True when sample_many samples its requests together: a sampling run (sampler.cc) then hands every
  // group of requests it admits to one sample_many call; otherwise one sample() per request.
  virtual bool batches() const { return false; }
  virtual void zero_grad() = 0;
  virtual StepResult step(const AdamWOptions& o) = 0;
  virtual void pull() = 0;        // device weights and moments -> the host Model (before save, _get)
  virtual void pull_grads() = 0;  // device gradients -> the host Model (before _grad)
  virtual void push() = 0;        // host weights and moments -> the device (after _set, load_optimizer)
  virtual std::string name() const = 0;  // "cuda:0 (bf16)"
  // Keep only each layer's input in a training forward and recompute the rest in the backward (less
  // memory, one more forward of compute). Returns false on a device that cannot.
  virtual bool set_checkpoint_activations(bool on) {
    (void)on;
    return false;
  }
  // Most LM rows one training forward pack holds (its activations live together): the trainer sizes
  // its micro-batches to it. 0: no such limit (one pack per call).
  virtual int64_t pack_rows() const { return 0; }
  // Data parallel (docs/multi-gpu.md): the gradients (LoRA's with adapters) summed over the collective's
  // ranks, in buckets of `bucket` floats, on the device's stream (NCCL) or staged through the host (cpu).
  virtual void all_reduce_grads(Collective& c, int64_t bucket);  // model_dist.cc: throws (this device cannot)
  // The device's vision feature cache (vision_cache.h): its bound in bytes (0: off, emptied) and counts.
  virtual void set_vision_cache(size_t max_bytes) { (void)max_bytes; }
  virtual VisionCacheStats vision_cache_stats() const { return {}; }
};

class Model {
 public:
  Model(const ModelConfig& cfg, int max_seq);
  ~Model();

  // Loads every parameter from safetensors shards; checks names and shapes first.
  void load(const std::vector<std::string>& files);
  void add_lora(const LoraOptions& opts);
  // Loads adapter weights from a PEFT adapter_model.safetensors (after add_lora with the same options).
  void load_lora(const std::string& file);

  std::vector<ForwardResult> forward(const std::vector<ForwardRequest>& reqs, bool keep);
  // grads[request][completion][token] = dL/dlogp; uses the activations of the last forward(keep=true).
  void backward(const std::vector<std::vector<std::vector<float>>>& grads);
  SampleResult sample(const SampleRequest& req);
  // Several prompts at once: on a device, one batch (docs/cuda.md); on the CPU, one after another.
  std::vector<SampleResult> sample_many(const std::vector<SampleRequest>& reqs);
  // Several prompts in one batched decode loop, requests joining and leaving while it runs
  // (sampler.h); returns when none is active or waiting. sample() is this with one request.
  void sample_run(SampleInbox& inbox, SampleSink& sink);
  void zero_grad();
  StepResult step(const AdamWOptions& o);
  // Data parallel (model_dist.cc): sums the gradients over the ranks of `c` (zeros where this rank had no
  // backward), in buckets of `bucket` floats; then every rank's step() is the same.
  void all_reduce_grads(Collective& c, int64_t bucket);
  // A 64-bit hash of the trainable weights (the LoRA adapters with LoRA, else every weight) and the step
  // count, as 16 hex digits: ranks that trained in step compare equal. Pulls from the device first.
  std::string weights_hash();

  // Checkpoints (the caller writes config.json / adapter_config.json).
  void save_weights(const std::string& file, bool internal_names) const;
  void save_optimizer(const std::string& file, bool internal_names) const;
  void load_optimizer(const std::string& file);
  void save_lora(const std::string& file, bool internal_names) const;

  const ModelConfig& config() const { return cfg_; }
  int64_t num_params() const { return static_cast<int64_t>(params_.size()); }
  int64_t num_trainable() const;
  bool lora_active() const { return !lora_.empty(); }
  void set_lora_enabled(bool on) { lora_enabled_ = on; }
  bool lora_enabled() const { return lora_enabled_; }
  bool internal_names() const { return internal_names_; }
  int64_t step_count() const { return step_; }
  std::mutex& mutex() { return mutex_; }
  // Cancellation by call id: cancel(id) may come from any thread, before or while call `id` runs;
  // that call throws vq::Error("interrupted") at its next layer or decode step. Ids are issued by
  // the caller (0 = not cancellable); a cancel for a call that already finished changes nothing.
  void cancel(uint64_t id) { cancel_id_.store(id); }
  void begin_call(uint64_t id) { call_id_ = id; }
  void check_cancel() const;

  // The device that runs forward/backward/sample/step (null: this CPU engine).
  void attach_device(std::unique_ptr<DeviceModel> d) { device_ = std::move(d); }
  DeviceModel* device() const { return device_.get(); }

  // For tests and tools: every tensor by published name (LoRA adapters as <module>.lora_A/B.weight).
  std::vector<std::string> tensor_names() const;
  std::vector<int64_t> tensor_shape(const std::string& name) const;
  // For writing: drops the packed copy of that weight (packed_), so the next run repacks it.
  float* tensor_data(const std::string& name);       // throws on an unknown name
  const float* tensor_data(const std::string& name) const;  // for reading
  float* tensor_grad(const std::string& name);       // null before backward or when frozen
  static std::string internal_name(const std::string& published);

  // get_rope_index of transformers: (3, L) positions of a prompt; returns max position + 1.
  int32_t rope_index(const Prompt& p, std::vector<int32_t>& pos) const;
  // The text rotary table of T rows at positions pos (3, T): M-RoPE, interleaved for Qwen3-VL.
  void text_rope_table(float* cos, float* sin, const int32_t* pos, int64_t T) const;
  // Checks a prompt against the config (ids in range, image and video tokens matching the grids).
  void check_prompt(const Prompt& p, const char* what) const;
  // The runs of visual tokens the prompt's images and videos take, in prompt order.
  std::vector<VisualRun> visual_runs(const Prompt& p) const;
  // True for the tokens whose embeddings the vision tower replaces.
  bool is_visual(int32_t id) const { return id == cfg_.image_token_id || (cfg_.video_token_id >= 0 && id == cfg_.video_token_id); }

  // ---- what a device backend (DeviceModel: native/src/cuda) reads and writes of its host Model ----
  // (with config(), rope_index, text_rope_table, is_visual, check_cancel, lora_enabled above). It gets no
  // other access: the host's activations, packed weights and CPU paths stay private.
  // The parameter table: name, shape and offset of every weight in the one fp32 buffer.
  const std::vector<ParamInfo>& param_table() const { return info_; }
  // The weights by role: indices into param_table(), -1 where the family has none.
  int embed_param() const { return embed_; }
  int final_norm_param() const { return norm_; }
  int head_param() const { return head_; }
  int patch_param() const { return patch_; }
  int patch_bias_param() const { return patch_b_; }    // Qwen3-VL
  int pos_embed_param() const { return pos_embed_; }   // Qwen3-VL
  int merger_norm_param() const { return mln_w_; }
  int merger_norm_bias_param() const { return mln_b_; }  // -1 with RMSNorm (Qwen2.5-VL)
  const Lin& merger_fc1() const { return m0_; }
  const Lin& merger_fc2() const { return m2_; }
  const std::vector<TextLayerW>& text_layers() const { return layers_; }
  const std::vector<VisionBlockW>& vision_blocks() const { return blocks_; }
  const std::vector<MergerW>& deepstack_mergers() const { return ds_mergers_; }  // Qwen3-VL
  // The host arrays of the weights (lora = false) or of the LoRA adapters: what a backend uploads at
  // load and push(), and writes back in pull() and pull_grads() (the checkpoint side).
  HostArrays host_arrays(bool lora) {
    return lora ? HostArrays{lparams_, lgrads_, lm_, lv_} : HostArrays{params_, grads_, m_, v_};
  }
  // LoRA: the adapters' slots (offsets of A and B in the adapter buffer), rank and alpha / rank.
  const std::vector<LoraInfo>& lora_slots() const { return lora_; }
  int lora_rank() const { return lora_rank_; }
  float lora_scale() const { return lora_scale_; }
  // False when LoRA freezes the vision tower (no gradient flows into it).
  bool vision_trainable() const;
  // A backend's step() made one AdamW update (the bias corrections read step_count()).
  void count_step() { step_++; }

  // CPU sampling runs on LoRA-merged weights (merged_ below); for tests and tools.
  void set_lora_merged_sampling(bool on) { lora_merged_sampling_ = on; }

  // ---- the vision feature cache (vision_cache.h, docs/engine.md) ----
  // The version of what the vision tower computes: changes with every change that may touch a vision
  // weight (load, a write through tensor_data, a step that trains the tower, adapters on the tower
  // loaded or toggled). Cached features of another version are dropped.
  uint64_t vision_version() const { return (vision_weights_ << 1) | ((lora_vision_ && lora_enabled_) ? 1u : 0u); }
  void vision_weights_changed() { vision_weights_++; }
  // True when a call may take an image's features from the cache: not for a training forward whose
  // vision activations the backward needs (a trainable tower), nor with DeepStack (Qwen3-VL: its
  // per-block features are not cached).
  bool vision_cacheable(bool keep) const { return !(keep && vision_trainable()) && cfg_.vision.deepstack.empty(); }
  // The bound of this model's cache in bytes (the device's with a device; 0: off) and its counts.
  void set_vision_cache(size_t max_bytes);
  VisionCacheStats vision_cache_stats() const;

 private:
  ModelConfig cfg_;
  int max_seq_;
  std::vector<ParamInfo> info_;
  std::map<std::string, int> by_name_;
  std::vector<float> params_, grads_, m_, v_;
  int64_t step_ = 0;
  bool internal_names_ = false;

  // LoRA
  std::vector<LoraInfo> lora_;
  std::vector<float> lparams_, lgrads_, lm_, lv_;
  int lora_rank_ = 0;
  float lora_scale_ = 0.0f;
  bool lora_enabled_ = true;
  bool lora_vision_ = false;
  LoraOptions lora_opts_;

  // weights
  int embed_ = -1, norm_ = -1, head_ = -1, patch_ = -1, mln_w_ = -1, mln_b_ = -1;
  int patch_b_ = -1, pos_embed_ = -1;  // Qwen3-VL: patch embedding bias, learned position embeddings
  Lin m0_, m2_;
  std::vector<TextLayerW> layers_;
  std::vector<VisionBlockW> blocks_;
  std::vector<MergerW> ds_mergers_;  // Qwen3-VL DeepStack, one per vision.deepstack entry

  std::vector<std::unique_ptr<Activations>> saved_;
  // merged image features by image key (the CPU engine's; a device keeps its own)
  VisionFeatureCache<std::vector<float>> vcache_{default_vision_cache_bytes()};
  uint64_t vision_weights_ = 0;
  // The language model's linear weights and head packed for the GEMM (index: parameter): packed by a
  // sampling run for its decode steps and kept for the next runs (and forward(), which uses them too;
  // the arithmetic is the same as unpacked, bit for bit). Dropped when the weights change: load(), a
  // full-parameter step(), a write through tensor_data(). LoRA adapters are applied on top of the
  // packed product (lin_forward), so training or toggling them leaves it valid. VQALAB_PACK_CACHE=0 in
  // the environment: dropped at the end of every run instead (less memory held between runs).
  std::map<int, PackedB> packed_;
  bool keep_packed_ = true;
  void ensure_packed();  // sampler.cc: packs what is missing
  // LoRA, a sampling run (set_lora_merged_sampling): each LM adapter merged into a packed copy of its weight,
  // W + s B A (index: adapter slot), made at the run's start and dropped at its end; lin_forward takes it
  // instead of the base product plus the adapter. Off by default on the CPU (its sampled log-probs then equal
  // forward's bit for bit); the CUDA backend has its own (CudaOptions::lora_merged_sampling).
  std::map<int, PackedB> merged_;
  bool lora_merged_sampling_ = false;
  void merge_lora_packed();  // sampler.cc
  void drop_packed() { packed_.clear(); }
  std::mutex mutex_;
  std::atomic<uint64_t> cancel_id_{0};
  uint64_t call_id_ = 0;

  int add_param(const std::string& name, std::vector<int64_t> shape, bool vision);
  Lin add_linear(const std::string& module, int64_t in, int64_t out, bool bias, bool vision);
  const float* P(int i) const { return params_.data() + info_[i].offset; }
  float* P(int i) { return params_.data() + info_[i].offset; }
  float* G(int i);  // null when frozen or not allocated
  void ensure_grads();

  // model.cc
  void lin_forward(const Lin& l, float* out, const float* inp, int64_t T) const;
  void lin_backward(const Lin& l, float* dinp, const float* dout, const float* inp, int64_t T);
  void vision_forward(Activations& a, const Prompt& p, bool keep);
  // a.img for the prompt's images: from the feature cache where it can, else vision_forward (which keeps
  // the tower's activations when `keep` and the tower is trained)
  void image_features(Activations& a, const Prompt& p, bool keep);
  void vision_backward(Activations& a, const float* dembeds);
  // ds_rows: the rows of x that hold image embeddings, in order (DeepStack adds to them); null or empty
  // when the rows hold no image (decode steps, text-only prompts).
  void text_forward(Activations& a, int64_t T, float* x, const float* cos, const float* sin, const Span* spans,
                    bool keep, float* kcache, float* vcache, int64_t cache_rows, const int64_t* slots,
                    const std::vector<int64_t>* ds_rows = nullptr);
  void vision_norm_forward(float* out, float* mean, float* rstd, const float* x, int w, int b, int64_t N, int64_t C) const;
  void vision_norm_backward(float* dx, const float* dout, const float* x, int w, int b, const float* mean,
                            const float* rstd, int64_t N, int64_t C);
  void merger_forward(const MergerW& mw, MergerActs& ma, const float* x, int64_t N);
  void merger_backward(const MergerW& mw, MergerActs& ma, float* dx, const float* dout, int64_t N);
  void text_backward(Activations& a, int64_t T, float* dx);
  void forward_one(Activations& a, const ForwardRequest& r, ForwardResult& out, bool keep);
  void backward_one(Activations& a, const std::vector<std::vector<float>>& g);

  std::unique_ptr<DeviceModel> device_;  // last: destroyed first, while the tables it reads still exist
};

// One token from one row of logits (V) (sampler.cc): temperature 0 = argmax; else top-k, top-p and
// inverse-CDF sampling with a uniform drawn from (seed, g, t). *logprob: log-softmax of the raw logits.
int32_t sample_token(const float* logits, int64_t V, const SampleRequest& q, uint64_t g, uint64_t t, float* logprob);

}  // namespace vq
