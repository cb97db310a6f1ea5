#include "safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common.h"
#include "json.h"

namespace vq {

namespace {

int dtype_size(const std::string& d) {
  if (d == "F32") return 4;
  if (d == "F16" || d == "BF16") return 2;
  if (d == "F64") return 8;
  return 0;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        exp--;
      }
      mant &= 0x3FF;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void pread_all(int fd, void* dst, uint64_t n, uint64_t off, const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n > (1u << 30) ? (1u << 30) : n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    VQ_CHECK(r > 0, path << ": read failed at offset " << off << ": " << (r == 0 ? "unexpected end of file" : std::strerror(errno)));
    p += r;
    n -= static_cast<uint64_t>(r);
    off += static_cast<uint64_t>(r);
  }
}

void write_all(int fd, const void* src, uint64_t n, const std::string& path) {
  const char* p = static_cast<const char*>(src);
  while (n > 0) {
    const ssize_t r = ::write(fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (r < 0 && errno == EINTR) continue;
    VQ_CHECK(r > 0, path << ": write failed: " << std::strerror(errno));
    p += r;
    n -= static_cast<uint64_t>(r);
  }
}

// Writes chunks produced by `emit` to a temporary file beside `path`, then renames it over `path`.
template <typename F>
void atomic_write(const std::string& path, F emit) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  VQ_CHECK(fd >= 0, path << ": cannot create " << tmp << ": " << std::strerror(errno));
  try {
    emit([&](const void* p, uint64_t n) { write_all(fd, p, n, tmp); });
    VQ_CHECK(::fsync(fd) == 0, path << ": fsync failed: " << std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    VQ_FAIL(path << ": cannot rename " << tmp << " into place: " << std::strerror(e));
  }
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; anything but a regular file is refused.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  VQ_CHECK(fd_ >= 0, path << ": cannot open: " << std::strerror(errno));
  try {
    struct stat st;
    VQ_CHECK(::fstat(fd_, &st) == 0, path << ": cannot stat: " << std::strerror(errno));
    VQ_CHECK(S_ISREG(st.st_mode), path << ": not a regular file (" << (S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a folder" : "a special file")
                                       << "); a safetensors file is expected");
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    VQ_CHECK(size >= 8, path << ": not a safetensors file (" << size << " bytes)");
    uint8_t lenb[8];
    pread_all(fd_, lenb, 8, 0, path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | lenb[i];
    VQ_CHECK(n <= size - 8 && n <= (100u << 20), path << ": not a safetensors file (header length " << n << ")");
    std::string header(n, '\0');
    pread_all(fd_, &header[0], n, 8, path);
    data_start_ = 8 + n;
    const Json j = Json::parse(header, path + " (safetensors header)");
    VQ_CHECK(j.kind == Json::Object, path << ": safetensors header is not a JSON object");
    for (const auto& kv : j.obj) {
      if (kv.first == "__metadata__") {
        for (const auto& m : kv.second.obj)
          if (m.second.kind == Json::String) metadata_[m.first] = m.second.str;
        continue;
      }
      StTensor t;
      t.name = kv.first;
      const Json* dt = kv.second.get("dtype");
      const Json* sh = kv.second.get("shape");
      const Json* off = kv.second.get("data_offsets");
      VQ_CHECK(dt && dt->kind == Json::String && sh && sh->kind == Json::Array && off && off->kind == Json::Array &&
                   off->arr.size() == 2,
               path << ": tensor " << t.name << " has a malformed header entry");
      t.dtype = dt->str;
      // Shapes and offsets: non-negative integers small enough that sizes cannot overflow.
      const auto whole = [&](const Json& d, const char* what) -> uint64_t {
        VQ_CHECK(d.kind == Json::Number && d.num >= 0 && d.num <= 9007199254740992.0 && d.num == static_cast<double>(static_cast<uint64_t>(d.num)),
                 path << ": tensor " << t.name << ": " << what << " must hold non-negative integers");
        return static_cast<uint64_t>(d.num);
      };
      double elems = 1;
      for (const auto& d : sh->arr) {
        t.shape.push_back(static_cast<int64_t>(whole(d, "shape")));
        elems *= static_cast<double>(t.shape.back());
      }
      VQ_CHECK(elems <= static_cast<double>(size), path << ": tensor " << t.name << " has shape " << shape_str(t.shape)
                                                             << ", more elements than the file (" << size << " bytes) can hold");
      t.begin = whole(off->arr[0], "data_offsets");
      t.end = whole(off->arr[1], "data_offsets");
      const int es = dtype_size(t.dtype);
      if (es > 0) {
        VQ_CHECK(t.end >= t.begin && t.end - t.begin == static_cast<uint64_t>(numel(t.shape)) * es,
                 path << ": tensor " << t.name << " has " << (t.end - t.begin) << " bytes but shape "
                      << shape_str(t.shape) << " of " << t.dtype << " needs " << numel(t.shape) * es);
        VQ_CHECK(data_start_ + t.end <= size, path << ": tensor " << t.name << " lies past the end of the file (truncated?)");
      }
      index_[t.name] = tensors_.size();
      tensors_.push_back(std::move(t));
    }
    // Tensors must not overlap (a tensor read would see another's bytes).
    std::vector<const StTensor*> by_begin;
    for (const auto& t : tensors_)
      if (t.end > t.begin) by_begin.push_back(&t);
    std::sort(by_begin.begin(), by_begin.end(), [](const StTensor* a, const StTensor* b) { return a->begin < b->begin; });
    for (size_t i = 1; i < by_begin.size(); i++)
      VQ_CHECK(by_begin[i]->begin >= by_begin[i - 1]->end,
               path << ": tensors " << by_begin[i - 1]->name << " (bytes " << by_begin[i - 1]->begin << " to " << by_begin[i - 1]->end
                    << ") and " << by_begin[i]->name << " (bytes " << by_begin[i]->begin << " to " << by_begin[i]->end
                    << ") overlap in data_offsets");
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

const StTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::read_f32(const StTensor& t, float* dst) const {
  const int64_t n = numel(t.shape);
  const int es = dtype_size(t.dtype);
  VQ_CHECK(es > 0, path_ << ": tensor " << t.name << " has dtype " << t.dtype << "; supported: F32, F16, BF16, F64");
  if (t.dtype == "F32") {
    pread_all(fd_, dst, static_cast<uint64_t>(n) * 4, data_start_ + t.begin, path_);
    return;
  }
  std::vector<uint8_t> raw(static_cast<size_t>(n) * es);
  pread_all(fd_, raw.data(), raw.size(), data_start_ + t.begin, path_);
  if (t.dtype == "BF16") {
    for (int64_t i = 0; i < n; i++) {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(dst + i, &bits, 4);
    }
  } else if (t.dtype == "F16") {
    for (int64_t i = 0; i < n; i++) {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      dst[i] = half_to_float(h);
    }
  } else {  // F64
    for (int64_t i = 0; i < n; i++) {
      double d;
      std::memcpy(&d, raw.data() + 8 * i, 8);
      dst[i] = static_cast<float>(d);
    }
  }
}

void write_safetensors(const std::string& path, std::vector<StWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(), [](const StWrite& a, const StWrite& b) { return a.name < b.name; });
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool f2 = true;
    for (const auto& kv : metadata) {
      h += (f2 ? "" : ",") + json_quote(kv.first) + ":" + json_quote(kv.second);
      f2 = false;
    }
    h += "}";
    first = false;
  }
  uint64_t off = 0;
  for (const auto& t : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(numel(t.shape)) * 4;
    h += (first ? "" : ",") + json_quote(t.name) + ":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); i++) h += (i ? "," : "") + std::to_string(t.shape[i]);
    h += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + bytes) + "]}";
    off += bytes;
    first = false;
  }
  h += "}";
  while ((h.size() + 8) % 8 != 0) h += ' ';  // align the data section to 8 bytes
  atomic_write(path, [&](auto write) {
    uint8_t lenb[8];
    uint64_t n = h.size();
    for (int i = 0; i < 8; i++) lenb[i] = static_cast<uint8_t>(n >> (8 * i));
    write(lenb, 8);
    write(h.data(), h.size());
    for (const auto& t : tensors) write(t.data, static_cast<uint64_t>(numel(t.shape)) * 4);
  });
}

}  // namespace vq
