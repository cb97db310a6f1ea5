// The options of one CUDA model (docs/cuda.md, "Options"), without CUDA headers (the N-API layer includes it).
//
// Where they come from: loadModel's `cuda` option in TypeScript, validated there before anything is allocated
// (src/engine/cuda-options.ts: names, types, ranges) and copied here field by field by napi_model.cc; the C++ test
// and benchmark programs of native/dev fill them from VQALAB_CUDA_* variables (native/dev/dev_options.h). Nothing
// under native/src reads the environment for them. The defaults below are the production choices; the precision
// (bf16 or fp32 throughout) is make_cuda_model's own argument, since it picks the model's element type.
#pragma once
#include <cstdint>

namespace vq {

// Which attention kernels a bf16 model takes at a supported head dim (fp32 and other head dims always take the
// cuBLASLt tile path).
enum class CudaAttention {
  fused,  // the flash kernels (flash.h): default
  gemm,   // the cuBLASLt tile path (ops_attention.cu): the fallback if the fused kernels fail their op tests
};

struct CudaOptions {
  // AdamW's fp32 master weights and moments live in pinned host memory; the step streams them through the GPU in
  // chunks (the device keeps only the bf16 weights and fp32 gradients). TS offloadOptimizer.
  bool offload_optimizer = false;
  // AdamW moments stored in bf16 (fp32 arithmetic): half their memory and offload traffic. TS bf16Moments.
  bool bf16_moments = false;
  // Activation checkpointing: forward(keep) keeps only each layer's (and vision block's) fp32 input; backward
  // recomputes the layer before its gradient (about one more forward). TS checkpointActivations.
  bool checkpoint = false;
  // Requests of one forward call are packed into one sequence (vision tower and LM) up to this many LM rows per
  // pack (at least one request per pack). 0: by the card's memory, 4096 rows (8 prompts of 426 rows: larger GEMMs
  // and vision batches, docs/cuda.md) on a card with at least 40 GiB, else 2048. TS packRows.
  int64_t pack_rows = 0;
  // Decode steps of sample_many replay a captured CUDA graph (bf16 with the fused attention only). TS graphs.
  bool graphs = true;
  // bf16 with LoRA: true sums base and adapter products in fp32 and rounds once (cu::linear_lora_forward over the
  // adapters' hi/lo bf16 pairs; 9-11 % slower LoRA steps, +0.35 GiB); false (the default): linear_forward then
  // lora_forward, rounded after each, as PEFT computes a bf16 LoRA linear (docs/cuda.md, "Numerics"). TS loraSingleRounding.
  bool lora_single_rounding = false;
  // LoRA, sample_many: every adapted linear of the LM runs on its merged weight W + s B A (computed once per call
  // from the adapters' fp32 master, rounded once to the working type, freed when the call returns) instead of the
  // base product plus the adapter's two small GEMMs in every prefill and decode GEMM. The sampled tokens'
  // log-probs then carry the merged weight's rounding (docs/cuda.md, "Numerics"); the trainer's old log-probs come
  // from its own forward, not from the rollout. TS loraMergedSampling.
  bool lora_merged_sampling = true;
  // TS attention: 'fused' | 'gemm'.
  CudaAttention attention = CudaAttention::fused;
  // Debug: every op synchronises after its launch, so an asynchronous fault is reported by the op that caused it
  // (slow). TS syncEveryOp.
  bool sync_every_op = false;
  // CUDA events around the model's phases, summed by cuda_profile_report() (model_profile.cu). TS profile.
  bool profile = false;
};

}  // namespace vq
