// The CUDA model (model_internal.cuh: the class; docs/cuda.md): construction, the forward/backward entry points
// that split a call into packs, the factory and the tools of model_cuda.h.
// The Qwen-VL family on the GPU: model.cc's forward/backward and sampler.cc's decode over the CUDA ops, with the
// same shared-prefix packing, spans, M-RoPE positions and head-row gathering (read model.cc first).
// T = bf16 (weights' working copy and activations) or float (everything fp32: the parity mode of the
// tests). The residual stream is fp32 in both (docs/cuda.md, "Numerics").
//
// Beyond model.cc: the requests of one forward call are packed into one sequence (their images into
// one vision batch), up to CudaOptions::pack_rows LM rows per pack; sample_many prefills every prompt
// at once and decodes all their rows in each step (CUDA graphs for the steps); norms are fused with
// the residual add that precedes them; attention is the fused kernel of flash.cu where it applies.
//
// Memory: the working weights live on the device from the start; gradients at the first backward;
// the fp32 master (bf16 mode) and the moments at the first step (or in pinned host memory with the
// offload option), so a model that only runs forward or sample (a reference model) holds nothing but
// its bf16 weights. With LoRA the base has no gradient, master or moments at all. The host Model keeps
// its fp32 copy for checkpoints: pull() brings the device's trained weights back before a save.
#include "cuda/model_internal.cuh"

namespace vq {

namespace {
__global__ void randomize_k(float* p, int64_t n, uint64_t seed, float scale, int64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = seed ^ (static_cast<uint64_t>(offset + i) * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = scale * (static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
}
}  // namespace

int64_t cuda_default_pack_rows(int device) {
  cudaDeviceProp prop;
  CU_CHECK(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return prop.totalGlobalMem >= (40ull << 30) ? 4096 : 2048;
}

template <typename T>
CudaModel<T>::CudaModel(Model& h, int dev, const CudaOptions& opt) : h_(h), dev_(dev), opt_(opt) {
  int n = 0;
  CU_CHECK(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  VQ_CHECK(dev >= 0 && dev < n, "device cuda:" << dev << " does not exist (" << n << " CUDA device"
                                                << (n == 1 ? "" : "s") << " visible)");
  CU_CHECK(cudaSetDevice(dev), "cudaSetDevice");
  CU_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking), "cudaStreamCreate");
  CU_CHECK(cudaStreamCreateWithFlags(&st2_, cudaStreamNonBlocking), "cudaStreamCreate");
  {  // keep freed pool memory for reuse instead of returning it at every synchronisation
    cudaMemPool_t pool;
    CU_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
    uint64_t thr = UINT64_MAX;
    CU_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr), "cudaMemPoolSetAttribute");
  }
  if (std::is_same<T, float>::value) opt_.offload_optimizer = opt_.bf16_moments = false;  // the fp32 parity mode
  if (opt_.pack_rows <= 0) opt_.pack_rows = cuda_default_pack_rows(dev);
  DevGuard g(dev_, st_, opt_.sync_every_op);
  w_.what = "the model's weights";
  const std::vector<float>& hw = h_.host_arrays(false).values;
  w_.fit(static_cast<int64_t>(hw.size()));
  upload_f32(w_.p, hw.data(), w_.n);
  if (h_.lora_active()) {
    lw_.what = "the LoRA adapters";
    lw_.fit(static_cast<int64_t>(h_.host_arrays(true).values.size()));
    upload_f32(lw_.p, h_.host_arrays(true).values.data(), lw_.n);
    if constexpr (std::is_same<T, cu::bf16>::value) {  // the fp32 master from the start: the hi/lo pairs need it
      lmaster_.what = "the fp32 master of the LoRA adapters";
      upload(lmaster_, h_.host_arrays(true).values.data(), lw_.n);
      split_lora();
    }
  }
  push_moments();
  CU_CHECK(cudaStreamSynchronize(st_), "loading the weights");
}

template <typename T>
CudaModel<T>::~CudaModel() {
  {
    DevGuard g(dev_, st_, opt_.sync_every_op);
    for (auto& kv : graphs_) cudaGraphExecDestroy(kv.second);
    graphs_.clear();
    saved_.clear();
    w_.release(); master_.release(); grads_.release(); m_.release(); v_.release(); mb_.release(); vb_.release();
    lw_.release(); lmaster_.release(); lgrads_.release(); lm_.release(); lv_.release(); lsplit_.release();
    kc_.release(); vc_.release();
    vcache_.clear();
    tscr_ = CuTextLayer<T>();
    vscr_ = CuVisionBlock<T>();
    tmp_.release(); mlp_.release(); qkv_.release(); xa_.release(); stepd_.release();
    cudaStreamSynchronize(st_);
  }
  cudaStreamDestroy(st2_);
  cudaStreamDestroy(st_);
}

template <typename T>
void CudaModel<T>::randomize(uint64_t seed, float scale) {
  DevGuard g(dev_, st_, opt_.sync_every_op);
  h_.vision_weights_changed();
  int64_t biggest = 0;
  for (const ParamInfo& p : h_.param_table()) biggest = std::max(biggest, p.size);
  DArray<float> tmp("randomize staging");
  std::vector<float>& hw = h_.host_arrays(false).values;
  tmp.fit(biggest);
  for (const ParamInfo& p : h_.param_table()) {
    float* dst = tmp.p;
    const bool norm = p.shape.size() == 1 && p.name.find("bias") == std::string::npos;
    if (norm) cu::fill(dst, 1.0f, p.size);
    else {
      randomize_k<<<1024, 256, 0, cu::stream()>>>(dst, p.size, seed, scale, p.offset);
      CU_LAUNCHED("randomize");
    }
    cu::convert(w_.p + p.offset, static_cast<const float*>(dst), p.size);
    download(hw.data() + p.offset, dst, p.size);  // synchronises before tmp is reused
  }
  if (master_.p) CU_CHECK(cudaMemcpyAsync(master_.p, hw.data(), master_.n * sizeof(float), cudaMemcpyHostToDevice, st_), "randomize");
  if (hmaster_.p) std::memcpy(hmaster_.p, hw.data(), hw.size() * sizeof(float));
  CU_CHECK(cudaStreamSynchronize(st_), "randomize");
}

template <typename T>
std::vector<ForwardResult> CudaModel<T>::forward(const std::vector<ForwardRequest>& reqs, bool keep) {
  HostPhase hp_whole(opt_.profile, "forward (whole call)");
  DevGuard g(dev_, st_, opt_.sync_every_op);
  if (keep) { saved_.clear(); nreq_saved_ = 0; }
  std::vector<ForwardResult> out(reqs.size());
  std::vector<std::unique_ptr<CuActs<T>>> kept;
  size_t i = 0;
  while (i < reqs.size()) {
    size_t j = i;
    int64_t rows = 0;
    while (j < reqs.size()) {
      int64_t r = static_cast<int64_t>(reqs[j].prompt.ids.size());
      for (const auto& c : reqs[j].completions) r += static_cast<int64_t>(c.size());
      if (j > i && rows + r > opt_.pack_rows) break;
      rows += r;
      j++;
    }
    auto a = std::make_unique<CuActs<T>>();
    forward_pack(*a, reqs, i, j, out, keep);
    if (keep) kept.push_back(std::move(a));
    i = j;
  }
  if (keep) {
    saved_ = std::move(kept);
    nreq_saved_ = reqs.size();
  }
  release_scratch();
  return out;
}

template <typename T>
void CudaModel<T>::backward(const std::vector<std::vector<std::vector<float>>>& grads) {
  HostPhase hp_whole(opt_.profile, "backward (whole call)");
  VQ_CHECK(!saved_.empty(), "backward needs a forward with keepForBackward: true first");
  VQ_CHECK(grads.size() == nreq_saved_, "backward got gradients for " << grads.size()
                                            << " requests but the last forward had " << nreq_saved_);
  size_t r = 0;
  for (const auto& a : saved_)
    for (size_t k = 0; k < a->req_ncomp.size(); k++, r++) {
      VQ_CHECK(grads[r].size() == a->req_ncomp[k], "request " << r << ": gradients for " << grads[r].size()
                                                              << " completions, the forward had " << a->req_ncomp[k]);
    }
  r = 0;
  for (const auto& a : saved_) {
    size_t c = 0;
    for (size_t k = 0; k < a->req_ncomp.size(); k++, r++)
      for (size_t gi = 0; gi < grads[r].size(); gi++, c++)
        VQ_CHECK(static_cast<int64_t>(grads[r][gi].size()) == a->comp_len[c],
                 "request " << r << " completion " << gi << ": " << grads[r][gi].size() << " gradients for "
                            << a->comp_len[c] << " tokens");
  }
  DevGuard g(dev_, st_, opt_.sync_every_op);
  ensure_grads();
  try {
    size_t r0 = 0;
    for (auto& a : saved_) {
      backward_pack(*a, grads, r0);
      r0 += a->req_ncomp.size();
      a.reset();  // free the pack's activations as soon as its gradients are in
    }
  } catch (...) {
    saved_.clear();
    throw;
  }
  saved_.clear();
  release_scratch();
  CU_CHECK(cudaStreamSynchronize(st_), "backward");
}

// ---- factory and tools ----
bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why) *why = e != cudaSuccess ? std::string("no usable CUDA driver or device (") + cudaGetErrorString(e) + ")"
                                     : std::string("no CUDA device is visible");
    cudaGetLastError();
    return false;
  }
  return true;
}

std::unique_ptr<DeviceModel> make_cuda_model(Model& host, int device, bool bf16, const CudaOptions& opts) {
  std::string why;
  VQ_CHECK(cuda_available(&why), "device cuda:" << device << " is not available: " << why);
  if (bf16) return std::make_unique<CudaModel<cu::bf16>>(host, device, opts);
  return std::make_unique<CudaModel<float>>(host, device, opts);
}

void cuda_randomize(DeviceModel& d, uint64_t seed, float scale) {
  if (auto* b = dynamic_cast<CudaModel<cu::bf16>*>(&d)) return b->randomize(seed, scale);
  if (auto* f = dynamic_cast<CudaModel<float>*>(&d)) return f->randomize(seed, scale);
  VQ_FAIL("cuda_randomize: not a CUDA model");
}

double cuda_gemm_flops(bool reset) { return cu::gemm_flops(reset); }
size_t cuda_peak_bytes(bool reset) {
  const size_t p = cu::pool_peak();
  if (reset) cu::pool_reset_peak();
  return p;
}
size_t cuda_used_bytes() { return cu::pool_used(); }
void cuda_mem_info(size_t* free_bytes, size_t* total_bytes, size_t* pool_idle_bytes) {
  CU_CHECK(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
  const size_t reserved = cu::pool_reserved(), used = cu::pool_used();
  *pool_idle_bytes = reserved > used ? reserved - used : 0;
}
void cuda_sync() { CU_CHECK(cudaDeviceSynchronize(), "cuda_sync"); }

template class CudaModel<float>;
template class CudaModel<cu::bf16>;

}  // namespace vq
