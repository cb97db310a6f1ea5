// Collectives between the ranks of a data-parallel run (docs/multi-gpu.md): the sum of every rank's
// gradient buffer, a broadcast from one rank, a barrier. Two implementations behind one interface:
//
//   cpu   TCP sockets in a star through rank 0 (collective_cpu.cc). For tests and CPU runs: every rank's
//         buffer is summed on rank 0 in rank order and sent back, so all ranks get the same bits.
//   nccl  NCCL (native/src/cuda/collective_nccl.cu, CUDA builds only), loaded at run time with dlopen:
//         no NCCL headers or link-time dependency; device buffers, on the model's stream.
//
// As with NCCL, rank 0 makes an id (128 bytes) that the ranks share out of band (src/distributed's TCP
// rendezvous), then every rank creates its collective from it. Every call blocks until the peers have made
// the same call, an error, or the timeout: a timeout or a peer that went away throws vq::Error naming the
// call and the rank, and the collective can no longer be used.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace vq {

struct CollectiveId {
  unsigned char bytes[128] = {};
};

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  // True: all_reduce_sum and broadcast take device pointers and a cudaStream_t; false: host memory.
  virtual bool device_buffers() const = 0;
  // data[0, n) = the sum over ranks of data[0, n), on every rank.
  virtual void all_reduce_sum(float* data, int64_t n, void* stream) = 0;
  // data[0, n) = root's data[0, n), on every rank.
  virtual void broadcast(float* data, int64_t n, int root, void* stream) = 0;
  // Host buffers whatever the backend (NCCL stages them through device memory).
  virtual void all_reduce_host(float* data, int64_t n) { all_reduce_sum(data, n, nullptr); }
  virtual void broadcast_host(float* data, int64_t n, int root) { broadcast(data, n, root, nullptr); }
  virtual void barrier() = 0;
  // Fails the call in progress and every later one (another rank died); callable from any thread.
  virtual void abort() = 0;
};

// The cpu backend. Rank 0 calls cpu_collective_id: it listens on `host` (an address the other ranks can
// reach; port chosen by the system) until make_cpu_collective of rank 0 accepts the others.
CollectiveId cpu_collective_id(const std::string& host);
std::unique_ptr<Collective> make_cpu_collective(const CollectiveId& id, int rank, int size, double timeout_s);

// The nccl backend: CUDA builds only (native/src/cuda/collective_nccl.cu; the N-API layer calls it under
// VQALAB_CUDA). `device` is made current for the communicator.
CollectiveId nccl_collective_id(int device);
std::unique_ptr<Collective> make_nccl_collective(const CollectiveId& id, int rank, int size, int device,
                                                 double timeout_s);

}  // namespace vq
