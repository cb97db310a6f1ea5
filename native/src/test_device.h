// A stand-in device for the tests of the device routing (napi `_attachTestDevice`) on a machine
// without a GPU: the sampling run's device path (sampler.cc, DeviceModel::batches) is exercised with
// another CPU model doing the work. Kept out of the binding's own code: nothing else uses it.
#pragma once
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "model.h"

namespace vq {

// For tests of the device routing on a machine without a device (_attachTestDevice): a device that
// samples with another, CPU-only model (optionally after a delay, so that tests can cancel between
// requests); the other heavy calls are refused. With `batch` it says it batches (as the CUDA backend):
// a run hands it each admitted group in one sample_many call (one delay per call), and its name
// counts those calls; without, its name counts the requests it was handed.
class TestDevice : public DeviceModel {
 public:
  TestDevice(std::shared_ptr<Model> cpu, int delay_ms, bool batch = false) : cpu_(std::move(cpu)), delay_ms_(delay_ms), batch_(batch) {}
  bool batches() const override { return batch_; }
  std::vector<SampleResult> sample_many(const std::vector<SampleRequest>& qs) override {
    if (!batch_) return DeviceModel::sample_many(qs);
    calls_++;
    if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    std::lock_guard<std::mutex> lk(cpu_->mutex());
    cpu_->begin_call(0);
    std::vector<SampleResult> r;
    for (const auto& q : qs) r.push_back(cpu_->sample(q));
    return r;
  }
  std::vector<ForwardResult> forward(const std::vector<ForwardRequest>&, bool) override { refuse("forward"); }
  void backward(const std::vector<std::vector<std::vector<float>>>&) override { refuse("backward"); }
  SampleResult sample(const SampleRequest& q) override {
    samples_++;
    if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    std::lock_guard<std::mutex> lk(cpu_->mutex());
    cpu_->begin_call(0);
    return cpu_->sample(q);
  }
  void zero_grad() override { refuse("zero_grad"); }
  StepResult step(const AdamWOptions&) override { refuse("step"); }
  void pull() override {}
  void pull_grads() override {}
  void push() override {}
  std::string name() const override {
    return batch_ ? "test (samples with another CPU model; batches; " + std::to_string(calls_.load()) + " sample_many calls)"
                  : "test (samples with another CPU model; " + std::to_string(samples_.load()) + " sample calls)";
  }

 private:
  std::shared_ptr<Model> cpu_;
  int delay_ms_;
  bool batch_;
  std::atomic<int> calls_{0};
  std::atomic<int> samples_{0};  // requests handed to sample() (without batching)
  [[noreturn]] static void refuse(const char* what) { throw Error(std::string("the test device only samples (") + what + ")"); }
};

}  // namespace vq
