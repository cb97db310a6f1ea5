// The nccl collective (collective.h): NCCL loaded at run time with dlopen (libnccl.so.2, or the file named
// by VQALAB_NCCL_LIB), so the engine neither needs NCCL's headers to build nor NCCL to run on one GPU.
// The few entry points and types used are declared here as nccl.h (NCCL 2.x) defines them.
//
// Waits poll the stream and ncclCommGetAsyncError until the timeout; on a timeout or an asynchronous
// error the communicator is aborted (ncclCommAbort) and the call throws, naming the operation: a rank
// that died or hangs then fails the others instead of blocking them forever.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "collective.h"
#include "cuda/cuda_common.h"

namespace vq {
namespace {

// ---- nccl.h, the parts used (NCCL 2.x ABI) ----
typedef struct ncclComm* ncclComm_t;
typedef struct {
  char internal[128];
} ncclUniqueId;
typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
} ncclResult_t;
typedef enum { ncclFloat32 = 7 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;
static_assert(sizeof(ncclUniqueId) == sizeof(CollectiveId), "ncclUniqueId is 128 bytes");

struct Nccl {
  void* lib = nullptr;
  ncclResult_t (*GetVersion)(int*) = nullptr;
  ncclResult_t (*GetUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  ncclResult_t (*CommDestroy)(ncclComm_t) = nullptr;
  ncclResult_t (*CommAbort)(ncclComm_t) = nullptr;
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*) = nullptr;
  ncclResult_t (*AllReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Broadcast)(const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  const char* (*GetErrorString)(ncclResult_t) = nullptr;
  int version = 0;
};

const Nccl& nccl() {
  static Nccl n;
  static std::once_flag once;
  static std::string why;
  std::call_once(once, [] {
    const char* env = std::getenv("VQALAB_NCCL_LIB");
    const char* names[] = {env && *env ? env : "libnccl.so.2", "libnccl.so"};
    for (const char* name : names) {
      n.lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
      if (n.lib) break;
      why += std::string(why.empty() ? "" : "; ") + dlerror();
    }
    if (!n.lib) return;
    auto sym = [&](const char* s) {
      void* p = dlsym(n.lib, s);
      if (!p) why += std::string(why.empty() ? "" : "; ") + "no symbol " + s;
      return p;
    };
    n.GetVersion = reinterpret_cast<decltype(n.GetVersion)>(sym("ncclGetVersion"));
    n.GetUniqueId = reinterpret_cast<decltype(n.GetUniqueId)>(sym("ncclGetUniqueId"));
    n.CommInitRank = reinterpret_cast<decltype(n.CommInitRank)>(sym("ncclCommInitRank"));
    n.CommDestroy = reinterpret_cast<decltype(n.CommDestroy)>(sym("ncclCommDestroy"));
    n.CommAbort = reinterpret_cast<decltype(n.CommAbort)>(sym("ncclCommAbort"));
    n.CommGetAsyncError = reinterpret_cast<decltype(n.CommGetAsyncError)>(sym("ncclCommGetAsyncError"));
    n.AllReduce = reinterpret_cast<decltype(n.AllReduce)>(sym("ncclAllReduce"));
    n.Broadcast = reinterpret_cast<decltype(n.Broadcast)>(sym("ncclBroadcast"));
    n.GetErrorString = reinterpret_cast<decltype(n.GetErrorString)>(sym("ncclGetErrorString"));
    if (n.GetVersion) n.GetVersion(&n.version);
  });
  VQ_CHECK(n.lib && n.AllReduce && n.CommAbort && n.CommGetAsyncError,
           "NCCL is not available: " << why
                                     << " (install NCCL 2 — e.g. the nvidia-nccl-cu12 wheel or the libnccl2 package — or "
                                        "set VQALAB_NCCL_LIB to libnccl.so.2's path)");
  return n;
}

std::string nccl_error(ncclResult_t r) {
  const Nccl& n = nccl();
  return n.GetErrorString ? n.GetErrorString(r) : "NCCL error " + std::to_string(static_cast<int>(r));
}

#define NCCL_CHECK(call, what)                                                             \
  do {                                                                                     \
    ncclResult_t nccl_r_ = (call);                                                         \
    VQ_CHECK(nccl_r_ == ncclSuccess, "NCCL " << what << " failed: " << nccl_error(nccl_r_)); \
  } while (0)

class NcclCollective : public Collective {
 public:
  NcclCollective(const CollectiveId& id, int rank, int size, int device, double timeout_s)
      : rank_(rank), size_(size), device_(device), timeout_s_(timeout_s) {
    const Nccl& n = nccl();
    ncclUniqueId uid;
    std::memcpy(uid.internal, id.bytes, sizeof(uid.internal));
    CU_CHECK(cudaSetDevice(device_), "cudaSetDevice");
    CU_CHECK(cudaStreamCreateWithFlags(&own_, cudaStreamNonBlocking), "NCCL stream");
    NCCL_CHECK(n.CommInitRank(&comm_, size_, uid, rank_),
               "init of rank " << rank_ << " of " << size_ << " on cuda:" << device_);
  }
  ~NcclCollective() override {
    const Nccl& n = nccl();
    if (comm_) (broken_ ? n.CommAbort(comm_) : n.CommDestroy(comm_));
    if (stage_) cudaFree(stage_);
    if (own_) cudaStreamDestroy(own_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl " + std::to_string(nccl().version); }
  bool device_buffers() const override { return true; }

  void all_reduce_sum(float* data, int64_t n, void* stream) override {
    usable("all_reduce");
    cudaStream_t s = stream ? static_cast<cudaStream_t>(stream) : own_;
    NCCL_CHECK(nccl().AllReduce(data, data, static_cast<size_t>(n), ncclFloat32, ncclSum, comm_, s), "all_reduce");
    wait(s, "all_reduce of " + std::to_string(n) + " floats");
  }
  void broadcast(float* data, int64_t n, int root, void* stream) override {
    usable("broadcast");
    cudaStream_t s = stream ? static_cast<cudaStream_t>(stream) : own_;
    NCCL_CHECK(nccl().Broadcast(data, data, static_cast<size_t>(n), ncclFloat32, root, comm_, s), "broadcast");
    wait(s, "broadcast from rank " + std::to_string(root));
  }
  void all_reduce_host(float* data, int64_t n) override {
    float* d = staged(n);
    CU_CHECK(cudaMemcpyAsync(d, data, n * sizeof(float), cudaMemcpyHostToDevice, own_), "NCCL stage");
    all_reduce_sum(d, n, own_);
    CU_CHECK(cudaMemcpyAsync(data, d, n * sizeof(float), cudaMemcpyDeviceToHost, own_), "NCCL stage");
    CU_CHECK(cudaStreamSynchronize(own_), "NCCL stage");
  }
  void broadcast_host(float* data, int64_t n, int root) override {
    float* d = staged(n);
    CU_CHECK(cudaMemcpyAsync(d, data, n * sizeof(float), cudaMemcpyHostToDevice, own_), "NCCL stage");
    broadcast(d, n, root, own_);
    CU_CHECK(cudaMemcpyAsync(data, d, n * sizeof(float), cudaMemcpyDeviceToHost, own_), "NCCL stage");
    CU_CHECK(cudaStreamSynchronize(own_), "NCCL stage");
  }
  void barrier() override {
    float x = 0.0f;
    all_reduce_host(&x, 1);
  }
  void abort() override { broken_ = true; }  // the waiting call sees it and aborts the communicator

 private:
  int rank_, size_, device_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t own_ = nullptr;
  float* stage_ = nullptr;
  int64_t stage_n_ = 0;
  std::atomic<bool> broken_{false};

  void usable(const char* what) {
    VQ_CHECK(!broken_, "NCCL " << what << ": the communicator was aborted (another rank failed)");
    CU_CHECK(cudaSetDevice(device_), "cudaSetDevice");
  }
  float* staged(int64_t n) {
    CU_CHECK(cudaSetDevice(device_), "cudaSetDevice");
    if (n > stage_n_) {
      if (stage_) cudaFree(stage_);
      stage_ = nullptr;
      CU_CHECK(cudaMalloc(&stage_, static_cast<size_t>(n) * sizeof(float)), "NCCL staging buffer");
      stage_n_ = n;
    }
    return stage_;
  }
  // Polls the stream until the collective is done, an asynchronous NCCL error, an abort, or the timeout.
  void wait(cudaStream_t s, const std::string& what) {
    const Nccl& n = nccl();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
    for (;;) {
      const cudaError_t q = cudaStreamQuery(s);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) CU_CHECK(q, "NCCL wait");
      ncclResult_t async = ncclSuccess;
      n.CommGetAsyncError(comm_, &async);
      const bool late = std::chrono::steady_clock::now() > deadline;
      if (async != ncclSuccess || late || broken_) {
        broken_ = true;
        n.CommAbort(comm_);
        comm_ = nullptr;
        VQ_FAIL("NCCL " << what << " on rank " << rank_ << ": "
                        << (async != ncclSuccess ? nccl_error(async)
                                                 : late ? "timed out after " + std::to_string(timeout_s_) + " s"
                                                        : std::string("aborted (another rank failed)")));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
};

}  // namespace

CollectiveId nccl_collective_id(int device) {
  const Nccl& n = nccl();
  CU_CHECK(cudaSetDevice(device), "cudaSetDevice");
  ncclUniqueId uid;
  NCCL_CHECK(n.GetUniqueId(&uid), "ncclGetUniqueId");
  CollectiveId id;
  std::memcpy(id.bytes, uid.internal, sizeof(id.bytes));
  return id;
}

std::unique_ptr<Collective> make_nccl_collective(const CollectiveId& id, int rank, int size, int device,
                                                 double timeout_s) {
  VQ_CHECK(size >= 1 && rank >= 0 && rank < size, "NCCL: rank " << rank << " of " << size << " is out of range");
  return std::make_unique<NcclCollective>(id, rank, size, device, timeout_s);
}

}  // namespace vq
