// A small JSON reader and writer, enough for safetensors headers (objects, arrays, strings, numbers).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace vq {

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double num = 0.0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;  // in file order

  const Json* get(const std::string& key) const;
  // Parses `text`; throws vq::Error naming `what` (e.g. a file) and the byte offset on bad input.
  static Json parse(const std::string& text, const std::string& what);
};

// Writes a JSON string literal (quotes and escapes).
std::string json_quote(const std::string& s);

}  // namespace vq
