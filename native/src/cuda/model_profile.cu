// Phase timings of the CUDA models with CudaOptions::profile: events around named phases, summed by name.
#include <chrono>
#include <map>

#include "cuda/model_internal.cuh"

namespace vq {

namespace {
struct ProfRec {
  const char* name;
  cudaEvent_t a, b;
};
std::mutex g_prof_mu;
std::vector<ProfRec> g_prof;
std::map<std::string, std::pair<double, int>> g_host;  // host sections: wall ms, count
std::vector<std::string> g_host_order;
double wall_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Phase::Phase(bool on, const char* name) {
  if (!name || !on) return;
  if (name[0] != ' ') {  // top-level phases name the ops they issue (sub-phases are indented)
    prev_ctx = cu::set_op_context(name);
    ctx = true;
  }
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(cu::stream(), &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return;
  cudaEvent_t a = nullptr, b = nullptr;
  if (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess) return;
  cudaEventRecord(a, cu::stream());
  std::lock_guard<std::mutex> l(g_prof_mu);
  g_prof.push_back(ProfRec{name, a, b});
  idx = static_cast<long>(g_prof.size()) - 1;
}
void Phase::stop() {
  if (ctx) {
    cu::set_op_context(prev_ctx);
    ctx = false;
  }
  if (idx < 0) return;
  std::lock_guard<std::mutex> l(g_prof_mu);
  cudaEventRecord(g_prof[idx].b, cu::stream());
  idx = -1;
}

HostPhase::HostPhase(bool on, const char* n) {
  if (!on) return;
  name = n;
  t0 = wall_ms();
}
void HostPhase::stop() {
  if (!name) return;
  const double ms = wall_ms() - t0;
  const char* n = name;
  name = nullptr;
  std::lock_guard<std::mutex> l(g_prof_mu);
  auto it = g_host.find(n);
  if (it == g_host.end()) {
    g_host_order.push_back(n);
    it = g_host.emplace(n, std::make_pair(0.0, 0)).first;
  }
  it->second.first += ms;
  it->second.second++;
}

std::string cuda_profile_report() {
  std::lock_guard<std::mutex> l(g_prof_mu);
  std::string host;
  for (const std::string& n : g_host_order) {
    char b[160];
    std::snprintf(b, sizeof b, "  host %-23s %9.2f ms  (%d)\n", n.c_str(), g_host[n].first, g_host[n].second);
    host += b;
  }
  g_host.clear();
  g_host_order.clear();
  if (g_prof.empty()) return host.size() ? host : "profile: nothing recorded (no model with the profile option ran)\n";
  cudaDeviceSynchronize();
  std::map<std::string, std::pair<double, int>> sum;
  std::vector<std::string> order;
  for (const ProfRec& r : g_prof) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, r.a, r.b);
    auto it = sum.find(r.name);
    if (it == sum.end()) { order.push_back(r.name); it = sum.emplace(r.name, std::make_pair(0.0, 0)).first; }
    it->second.first += ms;
    it->second.second++;
    cudaEventDestroy(r.a);
    cudaEventDestroy(r.b);
  }
  g_prof.clear();
  std::string out = host;
  for (const std::string& n : order) {
    char b[160];
    std::snprintf(b, sizeof b, "  %-28s %9.2f ms  (%d)\n", n.c_str(), sum[n].first, sum[n].second);
    out += b;
  }
  return out + cu::op_profile_report();
}


}  // namespace vq
