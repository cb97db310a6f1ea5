// The collective as a JS object (napi_collective.cc), shared with the model's allReduceGrads.
#pragma once
#include <napi.h>

#include <memory>

#include "collective.h"

namespace vq {

void register_collective(Napi::Env env, Napi::Object exports);
// The collective behind a NativeCollective object (throws a JS error for anything else, or one destroyed).
std::shared_ptr<Collective> collective_of(const Napi::Value& v);

}  // namespace vq
