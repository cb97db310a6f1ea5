// N-API surface of the model: loadModel() and the NativeModel class. Every heavy call takes its
// (already validated) inputs on the JS thread — copied, except image pixels, which are read in place
// and held (JsHold) until the call settles — runs in a PromiseWorker off the JS thread under the
// model's mutex, and converts results back on the JS thread.
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <utility>

#include "common.h"
#include "cpu/threadpool.h"
#include "config_check.h"
#include "model.h"
#include "napi_collective.h"
#include "napi_util.h"
#include "sampler.h"
#include "test_device.h"
#ifdef VQALAB_CUDA
#include "cuda/model_cuda.h"
#endif

namespace vq {

namespace {

using ModelPtr = std::shared_ptr<Model>;

struct AddonData {
  Napi::FunctionReference model_ctor;
};

ModelConfig parse_config(const Napi::Object& c) {
  ModelConfig cfg;
  Napi::Object t = c.Get("text").As<Napi::Object>();
  cfg.text.vocab = static_cast<int>(num(t, "vocab"));
  cfg.text.hidden = static_cast<int>(num(t, "hidden"));
  cfg.text.inter = static_cast<int>(num(t, "inter"));
  cfg.text.layers = static_cast<int>(num(t, "layers"));
  cfg.text.heads = static_cast<int>(num(t, "heads"));
  cfg.text.kv_heads = static_cast<int>(num(t, "kvHeads"));
  cfg.text.head_dim = static_cast<int>(num(t, "headDim"));
  cfg.text.eps = static_cast<float>(num(t, "eps"));
  cfg.text.theta = static_cast<float>(num(t, "theta"));
  std::vector<int32_t> sec = to_ints(t.Get("section"));
  for (int i = 0; i < 3; i++) cfg.text.section[i] = sec.at(i);
  cfg.text.tied = flag(t, "tied");
  // absent fields (older callers): Qwen2-VL's values
  if (t.Get("qkvBias").IsBoolean()) cfg.text.qkv_bias = flag(t, "qkvBias");
  if (t.Get("qkNorm").IsBoolean()) cfg.text.qk_norm = flag(t, "qkNorm");
  if (t.Get("mropeInterleaved").IsBoolean()) cfg.text.mrope_interleaved = flag(t, "mropeInterleaved");
  Napi::Object v = c.Get("vision").As<Napi::Object>();
  cfg.vision.depth = static_cast<int>(num(v, "depth"));
  cfg.vision.embed_dim = static_cast<int>(num(v, "embedDim"));
  cfg.vision.num_heads = static_cast<int>(num(v, "numHeads"));
  cfg.vision.mlp_hidden = static_cast<int>(num(v, "mlpHidden"));
  cfg.vision.out_hidden = static_cast<int>(num(v, "outHidden"));
  cfg.vision.in_channels = static_cast<int>(num(v, "inChannels"));
  cfg.vision.patch_size = static_cast<int>(num(v, "patchSize"));
  cfg.vision.temporal_patch_size = static_cast<int>(num(v, "temporalPatchSize"));
  cfg.vision.merge = static_cast<int>(num(v, "merge"));
  cfg.vision.quick_gelu = flag(v, "quickGelu");
  cfg.vision.theta = static_cast<float>(num(v, "theta"));
  cfg.vision.act = cfg.vision.quick_gelu ? VisionAct::quick_gelu : VisionAct::gelu;
  if (v.Get("act").IsString()) {
    const std::string act = v.Get("act").As<Napi::String>().Utf8Value();
    if (act == "quick_gelu") cfg.vision.act = VisionAct::quick_gelu;
    else if (act == "gelu") cfg.vision.act = VisionAct::gelu;
    else if (act == "silu") cfg.vision.act = VisionAct::silu;
    else if (act == "gelu_pytorch_tanh") cfg.vision.act = VisionAct::gelu_tanh;
    else throw Error("vision act " + act + " is not supported; supported: quick_gelu, gelu, silu, gelu_pytorch_tanh");
  }
  if (v.Get("rmsNorm").IsBoolean()) cfg.vision.rmsnorm = flag(v, "rmsNorm");
  if (v.Get("windowSize").IsNumber()) cfg.vision.window_size = static_cast<int>(num(v, "windowSize"));
  if (v.Get("fullatt").IsArray()) for (int32_t i : to_ints(v.Get("fullatt"))) cfg.vision.fullatt.push_back(i);
  if (v.Get("numPos").IsNumber()) cfg.vision.num_pos = static_cast<int>(num(v, "numPos"));
  if (v.Get("deepstack").IsArray()) for (int32_t i : to_ints(v.Get("deepstack"))) cfg.vision.deepstack.push_back(i);
  const std::string fam = c.Get("family").IsString() ? c.Get("family").As<Napi::String>().Utf8Value() : "qwen2_vl";
  if (fam == "qwen2_vl") cfg.family = Family::qwen2_vl;
  else if (fam == "qwen2_5_vl") cfg.family = Family::qwen2_5_vl;
  else if (fam == "qwen3_vl") cfg.family = Family::qwen3_vl;
  else throw Error("model family " + fam + " is not supported; supported: qwen2_vl, qwen2_5_vl, qwen3_vl");
  cfg.image_token_id = static_cast<int>(num(c, "imageTokenId"));
  if (c.Get("videoTokenId").IsNumber()) cfg.video_token_id = static_cast<int>(num(c, "videoTokenId"));
  if (c.Get("tokensPerSecond").IsNumber()) cfg.tokens_per_second = static_cast<float>(num(c, "tokensPerSecond"));
  return cfg;
}

// JavaScript arrays that a native call reads in place (no copy), held by references until the call
// has settled. References are made and dropped on the JS thread only: a holder is owned by what runs
// there (a PromiseWorker's completion, a sampling run's finalizer).
struct JsHold {
  std::vector<Napi::ObjectReference> refs;
};
using JsHoldPtr = std::shared_ptr<JsHold>;

// With `hold`: image pixels are views of their Float32Arrays, each held by `hold`; without: copied.
Prompt parse_prompt(const Napi::Object& o, JsHold* hold = nullptr) {
  Prompt p;
  p.ids = to_ints(o.Get("ids"));
  Napi::Value imv = o.Get("images");
  if (imv.IsArray()) {
    Napi::Array ims = imv.As<Napi::Array>();
    for (uint32_t i = 0; i < ims.Length(); i++) {
      Napi::Object im = ims.Get(i).As<Napi::Object>();
      Image img;
      Napi::Float32Array px = im.Get("pixels").As<Napi::Float32Array>();
      if (hold) {
        img.pixels.view(px.Data(), px.ElementLength());
        hold->refs.push_back(Napi::Persistent(px.As<Napi::Object>()));
      } else {
        img.pixels.resize(px.ElementLength());
        std::copy(px.Data(), px.Data() + px.ElementLength(), img.pixels.begin());
      }
      std::vector<int32_t> g = to_ints(im.Get("gridThw"));
      img.t = g.at(0);
      img.h = g.at(1);
      img.w = g.at(2);
      if (im.Get("video").IsBoolean()) img.video = im.Get("video").As<Napi::Boolean>().Value();
      if (im.Get("secondPerGrid").IsNumber()) img.second_per_grid = im.Get("secondPerGrid").As<Napi::Number>().FloatValue();
      if (im.Get("key").IsNumber()) img.key = static_cast<uint64_t>(im.Get("key").As<Napi::Number>().Int64Value());
      p.images.push_back(std::move(img));
    }
  }
  return p;
}

SampleRequest parse_sample(const Napi::Object& o, JsHold* hold) {
  SampleRequest q;
  q.prompt = parse_prompt(o.Get("prompt").As<Napi::Object>(), hold);
  q.n = static_cast<int>(num(o, "n"));
  q.temperature = static_cast<float>(num(o, "temperature"));
  q.top_p = static_cast<float>(num(o, "topP"));
  q.top_k = static_cast<int>(num(o, "topK"));
  q.max_tokens = static_cast<int>(num(o, "maxTokens"));
  q.stop = to_ints(o.Get("stopTokenIds"));
  q.seed = static_cast<uint64_t>(num(o, "seed"));
  q.stream = flag(o, "stream");
  return q;
}

Napi::Object result_object(Napi::Env env, const SampleResult& r) {
  Napi::Object o = Napi::Object::New(env);
  Napi::Array toks = Napi::Array::New(env), lps = Napi::Array::New(env), stop = Napi::Array::New(env);
  for (size_t g = 0; g < r.tokens.size(); g++) {
    toks.Set(static_cast<uint32_t>(g), from_ints(env, r.tokens[g]));
    lps.Set(static_cast<uint32_t>(g), from_floats(env, r.logprobs[g]));
    stop.Set(static_cast<uint32_t>(g), Napi::Boolean::New(env, r.stopped[g]));
  }
  o.Set("tokenIds", toks);
  o.Set("logprobs", lps);
  o.Set("stopped", stop);
  return o;
}

// ---- sampling runs with events (continuous batching, streaming) ---------------------------------
//
// sampleRun() starts a run on a worker thread and returns a handle at once; sampleRunAdd(handle, ...)
// adds requests while it runs, sampleRunCancel(handle, id) drops one. What the run produces reaches
// the JS callback through a ThreadSafeFunction, one packet per decode step (or prefill) that has
// something to say: {tokens: Int32Array of (id, row, token) triples, logprobs, done: [{id, tokenIds,
// logprobs, stopped}], failed: [{id, message, cancelled}]}; the last packet is {end: true, error?}.
// Packets arrive in order, so every request has settled before `end`.

struct RunPacket {
  std::vector<TokenEvent> tokens;
  std::vector<std::pair<int32_t, SampleResult>> done;
  struct Failure {
    int32_t id;
    std::string message;
    bool cancelled;
  };
  std::vector<Failure> failed;
  bool end = false;
  std::string error;
  bool empty() const { return tokens.empty() && done.empty() && failed.empty() && !end; }
};

void deliver(Napi::Env env, Napi::Function cb, RunPacket* raw) {
  std::unique_ptr<RunPacket> p(raw);
  if (env == nullptr || cb == nullptr) return;  // the environment is going away
  Napi::Object o = Napi::Object::New(env);
  if (!p->tokens.empty()) {
    const size_t n = p->tokens.size();
    Napi::Int32Array ev = Napi::Int32Array::New(env, 3 * n);
    Napi::Float32Array lp = Napi::Float32Array::New(env, n);
    for (size_t i = 0; i < n; i++) {
      ev[3 * i] = p->tokens[i].request;
      ev[3 * i + 1] = p->tokens[i].row;
      ev[3 * i + 2] = p->tokens[i].token;
      lp[i] = p->tokens[i].logprob;
    }
    o.Set("tokens", ev);
    o.Set("logprobs", lp);
  }
  if (!p->done.empty()) {
    Napi::Array d = Napi::Array::New(env, p->done.size());
    for (size_t i = 0; i < p->done.size(); i++) {
      Napi::Object r = result_object(env, p->done[i].second);
      r.Set("id", Napi::Number::New(env, p->done[i].first));
      d.Set(static_cast<uint32_t>(i), r);
    }
    o.Set("done", d);
  }
  if (!p->failed.empty()) {
    Napi::Array f = Napi::Array::New(env, p->failed.size());
    for (size_t i = 0; i < p->failed.size(); i++) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("id", Napi::Number::New(env, p->failed[i].id));
      r.Set("message", Napi::String::New(env, p->failed[i].message));
      r.Set("cancelled", Napi::Boolean::New(env, p->failed[i].cancelled));
      f.Set(static_cast<uint32_t>(i), r);
    }
    o.Set("failed", f);
  }
  if (p->end) {
    o.Set("end", Napi::Boolean::New(env, true));
    if (!p->error.empty()) o.Set("error", Napi::String::New(env, p->error));
  }
  try {
    cb.Call({o});
  } catch (const Napi::Error&) {
    // The TypeScript handler catches its own errors; nothing may escape into the event loop here.
  }
}

class PacketSink : public SampleSink {
 public:
  explicit PacketSink(Napi::ThreadSafeFunction tsfn) : tsfn_(tsfn), cur_(new RunPacket) {}
  void token(const TokenEvent& e) override { cur_->tokens.push_back(e); }
  void done(int32_t id, SampleResult&& r) override { cur_->done.emplace_back(id, std::move(r)); }
  void failed(int32_t id, const std::string& why, bool cancelled) override {
    cur_->failed.push_back(RunPacket::Failure{id, why, cancelled});
  }
  void flush() override {
    if (cur_->empty()) return;
    tsfn_.BlockingCall(cur_.release(), deliver);  // an unbounded queue: never blocks
    cur_.reset(new RunPacket);
  }
  void end(const std::string& error) {
    cur_->end = true;
    cur_->error = error;
    tsfn_.BlockingCall(cur_.release(), deliver);
    cur_.reset(new RunPacket);
  }

 private:
  Napi::ThreadSafeFunction tsfn_;
  std::unique_ptr<RunPacket> cur_;
};

struct SampleRunState {
  SampleInbox inbox;
  JsHold* hold = nullptr;  // JS thread only; owned by the run's ThreadSafeFunction finalizer
};
using RunHandle = std::shared_ptr<SampleRunState>;

class SampleRunWorker : public Napi::AsyncWorker {
 public:
  SampleRunWorker(Napi::Env env, ModelPtr m, RunHandle run, Napi::ThreadSafeFunction tsfn, uint64_t id)
      : Napi::AsyncWorker(env, "vqalab-sample"), m_(std::move(m)), run_(std::move(run)), tsfn_(tsfn), id_(id) {}

 protected:
  void Execute() override {
    PacketSink sink(tsfn_);
    std::string error;
    try {
      std::lock_guard<std::mutex> lk(m_->mutex());
      m_->begin_call(id_);
      m_->sample_run(run_->inbox, sink);
    } catch (const std::exception& e) {
      error = e.what();
      if (error.empty()) error = "native error";
    } catch (...) {
      error = "unknown native error";
    }
    run_->inbox.close();
    try {
      sink.flush();
    } catch (...) {
    }
    sink.end(error);
    tsfn_.Release();
  }
  void OnOK() override {}
  void OnError(const Napi::Error&) override {}

 private:
  ModelPtr m_;
  RunHandle run_;
  Napi::ThreadSafeFunction tsfn_;
  uint64_t id_;
};

RunHandle& run_of(const Napi::Value& v) { return *v.As<Napi::External<RunHandle>>().Data(); }

std::vector<std::pair<int32_t, SampleRequest>> parse_run_requests(const Napi::Array& a, JsHold* hold) {
  std::vector<std::pair<int32_t, SampleRequest>> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    out.emplace_back(static_cast<int32_t>(num(o, "id")), parse_sample(o, hold));
  }
  return out;
}

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {
                           InstanceMethod("forward", &NativeModel::Forward),
                           InstanceMethod("backward", &NativeModel::Backward),
                           InstanceMethod("sample", &NativeModel::Sample),
                           InstanceMethod("sampleRun", &NativeModel::SampleRun),
                           InstanceMethod("sampleRunAdd", &NativeModel::SampleRunAdd),
                           InstanceMethod("sampleRunCancel", &NativeModel::SampleRunCancel),
                           InstanceMethod("zeroGrad", &NativeModel::ZeroGrad),
                           InstanceMethod("step", &NativeModel::Step),
                           InstanceMethod("saveWeights", &NativeModel::SaveWeights),
                           InstanceMethod("saveOptimizer", &NativeModel::SaveOptimizer),
                           InstanceMethod("loadOptimizer", &NativeModel::LoadOptimizer),
                           InstanceMethod("saveLora", &NativeModel::SaveLora),
                           InstanceMethod("setLoraEnabled", &NativeModel::SetLoraEnabled),
                           InstanceMethod("setCheckpointActivations", &NativeModel::SetCheckpointActivations),
                           InstanceMethod("info", &NativeModel::Info),
                           InstanceMethod("dispose", &NativeModel::Dispose),
                           InstanceMethod("cancel", &NativeModel::Cancel),
                           InstanceMethod("_names", &NativeModel::Names),
                           InstanceMethod("_shape", &NativeModel::Shape),
                           InstanceMethod("_get", &NativeModel::Get),
                           InstanceMethod("_set", &NativeModel::Set),
                           InstanceMethod("_grad", &NativeModel::Grad),
                           InstanceMethod("_visionCache", &NativeModel::VisionCache),
                           InstanceMethod("_loraMergedSampling", &NativeModel::LoraMergedSampling),
                           InstanceMethod("allReduceGrads", &NativeModel::AllReduceGrads),
                           InstanceMethod("weightsHash", &NativeModel::WeightsHash),
                           InstanceMethod("_ropeIndex", &NativeModel::RopeIndex),
                           InstanceMethod("_attachTestDevice", &NativeModel::AttachTestDevice),
                       });
  }

  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    model_ = *info[0].As<Napi::External<ModelPtr>>().Data();
  }

 private:
  ModelPtr model_;

  ModelPtr live(Napi::Env env) {
    if (!model_) throw Napi::Error::New(env, "this model was disposed");
    return model_;
  }
  // Synchronous calls must not wait behind a running job on the JS thread.
  std::unique_lock<std::mutex> lock_now(Napi::Env env, const ModelPtr& m) {
    std::unique_lock<std::mutex> lk(m->mutex(), std::try_to_lock);
    if (!lk.owns_lock()) throw Napi::Error::New(env, "the model is busy with another call (await it first)");
    return lk;
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    Napi::Array reqs = info[0].As<Napi::Array>();
    const bool keep = info[1].As<Napi::Boolean>().Value();
    const uint64_t id = info.Length() > 2 && info[2].IsNumber() ? static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value()) : 0;
    auto in = std::make_shared<std::vector<ForwardRequest>>(reqs.Length());
    auto hold = std::make_shared<JsHold>();
    for (uint32_t i = 0; i < reqs.Length(); i++) {
      Napi::Object r = reqs.Get(i).As<Napi::Object>();
      (*in)[i].prompt = parse_prompt(r.Get("prompt").As<Napi::Object>(), hold.get());
      Napi::Array cs = r.Get("completions").As<Napi::Array>();
      for (uint32_t g = 0; g < cs.Length(); g++) (*in)[i].completions.push_back(to_ints(cs.Get(g)));
      (*in)[i].return_logits = flag(r, "returnLogits");
    }
    auto out = std::make_shared<std::vector<ForwardResult>>();
    return PromiseWorker::Run(
        env,
        [m, in, out, keep, id] {
          std::lock_guard<std::mutex> lk(m->mutex());
          m->begin_call(id);
          *out = m->forward(*in, keep);
        },
        // `hold` lives in the completion (run and destroyed on the JS thread), not in the work.
        [out, hold](Napi::Env env) -> Napi::Value {
          Napi::Array res = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); i++) {
            const ForwardResult& r = (*out)[i];
            Napi::Object o = Napi::Object::New(env);
            Napi::Array lp = Napi::Array::New(env), en = Napi::Array::New(env);
            for (size_t g = 0; g < r.logprobs.size(); g++) {
              lp.Set(static_cast<uint32_t>(g), from_floats(env, r.logprobs[g]));
              en.Set(static_cast<uint32_t>(g), from_floats(env, r.entropy[g]));
            }
            o.Set("logprobs", lp);
            o.Set("entropy", en);
            if (!r.logits.empty()) {
              Napi::Array lg = Napi::Array::New(env);
              for (size_t g = 0; g < r.logits.size(); g++) lg.Set(static_cast<uint32_t>(g), from_floats(env, r.logits[g]));
              o.Set("logits", lg);
            }
            res.Set(static_cast<uint32_t>(i), o);
          }
          return res;
        });
  }

  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    Napi::Array reqs = info[0].As<Napi::Array>();
    const uint64_t id = info.Length() > 1 && info[1].IsNumber() ? static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()) : 0;
    auto g = std::make_shared<std::vector<std::vector<std::vector<float>>>>(reqs.Length());
    for (uint32_t i = 0; i < reqs.Length(); i++) {
      Napi::Array cs = reqs.Get(i).As<Napi::Array>();
      for (uint32_t c = 0; c < cs.Length(); c++) (*g)[i].push_back(to_floats(cs.Get(c)));
    }
    return PromiseWorker::Run(
        env,
        [m, g, id] {
          std::lock_guard<std::mutex> lk(m->mutex());
          m->begin_call(id);
          m->backward(*g);
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }

  Napi::Value Sample(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto hold = std::make_shared<JsHold>();
    auto q = std::make_shared<SampleRequest>(parse_sample(info[0].As<Napi::Object>(), hold.get()));
    q->stream = false;
    const uint64_t id = info.Length() > 1 && info[1].IsNumber() ? static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value()) : 0;
    auto out = std::make_shared<SampleResult>();
    return PromiseWorker::Run(
        env,
        [m, q, out, id] {
          std::lock_guard<std::mutex> lk(m->mutex());
          m->begin_call(id);
          *out = m->sample(*q);
        },
        [out, hold](Napi::Env env) -> Napi::Value { return result_object(env, *out); });
  }

  // sampleRun(requests [{id, prompt, n, ..., stream}], onPacket, callId) -> handle
  Napi::Value SampleRun(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto run = std::make_shared<SampleRunState>();
    // The run's held arrays: dropped by the finalizer, which runs on the JS thread once the worker has
    // released the function (after the run ended).
    auto hold = std::make_unique<JsHold>();
    run->inbox.add(parse_run_requests(info[0].As<Napi::Array>(), hold.get()));
    const uint64_t id = info.Length() > 2 && info[2].IsNumber() ? static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value()) : 0;
    run->hold = hold.get();
    auto tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "vqalab-sample", 0, 1,
                                              [](Napi::Env, JsHold* h) { delete h; }, hold.release());
    auto* w = new SampleRunWorker(env, m, run, tsfn, id);
    w->Queue();
    return Napi::External<RunHandle>::New(env, new RunHandle(run), [](Napi::Env, RunHandle* h) { delete h; });
  }

  // sampleRunAdd(handle, requests) -> false when the run has ended (the caller starts another)
  Napi::Value SampleRunAdd(const Napi::CallbackInfo& info) {
    RunHandle& run = run_of(info[0]);
    // Parsed into a local holder first: the run's own may be gone (finalized) when it has ended.
    JsHold local;
    const bool added = run->inbox.add(parse_run_requests(info[1].As<Napi::Array>(), &local));
    // Added: the run had not ended, so its finalizer cannot have run yet (it runs on this thread, later).
    if (added)
      for (auto& r : local.refs) run->hold->refs.push_back(std::move(r));
    return Napi::Boolean::New(info.Env(), added);
  }

  // sampleRunCancel(handle, id): the request leaves at the run's next step
  Napi::Value SampleRunCancel(const Napi::CallbackInfo& info) {
    run_of(info[0])->inbox.cancel(static_cast<int32_t>(info[1].As<Napi::Number>().Int32Value()));
    return info.Env().Undefined();
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    ModelPtr m = live(info.Env());
    auto lk = lock_now(info.Env(), m);
    m->zero_grad();
    return info.Env().Undefined();
  }

  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    Napi::Object o = info[0].As<Napi::Object>();
    AdamWOptions a;
    a.lr = static_cast<float>(num(o, "lr"));
    a.beta1 = static_cast<float>(num(o, "beta1"));
    a.beta2 = static_cast<float>(num(o, "beta2"));
    a.eps = static_cast<float>(num(o, "eps"));
    a.weight_decay = static_cast<float>(num(o, "weightDecay"));
    a.max_grad_norm = static_cast<float>(num(o, "maxGradNorm"));
    auto out = std::make_shared<StepResult>();
    return PromiseWorker::Run(
        env,
        [m, a, out] {
          std::lock_guard<std::mutex> lk(m->mutex());
          *out = m->step(a);
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("gradNorm", Napi::Number::New(env, out->grad_norm));
          o.Set("skipped", Napi::Boolean::New(env, out->skipped));
          if (!out->reason.empty()) o.Set("reason", Napi::String::New(env, out->reason));
          return o;
        });
  }

  template <typename F>
  Napi::Value FileJob(const Napi::CallbackInfo& info, F fn) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    const std::string file = info[0].As<Napi::String>().Utf8Value();
    const bool internal = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    return PromiseWorker::Run(
        env,
        [m, file, internal, fn] {
          std::lock_guard<std::mutex> lk(m->mutex());
          fn(*m, file, internal);
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }

  Napi::Value SaveWeights(const Napi::CallbackInfo& info) {
    return FileJob(info, [](Model& m, const std::string& f, bool internal) { m.save_weights(f, internal); });
  }
  Napi::Value SaveOptimizer(const Napi::CallbackInfo& info) {
    return FileJob(info, [](Model& m, const std::string& f, bool internal) { m.save_optimizer(f, internal); });
  }
  Napi::Value LoadOptimizer(const Napi::CallbackInfo& info) {
    return FileJob(info, [](Model& m, const std::string& f, bool) { m.load_optimizer(f); });
  }
  Napi::Value SaveLora(const Napi::CallbackInfo& info) {
    return FileJob(info, [](Model& m, const std::string& f, bool internal) { m.save_lora(f, internal); });
  }

  Napi::Value SetLoraEnabled(const Napi::CallbackInfo& info) {
    ModelPtr m = live(info.Env());
    auto lk = lock_now(info.Env(), m);
    m->set_lora_enabled(info[0].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  }

  // setCheckpointActivations(on) -> whether the device took it (false on the CPU engine, which keeps
  // every activation: its memory is the host's).
  Napi::Value SetCheckpointActivations(const Napi::CallbackInfo& info) {
    ModelPtr m = live(info.Env());
    auto lk = lock_now(info.Env(), m);
    const bool on = info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
    return Napi::Boolean::New(info.Env(), m->device() != nullptr && m->device()->set_checkpoint_activations(on));
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("numParameters", Napi::Number::New(env, static_cast<double>(m->num_params())));
    o.Set("numTrainable", Napi::Number::New(env, static_cast<double>(m->num_trainable())));
    o.Set("internalNames", Napi::Boolean::New(env, m->internal_names()));
    o.Set("loraActive", Napi::Boolean::New(env, m->lora_active()));
    o.Set("loraEnabled", Napi::Boolean::New(env, m->lora_enabled()));
    o.Set("step", Napi::Number::New(env, static_cast<double>(m->step_count())));
    o.Set("device", Napi::String::New(env, m->device() ? m->device()->name() : "cpu"));
    o.Set("packRows", Napi::Number::New(env, m->device() ? static_cast<double>(m->device()->pack_rows()) : 0.0));
    return o;
  }

  // Asks the running call (if any) to stop at its next layer or decode step; never blocks.
  // _attachTestDevice(cpuModel, delayMs, batch): sampling on this model goes through the device routing
  // of a run (sampler.cc), the device being `cpuModel` (another NativeModel, CPU only); with `batch` the
  // device batches (sample_many per admitted group, as the CUDA backend). Tests only.
  Napi::Value AttachTestDevice(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::Error::New(env, "_attachTestDevice: expected a NativeModel");
    ModelPtr cpu = NativeModel::Unwrap(info[0].As<Napi::Object>())->live(env);
    if (cpu == m || cpu->device()) throw Napi::Error::New(env, "_attachTestDevice: the device model must be another CPU model");
    const int delay = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
    const bool batch = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
    auto lk = lock_now(env, m);
    m->attach_device(std::make_unique<TestDevice>(cpu, delay, batch));
    return env.Undefined();
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    if (model_ && info.Length() > 0 && info[0].IsNumber()) model_->cancel(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
    return info.Env().Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();  // running jobs keep their own reference and finish first
    return info.Env().Undefined();
  }

  Napi::Value Names(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    const auto names = m->tensor_names();
    Napi::Array a = Napi::Array::New(env, names.size());
    for (size_t i = 0; i < names.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::String::New(env, names[i]));
    return a;
  }

  Napi::Value Shape(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    const auto s = m->tensor_shape(info[0].As<Napi::String>().Utf8Value());
    Napi::Array a = Napi::Array::New(env, s.size());
    for (size_t i = 0; i < s.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(s[i])));
    return a;
  }

  Napi::Value Get(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto lk = lock_now(env, m);
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    return from_floats(env, std::as_const(*m).tensor_data(name), static_cast<size_t>(numel(m->tensor_shape(name))));
  }

  Napi::Value Set(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto lk = lock_now(env, m);
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    Napi::Float32Array a = info[1].As<Napi::Float32Array>();
    const int64_t n = numel(m->tensor_shape(name));
    if (static_cast<int64_t>(a.ElementLength()) != n)
      throw Napi::Error::New(env, "_set " + name + ": expected " + std::to_string(n) + " values");
    std::memcpy(m->tensor_data(name), a.Data(), n * sizeof(float));
    if (m->device()) m->device()->push();
    return env.Undefined();
  }

  Napi::Value Grad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto lk = lock_now(env, m);
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    const float* g = m->tensor_grad(name);
    if (!g) return env.Null();
    return from_floats(env, g, static_cast<size_t>(numel(m->tensor_shape(name))));
  }

  // _loraMergedSampling(on): the CPU engine's sampling runs on LoRA-merged weights (model.h, merged_).
  Napi::Value LoraMergedSampling(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto lk = lock_now(env, m);
    m->set_lora_merged_sampling(info[0].ToBoolean().Value());
    return env.Undefined();
  }

  // _visionCache([maxBytes]): the vision feature cache's counts (docs/engine.md); with maxBytes, its new
  // bound first (0: off).
  Napi::Value VisionCache(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto lk = lock_now(env, m);
    if (info.Length() > 0 && info[0].IsNumber()) {
      const double b = info[0].As<Napi::Number>().DoubleValue();
      if (!(b >= 0)) throw Napi::Error::New(env, "_visionCache: maxBytes must be a number >= 0");
      m->set_vision_cache(static_cast<size_t>(b));
    }
    const VisionCacheStats st = m->vision_cache_stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("hits", Napi::Number::New(env, static_cast<double>(st.hits)));
    o.Set("misses", Napi::Number::New(env, static_cast<double>(st.misses)));
    o.Set("entries", Napi::Number::New(env, static_cast<double>(st.entries)));
    o.Set("bytes", Napi::Number::New(env, static_cast<double>(st.bytes)));
    o.Set("maxBytes", Napi::Number::New(env, static_cast<double>(st.max_bytes)));
    return o;
  }

  // allReduceGrads(collective, bucketFloats): the gradients summed over the ranks (docs/multi-gpu.md).
  Napi::Value AllReduceGrads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    std::shared_ptr<Collective> c = collective_of(info[0]);
    const int64_t bucket = static_cast<int64_t>(info[1].As<Napi::Number>().Int64Value());
    return PromiseWorker::Run(
        env,
        [m, c, bucket] {
          std::lock_guard<std::mutex> lk(m->mutex());
          m->all_reduce_grads(*c, bucket);
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }

  // weightsHash() -> 16 hex digits of the trainable weights and step count (ranks compare them).
  Napi::Value WeightsHash(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    auto out = std::make_shared<std::string>();
    return PromiseWorker::Run(
        env,
        [m, out] {
          std::lock_guard<std::mutex> lk(m->mutex());
          *out = m->weights_hash();
        },
        [out](Napi::Env env) -> Napi::Value { return Napi::String::New(env, *out); });
  }

  Napi::Value RopeIndex(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ModelPtr m = live(env);
    Prompt p = parse_prompt(info[0].As<Napi::Object>());
    m->check_prompt(p, "_ropeIndex");
    std::vector<int32_t> pos;
    const int32_t next = m->rope_index(p, pos);
    Napi::Object out = Napi::Object::New(env);
    out.Set("positions", from_ints(env, pos));
    out.Set("next", Napi::Number::New(env, next));
    return out;
  }
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object spec = info[0].As<Napi::Object>();
  const ModelConfig cfg = parse_config(spec.Get("config").As<Napi::Object>());
  std::vector<std::string> files;
  Napi::Array fa = spec.Get("files").As<Napi::Array>();
  for (uint32_t i = 0; i < fa.Length(); i++) files.push_back(fa.Get(i).As<Napi::String>().Utf8Value());
  const int max_seq = static_cast<int>(num(spec, "maxSequenceLength"));
  const int threads = spec.Get("threads").IsNumber() ? static_cast<int>(num(spec, "threads")) : 0;
  bool lora = false;
  LoraOptions lo;
  if (spec.Get("lora").IsObject()) {
    Napi::Object l = spec.Get("lora").As<Napi::Object>();
    lora = true;
    lo.rank = static_cast<int>(num(l, "rank"));
    lo.alpha = static_cast<float>(num(l, "alpha"));
    lo.vision = flag(l, "vision");
    lo.seed = l.Get("seed").IsNumber() ? static_cast<uint64_t>(num(l, "seed")) : 0;
    Napi::Array t = l.Get("targetModules").As<Napi::Array>();
    for (uint32_t i = 0; i < t.Length(); i++) lo.targets.push_back(t.Get(i).As<Napi::String>().Utf8Value());
  }
  const std::string lora_file = spec.Get("loraFile").IsString() ? spec.Get("loraFile").As<Napi::String>().Utf8Value() : "";
  const std::string opt_file =
      spec.Get("optimizerFile").IsString() ? spec.Get("optimizerFile").As<Napi::String>().Utf8Value() : "";
  // device: "cpu" or "cuda:N" (validated in TypeScript); precision of the CUDA backend: bf16 or fp32
  const std::string device = spec.Get("device").IsString() ? spec.Get("device").As<Napi::String>().Utf8Value() : "cpu";
  [[maybe_unused]] const bool cuda_fp32 = spec.Get("precision").IsString() && spec.Get("precision").As<Napi::String>().Utf8Value() == "fp32";
  const int cuda_index = device.rfind("cuda:", 0) == 0 ? std::stoi(device.substr(5)) : -1;
#ifdef VQALAB_CUDA
  // CUDA options: cuda_options.h's defaults, overridden by the spec's `cuda` fields (validated, with their
  // environment fallbacks, in src/engine/cuda-options.ts)
  CudaOptions copts;
  if (spec.Get("cuda").IsObject()) {
    Napi::Object c = spec.Get("cuda").As<Napi::Object>();
    auto set = [&](const char* name, bool& field) {
      if (c.Get(name).IsBoolean()) field = c.Get(name).As<Napi::Boolean>();
    };
    set("offloadOptimizer", copts.offload_optimizer);
    set("bf16Moments", copts.bf16_moments);
    set("checkpointActivations", copts.checkpoint);
    if (c.Get("packRows").IsNumber()) copts.pack_rows = static_cast<int64_t>(num(c, "packRows"));
    set("graphs", copts.graphs);
    set("loraSingleRounding", copts.lora_single_rounding);
    set("loraMergedSampling", copts.lora_merged_sampling);
    if (c.Get("attention").IsString())
      copts.attention = c.Get("attention").As<Napi::String>().Utf8Value() == "gemm" ? CudaAttention::gemm : CudaAttention::fused;
    set("syncEveryOp", copts.sync_every_op);
    set("profile", copts.profile);
  }
#endif
  // Every family passed native/dev/test_model on a GPU (Qwen3-VL: bf16 checks on bf16-representable
  // weights, over several seeds; docs/cuda.md). A new family is refused on CUDA until it does; lifting the
  // refusal of a family is adding it to this line:
  const bool cuda_family_checked =
      cfg.family == Family::qwen2_vl || cfg.family == Family::qwen2_5_vl || cfg.family == Family::qwen3_vl;
  if (cuda_index >= 0 && !cuda_family_checked)
    throw Napi::Error::New(env, "device " + device + ": the CUDA backend runs qwen2_vl and qwen2_5_vl models so far; "
                                "load this model (qwen3_vl) with device 'cpu'");
#ifndef VQALAB_CUDA
  if (cuda_index >= 0)
    throw Napi::Error::New(env, "device " + device + " is not available: this build of the native engine has no CUDA "
                                "backend (it is built at install when nvcc (CUDA >= 12) and the cuBLAS/cuBLASLt headers "
                                "and libraries are found; see docs/cuda.md)");
#endif
  auto out = std::make_shared<ModelPtr>();
  AddonData* data = env.GetInstanceData<AddonData>();
  return PromiseWorker::Run(
      env,
      [=] {
        if (threads > 0) ThreadPool::get().resize(threads);
        check_model_config(cfg, files, max_seq);  // before anything is allocated
        auto m = std::make_shared<Model>(cfg, max_seq);
        m->load(files);
        if (lora) m->add_lora(lo);
        if (!lora_file.empty()) m->load_lora(lora_file);
        if (!opt_file.empty()) m->load_optimizer(opt_file);
#ifdef VQALAB_CUDA
        if (cuda_index >= 0) m->attach_device(make_cuda_model(*m, cuda_index, !cuda_fp32, copts));
#endif
        *out = m;
      },
      [out, data](Napi::Env env) -> Napi::Value {
        return data->model_ctor.New({Napi::External<ModelPtr>::New(env, out.get())});
      });
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->model_ctor = Napi::Persistent(NativeModel::Define(env));
  env.SetInstanceData<AddonData>(data);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
}

}  // namespace vq
