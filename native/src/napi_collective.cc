// N-API of the collectives (collective.h): collectiveId(backend, host|device) on rank 0, then
// createCollective({backend, id, rank, size, device, timeoutMs}) on every rank -> an object with
// allReduce(Float32Array), broadcast(Float32Array, root), barrier(), abort(), destroy(). Every call that
// waits for the other ranks runs off the JS thread and returns a promise.
#include "napi_collective.h"

#include <cstring>

#include "napi_util.h"

namespace vq {
namespace {

struct CollectiveData {
  Napi::FunctionReference ctor;
};
CollectiveData* ctor_data = nullptr;

class NativeCollective : public Napi::ObjectWrap<NativeCollective> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeCollective",
                       {
                           InstanceMethod("allReduce", &NativeCollective::AllReduce),
                           InstanceMethod("broadcast", &NativeCollective::Broadcast),
                           InstanceMethod("barrier", &NativeCollective::Barrier),
                           InstanceMethod("abort", &NativeCollective::Abort),
                           InstanceMethod("destroy", &NativeCollective::Destroy),
                           InstanceMethod("info", &NativeCollective::Info),
                       });
  }
  explicit NativeCollective(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeCollective>(info) {
    c_ = *info[0].As<Napi::External<std::shared_ptr<Collective>>>().Data();
  }
  std::shared_ptr<Collective> live(Napi::Env env) const {
    if (!c_) throw Napi::Error::New(env, "this collective was destroyed");
    return c_;
  }

 private:
  std::shared_ptr<Collective> c_;

  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    auto c = live(info.Env());
    auto buf = std::make_shared<std::vector<float>>(to_floats(info[0]));
    return PromiseWorker::Run(
        info.Env(), [c, buf] { c->all_reduce_host(buf->data(), static_cast<int64_t>(buf->size())); },
        [buf](Napi::Env env) -> Napi::Value { return from_floats(env, *buf); });
  }
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    auto c = live(info.Env());
    auto buf = std::make_shared<std::vector<float>>(to_floats(info[0]));
    const int root = info[1].As<Napi::Number>().Int32Value();
    return PromiseWorker::Run(
        info.Env(), [c, buf, root] { c->broadcast_host(buf->data(), static_cast<int64_t>(buf->size()), root); },
        [buf](Napi::Env env) -> Napi::Value { return from_floats(env, *buf); });
  }
  Napi::Value Barrier(const Napi::CallbackInfo& info) {
    auto c = live(info.Env());
    return PromiseWorker::Run(
        info.Env(), [c] { c->barrier(); }, [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    if (c_) c_->abort();
    return info.Env().Undefined();
  }
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    c_.reset();  // a call in flight keeps its own reference and finishes first
    return info.Env().Undefined();
  }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto c = live(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("rank", Napi::Number::New(env, c->rank()));
    o.Set("size", Napi::Number::New(env, c->size()));
    o.Set("backend", Napi::String::New(env, c->backend()));
    return o;
  }
};

// collectiveId('cpu', host) | collectiveId('nccl', device) -> Uint8Array(128)
Napi::Value CollectiveIdFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string backend = info[0].As<Napi::String>().Utf8Value();
  CollectiveId id;
  if (backend == "cpu") {
    id = cpu_collective_id(info[1].As<Napi::String>().Utf8Value());
  } else if (backend == "nccl") {
#ifdef VQALAB_CUDA
    id = nccl_collective_id(info[1].As<Napi::Number>().Int32Value());
#else
    throw Napi::Error::New(env, "the nccl collective needs the CUDA backend, and this build of the native engine has none "
                                "(docs/cuda.md)");
#endif
  } else {
    throw Napi::Error::New(env, "collectiveId: unknown backend " + backend + " (expected cpu or nccl)");
  }
  Napi::Uint8Array a = Napi::Uint8Array::New(env, sizeof(id.bytes));
  std::memcpy(a.Data(), id.bytes, sizeof(id.bytes));
  return a;
}

// createCollective({backend, id, rank, size, device, timeoutMs}) -> Promise<NativeCollective>
Napi::Value CreateCollective(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  const std::string backend = o.Get("backend").As<Napi::String>().Utf8Value();
  Napi::Uint8Array ida = o.Get("id").As<Napi::Uint8Array>();
  if (ida.ElementLength() != sizeof(CollectiveId::bytes))
    throw Napi::Error::New(env, "createCollective: the id must be 128 bytes (from collectiveId)");
  CollectiveId id;
  std::memcpy(id.bytes, ida.Data(), sizeof(id.bytes));
  const int rank = static_cast<int>(num(o, "rank")), size = static_cast<int>(num(o, "size"));
  const int device = o.Get("device").IsNumber() ? static_cast<int>(num(o, "device")) : 0;
  const double timeout_s = num(o, "timeoutMs") / 1000.0;
  if (backend != "cpu" && backend != "nccl")
    throw Napi::Error::New(env, "createCollective: unknown backend " + backend + " (expected cpu or nccl)");
#ifndef VQALAB_CUDA
  if (backend == "nccl")
    throw Napi::Error::New(env, "the nccl collective needs the CUDA backend, and this build of the native engine has none "
                                "(docs/cuda.md)");
#endif
  auto out = std::make_shared<std::shared_ptr<Collective>>();
  return PromiseWorker::Run(
      env,
      [=] {
        if (backend == "cpu") *out = make_cpu_collective(id, rank, size, timeout_s);
#ifdef VQALAB_CUDA
        else *out = make_nccl_collective(id, rank, size, device, timeout_s);
#else
        (void)device;
#endif
      },
      [out](Napi::Env env) -> Napi::Value {
        return ctor_data->ctor.New({Napi::External<std::shared_ptr<Collective>>::New(env, out.get())});
      });
}

}  // namespace

std::shared_ptr<Collective> collective_of(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ctor_data->ctor.Value()))
    throw Napi::Error::New(env, "expected a collective (createCollective)");
  return NativeCollective::Unwrap(v.As<Napi::Object>())->live(env);
}

void register_collective(Napi::Env env, Napi::Object exports) {
  ctor_data = new CollectiveData();  // lives as long as the addon (one per process)
  ctor_data->ctor = Napi::Persistent(NativeCollective::Define(env));
  exports.Set("collectiveId", Napi::Function::New(env, CollectiveIdFn));
  exports.Set("createCollective", Napi::Function::New(env, CreateCollective));
}

}  // namespace vq
