// Model construction, checkpoints (safetensors in Hugging Face's names), LoRA adapters, AdamW.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "common.h"
#include "cpu/threadpool.h"
#include "activations.h"
#include "model.h"
#include "safetensors.h"

namespace vq {

// ---- parameter table ---------------------------------------------------------------------------

int Model::add_param(const std::string& name, std::vector<int64_t> shape, bool vision) {
  ParamInfo p;
  p.name = name;
  p.shape = std::move(shape);
  p.size = numel(p.shape);
  p.offset = info_.empty() ? 0 : info_.back().offset + info_.back().size;
  p.vision = vision;
  by_name_[name] = static_cast<int>(info_.size());
  info_.push_back(std::move(p));
  return static_cast<int>(info_.size()) - 1;
}

Lin Model::add_linear(const std::string& module, int64_t in, int64_t out, bool bias, bool vision) {
  Lin l;
  l.module = module;
  l.in = in;
  l.out = out;
  l.w = add_param(module + ".weight", {out, in}, vision);
  if (bias) l.b = add_param(module + ".bias", {out}, vision);
  return l;
}

Model::Model(const ModelConfig& cfg, int max_seq) : cfg_(cfg), max_seq_(max_seq) {
  if (const char* e = std::getenv("VQALAB_PACK_CACHE")) keep_packed_ = std::strcmp(e, "0") != 0;
  const VisionConfig& v = cfg.vision;
  const TextConfig& t = cfg.text;
  VQ_CHECK(t.heads > 0 && t.kv_heads > 0 && t.heads % t.kv_heads == 0, "num_attention_heads " << t.heads
           << " must be a multiple of num_key_value_heads " << t.kv_heads);
  VQ_CHECK(t.head_dim % 2 == 0 && t.section[0] + t.section[1] + t.section[2] == t.head_dim / 2,
           "mrope_section must sum to head_dim / 2 = " << t.head_dim / 2);
  const int64_t E = v.embed_dim;
  const Family fam = cfg.family;
  if (v.depth > 0) {
    VQ_CHECK(E % v.num_heads == 0 && (E / v.num_heads) % 4 == 0, "vision embed_dim " << E
             << " must split into num_heads " << v.num_heads << " heads of a size divisible by 4");
    patch_ = add_param("visual.patch_embed.proj.weight",
                       {E, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size}, true);
    if (fam == Family::qwen3_vl) {
      VQ_CHECK(v.num_pos > 0, "vision num_position_embeddings must be positive");
      patch_b_ = add_param("visual.patch_embed.proj.bias", {E}, true);
      pos_embed_ = add_param("visual.pos_embed.weight", {v.num_pos, E}, true);
    }
    for (int i = 0; i < v.depth; i++) {
      const std::string pre = "visual.blocks." + std::to_string(i) + ".";
      VisionBlockW b;
      b.n1w = add_param(pre + "norm1.weight", {E}, true);
      if (!v.rmsnorm) b.n1b = add_param(pre + "norm1.bias", {E}, true);
      b.n2w = add_param(pre + "norm2.weight", {E}, true);
      if (!v.rmsnorm) b.n2b = add_param(pre + "norm2.bias", {E}, true);
      b.qkv = add_linear(pre + "attn.qkv", E, 3 * E, true, true);
      b.proj = add_linear(pre + "attn.proj", E, E, true, true);
      if (fam == Family::qwen2_5_vl) {
        b.fc1 = add_linear(pre + "mlp.gate_proj", E, v.mlp_hidden, true, true);
        b.up = add_linear(pre + "mlp.up_proj", E, v.mlp_hidden, true, true);
        b.fc2 = add_linear(pre + "mlp.down_proj", v.mlp_hidden, E, true, true);
      } else {
        const std::string f = fam == Family::qwen3_vl ? "mlp.linear_fc" : "mlp.fc";
        b.fc1 = add_linear(pre + f + "1", E, v.mlp_hidden, true, true);
        b.fc2 = add_linear(pre + f + "2", v.mlp_hidden, E, true, true);
      }
      blocks_.push_back(b);
    }
    const int64_t M = E * v.merge * v.merge;
    if (fam == Family::qwen3_vl) {
      mln_w_ = add_param("visual.merger.norm.weight", {E}, true);
      mln_b_ = add_param("visual.merger.norm.bias", {E}, true);
      m0_ = add_linear("visual.merger.linear_fc1", M, M, true, true);
      m2_ = add_linear("visual.merger.linear_fc2", M, v.out_hidden, true, true);
      for (size_t k = 0; k < v.deepstack.size(); k++) {
        const std::string pre = "visual.deepstack_merger_list." + std::to_string(k) + ".";
        MergerW mw;
        mw.postshuffle = true;
        mw.nw = add_param(pre + "norm.weight", {M}, true);
        mw.nb = add_param(pre + "norm.bias", {M}, true);
        mw.fc1 = add_linear(pre + "linear_fc1", M, M, true, true);
        mw.fc2 = add_linear(pre + "linear_fc2", M, v.out_hidden, true, true);
        ds_mergers_.push_back(mw);
      }
    } else {
      mln_w_ = add_param("visual.merger.ln_q.weight", {E}, true);
      if (!v.rmsnorm) mln_b_ = add_param("visual.merger.ln_q.bias", {E}, true);
      m0_ = add_linear("visual.merger.mlp.0", M, M, true, true);
      m2_ = add_linear("visual.merger.mlp.2", M, v.out_hidden, true, true);
    }
  }
  VQ_CHECK(v.deepstack.size() <= static_cast<size_t>(t.layers), "vision deepstack_visual_indexes has "
           << v.deepstack.size() << " entries but the language model has " << t.layers << " layers");
  const int64_t H = t.hidden, D = t.head_dim;
  embed_ = add_param("model.embed_tokens.weight", {t.vocab, H}, false);
  for (int i = 0; i < t.layers; i++) {
    const std::string pre = "model.layers." + std::to_string(i) + ".";
    TextLayerW L;
    L.ln1 = add_param(pre + "input_layernorm.weight", {H}, false);
    L.ln2 = add_param(pre + "post_attention_layernorm.weight", {H}, false);
    L.q = add_linear(pre + "self_attn.q_proj", H, t.heads * D, t.qkv_bias, false);
    L.k = add_linear(pre + "self_attn.k_proj", H, t.kv_heads * D, t.qkv_bias, false);
    L.v = add_linear(pre + "self_attn.v_proj", H, t.kv_heads * D, t.qkv_bias, false);
    L.o = add_linear(pre + "self_attn.o_proj", t.heads * D, H, false, false);
    if (t.qk_norm) {
      L.qn = add_param(pre + "self_attn.q_norm.weight", {D}, false);
      L.kn = add_param(pre + "self_attn.k_norm.weight", {D}, false);
    }
    L.gate = add_linear(pre + "mlp.gate_proj", H, t.inter, false, false);
    L.up = add_linear(pre + "mlp.up_proj", H, t.inter, false, false);
    L.down = add_linear(pre + "mlp.down_proj", t.inter, H, false, false);
    layers_.push_back(L);
  }
  norm_ = add_param("model.norm.weight", {H}, false);
  head_ = t.tied ? embed_ : add_param("lm_head.weight", {t.vocab, H}, false);
  params_.assign(static_cast<size_t>(info_.back().offset + info_.back().size), 0.0f);
}

std::string Model::internal_name(const std::string& n) {
  // transformers 5 keeps the language model under model.language_model and the vision tower under model.visual.
  if (n.rfind("visual.", 0) == 0) return "model." + n;
  if (n.rfind("model.", 0) == 0) return "model.language_model." + n.substr(6);
  return n;
}

void Model::load(const std::vector<std::string>& files) {
  // Index every tensor of every shard first; nothing is read before all names and shapes check out.
  std::vector<std::unique_ptr<SafetensorsFile>> sts;
  std::map<std::string, std::pair<const SafetensorsFile*, const StTensor*>> where;
  for (const auto& f : files) {
    sts.push_back(std::make_unique<SafetensorsFile>(f));
    for (const auto& t : sts.back()->tensors()) where[t.name] = {sts.back().get(), &t};
  }
  bool any_internal = false, any_published = false;
  for (const auto& kv : where) {
    if (kv.first.rfind("model.language_model.", 0) == 0 || kv.first.rfind("model.visual.", 0) == 0) any_internal = true;
    if (kv.first.rfind("model.layers.", 0) == 0 || kv.first.rfind("visual.", 0) == 0 ||
        kv.first == "model.embed_tokens.weight")
      any_published = true;
  }
  internal_names_ = any_internal && !any_published;
  const std::string files_desc = files.size() == 1 ? files[0] : files[0] + " (and " + std::to_string(files.size() - 1) + " more shards)";
  std::vector<std::pair<int, std::pair<const SafetensorsFile*, const StTensor*>>> plan;
  for (size_t i = 0; i < info_.size(); i++) {
    const ParamInfo& p = info_[i];
    const std::string name = internal_names_ ? internal_name(p.name) : p.name;
    auto it = where.find(name);
    VQ_CHECK(it != where.end(), "missing tensor " << name << " (expected shape " << shape_str(p.shape) << ") in "
                                                  << files_desc);
    const StTensor* st = it->second.second;
    VQ_CHECK(st->shape == p.shape, "tensor " << name << " in " << it->second.first->path() << " has shape "
                                             << shape_str(st->shape) << " but the config needs " << shape_str(p.shape));
    VQ_CHECK(st->dtype == "F32" || st->dtype == "BF16" || st->dtype == "F16" || st->dtype == "F64",
             "tensor " << name << " in " << it->second.first->path() << " has dtype " << st->dtype
                       << "; supported: F32, BF16, F16, F64");
    plan.push_back({static_cast<int>(i), it->second});
  }
  drop_packed();
  vision_weights_changed();
  for (const auto& pl : plan) pl.second.first->read_f32(*pl.second.second, P(pl.first));
}

// ---- LoRA --------------------------------------------------------------------------------------

void Model::add_lora(const LoraOptions& o) {
  VQ_CHECK(lora_.empty(), "LoRA adapters are already attached");
  std::set<std::string> targets(o.targets.begin(), o.targets.end());
  lora_rank_ = o.rank;
  lora_scale_ = o.alpha / static_cast<float>(o.rank);
  lora_vision_ = o.vision;
  lora_opts_ = o;
  vision_weights_changed();
  int64_t off = 0;
  auto attach = [&](Lin& l, bool vision) {
    const std::string leaf = l.module.substr(l.module.rfind('.') + 1);
    if (!targets.count(leaf)) return;
    if (vision && !o.vision) return;
    LoraInfo li;
    li.module = l.module;
    li.in = l.in;
    li.out = l.out;
    li.vision = vision;
    li.a_off = off;
    off += o.rank * l.in;
    li.b_off = off;
    off += l.out * o.rank;
    l.lora = static_cast<int>(lora_.size());
    lora_.push_back(li);
  };
  for (auto& b : blocks_) {
    attach(b.qkv, true);
    attach(b.proj, true);
    attach(b.fc1, true);
    if (b.up.w >= 0) attach(b.up, true);
    attach(b.fc2, true);
  }
  for (auto& L : layers_)
    for (Lin* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) attach(*l, false);
  VQ_CHECK(!lora_.empty(), "LoRA target modules match no module of this model");
  lparams_.assign(static_cast<size_t>(off), 0.0f);
  // PEFT's default init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0.
  std::mt19937_64 rng(o.seed);
  for (const auto& li : lora_) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(li.in));
    std::uniform_real_distribution<float> U(-bound, bound);
    for (int64_t i = 0; i < o.rank * li.in; i++) lparams_[li.a_off + i] = U(rng);
  }
  grads_.clear();
  m_.clear();
  v_.clear();
  step_ = 0;
}

static std::string peft_key(const std::string& module, bool internal, const char* ab) {
  // PEFT's names: base_model.model.<module path>.lora_A.weight (adapter name removed)
  return "base_model.model." + (internal ? Model::internal_name(module) : module) + ".lora_" + ab + ".weight";
}

void Model::load_lora(const std::string& file) {
  SafetensorsFile st(file);
  vision_weights_changed();  // adapters on the tower change its features
  for (const auto& li : lora_) {
    for (const char* ab : {"A", "B"}) {
      const std::vector<int64_t> shape = ab[0] == 'A' ? std::vector<int64_t>{lora_rank_, li.in}
                                                      : std::vector<int64_t>{li.out, lora_rank_};
      const StTensor* t = st.find(peft_key(li.module, false, ab));
      if (!t) t = st.find(peft_key(li.module, true, ab));
      VQ_CHECK(t, "missing tensor " << peft_key(li.module, internal_names_, ab) << " (expected shape "
                                    << shape_str(shape) << ") in " << file);
      VQ_CHECK(t->shape == shape, "tensor " << t->name << " in " << file << " has shape " << shape_str(t->shape)
                                            << " but the adapter needs " << shape_str(shape));
      st.read_f32(*t, lparams_.data() + (ab[0] == 'A' ? li.a_off : li.b_off));
    }
  }
}

void Model::save_lora(const std::string& file, bool internal) const {
  if (device_) device_->pull();
  std::vector<StWrite> w;
  for (const auto& li : lora_) {
    w.push_back({peft_key(li.module, internal, "A"), {lora_rank_, li.in}, lparams_.data() + li.a_off});
    w.push_back({peft_key(li.module, internal, "B"), {li.out, lora_rank_}, lparams_.data() + li.b_off});
  }
  write_safetensors(file, std::move(w), {{"format", "pt"}});
}

// ---- tensors by name ---------------------------------------------------------------------------

std::vector<std::string> Model::tensor_names() const {
  std::vector<std::string> out;
  for (const auto& p : info_) out.push_back(p.name);
  for (const auto& li : lora_) {
    out.push_back(li.module + ".lora_A.weight");
    out.push_back(li.module + ".lora_B.weight");
  }
  return out;
}

namespace {
bool lora_name(const std::string& name, std::string& module, bool& is_a) {
  const std::string a = ".lora_A.weight", b = ".lora_B.weight";
  if (name.size() > a.size() && name.compare(name.size() - a.size(), a.size(), a) == 0) {
    module = name.substr(0, name.size() - a.size());
    is_a = true;
    return true;
  }
  if (name.size() > b.size() && name.compare(name.size() - b.size(), b.size(), b) == 0) {
    module = name.substr(0, name.size() - b.size());
    is_a = false;
    return true;
  }
  return false;
}
}  // namespace

std::vector<int64_t> Model::tensor_shape(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return info_[it->second].shape;
  std::string module;
  bool is_a;
  if (lora_name(name, module, is_a))
    for (const auto& li : lora_)
      if (li.module == module) return is_a ? std::vector<int64_t>{lora_rank_, li.in} : std::vector<int64_t>{li.out, lora_rank_};
  VQ_FAIL("unknown tensor " << name);
}

float* Model::tensor_data(const std::string& name) {
  if (device_) device_->pull();
  auto it = by_name_.find(name);
  vision_weights_changed();  // the caller may write a vision weight (or a vision adapter)
  if (it != by_name_.end()) {
    packed_.erase(it->second);  // the caller may write: repacked by the next run
    return P(it->second);
  }
  std::string module;
  bool is_a;
  if (lora_name(name, module, is_a))
    for (const auto& li : lora_)
      if (li.module == module) return lparams_.data() + (is_a ? li.a_off : li.b_off);
  VQ_FAIL("unknown tensor " << name);
}

const float* Model::tensor_data(const std::string& name) const {
  if (device_) device_->pull();
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return P(it->second);
  std::string module;
  bool is_a;
  if (lora_name(name, module, is_a))
    for (const auto& li : lora_)
      if (li.module == module) return lparams_.data() + (is_a ? li.a_off : li.b_off);
  VQ_FAIL("unknown tensor " << name);
}

float* Model::tensor_grad(const std::string& name) {
  if (device_) device_->pull_grads();
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return G(it->second);
  std::string module;
  bool is_a;
  if (lora_name(name, module, is_a))
    for (const auto& li : lora_)
      if (li.module == module) return lgrads_.empty() ? nullptr : lgrads_.data() + (is_a ? li.a_off : li.b_off);
  VQ_FAIL("unknown tensor " << name);
}

// ---- gradients and AdamW -----------------------------------------------------------------------

float* Model::G(int i) {
  if (!lora_.empty() || grads_.empty()) return nullptr;
  return grads_.data() + info_[i].offset;
}

bool Model::vision_trainable() const { return lora_.empty() ? true : lora_vision_; }

int64_t Model::num_trainable() const {
  if (!lora_.empty()) return static_cast<int64_t>(lparams_.size());
  int64_t n = 0;
  for (const auto& p : info_) n += p.size;
  return n;
}

void Model::ensure_grads() {
  if (!lora_.empty()) {
    if (lgrads_.empty()) lgrads_.assign(lparams_.size(), 0.0f);
  } else if (grads_.empty()) {
    grads_.assign(params_.size(), 0.0f);
  }
}

void Model::zero_grad() {
  if (device_) return device_->zero_grad();
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  std::fill(lgrads_.begin(), lgrads_.end(), 0.0f);
}

StepResult Model::step(const AdamWOptions& o) {
  if (vision_trainable()) vision_weights_changed();  // the update may move vision weights (or their adapters)
  if (device_) return device_->step(o);
  StepResult r;
  const bool lora = !lora_.empty();
  std::vector<float>& p = lora ? lparams_ : params_;
  std::vector<float>& g = lora ? lgrads_ : grads_;
  std::vector<float>& m = lora ? lm_ : m_;
  std::vector<float>& v = lora ? lv_ : v_;
  if (g.empty()) {  // no backward since load: nothing to do
    r.skipped = true;
    r.reason = "no gradients (call backward first)";
    return r;
  }
  const double ss = sum_squares(g.data(), static_cast<int64_t>(g.size()));
  r.grad_norm = std::sqrt(ss);
  if (!std::isfinite(ss)) {
    // Name the first tensor holding a non-finite value; weights and moments stay untouched.
    std::string where;
    if (lora) {
      for (const auto& li : lora_) {
        if (!all_finite(g.data() + li.a_off, lora_rank_ * li.in)) { where = li.module + ".lora_A.weight"; break; }
        if (!all_finite(g.data() + li.b_off, li.out * lora_rank_)) { where = li.module + ".lora_B.weight"; break; }
      }
    } else {
      for (const auto& pi : info_)
        if (!all_finite(g.data() + pi.offset, pi.size)) { where = pi.name; break; }
    }
    r.skipped = true;
    r.reason = "non-finite gradient (NaN or Inf) in " + where;
    return r;
  }
  if (m.empty()) {
    m.assign(p.size(), 0.0f);
    v.assign(p.size(), 0.0f);
  }
  if (!lora) drop_packed();  // the base weights change (LoRA steps change only the adapters)
  step_++;
  float scale = 1.0f;
  if (o.max_grad_norm > 0.0f) {
    const double coef = o.max_grad_norm / (r.grad_norm + 1e-6);
    if (coef < 1.0) scale = static_cast<float>(coef);
  }
  // Weight decay only on tensors of 2 or more dimensions (not biases, not norms); LoRA A/B are 2-D.
  // All tensors in one parallel pass of fixed-size chunks (a pool round trip per tensor costs more
  // than the update of a small one).
  struct Chunk {
    int64_t off, n;
    float wd;
  };
  std::vector<Chunk> chunks;
  constexpr int64_t kChunk = 1 << 15;
  auto add = [&](int64_t off, int64_t n, float wd) {
    for (int64_t i = 0; i < n; i += kChunk) chunks.push_back({off + i, std::min(kChunk, n - i), wd});
  };
  if (lora) add(0, static_cast<int64_t>(p.size()), o.weight_decay);
  else
    for (const auto& pi : info_) add(pi.offset, pi.size, pi.shape.size() >= 2 ? o.weight_decay : 0.0f);
  ThreadPool::get().parallel_tasks(static_cast<int64_t>(chunks.size()), [&](int64_t c, int) {
    const Chunk& ch = chunks[c];  // adamw_update runs serially inside a pool task
    adamw_update(p.data() + ch.off, g.data() + ch.off, m.data() + ch.off, v.data() + ch.off, ch.n, o.lr, o.beta1,
                 o.beta2, o.eps, ch.wd, step_, scale);
  });
  return r;
}

// ---- saving ------------------------------------------------------------------------------------

void Model::save_weights(const std::string& file, bool internal) const {
  if (device_) device_->pull();
  std::vector<StWrite> w;
  for (size_t i = 0; i < info_.size(); i++) {
    w.push_back({internal ? internal_name(info_[i].name) : info_[i].name, info_[i].shape, P(static_cast<int>(i))});
  }
  write_safetensors(file, std::move(w), {{"format", "pt"}});
}

void Model::save_optimizer(const std::string& file, bool internal) const {
  if (device_) device_->pull();
  const bool lora = !lora_.empty();
  const std::vector<float>& m = lora ? lm_ : m_;
  const std::vector<float>& v = lora ? lv_ : v_;
  VQ_CHECK(!m.empty(), "no optimizer state to save: no step has been taken");
  std::vector<StWrite> w;
  if (lora) {
    for (const auto& li : lora_)
      for (const char* ab : {"A", "B"}) {
        const int64_t off = ab[0] == 'A' ? li.a_off : li.b_off;
        const std::vector<int64_t> shape = ab[0] == 'A' ? std::vector<int64_t>{lora_rank_, li.in}
                                                        : std::vector<int64_t>{li.out, lora_rank_};
        const std::string key = peft_key(li.module, internal, ab);
        w.push_back({key + ".exp_avg", shape, m.data() + off});
        w.push_back({key + ".exp_avg_sq", shape, v.data() + off});
      }
  } else {
    for (const auto& pi : info_) {
      const std::string key = internal ? internal_name(pi.name) : pi.name;
      w.push_back({key + ".exp_avg", pi.shape, m.data() + pi.offset});
      w.push_back({key + ".exp_avg_sq", pi.shape, v.data() + pi.offset});
    }
  }
  write_safetensors(file, std::move(w), {{"step", std::to_string(step_)}, {"optimizer", "adamw"}});
}

void Model::load_optimizer(const std::string& file) {
  SafetensorsFile st(file);
  const bool lora = !lora_.empty();
  std::vector<float>& m = lora ? lm_ : m_;
  std::vector<float>& v = lora ? lv_ : v_;
  const size_t n = lora ? lparams_.size() : params_.size();
  std::vector<float> nm(n), nv(n);
  auto read = [&](const std::string& key, const std::string& key2, const std::vector<int64_t>& shape, int64_t off) {
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      const StTensor* t = st.find(key + suffix);
      if (!t) t = st.find(key2 + suffix);
      VQ_CHECK(t, "missing tensor " << key << suffix << " (expected shape " << shape_str(shape) << ") in " << file);
      VQ_CHECK(t->shape == shape, "tensor " << t->name << " in " << file << " has shape " << shape_str(t->shape)
                                            << " but the model needs " << shape_str(shape));
      st.read_f32(*t, (std::strcmp(suffix, ".exp_avg") == 0 ? nm.data() : nv.data()) + off);
    }
  };
  if (lora) {
    for (const auto& li : lora_)
      for (const char* ab : {"A", "B"}) {
        const std::vector<int64_t> shape = ab[0] == 'A' ? std::vector<int64_t>{lora_rank_, li.in}
                                                        : std::vector<int64_t>{li.out, lora_rank_};
        read(peft_key(li.module, false, ab), peft_key(li.module, true, ab), shape, ab[0] == 'A' ? li.a_off : li.b_off);
      }
  } else {
    for (const auto& pi : info_) read(pi.name, internal_name(pi.name), pi.shape, pi.offset);
  }
  auto it = st.metadata().find("step");
  VQ_CHECK(it != st.metadata().end(), file << ": no \"step\" in the metadata");
  step_ = std::stoll(it->second);
  m.swap(nm);
  v.swap(nv);
}

}  // namespace vq
