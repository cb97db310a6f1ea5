#include "cpu/threadpool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"

namespace vq {

namespace {
thread_local bool tl_in_job = false;  // set while this thread runs a job: nested calls run serially
}

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex m;
  std::condition_variable cv_work, cv_done;
  std::mutex job_mutex;  // one job at a time
  uint64_t generation = 0;
  bool quit = false;
  // current job: every thread (caller = index 0) runs run_thread(index)
  std::function<void(int)> run_thread;
  int pending = 0;
  std::exception_ptr error;
  std::mutex error_mutex;

  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> g(error_mutex);
    if (!error) error = e;
  }
};

ThreadPool& ThreadPool::get() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() : impl_(new Impl) {
  int n = 0;
  if (const char* env = std::getenv("VQALAB_THREADS")) n = std::atoi(env);
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  start(n);
}

ThreadPool::~ThreadPool() {
  stop();
  delete impl_;
}

void ThreadPool::start(int n) {
  nthreads_ = n;
  impl_->quit = false;
  // New workers wait for the next job, not the last one run (after a resize, generation is not 0).
  const uint64_t current = impl_->generation;
  for (int i = 1; i < n; i++) {
    impl_->workers.emplace_back([this, i, current] {
      uint64_t seen = current;
      for (;;) {
        std::function<void(int)> job;
        {
          std::unique_lock<std::mutex> lk(impl_->m);
          impl_->cv_work.wait(lk, [&] { return impl_->quit || impl_->generation != seen; });
          if (impl_->quit) return;
          seen = impl_->generation;
          job = impl_->run_thread;
        }
        tl_in_job = true;
        try {
          job(i);
        } catch (...) {
          impl_->record(std::current_exception());
        }
        tl_in_job = false;
        {
          std::lock_guard<std::mutex> lk(impl_->m);
          if (--impl_->pending == 0) impl_->cv_done.notify_all();
        }
      }
    });
  }
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lk(impl_->m);
    impl_->quit = true;
  }
  impl_->cv_work.notify_all();
  for (auto& t : impl_->workers) t.join();
  impl_->workers.clear();
}

void ThreadPool::resize(int n) {
  VQ_CHECK(n >= 1, "thread count must be >= 1, got " << n);
  std::lock_guard<std::mutex> job(impl_->job_mutex);
  if (n == nthreads_) return;
  stop();
  start(n);
}

int ThreadPool::parts_for(int64_t n, int64_t grain) const {
  if (n <= 0) return 0;
  if (grain < 1) grain = 1;
  int64_t parts = (n + grain - 1) / grain;
  if (parts > nthreads_) parts = nthreads_;
  return static_cast<int>(parts);
}

// Runs `body(thread)` on every thread of the pool (the caller is thread 0) and waits for all.
static void run_on_all(ThreadPool::Impl* impl, int nthreads, const std::function<void(int)>& body) {
  std::lock_guard<std::mutex> job(impl->job_mutex);
  {
    std::lock_guard<std::mutex> lk(impl->m);
    impl->run_thread = body;
    impl->pending = nthreads - 1;
    impl->error = nullptr;
    impl->generation++;
  }
  impl->cv_work.notify_all();
  tl_in_job = true;
  try {
    body(0);
  } catch (...) {
    impl->record(std::current_exception());
  }
  tl_in_job = false;
  {
    std::unique_lock<std::mutex> lk(impl->m);
    impl->cv_done.wait(lk, [&] { return impl->pending == 0; });
    impl->run_thread = nullptr;  // it refers to the caller's frame
  }
  if (impl->error) std::rethrow_exception(impl->error);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  const int parts = parts_for(n, grain);
  if (parts == 0) return;
  if (parts == 1 || tl_in_job || nthreads_ == 1) {
    if (parts == 1) {
      fn(0, n, 0);
    } else {
      for (int p = 0; p < parts; p++) fn(n * p / parts, n * (p + 1) / parts, p);
    }
    return;
  }
  run_on_all(impl_, nthreads_, [&](int t) {
    if (t < parts) fn(n * t / parts, n * (t + 1) / parts, t);
  });
}

void ThreadPool::parallel_tasks(int64_t ntasks, const std::function<void(int64_t, int)>& fn) {
  if (ntasks <= 0) return;
  if (ntasks == 1 || tl_in_job || nthreads_ == 1) {
    for (int64_t i = 0; i < ntasks; i++) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  run_on_all(impl_, nthreads_, [&](int t) {
    for (;;) {
      int64_t i = next.fetch_add(1);
      if (i >= ntasks) break;
      fn(i, t);
    }
  });
}

}  // namespace vq
