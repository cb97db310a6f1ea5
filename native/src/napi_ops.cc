// Internal entry points ("_" prefix) for tests and benchmarks: every op by name (synchronous, on the
// JS thread; tests use small shapes), the GEMM and its naive baseline, the thread pool, safetensors.
#include <map>

#include "common.h"
#include "cpu/gemm.h"
#include "cpu/threadpool.h"
#include "model.h"
#include "napi_util.h"
#ifdef VQALAB_CUDA
#include "cuda/model_cuda.h"
#endif
#include "ops/ops.h"
#include "safetensors.h"

namespace vq {

namespace {

// _op(name, inputs: {name: Float32Array | Int32Array}, dims: {name: number}) -> {name: Float32Array}
struct OpCall {
  Napi::Env env;
  Napi::Object in, dims;
  Napi::Object out;

  const float* f(const char* k, int64_t n) {
    Napi::Value v = in.Get(k);
    if (!v.IsTypedArray()) throw Napi::Error::New(env, std::string("_op: missing input ") + k);
    Napi::Float32Array a = v.As<Napi::Float32Array>();
    if (static_cast<int64_t>(a.ElementLength()) != n)
      throw Napi::Error::New(env, std::string("_op: input ") + k + " needs " + std::to_string(n) + " values, got " +
                                      std::to_string(a.ElementLength()));
    return a.Data();
  }
  const float* fopt(const char* k, int64_t n) { return in.Get(k).IsTypedArray() ? f(k, n) : nullptr; }
  const int32_t* i(const char* k, int64_t n) {
    Napi::Value v = in.Get(k);
    if (!v.IsTypedArray()) throw Napi::Error::New(env, std::string("_op: missing input ") + k);
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    if (static_cast<int64_t>(a.ElementLength()) != n)
      throw Napi::Error::New(env, std::string("_op: input ") + k + " needs " + std::to_string(n) + " values");
    return a.Data();
  }
  int64_t d(const char* k) {
    Napi::Value v = dims.Get(k);
    if (!v.IsNumber()) throw Napi::Error::New(env, std::string("_op: missing dim ") + k);
    return static_cast<int64_t>(v.As<Napi::Number>().DoubleValue());
  }
  double x(const char* k) {
    Napi::Value v = dims.Get(k);
    if (!v.IsNumber()) throw Napi::Error::New(env, std::string("_op: missing scalar ") + k);
    return v.As<Napi::Number>().DoubleValue();
  }
  // A zeroed output (backward ops accumulate), or a copy of input `init` when given.
  float* o(const char* k, int64_t n, const char* init = nullptr) {
    Napi::Float32Array a = Napi::Float32Array::New(env, static_cast<size_t>(n));
    if (init) std::memcpy(a.Data(), f(init, n), n * sizeof(float));
    else std::fill(a.Data(), a.Data() + n, 0.0f);
    out.Set(k, a);
    return a.Data();
  }
};

Napi::Value Op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  OpCall c{env, info[1].As<Napi::Object>(), info[2].As<Napi::Object>(), Napi::Object::New(env)};
  try {
    if (name == "embedding_forward") {
      const int64_t T = c.d("T"), C = c.d("C"), V = c.d("V");
      embedding_forward(c.o("out", T * C), c.i("ids", T), c.f("wte", V * C), T, C);
    } else if (name == "embedding_backward") {
      const int64_t T = c.d("T"), C = c.d("C"), V = c.d("V");
      embedding_backward(c.o("dwte", V * C), c.f("dout", T * C), c.i("ids", T), T, C);
    } else if (name == "rmsnorm_forward") {
      const int64_t T = c.d("T"), C = c.d("C");
      rmsnorm_forward(c.o("out", T * C), c.o("rstd", T), c.f("inp", T * C), c.f("weight", C), T, C,
                      static_cast<float>(c.x("eps")));
    } else if (name == "rmsnorm_backward") {
      const int64_t T = c.d("T"), C = c.d("C");
      rmsnorm_backward(c.o("dinp", T * C), c.o("dweight", C), c.f("dout", T * C), c.f("inp", T * C), c.f("weight", C),
                       c.f("rstd", T), T, C);
    } else if (name == "layernorm_forward") {
      const int64_t T = c.d("T"), C = c.d("C");
      layernorm_forward(c.o("out", T * C), c.o("mean", T), c.o("rstd", T), c.f("inp", T * C), c.f("weight", C),
                        c.f("bias", C), T, C, static_cast<float>(c.x("eps")));
    } else if (name == "layernorm_backward") {
      const int64_t T = c.d("T"), C = c.d("C");
      layernorm_backward(c.o("dinp", T * C), c.o("dweight", C), c.o("dbias", C), c.f("dout", T * C), c.f("inp", T * C),
                         c.f("weight", C), c.f("mean", T), c.f("rstd", T), T, C);
    } else if (name == "linear_forward") {
      const int64_t T = c.d("T"), IC = c.d("IC"), OC = c.d("OC");
      linear_forward(c.o("out", T * OC), c.f("inp", T * IC), c.f("weight", OC * IC), c.fopt("bias", OC), T, IC, OC);
    } else if (name == "linear_backward") {
      const int64_t T = c.d("T"), IC = c.d("IC"), OC = c.d("OC");
      linear_backward(c.o("dinp", T * IC), c.o("dweight", OC * IC), c.o("dbias", OC), c.f("dout", T * OC),
                      c.f("inp", T * IC), c.f("weight", OC * IC), T, IC, OC);
    } else if (name == "lora_forward") {
      const int64_t T = c.d("T"), IC = c.d("IC"), OC = c.d("OC"), R = c.d("R");
      lora_forward(c.o("out", T * OC), c.o("xa", T * R), c.f("inp", T * IC), c.f("A", R * IC), c.f("B", OC * R), T,
                   IC, OC, R, static_cast<float>(c.x("scale")));
    } else if (name == "lora_backward") {
      const int64_t T = c.d("T"), IC = c.d("IC"), OC = c.d("OC"), R = c.d("R");
      lora_backward(c.o("dinp", T * IC), c.o("dA", R * IC), c.o("dB", OC * R), c.f("dout", T * OC), c.f("inp", T * IC),
                    c.f("xa", T * R), c.f("A", R * IC), c.f("B", OC * R), T, IC, OC, R, static_cast<float>(c.x("scale")));
    } else if (name == "rope_forward") {
      const int64_t T = c.d("T"), NH = c.d("NH"), D = c.d("D");
      rope_forward(c.o("out", T * NH * D), c.f("inp", T * NH * D), c.f("cos", T * D / 2), c.f("sin", T * D / 2), T, NH, D);
    } else if (name == "rope_backward") {
      const int64_t T = c.d("T"), NH = c.d("NH"), D = c.d("D");
      rope_backward(c.o("dinp", T * NH * D), c.f("dout", T * NH * D), c.f("cos", T * D / 2), c.f("sin", T * D / 2), T,
                    NH, D);
    } else if (name == "rope_mrope_table") {
      const int64_t T = c.d("T"), D = c.d("D");
      rope_mrope_table(c.o("cos", T * D / 2), c.o("sin", T * D / 2), c.i("pos", 3 * T), c.i("section", 3), T, D,
                       static_cast<float>(c.x("theta")));
    } else if (name == "rope_vision_table") {
      const int64_t T = c.d("T"), D = c.d("D");
      rope_vision_table(c.o("cos", T * D / 2), c.o("sin", T * D / 2), c.i("hpos", T), c.i("wpos", T), T, D,
                        static_cast<float>(c.x("theta")));
    } else if (name == "attention_forward" || name == "attention_backward") {
      const int64_t Tq = c.d("Tq"), Tk = c.d("Tk"), NH = c.d("NH"), KVH = c.d("KVH"), D = c.d("D");
      const int32_t* sp = c.i("spans", 4 * Tq);
      std::vector<Span> spans(Tq);
      for (int64_t t = 0; t < Tq; t++) {
        spans[t] = Span{sp[4 * t], sp[4 * t + 1], sp[4 * t + 2], sp[4 * t + 3]};
        if (spans[t].a0 < 0 || spans[t].a1 > Tk || spans[t].b0 < 0 || spans[t].b1 > Tk || spans[t].a0 > spans[t].a1 ||
            spans[t].b0 > spans[t].b1 || spans[t].a1 - spans[t].a0 + spans[t].b1 - spans[t].b0 == 0)
          throw Napi::Error::New(env, "_op: bad span for row " + std::to_string(t));
      }
      if (name == "attention_forward") {
        attention_forward(c.o("out", Tq * NH * D), c.o("lse", Tq * NH), c.f("q", Tq * NH * D), c.f("k", Tk * KVH * D),
                          c.f("v", Tk * KVH * D), spans.data(), Tq, Tk, NH, KVH, D);
      } else {
        attention_backward(c.o("dq", Tq * NH * D), c.o("dk", Tk * KVH * D), c.o("dv", Tk * KVH * D),
                           c.f("dout", Tq * NH * D), c.f("q", Tq * NH * D), c.f("k", Tk * KVH * D),
                           c.f("v", Tk * KVH * D), c.f("out", Tq * NH * D), c.f("lse", Tq * NH), spans.data(), Tq, Tk,
                           NH, KVH, D);
      }
    } else if (name == "swiglu_forward") {
      const int64_t N = c.d("N");
      swiglu_forward(c.o("out", N), c.f("gate", N), c.f("up", N), N);
    } else if (name == "swiglu_backward") {
      const int64_t N = c.d("N");
      swiglu_backward(c.o("dgate", N), c.o("dup", N), c.f("dout", N), c.f("gate", N), c.f("up", N), N);
    } else if (name == "quick_gelu_forward") {
      const int64_t N = c.d("N");
      quick_gelu_forward(c.o("out", N), c.f("inp", N), N);
    } else if (name == "quick_gelu_backward") {
      const int64_t N = c.d("N");
      quick_gelu_backward(c.o("dinp", N), c.f("dout", N), c.f("inp", N), N);
    } else if (name == "gelu_forward") {
      const int64_t N = c.d("N");
      gelu_forward(c.o("out", N), c.f("inp", N), N);
    } else if (name == "gelu_backward") {
      const int64_t N = c.d("N");
      gelu_backward(c.o("dinp", N), c.f("dout", N), c.f("inp", N), N);
    } else if (name == "logprob_forward") {
      const int64_t R = c.d("R"), V = c.d("V");
      const int32_t* tg = c.i("targets", R);
      for (int64_t r = 0; r < R; r++)
        if (tg[r] < 0 || tg[r] >= V) throw Napi::Error::New(env, "_op: target out of range");
      logprob_forward(c.o("logp", R), c.o("entropy", R), c.o("lse", R), c.f("logits", R * V), tg, R, V);
    } else if (name == "logprob_backward") {
      const int64_t R = c.d("R"), V = c.d("V");
      logprob_backward(c.o("dlogits", R * V), c.f("dlogp", R), c.f("logits", R * V), c.f("lse", R), c.i("targets", R),
                       R, V);
    } else if (name == "adamw_update") {
      const int64_t n = c.d("n");
      float* p = c.o("params", n, "params");
      float* m = c.o("m", n, "m");
      float* v = c.o("v", n, "v");
      adamw_update(p, c.f("grads", n), m, v, n, static_cast<float>(c.x("lr")), static_cast<float>(c.x("beta1")),
                   static_cast<float>(c.x("beta2")), static_cast<float>(c.x("eps")),
                   static_cast<float>(c.x("weightDecay")), c.d("step"), static_cast<float>(c.x("gradScale")));
    } else if (name == "sample_token") {
      const int64_t V = c.d("V");
      SampleRequest q;
      q.temperature = static_cast<float>(c.x("temperature"));
      q.top_p = static_cast<float>(c.x("topP"));
      q.top_k = static_cast<int>(c.d("topK"));
      q.seed = static_cast<uint64_t>(c.x("seed"));
      float lp;
      const int32_t tok = sample_token(c.f("logits", V), V, q, static_cast<uint64_t>(c.d("g")), static_cast<uint64_t>(c.d("t")), &lp);
      float* o = c.o("result", 2);
      o[0] = static_cast<float>(tok);
      o[1] = lp;
    } else {
      throw Napi::Error::New(env, "_op: unknown op " + name);
    }
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
  return c.out;
}

// _sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, naive?) -> C (in place)
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool ta = info[0].As<Napi::Boolean>().Value(), tb = info[1].As<Napi::Boolean>().Value();
  auto I = [&](int k) { return static_cast<int64_t>(info[k].As<Napi::Number>().DoubleValue()); };
  const int64_t M = I(2), N = I(3), K = I(4);
  const float alpha = static_cast<float>(info[5].As<Napi::Number>().DoubleValue());
  Napi::Float32Array A = info[6].As<Napi::Float32Array>(), B = info[8].As<Napi::Float32Array>();
  const int64_t lda = I(7), ldb = I(9);
  const float beta = static_cast<float>(info[10].As<Napi::Number>().DoubleValue());
  Napi::Float32Array C = info[11].As<Napi::Float32Array>();
  const int64_t ldc = I(12);
  const bool naive = info.Length() > 13 && info[13].IsBoolean() && info[13].As<Napi::Boolean>().Value();
  const int64_t needA = ta ? (K - 1) * lda + M : (M - 1) * lda + K;
  const int64_t needB = tb ? (N - 1) * ldb + K : (K - 1) * ldb + N;
  if (static_cast<int64_t>(A.ElementLength()) < needA || static_cast<int64_t>(B.ElementLength()) < needB ||
      static_cast<int64_t>(C.ElementLength()) < (M - 1) * ldc + N)
    throw Napi::Error::New(env, "_sgemm: an array is too small for the given shape");
  if (naive) sgemm_naive(ta, tb, M, N, K, alpha, A.Data(), lda, B.Data(), ldb, beta, C.Data(), ldc);
  else sgemm(ta, tb, M, N, K, alpha, A.Data(), lda, B.Data(), ldb, beta, C.Data(), ldc);
  return C;
}

// _gemmKernel(name?) -> the kernel in use ("avx2-fma" | "portable"); name sets it ("auto" = default).
Napi::Value GemmKernel(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsString()) sgemm_set_kernel(info[0].As<Napi::String>().Utf8Value().c_str());
  return Napi::String::New(info.Env(), sgemm_kernel_name());
}

// _threads(n?) -> the thread pool's size; n resizes it.
Napi::Value Threads(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsNumber()) ThreadPool::get().resize(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), ThreadPool::get().size());
}

// _readSafetensors(path) -> {tensors: {name: {dtype, shape, data: Float32Array}}, metadata: {}}
Napi::Value ReadSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    SafetensorsFile f(info[0].As<Napi::String>().Utf8Value());
    Napi::Object tensors = Napi::Object::New(env);
    for (const auto& t : f.tensors()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("dtype", t.dtype);
      Napi::Array shape = Napi::Array::New(env, t.shape.size());
      for (size_t i = 0; i < t.shape.size(); i++) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(t.shape[i])));
      o.Set("shape", shape);
      Napi::Float32Array data = Napi::Float32Array::New(env, static_cast<size_t>(numel(t.shape)));
      f.read_f32(t, data.Data());
      o.Set("data", data);
      tensors.Set(t.name, o);
    }
    Napi::Object meta = Napi::Object::New(env);
    for (const auto& kv : f.metadata()) meta.Set(kv.first, kv.second);
    Napi::Object out = Napi::Object::New(env);
    out.Set("tensors", tensors);
    out.Set("metadata", meta);
    return out;
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// _writeSafetensors(path, {name: {shape, data: Float32Array}}, metadata?) (F32)
Napi::Value WriteSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Object ts = info[1].As<Napi::Object>();
  std::vector<StWrite> w;
  std::vector<Napi::Float32Array> keep;
  Napi::Array names = ts.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    const std::string n = names.Get(i).As<Napi::String>().Utf8Value();
    Napi::Object t = ts.Get(n).As<Napi::Object>();
    std::vector<int64_t> shape;
    for (int32_t d : to_ints(t.Get("shape"))) shape.push_back(d);
    Napi::Float32Array data = t.Get("data").As<Napi::Float32Array>();
    if (static_cast<int64_t>(data.ElementLength()) != numel(shape))
      throw Napi::Error::New(env, "_writeSafetensors: " + n + " has " + std::to_string(data.ElementLength()) +
                                      " values for shape " + shape_str(shape));
    keep.push_back(data);
    w.push_back({n, shape, data.Data()});
  }
  std::map<std::string, std::string> meta;
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object m = info[2].As<Napi::Object>();
    Napi::Array keys = m.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      const std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
      meta[k] = m.Get(k).ToString().Utf8Value();
    }
  }
  try {
    write_safetensors(path, std::move(w), meta);
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

}  // namespace

// _cuda() -> { built, available, reason }: whether this build has the CUDA backend and sees a device.
Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef VQALAB_CUDA
  std::string why;
  const bool ok = cuda_available(&why);
  o.Set("built", true);
  o.Set("available", ok);
  if (!ok) o.Set("reason", why);
#else
  o.Set("built", false);
  o.Set("available", false);
  o.Set("reason", "this build has no CUDA backend (nvcc with cuBLAS/cuBLASLt was not found at install)");
#endif
  return o;
}

// _cudaProfile() -> the phase times since the last call of every model loaded with the `profile` option (see
// model_profile.cu), then resets; null in a build without CUDA. For benchmarks: where a call's time goes.
Napi::Value CudaProfile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifdef VQALAB_CUDA
  return Napi::String::New(env, cuda_profile_report());
#else
  return env.Null();
#endif
}

// _cudaMemory(resetPeak) -> { peakBytes, usedBytes, freeBytes, poolIdleBytes, totalBytes } of the current
// device: the pool's high-water mark since the last reset, what the pool's allocations use now, the
// device's free memory, what the pool keeps for reuse beyond its use, and the device's total; null in a build without CUDA. The trainer reports the peak per step and sizes its
// micro-batches from the free memory.
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifdef VQALAB_CUDA
  const bool reset = info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
  size_t fr = 0, tot = 0, idle = 0;
  try {
    cuda_mem_info(&fr, &tot, &idle);
    Napi::Object o = Napi::Object::New(env);
    o.Set("peakBytes", Napi::Number::New(env, static_cast<double>(cuda_peak_bytes(reset))));
    o.Set("usedBytes", Napi::Number::New(env, static_cast<double>(cuda_used_bytes())));
    o.Set("freeBytes", Napi::Number::New(env, static_cast<double>(fr)));
    o.Set("poolIdleBytes", Napi::Number::New(env, static_cast<double>(idle)));
    o.Set("totalBytes", Napi::Number::New(env, static_cast<double>(tot)));
    return o;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
#else
  (void)info;
  return env.Null();
#endif
}

void register_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("_cuda", Napi::Function::New(env, CudaInfo));
  exports.Set("_cudaMemory", Napi::Function::New(env, CudaMemory));
  exports.Set("_cudaProfile", Napi::Function::New(env, CudaProfile));
  exports.Set("_op", Napi::Function::New(env, Op));
  exports.Set("_sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("_gemmKernel", Napi::Function::New(env, GemmKernel));
  exports.Set("_threads", Napi::Function::New(env, Threads));
  exports.Set("_readSafetensors", Napi::Function::New(env, ReadSafetensors));
  exports.Set("_writeSafetensors", Napi::Function::New(env, WriteSafetensors));
}

}  // namespace vq
