// Multi-prompt sampling (sampler.cc): the requests of one run, and where a run reports.
//
// A run (Model::sample_run) decodes every active request in one batched loop. Requests come from a
// SampleInbox, which the caller may fill while the run goes on (continuous batching): the run takes
// what arrived at each step boundary, prefills those prompts (each once, its n rows sharing the
// prefix), and from the next step their rows decode with the others. Requests leave when all their
// rows have stopped, or when they are cancelled. When nothing is active and nothing waits, the run
// closes the inbox and returns; a later add() is refused, and the caller starts a new run.
//
// With a device attached (Model::device()), a run keeps this contract but the device samples: the
// requests that have arrived when it is free are admitted together and handed to
// sample_admitted_on_device() (sampler.cc, the one place that calls the device); a streaming
// request's tokens reach the sink when its result is complete.
//
// Results do not depend on the company a request keeps: every row's arithmetic is independent of the
// other rows of a step (the GEMM sums each output element in a fixed order; decode attention takes the
// row path), a prompt is prefilled alone, and randomness is a function of (seed, row, step).
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "model.h"

namespace vq {

// One sampled token as it is produced.
struct TokenEvent {
  int32_t request = 0;  // the id given to SampleInbox::add
  int32_t row = 0;      // which of the request's n samples
  int32_t token = 0;
  float logprob = 0.0f;  // under the unfiltered, temperature-1 policy (as SampleResult)
};

// Where a run reports, on the run's thread, in order. Calls between two flush() belong to one step
// (or one prefill); a sink that crosses threads posts them as one packet at flush().
class SampleSink {
 public:
  virtual ~SampleSink() = default;
  // Tokens of requests that asked for them (SampleRequest::stream), in row order.
  virtual void token(const TokenEvent& e) {}
  // Every row of the request has stopped (a stop id or max_tokens).
  virtual void done(int32_t request, SampleResult&& r) = 0;
  // The request left before its end: cancelled (cancel()), or its prompt failed a check (`why`).
  virtual void failed(int32_t request, const std::string& why, bool cancelled) = 0;
  virtual void flush() {}
};

// The requests of one run; add() and cancel() may be called from any thread while it runs.
class SampleInbox {
 public:
  // Queues requests for the run (all or none); false once the run has ended (start another).
  bool add(std::vector<std::pair<int32_t, SampleRequest>>&& reqs);
  bool add(int32_t id, SampleRequest q);
  // Asks the run to drop request `id` at its next step (its rows leave, the others go on). Unknown
  // or finished ids are ignored.
  void cancel(int32_t id);
  // Refuses further adds (the run calls it when it returns, normally or not).
  void close();

  // Run side: moves out what arrived. With `idle` (nothing active) and nothing arrived, closes the
  // inbox and returns false: the run ends.
  bool take(std::vector<std::pair<int32_t, SampleRequest>>& adds, std::vector<int32_t>& cancels, bool idle);

 private:
  std::mutex mu_;
  std::vector<std::pair<int32_t, SampleRequest>> adds_;
  std::vector<int32_t> cancels_;
  bool closed_ = false;
};

}  // namespace vq
