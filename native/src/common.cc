#include "common.h"

#include <cstring>

namespace vq {

void fail_at(const char* file, int line, const std::string& msg) {
  // Report paths from native/ on, not the builder's absolute path.
  std::ostringstream os;
  const char* f = std::strstr(file, "native/");
  const char* s = std::strstr(file, "src/");
  os << msg << " [";
  if (f) os << f;
  else if (s) os << "native/" << s;
  else os << file;
  os << ":" << line << "]";
  throw Error(os.str());
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); i++) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

}  // namespace vq
