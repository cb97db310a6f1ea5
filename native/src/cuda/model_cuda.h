// The CUDA backend of the Model (no CUDA headers: included by the N-API layer and the tools).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "model.h"

namespace vq {

// Options of the CUDA backend (docs/cuda.md). Defaults come from the environment (cuda_options_from_env)
// and can be overridden per model (loadModel's `cuda` option).
struct CudaOptions {
  // AdamW's fp32 master weights and moments live in pinned host memory; the step streams them through
  // the GPU in chunks (the device keeps only the bf16 weights and fp32 gradients). VQALAB_CUDA_OFFLOAD=1
  bool offload_optimizer = false;
  // AdamW moments stored in bf16 (fp32 arithmetic): half their memory and offload traffic.
  // VQALAB_CUDA_BF16_MOMENTS=1
  bool bf16_moments = false;
  // Activation checkpointing: forward(keep) keeps only each layer's (and vision block's) fp32 input;
  // backward recomputes the layer before its gradient (about one more forward). VQALAB_CUDA_CHECKPOINT=1
  bool checkpoint = false;
  // Requests of one forward call are packed into one sequence (vision tower and LM) up to this many
  // LM rows per pack (at least one request per pack). VQALAB_CUDA_PACK_ROWS. 0: by the card's memory,
  // 4096 rows (8 prompts of 426 rows: larger GEMMs and vision batches, docs/cuda.md) on a card with at
  // least 40 GiB, else 2048.
  int64_t pack_rows = 0;
  // Decode steps of sample_many replay a captured CUDA graph (VQALAB_CUDA_GRAPH=0 turns it off).
  bool graphs = true;
};
CudaOptions cuda_options_from_env();
// The pack_rows that 0 stands for on this device: 4096 with at least 40 GiB of memory, else 2048.
int64_t cuda_default_pack_rows(int device);

// True when this build has the CUDA backend and a device is visible; otherwise *why says which.
bool cuda_available(std::string* why);
// Moves a loaded Model's heavy work to cuda:device (bf16 weights and activations with an fp32
// residual stream, fp32 master weights, gradients and moments; or fp32 throughout when bf16 is
// false). Throws vq::Error when the backend is not built, the device is absent, or memory runs out.
std::unique_ptr<DeviceModel> make_cuda_model(Model& host, int device, bool bf16);
std::unique_ptr<DeviceModel> make_cuda_model(Model& host, int device, bool bf16, const CudaOptions& opts);

// For benchmarks: fills every weight on the device with seeded uniform values (scale), norm
// weights with 1, as if loaded (no host copy; save() then writes these values).
void cuda_randomize(DeviceModel& d, uint64_t seed, float scale);
// FLOPs issued on this thread since the last reset: cuBLASLt GEMMs as issued, fused attention as the
// spans need them (what the MFU figures count).
double cuda_gemm_flops(bool reset);
// Peak bytes of the device memory pool since the last reset, and the bytes in use now.
size_t cuda_peak_bytes(bool reset);
size_t cuda_used_bytes();
// Free and total bytes of the current device (cudaMemGetInfo), and what the pool keeps for reuse beyond
// its use: together what a micro-batch may still take.
void cuda_mem_info(size_t* free_bytes, size_t* total_bytes, size_t* pool_idle_bytes);
void cuda_sync();
// With VQALAB_CUDA_PROFILE=1: the time of the model's phases (vision/LM forward and backward, attention,
// optimizer step, sampling's prefill and decode) since the last report, summed by name; then resets.
std::string cuda_profile_report();

}  // namespace vq
