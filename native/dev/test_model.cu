// The whole model on the GPU against the CPU engine, in one process: a small random Qwen2-VL (vision
// tower with an odd 4x6 patch grid, GQA 6/2, M-RoPE, untied head) packed with a shared prefix and 3
// completions; fp32 and bf16 backends. Checks logits, log-probs and entropy (relative to the logits'
// scale), every gradient tensor (fp32: relative L2; bf16: cosine), an AdamW step with clipping,
// greedy and seeded sampling, LoRA forward/backward and sampling on merged weights, and the out-of-memory message. The same checks, a GRPO
// loss with its gradients, packing, checkpointing and sampling options run on tiny Qwen2.5-VL and Qwen3-VL
// models too, and LoRA on each family (weights and inputs from a fresh seed each run: VQALAB_TEST_SEED
// repeats one; it is printed; VQALAB_TEST_SEEDS=n runs the families' checks for n seeds in one process,
// VQALAB_TEST_SEEDS=a,b,c for those seeds, with a summary per seed). The bf16 runs give both engines the
// same bf16-representable weights (round_weights_bf16). Exit 1 on failure.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_common.h"
#include "cuda/model_cuda.h"
#include "dev_options.h"
#include "model.h"

using namespace vq;

namespace {
int failures = 0, checks = 0;
uint64_t g_seed = 0;  // the families' weights and inputs (main sets it, once per seed)
std::vector<std::string> g_seed_failures;  // the checks that failed with the current seed

void report(bool ok, const std::string& what, const std::string& detail) {
  checks++;
  if (!ok) {
    failures++;
    g_seed_failures.push_back(what);
  }
  std::printf("%-4s %-58s %s\n", ok ? "ok" : "FAIL", what.c_str(), detail.c_str());
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}
double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return NAN;
  double m = 0;
  for (size_t i = 0; i < a.size(); i++) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? NAN : d;
    if (std::isnan(m)) return m;
  }
  return m;
}
void rel_cos(const float* a, const float* b, int64_t n, double& rel, double& cos) {
  double dd = 0, bb = 0, aa = 0, ab = 0;
  for (int64_t i = 0; i < n; i++) {
    dd += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    bb += double(b[i]) * b[i];
    aa += double(a[i]) * a[i];
    ab += double(a[i]) * b[i];
  }
  rel = bb > 0 ? std::sqrt(dd / bb) : std::sqrt(dd);
  cos = (aa > 0 && bb > 0) ? ab / std::sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}
std::string fmt(const char* f, double a, double b = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a, b);
  return buf;
}

ModelConfig tiny() {
  ModelConfig c;
  c.vision.depth = 2;
  c.vision.embed_dim = 32;
  c.vision.num_heads = 2;
  c.vision.mlp_hidden = 64;
  c.vision.out_hidden = 48;
  c.text.vocab = 300;
  c.text.hidden = 48;
  c.text.inter = 96;
  c.text.layers = 2;
  c.text.heads = 6;
  c.text.kv_heads = 2;
  c.text.head_dim = 8;
  c.text.section[0] = 1;
  c.text.section[1] = 1;
  c.text.section[2] = 2;
  c.text.theta = 10000.0f;
  c.image_token_id = 299;
  return c;
}

// Qwen2.5-VL: RMSNorm vision blocks with the gated SiLU MLP, windows of 2 x 2 merged units (the 2 x 3
// merged grid of a 4 x 6 frame makes a full and a padded window), full attention in block 1, RMSNorm
// merger; videos with time positions floor(i * second_per_grid * tokens_per_second).
ModelConfig tiny25() {
  ModelConfig c = tiny();
  c.family = Family::qwen2_5_vl;
  c.vision.rmsnorm = true;
  c.vision.act = VisionAct::silu;
  c.vision.quick_gelu = false;
  c.vision.mlp_hidden = 40;
  c.vision.window_size = 56;
  c.vision.fullatt = {1};
  c.video_token_id = 298;
  c.tokens_per_second = 2.0f;
  return c;
}

// Qwen3-VL: patch 16, a 4 x 4 table of learned position embeddings interpolated to the 4 x 6 grid, gelu_tanh
// MLP, DeepStack from both blocks into text layers 0 and 1 of 3 (a feature added after the last layer would
// get no gradient: image rows are no head rows), q/k norms without qkv bias, interleaved M-RoPE (section
// 2/1/1 of the 4 frequencies), videos as runs of one temporal patch each.
ModelConfig tiny3() {
  ModelConfig c = tiny();
  c.family = Family::qwen3_vl;
  c.text.layers = 3;
  c.vision.act = VisionAct::gelu_tanh;
  c.vision.quick_gelu = false;
  c.vision.patch_size = 16;
  c.vision.num_pos = 16;
  c.vision.deepstack = {1, 0};  // made in block order: block 0's feature goes to layer 0, block 1's to layer 1
  c.text.qkv_bias = false;
  c.text.qk_norm = true;
  c.text.mrope_interleaved = true;
  c.text.section[0] = 2;
  c.text.section[1] = 1;
  c.text.section[2] = 1;
  c.video_token_id = 298;
  return c;
}

const char* family_name(const ModelConfig& c) {
  switch (c.family) {
    case Family::qwen2_vl: return "qwen2-vl";
    case Family::qwen2_5_vl: return "qwen2.5-vl";
    case Family::qwen3_vl: return "qwen3-vl";
  }
  return "?";
}

void fill_random(Model& m, uint64_t seed) {
  std::mt19937_64 r(seed);
  for (const auto& n : m.tensor_names()) {
    const auto sh = m.tensor_shape(n);
    const int64_t k = numel(sh);
    float* p = m.tensor_data(n);
    const bool norm = sh.size() == 1 && n.find("bias") == std::string::npos;
    std::uniform_real_distribution<float> U(norm ? 0.8f : -0.15f, norm ? 1.2f : 0.15f);
    for (int64_t i = 0; i < k; i++) p[i] = U(r);
  }
}

// fp32 -> bf16 -> fp32 with round-to-nearest-even, as __float2bfloat16 rounds in the CUDA upload
// (cu::to_bf16 through upload_f32 in cuda/model_internal.cuh); NaN stays NaN.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// The bf16 runs compare the engines on bf16-representable weights. The CPU engine computes with the
// host's fp32 weights while the bf16 device model rounds its working copy to bf16 at upload, so with
// fp32 random weights a bf16 check measured the rounding of every weight (a relative 2^-9 per element,
// large for the norm weights of U(0.8, 1.2)) on top of the device's bf16 compute. A user's checkpoint is
// bf16 (every released Qwen-VL checkpoint is), for which that rounding does not exist: both engines
// start from the same numbers, and the comparison measures the compute alone. The rounding is the
// device's own (round_bf16). LoRA adapters are left as drawn: the device keeps them in fp32 (the
// hi/lo pairs of their master), so they are no rounded copy there. fp32 runs keep the fp32 weights.
void round_weights_bf16(Model& m) {
  for (const auto& n : m.tensor_names()) {
    if (n.find("lora_") != std::string::npos) continue;
    float* p = m.tensor_data(n);
    for (int64_t i = 0, k = numel(m.tensor_shape(n)); i < k; i++) p[i] = round_bf16(p[i]);
  }
}

// The weights of a run: random (fill_random), rounded to bf16 for the bf16 runs (round_weights_bf16).
void fill_weights(Model& m, uint64_t seed, bool bf16) {
  fill_random(m, seed);
  if (bf16) round_weights_bf16(m);
}

void copy_params(Model& dst, Model& src) {
  for (const auto& n : src.tensor_names())
    std::memcpy(dst.tensor_data(n), src.tensor_data(n), numel(src.tensor_shape(n)) * sizeof(float));
}

// Two samplers' draws for one request: tokens equal position by position (of the longer draw's count),
// and the largest log-prob difference where they are equal.
struct SampleAgreement {
  int same, total;
  double dlp;
};
SampleAgreement sample_agreement(const SampleResult& ra, const SampleResult& rb) {
  SampleAgreement r{0, 0, 0.0};
  for (size_t g = 0; g < ra.tokens.size(); g++) {
    for (size_t t = 0; t < std::min(ra.tokens[g].size(), rb.tokens[g].size()); t++) {
      r.same += ra.tokens[g][t] == rb.tokens[g][t];
      if (ra.tokens[g][t] == rb.tokens[g][t]) r.dlp = std::max(r.dlp, std::fabs(double(ra.logprobs[g][t]) - rb.logprobs[g][t]));
    }
    r.total += static_cast<int>(std::max(ra.tokens[g].size(), rb.tokens[g].size()));
  }
  return r;
}

// The largest difference between a draw's log-probs and those forward gives the same tokens after the prompt.
double sample_forward_gap(Model& m, const Prompt& prompt, const SampleResult& r) {
  ForwardRequest fq;
  fq.prompt = prompt;
  fq.completions = r.tokens;
  const auto f = m.forward({fq}, false);
  double d = 0;
  for (size_t g = 0; g < r.tokens.size(); g++) d = std::max(d, max_diff(f[0].logprobs[g], r.logprobs[g]));
  return d;
}

ForwardRequest request(const ModelConfig& c, uint64_t seed = 7) {
  std::mt19937_64 r(seed);
  ForwardRequest q;
  Image im;
  im.t = 1; im.h = 4; im.w = 6;
  im.pixels.resize(static_cast<size_t>(im.t * im.h * im.w * c.vision.patch_dim()));
  std::uniform_real_distribution<float> U(-1, 1);
  for (auto& x : im.pixels) x = U(r);
  q.prompt.images.push_back(im);
  q.prompt.ids = {1, 5, 7};
  for (int i = 0; i < 6; i++) q.prompt.ids.push_back(c.image_token_id);
  for (int i = 0; i < 9; i++) q.prompt.ids.push_back(10 + static_cast<int32_t>(r() % 200));
  if (c.video_token_id >= 0) {  // and a video of 2 temporal patches after the image
    Image v;
    v.t = 2; v.h = 4; v.w = 6;
    v.video = true;
    v.second_per_grid = 1.0f;
    v.pixels.resize(static_cast<size_t>(v.t * v.h * v.w * c.vision.patch_dim()));
    for (auto& x : v.pixels) x = U(r);
    q.prompt.images.push_back(v);
    for (int i = 0; i < 12; i++) q.prompt.ids.push_back(c.video_token_id);
    for (int i = 0; i < 3; i++) q.prompt.ids.push_back(10 + static_cast<int32_t>(r() % 200));
  }
  q.completions = {{3, 4, 5, 6}, {8}, {9, 10, 11, 12, 13}};
  q.return_logits = true;
  return q;
}

void run(bool bf16, const ModelConfig& c = tiny()) {
  const bool family = c.family != Family::qwen2_vl;  // the newer families: a fresh seed
  const std::string tagstr = std::string(bf16 ? "bf16" : "fp32") + (family ? std::string(" ") + family_name(c) : "");
  const char* tag = tagstr.c_str();
  const double tol_logit = bf16 ? 2e-2 : 1e-4;
  Model cpu(c, 4096), gpu(c, 4096);
  fill_weights(cpu, family ? g_seed : 11, bf16);
  copy_params(gpu, cpu);
  gpu.attach_device(make_cuda_model(gpu, 0, bf16, dev::cuda_options_from_env()));
  const ForwardRequest q = request(c, family ? g_seed + 1 : 7);

  auto a = cpu.forward({q}, true);
  auto b = gpu.forward({q}, true);
  double scale = 1e-12;
  for (const auto& l : a[0].logits) scale = std::max(scale, max_abs(l));
  double dl = 0, dp = 0, de = 0;
  for (size_t g = 0; g < q.completions.size(); g++) {
    dl = std::max(dl, max_diff(a[0].logits[g], b[0].logits[g]));
    dp = std::max(dp, max_diff(a[0].logprobs[g], b[0].logprobs[g]));
    de = std::max(de, max_diff(a[0].entropy[g], b[0].entropy[g]));
  }
  report(dl / scale <= tol_logit, std::string("forward logits max_abs/scale ") + tag, fmt("%.2e (scale %.2f)", dl / scale, scale));
  report(dp / scale <= tol_logit, std::string("forward logprobs max_abs/scale ") + tag, fmt("%.2e", dp / scale));
  report(de / scale <= tol_logit, std::string("forward entropy max_abs/scale ") + tag, fmt("%.2e", de / scale));

  // backward of sum w_t logp_t with fresh random w
  std::mt19937_64 r(99);
  std::uniform_real_distribution<float> U(-1, 1);
  std::vector<std::vector<std::vector<float>>> gr(1);
  for (const auto& comp : q.completions) {
    std::vector<float> w(comp.size());
    for (auto& x : w) x = U(r);
    gr[0].push_back(w);
  }
  cpu.zero_grad();
  gpu.zero_grad();
  cpu.backward(gr);
  gpu.backward(gr);
  double worst_rel = 0, worst_cos = 1;
  std::string worst_rel_name, worst_cos_name;
  int n = 0;
  for (const auto& name : cpu.tensor_names()) {
    const int64_t k = numel(cpu.tensor_shape(name));
    const float* ga = cpu.tensor_grad(name);
    const float* gb = gpu.tensor_grad(name);
    if (!ga || !gb) { report(false, "gradient " + name, "missing"); continue; }
    double rel, cs;
    rel_cos(gb, ga, k, rel, cs);
    if (!(rel <= worst_rel)) { worst_rel = rel; worst_rel_name = name; }
    if (!(cs >= worst_cos)) { worst_cos = cs; worst_cos_name = name; }
    n++;
  }
  if (bf16) report(worst_cos >= 0.999, std::string("gradients: worst cosine per tensor ") + tag, fmt("%.6f", worst_cos) + " at " + worst_cos_name + " of " + std::to_string(n));
  else report(worst_rel <= 1e-3, std::string("gradients: worst rel_l2 per tensor ") + tag, fmt("%.2e", worst_rel) + " at " + worst_rel_name + " of " + std::to_string(n));
  std::printf("     (%s: worst rel_l2 %.2e at %s; worst cosine %.6f)\n", tag, worst_rel, worst_rel_name.c_str(), worst_cos);

  // AdamW step with clipping, then the weights, from the same gradients on both engines: Adam's first
  // update is lr * sign(g) per element, so where a gradient is near zero bf16 noise flips its sign and
  // moves that weight by 2 lr; weights after steps from each engine's own gradients would measure that
  // (the gradients themselves are compared above), not the step. The device's gradients go to the CPU.
  for (const auto& name : cpu.tensor_names()) {
    const int64_t k = numel(cpu.tensor_shape(name));
    float* ga = cpu.tensor_grad(name);
    const float* gb = gpu.tensor_grad(name);
    if (ga && gb) std::memcpy(ga, gb, k * sizeof(float));
  }
  AdamWOptions o;
  o.lr = 1e-3f; o.weight_decay = 0.1f; o.max_grad_norm = 0.5f;
  const StepResult sa = cpu.step(o), sb = gpu.step(o);
  report(std::fabs(sa.grad_norm - sb.grad_norm) <= 1e-5 * sa.grad_norm, std::string("step grad_norm ") + tag,
         fmt("%.6f vs %.6f", sb.grad_norm, sa.grad_norm));
  double wr = 0, dd = 0, nn = 0;
  std::string wn;
  for (const auto& name : cpu.tensor_names()) {
    double rel, cs;
    const int64_t k = numel(cpu.tensor_shape(name));
    const float* pa = cpu.tensor_data(name);
    const float* pb = gpu.tensor_data(name);
    rel_cos(pb, pa, k, rel, cs);
    for (int64_t i = 0; i < k; i++) { dd += (double(pb[i]) - pa[i]) * (double(pb[i]) - pa[i]); nn += double(pa[i]) * pa[i]; }
    if (!(rel <= wr)) { wr = rel; wn = name; }
  }
  const double whole = std::sqrt(dd / nn);
  report(whole <= 1e-6 && wr <= 1e-5, std::string("weights after a step (lr 1e-3, same gradients), rel_l2 ") + tag,
         fmt("%.2e; worst tensor %.2e", whole, wr) + " at " + wn);

  // sampling: greedy and seeded, against the CPU sampler on the updated weights
  for (float temp : {0.0f, 1.0f}) {
    SampleRequest s;
    s.prompt = q.prompt;
    s.n = 3;
    s.temperature = temp;
    s.max_tokens = 6;
    s.seed = 5;
    s.stop = {17};
    const SampleResult ra = cpu.sample(s), rb = gpu.sample(s);
    const auto [same, total, dlp] = sample_agreement(ra, rb);
    const bool ok = bf16 ? true : same == total;
    report(ok, std::string("sample temperature ") + (temp == 0 ? "0 " : "1 ") + tag + (bf16 ? " (reported)" : ""),
           std::to_string(same) + "/" + std::to_string(total) + " tokens equal; log-prob max diff " + fmt("%.2e", dlp));
    // the same tokens scored by forward: sample's log-probs must equal forward's
    const double d = sample_forward_gap(gpu, q.prompt, rb);
    report(d <= (bf16 ? 5e-2 : 1e-4), std::string("sample log-probs = forward log-probs ") + tag, fmt("%.2e", d));
  }
}

ModelConfig tiny16() {  // head dim 16: the LM's attention takes the fused kernel too in bf16
  ModelConfig c = tiny();
  c.text.heads = 3;
  c.text.kv_heads = 1;
  c.text.head_dim = 16;
  c.text.section[0] = 2;
  c.text.section[1] = 3;
  c.text.section[2] = 3;
  return c;
}

// A family's config with the LM at head dim 16 (tiny16's heads): bf16 attention takes the fused kernels and
// sampling's decode steps the CUDA graphs, which head dim 8 does not.
ModelConfig with_head16(ModelConfig c) {
  c.text.heads = 3;
  c.text.kv_heads = 1;
  c.text.head_dim = 16;
  c.text.section[0] = 2;
  c.text.section[1] = 3;
  c.text.section[2] = 3;
  return c;
}

ForwardRequest request_text(int seed) {
  std::mt19937_64 r(seed);
  ForwardRequest q;
  for (int i = 0; i < 23; i++) q.prompt.ids.push_back(1 + static_cast<int32_t>(r() % 250));
  q.completions = {{5, 6, 7}, {1, 2}, {9, 8, 7, 6, 5, 4, 3}};
  q.return_logits = true;
  return q;
}

std::vector<std::vector<std::vector<float>>> random_grads(const std::vector<ForwardRequest>& qs, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::uniform_real_distribution<float> U(-1, 1);
  std::vector<std::vector<std::vector<float>>> g(qs.size());
  for (size_t i = 0; i < qs.size(); i++)
    for (const auto& c : qs[i].completions) {
      std::vector<float> w(c.size());
      for (auto& x : w) x = U(r);
      g[i].push_back(w);
    }
  return g;
}

// worst per-tensor (rel_l2, 1 - cosine) of a's gradients against b's
void grad_diff(Model& a, Model& b, double& rel, double& omc, std::string& where) {
  rel = 0;
  omc = 0;
  for (const auto& name : b.tensor_names()) {
    const float* ga = a.tensor_grad(name);
    const float* gb = b.tensor_grad(name);
    if (!ga || !gb) { rel = omc = NAN; where = name + " (missing)"; return; }
    double r, c;
    rel_cos(ga, gb, numel(b.tensor_shape(name)), r, c);
    if (!(r <= rel)) { rel = r; where = name; }
    omc = std::max(omc, 1.0 - c);
  }
}

// Packed requests, checkpointing, packs of one, batched sampling (graphs on and off), the offloaded
// and bf16-moment optimizer states: each against the CPU engine or against the plain device path.
void run_options(bool bf16, const ModelConfig& c = tiny16()) {
  const std::string tagstr = std::string(bf16 ? "bf16" : "fp32") +
                             (c.family != Family::qwen2_vl ? std::string(" ") + family_name(c) : "");
  const char* tag = tagstr.c_str();
  const double tol_logit = bf16 ? 2e-2 : 1e-4;
  Model cpu(c, 4096);
  fill_weights(cpu, c.family != Family::qwen2_vl ? g_seed + 2 : 31, bf16);
  CudaOptions base;
  auto make = [&](const CudaOptions& o) {
    auto m = std::make_unique<Model>(c, 4096);
    copy_params(*m, cpu);
    m->attach_device(make_cuda_model(*m, 0, bf16, o));
    return m;
  };
  const std::vector<ForwardRequest> qs = {request(c), request_text(3), request(c)};
  const auto grads = random_grads(qs, 17);
  auto g1 = make(base);
  {
    auto a = cpu.forward(qs, true);
    auto b = g1->forward(qs, true);
    double worst = 0;
    for (size_t i = 0; i < qs.size(); i++) {
      double scale = 1e-12, d = 0;
      for (size_t g = 0; g < qs[i].completions.size(); g++) {
        scale = std::max(scale, max_abs(a[i].logits[g]));
        d = std::max(d, max_diff(a[i].logits[g], b[i].logits[g]));
        d = std::max(d, max_diff(a[i].logprobs[g], b[i].logprobs[g]));
      }
      worst = std::max(worst, d / scale);
    }
    report(worst <= tol_logit, std::string("3 requests packed: logits, log-probs max_abs/scale ") + tag, fmt("%.2e", worst));
    cpu.zero_grad();
    g1->zero_grad();
    cpu.backward(grads);
    g1->backward(grads);
    double rel, omc;
    std::string where;
    grad_diff(*g1, cpu, rel, omc, where);
    report(bf16 ? omc <= 1e-3 : rel <= 1e-3, std::string("3 requests packed: gradients vs CPU ") + tag,
           fmt("worst rel_l2 %.2e, worst 1-cos %.2e", rel, omc) + " at " + where);
  }
  {  // activation checkpointing: the same gradients
    CudaOptions o = base;
    o.checkpoint = true;
    auto g2 = make(o);
    g2->forward(qs, true);
    g2->zero_grad();
    g2->backward(grads);
    double rel, omc;
    std::string where;
    grad_diff(*g2, *g1, rel, omc, where);
    report(rel <= (bf16 ? 1e-2 : 1e-5), std::string("checkpointing: gradients vs without ") + tag,
           fmt("worst rel_l2 %.2e", rel) + " at " + where);
  }
  {  // one request per pack
    CudaOptions o = base;
    o.pack_rows = 1;
    auto g3 = make(o);
    g3->forward(qs, true);
    g3->zero_grad();
    g3->backward(grads);
    double rel, omc;
    std::string where;
    grad_diff(*g3, *g1, rel, omc, where);
    report(bf16 ? omc <= 1e-4 : rel <= 1e-5, std::string("packs of one request: gradients vs one pack ") + tag,
           fmt("worst rel_l2 %.2e, 1-cos %.2e", rel, omc) + " at " + where);
  }
  {  // batched sampling against the CPU's per-prompt sampler; graphs on and off
    std::vector<SampleRequest> ss;
    for (size_t i = 0; i < qs.size(); i++) {
      SampleRequest s;
      s.prompt = qs[i].prompt;
      s.n = 2 + static_cast<int>(i);
      s.temperature = i == 1 ? 0.0f : 1.0f;
      s.max_tokens = 5 + static_cast<int>(i);
      s.seed = 40 + i;
      s.stop = {17};
      ss.push_back(s);
    }
    CudaOptions og = base, on = base;
    og.graphs = true;
    on.graphs = false;
    auto ga = make(og), gb = make(on);
    const auto ra = ga->sample_many(ss), rb = gb->sample_many(ss);
    int same = 0, total = 0, same_cpu = 0;
    for (size_t i = 0; i < ss.size(); i++) {
      const SampleResult rc = cpu.sample(ss[i]);
      for (int g = 0; g < ss[i].n; g++) {
        total += static_cast<int>(ra[i].tokens[g].size());
        same += ra[i].tokens[g] == rb[i].tokens[g] ? static_cast<int>(ra[i].tokens[g].size()) : 0;
        for (size_t t = 0; t < std::min(ra[i].tokens[g].size(), rc.tokens[g].size()); t++)
          same_cpu += ra[i].tokens[g][t] == rc.tokens[g][t];
      }
    }
    report(same == total, std::string("sample_many: graphs on = graphs off ") + tag, std::to_string(same) + "/" + std::to_string(total));
    report(bf16 || same_cpu == total, std::string("sample_many vs CPU sample per prompt ") + tag + (bf16 ? " (reported)" : ""),
           std::to_string(same_cpu) + "/" + std::to_string(total) + " tokens equal");
    // the sampled tokens scored by forward: the log-probs agree
    std::vector<ForwardRequest> fq;
    for (size_t i = 0; i < ss.size(); i++) {
      ForwardRequest f;
      f.prompt = ss[i].prompt;
      f.completions = ra[i].tokens;
      fq.push_back(f);
    }
    const auto fb = ga->forward(fq, false);
    double d = 0;
    for (size_t i = 0; i < ss.size(); i++)
      for (int g = 0; g < ss[i].n; g++) d = std::max(d, max_diff(fb[i].logprobs[g], ra[i].logprobs[g]));
    report(d <= (bf16 ? 5e-2 : 1e-4), std::string("sample_many log-probs = forward log-probs ") + tag, fmt("%.2e", d));
  }
  if (bf16) {  // optimizer state: offloaded to the host, and bf16 moments, against the device's fp32 state
    AdamWOptions ao;
    ao.lr = 1e-3f; ao.weight_decay = 0.1f; ao.max_grad_norm = 0.5f;
    auto weights = [&](Model& m) {
      std::vector<float> w;
      for (const auto& n : cpu.tensor_names()) {
        const float* p = m.tensor_data(n);
        w.insert(w.end(), p, p + numel(cpu.tensor_shape(n)));
      }
      return w;
    };
    const std::vector<float> w0 = weights(*g1);
    for (int step = 0; step < 2; step++) {
      if (step) { g1->forward(qs, true); g1->zero_grad(); g1->backward(grads); }
      g1->step(ao);
    }
    const std::vector<float> wd = weights(*g1);
    for (int variant = 0; variant < 3; variant++) {
      CudaOptions o = base;
      o.offload_optimizer = variant != 1;
      o.bf16_moments = variant >= 1;
      auto g = make(o);
      for (int step = 0; step < 2; step++) {
        g->forward(qs, true);
        g->zero_grad();
        g->backward(grads);
        g->step(ao);
      }
      const std::vector<float> w = weights(*g);
      double dd = 0, nn = 0;
      for (size_t i = 0; i < w.size(); i++) {
        dd += (double(w[i]) - wd[i]) * (double(w[i]) - wd[i]);
        nn += (double(wd[i]) - w0[i]) * (double(wd[i]) - w0[i]);
      }
      const double rel = std::sqrt(dd / nn);  // against the size of the updates
      const char* names[] = {"offloaded fp32 state", "bf16 moments on the device", "offloaded bf16 moments"};
      report(rel <= (variant == 0 ? 1e-3 : 5e-2), std::string("2 AdamW steps, ") + names[variant] + " vs device fp32 state (bf16)",
             fmt("rel_l2 of the updates %.2e", rel));
    }
  }
}

// A GRPO loss on the log-probs of each engine: per token -min(r A, clip(r, 0.8, 1.2) A), r = exp(logp - old),
// averaged over each completion's tokens and over the completions; old = the CPU's log-probs shifted by
// +-0.1 or +-0.3 (some tokens clipped, none near the clip edges), advantages A in [-1, 1]. Compares the
// loss and, after backward of dloss/dlogp on each engine, every gradient (fp32: per tensor rel_l2 <= 1e-3;
// bf16: the whole gradient's rel_l2 <= 2e-2 and every tensor's cosine >= 0.999).
void run_grpo(bool bf16, const ModelConfig& c) {
  const std::string tagstr = std::string(bf16 ? "bf16 " : "fp32 ") + family_name(c);
  const char* tag = tagstr.c_str();
  Model cpu(c, 4096), gpu(c, 4096);
  fill_weights(cpu, g_seed + 3, bf16);
  copy_params(gpu, cpu);
  gpu.attach_device(make_cuda_model(gpu, 0, bf16, dev::cuda_options_from_env()));
  const std::vector<ForwardRequest> qs = {request(c, g_seed + 4), request_text(static_cast<int>(g_seed % 1000))};
  const auto a = cpu.forward(qs, true);
  const auto b = gpu.forward(qs, true);
  std::mt19937_64 r(g_seed + 5);
  const float shifts[4] = {-0.3f, -0.1f, 0.1f, 0.3f};
  std::vector<std::vector<std::vector<float>>> old(qs.size());
  std::vector<std::vector<float>> adv(qs.size());
  for (size_t i = 0; i < qs.size(); i++)
    for (size_t g = 0; g < qs[i].completions.size(); g++) {
      adv[i].push_back(std::uniform_real_distribution<float>(-1, 1)(r));
      std::vector<float> o = a[i].logprobs[g];
      for (auto& x : o) x += shifts[r() % 4];
      old[i].push_back(o);
    }
  auto loss = [&](const std::vector<ForwardResult>& f, std::vector<std::vector<std::vector<float>>>& dl, int& clipped) {
    double L = 0;
    size_t G = 0;
    for (const auto& q : qs) G += q.completions.size();
    dl.assign(qs.size(), {});
    clipped = 0;
    for (size_t i = 0; i < qs.size(); i++)
      for (size_t g = 0; g < qs[i].completions.size(); g++) {
        const auto& lp = f[i].logprobs[g];
        const double A = adv[i][g], n = static_cast<double>(lp.size());
        std::vector<float> d(lp.size());
        for (size_t t = 0; t < lp.size(); t++) {
          const double ratio = std::exp(double(lp[t]) - old[i][g][t]);
          const double un = ratio * A, cl = std::min(std::max(ratio, 0.8), 1.2) * A;
          const bool clip = cl < un;
          clipped += clip;
          L += -std::min(un, cl) / (n * G);
          d[t] = clip ? 0.0f : static_cast<float>(-A * ratio / (n * G));
        }
        dl[i].push_back(d);
      }
    return L;
  };
  std::vector<std::vector<std::vector<float>>> ga, gb;
  int ca = 0, cb = 0;
  const double La = loss(a, ga, ca), Lb = loss(b, gb, cb);
  const double dL = std::fabs(La - Lb) / std::max(std::fabs(La), 1e-3);
  report(dL <= (bf16 ? 2e-2 : 1e-5) && ca == cb, std::string("GRPO loss ") + tag,
         fmt("%.3e (cpu %.6f, ", dL, La) + fmt("gpu %.6f); clipped tokens %.0f", Lb, ca) + " vs " + std::to_string(cb));
  cpu.zero_grad();
  gpu.zero_grad();
  cpu.backward(ga);
  gpu.backward(gb);
  double worst_rel = 0, worst_cos = 1, dd = 0, nn = 0;
  std::string wr, wc;
  int n = 0;
  for (const auto& name : cpu.tensor_names()) {
    const int64_t k = numel(cpu.tensor_shape(name));
    const float* x = cpu.tensor_grad(name);
    const float* y = gpu.tensor_grad(name);
    if (!x || !y) { report(false, std::string("GRPO gradient ") + name + " " + tag, "missing"); continue; }
    double rel, cs;
    rel_cos(y, x, k, rel, cs);
    for (int64_t i = 0; i < k; i++) { dd += (double(y[i]) - x[i]) * (double(y[i]) - x[i]); nn += double(x[i]) * x[i]; }
    if (!(rel <= worst_rel)) { worst_rel = rel; wr = name; }
    if (!(cs >= worst_cos)) { worst_cos = cs; wc = name; }
    n++;
  }
  const double whole = nn > 0 ? std::sqrt(dd / nn) : NAN;
  if (bf16)
    report(whole <= 2e-2 && worst_cos >= 0.999, std::string("GRPO gradients ") + tag,
           fmt("whole rel_l2 %.2e, worst cosine %.6f", whole, worst_cos) + " at " + wc + " of " + std::to_string(n));
  else
    report(worst_rel <= 1e-3, std::string("GRPO gradients ") + tag,
           fmt("worst rel_l2 %.2e (whole %.2e)", worst_rel, whole) + " at " + wr + " of " + std::to_string(n));
}

// LoRA on the language model and the vision tower: forward, the adapters' gradients and a step, against
// the CPU engine. Qwen2-VL with fixed seeds; the newer families from the current seed, with targets that
// reach their vision MLPs (Qwen2.5-VL's gated up/down_proj, Qwen3-VL's linear_fc1) and attention (qkv).
void run_lora(bool bf16, const ModelConfig& c = tiny()) {
  const bool family = c.family != Family::qwen2_vl;
  const std::string tagstr = std::string(bf16 ? "bf16" : "fp32") + (family ? std::string(" ") + family_name(c) : "");
  const char* tag = tagstr.c_str();
  LoraOptions lo;
  lo.rank = 4; lo.alpha = 8; lo.vision = true; lo.seed = 3;
  switch (c.family) {
    case Family::qwen2_vl: lo.targets = {"q_proj", "v_proj", "down_proj", "fc1"}; break;
    case Family::qwen2_5_vl: lo.targets = {"q_proj", "v_proj", "down_proj", "up_proj", "qkv"}; break;
    case Family::qwen3_vl: lo.targets = {"q_proj", "v_proj", "down_proj", "linear_fc1", "qkv"}; break;
  }
  Model cpu(c, 4096), gpu(c, 4096);
  fill_weights(cpu, family ? g_seed + 6 : 21, bf16);
  cpu.add_lora(lo);
  std::mt19937_64 r(family ? g_seed + 7 : 5);
  std::uniform_real_distribution<float> U(-0.2f, 0.2f);
  for (const auto& n : cpu.tensor_names())
    if (n.find("lora_B") != std::string::npos) {
      float* p = cpu.tensor_data(n);
      for (int64_t i = 0; i < numel(cpu.tensor_shape(n)); i++) p[i] = U(r);
    }
  gpu.add_lora(lo);
  copy_params(gpu, cpu);
  gpu.attach_device(make_cuda_model(gpu, 0, bf16, dev::cuda_options_from_env()));
  const ForwardRequest q = family ? request(c, g_seed + 8) : request(c);
  auto a = cpu.forward({q}, true);
  auto b = gpu.forward({q}, true);
  double scale = 1e-12, dl = 0;
  for (size_t g = 0; g < q.completions.size(); g++) {
    scale = std::max(scale, max_abs(a[0].logits[g]));
    dl = std::max(dl, max_diff(a[0].logits[g], b[0].logits[g]));
  }
  report(dl / scale <= (bf16 ? 2e-2 : 1e-4), std::string("LoRA forward logits max_abs/scale ") + tag, fmt("%.2e", dl / scale));
  std::vector<std::vector<std::vector<float>>> gr(1);
  for (const auto& comp : q.completions) gr[0].push_back(std::vector<float>(comp.size(), 0.3f));
  cpu.backward(gr);
  gpu.backward(gr);
  double worst = 1, wrel = 0;
  for (const auto& n : cpu.tensor_names()) {
    if (n.find("lora_") == std::string::npos) continue;
    double rel, cs;
    rel_cos(gpu.tensor_grad(n), cpu.tensor_grad(n), numel(cpu.tensor_shape(n)), rel, cs);
    worst = std::min(worst, cs);
    wrel = std::max(wrel, rel);
  }
  report(bf16 ? worst >= 0.999 : wrel <= 1e-3, std::string("LoRA gradients ") + tag, fmt("worst cosine %.6f, worst rel_l2 %.2e", worst, wrel));
  {  // activation checkpointing flipped: the layer recomputed in the shared scratch keeps x A^T in its slots as the
     // forward did (down's, which the recompute does not reach, recomputed): the same adapter gradients
    CudaOptions o = dev::cuda_options_from_env();
    o.checkpoint = !o.checkpoint;
    Model ck(c, 4096);
    ck.add_lora(lo);
    copy_params(ck, cpu);
    ck.attach_device(make_cuda_model(ck, 0, bf16, o));
    ck.forward({q}, true);
    ck.backward(gr);
    double crel = 0;
    for (const auto& n : cpu.tensor_names()) {
      if (n.find("lora_") == std::string::npos) continue;
      double rel, cs;
      rel_cos(ck.tensor_grad(n), gpu.tensor_grad(n), numel(cpu.tensor_shape(n)), rel, cs);
      crel = std::max(crel, rel);
    }
    report(crel <= (bf16 ? 1e-2 : 1e-5), std::string("LoRA gradients, checkpointing ") + (o.checkpoint ? "on" : "off") +
           " vs " + (o.checkpoint ? "off " : "on ") + tag, fmt("worst rel_l2 %.2e", crel));
  }
  {  // after a step, the adapters the GPU's forward uses (bf16: the hi/lo pairs of the master) are the
     // stepped ones: a CPU model given the pulled weights agrees with it, and the step moved the logits
    AdamWOptions o;
    o.lr = 0.05f;
    const StepResult sr = gpu.step(o);
    gpu.device()->pull();
    Model cpu2(c, 4096);
    cpu2.add_lora(lo);
    copy_params(cpu2, gpu);
    auto a2 = cpu2.forward({q}, false);
    auto b2 = gpu.forward({q}, false);
    double s2 = 1e-12, d2 = 0, moved = 0;
    for (size_t g = 0; g < q.completions.size(); g++) {
      s2 = std::max(s2, max_abs(a2[0].logits[g]));
      d2 = std::max(d2, max_diff(a2[0].logits[g], b2[0].logits[g]));
      moved = std::max(moved, max_diff(a[0].logits[g], a2[0].logits[g]));
    }
    report(!sr.skipped && d2 / s2 <= (bf16 ? 2e-2 : 1e-4) && moved > 5 * d2, std::string("LoRA forward after a step ") + tag,
           fmt("max_abs/scale %.2e; the step moved the logits by %.2e of scale", d2 / s2, moved / s2));
    // sampling on the LoRA-merged weights (CudaOptions::lora_merged_sampling, the default), after the step (the
    // merge reads the stepped fp32 master): the CPU's tokens (its adapters unmerged) and log-probs, and the GPU
    // forward's log-probs of the sampled tokens (the forward adds the adapters unmerged)
    for (float temp : {0.0f, 1.0f}) {
      SampleRequest s;
      s.prompt = q.prompt;
      s.n = 3;
      s.temperature = temp;
      s.max_tokens = 6;
      s.seed = 5;
      const SampleResult ra = cpu2.sample(s), rb = gpu.sample(s);
      const auto [same, total, dlp] = sample_agreement(ra, rb);
      report(bf16 || (same == total && dlp <= 1e-4),
             std::string("LoRA merged sampling vs CPU, temperature ") + (temp == 0 ? "0 " : "1 ") + tag + (bf16 ? " (reported)" : ""),
             std::to_string(same) + "/" + std::to_string(total) + " tokens equal; log-prob max diff " + fmt("%.2e", dlp));
      const double d = sample_forward_gap(gpu, q.prompt, rb);
      report(d <= (bf16 ? 5e-2 : 1e-4), std::string("LoRA merged sample log-probs = forward log-probs ") + tag, fmt("%.2e", d));
    }
  }
}

// The seeds of the families' checks: VQALAB_TEST_SEEDS=a,b,c (a list: it has a comma) or =n (n seeds: the
// first VQALAB_TEST_SEED's or the clock's, the others drawn from it); else VQALAB_TEST_SEED or the clock's.
std::vector<uint64_t> test_seeds() {
  const char* es = std::getenv("VQALAB_TEST_SEED");
  const uint64_t first =
      es && *es ? std::strtoull(es, nullptr, 10)
                : static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000007ull;
  const char* ls = std::getenv("VQALAB_TEST_SEEDS");
  const std::string list = ls ? ls : "";
  std::vector<uint64_t> seeds;
  if (list.find(',') != std::string::npos) {
    size_t at = 0;
    while (at <= list.size()) {
      const size_t end = std::min(list.find(',', at), list.size());
      const std::string item = list.substr(at, end - at);
      char* stop = nullptr;
      const unsigned long long v = std::strtoull(item.c_str(), &stop, 10);
      if (item.empty() || *stop != '\0') {
        std::fprintf(stderr, "VQALAB_TEST_SEEDS=%s: \"%s\" is not a seed (expected a count n, or seeds a,b,c)\n",
                     list.c_str(), item.c_str());
        std::exit(2);
      }
      seeds.push_back(v);
      at = end + 1;
    }
    return seeds;
  }
  int count = 1;
  if (!list.empty()) {
    char* stop = nullptr;
    const long v = std::strtol(list.c_str(), &stop, 10);
    if (*stop != '\0' || v < 1 || v > 1000) {
      std::fprintf(stderr, "VQALAB_TEST_SEEDS=%s: expected a count from 1 to 1000, or seeds a,b,c\n", list.c_str());
      std::exit(2);
    }
    count = static_cast<int>(v);
  }
  std::mt19937_64 r(first);
  seeds.push_back(first);
  while (static_cast<int>(seeds.size()) < count) seeds.push_back(r() % 1000000007ull);
  return seeds;
}

// The vision feature cache on the GPU (docs/engine.md): LoRA on the LM only, keyed images. A model with the cache
// and one without, same weights: the rollout (sample_many) fills the cache, then the reference forward (adapters
// off) and the policy forward + backward read it; log-probs equal bit for bit (same kernels on the same
// features), adapter gradients within the backward's atomic-sum noise, and the counts show the cache was read.
void run_vision_cache(bool bf16, const ModelConfig& c = tiny()) {
  const char* tag = bf16 ? "bf16" : "fp32";
  LoraOptions lo;
  lo.rank = 4; lo.alpha = 8; lo.targets = {"q_proj", "v_proj", "down_proj"}; lo.seed = 3;
  Model src(c, 4096), on(c, 4096), off(c, 4096);
  fill_random(src, 23);
  for (Model* m : {&src, &on, &off}) m->add_lora(lo);
  std::mt19937_64 r(9);
  std::uniform_real_distribution<float> U(-0.2f, 0.2f);
  for (const auto& n : src.tensor_names())
    if (n.find("lora_B") != std::string::npos) {
      float* p = src.tensor_data(n);
      for (int64_t i = 0; i < numel(src.tensor_shape(n)); i++) p[i] = U(r);
    }
  copy_params(on, src);
  copy_params(off, src);
  on.attach_device(make_cuda_model(on, 0, bf16, dev::cuda_options_from_env()));
  off.attach_device(make_cuda_model(off, 0, bf16, dev::cuda_options_from_env()));
  off.set_vision_cache(0);
  ForwardRequest q = request(c);
  q.return_logits = false;
  uint64_t key = 1;
  for (Image& im : q.prompt.images) im.key = key++;
  const uint64_t nimg = q.prompt.images.size();
  SampleRequest s;
  s.prompt = q.prompt;
  s.n = 2;
  s.temperature = 0.0f;
  s.max_tokens = 4;
  const SampleResult sa = on.sample(s), sb = off.sample(s);
  const VisionCacheStats s0 = on.vision_cache_stats();
  on.set_lora_enabled(false);
  off.set_lora_enabled(false);
  const auto ra = on.forward({q}, false), rb = off.forward({q}, false);
  on.set_lora_enabled(true);
  off.set_lora_enabled(true);
  on.zero_grad();
  off.zero_grad();
  const auto pa = on.forward({q}, true), pb = off.forward({q}, true);
  std::vector<std::vector<std::vector<float>>> gr(1);
  for (const auto& comp : q.completions) gr[0].push_back(std::vector<float>(comp.size(), 0.3f));
  on.backward(gr);
  off.backward(gr);
  const VisionCacheStats s1 = on.vision_cache_stats();
  bool same = sa.tokens == sb.tokens;
  for (size_t g = 0; g < q.completions.size(); g++)
    same = same && ra[0].logprobs[g] == rb[0].logprobs[g] && pa[0].logprobs[g] == pb[0].logprobs[g];
  report(same && s0.misses == nimg && s1.hits - s0.hits == 2 * nimg && off.vision_cache_stats().hits == 0,
         std::string("vision cache: rollout, reference and policy forward = no cache, bit for bit ") + tag,
         "hits " + std::to_string(s1.hits) + ", misses " + std::to_string(s1.misses));
  double worst = 1, wrel = 0;
  for (const auto& n : on.tensor_names()) {
    if (n.find("lora_") == std::string::npos) continue;
    double rel, cs;
    rel_cos(on.tensor_grad(n), off.tensor_grad(n), numel(on.tensor_shape(n)), rel, cs);
    worst = std::min(worst, cs);
    wrel = std::max(wrel, rel);
  }
  report(worst >= 0.99999 && wrel <= 1e-4, std::string("vision cache: LoRA gradients = no cache ") + tag,
         fmt("worst cosine %.7f, worst rel_l2 %.2e", worst, wrel));
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("skipped: no CUDA device\n");
    return 0;
  }
  cu::set_flash_forward(dev::flash_forward_from_env());  // VQALAB_CUDA_FLASH_FWD: the fused forward's tile kernel
  // families: run only the newer families' checks (scripts/gpu/test-families.sh)
  const bool families_only = argc > 1 && std::string(argv[1]) == "families";
  const std::vector<uint64_t> seeds = test_seeds();
  std::string seed_list;
  for (uint64_t sd : seeds) seed_list += (seed_list.empty() ? "" : ",") + std::to_string(sd);
  if (seeds.size() == 1)
    std::printf("seed %s (VQALAB_TEST_SEED=%s repeats this run)\n", seed_list.c_str(), seed_list.c_str());
  else
    std::printf("seeds %s (VQALAB_TEST_SEEDS=%s repeats this run)\n", seed_list.c_str(), seed_list.c_str());
  struct SeedResult {
    uint64_t seed;
    int passed, failed;
    std::vector<std::string> failed_checks;
  };
  std::vector<SeedResult> per_seed;
  try {
    if (!families_only) {
      run(false);
      run(true);
    }
    // The families' checks for each seed; the Qwen2-VL checks below use fixed seeds and run once.
    for (size_t k = 0; k < seeds.size(); k++) {
      g_seed = seeds[k];
      if (seeds.size() > 1) std::printf("=== seed %llu (%zu of %zu)\n", static_cast<unsigned long long>(g_seed), k + 1, seeds.size());
      const int checks0 = checks, failures0 = failures;
      g_seed_failures.clear();
      try {
        for (const ModelConfig& c : {tiny25(), tiny3()}) {
          run(false, c);
          run(true, c);
          run_grpo(false, c);
          run_grpo(true, c);
          run_options(false, with_head16(c));
          run_options(true, with_head16(c));
          run_lora(false, c);
          run_lora(true, c);
        }
      } catch (const std::exception& e) {  // the next seed still runs
        report(false, "exception", e.what());
      }
      per_seed.push_back({g_seed, (checks - checks0) - (failures - failures0), failures - failures0, g_seed_failures});
    }
    if (!families_only) {
      run_lora(false);
      run_lora(true);
      run_vision_cache(false);
      run_vision_cache(true);
      run_options(false);
      run_options(true);
      // out of memory: a readable message, and the process goes on
      try {
        cu::dmalloc(size_t(1) << 50, "a test tensor of 1 PiB");
        report(false, "out-of-memory message", "no error");
      } catch (const Error& e) {
        const std::string m = e.what();
        report(m.find("out of GPU memory") != std::string::npos && m.find("hint") != std::string::npos, "out-of-memory message", m.substr(0, 150));
      }
    }
  } catch (const std::exception& e) {
    report(false, "exception", e.what());
  }
  if (!per_seed.empty()) {
    int clean = 0;
    std::printf("\nfamilies per seed:\n");
    for (const SeedResult& r : per_seed) {
      clean += r.failed == 0;
      std::printf("seed %-12llu %d passed, %d failed", static_cast<unsigned long long>(r.seed), r.passed, r.failed);
      for (size_t i = 0; i < r.failed_checks.size(); i++) std::printf("%s%s", i ? "; " : ": ", r.failed_checks[i].c_str());
      std::printf("\n");
    }
    std::printf("families: %d of %zu seeds passed every check\n", clean, per_seed.size());
  }
  std::printf("\nmodel: %d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
