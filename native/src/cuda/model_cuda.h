// The CUDA backend of the Model (no CUDA headers: included by the N-API layer and the tools).
#pragma once
#include <memory>
#include <string>

#include "model.h"

namespace vq {

// True when this build has the CUDA backend and a device is visible; otherwise *why says which.
bool cuda_available(std::string* why);
// Moves a loaded Model's heavy work to cuda:device (bf16 weights and activations with fp32 master
// weights, gradients and moments; or fp32 throughout when bf16 is false). Throws vq::Error when the
// backend is not built, the device is absent, or memory runs out.
std::unique_ptr<DeviceModel> make_cuda_model(Model& host, int device, bool bf16);

// For benchmarks: fills every weight on the device with seeded uniform values (scale), norm
// weights with 1, as if loaded (no host copy; save() then writes these values).
void cuda_randomize(DeviceModel& d, uint64_t seed, float scale);
// GEMM FLOPs issued on this thread since the last reset (what the GPU actually computed).
double cuda_gemm_flops(bool reset);
// Peak bytes of the device memory pool since the last reset, and the bytes in use now.
size_t cuda_peak_bytes(bool reset);
size_t cuda_used_bytes();
void cuda_sync();

}  // namespace vq
