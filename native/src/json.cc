#include "json.h"

#include <cctype>

#include <cstdio>
#include <cstdlib>

#include "common.h"

namespace vq {

const Json* Json::get(const std::string& key) const {
  for (const auto& kv : obj)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

namespace {

struct Parser {
  const std::string& s;
  const std::string& what;
  size_t i = 0;

  [[noreturn]] void bad(const char* msg) {
    VQ_FAIL(what << ": invalid JSON at byte " << i << ": " << msg);
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++;
  }
  bool lit(const char* w) {
    size_t n = 0;
    while (w[n]) n++;
    if (s.compare(i, n, w) == 0) {
      i += n;
      return true;
    }
    return false;
  }
  std::string string() {
    if (s[i] != '"') bad("expected a string");
    i++;
    std::string out;
    while (true) {
      if (i >= s.size()) bad("unterminated string");
      char c = s[i++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) bad("unterminated escape");
      char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (i + 4 > s.size()) bad("short \\u escape");
          unsigned cp = static_cast<unsigned>(std::strtoul(s.substr(i, 4).c_str(), nullptr, 16));
          i += 4;
          if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            unsigned lo = static_cast<unsigned>(std::strtoul(s.substr(i + 2, 4).c_str(), nullptr, 16));
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: bad("bad escape");
      }
    }
    return out;
  }
  Json value(int depth) {
    if (depth > 64) bad("nested too deeply");
    ws();
    if (i >= s.size()) bad("unexpected end");
    Json v;
    char c = s[i];
    if (c == '{') {
      v.kind = Json::Object;
      i++;
      ws();
      if (i < s.size() && s[i] == '}') {
        i++;
        return v;
      }
      while (true) {
        ws();
        std::string k = string();
        ws();
        if (i >= s.size() || s[i] != ':') bad("expected ':'");
        i++;
        v.obj.emplace_back(std::move(k), value(depth + 1));
        ws();
        if (i < s.size() && s[i] == ',') {
          i++;
          continue;
        }
        if (i < s.size() && s[i] == '}') {
          i++;
          break;
        }
        bad("expected ',' or '}'");
      }
    } else if (c == '[') {
      v.kind = Json::Array;
      i++;
      ws();
      if (i < s.size() && s[i] == ']') {
        i++;
        return v;
      }
      while (true) {
        v.arr.push_back(value(depth + 1));
        ws();
        if (i < s.size() && s[i] == ',') {
          i++;
          continue;
        }
        if (i < s.size() && s[i] == ']') {
          i++;
          break;
        }
        bad("expected ',' or ']'");
      }
    } else if (c == '"') {
      v.kind = Json::String;
      v.str = string();
    } else if (lit("true")) {
      v.kind = Json::Bool;
      v.b = true;
    } else if (lit("false")) {
      v.kind = Json::Bool;
    } else if (lit("null")) {
      v.kind = Json::Null;
    } else {
      // JSON's number grammar only (strtod alone would take hex, inf, nan, a leading '+' or zeros).
      size_t j = i;
      if (j < s.size() && s[j] == '-') j++;
      if (j < s.size() && s[j] == '0') {
        j++;
      } else if (j < s.size() && s[j] >= '1' && s[j] <= '9') {
        while (j < s.size() && s[j] >= '0' && s[j] <= '9') j++;
      } else {
        bad("unexpected character");
      }
      if (j < s.size() && s[j] == '.') {
        j++;
        if (!(j < s.size() && s[j] >= '0' && s[j] <= '9')) bad("expected a digit after '.'");
        while (j < s.size() && s[j] >= '0' && s[j] <= '9') j++;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < s.size() && (s[j] == '+' || s[j] == '-')) j++;
        if (!(j < s.size() && s[j] >= '0' && s[j] <= '9')) bad("expected a digit in the exponent");
        while (j < s.size() && s[j] >= '0' && s[j] <= '9') j++;
      }
      if (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '.')) bad("malformed number");
      const char* start = s.c_str() + i;
      char* end = nullptr;
      const std::string lexeme(start, j - i);
      v.num = std::strtod(lexeme.c_str(), &end);
      end = const_cast<char*>(start) + (j - i);
      v.kind = Json::Number;
      i += static_cast<size_t>(end - start);
    }
    return v;
  }
};

}  // namespace

Json Json::parse(const std::string& text, const std::string& what) {
  Parser p{text, what};
  Json v = p.value(0);
  p.ws();
  if (p.i != text.size()) p.bad("trailing characters");
  return v;
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + "\"";
}

}  // namespace vq
