/**
 * Qwen2-VL as three ONNX graphs in the layout transformers.js loads (onnx/vision_encoder.onnx,
 * onnx/embed_tokens.onnx, onnx/decoder_model_merged.onnx), built from the engine's weights (its
 * published tensor names, native/src/model_load.cc) and computing what native/src/model.cc computes:
 *
 * - vision_encoder: pixel_values [num_patches, C·T·P·P] float, grid_thw [num_images, 3] int64 →
 *   image_features [num_patches / merge², hidden]. The 2D rotary positions and the per-frame
 *   attention blocks are computed inside the graph from grid_thw (any number of images).
 * - embed_tokens: input_ids [batch, seq] int64 → inputs_embeds [batch, seq, hidden].
 * - decoder_model_merged: inputs_embeds, attention_mask [batch, total_seq] int64, position_ids
 *   [3, batch, seq] int64 (M-RoPE; transformers.js's get_rope_index), past_key_values.{i}.key/value
 *   [batch, kv_heads, past_seq, head_dim], num_logits_to_keep (scalar int64: 0 = every position,
 *   k = the last k) → logits [batch, kept, vocab], present.{i}.key/value [batch, kv_heads, total_seq, head_dim].
 *   Masking: key j is seen by query i when j ≤ past_seq + i and attention_mask[b, j] = 1.
 *
 * Weights: fp32; fp16 (stored as float16, cast to float32 in the graph: compute stays fp32); int8
 * (symmetric per-output-channel int8 with a float scale, DequantizeLinear before each MatMul; the
 * embedding table is gathered row by row and scaled). Norms and biases stay fp32.
 */
import type { EngineConfig } from '../engine/config.js';
import { fromFloat32 } from '../util/safetensors.js';
import { f16Tensor, f32Tensor, Graph, i8Tensor, type ExternalSink } from './graph.js';
import { DataType } from './onnx-schema.js';

export type ExportDtype = 'fp32' | 'fp16' | 'int8';

/** Weights by the engine's published names ([out, in] for linear weights), LoRA already merged. */
export interface WeightSource {
  get(name: string): Float32Array;
}

const NEG = -3.4028234663852886e38; // float32 lowest: masked attention scores

/** [rows, cols] row-major → [cols, rows]. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** Symmetric int8 quantisation of a [rows, cols] matrix along `axis` (per row: 0, per column: 1). */
export function quantizeInt8(
  a: Float32Array,
  rows: number,
  cols: number,
  axis: 0 | 1,
): { q: Int8Array; scale: Float32Array } {
  const n = axis === 0 ? rows : cols;
  const amax = new Float32Array(n);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = axis === 0 ? r : c;
      const v = Math.abs(a[r * cols + c]!);
      if (v > amax[k]!) amax[k] = v;
    }
  const scale = new Float32Array(n);
  for (let k = 0; k < n; k++) scale[k] = amax[k]! > 0 ? amax[k]! / 127 : 1;
  const q = new Int8Array(a.length);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = axis === 0 ? r : c;
      q[r * cols + c] = Math.max(-127, Math.min(127, Math.round(a[r * cols + c]! / scale[k]!)));
    }
  return { q, scale };
}

class Builder {
  constructor(
    readonly g: Graph,
    readonly w: WeightSource,
    readonly dtype: ExportDtype,
  ) {}

  /** A float32 parameter kept in fp32 (norms, biases). */
  param(name: string, dims: number[]): string {
    return this.g.init(name, f32Tensor(this.w.get(name), dims));
  }

  /** x [..., inDim] @ W^T (+ b): W is the engine's [outDim, inDim] `${module}.weight`. */
  linear(x: string, module: string, inDim: number, outDim: number, bias: boolean): string {
    const wT = transpose(this.w.get(`${module}.weight`), outDim, inDim); // [in, out]
    let wName: string;
    if (this.dtype === 'fp32') {
      wName = this.g.init(`${module}.weight`, f32Tensor(wT, [inDim, outDim]));
    } else if (this.dtype === 'fp16') {
      const bits = fromFloat32(wT, [inDim, outDim], 'F16').data as Uint16Array;
      wName = this.g.op('Cast', [this.g.init(`${module}.weight`, f16Tensor(bits, [inDim, outDim]))], {
        to: DataType.FLOAT,
      });
    } else {
      const { q, scale } = quantizeInt8(wT, inDim, outDim, 1);
      const qn = this.g.init(`${module}.weight_quantized`, i8Tensor(q, [inDim, outDim]));
      const sn = this.g.init(`${module}.weight_scale`, f32Tensor(scale, [outDim]));
      wName = this.g.op('DequantizeLinear', [qn, sn], { axis: 1 });
    }
    let y = this.g.op('MatMul', [x, wName]);
    if (bias) y = this.g.op('Add', [y, this.param(`${module}.bias`, [outDim])]);
    return y;
  }

  /** Rows of the [vocab, hidden] table `name` for int64 `ids`. */
  embedding(ids: string, name: string, vocab: number, hidden: number): string {
    const table = this.w.get(name);
    if (this.dtype === 'fp32') return this.g.op('Gather', [this.g.init(name, f32Tensor(table, [vocab, hidden])), ids]);
    if (this.dtype === 'fp16') {
      const bits = fromFloat32(table, [vocab, hidden], 'F16').data as Uint16Array;
      return this.g.op('Cast', [this.g.op('Gather', [this.g.init(name, f16Tensor(bits, [vocab, hidden])), ids])], {
        to: DataType.FLOAT,
      });
    }
    const { q, scale } = quantizeInt8(table, vocab, hidden, 0);
    const rows = this.g.op(
      'Cast',
      [this.g.op('Gather', [this.g.init(`${name}_quantized`, i8Tensor(q, [vocab, hidden])), ids])],
      { to: DataType.FLOAT },
    );
    const s = this.g.op('Unsqueeze', [
      this.g.op('Gather', [this.g.init(`${name}_scale`, f32Tensor(scale, [vocab])), ids]),
      this.g.i64([-1]),
    ]);
    return this.g.op('Mul', [rows, s]);
  }

  /** x * rsqrt(mean(x², -1) + eps) * w. */
  rmsnorm(x: string, weight: string, dim: number, eps: number): string {
    const g = this.g;
    const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const r = g.op('Div', [g.f32([1], []), g.op('Sqrt', [g.op('Add', [ms, g.f32([eps], [])])])]);
    return g.op('Mul', [g.op('Mul', [x, r]), this.param(weight, [dim])]);
  }

  layernorm(x: string, prefix: string, dim: number): string {
    return this.g.op(
      'LayerNormalization',
      [x, this.param(`${prefix}.weight`, [dim]), this.param(`${prefix}.bias`, [dim])],
      { axis: -1, epsilon: { f: 1e-6 } },
    );
  }

  /** rotate_half rope: x * cat(cos, cos) + cat(-x2, x1) * cat(sin, sin); cos/sin already full width. */
  rope(x: string, cosFull: string, sinFull: string, half: number): string {
    const g = this.g;
    const [x1, x2] = g.node('Split', [x, g.i64([half, half])], { axis: -1 }, 2) as [string, string];
    const rot = g.op('Concat', [g.op('Neg', [x2]), x1], { axis: -1 });
    return g.op('Add', [g.op('Mul', [x, cosFull]), g.op('Mul', [rot, sinFull])]);
  }

  gelu(x: string): string {
    const g = this.g;
    const e = g.op('Erf', [g.op('Mul', [x, g.f32([Math.SQRT1_2], [])])]);
    return g.op('Mul', [g.op('Mul', [x, g.f32([0.5], [])]), g.op('Add', [e, g.f32([1], [])])]);
  }
}

function invFreq(theta: number, count: number, dim: number): Float32Array {
  // inv[j] = 1 / theta^(2j/dim), in float32 as the engine (native/src/ops/rope.cc)
  const out = new Float32Array(count);
  for (let j = 0; j < count; j++)
    out[j] = Math.fround(
      1 / Math.fround(Math.pow(Math.fround(theta), Math.fround(Math.fround(2 * j) / Math.fround(dim)))),
    );
  return out;
}

/** onnx/vision_encoder.onnx */
export function buildVisionEncoder(
  cfg: EngineConfig,
  w: WeightSource,
  dtype: ExportDtype,
  external?: ExternalSink,
): Graph {
  const vc = cfg.vision;
  if (vc.depth === 0)
    throw new Error('the model has no vision tower (vision_config.depth 0); nothing to export as vision_encoder');
  const g = new Graph('vision_encoder', external);
  const b = new Builder(g, w, dtype);
  const E = vc.embedDim,
    NH = vc.numHeads,
    hd = E / NH,
    m = vc.spatialMergeSize;
  const PD = vc.inChannels * vc.temporalPatchSize * vc.patchSize * vc.patchSize;
  const H = vc.hiddenSize;
  const pixels = g.input('pixel_values', DataType.FLOAT, ['num_patches', PD]);
  const grid = g.input('grid_thw', DataType.INT64, ['num_images', 3]);
  g.output('image_features', DataType.FLOAT, ['num_features', H]);

  // --- per-patch positions from grid_thw (native/src/model.cc vision_forward) ---
  const col = (i: number) => g.op('Gather', [grid, g.i64([i], [])], { axis: 1 }); // [K]
  const tk = col(0),
    hk = col(1),
    wk = col(2);
  const hw = g.op('Mul', [hk, wk]);
  const nk = g.op('Mul', [tk, hw]);
  const ends = g.op('CumSum', [nk, g.i64([0], [])]);
  const starts = g.op('Sub', [ends, nk]);
  const frameStarts = g.op('Sub', [g.op('CumSum', [tk, g.i64([0], [])]), tk]);
  const N = g.op('Gather', [g.op('Shape', [pixels]), g.i64([0], [])]); // scalar
  const p = g.op('Range', [g.i64([0], []), N, g.i64([1], [])]); // [N]
  // image of each patch: how many images end at or before it
  const ge = g.op(
    'Cast',
    [g.op('GreaterOrEqual', [g.op('Unsqueeze', [p, g.i64([1])]), g.op('Unsqueeze', [ends, g.i64([0])])])],
    { to: DataType.INT64 },
  );
  const img = g.op('ReduceSum', [ge, g.i64([1])], { keepdims: 0 }); // [N]
  const local = g.op('Sub', [p, g.op('Gather', [starts, img])]);
  const frameSize = g.op('Gather', [hw, img]);
  const r = g.op('Mod', [local, frameSize]);
  const frameId = g.op('Add', [g.op('Gather', [frameStarts, img]), g.op('Div', [local, frameSize])]);
  const M = g.i64([m], []),
    MM = g.i64([m * m], []);
  const blk = g.op('Div', [r, MM]);
  const within = g.op('Mod', [r, MM]);
  const wb = g.op('Div', [g.op('Gather', [wk, img]), M]);
  const hpos = g.op('Add', [g.op('Mul', [g.op('Div', [blk, wb]), M]), g.op('Div', [within, M])]);
  const wpos = g.op('Add', [g.op('Mul', [g.op('Mod', [blk, wb]), M]), g.op('Mod', [within, M])]);
  // rotary table: first hd/4 frequencies on the row, the next hd/4 on the column
  const inv = g.f32(invFreq(vc.ropeTheta, hd / 4, hd / 2), [1, hd / 4]);
  const ang = (pos: string) =>
    g.op('Mul', [g.op('Unsqueeze', [g.op('Cast', [pos], { to: DataType.FLOAT }), g.i64([1])]), inv]);
  const angles = g.op('Concat', [ang(hpos), ang(wpos)], { axis: 1 }); // [N, hd/2]
  const full = (x: string) => g.op('Unsqueeze', [g.op('Concat', [x, x], { axis: 1 }), g.i64([1])]); // [N, 1, hd]
  const cos = full(g.op('Cos', [angles])),
    sin = full(g.op('Sin', [angles]));
  // attention only within a frame
  const same = g.op('Unsqueeze', [
    g.op('Equal', [g.op('Unsqueeze', [frameId, g.i64([1])]), g.op('Unsqueeze', [frameId, g.i64([0])])]),
    g.i64([0]),
  ]); // [1, N, N]

  // --- blocks ---
  let x = b.linear(pixels, 'visual.patch_embed.proj', PD, E, false);
  const scale = g.f32([1 / Math.sqrt(hd)], []);
  for (let i = 0; i < vc.depth; i++) {
    const pre = `visual.blocks.${i}.`;
    const h = b.layernorm(x, `${pre}norm1`, E);
    const qkv = g.op('Reshape', [b.linear(h, `${pre}attn.qkv`, E, 3 * E, true), g.i64([-1, 3, NH, hd])]);
    const part = (k: number) => g.op('Gather', [qkv, g.i64([k], [])], { axis: 1 }); // [N, NH, hd]
    const q = g.op('Transpose', [b.rope(part(0), cos, sin, hd / 2)], { perm: [1, 0, 2] }); // [NH, N, hd]
    const kT = g.op('Transpose', [b.rope(part(1), cos, sin, hd / 2)], { perm: [1, 2, 0] }); // [NH, hd, N]
    const v = g.op('Transpose', [part(2)], { perm: [1, 0, 2] });
    const s = g.op('Where', [same, g.op('Mul', [g.op('MatMul', [q, kT]), scale]), g.f32([NEG], [])]);
    const att = g.op('MatMul', [g.op('Softmax', [s], { axis: -1 }), v]); // [NH, N, hd]
    const merged = g.op('Reshape', [g.op('Transpose', [att], { perm: [1, 0, 2] }), g.i64([-1, E])]);
    x = g.op('Add', [x, b.linear(merged, `${pre}attn.proj`, E, E, true)]);
    const h2 = b.layernorm(x, `${pre}norm2`, E);
    const f = b.linear(h2, `${pre}mlp.fc1`, E, vc.mlpHidden, true);
    const act =
      vc.hiddenAct === 'quick_gelu'
        ? g.op('Mul', [f, g.op('Sigmoid', [g.op('Mul', [f, g.f32([1.702], [])])])])
        : b.gelu(f);
    x = g.op('Add', [x, b.linear(act, `${pre}mlp.fc2`, vc.mlpHidden, E, true)]);
  }
  // --- patch merger ---
  const ln = g.op('Reshape', [b.layernorm(x, 'visual.merger.ln_q', E), g.i64([-1, E * m * m])]);
  const h0 = b.gelu(b.linear(ln, 'visual.merger.mlp.0', E * m * m, E * m * m, true));
  b.linear(h0, 'visual.merger.mlp.2', E * m * m, H, true);
  g.renameLast('image_features');
  return g;
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
  b.embedding(ids, 'model.embed_tokens.weight', cfg.vocabSize, cfg.hiddenSize);
  g.renameLast('inputs_embeds');
  g.output('inputs_embeds', DataType.FLOAT, ['batch_size', 'sequence_length', cfg.hiddenSize]);
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
  const embeds = g.input('inputs_embeds', DataType.FLOAT, ['batch_size', 'sequence_length', H]);
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
  const [s0, s1] = cfg.mropeSection;
  for (let j = 0; j < half; j++) sel[(j < s0 ? 0 : j < s0 + s1 ? 1 : 2) * half + j] = 1;
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

  let x = embeds;
  for (let i = 0; i < cfg.numLayers; i++) {
    const pre = `model.layers.${i}.`;
    const h = b.rmsnorm(x, `${pre}input_layernorm.weight`, H, cfg.rmsNormEps);
    const heads = (y: string, n: number) => g.op('Reshape', [y, g.i64([0, 0, n, D])]); // [B, S, n, D]
    const q = g.op(
      'Transpose',
      [b.rope(heads(b.linear(h, `${pre}self_attn.q_proj`, H, NH * D, true), NH), cos, sin, half)],
      { perm: [0, 2, 1, 3] },
    );
    const kNew = g.op(
      'Transpose',
      [b.rope(heads(b.linear(h, `${pre}self_attn.k_proj`, H, KVH * D, true), KVH), cos, sin, half)],
      { perm: [0, 2, 1, 3] },
    );
    const vNew = g.op('Transpose', [heads(b.linear(h, `${pre}self_attn.v_proj`, H, KVH * D, true), KVH)], {
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
  }
  // the last num_logits_to_keep positions (0: all), then the final norm and the head
  const start = g.op('Neg', [g.op('Reshape', [keep, g.i64([1])])]);
  const kept = g.op('Slice', [x, start, g.i64([2 ** 53]), g.i64([1])]);
  const hf = b.rmsnorm(kept, 'model.norm.weight', H, cfg.rmsNormEps);
  b.linear(hf, cfg.tieWordEmbeddings ? 'model.embed_tokens' : 'lm_head', H, V, false);
  g.renameLast('logits');
  return g;
}
