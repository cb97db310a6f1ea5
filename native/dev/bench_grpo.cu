// Our GRPO step and rollout at Qwen2-VL-2B dimensions with random weights, through the same Model API
// the addon uses (a Model with the CUDA backend attached), for bench/torch/grpo_reference.py's
// workload: 16 prompts x G = 8, a 448x448 image (1024 patches, 256 image tokens) + 42 text tokens
// (298-token prompt), completions of 16 tokens. Prints one JSON object (last line).
//
//   step: micro-batches of MB prompts (default 8; the default packRows puts them in one sequence on a
//         card with >= 40 GiB): policy forward (keep) + reference forward + backward of the token-mean
//         GRPO loss with a KL term; then clipping and AdamW (full fine-tune; fp32 master + moments on the
//         device); and the same with micro-batches of 4 prompts (the default before run 5)
//   memory mode: the step with the optimizer state offloaded to host memory and activation
//         checkpointing, micro-batches of 4 (the <= 24 GB configuration)
//   rollout: sample_many of the 16 prompts (n = 8, maxTokens = 16, temperature 1): every prompt
//         prefilled once, all 128 rows decoded together; and, for comparison, one sample() per prompt
//   lora: the step with LoRA r = 64 on every LM linear (base frozen, bf16 only), micro-batches of 4; its images
//     keyed, so the timed step reads the vision features the warm-up cached (as the Trainer's update reads the
//     rollout's)
//
//   native/build/cuda/bench_grpo [prompts=16] [micro-batch=8] [profile]   (profile: one rollout and one step with
//   the time of each phase). The models' CudaOptions: the defaults and the VQALAB_CUDA_* variables (dev_options.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

#include <cuda_runtime.h>

#include "cuda/model_cuda.h"
#include "dev_options.h"
#include "model.h"

using namespace vq;

namespace {

ModelConfig qwen2vl_2b() {
  ModelConfig c;
  c.vision.depth = 32;
  c.vision.embed_dim = 1280;
  c.vision.num_heads = 16;
  c.vision.mlp_hidden = 5120;
  c.vision.out_hidden = 1536;
  c.text.vocab = 151936;
  c.text.hidden = 1536;
  c.text.inter = 8960;
  c.text.layers = 28;
  c.text.heads = 12;
  c.text.kv_heads = 2;
  c.text.head_dim = 128;
  c.text.section[0] = 16;
  c.text.section[1] = 24;
  c.text.section[2] = 24;
  c.text.theta = 1e6f;
  c.text.tied = true;
  c.image_token_id = 151655;
  return c;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Workload {
  std::vector<ForwardRequest> reqs;
  std::vector<std::vector<float>> adv;
};

Workload make_workload(const ModelConfig& c, int prompts, int G, int completion) {
  std::mt19937_64 r(2026);
  std::uniform_real_distribution<float> U(-1, 1);
  Workload w;
  for (int p = 0; p < prompts; p++) {
    ForwardRequest q;
    Image im;
    im.t = 1; im.h = 32; im.w = 32;
    im.pixels.resize(static_cast<size_t>(1024) * c.vision.patch_dim());
    for (auto& x : im.pixels) x = U(r);
    q.prompt.images.push_back(std::move(im));
    // chat template: 6 tokens, vision_start, 256 image tokens, vision_end, 32 question tokens, 2 tokens
    for (int i = 0; i < 7; i++) q.prompt.ids.push_back(static_cast<int32_t>(r() % 150000));
    for (int i = 0; i < 256; i++) q.prompt.ids.push_back(c.image_token_id);
    for (int i = 0; i < 35; i++) q.prompt.ids.push_back(static_cast<int32_t>(r() % 150000));
    std::vector<float> a;
    for (int g = 0; g < G; g++) {
      std::vector<int32_t> comp(completion);
      for (auto& t : comp) t = static_cast<int32_t>(r() % 150000);
      q.completions.push_back(comp);
      a.push_back(U(r));
    }
    w.reqs.push_back(std::move(q));
    w.adv.push_back(a);
  }
  return w;
}

struct StepStats {
  double seconds = 0, flops = 0;
  size_t peak = 0;
  double grad_norm = 0;
};

// The workload with every image keyed for the vision feature cache (docs/engine.md), as the Trainer's images are:
// with a frozen tower the first step's features serve the later steps (the Trainer: the rollout's serve the
// update). Only the LoRA parts take it: the full fine-tune's reference model would otherwise skip its tower in
// every timed step, which the Trainer's reference (new images each step) does not.
Workload keyed(const Workload& w) {
  Workload k = w;
  uint64_t key = 1;
  for (auto& q : k.reqs)
    for (auto& im : q.prompt.images) im.key = key++;
  return k;
}

StepStats grpo_step(Model& policy, Model* reference, const Workload& w, float beta, size_t mb) {
  StepStats s;
  cuda_sync();
  cuda_gemm_flops(true);
  cuda_peak_bytes(true);
  const double t0 = now();
  policy.zero_grad();
  int64_t total = 0;
  for (const auto& q : w.reqs)
    for (const auto& c : q.completions) total += static_cast<int64_t>(c.size());
  for (size_t i0 = 0; i0 < w.reqs.size(); i0 += mb) {
    const size_t i1 = std::min(w.reqs.size(), i0 + mb);
    const std::vector<ForwardRequest> batch(w.reqs.begin() + i0, w.reqs.begin() + i1);
    auto pol = policy.forward(batch, true);
    std::vector<ForwardResult> ref;
    if (reference) ref = reference->forward(batch, false);
    std::vector<std::vector<std::vector<float>>> g(batch.size());
    for (size_t k = 0; k < batch.size(); k++)
      for (size_t c = 0; c < batch[k].completions.size(); c++) {
        std::vector<float> d(batch[k].completions[c].size());
        for (size_t t = 0; t < d.size(); t++) {
          const float lp = pol[k].logprobs[c][t];
          const float rl = reference ? ref[k].logprobs[c][t] : lp;
          d[t] = (-w.adv[i0 + k][c] + beta * (1.0f - std::exp(rl - lp))) / static_cast<float>(total);
        }
        g[k].push_back(d);
      }
    policy.backward(g);
  }
  AdamWOptions o;
  o.lr = 1e-6f;
  o.max_grad_norm = 1.0f;
  const StepResult r = policy.step(o);
  cuda_sync();
  s.seconds = now() - t0;
  s.flops = cuda_gemm_flops(true);
  s.peak = cuda_peak_bytes(false);
  s.grad_norm = r.grad_norm;
  return s;
}

struct RolloutStats {
  double seconds = 0, flops = 0;
  int64_t tokens = 0;
};

RolloutStats rollout(Model& m, const Workload& w, int G, int maxT, bool batched) {  // maxT 1: the prefill and one token
  RolloutStats s;
  std::vector<SampleRequest> qs;
  for (size_t i = 0; i < w.reqs.size(); i++) {
    SampleRequest q;
    q.prompt = w.reqs[i].prompt;
    q.n = G;
    q.temperature = 1.0f;
    q.max_tokens = maxT;
    q.seed = i;
    qs.push_back(q);
  }
  cuda_sync();
  cuda_gemm_flops(true);
  const double t0 = now();
  if (batched) {
    for (const SampleResult& r : m.sample_many(qs))
      for (const auto& t : r.tokens) s.tokens += static_cast<int64_t>(t.size());
  } else {
    for (const auto& q : qs)
      for (const auto& t : m.sample(q).tokens) s.tokens += static_cast<int64_t>(t.size());
  }
  cuda_sync();
  s.seconds = now() - t0;
  s.flops = cuda_gemm_flops(true);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!cuda_available(&why)) {
    std::printf("skipped: %s\n", why.c_str());
    return 0;
  }
  const int prompts = argc > 1 ? std::atoi(argv[1]) : 16, G = 8, maxT = 16;
  const size_t mb = argc > 2 ? static_cast<size_t>(std::atoi(argv[2])) : 8;
  const size_t mb4 = 4;  // the memory and LoRA configurations, and the comparison step
  // "profile": one rollout and one step after their warm-ups, with the phase times of each (the models'
  // profile option); nothing else
  const bool profile = argc > 3 && std::string(argv[3]) == "profile";
  const ModelConfig c = qwen2vl_2b();
  std::string json = "{";
  auto add = [&](const std::string& k, double v) {
    char b[96];
    std::snprintf(b, sizeof b, "%s\"%s\": %.6g", json.size() > 1 ? ", " : "", k.c_str(), v);
    json += b;
    std::fflush(stdout);
  };
  auto add_str = [&](const std::string& k, const std::string& v) {
    json += (json.size() > 1 ? ", \"" : "\"") + k + "\": \"";
    for (char ch : v) json += (ch == '"' || ch == '\\') ? ' ' : ch;
    json += "\"";
  };
  {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) add_str("card", prop.name);
    const CudaOptions o = dev::cuda_options_from_env();
    add_str("attention", o.attention == CudaAttention::gemm ? "cuBLASLt tiles" : "fused");
    cu::set_flash_forward(dev::flash_forward_from_env());  // VQALAB_CUDA_FLASH_FWD: the fused forward's tile kernel
    add_str("flash_forward", cu::flash_forward_name(cu::flash_forward_kind()));
    add_str("graphs", o.graphs ? "on" : "off");
  }
  // each part on its own: a failing part is reported and the others still run
  int errors = 0;
  auto part = [&](const char* name, const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      errors++;
      std::printf("error in %s: %s\n", name, e.what());
      add_str(std::string("error_") + name, e.what());
    }
    std::fflush(stdout);
  };
  try {
    const Workload w = make_workload(c, prompts, G, maxT);
    std::printf("workload: %d prompts x %d completions of %d tokens, prompt %zu tokens (1024 patches)\n", prompts, G, maxT,
                w.reqs[0].prompt.ids.size());
    add("micro_batch", static_cast<double>(mb));
    CudaOptions plain = dev::cuda_options_from_env();
    add("pack_rows", static_cast<double>(plain.pack_rows > 0 ? plain.pack_rows : cuda_default_pack_rows(0)));
    plain.offload_optimizer = plain.bf16_moments = plain.checkpoint = false;
    plain.profile = plain.profile || profile;
    auto reference = std::make_unique<Model>(c, 4096);
    reference->attach_device(make_cuda_model(*reference, 0, true, plain));
    cuda_randomize(*reference->device(), 1, 0.02f);
    {
      auto policy = std::make_unique<Model>(c, 4096);
      std::printf("parameters: %lld\n", static_cast<long long>(policy->num_params()));
      add("params", static_cast<double>(policy->num_params()));
      policy->attach_device(make_cuda_model(*policy, 0, true, plain));
      cuda_randomize(*policy->device(), 1, 0.02f);
      // rollout first (what a GRPO iteration does), then the step
      if (profile) {
        part("profile", [&] {
          rollout(*policy, w, G, maxT, true);
          cuda_profile_report();
          RolloutStats r = rollout(*policy, w, G, maxT, true);
          std::printf("profiled rollout (sample_many): %.3f s\n%s", r.seconds, cuda_profile_report().c_str());
          grpo_step(*policy, reference.get(), w, 0.04f, mb);
          cuda_profile_report();
          StepStats st = grpo_step(*policy, reference.get(), w, 0.04f, mb);
          std::printf("profiled step (micro-batch %zu): %.3f s\n%s", mb, st.seconds, cuda_profile_report().c_str());
        });
        std::printf("%s}\n", json.c_str());
        return errors ? 1 : 0;
      }
      part("rollout", [&] {
        rollout(*policy, w, G, maxT, true);  // warm-up
        RolloutStats best;
        for (int rep = 0; rep < 3; rep++) {
          RolloutStats r = rollout(*policy, w, G, maxT, true);
          if (rep == 0 || r.seconds < best.seconds) best = r;
          std::printf("rollout (sample_many, all prompts in one batch): %.3f s, %lld new tokens (%.0f tokens/s)\n", r.seconds,
                      (long long)r.tokens, r.tokens / r.seconds);
        }
        add("rollout_s", best.seconds);
        add("rollout_tokens", static_cast<double>(best.tokens));
        add("rollout_gemm_flops", best.flops);
        {  // the prefill alone (with the first token): what the decode steps add is the rest
          RolloutStats p = rollout(*policy, w, G, 1, true);
          std::printf("rollout prefill + first token (sample_many, maxTokens 1): %.3f s\n", p.seconds);
          add("rollout_prefill_s", p.seconds);
        }
        {
          RolloutStats r = rollout(*policy, w, G, maxT, false);
          std::printf("rollout (sample per prompt): %.3f s, %lld new tokens\n", r.seconds, (long long)r.tokens);
          add("rollout_per_prompt_s", r.seconds);
        }
      });
      part("step", [&] {
        grpo_step(*policy, reference.get(), w, 0.04f, mb);  // warm-up (allocates gradients, master, moments)
        StepStats best_s;
        for (int rep = 0; rep < 2; rep++) {
          StepStats s = grpo_step(*policy, reference.get(), w, 0.04f, mb);
          if (rep == 0 || s.seconds < best_s.seconds) best_s = s;
          std::printf("step (full fine-tune, micro-batch %zu): %.3f s, %.1f TFLOP (%.0f TFLOP/s), peak %.2f GiB, grad norm %.4g\n",
                      mb, s.seconds, s.flops / 1e12, s.flops / s.seconds / 1e12, s.peak / 1073741824.0, s.grad_norm);
        }
        add("step_s", best_s.seconds);
        add("step_gemm_flops", best_s.flops);
        add("step_peak_bytes", static_cast<double>(best_s.peak));
        add("step_grad_norm", best_s.grad_norm);
      });
    }
    part("step_mb4", [&] {  // 4 prompts per forward (one pack of 1704 rows whatever packRows is)
      auto policy = std::make_unique<Model>(c, 4096);
      policy->attach_device(make_cuda_model(*policy, 0, true, plain));
      cuda_randomize(*policy->device(), 1, 0.02f);
      grpo_step(*policy, reference.get(), w, 0.04f, mb4);  // warm-up
      StepStats best_s;
      for (int rep = 0; rep < 2; rep++) {
        StepStats s = grpo_step(*policy, reference.get(), w, 0.04f, mb4);
        if (rep == 0 || s.seconds < best_s.seconds) best_s = s;
        std::printf("step (full fine-tune, micro-batch 4): %.3f s, %.1f TFLOP (%.0f TFLOP/s), peak %.2f GiB\n",
                    s.seconds, s.flops / 1e12, s.flops / s.seconds / 1e12, s.peak / 1073741824.0);
      }
      add("step_mb4_s", best_s.seconds);
      add("step_mb4_flops", best_s.flops);
      add("step_mb4_peak_bytes", static_cast<double>(best_s.peak));
    });
    part("mem_step", [&] {  // the <= 24 GB configuration: optimizer state in host memory, activation checkpointing
      CudaOptions mem = plain;
      mem.offload_optimizer = true;
      mem.checkpoint = true;
      auto policy = std::make_unique<Model>(c, 4096);
      policy->attach_device(make_cuda_model(*policy, 0, true, mem));
      cuda_randomize(*policy->device(), 1, 0.02f);
      grpo_step(*policy, reference.get(), w, 0.04f, mb4);  // warm-up (pins the host state)
      StepStats s = grpo_step(*policy, reference.get(), w, 0.04f, mb4);
      std::printf("step (offloaded optimizer state + checkpointing, micro-batch %zu): %.3f s, %.1f TFLOP, peak %.2f GiB\n", mb4,
                  s.seconds, s.flops / 1e12, s.peak / 1073741824.0);
      add("mem_step_s", s.seconds);
      add("mem_step_flops", s.flops);
      add("mem_step_peak_bytes", static_cast<double>(s.peak));
    });
    reference.reset();
    part("lora_step", [&] {  // LoRA r = 64 on every LM linear: frozen bf16 base, adapters with fp32 master and moments
      auto policy = std::make_unique<Model>(c, 4096);
      LoraOptions lo;
      lo.rank = 64;
      lo.alpha = 128;
      lo.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
      policy->add_lora(lo);
      policy->attach_device(make_cuda_model(*policy, 0, true, plain));
      cuda_randomize(*policy->device(), 1, 0.02f);
      const Workload wk = keyed(w);
      grpo_step(*policy, nullptr, wk, 0.0f, mb4);  // warm-up (fills the vision feature cache)
      StepStats s = grpo_step(*policy, nullptr, wk, 0.0f, mb4);
      std::printf("step (LoRA r=64, no reference model, micro-batch %zu, cached vision features): %.3f s, peak %.2f GiB\n", mb4, s.seconds,
                  s.peak / 1073741824.0);
      add("lora_step_s", s.seconds);
      add("lora_step_peak_bytes", static_cast<double>(s.peak));
      add("lora_trainable", static_cast<double>(policy->num_trainable()));
    });
    part("lora_step_one_rounding", [&] {  // the same with loraSingleRounding on (what one rounding costs)
      CudaOptions one = plain;
      one.lora_single_rounding = true;
      auto policy = std::make_unique<Model>(c, 4096);
      LoraOptions lo;
      lo.rank = 64;
      lo.alpha = 128;
      lo.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
      policy->add_lora(lo);
      policy->attach_device(make_cuda_model(*policy, 0, true, one));
      cuda_randomize(*policy->device(), 1, 0.02f);
      const Workload wk = keyed(w);
      grpo_step(*policy, nullptr, wk, 0.0f, mb4);  // warm-up (fills the vision feature cache)
      StepStats s = grpo_step(*policy, nullptr, wk, 0.0f, mb4);
      std::printf("step (LoRA r=64, one-rounding LoRA path, micro-batch %zu, cached vision features): %.3f s, peak %.2f GiB\n", mb4, s.seconds,
                  s.peak / 1073741824.0);
      add("lora1_step_s", s.seconds);
      add("lora1_step_peak_bytes", static_cast<double>(s.peak));
    });
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    json += json.size() > 1 ? ", " : "";
    json += "\"error\": \"see log\"";
    std::printf("%s}\n", json.c_str());
    return 1;
  }
  std::printf("%s}\n", json.c_str());
  return errors ? 1 : 0;
}
