// cuBLASLt matmuls for the CUDA ops (see gemm.h). One handle and one 32 MiB workspace per device
// per thread; the algorithm for each (shape, types, strides, alignment, epilogue) is asked of the
// heuristic once and cached.
#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <tuple>
#include <vector>

#include "cuda/gemm.h"

namespace vq {
namespace cu {

namespace {

const char* lt_status(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed (out of GPU memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
  }
}

#define LT_CHECK(call, op)                                                                          \
  do {                                                                                              \
    cublasStatus_t lt_s_ = (call);                                                                  \
    if (lt_s_ != CUBLAS_STATUS_SUCCESS) {                                                           \
      std::ostringstream lt_os_;                                                                    \
      lt_os_ << "cuBLASLt error in " << op << ": " << lt_status(lt_s_) << " (" << int(lt_s_) << ")"; \
      ::vq::fail_at(__FILE__, __LINE__, lt_os_.str());                                              \
    }                                                                                               \
  } while (0)

cudaDataType_t cuda_type(DType t) { return t == DType::F32 ? CUDA_R_32F : CUDA_R_16BF; }

int align_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (int b : {256, 128, 64, 32, 16, 8, 4}) if (a % b == 0) return b;
  return 2;
}

using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int, int, int, int, int, int, int, int, int>;

struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  Layout(DType t, int64_t rows, int64_t cols, int64_t ld, int batch, int64_t stride, const char* op) {
    LT_CHECK(cublasLtMatrixLayoutCreate(&l, cuda_type(t), rows, cols, ld), op);
    if (batch > 1) {
      LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)), op);
      LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)), op);
    }
  }
  Layout(const Layout&) = delete;
  ~Layout() { if (l) cublasLtMatrixLayoutDestroy(l); }
};

struct Desc {
  cublasLtMatmulDesc_t d = nullptr;
  explicit Desc(const char* op) { LT_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F), op); }
  Desc(const Desc&) = delete;
  ~Desc() { if (d) cublasLtMatmulDescDestroy(d); }
};

// Everything of a call but its pointers and scalars: made once per key.
struct Plan {
  Desc desc;
  Layout la, lb, lc;
  cublasLtMatmulAlgo_t algo{};
  Plan(const GemmArgs& g, bool bias, const char* op)
      : desc(op),
        la(g.ab, g.ta ? g.k : g.m, g.ta ? g.m : g.k, g.lda, g.batch, g.sA, op),
        lb(g.ab, g.tb ? g.n : g.k, g.tb ? g.k : g.n, g.ldb, g.batch, g.sB, op),
        lc(g.c, g.m, g.n, g.ldc, g.batch, g.sC, op) {
    const cublasOperation_t ta = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), op);
    LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), op);
    if (bias) {
      const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
      LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep)), op);
      const cudaDataType_t bt = cuda_type(g.c);
      LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)), op);
      // the heuristic sees a real bias pointer (as before plans: its alignment may narrow the algorithms, and the
      // key holds it); each call then sets its own
      LT_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)), op);
    }
  }
};

struct Handle {
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  size_t ws_bytes = 32u << 20;
  std::map<Key, std::unique_ptr<Plan>> plans;
};

thread_local std::map<int, Handle> handles;  // by device

Handle& handle() {
  int dev = 0;
  CU_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  Handle& h = handles[dev];
  if (!h.lt) {
    LT_CHECK(cublasLtCreate(&h.lt), "cublasLtCreate");
    CU_CHECK(cudaMalloc(&h.workspace, h.ws_bytes), "the cuBLASLt workspace (32 MiB)");
  }
  return h;
}

}  // namespace

namespace {
thread_local double g_flops = 0.0;
}

void add_flops(double f) { g_flops += f; }

double gemm_flops(bool reset) {
  const double f = g_flops;
  if (reset) g_flops = 0.0;
  return f;
}

void gemm(const GemmArgs& g, const char* op) {
  if (g.m == 0 || g.n == 0) return;
  g_flops += 2.0 * static_cast<double>(g.m) * g.n * g.k * g.batch;
  Handle& h = handle();
  const bool bias = g.bias != nullptr && g.batch == 1;
  const int aa = align_of(g.A), ab = align_of(g.B), ac = std::min(align_of(g.C), g.Cin ? align_of(g.Cin) : 256),
            abias = bias ? align_of(g.bias) : 0;
  const Key key{int(g.ta), int(g.tb), g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.sA, g.sB, g.sC, g.batch, int(g.ab),
                int(g.c), int(bias), int(g.beta != 0.0f), aa, ab, ac, abias};
  auto it = h.plans.find(key);
  if (it == h.plans.end()) {
    auto plan = std::make_unique<Plan>(g, bias, op);
    cublasLtMatmulPreference_t pref = nullptr;
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref), op);
    struct PrefGuard { cublasLtMatmulPreference_t p; ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); } } pg{pref};
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &h.ws_bytes,
                                                  sizeof(h.ws_bytes)), op);
    const uint32_t a32 = aa > 256 ? 256 : aa, b32 = ab > 256 ? 256 : ab, c32 = ac > 256 ? 256 : ac;
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32, sizeof(a32)), op);
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b32, sizeof(b32)), op);
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c32, sizeof(c32)), op);
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c32, sizeof(c32)), op);
    cublasLtMatmulHeuristicResult_t res[1];
    int found = 0;
    LT_CHECK(cublasLtMatmulAlgoGetHeuristic(h.lt, plan->desc.d, plan->la.l, plan->lb.l, plan->lc.l, plan->lc.l, pref, 1,
                                            res, &found),
             op);
    if (found == 0) {
      std::ostringstream os;
      os << "cuBLASLt has no algorithm for " << op << ": m=" << g.m << " n=" << g.n << " k=" << g.k << " batch="
         << g.batch << " ta=" << g.ta << " tb=" << g.tb << " lda=" << g.lda << " ldb=" << g.ldb << " ldc=" << g.ldc;
      VQ_FAIL(os.str());
    }
    plan->algo = res[0].algo;
    it = h.plans.emplace(key, std::move(plan)).first;
  }
  Plan& p = *it->second;
  // the bias pointer is the one attribute that changes from call to call (host-side only, no device work)
  if (bias) LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)), op);
  LT_CHECK(cublasLtMatmul(h.lt, p.desc.d, &g.alpha, g.A, p.la.l, g.B, p.lb.l, &g.beta, g.Cin ? g.Cin : g.C, p.lc.l, g.C,
                          p.lc.l, &p.algo, h.workspace, h.ws_bytes, stream()),
           op);
  if (op_profiling()) op_mark(op);
  if (debug_sync()) CU_CHECK(cudaStreamSynchronize(stream()), op);
}

}  // namespace cu
}  // namespace vq
