// The Model's part in data-parallel training (docs/multi-gpu.md): the sum of the gradients over the ranks
// before the (identical) optimizer step, and a hash of the weights that the ranks compare.
#include <cstdio>
#include <cstring>

#include "collective.h"
#include "common.h"
#include "model.h"

namespace vq {

void DeviceModel::all_reduce_grads(Collective&, int64_t) {
  VQ_FAIL("device " << name() << " cannot all-reduce its gradients");
}

void Model::all_reduce_grads(Collective& c, int64_t bucket) {
  VQ_CHECK(bucket > 0, "all_reduce_grads: the bucket must hold at least one float");
  if (device_) return device_->all_reduce_grads(c, bucket);
  VQ_CHECK(!c.device_buffers(), "the " << c.backend() << " collective works on CUDA devices; this model is on the CPU "
                                       "(use the cpu collective)");
  ensure_grads();  // a rank with no backward this update takes part with zeros
  std::vector<float>& g = lora_.empty() ? grads_ : lgrads_;
  const int64_t n = static_cast<int64_t>(g.size());
  for (int64_t off = 0; off < n; off += bucket) c.all_reduce_sum(g.data() + off, std::min(bucket, n - off), nullptr);
}

std::string Model::weights_hash() {
  if (device_) device_->pull();
  const std::vector<float>& w = lora_.empty() ? params_ : lparams_;
  // FNV-1a over 64-bit words (then the tail), the step count last.
  uint64_t h = 1469598103934665603ull;
  const size_t bytes = w.size() * sizeof(float);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(w.data());
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t x;
    std::memcpy(&x, p + i, 8);
    h = (h ^ x) * 1099511628211ull;
  }
  for (; i < bytes; i++) h = (h ^ p[i]) * 1099511628211ull;
  h = (h ^ static_cast<uint64_t>(step_)) * 1099511628211ull;
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return out;
}

}  // namespace vq
