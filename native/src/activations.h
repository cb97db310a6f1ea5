// Saved activations of one packed request (model.cc, sampler.cc): what backward needs, by op.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace vq {

struct VisionBlockActs {
  std::vector<float> x, ln1, mean1, rstd1, q, k, v, att, lse, xmid, ln2, mean2, rstd2, fc1, act;
  std::vector<float> up;  // Qwen2.5-VL's gated MLP: fc1 holds gate_proj's output, act = silu(fc1) * up
};

struct TextLayerActs {
  std::vector<float> x, h1, rstd1, q, k, v, att, lse, xmid, h2, rstd2, gate, up, act;
  std::vector<float> qraw, kraw, qrstd, krstd;  // Qwen3-VL: q, k before their RMSNorm (T, heads, D), rstd (T, heads)
};

// One patch merger (model.cc merger_forward): norm, then groups of merge^2 rows -> fc1, gelu, fc2.
struct MergerActs {
  std::vector<float> x;                   // (N, E) the input (kept for the norm's backward)
  std::vector<float> ln, mean, rstd;      // normed (N, E); mean, rstd per norm row
  std::vector<float> h, hact, out;        // fc1 (Nm, M), gelu (Nm, M), fc2 (Nm, H)
};

struct Activations {
  // vision tower (N patches of every image of the prompt)
  int64_t N = 0;
  std::vector<float> patches;      // (N, patch_dim)
  std::vector<float> vcos, vsin;   // (N, vhd/2)
  std::vector<Span> vspans;        // (N) each frame attends to itself
  std::vector<Span> wspans;        // (N) Qwen2.5-VL: each window attends to itself (window order)
  std::vector<VisionBlockActs> vblocks;
  std::vector<float> vxf;                               // (N, E) the merger's input
  std::vector<float> mln, mmean, mrstd, m0, m0act;      // merger
  std::vector<float> img;                               // (N / merge^2, H) image embeddings
  // Qwen2.5-VL windows: the tower runs on rows permuted into window order; unit u of the window order
  // (merge^2 consecutive rows) is unit win[u] of the processor's order. img is in the processor's order.
  std::vector<int64_t> win;
  // Qwen3-VL
  std::vector<int32_t> pidx;                            // (N, 4) position-embedding rows interpolated
  std::vector<float> pw;                                // (N, 4) their weights
  std::vector<MergerActs> ds;                           // DeepStack mergers, in the order added to layers 0, 1, ...
  std::vector<int> ds_block;                            // the vision block each of ds[] reads
  std::vector<int> ds_merger;                           // the DeepStack merger each of ds[] uses
  std::vector<std::vector<float>> dds;                  // gradients of ds[k].out (text_backward fills them)
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
