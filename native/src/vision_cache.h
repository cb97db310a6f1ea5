// Merged vision features of processed images, kept between calls of one model (docs/engine.md, "Vision
// feature cache"). A GRPO step sees the same images three times with the same vision weights (the
// rollout, the reference forward, the policy forward); when nothing in the tower is trained, the
// features the rollout computed serve the later calls instead of running the tower again.
//
// An entry is found by the image's key (Image::key, minted by TypeScript once per processed pixel
// array; 0: never cached) and is valid for one version of the vision weights (Model::vision_version):
// any other version clears the cache first. A few pixel values spread over the image (PixelProbe) are
// kept with the entry and must match too, so a key reused for other pixels misses instead of returning
// another image's features. Bounded in bytes, least recently used first out.
#pragma once
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <unordered_map>
#include <utility>

namespace vq {

struct PixelProbe {
  static constexpr int kValues = 16;
  std::array<float, kValues> v{};
  int t = 0, h = 0, w = 0;
  bool video = false;
  size_t n = 0;

  template <typename Img>  // vq::Image (model.h)
  static PixelProbe of(const Img& im) {
    PixelProbe p;
    p.t = im.t;
    p.h = im.h;
    p.w = im.w;
    p.video = im.video;
    p.n = im.pixels.size();
    const float* d = im.pixels.data();
    for (int i = 0; i < kValues && p.n > 0; i++) p.v[i] = d[(p.n - 1) * static_cast<size_t>(i) / (kValues - 1)];
    return p;
  }
  bool same(const PixelProbe& o) const {
    return t == o.t && h == o.h && w == o.w && video == o.video && n == o.n &&
           std::memcmp(v.data(), o.v.data(), sizeof(float) * kValues) == 0;
  }
};

struct VisionCacheStats {
  uint64_t hits = 0, misses = 0;
  size_t entries = 0, bytes = 0, max_bytes = 0;
};

// Buf: the features of one image (rows t*h*w / merge², hidden wide): std::vector<float> on the CPU,
// a device array on the GPU. Movable.
template <typename Buf>
class VisionFeatureCache {
 public:
  explicit VisionFeatureCache(size_t max_bytes) : max_(max_bytes) {}

  // 0 turns the cache off (and empties it).
  void set_max_bytes(size_t b) {
    max_ = b;
    trim();
  }
  bool on() const { return max_ > 0; }

  // The features of `im` at weights version `ver`, or null (counted as a miss). The pointer stays valid
  // until the next put() or clear().
  template <typename Img>
  const Buf* find(const Img& im, uint64_t ver) {
    if (im.key == 0 || max_ == 0) return nullptr;
    sync(ver);
    auto it = map_.find(im.key);
    if (it == map_.end() || !it->second->probe.same(PixelProbe::of(im))) {
      if (it != map_.end()) erase(it);
      misses_++;
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, it->second);
    hits_++;
    return &it->second->buf;
  }

  // Keeps `buf` (bytes long) as the features of `im` at version `ver`.
  template <typename Img>
  void put(const Img& im, uint64_t ver, Buf&& buf, size_t bytes) {
    if (im.key == 0 || bytes > max_) return;
    sync(ver);
    auto it = map_.find(im.key);
    if (it != map_.end()) erase(it);
    lru_.push_front(Entry{im.key, PixelProbe::of(im), std::move(buf), bytes});
    map_[im.key] = lru_.begin();
    bytes_ += bytes;
    trim();
  }

  void clear() {
    lru_.clear();
    map_.clear();
    bytes_ = 0;
  }

  VisionCacheStats stats() const { return VisionCacheStats{hits_, misses_, map_.size(), bytes_, max_}; }

 private:
  struct Entry {
    uint64_t key;
    PixelProbe probe;
    Buf buf;
    size_t bytes;
  };
  using It = typename std::list<Entry>::iterator;
  size_t max_;
  size_t bytes_ = 0;
  uint64_t ver_ = 0;
  bool has_ver_ = false;
  uint64_t hits_ = 0, misses_ = 0;
  std::list<Entry> lru_;
  std::unordered_map<uint64_t, It> map_;

  void sync(uint64_t ver) {
    if (!has_ver_ || ver != ver_) clear();
    ver_ = ver;
    has_ver_ = true;
  }
  void erase(typename std::unordered_map<uint64_t, It>::iterator it) {
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    map_.erase(it);
  }
  void trim() {
    while (bytes_ > max_ && !lru_.empty()) erase(map_.find(lru_.back().key));
  }
};

// The bound when nothing sets it: VQALAB_VISION_CACHE_MIB from the environment, else 256 MiB (about
// 330 images of 256 tokens at hidden 1536 in bf16; a Qwen2-VL-2B GRPO step of 16 images holds 12 MiB).
inline size_t default_vision_cache_bytes() {
  const char* e = std::getenv("VQALAB_VISION_CACHE_MIB");
  if (e && *e) return static_cast<size_t>(std::strtoull(e, nullptr, 10)) << 20;
  return size_t{256} << 20;
}

}  // namespace vq
