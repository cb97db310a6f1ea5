// The native engine's N-API registration. Heavy calls live in napi_model.cc (async, promise-returning);
// internal entry points for tests and benchmarks (prefixed "_") in napi_ops.cc.
#include <napi.h>

#include "napi_collective.h"
#include "napi_util.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vq::register_model(env, exports);
  vq::register_ops(env, exports);
  vq::register_collective(env, exports);
  return exports;
}

NODE_API_MODULE(vqalab, Init)
