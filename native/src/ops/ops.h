// The engine's ops: free *_forward / *_backward pairs in llm.c's manner.
//
// Argument order: outputs, then inputs, then dims (then scalars). Every pointer has a shape comment.
// Forward passes return what their backward needs (rstd, mean, lse) through extra outputs. Backward
// passes ACCUMULATE into their gradient outputs (+=), so the caller zeroes them once and several uses
// of one tensor (a tied head, the shared prefix's keys) sum up exactly; a null gradient output is
// skipped. All tensors are fp32, row-major, contiguous unless a stride is given.
//
// This file is the contract the CUDA backend (issue 10) matches op by op.
#pragma once
#include <cstdint>

namespace vq {

// ---- embedding ---------------------------------------------------------------------------------
// out (T, C) = wte[ids[t]]; ids (T) must be in [0, V) (checked by the caller).
void embedding_forward(float* out, const int32_t* ids, const float* wte, int64_t T, int64_t C);
// dwte (V, C) += dout rows scattered by ids; rows with ids[t] < 0 are skipped (image positions).
void embedding_backward(float* dwte, const float* dout, const int32_t* ids, int64_t T, int64_t C);

// ---- normalisation -----------------------------------------------------------------------------
// RMSNorm (Qwen2): out = x * rsqrt(mean(x^2) + eps) * weight. out, inp (T, C); rstd (T); weight (C).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t T, int64_t C, float eps);
// dinp (T, C) +=, dweight (C) += (may be null).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t T, int64_t C);

// LayerNorm (biased variance, as torch): out, inp (T, C); mean, rstd (T); weight, bias (C).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int64_t T, int64_t C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t T, int64_t C);

// ---- linear ------------------------------------------------------------------------------------
// out (T, OC) = inp (T, IC) @ weight (OC, IC)^T + bias (OC, may be null). If accumulate, out +=.
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t T, int64_t IC,
                    int64_t OC, bool accumulate = false);
// The same with the weight packed beforehand by sgemm_pack_b (CPU only; bitwise equal to linear_forward).
struct PackedB;
void linear_forward_packed(float* out, const float* inp, const PackedB& weight, const float* bias, int64_t T, int64_t IC,
                           int64_t OC);
// dinp (T, IC) += dout @ weight; dweight (OC, IC) += dout^T @ inp; dbias (OC) += sum_t dout. Any may be null.
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t T, int64_t IC, int64_t OC);

// ---- LoRA --------------------------------------------------------------------------------------
// out (T, OC) += scale * (inp (T, IC) @ A (R, IC)^T) @ B (OC, R)^T; xa (T, R) keeps inp @ A^T for backward.
void lora_forward(float* out, float* xa, const float* inp, const float* A, const float* B, int64_t T, int64_t IC,
                  int64_t OC, int64_t R, float scale);
// dinp (T, IC) +=, dA (R, IC) +=, dB (OC, R) += (dA/dB may be null: adapters frozen).
void lora_backward(float* dinp, float* dA, float* dB, const float* dout, const float* inp, const float* xa,
                   const float* A, const float* B, int64_t T, int64_t IC, int64_t OC, int64_t R, float scale);

// ---- rotary position embedding -----------------------------------------------------------------
// Rotates pairs (j, j + D/2) of every head by the row's angle table (the rotate_half convention):
//   out[j] = x[j] cos - x[j+D/2] sin,  out[j+D/2] = x[j+D/2] cos + x[j] sin,  j < D/2.
// out, inp (T, NH, D) (out may equal inp); cos, sin (T, D/2).
void rope_forward(float* out, const float* inp, const float* cos, const float* sin, int64_t T, int64_t NH, int64_t D);
// dinp (T, NH, D) += the inverse rotation of dout.
void rope_backward(float* dinp, const float* dout, const float* cos, const float* sin, int64_t T, int64_t NH,
                   int64_t D);
// M-RoPE tables (text): pos (3, T) temporal/height/width positions; section (3) sums to D/2: frequency j
// uses axis a of the section that holds j. cos, sin (T, D/2). Computed in fp32 as transformers does.
// interleaved (Qwen3-VL): frequency j uses h when j % 3 == 1 and j < 3·section[1], w when j % 3 == 2
// and j < 3·section[2], else t (transformers' apply_interleaved_mrope).
void rope_mrope_table(float* cos, float* sin, const int32_t* pos, const int32_t* section, int64_t T, int64_t D,
                      float theta, bool interleaved = false);
// 2D rotary tables (vision): hpos, wpos (T); the first D/4 frequencies rotate by height, the next D/4
// by width, inv_freq[i] = theta^(-4i/D). cos, sin (T, D/2).
void rope_vision_table(float* cos, float* sin, const int32_t* hpos, const int32_t* wpos, int64_t T, int64_t D,
                       float theta);

// ---- attention ---------------------------------------------------------------------------------
// Which keys a query row sees: [a0, a1) and [b0, b1), rows of the key/value arrays. Causal text:
// {0,0, 0,i+1}; a completion sharing a prompt of P rows: {0,P, start,i+1}; an image: {0,0, s,e}.
struct Span {
  int32_t a0, a1, b0, b1;
};
// Grouped-query softmax attention, scale = 1/sqrt(D); query head h reads kv head h / (NH / KVH).
// out (Tq, NH, D); lse (Tq, NH) log-sum-exp of the scaled scores (for backward);
// q (Tq, NH, D); k, v (Tk, KVH, D); spans (Tq).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const Span* spans,
                       int64_t Tq, int64_t Tk, int64_t NH, int64_t KVH, int64_t D);
// dq (Tq, NH, D) +=, dk, dv (Tk, KVH, D) += (every query that saw a key adds to it).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const Span* spans, int64_t Tq,
                        int64_t Tk, int64_t NH, int64_t KVH, int64_t D);

// ---- activations -------------------------------------------------------------------------------
// SwiGLU: out = silu(gate) * up. out, gate, up (N).
void swiglu_forward(float* out, const float* gate, const float* up, int64_t N);
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t N);
// quick_gelu: x * sigmoid(1.702 x) (the vision MLP). out, inp (N).
void quick_gelu_forward(float* out, const float* inp, int64_t N);
void quick_gelu_backward(float* dinp, const float* dout, const float* inp, int64_t N);
// gelu (exact, erf): the patch merger's MLP. out, inp (N).
void gelu_forward(float* out, const float* inp, int64_t N);
void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t N);

// gelu, tanh approximation (Qwen3-VL's vision MLP, "gelu_pytorch_tanh"). out, inp (N).
void gelu_tanh_forward(float* out, const float* inp, int64_t N);
void gelu_tanh_backward(float* dinp, const float* dout, const float* inp, int64_t N);

// out (N) = a + b (residual connections; out may alias a).
void residual_forward(float* out, const float* a, const float* b, int64_t N);

// ---- log-probabilities -------------------------------------------------------------------------
// logp (R) = log_softmax(logits)[target]; entropy (R) of softmax(logits); lse (R) log-sum-exp (for
// backward). logits (R, V); targets (R) in [0, V).
void logprob_forward(float* logp, float* entropy, float* lse, const float* logits, const int32_t* targets, int64_t R,
                     int64_t V);
// dlogits (R, V) = dlogp * (onehot(target) - softmax(logits)) (written, not accumulated).
void logprob_backward(float* dlogits, const float* dlogp, const float* logits, const float* lse,
                      const int32_t* targets, int64_t R, int64_t V);

// ---- optimizer ---------------------------------------------------------------------------------
// Sum of squares in double (for the global gradient norm).
double sum_squares(const float* x, int64_t n);
// True when every element is finite.
bool all_finite(const float* x, int64_t n);
// AdamW as torch.optim.AdamW (decoupled decay): p *= 1 - lr*wd; m, v moments; p -= lr/bc1 * m/(sqrt(v)/sqrt(bc2)+eps).
// grad is multiplied by grad_scale first (clipping). params, grads, m, v (n); step >= 1.
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale);

}  // namespace vq
