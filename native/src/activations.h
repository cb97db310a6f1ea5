// Saved activations of one packed request (model.cc, sampler.cc): what backward needs, by op.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace vq {

struct VisionBlockActs {
  std::vector<float> x, ln1, mean1, rstd1, q, k, v, att, lse, xmid, ln2, mean2, rstd2, fc1, act;
};

struct TextLayerActs {
  std::vector<float> x, h1, rstd1, q, k, v, att, lse, xmid, h2, rstd2, gate, up, act;
};

struct Activations {
  // vision tower (N patches of every image of the prompt)
  int64_t N = 0;
  std::vector<float> patches;      // (N, patch_dim)
  std::vector<float> vcos, vsin;   // (N, vhd/2)
  std::vector<Span> vspans;        // (N) each frame attends to itself
  std::vector<VisionBlockActs> vblocks;
  std::vector<float> vxf;                               // (N, E) the merger's input
  std::vector<float> mln, mmean, mrstd, m0, m0act;      // merger
  std::vector<float> img;                               // (N / merge^2, H) image embeddings
  // language model (T packed rows)
  int64_t T = 0;
  std::vector<int32_t> ids;        // (T), -1 at image rows (for the embedding backward)
  std::vector<int64_t> img_rows;   // rows that hold image embeddings, in order
  std::vector<float> cos, sin;     // (T, D/2)
  std::vector<Span> spans;         // (T)
  std::vector<TextLayerActs> layers;
  std::vector<float> xf, hf, rstdf;  // final residual (T, H), normed (T, H), rstd (T)
  // head rows: completion g's token t is predicted from row (t ? start_g + t - 1 : Lp - 1)
  std::vector<int64_t> head_rows;  // (R)
  std::vector<int32_t> targets;    // (R)
  std::vector<float> hrows, logits, lse;  // (R, H), (R, V), (R)
  std::vector<int64_t> comp_off, comp_len;  // per completion: first head row, token count
};

}  // namespace vq
