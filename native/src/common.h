// Shared helpers of the native engine: errors and check macros.
//
// Nothing here exits the process: a failed check throws vq::Error, which the N-API layer turns into a
// JavaScript Error (the JS stack is attached there). Internal checks carry file:line so a report from a
// user points at the line; messages meant for users (bad checkpoints, bad inputs) are written to read
// on their own, and the location is appended in brackets.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace vq {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_at(const char* file, int line, const std::string& msg);

// VQ_CHECK(cond, stream-expr): throws vq::Error("<message> [native/src/file.cc:123]") when cond is false.
#define VQ_CHECK(cond, msg)                                          \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::ostringstream vq_check_os_;                               \
      vq_check_os_ << msg;                                           \
      ::vq::fail_at(__FILE__, __LINE__, vq_check_os_.str());         \
    }                                                                \
  } while (0)

#define VQ_FAIL(msg) VQ_CHECK(false, msg)

// "[2, 3, 4]" for messages.
std::string shape_str(const std::vector<int64_t>& shape);

inline int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace vq
