// The CUDA backend of the Model (no CUDA headers: included by the N-API layer and the tools).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "cuda/cuda_options.h"
#include "model.h"

namespace vq {

// The pack_rows that 0 stands for on this device: 4096 with at least 40 GiB of memory, else 2048.
int64_t cuda_default_pack_rows(int device);

// True when this build has the CUDA backend and a device is visible; otherwise *why says which.
bool cuda_available(std::string* why);
// Moves a loaded Model's heavy work to cuda:device (bf16 weights and activations with an fp32
// residual stream, fp32 master weights, gradients and moments; or fp32 throughout when bf16 is
// false), with the options of cuda_options.h. Throws vq::Error when the backend is not built, the device is
// absent, or memory runs out.
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
// The time of the phases (vision/LM forward and backward, attention, optimizer step, sampling's prefill and
// decode) of every model with CudaOptions::profile since the last report, summed by name; then resets.
std::string cuda_profile_report();

}  // namespace vq
