/**
 * onnx/embed_tokens.onnx and onnx/decoder_model_merged.onnx for the three families, computing what
 * native/src/model.cc `text_forward` computes:
 *
 * - embed_tokens: input_ids [batch, seq] int64 → inputs_embeds [batch, seq, W].
 * - decoder_model_merged: inputs_embeds [batch, seq, W], attention_mask [batch, total_seq] int64,
 *   position_ids [3, batch, seq] int64 (M-RoPE; transformers.js's get_rope_index),
 *   past_key_values.{i}.key/value [batch, kv_heads, past_seq, head_dim], num_logits_to_keep (scalar
 *   int64: 0 = every position, k = the last k) → logits [batch, kept, vocab],
 *   present.{i}.key/value [batch, kv_heads, total_seq, head_dim].
 *   Masking: key j is seen by query i when j ≤ past_seq + i and attention_mask[b, j] = 1.
 *
 * W = hidden · (1 + K), K the DeepStack features of Qwen3-VL (0 for the others): a token's embedding
 * is followed by K feature slots, zero for text tokens (embed_tokens pads them) and filled with the
 * vision encoder's DeepStack features at image tokens (the vision encoder's rows have the same width,
 * so transformers.js's row copy of image features into inputs_embeds carries them). The decoder adds
 * slot k to the hidden states after layer k (docs/export.md, "DeepStack").
 *
 * Family differences: q/k/v biases (Qwen2-VL, Qwen2.5-VL) or per-head RMSNorm of q and k before the
 * rotary embedding (Qwen3-VL); M-RoPE frequencies in one block per axis or interleaved t, h, w (Qwen3-VL).
 */
import type { EngineConfig } from '../engine/config.js';
import { Builder, invFreq, NEG, type ExportDtype, type WeightSource } from './builder.js';
import { Graph, type ExternalSink } from './graph.js';
import { DataType } from './onnx-schema.js';
import { deepstackCount } from './vision.js';

/** Which position axis (0 t, 1 h, 2 w) drives rotary frequency j < head_dim / 2 (native/src/ops/rope.cc). */
export function mropeAxis(cfg: EngineConfig, j: number): 0 | 1 | 2 {
  const [s0, s1, s2] = cfg.mropeSection;
  if (cfg.mropeInterleaved) return j % 3 === 1 && j < 3 * s1 ? 1 : j % 3 === 2 && j < 3 * s2 ? 2 : 0;
  return j < s0 ? 0 : j < s0 + s1 ? 1 : 2;
}

/** onnx/embed_tokens.onnx */
export function buildEmbedTokens(
  cfg: EngineConfig,
  w: WeightSource,
  dtype: ExportDtype,
  external?: ExternalSink,
): Graph {
  const g = new Graph('embed_tokens', external);
  const b = new Builder(g, w, dtype);
  const ids = g.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const e = b.embedding(ids, 'model.embed_tokens.weight', cfg.vocabSize, cfg.hiddenSize);
  const K = deepstackCount(cfg);
  // DeepStack slots: zeros after each token's embedding (image tokens get theirs from the vision encoder)
  if (K > 0) g.op('Pad', [e, g.i64([0, 0, 0, 0, 0, K * cfg.hiddenSize])], { mode: 'constant' });
  g.renameLast('inputs_embeds');
  g.output('inputs_embeds', DataType.FLOAT, ['batch_size', 'sequence_length', cfg.hiddenSize * (1 + K)]);
  return g;
}

/** onnx/decoder_model_merged.onnx */
export function buildDecoder(cfg: EngineConfig, w: WeightSource, dtype: ExportDtype, external?: ExternalSink): Graph {
  const g = new Graph('decoder_model_merged', external);
  const b = new Builder(g, w, dtype);
  const H = cfg.hiddenSize,
    NH = cfg.numHeads,
    KVH = cfg.numKvHeads,
    D = cfg.headDim,
    I = cfg.intermediateSize,
    V = cfg.vocabSize;
  const rep = NH / KVH;
  const K = deepstackCount(cfg);
  const bias = cfg.attentionBias !== false;
  const embeds = g.input('inputs_embeds', DataType.FLOAT, ['batch_size', 'sequence_length', H * (1 + K)]);
  const mask = g.input('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']);
  const posIds = g.input('position_ids', DataType.INT64, [3, 'batch_size', 'sequence_length']);
  const past: [string, string][] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    past.push([
      g.input(`past_key_values.${i}.key`, DataType.FLOAT, ['batch_size', KVH, 'past_sequence_length', D]),
      g.input(`past_key_values.${i}.value`, DataType.FLOAT, ['batch_size', KVH, 'past_sequence_length', D]),
    ]);
  }
  const keep = g.input('num_logits_to_keep', DataType.INT64, []);
  g.output('logits', DataType.FLOAT, ['batch_size', 'logits_length', V]);
  for (let i = 0; i < cfg.numLayers; i++) {
    g.output(`present.${i}.key`, DataType.FLOAT, ['batch_size', KVH, 'total_sequence_length', D]);
    g.output(`present.${i}.value`, DataType.FLOAT, ['batch_size', KVH, 'total_sequence_length', D]);
  }

  // M-RoPE table: angle[b, s, j] = position_ids[axis(j), b, s] * inv[j]
  const half = D / 2;
  const inv = invFreq(cfg.ropeTheta, half, D);
  const sel = new Float32Array(3 * half);
  for (let j = 0; j < half; j++) sel[mropeAxis(cfg, j) * half + j] = 1;
  const posF = g.op('Unsqueeze', [g.op('Cast', [posIds], { to: DataType.FLOAT }), g.i64([-1])]); // [3, B, S, 1]
  const angAll = g.op('Mul', [posF, g.f32(inv, [1, 1, 1, half])]); // [3, B, S, half]
  const angles = g.op('ReduceSum', [g.op('Mul', [angAll, g.f32(sel, [3, 1, 1, half])]), g.i64([0])], { keepdims: 0 }); // [B, S, half]
  const full = (x: string) => g.op('Unsqueeze', [g.op('Concat', [x, x], { axis: -1 }), g.i64([2])]); // [B, S, 1, D]
  const cos = full(g.op('Cos', [angles])),
    sin = full(g.op('Sin', [angles]));

  // mask [B, 1, S, T]: causal over the whole (past + new) sequence, and attention_mask
  const S = g.op('Gather', [g.op('Shape', [embeds]), g.i64([1], [])]);
  const T = g.op('Gather', [g.op('Shape', [mask]), g.i64([1], [])]);
  const P = g.op('Sub', [T, S]);
  const kIdx = g.op('Unsqueeze', [g.op('Range', [g.i64([0], []), T, g.i64([1], [])]), g.i64([0])]); // [1, T]
  const qIdx = g.op('Unsqueeze', [g.op('Range', [P, T, g.i64([1], [])]), g.i64([1])]); // [S, 1]
  const causal = g.op('LessOrEqual', [kIdx, qIdx]); // [S, T]
  const pad = g.op('Unsqueeze', [g.op('Cast', [mask], { to: DataType.BOOL }), g.i64([1, 2])]); // [B, 1, 1, T]
  const allowed = g.op('And', [causal, pad]); // [B, 1, S, T]
  const scale = g.f32([1 / Math.sqrt(D)], []);

  // inputs_embeds = [embedding | DeepStack slot 0 | … | slot K-1]
  let x = embeds;
  let slots: string[] = [];
  if (K > 0) {
    const parts = g.node('Split', [embeds, g.i64(new Array(K + 1).fill(H))], { axis: -1 }, K + 1);
    x = parts[0]!;
    slots = parts.slice(1);
  }
  for (let i = 0; i < cfg.numLayers; i++) {
    const pre = `model.layers.${i}.`;
    const h = b.rmsnorm(x, `${pre}input_layernorm.weight`, H, cfg.rmsNormEps);
    const heads = (y: string, n: number) => g.op('Reshape', [y, g.i64([0, 0, n, D])]); // [B, S, n, D]
    // Qwen3-VL: RMSNorm over each head's D values of q and k, before the rotary embedding
    const qkNorm = (y: string, which: 'q' | 'k') =>
      cfg.qkNorm ? b.rmsnorm(y, `${pre}self_attn.${which}_norm.weight`, D, cfg.rmsNormEps) : y;
    const q = g.op(
      'Transpose',
      [b.rope(qkNorm(heads(b.linear(h, `${pre}self_attn.q_proj`, H, NH * D, bias), NH), 'q'), cos, sin, half)],
      { perm: [0, 2, 1, 3] },
    );
    const kNew = g.op(
      'Transpose',
      [b.rope(qkNorm(heads(b.linear(h, `${pre}self_attn.k_proj`, H, KVH * D, bias), KVH), 'k'), cos, sin, half)],
      { perm: [0, 2, 1, 3] },
    );
    const vNew = g.op('Transpose', [heads(b.linear(h, `${pre}self_attn.v_proj`, H, KVH * D, bias), KVH)], {
      perm: [0, 2, 1, 3],
    });
    const k = g.op('Concat', [past[i]![0], kNew], { axis: 2 }, `present.${i}.key`); // [B, KVH, T, D]
    const v = g.op('Concat', [past[i]![1], vNew], { axis: 2 }, `present.${i}.value`);
    const expand = (y: string) =>
      rep === 1
        ? y
        : g.op('Reshape', [
            g.op('Tile', [g.op('Unsqueeze', [y, g.i64([2])]), g.i64([1, 1, rep, 1, 1])]),
            g.i64([0, NH, -1, D]),
          ]);
    const kk = expand(k),
      vv = expand(v);
    const scores = g.op('Mul', [g.op('MatMul', [q, g.op('Transpose', [kk], { perm: [0, 1, 3, 2] })]), scale]); // [B, NH, S, T]
    const probs = g.op('Softmax', [g.op('Where', [allowed, scores, g.f32([NEG], [])])], { axis: -1 });
    const att = g.op('Reshape', [
      g.op('Transpose', [g.op('MatMul', [probs, vv])], { perm: [0, 2, 1, 3] }),
      g.i64([0, 0, NH * D]),
    ]);
    x = g.op('Add', [x, b.linear(att, `${pre}self_attn.o_proj`, NH * D, H, false)]);
    const h2 = b.rmsnorm(x, `${pre}post_attention_layernorm.weight`, H, cfg.rmsNormEps);
    const gate = b.linear(h2, `${pre}mlp.gate_proj`, H, I, false);
    const up = b.linear(h2, `${pre}mlp.up_proj`, H, I, false);
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    x = g.op('Add', [x, b.linear(act, `${pre}mlp.down_proj`, I, H, false)]);
    // DeepStack: slot i (zero except at image tokens) joins the hidden states after layer i
    if (i < K) x = g.op('Add', [x, slots[i]!]);
  }
  // the last num_logits_to_keep positions (0: all), then the final norm and the head
  const start = g.op('Neg', [g.op('Reshape', [keep, g.i64([1])])]);
  const kept = g.op('Slice', [x, start, g.i64([2 ** 53]), g.i64([1])]);
  const hf = b.rmsnorm(kept, 'model.norm.weight', H, cfg.rmsNormEps);
  b.linear(hf, cfg.tieWordEmbeddings ? 'model.embed_tokens' : 'lm_head', H, V, false);
  g.renameLast('logits');
  return g;
}
