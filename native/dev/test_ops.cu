// Every CUDA op against the CPU reference (native/src/ops), fp32 and bf16, several shapes (odd ones
// too), fresh random inputs each case (never zeros), written outputs poisoned with NaN before the run,
// accumulated outputs (+=) started from random values. Error = ||gpu - cpu|| / ||cpu|| per output;
// tolerance 1e-5 for fp32 and 1e-2 for bf16 (inputs rounded to bf16 first, so both sides see the
// same numbers). Exit status 1 on any failure; with no GPU it prints "skipped" and exits 0.
//
//   build: scripts/gpu/prebuild.sh compiles it, scripts/gpu/run-all.sh links and runs it;  run: native/build/cuda/test_ops [filter]
//   [--bench]: the checks whose op name contains the filter (attention: all attention, decode: the decode kernel), then
//   with --bench the timings of the sections the filter names (linear, attention, decode, act, norm; any other: all)
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_common.h"
#include "cuda/flash.h"
#include "dev_options.h"
#include "flash_variants.h"
#include "cuda/gemm.h"
#include "cuda/ops.h"
#include "model.h"
#include "ops/ops.h"

using namespace vq;
using cu::bf16;

namespace {

std::mt19937_64 rng(20261120);
int failures = 0, checks = 0;
std::string filter;
// Which attention test_attention<bf16> runs: the engine's (its fused kernels, or the cuBLASLt tile path that
// CudaOptions::attention = gemm takes) or a variant of native/dev/flash_variants.cu.
// (wide_variant, wide64_variant: the forward fwd_w of cuda/flash_forward_wide.cuh at every call size.)
enum class AttRun { engine_fused, engine_gemm, pipelined_variant, simple_variant, wide_variant, wide64_variant };
AttRun att_run = AttRun::engine_fused;
const char* att_path = "";  // its name suffix in the checks

dev::FlashVariant att_variant() {
  switch (att_run) {
    case AttRun::simple_variant: return dev::FlashVariant::simple;
    case AttRun::wide_variant: return dev::FlashVariant::wide;
    case AttRun::wide64_variant: return dev::FlashVariant::wide64;
    default: return dev::FlashVariant::pipelined;
  }
}

template <typename T>
void run_attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const Span* spans, int64_t Tq,
                           int64_t Tk, int64_t NH, int64_t KVH, int64_t D) {
  if constexpr (std::is_same<T, bf16>::value) {
    if (att_run != AttRun::engine_fused && att_run != AttRun::engine_gemm && cu::flash_supported(D))
      return dev::attention_forward(att_variant(), out, lse, q, k, v, spans, Tq, Tk, NH, KVH, D);
  }
  cu::attention_forward(out, lse, q, k, v, spans, Tq, Tk, NH, KVH, D,
                        att_run == AttRun::engine_gemm ? CudaAttention::gemm : CudaAttention::fused);
}
template <typename T>
void run_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                            const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH,
                            int64_t D) {
  if constexpr (std::is_same<T, bf16>::value) {
    if (att_run != AttRun::engine_fused && att_run != AttRun::engine_gemm && cu::flash_supported(D))
      return dev::attention_backward(att_variant(), dq, dk, dv, dout, q, k, v, out, lse, spans, Tq, Tk, NH, KVH, D);
  }
  cu::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, spans, Tq, Tk, NH, KVH, D,
                         att_run == AttRun::engine_gemm ? CudaAttention::gemm : CudaAttention::fused);
}

std::vector<float> rnd(int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> U(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = U(rng);
    if (x == 0.0f) x = 0.5f * hi;
  }
  return v;
}

// A device tensor of type T holding host fp32 values (rounded to T's precision on the host copy too).
template <typename T>
struct Dt {
  T* p = nullptr;
  int64_t n = 0;
  Dt() = default;
  explicit Dt(std::vector<float>& h) { set(h); }
  void set(std::vector<float>& h) {
    n = static_cast<int64_t>(h.size());
    if (!p) CU_CHECK(cudaMalloc(&p, std::max<int64_t>(n, 1) * sizeof(T)), "test alloc");
    if constexpr (std::is_same<T, float>::value) {
      CU_CHECK(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), "upload");
    } else {
      std::vector<bf16> b(n);
      for (int64_t i = 0; i < n; i++) {
        b[i] = __float2bfloat16(h[i]);
        h[i] = __bfloat162float(b[i]);
      }
      CU_CHECK(cudaMemcpy(p, b.data(), n * sizeof(bf16), cudaMemcpyHostToDevice), "upload");
    }
  }
  void poison(int64_t count) {
    n = count;
    if (!p) CU_CHECK(cudaMalloc(&p, std::max<int64_t>(n, 1) * sizeof(T)), "test alloc");
    CU_CHECK(cudaMemset(p, 0xFF, n * sizeof(T)), "poison");  // all-ones bits: NaN in fp32 and bf16
  }
  std::vector<float> get() const {
    CU_CHECK(cudaDeviceSynchronize(), "sync");
    std::vector<float> h(n);
    if constexpr (std::is_same<T, float>::value) {
      CU_CHECK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), "download");
    } else {
      std::vector<bf16> b(n);
      CU_CHECK(cudaMemcpy(b.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost), "download");
      for (int64_t i = 0; i < n; i++) h[i] = __bfloat162float(b[i]);
    }
    return h;
  }
  ~Dt() { if (p) cudaFree(p); }
  Dt(const Dt&) = delete;
};

template <typename T> struct Di {
  T* p = nullptr;
  explicit Di(const std::vector<T>& h) {
    CU_CHECK(cudaMalloc(&p, std::max<size_t>(h.size(), 1) * sizeof(T)), "alloc");
    CU_CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  ~Di() { cudaFree(p); }
};

template <typename T> const char* tname() { return std::is_same<T, float>::value ? "fp32" : "bf16"; }
template <typename T> double tol() { return std::is_same<T, float>::value ? 1e-5 : 1e-2; }

// rel L2 of (got - base) against (ref - base); NaN anywhere fails.
void compare(const std::string& name, const std::vector<float>& got, const std::vector<float>& ref, double tolerance,
             const std::vector<float>* base = nullptr) {
  checks++;
  double dn = 0, rn = 0, fn = 0;
  bool nan = got.size() != ref.size();
  for (size_t i = 0; i < ref.size() && !nan; i++) {
    const double b = base ? (*base)[i] : 0.0;
    const double g = got[i] - b, r = ref[i] - b;
    if (!std::isfinite(got[i])) { nan = true; break; }
    dn += (g - r) * (g - r);
    rn += r * r;
    fn += double(ref[i]) * ref[i];
  }
  const double err = nan ? NAN : (rn > 0 ? std::sqrt(dn / rn) : std::sqrt(dn));
  // An accumulating op in bf16 stores base + added rounded to bf16: the added part cannot be closer than
  // that rounding (2^-8 of the sum), which over few elements whose added part nearly cancels the base is
  // more than the tolerance (swiglu_backward dup bf16(1): rel_l2 1.75e-2 on one H200 run).
  const bool bf16_sum = base && tolerance >= 1e-3;
  const bool ok = !nan && (err <= tolerance || (bf16_sum && std::sqrt(dn) <= std::sqrt(fn) / 256.0));
  if (!ok) failures++;
  std::printf("%-4s %-64s rel_l2 %.2e  tol %.0e\n", ok ? "ok" : "FAIL", name.c_str(), err, tolerance);
}

bool want(const char* op) { return filter.empty() || std::string(op).find(filter) != std::string::npos; }

std::string shp(std::initializer_list<int64_t> d) {
  std::string s = "(";
  for (auto x : d) s += (s.size() > 1 ? "," : "") + std::to_string(x);
  return s + ")";
}

// ---------------------------------------------------------------------------------------------
template <typename T> void test_embedding() {
  for (auto [Tn, C, V] : std::vector<std::array<int64_t, 3>>{{1, 3, 5}, {17, 64, 101}, {300, 1536, 2000}}) {
    std::vector<int32_t> ids(Tn);
    for (auto& i : ids) i = static_cast<int32_t>(rng() % V);
    auto wte = rnd(V * C);
    Dt<T> dw(wte);
    Di<int32_t> did(ids);
    std::vector<float> ref(Tn * C);
    embedding_forward(ref.data(), ids.data(), wte.data(), Tn, C);
    Dt<T> out;
    out.poison(Tn * C);
    cu::embedding_forward(out.p, did.p, dw.p, Tn, C);
    compare(std::string("embedding_forward ") + tname<T>() + shp({Tn, C, V}), out.get(), ref, tol<T>());
    // backward: some ids < 0 (image rows)
    for (int64_t t = 0; t < Tn; t += 3) ids[t] = -1;
    Di<int32_t> did2(ids);
    auto dout = rnd(Tn * C);
    Dt<T> ddout(dout);
    auto base = rnd(V * C, -0.1f, 0.1f);
    std::vector<float> dref = base;
    embedding_backward(dref.data(), dout.data(), ids.data(), Tn, C);
    Dt<float> dg(base);
    cu::embedding_backward(dg.p, ddout.p, did2.p, Tn, C);
    compare(std::string("embedding_backward ") + tname<T>() + shp({Tn, C, V}), dg.get(), dref, tol<T>(), &base);
  }
}

// (96, 8) and (4096, 128): the shapes of Qwen3-VL's per-head q/k norms (rows = tokens x heads, C = head_dim)
template <typename T> void test_norms() {
  for (auto [Tn, C] : std::vector<std::array<int64_t, 2>>{{1, 7}, {5, 64}, {33, 1536}, {130, 1280}, {3, 5000}, {96, 8}, {4096, 128}}) {
    auto x = rnd(Tn * C, -2, 2), w = rnd(C, 0.5, 1.5), b = rnd(C);
    Dt<T> dx(x), dw(w), db(b);
    {  // rmsnorm
      std::vector<float> ref(Tn * C), rstd(Tn);
      rmsnorm_forward(ref.data(), rstd.data(), x.data(), w.data(), Tn, C, 1e-6f);
      Dt<T> out;
      out.poison(Tn * C);
      Dt<float> drs;
      drs.poison(Tn);
      cu::rmsnorm_forward(out.p, drs.p, dx.p, dw.p, Tn, C, 1e-6f);
      compare(std::string("rmsnorm_forward ") + tname<T>() + shp({Tn, C}), out.get(), ref, tol<T>());
      compare(std::string("rmsnorm_forward rstd ") + tname<T>() + shp({Tn, C}), drs.get(), rstd, tol<T>());
      auto dout = rnd(Tn * C);
      Dt<T> ddout(dout);
      auto bx = rnd(Tn * C, -0.1f, 0.1f), bw = rnd(C, -0.1f, 0.1f);
      Dt<T> ddx(bx);
      Dt<float> ddw(bw);
      std::vector<float> rdx = bx, rdw = bw;
      rmsnorm_backward(rdx.data(), rdw.data(), dout.data(), x.data(), w.data(), rstd.data(), Tn, C);
      cu::rmsnorm_backward(ddx.p, ddw.p, ddout.p, dx.p, dw.p, drs.p, Tn, C);
      compare(std::string("rmsnorm_backward dinp ") + tname<T>() + shp({Tn, C}), ddx.get(), rdx, tol<T>(), &bx);
      compare(std::string("rmsnorm_backward dweight ") + tname<T>() + shp({Tn, C}), ddw.get(), rdw, tol<T>(), &bw);
    }
    {  // layernorm
      std::vector<float> ref(Tn * C), mean(Tn), rstd(Tn);
      layernorm_forward(ref.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), Tn, C, 1e-6f);
      Dt<T> out;
      out.poison(Tn * C);
      Dt<float> dm, drs;
      dm.poison(Tn);
      drs.poison(Tn);
      cu::layernorm_forward(out.p, dm.p, drs.p, dx.p, dw.p, db.p, Tn, C, 1e-6f);
      compare(std::string("layernorm_forward ") + tname<T>() + shp({Tn, C}), out.get(), ref, tol<T>());
      compare(std::string("layernorm_forward rstd ") + tname<T>() + shp({Tn, C}), drs.get(), rstd, tol<T>());
      auto dout = rnd(Tn * C);
      Dt<T> ddout(dout);
      auto bx = rnd(Tn * C, -0.1f, 0.1f), bw = rnd(C, -0.1f, 0.1f), bb = rnd(C, -0.1f, 0.1f);
      Dt<T> ddx(bx);
      Dt<float> ddw(bw), ddb(bb);
      std::vector<float> rdx = bx, rdw = bw, rdb = bb;
      layernorm_backward(rdx.data(), rdw.data(), rdb.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), Tn, C);
      cu::layernorm_backward(ddx.p, ddw.p, ddb.p, ddout.p, dx.p, dw.p, dm.p, drs.p, Tn, C);
      compare(std::string("layernorm_backward dinp ") + tname<T>() + shp({Tn, C}), ddx.get(), rdx, tol<T>(), &bx);
      compare(std::string("layernorm_backward dweight ") + tname<T>() + shp({Tn, C}), ddw.get(), rdw, tol<T>(), &bw);
      compare(std::string("layernorm_backward dbias ") + tname<T>() + shp({Tn, C}), ddb.get(), rdb, tol<T>(), &bb);
    }
  }
}

// The model's residual stream: fp32 x with bf16 (or fp32) weights and outputs; fused residual + norm.
template <typename T> void test_residual_norms() {
  for (auto [Tn, C] : std::vector<std::array<int64_t, 2>>{{1, 7}, {33, 1536}, {130, 1280}}) {
    auto x = rnd(Tn * C, -2, 2), r = rnd(Tn * C), w = rnd(C, 0.5, 1.5), b = rnd(C);
    Dt<float> dx(x);
    Dt<T> dr(r), dw(w), db(b);
    const std::string sh = std::string(" ") + tname<T>() + " x fp32" + shp({Tn, C});
    std::vector<float> xs(Tn * C);
    for (int64_t i = 0; i < Tn * C; i++) xs[i] = x[i] + r[i];
    {
      std::vector<float> ref(Tn * C), rstd(Tn);
      rmsnorm_forward(ref.data(), rstd.data(), xs.data(), w.data(), Tn, C, 1e-6f);
      Dt<T> out;
      out.poison(Tn * C);
      Dt<float> drs, xo;
      drs.poison(Tn);
      xo.poison(Tn * C);
      cu::residual_rmsnorm_forward(out.p, drs.p, xo.p, dx.p, dr.p, dw.p, Tn, C, 1e-6f);
      compare("residual_rmsnorm_forward" + sh, out.get(), ref, tol<T>());
      compare("residual_rmsnorm_forward x + r" + sh, xo.get(), xs, 1e-6);
      compare("residual_rmsnorm_forward rstd" + sh, drs.get(), rstd, 1e-5);
      // backward with the fp32 input and gradient, and the T copy of the updated gradient
      auto dout = rnd(Tn * C);
      Dt<T> ddout(dout);
      auto bx = rnd(Tn * C, -0.1f, 0.1f);
      Dt<float> ddx(bx);
      Dt<T> copy;
      copy.poison(Tn * C);
      std::vector<float> rdx = bx, rdw(C, 0.0f);
      Dt<float> ddw(rdw);
      rmsnorm_backward(rdx.data(), rdw.data(), dout.data(), xs.data(), w.data(), rstd.data(), Tn, C);
      cu::rmsnorm_backward(ddx.p, ddw.p, ddout.p, static_cast<const float*>(xo.p), dw.p, drs.p, Tn, C, copy.p);
      compare("rmsnorm_backward dinp fp32" + sh, ddx.get(), rdx, tol<T>(), &bx);
      compare("rmsnorm_backward dinp copy" + sh, copy.get(), rdx, tol<T>());
      compare("rmsnorm_backward dweight" + sh, ddw.get(), rdw, tol<T>());
    }
    {
      std::vector<float> ref(Tn * C), mean(Tn), rstd(Tn);
      layernorm_forward(ref.data(), mean.data(), rstd.data(), xs.data(), w.data(), b.data(), Tn, C, 1e-6f);
      Dt<T> out;
      out.poison(Tn * C);
      Dt<float> dm, drs, xo;
      dm.poison(Tn);
      drs.poison(Tn);
      xo.poison(Tn * C);
      cu::residual_layernorm_forward(out.p, dm.p, drs.p, xo.p, dx.p, dr.p, dw.p, db.p, Tn, C, 1e-6f);
      compare("residual_layernorm_forward" + sh, out.get(), ref, tol<T>());
      compare("residual_layernorm_forward x + r" + sh, xo.get(), xs, 1e-6);
      auto dout = rnd(Tn * C);
      Dt<T> ddout(dout);
      auto bx = rnd(Tn * C, -0.1f, 0.1f);
      Dt<float> ddx(bx);
      Dt<T> copy;
      copy.poison(Tn * C);
      std::vector<float> rdx = bx, rdw(C, 0.0f), rdb(C, 0.0f);
      Dt<float> ddw(rdw), ddb(rdb);
      layernorm_backward(rdx.data(), rdw.data(), rdb.data(), dout.data(), xs.data(), w.data(), mean.data(), rstd.data(), Tn, C);
      cu::layernorm_backward(ddx.p, ddw.p, ddb.p, ddout.p, static_cast<const float*>(xo.p), dw.p, dm.p, drs.p, Tn, C, copy.p);
      compare("layernorm_backward dinp fp32" + sh, ddx.get(), rdx, tol<T>(), &bx);
      compare("layernorm_backward dinp copy" + sh, copy.get(), rdx, tol<T>());
      compare("layernorm_backward dweight" + sh, ddw.get(), rdw, tol<T>());
    }
    {  // in place, no r: plain norm of the fp32 stream
      std::vector<float> ref(Tn * C), rstd(Tn);
      rmsnorm_forward(ref.data(), rstd.data(), x.data(), w.data(), Tn, C, 1e-6f);
      Dt<float> xi(x), drs;
      drs.poison(Tn);
      Dt<T> out;
      out.poison(Tn * C);
      cu::residual_rmsnorm_forward(out.p, drs.p, xi.p, xi.p, static_cast<const T*>(nullptr), dw.p, Tn, C, 1e-6f);
      compare("residual_rmsnorm_forward in place, no r" + sh, out.get(), ref, tol<T>());
    }
  }
}

template <typename T> void test_linear() {
  for (auto [Tn, IC, OC] : std::vector<std::array<int64_t, 3>>{{1, 3, 5}, {7, 33, 17}, {64, 128, 96}, {257, 1536, 256}, {130, 1280, 3840}}) {
    auto x = rnd(Tn * IC), w = rnd(OC * IC, -0.2f, 0.2f), b = rnd(OC);
    Dt<T> dx(x), dw(w), db(b);
    for (int withb = 0; withb < 2; withb++) {
      std::vector<float> ref(Tn * OC);
      linear_forward(ref.data(), x.data(), w.data(), withb ? b.data() : nullptr, Tn, IC, OC);
      Dt<T> out;
      out.poison(Tn * OC);
      cu::linear_forward(out.p, dx.p, dw.p, withb ? db.p : nullptr, Tn, IC, OC);
      compare(std::string("linear_forward") + (withb ? "+bias " : " ") + tname<T>() + shp({Tn, IC, OC}), out.get(), ref, tol<T>());
    }
    auto dout = rnd(Tn * OC);
    Dt<T> ddout(dout);
    auto bx = rnd(Tn * IC, -0.1f, 0.1f), bw = rnd(OC * IC, -0.1f, 0.1f), bb = rnd(OC, -0.1f, 0.1f);
    Dt<T> ddx(bx);
    Dt<float> ddw(bw), ddb(bb);
    std::vector<float> rdx = bx, rdw = bw, rdb = bb;
    linear_backward(rdx.data(), rdw.data(), rdb.data(), dout.data(), x.data(), w.data(), Tn, IC, OC);
    cu::linear_backward(ddx.p, ddw.p, ddb.p, ddout.p, dx.p, dw.p, Tn, IC, OC);
    compare(std::string("linear_backward dinp ") + tname<T>() + shp({Tn, IC, OC}), ddx.get(), rdx, tol<T>(), &bx);
    compare(std::string("linear_backward dweight ") + tname<T>() + shp({Tn, IC, OC}), ddw.get(), rdw, tol<T>(), &bw);
    compare(std::string("linear_backward dbias ") + tname<T>() + shp({Tn, IC, OC}), ddb.get(), rdb, tol<T>(), &bb);
    {  // dinp overwritten
      std::vector<float> z(Tn * IC, 0.0f);
      linear_backward(z.data(), nullptr, nullptr, dout.data(), x.data(), w.data(), Tn, IC, OC);
      Dt<T> o;
      o.poison(Tn * IC);
      cu::linear_backward(o.p, static_cast<float*>(nullptr), static_cast<float*>(nullptr), ddout.p, dx.p, dw.p, Tn, IC, OC, false);
      compare(std::string("linear_backward dinp (overwrite) ") + tname<T>() + shp({Tn, IC, OC}), o.get(), z, tol<T>());
    }
  }
}

template <typename T> void test_lora() {
  for (auto [Tn, IC, OC, R] : std::vector<std::array<int64_t, 4>>{{1, 5, 3, 2}, {9, 64, 48, 8}, {130, 1536, 256, 64}}) {
    auto x = rnd(Tn * IC), A = rnd(R * IC, -0.3f, 0.3f), B = rnd(OC * R, -0.3f, 0.3f);
    Dt<T> dx(x), dA(A), dB(B);
    const float scale = 2.0f;
    auto base = rnd(Tn * OC, -0.1f, 0.1f);
    std::vector<float> ref = base, xa(Tn * R);
    Dt<T> out(base);
    lora_forward(ref.data(), xa.data(), x.data(), A.data(), B.data(), Tn, IC, OC, R, scale);
    Dt<T> dxa;
    dxa.poison(Tn * R);
    cu::lora_forward(out.p, dxa.p, dx.p, dA.p, dB.p, Tn, IC, OC, R, scale);
    compare(std::string("lora_forward ") + tname<T>() + shp({Tn, IC, OC, R}), out.get(), ref, tol<T>(), &base);
    compare(std::string("lora_forward xa ") + tname<T>() + shp({Tn, IC, OC, R}), dxa.get(), xa, tol<T>());
    auto xa_h = dxa.get();  // the backward's input, as the device has it
    auto dout = rnd(Tn * OC);
    Dt<T> ddout(dout);
    auto bx = rnd(Tn * IC, -0.1f, 0.1f), bA = rnd(R * IC, -0.1f, 0.1f), bB = rnd(OC * R, -0.1f, 0.1f);
    Dt<T> ddx(bx);
    Dt<float> ddA(bA), ddB(bB);
    std::vector<float> rdx = bx, rdA = bA, rdB = bB;
    lora_backward(rdx.data(), rdA.data(), rdB.data(), dout.data(), x.data(), xa_h.data(), A.data(), B.data(), Tn, IC, OC, R, scale);
    cu::lora_backward(ddx.p, ddA.p, ddB.p, ddout.p, dx.p, dxa.p, dA.p, dB.p, Tn, IC, OC, R, scale);
    compare(std::string("lora_backward dinp ") + tname<T>() + shp({Tn, IC, OC, R}), ddx.get(), rdx, tol<T>(), &bx);
    compare(std::string("lora_backward dA ") + tname<T>() + shp({Tn, IC, OC, R}), ddA.get(), rdA, tol<T>(), &bA);
    compare(std::string("lora_backward dB ") + tname<T>() + shp({Tn, IC, OC, R}), ddB.get(), rdB, tol<T>(), &bB);
  }
}

// bf16 linear + LoRA with one rounding (cu::lora_split + cu::linear_lora_forward, the model's path for a
// linear with an adapter): against the CPU ops (rel L2), and against the exact (double) result of the same
// inputs (x, W, bias in bf16; A, B in fp32 as their master is): outputs more than half a bf16 ulp from it
// were not rounded once from an fp32-accurate sum. The two-op path (linear_forward, then lora_forward with
// bf16 adapters) is measured the same way for comparison (printed, not checked).
void test_linear_lora() {
  // lora_b_round_k (K = 3R): scalar loads (3R % 8 != 0) and 16-byte loads, one partial K chunk of 32 or a full one
  // then a partial one (R 12: K 36, scalar; R 16: K 48, vector), partial row and output tiles, several of each
  for (auto [Tn, IC, OC, R] : std::vector<std::array<int64_t, 4>>{{1, 5, 3, 2}, {9, 64, 48, 8}, {33, 80, 200, 4},
                                                                   {130, 1536, 256, 64}, {70, 96, 130, 12},
                                                                   {65, 64, 72, 16}}) {
    const std::string sh = shp({Tn, IC, OC, R});
    auto x = rnd(Tn * IC), w = rnd(OC * IC, -0.5f, 0.5f), b = rnd(OC, -0.5f, 0.5f);
    auto A = rnd(R * IC, -0.3f, 0.3f), B = rnd(OC * R, -0.3f, 0.3f);
    auto A16 = A, B16 = B;
    Dt<bf16> dx(x), dw(w), db(b), dA16(A16), dB16(B16);  // x, w, b now hold their bf16 values
    Dt<float> dA(A), dB(B);
    const float scale = 2.0f;
    Dt<bf16> Acat, Bcat, out, xa, xcat;
    Dt<float> acc, xa2;
    Acat.poison(2 * R * IC); Bcat.poison(3 * OC * R); out.poison(Tn * OC); xa.poison(Tn * R); xcat.poison(3 * Tn * R);
    acc.poison(Tn * OC); xa2.poison(2 * Tn * R);
    cu::lora_split(Acat.p, Bcat.p, dA.p, dB.p, IC, OC, R);
    cu::linear_lora_forward(out.p, xa.p, dx.p, dw.p, db.p, Acat.p, Bcat.p, Tn, IC, OC, R, scale, acc.p, xa2.p, xcat.p);
    std::vector<float> ref(Tn * OC), rxa(Tn * R);
    linear_forward(ref.data(), x.data(), w.data(), b.data(), Tn, IC, OC);
    lora_forward(ref.data(), rxa.data(), x.data(), A.data(), B.data(), Tn, IC, OC, R, scale);
    const auto got = out.get();
    compare("linear_lora_forward bf16" + sh, got, ref, tol<bf16>());
    compare("linear_lora_forward xa bf16" + sh, xa.get(), rxa, tol<bf16>());
    std::vector<double> exact(Tn * OC);
    for (int64_t t = 0; t < Tn; t++) {
      std::vector<double> v(R, 0.0);
      for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < IC; i++) v[r] += double(x[t * IC + i]) * A[r * IC + i];
      for (int64_t o = 0; o < OC; o++) {
        double s = b[o], l = 0.0;
        for (int64_t i = 0; i < IC; i++) s += double(x[t * IC + i]) * w[o * IC + i];
        for (int64_t r = 0; r < R; r++) l += v[r] * B[o * R + r];
        exact[t * OC + o] = s + double(scale) * l;
      }
    }
    auto off_share = [&](const std::vector<float>& g, double& worst) {  // share of outputs > 1/2 ulp off; worst in ulps
      int64_t off = 0;
      worst = 0;
      for (size_t i = 0; i < g.size(); i++) {
        int ex = 0;
        std::frexp(std::fabs(exact[i]), &ex);
        const double ulp = std::ldexp(1.0, ex - 8), e = std::fabs(g[i] - exact[i]) / ulp;
        if (!(e <= 0.5 * (1 + 1e-4))) off++;
        if (!(e <= worst)) worst = e;
      }
      return double(off) / double(g.size());
    };
    double worst = 0, worst2 = 0;
    const double share = off_share(got, worst);
    Dt<bf16> out2, xa_2;  // the two-op path
    out2.poison(Tn * OC);
    xa_2.poison(Tn * R);
    cu::linear_forward(out2.p, dx.p, dw.p, db.p, Tn, IC, OC);
    cu::lora_forward(out2.p, xa_2.p, dx.p, dA16.p, dB16.p, Tn, IC, OC, R, scale);
    const double share2 = off_share(out2.get(), worst2);
    // correctly rounded but for sums within fp32 noise of a rounding midpoint (and the hi/lo pairs' 2^-16)
    checks++;
    const bool ok = share <= std::max(0.03, 1.0 / double(got.size()));
    if (!ok) failures++;
    std::printf("%-4s %-64s %.2f%% over 1/2 ulp (worst %.2f ulp); two-op path %.1f%% (worst %.2f ulp)\n", ok ? "ok" : "FAIL",
                ("linear_lora_forward one rounding bf16" + sh).c_str(), 100 * share, worst, 100 * share2, worst2);
  }
}

template <typename T> void test_rope() {
  for (auto [Tn, NH, D] : std::vector<std::array<int64_t, 3>>{{1, 1, 2}, {7, 3, 6}, {65, 12, 128}, {300, 16, 80},
                                                               {33, 16, 72}}) {
    // tables from random M-RoPE positions (device vs CPU), then the rotation with the CPU's tables
    const int64_t half = D / 2;
    std::vector<int32_t> pos(3 * Tn), hpos(Tn), wpos(Tn);
    for (auto& p : pos) p = static_cast<int32_t>(rng() % 4096);
    for (int64_t t = 0; t < Tn; t++) { hpos[t] = rng() % 64; wpos[t] = rng() % 64; }
    int32_t sec[3] = {static_cast<int32_t>(half / 4), static_cast<int32_t>(half * 3 / 8), 0};
    sec[2] = static_cast<int32_t>(half) - sec[0] - sec[1];
    std::vector<float> c(Tn * half), s(Tn * half);
    rope_mrope_table(c.data(), s.data(), pos.data(), sec, Tn, D, 1e6f);
    if (std::is_same<T, float>::value) {
      Di<int32_t> dpos(pos);
      Dt<float> dc, ds;
      dc.poison(Tn * half);
      ds.poison(Tn * half);
      cu::rope_mrope_table(dc.p, ds.p, dpos.p, sec, Tn, D, 1e6f);
      compare("rope_mrope_table cos" + shp({Tn, D}), dc.get(), c, 1e-5);
      compare("rope_mrope_table sin" + shp({Tn, D}), ds.get(), s, 1e-5);
      {  // Qwen3-VL's interleaved map of frequencies to axes
        std::vector<float> ci(Tn * half), si(Tn * half);
        rope_mrope_table(ci.data(), si.data(), pos.data(), sec, Tn, D, 1e6f, true);
        cu::rope_mrope_table(dc.p, ds.p, dpos.p, sec, Tn, D, 1e6f, true);
        compare("rope_mrope_table interleaved cos" + shp({Tn, D}), dc.get(), ci, 1e-5);
        compare("rope_mrope_table interleaved sin" + shp({Tn, D}), ds.get(), si, 1e-5);
      }
      if (D % 4 == 0) {
        std::vector<float> vc(Tn * half), vs(Tn * half);
        rope_vision_table(vc.data(), vs.data(), hpos.data(), wpos.data(), Tn, D, 10000.0f);
        Di<int32_t> dh(hpos), dwp(wpos);
        cu::rope_vision_table(dc.p, ds.p, dh.p, dwp.p, Tn, D, 10000.0f);
        compare("rope_vision_table cos" + shp({Tn, D}), dc.get(), vc, 1e-5);
        compare("rope_vision_table sin" + shp({Tn, D}), ds.get(), vs, 1e-5);
      }
    }
    Dt<float> dc(c), ds(s);
    auto x = rnd(Tn * NH * D);
    Dt<T> dx(x);
    std::vector<float> ref(Tn * NH * D);
    rope_forward(ref.data(), x.data(), c.data(), s.data(), Tn, NH, D);
    Dt<T> out;
    out.poison(Tn * NH * D);
    cu::rope_forward(out.p, dx.p, dc.p, ds.p, Tn, NH, D);
    compare(std::string("rope_forward ") + tname<T>() + shp({Tn, NH, D}), out.get(), ref, tol<T>());
    auto base = rnd(Tn * NH * D, -0.1f, 0.1f);
    std::vector<float> rb = base;
    Dt<T> db(base);
    rope_backward(rb.data(), x.data(), c.data(), s.data(), Tn, NH, D);
    cu::rope_backward(db.p, dx.p, dc.p, ds.p, Tn, NH, D);
    compare(std::string("rope_backward ") + tname<T>() + shp({Tn, NH, D}), db.get(), rb, tol<T>(), &base);
    {  // the vision tower's split of its fused projection with the rotation of q and k (one pass in bf16)
      const int64_t E = NH * D;
      auto qkv = rnd(Tn * 3 * E);
      Dt<T> dqkv(qkv);  // qkv now holds its T values
      std::vector<float> rq(Tn * E), rk(Tn * E), rv(Tn * E), q0(Tn * E), k0(Tn * E);
      for (int64_t t = 0; t < Tn; t++)
        for (int64_t e = 0; e < E; e++) {
          q0[t * E + e] = qkv[t * 3 * E + e];
          k0[t * E + e] = qkv[t * 3 * E + E + e];
          rv[t * E + e] = qkv[t * 3 * E + 2 * E + e];
        }
      rope_forward(rq.data(), q0.data(), c.data(), s.data(), Tn, NH, D);
      rope_forward(rk.data(), k0.data(), c.data(), s.data(), Tn, NH, D);
      Dt<T> gq, gk, gv;
      gq.poison(Tn * E); gk.poison(Tn * E); gv.poison(Tn * E);
      cu::split_qkv_rope(gq.p, gk.p, gv.p, dqkv.p, dc.p, ds.p, Tn, NH, D);
      const std::string sh = std::string(" ") + tname<T>() + shp({Tn, NH, D});
      compare("split_qkv_rope q" + sh, gq.get(), rq, tol<T>());
      compare("split_qkv_rope k" + sh, gk.get(), rk, tol<T>());
      compare("split_qkv_rope v" + sh, gv.get(), rv, 1e-7);
    }
  }
}

struct AttCase {
  const char* what;
  int64_t NH, KVH, D;
  std::vector<Span> spans;
  int64_t Tk;
};

std::vector<AttCase> att_cases() {
  std::vector<AttCase> cs;
  auto causal = [](int64_t T) { std::vector<Span> s(T); for (int64_t i = 0; i < T; i++) s[i] = {0, 0, 0, int32_t(i + 1)}; return s; };
  cs.push_back({"causal", 2, 1, 8, causal(5), 5});
  cs.push_back({"causal odd D", 3, 3, 6, causal(19), 19});
  {  // shared prefix Lp + G completions of lengths
    const int32_t Lp = 37;
    std::vector<int32_t> lens = {5, 1, 9, 16};
    std::vector<Span> s = causal(Lp);
    int32_t row = Lp;
    for (int32_t L : lens) { const int32_t st = row; for (int32_t t = 0; t < L; t++, row++) s.push_back({0, Lp, st, row + 1}); }
    cs.push_back({"shared prefix GQA 12/2", 12, 2, 128, s, row});
    cs.push_back({"shared prefix GQA 6/2", 6, 2, 16, s, row});
  }
  {  // vision frames (bidirectional within each frame)
    std::vector<Span> s;
    int32_t row = 0;
    for (int32_t n : {16, 64, 4}) { const int32_t st = row; for (int32_t i = 0; i < n; i++) s.push_back({0, 0, st, st + n}); row += n; }
    cs.push_back({"vision frames", 16, 16, 80, s, row});
  }
  {  // decode: B rows reading a KV cache of Lp + n*maxT rows
    const int32_t Lp = 29, maxT = 8, n = 5, t = 4;
    std::vector<Span> s;
    for (int32_t g = 0; g < n; g++) { const int32_t base = Lp + g * maxT; s.push_back({0, Lp, base, base + t}); }
    cs.push_back({"decode", 12, 2, 64, s, Lp + n * maxT});
  }
  {  // two requests packed: prompt + completions each, rows offset (the fused kernel's tiles straddle them)
    std::vector<Span> s;
    int32_t row = 0;
    for (auto [Lp, G, L] : std::vector<std::array<int32_t, 3>>{{70, 3, 11}, {41, 4, 7}}) {
      const int32_t off = row;
      for (int32_t i = 0; i < Lp; i++) s.push_back({0, 0, off, off + i + 1});
      row += Lp;
      for (int32_t g = 0; g < G; g++) { const int32_t st = row; for (int32_t t = 0; t < L; t++, row++) s.push_back({off, off + Lp, st, row + 1}); }
    }
    cs.push_back({"two packed requests GQA 12/2", 12, 2, 128, s, row});
    cs.push_back({"two packed requests MHA 4/4", 4, 4, 64, s, row});
  }
  {  // decode over three prompts' cache regions, several samples each
    std::vector<Span> s;
    int32_t region = 0;
    for (auto [Lp, n, maxT] : std::vector<std::array<int32_t, 3>>{{37, 4, 9}, {90, 3, 9}, {12, 5, 6}}) {
      for (int32_t g = 0; g < n; g++) { const int32_t base = region + Lp + g * maxT; s.push_back({region, region + Lp, base, base + 5}); }
      region += Lp + n * maxT;
    }
    cs.push_back({"decode three prompts GQA 12/2", 12, 2, 128, s, region});
  }
  {  // a long causal run (many tiles and key blocks), one vision frame of 256 (D 80)
    cs.push_back({"causal 300 MHA", 4, 4, 64, causal(300), 300});
    cs.push_back({"causal 200 GQA 12/2", 12, 2, 128, causal(200), 200});
    std::vector<Span> s(256, Span{0, 0, 0, 256});
    cs.push_back({"vision frame 256", 16, 16, 80, s, 256});
  }
  return cs;
}

template <typename T> void test_attention() {
  for (const AttCase& ac : att_cases()) {
    const int64_t Tq = static_cast<int64_t>(ac.spans.size()), Tk = ac.Tk, NH = ac.NH, KVH = ac.KVH, D = ac.D;
    auto q = rnd(Tq * NH * D, -2, 2), k = rnd(Tk * KVH * D, -2, 2), v = rnd(Tk * KVH * D);
    Dt<T> dq(q), dk(k), dv(v);
    std::vector<float> ref(Tq * NH * D), lse(Tq * NH);
    attention_forward(ref.data(), lse.data(), q.data(), k.data(), v.data(), ac.spans.data(), Tq, Tk, NH, KVH, D);
    Dt<T> out;
    out.poison(Tq * NH * D);
    Dt<float> dl;
    dl.poison(Tq * NH);
    run_attention_forward(out.p, dl.p, dq.p, dk.p, dv.p, ac.spans.data(), Tq, Tk, NH, KVH, D);
    const std::string sh = std::string(" ") + tname<T>() + att_path + " " + ac.what + shp({Tq, Tk, NH, KVH, D});
    compare("attention_forward" + sh, out.get(), ref, tol<T>());
    compare("attention_forward lse" + sh, dl.get(), lse, tol<T>());
    auto oh = out.get();  // backward's inputs as the device has them
    auto dout = rnd(Tq * NH * D);
    Dt<T> ddout(dout);
    auto bq = rnd(Tq * NH * D, -0.1f, 0.1f), bk = rnd(Tk * KVH * D, -0.1f, 0.1f), bv = rnd(Tk * KVH * D, -0.1f, 0.1f);
    Dt<T> gq(bq), gk(bk), gv(bv);
    std::vector<float> rq = bq, rk = bk, rv = bv;
    auto lh = dl.get();
    attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), q.data(), k.data(), v.data(), oh.data(), lh.data(),
                       ac.spans.data(), Tq, Tk, NH, KVH, D);
    run_attention_backward(gq.p, gk.p, gv.p, ddout.p, dq.p, dk.p, dv.p, out.p, dl.p, ac.spans.data(), Tq, Tk, NH, KVH, D);
    compare("attention_backward dq" + sh, gq.get(), rq, tol<T>(), &bq);
    compare("attention_backward dk" + sh, gk.get(), rk, tol<T>(), &bk);
    compare("attention_backward dv" + sh, gv.get(), rv, tol<T>(), &bv);
  }
}

// ---- the decode kernel (cuda/flash_decode.cuh: (row, query head) pairs of one KV head per tile) at decode-shaped
// spans, forward only: the engine's entry (cu::attention_forward, which takes it for these small calls), every
// tile layout it can pick, and the per-head kernel it replaced (native/dev/flash_variants.cu, which --bench times
// against it). ----
struct DecSpans {
  std::string what;
  std::vector<Span> spans;
  int64_t Tk;
};

// G groups of n rows; a group's cache region holds its prompt (Lp rows) and then each row's own maxT slots (as
// the engine's sampler lays the cache out); row i of a group reads the prompt and t(g, i) of its own slots.
DecSpans dec_groups(const std::string& what, int G, int n, int Lp, int maxT, const std::function<int(int, int)>& t) {
  DecSpans d{what, {}, 0};
  for (int g = 0; g < G; g++) {
    const int32_t region = static_cast<int32_t>(d.Tk);
    for (int i = 0; i < n; i++) {
      const int32_t base = region + Lp + i * maxT;
      d.spans.push_back({region, region + Lp, base, base + t(g, i)});
    }
    d.Tk += Lp + static_cast<int64_t>(n) * maxT;
  }
  return d;
}

std::vector<DecSpans> decode_span_sets() {
  std::vector<DecSpans> cs;
  // groups of 5 (tiles straddle groups), own lengths 1..40 (partial key blocks everywhere)
  cs.push_back(dec_groups("3 groups x 5 rows, prompt 298 + own 1-40", 3, 5, 298, 40,
                          [](int g, int i) { return 1 + (i * 17 + g * 11) % 40; }));
  // the rollout's step 16: 16 groups of 8 rows over one prompt each
  cs.push_back(dec_groups("16 groups x 8 rows, prompt 298 + own 16", 16, 8, 298, 24, [](int, int) { return 16; }));
  // evaluate's rows: every row its own prompt, its tokens right after it (the two ranges meet)
  cs.push_back(dec_groups("64 distinct prompts 298 + own 1-32", 64, 1, 298, 32, [](int g, int) { return 1 + (g * 7) % 32; }));
  {  // long contexts: 3 rows over a 2100-row prompt, then 2 rows of 2500 keys each, one with its ranges swapped
    DecSpans d = dec_groups("long: prompt 2100 x 3 rows + 2 rows of 2500", 1, 3, 2100, 200,
                            [](int, int i) { return std::array<int, 3>{57, 130, 200}[i]; });
    for (int r = 0; r < 2; r++) {
      const int32_t off = static_cast<int32_t>(d.Tk);
      d.spans.push_back(r == 0 ? Span{off, off + 2400, off + 2400, off + 2500} : Span{off + 2450, off + 2500, off, off + 2450});
      d.Tk += 2500;
    }
    cs.push_back(d);
  }
  {  // empty spans: a row with none, rows with only one range, then 33 rows with none (whole tiles without a key)
    DecSpans d{"empty spans (40 rows, 33 of them empty)", {}, 300};
    d.spans.push_back({0, 0, 0, 0});
    d.spans.push_back({3, 3, 10, 50});
    d.spans.push_back({10, 90, 7, 7});
    for (int i = 0; i < 33; i++) d.spans.push_back({0, 0, 0, 0});
    for (int i = 0; i < 4; i++) d.spans.push_back({0, 100 + 30 * i, 250, 251 + 10 * i});
    cs.push_back(d);
  }
  {  // random disjoint ranges (either order, some empty) over 1500 keys, 37 rows
    DecSpans d{"37 rows of random ranges over 1500 keys", {}, 1500};
    for (int i = 0; i < 37; i++) {
      std::array<int32_t, 4> x;
      for (auto& e : x) e = static_cast<int32_t>(rng() % 1501);
      std::sort(x.begin(), x.end());
      Span s{x[0], x[1], x[2], x[3]};
      if (i % 5 == 1) s.a1 = s.a0;
      if (i % 7 == 2) s.b1 = s.b0;
      if (i % 2) s = Span{s.b0, s.b1, s.a0, s.a1};
      d.spans.push_back(s);
    }
    cs.push_back(d);
  }
  // one row (a batch of one), the last key block partial (Tk 1001)
  cs.push_back({"1 row, 901 keys up to Tk 1001", {Span{0, 700, 800, 1001}}, 1001});
  return cs;
}

// rel L2 of out and of lse (where the reference's lse is -inf, the kernel's must be -inf too); one check
void compare_decode(const std::string& name, const std::vector<float>& out, const std::vector<float>& ref,
                    const std::vector<float>& lse, const std::vector<float>& lref) {
  checks++;
  auto rel = [](const std::vector<float>& got, const std::vector<float>& want) {
    double dn = 0, rn = 0;
    if (got.size() != want.size()) return double(NAN);
    for (size_t i = 0; i < want.size(); i++) {
      if (std::isinf(want[i]) && want[i] < 0) {
        if (!(std::isinf(got[i]) && got[i] < 0)) return double(NAN);
        continue;
      }
      if (!std::isfinite(got[i])) return double(NAN);
      dn += double(got[i] - want[i]) * (got[i] - want[i]);
      rn += double(want[i]) * want[i];
    }
    return rn > 0 ? std::sqrt(dn / rn) : std::sqrt(dn);
  };
  const double eo = rel(out, ref), el = rel(lse, lref);
  const bool ok = eo <= tol<bf16>() && el <= tol<bf16>();  // false for NaN
  if (!ok) failures++;
  std::printf("%-4s %-80s out %.2e lse %.2e  tol %.0e\n", ok ? "ok" : "FAIL", name.c_str(), eo, el, tol<bf16>());
}

// ---- fwd_w (cuda/flash_forward_wide.cuh: 32 query rows per warp, two 16-row atoms) where rows that read no key
// (lse -inf, zero output) share warps and atoms with rows that do, a warp's rows are all empty, one empty row breaks
// a full block, and the last tile ends before 128 / 64 rows; the 16-row pipelined kernel on the same calls.
// test_attention's cases hold no empty row (compare() takes no -inf). ----
void test_wide_empty_rows() {
  std::vector<Span> s;
  for (int i = 0; i < 40; i++) s.push_back({0, 0, 0, 0});          // warp 0 and half of warp 1: no keys
  for (int i = 0; i < 50; i++) s.push_back({0, 0, 40, 90});        // a frame (bidirectional), rows 40..89
  s[60] = {0, 0, 0, 0};                                            // one empty row among the frame's
  for (int i = 0; i < 20; i++) s.push_back({0, 0, 0, 0});
  for (int i = 0; i < 30; i++) s.push_back({40, 90, 110, 110 + i + 1});  // prefix + causal completion
  s.push_back({7, 8, 0, 0});                                       // one key
  const int64_t Tq = static_cast<int64_t>(s.size()), Tk = Tq, NH = 4, KVH = 2;
  for (int64_t D : {16, 64, 80, 128}) {
    auto q = rnd(Tq * NH * D, -2, 2), k = rnd(Tk * KVH * D, -2, 2), v = rnd(Tk * KVH * D);
    Dt<bf16> dq(q), dk(k), dv(v);
    std::vector<float> ref(Tq * NH * D), lref(Tq * NH);
    attention_forward(ref.data(), lref.data(), q.data(), k.data(), v.data(), s.data(), Tq, Tk, NH, KVH, D);
    for (auto var : {dev::FlashVariant::wide, dev::FlashVariant::wide64, dev::FlashVariant::pipelined}) {
      Dt<bf16> out;
      out.poison(Tq * NH * D);
      Dt<float> dl;
      dl.poison(Tq * NH);
      dev::attention_forward(var, out.p, dl.p, dq.p, dk.p, dv.p, s.data(), Tq, Tk, NH, KVH, D);
      compare_decode(std::string("attention_forward empty rows (") + dev::variant_name(var) + ")" +
                         shp({Tq, Tk, NH, KVH, D}),
                     out.get(), ref, dl.get(), lref);
    }
  }
}

void test_decode_attention() {
  // (NH, KVH, D): Qwen2-VL-2B 12/2x128 (rep 6), Qwen2.5-VL-3B 16/2 (rep 8), Qwen3-VL-2B 16/8 (rep 2), MHA, the
  // other head dims, reps that do not divide 16 (3, 7) and reps over 16 (20, 32: chunks of heads)
  const std::vector<std::array<int64_t, 3>> heads = {{12, 2, 128}, {16, 2, 128}, {16, 8, 128}, {8, 8, 64},
                                                     {12, 2, 80},  {16, 2, 64},  {6, 2, 80},   {14, 2, 128},
                                                     {20, 1, 64},  {32, 1, 128}, {4, 2, 16}};
  for (const DecSpans& ds : decode_span_sets()) {
    for (const auto& hd : heads) {
      const int64_t NH = hd[0], KVH = hd[1], D = hd[2];
      const int64_t Tq = static_cast<int64_t>(ds.spans.size()), Tk = ds.Tk;
      auto q = rnd(Tq * NH * D, -2, 2), k = rnd(Tk * KVH * D, -2, 2), v = rnd(Tk * KVH * D);
      Dt<bf16> dq(q), dk(k), dv(v);  // rounds the host copies to bf16: the reference sees the same numbers
      std::vector<float> ref(Tq * NH * D, 0.0f), lref(Tq * NH);
      attention_forward(ref.data(), lref.data(), q.data(), k.data(), v.data(), ds.spans.data(), Tq, Tk, NH, KVH, D);
      Di<Span> dsp(ds.spans);
      const std::string sh = " " + ds.what + " " + shp({Tq, Tk, NH, KVH, D});
      Dt<bf16> out;
      Dt<float> dl;
      auto run = [&](const std::string& how, const std::function<void()>& f) {
        out.poison(Tq * NH * D);
        dl.poison(Tq * NH);
        f();
        compare_decode("decode_attention" + sh + " " + how, out.get(), ref, dl.get(), lref);
      };
      run("engine", [&] { cu::attention_forward(out.p, dl.p, dq.p, dk.p, dv.p, ds.spans.data(), Tq, Tk, NH, KVH, D); });
      const int rmax = dev::decode_max_tile_rows(NH, KVH);
      std::vector<int> layouts = {-1};  // flattened pairs, then whole rows per tile
      for (int r : {rmax, rmax / 2, 3, 2, 1})
        if (r >= 1 && r <= rmax && std::find(layouts.begin(), layouts.end(), r) == layouts.end()) layouts.push_back(r);
      for (int r : layouts)
        run(r < 0 ? "16 pairs a tile" : std::to_string(r) + " rows a tile", [&] {
          dev::decode_forward(dev::DecodeKernel::packed, r, out.p, dl.p, dq.p, dk.p, dv.p, dsp.p, Tq, Tk, NH, KVH, D);
        });
      run("per-head kernel (the old one)", [&] {
        dev::decode_forward(dev::DecodeKernel::per_head, 0, out.p, dl.p, dq.p, dk.p, dv.p, dsp.p, Tq, Tk, NH, KVH, D);
      });
    }
  }
}

template <typename T> void test_activations() {
  for (int64_t N : {1, 7, 4097, 1000003}) {
    auto a = rnd(N, -4, 4), b = rnd(N, -2, 2), g = rnd(N);
    Dt<T> da(a), db(b), dg(g);
    auto base1 = rnd(N, -0.1f, 0.1f), base2 = rnd(N, -0.1f, 0.1f);
    const std::string sh = std::string(" ") + tname<T>() + shp({N});
    {
      std::vector<float> ref(N);
      swiglu_forward(ref.data(), a.data(), b.data(), N);
      Dt<T> out;
      out.poison(N);
      cu::swiglu_forward(out.p, da.p, db.p, N);
      compare("swiglu_forward" + sh, out.get(), ref, tol<T>());
      std::vector<float> r1 = base1, r2 = base2;
      Dt<T> d1(base1), d2(base2);
      swiglu_backward(r1.data(), r2.data(), g.data(), a.data(), b.data(), N);
      cu::swiglu_backward(d1.p, d2.p, dg.p, da.p, db.p, N);
      compare("swiglu_backward dgate" + sh, d1.get(), r1, tol<T>(), &base1);
      compare("swiglu_backward dup" + sh, d2.get(), r2, tol<T>(), &base2);
      std::vector<float> z1(N, 0.0f), z2(N, 0.0f);
      swiglu_backward(z1.data(), z2.data(), g.data(), a.data(), b.data(), N);
      Dt<T> e1, e2;
      e1.poison(N);
      e2.poison(N);
      cu::swiglu_backward(e1.p, e2.p, dg.p, da.p, db.p, N, false);
      compare("swiglu_backward dgate (overwrite)" + sh, e1.get(), z1, tol<T>());
      compare("swiglu_backward dup (overwrite)" + sh, e2.get(), z2, tol<T>());
    }
    using Fwd = void (*)(float*, const float*, int64_t);
    using Bwd = void (*)(float*, const float*, const float*, int64_t);
    struct Act { const char* name; Fwd f; Bwd b; void (*cf)(T*, const T*, int64_t); void (*cb)(T*, const T*, const T*, int64_t, bool); };
    for (const Act& act : {Act{"quick_gelu", quick_gelu_forward, quick_gelu_backward, cu::quick_gelu_forward<T>, cu::quick_gelu_backward<T>},
                           Act{"gelu", gelu_forward, gelu_backward, cu::gelu_forward<T>, cu::gelu_backward<T>},
                           Act{"gelu_tanh", gelu_tanh_forward, gelu_tanh_backward, cu::gelu_tanh_forward<T>, cu::gelu_tanh_backward<T>}}) {
      std::vector<float> ref(N);
      act.f(ref.data(), a.data(), N);
      Dt<T> out;
      out.poison(N);
      act.cf(out.p, da.p, N);
      compare(std::string(act.name) + "_forward" + sh, out.get(), ref, tol<T>());
      std::vector<float> r1 = base1;
      Dt<T> d1(base1);
      act.b(r1.data(), g.data(), a.data(), N);
      act.cb(d1.p, dg.p, da.p, N, true);
      compare(std::string(act.name) + "_backward" + sh, d1.get(), r1, tol<T>(), &base1);
      std::vector<float> r0(N, 0.0f);
      act.b(r0.data(), g.data(), a.data(), N);
      Dt<T> d0;
      d0.poison(N);
      act.cb(d0.p, dg.p, da.p, N, false);
      compare(std::string(act.name) + "_backward (overwrite)" + sh, d0.get(), r0, tol<T>());
    }
  }
}

// Qwen3-VL's ops (ops_qwen3.cu) against model.cc's loops: the residual add of a T branch, DeepStack's row
// adds, the interpolated position embeddings and their gradient.
template <typename T> void test_qwen3() {
  for (auto [N, E, S] : std::vector<std::array<int64_t, 3>>{{1, 4, 2}, {24, 32, 4}, {4096, 1152, 48}}) {
    const std::string sh = std::string(" ") + tname<T>() + shp({N, E});
    auto x = rnd(N * E), r = rnd(N * E);
    Dt<T> dr(r);  // r rounded to T on the host too
    {
      std::vector<float> ref(N * E);
      for (int64_t i = 0; i < N * E; i++) ref[i] = x[i] + r[i];
      Dt<float> dx(x), out;
      out.poison(N * E);
      cu::residual_add(out.p, dx.p, dr.p, N * E);
      compare("residual_add" + sh, out.get(), ref, 1e-6);
      cu::residual_add(dx.p, dx.p, dr.p, N * E);  // in place
      compare("residual_add (in place)" + sh, dx.get(), ref, 1e-6);
    }
    {  // DeepStack: a feature per image row, added at distinct rows of x
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < N; i++)
        if (rng() % 3 != 0) rows.push_back(i);
      const int64_t n = static_cast<int64_t>(rows.size());
      auto f = rnd(n * E);
      Dt<T> df(f);
      std::vector<float> ref = x;
      for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < E; c++) ref[rows[i] * E + c] += f[i * E + c];
      Dt<float> dx(x);
      Di<int64_t> drows(rows);
      cu::add_rows(dx.p, df.p, drows.p, n, E);
      compare("add_rows" + sh, dx.get(), ref, 1e-6, &x);
    }
    {  // position embeddings: 4 table rows per patch with bilinear weights
      auto pe = rnd(S * S * E);
      Dt<T> dpe(pe);
      std::vector<int32_t> idx(N * 4);
      std::vector<float> w(N * 4);
      for (int64_t i = 0; i < N; i++) {
        float s = 0;
        for (int k = 0; k < 4; k++) {
          idx[i * 4 + k] = static_cast<int32_t>(rng() % (S * S));
          w[i * 4 + k] = static_cast<float>(rng() % 1000) / 1000.0f;
          s += w[i * 4 + k];
        }
        for (int k = 0; k < 4; k++) w[i * 4 + k] /= s > 0 ? s : 1.0f;
      }
      std::vector<float> ref = x;
      for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < E; c++) {
          float s = 0.0f;
          for (int k = 0; k < 4; k++) s += pe[idx[i * 4 + k] * E + c] * w[i * 4 + k];
          ref[i * E + c] += s;
        }
      Dt<float> dx(x), dw(w);
      Di<int32_t> didx(idx);
      cu::pos_embed_forward(dx.p, dpe.p, didx.p, dw.p, N, E);
      compare("pos_embed_forward" + sh, dx.get(), ref, 1e-5, &x);
      if (std::is_same<T, float>::value) {  // the gradient is fp32 whatever T is
        auto g = rnd(N * E), base = rnd(S * S * E, -0.1f, 0.1f);
        std::vector<float> rg = base;
        for (int64_t i = 0; i < N; i++)
          for (int k = 0; k < 4; k++)
            for (int64_t c = 0; c < E; c++) rg[idx[i * 4 + k] * E + c] += w[i * 4 + k] * g[i * E + c];
        Dt<float> dg(g), ddpe(base);
        cu::pos_embed_backward(ddpe.p, dg.p, didx.p, dw.p, N, E);
        compare("pos_embed_backward" + shp({N, E}), ddpe.get(), rg, 1e-5, &base);
      }
    }
  }
}

template <typename T> void test_logprob() {
  for (auto [R, V] : std::vector<std::array<int64_t, 2>>{{1, 5}, {7, 1001}, {64, 151936}}) {
    auto x = rnd(R * V, -8, 8);
    std::vector<int32_t> tg(R);
    for (auto& t : tg) t = static_cast<int32_t>(rng() % V);
    Dt<T> dx(x);
    Di<int32_t> dt(tg);
    std::vector<float> lp(R), en(R), lse(R);
    logprob_forward(lp.data(), en.data(), lse.data(), x.data(), tg.data(), R, V);
    Dt<float> glp, gen, gl;
    glp.poison(R); gen.poison(R); gl.poison(R);
    cu::logprob_forward(glp.p, gen.p, gl.p, dx.p, dt.p, R, V);
    const std::string sh = std::string(" ") + tname<T>() + shp({R, V});
    compare("logprob_forward logp" + sh, glp.get(), lp, tol<T>());
    compare("logprob_forward entropy" + sh, gen.get(), en, tol<T>());
    compare("logprob_forward lse" + sh, gl.get(), lse, tol<T>());
    auto dlp = rnd(R);
    Dt<float> ddlp(dlp);
    std::vector<float> ref(R * V);
    logprob_backward(ref.data(), dlp.data(), x.data(), lse.data(), tg.data(), R, V);
    // the backward gets the CPU's lse (its own input, as every op here): with a target near p = 1 its
    // gradient g (1 - p) is a small difference, and one ulp of lse between the engines' forwards (compared
    // above) moves it by 1e-4 relative in fp32
    Dt<float> dlse(lse);
    Dt<T> out;
    out.poison(R * V);
    cu::logprob_backward(out.p, ddlp.p, dx.p, dlse.p, dt.p, R, V);
    compare("logprob_backward" + sh, out.get(), ref, tol<T>());
    // in place (the model overwrites the logits with their gradient)
    cu::logprob_backward(dx.p, ddlp.p, dx.p, dlse.p, dt.p, R, V);
    compare("logprob_backward in place" + sh, dx.get(), ref, tol<T>());
  }
}

template <typename T> void test_sampling() {
  const int64_t B = 64, V = 151936;
  auto x = rnd(B * V, -6, 6);
  Dt<T> dx(x);
  std::vector<int64_t> gs(B);
  for (int64_t b = 0; b < B; b++) gs[b] = b * 3 + 1;
  Di<int64_t> dgs(gs);
  const std::vector<int64_t> steps(B, 3);
  const std::vector<uint64_t> seeds(B, 1234);
  Di<int64_t> dts(steps);
  Di<uint64_t> dsd(seeds);
  for (float temp : {0.0f, 1.0f, 0.7f}) {  // one temperature, seed and step for every row (a single request)
    Di<float> dtm(std::vector<float>(B, temp));
    SampleRequest q;
    q.temperature = temp;
    q.seed = 1234;
    std::vector<float> lps(B);
    std::vector<int32_t> toks(B);
    for (int64_t b = 0; b < B; b++) toks[b] = sample_token(x.data() + b * V, V, q, gs[b], 3, &lps[b]);
    Dt<float> glp;
    glp.poison(B);
    int32_t* dtok = nullptr;
    CU_CHECK(cudaMalloc(&dtok, B * sizeof(int32_t)), "alloc");
    cu::sample_rows_multi(dtok, glp.p, dx.p, dtm.p, dsd.p, dgs.p, dts.p, B, V);
    std::vector<int32_t> gt(B);
    CU_CHECK(cudaMemcpy(gt.data(), dtok, B * sizeof(int32_t), cudaMemcpyDeviceToHost), "download");
    cudaFree(dtok);
    int same = 0;
    for (int64_t b = 0; b < B; b++) same += gt[b] == toks[b];
    checks++;
    const bool ok = same >= B - 1;  // an inverse-CDF boundary within rounding may differ, rarely
    if (!ok) failures++;
    std::printf("%-4s %-64s %d/%d tokens equal\n", ok ? "ok" : "FAIL",
                (std::string("sample_rows_multi (one request) ") + tname<T>() + " temperature " + std::to_string(temp).substr(0, 3)).c_str(), same, int(B));
    std::vector<float> lpr(B);  // log-probs of the device's tokens, on the CPU
    // recompute the exact log-prob of the device's token on the CPU
    for (int64_t b = 0; b < B; b++) {
      double mx = -1e30, s = 0;
      for (int64_t j = 0; j < V; j++) mx = std::max<double>(mx, x[b * V + j]);
      for (int64_t j = 0; j < V; j++) s += std::exp(x[b * V + j] - mx);
      lpr[b] = static_cast<float>(x[b * V + gt[b]] - (mx + std::log(s)));
    }
    compare(std::string("sample_rows_multi (one request) logprob ") + tname<T>() + " temperature " + std::to_string(temp).substr(0, 3), glp.get(), lpr, tol<T>());
  }
}

template <typename T> void test_sampling_multi() {
  const int64_t B = 24, V = 5003;
  auto x = rnd(B * V, -6, 6);
  Dt<T> dx(x);
  std::vector<float> temps(B);
  std::vector<uint64_t> seeds(B);
  std::vector<int64_t> gs(B), ts(B);
  for (int64_t b = 0; b < B; b++) {
    temps[b] = b % 3 == 0 ? 0.0f : (b % 3 == 1 ? 1.0f : 0.6f);
    seeds[b] = 100 + b / 4;
    gs[b] = b % 4;
    ts[b] = 2 + b % 5;
  }
  Di<float> dtm(temps);
  Di<uint64_t> dsd(seeds);
  Di<int64_t> dgs(gs), dts(ts);
  std::vector<int32_t> toks(B);
  std::vector<float> lps(B);
  for (int64_t b = 0; b < B; b++) {
    SampleRequest q;
    q.temperature = temps[b];
    q.seed = seeds[b];
    toks[b] = sample_token(x.data() + b * V, V, q, gs[b], ts[b], &lps[b]);
  }
  Dt<float> glp;
  glp.poison(B);
  int32_t* dtok = nullptr;
  CU_CHECK(cudaMalloc(&dtok, B * sizeof(int32_t)), "alloc");
  cu::sample_rows_multi(dtok, glp.p, dx.p, dtm.p, dsd.p, dgs.p, dts.p, B, V);
  std::vector<int32_t> gt(B);
  CU_CHECK(cudaMemcpy(gt.data(), dtok, B * sizeof(int32_t), cudaMemcpyDeviceToHost), "download");
  cudaFree(dtok);
  int same = 0;
  for (int64_t b = 0; b < B; b++) same += gt[b] == toks[b];
  checks++;
  const bool ok = same >= B - 1;
  if (!ok) failures++;
  std::printf("%-4s %-64s %d/%d tokens equal\n", ok ? "ok" : "FAIL", (std::string("sample_rows_multi ") + tname<T>()).c_str(), same, int(B));
}

void test_adamw() {
  for (int64_t n : {1, 1001, 3000017}) {
    auto p = rnd(n), g = rnd(n, -0.01f, 0.01f), m = rnd(n, -0.01f, 0.01f), v = rnd(n, 0.0001f, 0.001f);
    std::vector<float> rp = p, rm = m, rv = v;
    adamw_update(rp.data(), g.data(), rm.data(), rv.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 7, 0.5f);
    Dt<float> dp(p), dg(g), dm(m), dv(v);
    bf16* copy = nullptr;
    CU_CHECK(cudaMalloc(&copy, n * sizeof(bf16)), "alloc");
    cu::adamw_update(dp.p, dg.p, dm.p, dv.p, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 7, 0.5f, copy);
    compare("adamw_update params" + shp({n}), dp.get(), rp, 1e-5);
    compare("adamw_update params, the update alone (p' - p)" + shp({n}), dp.get(), rp, 1e-3, &p);
    compare("adamw_update m" + shp({n}), dm.get(), rm, 1e-5);
    compare("adamw_update v" + shp({n}), dv.get(), rv, 1e-5);
    std::vector<bf16> cb(n);
    CU_CHECK(cudaMemcpy(cb.data(), copy, n * sizeof(bf16), cudaMemcpyDeviceToHost), "download");
    std::vector<float> cf(n), rr(n);
    for (int64_t i = 0; i < n; i++) { cf[i] = __bfloat162float(cb[i]); rr[i] = rp[i]; }
    compare("adamw_update bf16 copy" + shp({n}), cf, rr, 1e-2);
    {  // bf16 moments: the update within bf16 rounding of the moments
      std::vector<float> mb = m, vb = v;
      for (int64_t i = 0; i < n; i++) { mb[i] = __bfloat162float(__float2bfloat16(m[i])); vb[i] = __bfloat162float(__float2bfloat16(v[i])); }
      std::vector<float> bp = p, bm = mb, bv = vb;
      adamw_update(bp.data(), g.data(), bm.data(), bv.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 7, 0.5f);
      Dt<float> dp2(p), dg2(g);
      Dt<bf16> dm2(mb), dv2(vb);
      cu::adamw_update_bf16m(dp2.p, dg2.p, dm2.p, dv2.p, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 7, 0.5f, nullptr);
      compare("adamw_update_bf16m, the update (p' - p)" + shp({n}), dp2.get(), bp, 1e-2, &p);
      compare("adamw_update_bf16m m" + shp({n}), dm2.get(), bm, 1e-2);
      compare("adamw_update_bf16m v" + shp({n}), dv2.get(), bv, 1e-2);
    }
    cudaFree(copy);
    const double ss = sum_squares(g.data(), n), gs = cu::sum_squares(dg.p, n);
    checks++;
    const bool ok = std::fabs(ss - gs) <= 1e-9 * ss + 1e-30;
    if (!ok) failures++;
    std::printf("%-4s %-64s %.12e vs %.12e\n", ok ? "ok" : "FAIL", ("sum_squares" + shp({n})).c_str(), gs, ss);
    checks++;
    bool fin = cu::all_finite(dg.p, n);
    g[n / 2] = NAN;
    Dt<float> dg2(g);
    bool fin2 = cu::all_finite(dg2.p, n);
    if (!(fin && !fin2)) failures++;
    std::printf("%-4s %-64s\n", fin && !fin2 ? "ok" : "FAIL", ("all_finite" + shp({n})).c_str());
  }
}

// ---- the decode kernel against the per-head one it replaced, at the decode steps we run (device spans, as the
// engine's captured steps pass them): us per call and the ratio; then every tile layout of the packed kernel, to
// check the engine's choice ----
void bench_decode(const std::function<float(const std::function<void()>&, int)>& time) {
  std::printf("\ndecode attention (bf16, one layer's call; old = per-head kernel, new = GQA-packed, the engine's):\n");
  struct W { const char* n; int G, rows, Lp, maxT, t; int64_t NH, KVH, D; };
  for (W w : {W{"rollout 16 groups x 8 rows, context 314", 16, 8, 298, 256, 16, 12, 2, 128},
              W{"rollout 16 groups x 8 rows, context 554", 16, 8, 298, 256, 256, 12, 2, 128},
              W{"evaluate 64 distinct prompts, context 314", 64, 1, 298, 256, 16, 12, 2, 128},
              W{"rollout 16x8, ctx 554, Qwen2.5-VL-3B 16/2", 16, 8, 298, 256, 256, 16, 2, 128},
              W{"rollout 16x8, ctx 554, Qwen3-VL-2B 16/8", 16, 8, 298, 256, 256, 16, 8, 128}}) {
    const DecSpans ds = dec_groups(w.n, w.G, w.rows, w.Lp, w.maxT, [&](int, int) { return w.t; });
    const int64_t Tq = static_cast<int64_t>(ds.spans.size()), Tk = ds.Tk;
    auto q = rnd(Tq * w.NH * w.D), k = rnd(Tk * w.KVH * w.D), v = rnd(Tk * w.KVH * w.D);
    Dt<bf16> dq(q), dk(k), dv(v), out;
    out.poison(Tq * w.NH * w.D);
    Dt<float> lse;
    lse.poison(Tq * w.NH);
    Di<Span> dsp(ds.spans);
    auto per_call = [&](const std::function<void()>& f) { return 1000.0f * time(f, 200); };  // us
    const float old_us = per_call([&] {
      dev::decode_forward(dev::DecodeKernel::per_head, 0, out.p, lse.p, dq.p, dk.p, dv.p, dsp.p, Tq, Tk, w.NH, w.KVH, w.D);
    });
    const float new_us = per_call([&] { cu::flash_forward(out.p, lse.p, dq.p, dk.p, dv.p, dsp.p, Tq, Tk, w.NH, w.KVH, w.D); });
    const int rows = dev::decode_tile_rows(Tq, w.NH, w.KVH, 0);
    std::printf("  %-44s %s: old %8.2f us  new %8.2f us  (%s)  old/new %5.2fx\n", w.n,
                shp({Tq, Tk, w.NH, w.KVH, w.D}).c_str(), old_us, new_us,
                rows < 0 ? "16 pairs a tile" : (std::to_string(rows) + " rows a tile").c_str(), old_us / new_us);
    const int rmax = dev::decode_max_tile_rows(w.NH, w.KVH);
    std::string lay = "      layouts:";
    for (int r = -1; r <= rmax; r++) {
      if (r == 0) continue;
      const float us = per_call([&] {
        dev::decode_forward(dev::DecodeKernel::packed, r, out.p, lse.p, dq.p, dk.p, dv.p, dsp.p, Tq, Tk, w.NH, w.KVH, w.D);
      });
      char b[64];
      std::snprintf(b, sizeof b, " %s %.2f us", r < 0 ? "16 pairs" : (std::to_string(r) + " rows").c_str(), us);
      lay += b;
    }
    std::printf("%s\n", lay.c_str());
  }
}

// ---- op-level throughput at Qwen2-VL-2B shapes (bf16) ----
void bench_ops() {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  auto time = [&](const std::function<void()>& f, int reps) {
    for (int i = 0; i < 3; i++) f();
    cudaEventRecord(a, cu::stream());
    for (int i = 0; i < reps; i++) f();
    cudaEventRecord(b, cu::stream());
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms / reps;
  };
  // a filter that names sections (linear, attention, decode, act, norm) times those; any other (none, no-checks) all
  const bool all = !(want("linear") || want("attention") || want("decode_attention") || want("act") || want("norm"));
  std::printf("\nop throughput (bf16, fp32 accumulation):\n");
  if (all || want("linear")) {
    for (auto d3 : std::vector<std::array<int64_t, 3>>{{426, 1536, 8960}, {426, 8960, 1536}, {1024, 1280, 3840}, {1024, 1280, 5120}, {8192, 8192, 8192}}) {
      const int64_t Tn = d3[0], IC = d3[1], OC = d3[2];
      auto x = rnd(Tn * IC), w = rnd(OC * IC, -0.05f, 0.05f);
      Dt<bf16> dx(x), dw(w), out;
      out.poison(Tn * OC);
      const float ms = time([&] { cu::linear_forward(out.p, dx.p, dw.p, static_cast<const bf16*>(nullptr), Tn, IC, OC); }, 20);
      std::printf("  linear_forward %-22s %8.3f ms  %7.1f TFLOP/s\n", shp({Tn, IC, OC}).c_str(), ms, 2.0 * Tn * IC * OC / ms / 1e9);
    }
  }
  if (all || want("attention")) {  // attention at the step's shapes: the fused kernel against the cuBLASLt tile path, FLOPs as the spans need
    struct A { const char* n; int64_t reqs, NH, KVH, D; int kind; };  // kind 0 LM, 1 vision, 2 decode
    for (A c : {A{"vision: 4 frames of 1024, 16x80", 4, 16, 16, 80, 1}, A{"LM: 4 packed requests 298+8x16, 12/2x128", 4, 12, 2, 128, 0},
                A{"decode: 16 prompts x 8 rows, cache 298+8x16", 16, 12, 2, 128, 2}}) {
      std::vector<Span> s;
      int64_t Tk = 0;
      for (int64_t r = 0; r < c.reqs; r++) {
        const int32_t off = int32_t(c.kind == 2 ? Tk : int64_t(s.size()));
        if (c.kind == 1) { for (int i = 0; i < 1024; i++) s.push_back({0, 0, off, off + 1024}); continue; }
        if (c.kind == 2) {  // step 8 of 16: each row reads its prompt and its 8 tokens so far
          for (int g = 0; g < 8; g++) s.push_back({off, off + 298, off + 298 + g * 16, off + 298 + g * 16 + 8});
          Tk += 298 + 8 * 16;
          continue;
        }
        for (int32_t i = 0; i < 298; i++) s.push_back({0, 0, off, off + i + 1});
        for (int g = 0; g < 8; g++) { const int32_t st = int32_t(s.size()); for (int t = 0; t < 16; t++) s.push_back({off, off + 298, st, int32_t(s.size()) + 1}); }
      }
      const int64_t T = static_cast<int64_t>(s.size());
      if (c.kind != 2) Tk = T;
      auto q = rnd(T * c.NH * c.D), k = rnd(Tk * c.KVH * c.D), v = rnd(Tk * c.KVH * c.D);
      Dt<bf16> dq(q), dk(k), dv(v), out, gq(q), gk(k), gv(v);
      out.poison(T * c.NH * c.D);
      Dt<float> lse;
      lse.poison(T * c.NH);
      const double fl = cu::attention_flops(s.data(), T, c.NH, c.D);
      // the engine's kernels (its forward tile kernel as cu::set_flash_forward picks: tile = the default, wide and
      // wide64 = fwd_w), the variants of flash_variants.cu, the cuBLASLt tiles
      const struct { AttRun run; cu::FlashForward fwd; const char* name; } runs[] = {
          {AttRun::engine_fused, cu::FlashForward::tile, "default"}, {AttRun::engine_fused, cu::FlashForward::wide, "wide"},
          {AttRun::engine_fused, cu::FlashForward::wide64, "wide64"}, {AttRun::pipelined_variant, cu::FlashForward::tile, "pipelined"},
          {AttRun::simple_variant, cu::FlashForward::tile, "simple"}, {AttRun::engine_gemm, cu::FlashForward::tile, "gemm"}};
      std::vector<float> tile_out, tile_lse;
      for (const auto& r : runs) {
        if (r.fwd != cu::FlashForward::tile && c.kind == 2) continue;  // decode calls never take the tile kernels
        att_run = r.run;
        cu::set_flash_forward(r.fwd);
        const float f = time([&] { run_attention_forward(out.p, lse.p, dq.p, dk.p, dv.p, s.data(), T, Tk, c.NH, c.KVH, c.D); }, 10);
        if (r.fwd != cu::FlashForward::tile) {  // fwd_w: its output against the default's at this shape; forward only
          compare(std::string("attention_forward ") + r.name + " vs default, " + c.n, out.get(), tile_out, tol<bf16>());
          compare(std::string("attention_forward lse ") + r.name + " vs default, " + c.n, lse.get(), tile_lse, tol<bf16>());
          std::printf("  attention %-44s %-9s fwd %7.3f ms (%6.1f TFLOP/s)\n", c.n, r.name, f, fl / f / 1e9);
          continue;
        }
        if (tile_out.empty()) {
          tile_out = out.get();
          tile_lse = lse.get();
        }
        if (c.kind == 2) {  // decode: forward only
          std::printf("  attention %-44s %-9s fwd %7.3f ms (%6.1f TFLOP/s)\n", c.n, r.name, f, fl / f / 1e9);
          continue;
        }
        const float bw = time([&] { run_attention_backward(gq.p, gk.p, gv.p, dq.p, dq.p, dk.p, dv.p, out.p, lse.p, s.data(), T, T, c.NH, c.KVH, c.D); }, 10);
        std::printf("  attention %-44s %-9s fwd %7.3f ms (%6.1f TFLOP/s)  bwd %7.3f ms (%6.1f TFLOP/s)\n", c.n,
                    r.name, f, fl / f / 1e9, bw, 2.5 * fl / bw / 1e9);
      }
      att_run = AttRun::engine_fused;
      cu::set_flash_forward(dev::flash_forward_from_env());
    }
  }
  if (all || want("decode_attention")) bench_decode(time);
  if (all || want("act") || want("norm")) {  // element-wise and norm kernels: GB/s on (4096, 5120) bf16 and (1704, 1536) rows
    const int64_t N = 4096ll * 5120;
    auto a = rnd(N), b = rnd(N);
    Dt<bf16> da(a), db(b), o1, o2;
    o1.poison(N);
    o2.poison(N);
    const float sw = time([&] { cu::swiglu_forward(o1.p, da.p, db.p, N); }, 20);
    const float swb = time([&] { cu::swiglu_backward(o1.p, o2.p, da.p, da.p, db.p, N, false); }, 20);
    const float qg = time([&] { cu::quick_gelu_forward(o1.p, da.p, N); }, 20);
    std::printf("  swiglu_forward %.3f ms (%.0f GB/s), swiglu_backward %.3f ms (%.0f GB/s), quick_gelu_forward %.3f ms (%.0f GB/s)\n",
                sw, 3.0 * N * 2 / sw / 1e6, swb, 5.0 * N * 2 / swb / 1e6, qg, 2.0 * N * 2 / qg / 1e6);
    const int64_t Tn = 1704, C = 1536;
    auto x = rnd(Tn * C), w = rnd(C);
    Dt<float> dx(x), rs;
    rs.poison(Tn);
    Dt<bf16> dr(x), dw(w), out;
    out.poison(Tn * C);
    const float rn = time([&] { cu::residual_rmsnorm_forward(out.p, rs.p, dx.p, dx.p, dr.p, dw.p, Tn, C, 1e-6f); }, 20);
    std::printf("  residual_rmsnorm_forward (1704, 1536) %.3f ms (%.0f GB/s)\n", rn, Tn * C * (4.0 + 4 + 2 + 2) / rn / 1e6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("skipped: no CUDA device\n");
    return 0;
  }
  bool bench = false;
  for (int i = 1; i < argc; i++) {
    if (std::string(argv[i]) == "--bench") bench = true;
    else filter = argv[i];
  }
  cu::set_debug_sync(dev::cuda_options_from_env().sync_every_op);  // VQALAB_CUDA_SYNC=1: every op synchronises
  cu::set_flash_forward(dev::flash_forward_from_env());  // VQALAB_CUDA_FLASH_FWD: the engine's forward tile kernel
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d, %d SMs, %.1f GiB)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              prop.totalGlobalMem / 1073741824.0);
  try {
    if (want("embedding")) { test_embedding<float>(); test_embedding<bf16>(); }
    if (want("norm")) { test_norms<float>(); test_norms<bf16>(); test_residual_norms<float>(); test_residual_norms<bf16>(); }
    if (want("linear")) { test_linear<float>(); test_linear<bf16>(); }
    if (want("lora")) { test_lora<float>(); test_lora<bf16>(); test_linear_lora(); }
    if (want("rope")) { test_rope<float>(); test_rope<bf16>(); }
    if (want("attention")) {
      test_attention<float>();
      att_path = " (default kernels)";  // the engine's: fused where D allows (small calls: the split decode kernel)
      test_attention<bf16>();
      att_run = AttRun::pipelined_variant;  // flash_variants.cu: the pipelined kernels at every D
      att_path = " (pipelined variant)";
      test_attention<bf16>();
      att_run = AttRun::simple_variant;
      att_path = " (simple flash)";
      test_attention<bf16>();
      att_run = AttRun::wide_variant;  // fwd_w, 4 warps of 32 rows (128-row tiles), at every call size
      att_path = " (wide forward)";
      test_attention<bf16>();
      att_run = AttRun::wide64_variant;  // fwd_w, 2 warps of 32 rows (64-row tiles)
      att_path = " (wide64 forward)";
      test_attention<bf16>();
      test_wide_empty_rows();
      att_run = AttRun::engine_gemm;  // the engine with CudaOptions::attention = gemm
      att_path = " (cuBLASLt tiles)";
      test_attention<bf16>();
      att_run = AttRun::engine_fused;
      att_path = "";
    }
    if (want("decode_attention")) test_decode_attention();
    if (want("act")) { test_activations<float>(); test_activations<bf16>(); }
    if (want("qwen3")) { test_qwen3<float>(); test_qwen3<bf16>(); }
    if (want("logprob")) { test_logprob<float>(); test_logprob<bf16>(); }
    if (want("sampl")) { test_sampling<float>(); test_sampling<bf16>(); test_sampling_multi<float>(); test_sampling_multi<bf16>(); }
    if (want("adamw")) test_adamw();
    if (bench) bench_ops();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    failures++;
  }
  std::printf("\nops: %d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
