#include "config_check.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "common.h"

namespace vq {

namespace {

void in_range(const char* field, int64_t v, int64_t lo, int64_t hi) {
  VQ_CHECK(v >= lo && v <= hi, "model config: " << field << " is " << v << "; expected an integer from " << lo << " to " << hi);
}

void positive(const char* field, float v) {
  VQ_CHECK(std::isfinite(v) && v > 0, "model config: " << field << " is " << v << "; expected a finite number > 0");
}

}  // namespace

int64_t check_model_config(const ModelConfig& cfg, const std::vector<std::string>& files, int max_seq) {
  const TextConfig& t = cfg.text;
  const VisionConfig& v = cfg.vision;
  in_range("vocab_size", t.vocab, 1, 1 << 24);
  in_range("hidden_size", t.hidden, 1, 1 << 16);
  in_range("intermediate_size", t.inter, 1, 1 << 18);
  in_range("num_hidden_layers", t.layers, 1, 1024);
  in_range("num_attention_heads", t.heads, 1, 1024);
  in_range("num_key_value_heads", t.kv_heads, 1, 1024);
  in_range("head_dim", t.head_dim, 1, 1 << 16);
  in_range("maximum sequence length", max_seq, 1, 1 << 22);
  positive("rms_norm_eps", t.eps);
  positive("rope_theta", t.theta);
  in_range("vision_config.depth", v.depth, 0, 1024);
  if (v.depth > 0) {
    in_range("vision_config.embed_dim", v.embed_dim, 1, 1 << 16);
    in_range("vision_config.num_heads", v.num_heads, 1, 1024);
    in_range("vision_config mlp hidden", v.mlp_hidden, 1, 1 << 18);
    in_range("vision_config.hidden_size", v.out_hidden, 1, 1 << 16);
    in_range("vision_config.in_channels", v.in_channels, 1, 16);
    in_range("vision_config.patch_size", v.patch_size, 1, 1024);
    in_range("vision_config.temporal_patch_size", v.temporal_patch_size, 1, 64);
    in_range("vision_config.spatial_merge_size", v.merge, 1, 64);
    positive("vision_config.rope_theta", v.theta);
  }
  // The layout of Model::Model (model_load.cc), in int64: every factor is bounded above, so no product overflows.
  const int64_t H = t.hidden, D = t.head_dim;
  int64_t n = 0;
  if (v.depth > 0) {
    const int64_t E = v.embed_dim, F = v.mlp_hidden, M = E * v.merge * v.merge;
    n += E * v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
    n += static_cast<int64_t>(v.depth) * (4 * E + (3 * E * E + 3 * E) + (E * E + E) + (E * F + F) + (F * E + E));
    n += 2 * E + (M * M + M) + (M * v.out_hidden + v.out_hidden);
  }
  n += static_cast<int64_t>(t.vocab) * H * (t.tied ? 1 : 2) + H;
  n += static_cast<int64_t>(t.layers) * (2 * H + (H * t.heads * D + t.heads * D) + 2 * (H * t.kv_heads * D + t.kv_heads * D) +
                                         t.heads * D * H + 3 * H * t.inter);
  int64_t bytes = 0;
  for (const auto& f : files) {
    struct stat st;
    VQ_CHECK(::stat(f.c_str(), &st) == 0, f << ": cannot read the weights: " << std::strerror(errno));
    VQ_CHECK(S_ISREG(st.st_mode), f << ": not a regular file; a safetensors file is expected");
    bytes += static_cast<int64_t>(st.st_size);
  }
  VQ_CHECK(n <= bytes / 2, "model config: describes " << n << " parameters (at least " << 2 * n << " bytes) but the weight files hold "
                                                      << bytes << " bytes: the config does not match the weights");
  return n;
}

}  // namespace vq
