// The CUDA ops: the same *_forward / *_backward pairs as native/src/ops/ops.h, in the same argument
// order (outputs, inputs, dims), on device pointers, for activations of type T = float or bf16.
//
// defines: embedding, rmsnorm, layernorm, linear (+bias, cuBLASLt), lora, rope (+ M-RoPE and 2D
// tables), attention over spans, swiglu, quick_gelu, gelu, logprob (+ entropy), adamw,
// sum_squares, all_finite, and the sampler's per-row pick; what only Qwen3-VL needs. One file per op family:
// ops_norm.cu, ops_linear.cu (+ LoRA), ops_rope.cu, ops_attention.cu (the tile path; the fused kernels are
// flash.cu), ops_activations.cu, ops_logprob.cu, ops_adamw.cu, ops_rows.cu (embedding, gathers, conversions),
// ops_sampling.cu, ops_qwen3.cu; shared device helpers in ops_common.cuh.
//
// Precision: T holds activations and the weights' working copy; every reduction and every GEMM
// accumulates in fp32; parameter gradients (dweight, dbias, dwte, dA, dB) are fp32; rstd, mean and
// lse are fp32. Backward passes accumulate (+=) into their gradient outputs, as on the CPU. Every op
// runs on cu::stream() and checks its launches.
#pragma once
#include <cstdint>

#include "cuda/cuda_common.h"
#include "cuda/cuda_options.h"
#include "ops/ops.h"

namespace vq {
namespace cu {

// ---- embedding ----
// out (T, C) = wte[ids[t]]; ids (T) on the device. X (the residual stream's type) may be fp32 with T bf16.
template <typename T, typename X>
void embedding_forward(X* out, const int32_t* ids, const T* wte, int64_t Tn, int64_t C);
// dwte (V, C) fp32 += dout rows by ids; ids < 0 skipped.
template <typename T> void embedding_backward(float* dwte, const T* dout, const int32_t* ids, int64_t Tn, int64_t C);

// ---- norms ----
// The input (and its gradient) may be the fp32 residual stream (X = float) while out/dout/weight are T.
// dinp_copy (optional): receives the updated dinp in T (the next GEMM's operand), in the same pass.
template <typename T, typename X>
void rmsnorm_forward(T* out, float* rstd, const X* inp, const T* weight, int64_t Tn, int64_t C, float eps);
// dinp (T, C) +=, dweight (C) fp32 += (either may be null).
template <typename T, typename X>
void rmsnorm_backward(X* dinp, float* dweight, const T* dout, const X* inp, const T* weight, const float* rstd,
                      int64_t Tn, int64_t C, T* dinp_copy = nullptr);
template <typename T, typename X>
void layernorm_forward(T* out, float* mean, float* rstd, const X* inp, const T* weight, const T* bias, int64_t Tn,
                       int64_t C, float eps);
template <typename T, typename X>
void layernorm_backward(X* dinp, float* dweight, float* dbias, const T* dout, const X* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t Tn, int64_t C, T* dinp_copy = nullptr);
// Fused residual add and norm over the fp32 residual stream: xout = xin + r (r may be null: xout = xin;
// xout may equal xin), then out = norm(xout). One pass instead of a residual add + norm (the engine has no
// separate residual op: the adds are fused here, or residual_add below).
template <typename T>
void residual_rmsnorm_forward(T* out, float* rstd, float* xout, const float* xin, const T* r, const T* weight,
                              int64_t Tn, int64_t C, float eps);
template <typename T>
void residual_layernorm_forward(T* out, float* mean, float* rstd, float* xout, const float* xin, const T* r,
                                const T* weight, const T* bias, int64_t Tn, int64_t C, float eps);

// ---- linear (cuBLASLt) ----
// out (T, OC) = inp (T, IC) @ weight (OC, IC)^T + bias (OC, may be null); accumulate: out +=.
template <typename T>
void linear_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t Tn, int64_t IC, int64_t OC,
                    bool accumulate = false);
// dinp (T, IC) +=; dweight (OC, IC) fp32 +=; dbias (OC) fp32 +=. Any may be null.
// accumulate_dinp = false: dinp is overwritten (saves zeroing it first).
template <typename T>
void linear_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int64_t Tn,
                     int64_t IC, int64_t OC, bool accumulate_dinp = true);

// ---- LoRA ----
// out (T, OC) += scale * (inp @ A^T) @ B^T; xa (T, R) = inp @ A^T (kept for backward). A (R, IC), B (OC, R).
template <typename T>
void lora_forward(T* out, T* xa, const T* inp, const T* A, const T* B, int64_t Tn, int64_t IC, int64_t OC, int64_t R,
                  float scale);
// dinp (T, IC) +=; dA (R, IC), dB (OC, R) fp32 += (may be null). dxa_scratch (T, R) of type T.
template <typename T>
void lora_backward(T* dinp, float* dA, float* dB, const T* dout, const T* inp, const T* xa, const T* A, const T* B,
                   int64_t Tn, int64_t IC, int64_t OC, int64_t R, float scale);

// ---- linear + LoRA with one rounding (bf16) ----
// The adapters as pairs of bf16 that carry their fp32 values (hi + lo: about 16 significant bits):
// Acat (2R, IC) = [A_hi; A_lo], Bcat (OC, 3R) = [B_hi | B_hi | B_lo], from fp32 A (R, IC), B (OC, R).
void lora_split(bf16* Acat, bf16* Bcat, const float* A, const float* B, int64_t IC, int64_t OC, int64_t R);
// out (T, OC) = bf16(inp @ W^T + bias + scale * (inp @ A^T) @ B^T) with a single rounding: the base
// product, x A^T (from A's hi + lo), the adapter product (x A^T as hi + lo against B's hi + lo) and their
// sum accumulate in fp32 (lora_forward in bf16 rounds x A^T, the adapters and out twice). bias may be null.
// Scratch: acc (T, OC) fp32, xa2 (T, 2R) fp32, xcat (T, 3R). xa (T, R), if not null, gets bf16(inp @ A^T).
void linear_lora_forward(bf16* out, bf16* xa, const bf16* inp, const bf16* W, const bf16* bias, const bf16* Acat,
                         const bf16* Bcat, int64_t Tn, int64_t IC, int64_t OC, int64_t R, float scale, float* acc,
                         float* xa2, bf16* xcat);

// ---- rotary ----
// out, inp (T, NH, D) (out may equal inp); cos, sin (T, D/2) fp32.
template <typename T>
void rope_forward(T* out, const T* inp, const float* cos, const float* sin, int64_t Tn, int64_t NH, int64_t D);
template <typename T>
void rope_backward(T* dinp, const T* dout, const float* cos, const float* sin, int64_t Tn, int64_t NH, int64_t D,
                   bool accumulate = true);
// Tables as on the CPU; pos (3, T), section (3), hpos, wpos (T) on the device; section is read on the host.
// interleaved: Qwen3-VL's frequency-to-axis map (ops/ops.h).
void rope_mrope_table(float* cos, float* sin, const int32_t* pos, const int32_t* section_host, int64_t Tn, int64_t D,
                      float theta, bool interleaved = false);
void rope_vision_table(float* cos, float* sin, const int32_t* hpos, const int32_t* wpos, int64_t Tn, int64_t D,
                       float theta);

// ---- attention over spans ----
// As on the CPU; spans are HOST memory (the op plans its tiles from them and uploads them itself).
// path (the model's CudaOptions::attention): bf16 at a head dim flash_supported() takes the fused kernels of
// flash.h unless path is gemm; everything else takes the cuBLASLt tile path: scores formed per tile of query
// rows over the tile's key range (fp32 scores, softmax in fp32, probabilities in T), so memory stays bounded
// and no masked tile is computed.
template <typename T>
void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const Span* spans, int64_t Tq,
                       int64_t Tk, int64_t NH, int64_t KVH, int64_t D, CudaAttention path = CudaAttention::fused);
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const float* lse, const Span* spans, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH,
                        int64_t D, CudaAttention path = CudaAttention::fused);
// The same with the spans already on the device too (spans_dev, Tq of them): the fused path reads them there
// and uploads nothing; the cuBLASLt path plans from the host's.
template <typename T>
void attention_forward_dev(T* out, float* lse, const T* q, const T* k, const T* v, const Span* spans_host,
                           const Span* spans_dev, int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D,
                           CudaAttention path);
template <typename T>
void attention_backward_dev(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                            const float* lse, const Span* spans_host, const Span* spans_dev, int64_t Tq, int64_t Tk,
                            int64_t NH, int64_t KVH, int64_t D, CudaAttention path);

// ---- activations ----
// Element-wise, 8 elements per thread with 16-byte accesses when the pointers allow. Backward passes
// accumulate (+=) unless accumulate is false (then they overwrite: no zeroing pass needed).
template <typename T> void swiglu_forward(T* out, const T* gate, const T* up, int64_t N);
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t N, bool accumulate = true);
template <typename T> void quick_gelu_forward(T* out, const T* inp, int64_t N);
template <typename T> void quick_gelu_backward(T* dinp, const T* dout, const T* inp, int64_t N, bool accumulate = true);
template <typename T> void gelu_forward(T* out, const T* inp, int64_t N);
template <typename T> void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t N, bool accumulate = true);
// gelu with the tanh approximation (Qwen3-VL's vision MLP: gelu_pytorch_tanh)
template <typename T> void gelu_tanh_forward(T* out, const T* inp, int64_t N);
template <typename T> void gelu_tanh_backward(T* dinp, const T* dout, const T* inp, int64_t N, bool accumulate = true);

// ---- log-probabilities ----
// logp, entropy, lse (R) fp32; logits (R, V); targets (R) on the device. Sums in fp32 per thread,
// combined in double.
template <typename T>
void logprob_forward(float* logp, float* entropy, float* lse, const T* logits, const int32_t* targets, int64_t R,
                     int64_t V);
// dlogits (R, V) = dlogp * (onehot - softmax) (written; may alias logits: computed in place).
template <typename T>
void logprob_backward(T* dlogits, const float* dlogp, const T* logits, const float* lse, const int32_t* targets,
                      int64_t R, int64_t V);

// ---- optimizer ----
double sum_squares(const float* x, int64_t n);
bool all_finite(const float* x, int64_t n);
// As the CPU's; when copy is given it receives the updated params in bf16 (the working copy).
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, bf16* copy = nullptr);
// The same with the moments stored in bf16 (the optimizer-state option that halves their memory);
// the arithmetic is fp32.
void adamw_update_bf16m(float* params, const float* grads, bf16* m, bf16* v, int64_t n, float lr, float beta1,
                        float beta2, float eps, float weight_decay, int64_t step, float grad_scale,
                        bf16* copy = nullptr);

// ---- conversions and small helpers ----
void to_bf16(bf16* out, const float* in, int64_t n);
template <typename T> void fill(T* out, float value, int64_t n);
// Gathers rows: out (n, C) = in[rows[i]] ; rows on the device. Types may differ (converted).
template <typename O, typename I> void gather_rows(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C);
// Scatter-add rows: out[rows[i]] += in (n, C), rows may repeat (one thread per column walks the rows).
template <typename T> void scatter_add_rows(T* out, const T* in, const int64_t* rows, int64_t n, int64_t C);
// Writes rows: out[rows[i]] = in (n, C). Types may differ (converted).
template <typename O, typename I> void scatter_rows(O* out, const I* in, const int64_t* rows, int64_t n, int64_t C);
// out (n) = in converted (fp32 <-> bf16, or a copy).
template <typename O, typename I> void convert(O* out, const I* in, int64_t n);
// qkv (N, 3, E) -> q, k, v (N, E) and back (the vision tower's fused projection).
template <typename T> void split_qkv(T* q, T* k, T* v, const T* qkv, int64_t N, int64_t E);
template <typename T> void join_qkv(T* qkv, const T* q, const T* k, const T* v, int64_t N, int64_t E);
// split_qkv, then rope_forward of q and of k with (cos, sin), in one pass (the vision tower's forward: q, k, v
// (N, NH, D), E = NH D): bf16 with D / 2 a multiple of 8 moves 16-byte chunks; anything else runs the three ops.
template <typename T>
void split_qkv_rope(T* q, T* k, T* v, const T* qkv, const float* cos, const float* sin, int64_t N, int64_t NH,
                    int64_t D);

// ---- sampling ----
// One token per row of logits (B, V): temperature 0 = argmax (lowest index on ties); otherwise an
// inverse-CDF draw over softmax(logits / temperature) in index order with u = uniform01(seed, g, t)
// (the CPU's counter-based hash). logprob: of the unfiltered temperature-1 distribution. top-k/top-p are
// done on the host. Per-row parameters on the device (several requests in one batch; CUDA-graph friendly):
// temps (B) fp32, seeds (B), gs (B) sample indices, ts (B) steps; tok, logprob (B) out (device).
template <typename T>
void sample_rows_multi(int32_t* tok, float* logprob, const T* logits, const float* temps, const uint64_t* seeds,
                       const int64_t* gs, const int64_t* ts, int64_t B, int64_t V);

// ---- Qwen3-VL (ops_qwen3.cu) ----
// xout (N) = xin + r: the fp32 residual stream plus a branch of type T (xout may equal xin).
template <typename T> void residual_add(float* xout, const float* xin, const T* r, int64_t N);
// DeepStack: x[rows[i]] (C) += feat[i] (C), rows distinct (the image rows), x fp32.
template <typename T> void add_rows(float* x, const T* feat, const int64_t* rows, int64_t n, int64_t C);
// Learned position embeddings interpolated to the grid: x[r] (E) += sum_k w[r, k] * pe[idx[r, k]], k < 4
// (idx, w (N, 4) on the device, from the host's bilinear weights).
template <typename T>
void pos_embed_forward(float* x, const T* pe, const int32_t* idx, const float* w, int64_t N, int64_t E);
// dpe (num_pos, E) fp32 += the same weights times dx (N, E) (atomics: rows share table entries).
void pos_embed_backward(float* dpe, const float* dx, const int32_t* idx, const float* w, int64_t N, int64_t E);

}  // namespace cu
}  // namespace vq
