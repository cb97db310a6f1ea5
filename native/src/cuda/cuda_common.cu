// Errors, the per-thread stream and the stream-ordered memory pool (see cuda_common.h).
#include <sstream>

#include "cuda/cuda_common.h"

namespace vq {
namespace cu {

namespace {
thread_local cudaStream_t g_stream = nullptr;
thread_local bool g_debug_sync = false;
}  // namespace

cudaStream_t stream() { return g_stream; }
void set_stream(cudaStream_t s) { g_stream = s; }
bool debug_sync() { return g_debug_sync; }
void set_debug_sync(bool on) { g_debug_sync = on; }

void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
  std::ostringstream os;
  int dev = -1;
  cudaGetDevice(&dev);
  if (e == cudaErrorMemoryAllocation) {
    size_t fr = 0, tot = 0;
    cudaGetLastError();
    cudaMemGetInfo(&fr, &tot);
    os << "out of GPU memory in " << what << " on cuda:" << dev << " (free " << (fr >> 20) << " of " << (tot >> 20)
       << " MiB); hint: a smaller group or batch, LoRA instead of full fine-tuning, or a smaller maxSequenceLength";
  } else {
    os << "CUDA error in " << what << " on cuda:" << dev << ": " << cudaGetErrorName(e) << ": " << cudaGetErrorString(e);
  }
  fail_at(file, line, os.str());
}

void check_launch(const char* op, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && debug_sync()) e = cudaStreamSynchronize(g_stream);
  if (e != cudaSuccess) cuda_fail(e, op, file, line);
  if (op_profiling()) op_mark(op);
}

void* dmalloc(size_t bytes, const char* what) {
  if (bytes == 0) bytes = 16;
  void* p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, bytes, g_stream);
  if (e == cudaErrorMemoryAllocation) {
    // Give cached blocks back to the driver and try once more.
    cudaGetLastError();
    cudaStreamSynchronize(g_stream);
    int dev = 0;
    cudaGetDevice(&dev);
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    e = cudaMallocAsync(&p, bytes, g_stream);
  }
  if (e != cudaSuccess) {
    size_t fr = 0, tot = 0;
    cudaGetLastError();
    cudaMemGetInfo(&fr, &tot);
    int dev = -1;
    cudaGetDevice(&dev);
    std::ostringstream os;
    if (e == cudaErrorMemoryAllocation)
      os << "out of GPU memory: " << what << " needs " << ((bytes + (1 << 20) - 1) >> 20) << " MiB (free " << (fr >> 20)
         << " of " << (tot >> 20) << " MiB on cuda:" << dev << ", " << (pool_used() >> 20)
         << " MiB held by this process's pool); hint: a smaller group (n) or fewer requests per call, LoRA instead of "
            "full fine-tuning, or a smaller maxSequenceLength";
    else
      os << "CUDA error allocating " << what << " (" << bytes << " bytes): " << cudaGetErrorString(e);
    VQ_FAIL(os.str());
  }
  return p;
}

void dfree(void* p) {
  if (p) cudaFreeAsync(p, g_stream);
}

namespace {
cudaMemPool_t pool_of_current() {
  int dev = 0;
  cudaGetDevice(&dev);
  cudaMemPool_t pool;
  CU_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
  return pool;
}
}  // namespace

size_t pool_peak() {
  unsigned long long v = 0;
  CU_CHECK(cudaMemPoolGetAttribute(pool_of_current(), cudaMemPoolAttrUsedMemHigh, &v), "pool_peak");
  return static_cast<size_t>(v);
}
void pool_reset_peak() {
  unsigned long long z = 0;
  CU_CHECK(cudaMemPoolSetAttribute(pool_of_current(), cudaMemPoolAttrUsedMemHigh, &z), "pool_reset_peak");
}
size_t pool_used() {
  unsigned long long v = 0;
  if (cudaMemPoolGetAttribute(pool_of_current(), cudaMemPoolAttrUsedMemCurrent, &v) != cudaSuccess) return 0;
  return static_cast<size_t>(v);
}

size_t pool_reserved() {
  unsigned long long v = 0;
  if (cudaMemPoolGetAttribute(pool_of_current(), cudaMemPoolAttrReservedMemCurrent, &v) != cudaSuccess) return 0;
  return static_cast<size_t>(v);
}

}  // namespace cu
}  // namespace vq
