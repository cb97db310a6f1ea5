// safetensors files: read (F32, F16, BF16, F64 -> fp32) and write (F32), in C++.
// Layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// then the data. Writes are atomic: a temporary file beside the target, then rename.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vq {

struct StTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // offsets in the data section
};

class SafetensorsFile {
 public:
  // Reads and checks the header (dtypes known, offsets inside the file, sizes matching shapes).
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }
  const StTensor* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Reads one tensor converted to fp32 into dst (numel floats).
  void read_f32(const StTensor& t, float* dst) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

struct StWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};

// Writes F32 tensors (sorted by name, as the reference implementation does) and string metadata.
void write_safetensors(const std::string& path, std::vector<StWrite> tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace vq
