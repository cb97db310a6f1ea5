// A small persistent thread pool for the CPU engine.
//
// Size: VQALAB_THREADS, else all cores (std::thread::hardware_concurrency). The calling thread takes
// part in every job, so a pool of size n starts n-1 workers. Workers sleep on a condition variable
// between jobs (no spinning: the machine is shared). A parallel_for called from inside a job runs
// serially on the calling thread, and jobs from different callers (two models working at once) run one
// after the other.
#pragma once
#include <cstdint>
#include <functional>

namespace vq {

class ThreadPool {
 public:
  static ThreadPool& get();
  int size() const { return nthreads_; }
  // Changes the number of threads (>= 1); joins and restarts the workers.
  void resize(int n);

  // Splits [0, n) into at most size() contiguous ranges of at least `grain` items and runs
  // fn(begin, end, part) on them; `part` is in [0, parts) and the split depends only on n, grain and
  // size(), so per-part partial results reduce deterministically.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);
  // Runs fn(task, thread) for every task in [0, ntasks), handing tasks out dynamically; `thread` is in
  // [0, size()) and identifies the thread (for per-thread scratch).
  void parallel_tasks(int64_t ntasks, const std::function<void(int64_t, int)>& fn);
  // How many parts parallel_for(n, grain, ...) uses.
  int parts_for(int64_t n, int64_t grain) const;

  ~ThreadPool();
  struct Impl;

 private:
  ThreadPool();
  void start(int n);
  void stop();
  Impl* impl_;
  int nthreads_ = 1;
};

inline void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  ThreadPool::get().parallel_for(n, grain, fn);
}

}  // namespace vq
