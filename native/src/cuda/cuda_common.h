// CUDA helpers of the native engine: checks that throw (never exit), device memory with readable
// out-of-memory errors, and the element types the ops are written for.
//
// A failed CUDA call or launch throws vq::Error naming the op ("CUDA error in attention_forward: ...
// [file:line]"), which the N-API layer turns into a JS Error. Launch errors are checked after every
// launch; in debug mode (CudaOptions::sync_every_op) every op also synchronises, so an asynchronous fault is
// reported by the op that caused it.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common.h"

namespace vq {
namespace cu {

using bf16 = __nv_bfloat16;

[[noreturn]] void cuda_fail(cudaError_t e, const char* what, const char* file, int line);
// After a launch: the launch error, and in debug mode the kernel's own.
void check_launch(const char* op, const char* file, int line);

#define CU_CHECK(call, what)                                                   \
  do {                                                                         \
    cudaError_t cu_err_ = (call);                                              \
    if (cu_err_ != cudaSuccess) ::vq::cu::cuda_fail(cu_err_, what, __FILE__, __LINE__); \
  } while (0)

#define CU_LAUNCHED(op) ::vq::cu::check_launch(op, __FILE__, __LINE__)

// The launch context of the ops this thread runs: the stream (default: legacy 0) and the debug mode (default off).
// Per thread, not arguments: the ops keep the CPU ops' signatures, and a model sets both for the duration of each
// of its calls (DevGuard, model_internal.cuh), so they are per model; the test programs set them directly.
cudaStream_t stream();
void set_stream(cudaStream_t s);
bool debug_sync();
void set_debug_sync(bool on);

// Op-level timing (env VQALAB_CUDA_PROFILE_OPS=1, read once; op_profile.cu): every checked launch and every
// GEMM records an event on its stream, and the report sums, per (phase, op), the device time from the previous
// mark of that stream (the op's own time, plus any idle gap before it) and the host time between the two
// marks (what issuing it cost). Off: one load of a flag per op.
bool op_profiling();
void op_mark(const char* op);
// The named phase the next marks belong to (Phase sets it while it runs); returns the previous one.
const char* set_op_context(const char* phase);
// Per (phase, op): device ms, host ms, count, largest first; clears the marks. Empty when off.
std::string op_profile_report();

// Device memory from the stream-ordered pool. On failure: "out of GPU memory: <what> needs N MiB
// (free F of T MiB on cuda:D); hint: ..." as vq::Error.
void* dmalloc(size_t bytes, const char* what);
void dfree(void* p);
// Peak bytes in use from the pool since the last reset (the pool's high-water mark).
size_t pool_peak();
void pool_reset_peak();
size_t pool_used();
// Bytes the pool holds from the driver (used or kept for reuse after a free).
size_t pool_reserved();

// A device array that frees itself; resize() keeps nothing (activations are rewritten).
template <typename T>
struct DArray {
  T* p = nullptr;
  int64_t n = 0, cap = 0;
  const char* what = "activation";
  DArray() = default;
  explicit DArray(const char* w) : what(w) {}
  DArray(const DArray&) = delete;
  DArray& operator=(const DArray&) = delete;
  DArray(DArray&& o) noexcept : p(o.p), n(o.n), cap(o.cap), what(o.what) { o.p = nullptr; o.n = o.cap = 0; }
  DArray& operator=(DArray&& o) noexcept {
    if (this != &o) { release(); p = o.p; n = o.n; cap = o.cap; what = o.what; o.p = nullptr; o.n = o.cap = 0; }
    return *this;
  }
  ~DArray() { release(); }
  void release() {
    if (p) dfree(p);
    p = nullptr;
    n = cap = 0;
  }
  T* fit(int64_t count) {
    if (count > cap) {
      release();
      p = static_cast<T*>(dmalloc(static_cast<size_t>(count) * sizeof(T), what));
      cap = count;
    }
    n = count;
    return p;
  }
  T* data() const { return p; }
};

// The scalar type of a tensor element for cuBLASLt (float or bf16).
enum class DType { F32, BF16 };
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<bf16>() { return DType::BF16; }

}  // namespace cu
}  // namespace vq
