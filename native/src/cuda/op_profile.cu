// Op-level timing (cuda_common.h): an event per launch and per GEMM, differences of consecutive events on a
// stream summed by (phase, op). A development tool: it says which kernels and GEMMs a phase of
// CudaOptions::profile spends its time in, and whether the host issues them slower than the device runs them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "cuda/cuda_common.h"

namespace vq {
namespace cu {

namespace {
struct Mark {
  const char* phase;
  const char* op;
  cudaStream_t st;
  cudaEvent_t ev;
  double host_ms;
};
std::mutex g_mu;
std::vector<Mark> g_marks;
std::vector<cudaEvent_t> g_pool;  // events of earlier reports, reused
thread_local const char* g_phase = "(no phase)";
const bool g_on = [] {
  const char* v = std::getenv("VQALAB_CUDA_PROFILE_OPS");
  return v && v[0] == '1';
}();
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

bool op_profiling() { return g_on; }

const char* set_op_context(const char* phase) {
  const char* prev = g_phase;
  g_phase = phase ? phase : "(no phase)";
  return prev;
}

void op_mark(const char* op) {
  if (!g_on) return;
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream(), &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return;
  std::lock_guard<std::mutex> l(g_mu);
  cudaEvent_t ev = nullptr;
  if (!g_pool.empty()) {
    ev = g_pool.back();
    g_pool.pop_back();
  } else if (cudaEventCreate(&ev) != cudaSuccess) {
    return;
  }
  cudaEventRecord(ev, stream());
  g_marks.push_back(Mark{g_phase, op, stream(), ev, now_ms()});
}

std::string op_profile_report() {
  if (!g_on) return "";
  std::lock_guard<std::mutex> l(g_mu);
  if (g_marks.empty()) return "";
  cudaDeviceSynchronize();
  struct Sum { double dev = 0, host = 0; int n = 0; };
  std::map<std::pair<std::string, std::string>, Sum> sums;
  std::map<cudaStream_t, size_t> last;  // the previous mark of each stream
  double total = 0;
  for (size_t i = 0; i < g_marks.size(); i++) {
    const Mark& m = g_marks[i];
    auto it = last.find(m.st);
    if (it != last.end()) {
      const Mark& p = g_marks[it->second];
      float ms = 0.0f;
      cudaEventElapsedTime(&ms, p.ev, m.ev);
      Sum& s = sums[{m.phase, m.op}];
      s.dev += ms;
      s.host += m.host_ms - p.host_ms;
      s.n++;
      total += ms;
    }
    last[m.st] = i;
  }
  for (const Mark& m : g_marks) g_pool.push_back(m.ev);
  g_marks.clear();
  std::vector<std::pair<std::pair<std::string, std::string>, Sum>> rows(sums.begin(), sums.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.dev > b.second.dev; });
  std::string out = "ops (device ms from the previous op's end, host ms issuing it; largest first):\n";
  char b[256];
  std::snprintf(b, sizeof b, "  %-30s %-36s %9s %9s %7s\n", "phase", "op", "device", "host", "count");
  out += b;
  for (size_t i = 0; i < rows.size() && i < 60; i++) {
    const auto& r = rows[i];
    std::snprintf(b, sizeof b, "  %-30.30s %-36.36s %9.2f %9.2f %7d\n", r.first.first.c_str(), r.first.second.c_str(),
                  r.second.dev, r.second.host, r.second.n);
    out += b;
  }
  std::snprintf(b, sizeof b, "  total device %.2f ms over %zu (phase, op) pairs\n", total, rows.size());
  out += b;
  return out;
}

}  // namespace cu
}  // namespace vq
