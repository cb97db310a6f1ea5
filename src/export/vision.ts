/**
 * onnx/vision_encoder.onnx for the three families, computing what native/src/model.cc
 * `vision_forward` computes:
 *
 *   pixel_values [num_patches, C·T·P·P] float, grid_thw [num_images, 3] int64 (named `grid_thw` for
 *   Qwen2-VL and `image_grid_thw` for Qwen2.5-VL / Qwen3-VL, the names transformers.js feeds)
 *   → image_features [num_patches / merge², hidden · (1 + K)]
 *
 * where K is the number of DeepStack features (Qwen3-VL; 0 otherwise): row r is the merger's output
 * for merged patch r, followed by the K DeepStack mergers' outputs for it (docs/export.md, "DeepStack").
 *
 * Everything that depends on the image sizes is computed in the graph from grid_thw, so any number of
 * images or videos of any sizes go in one call: per-patch 2D rotary positions, which frame a patch
 * belongs to (attention stays within a frame), Qwen2.5-VL's attention windows, and Qwen3-VL's learned
 * position embeddings interpolated to each image's grid.
 *
 * Qwen2.5-VL's window attention: the engine (like transformers) permutes the patches into window
 * order so that each window is a contiguous run, and puts the merger's output back in the processor's
 * order. Attention here is a dense [N, N] product with a mask, so the same result comes from keeping
 * the processor's order and masking every pair of patches that are not in the same window: every other
 * operation works row by row (or on the merge² rows of one merged patch, which a window never splits),
 * and a row's rotary angles travel with it. The permutation and its inverse are therefore an identity
 * here, and the graph has neither.
 */
import type { EngineConfig } from '../engine/config.js';
import { Builder, invFreq, NEG, type ExportDtype, type WeightSource } from './builder.js';
import { Graph, type ExternalSink } from './graph.js';
import { DataType } from './onnx-schema.js';

/** The vision encoder's grid input: transformers.js's `image_grid_thw_name` for the family. */
export function gridInputName(cfg: EngineConfig): string {
  return cfg.modelType === 'qwen2_vl' ? 'grid_thw' : 'image_grid_thw';
}

/** DeepStack features carried beside each merged patch's embedding (Qwen3-VL; else 0). */
export function deepstackCount(cfg: EngineConfig): number {
  return cfg.vision.depth > 0 ? (cfg.vision.deepstackVisualIndexes ?? []).length : 0;
}

/** Per-patch index tensors computed from grid_thw (all int64 [N] unless noted). */
interface PatchIndex {
  img: string;
  frameId: string;
  /** Row and column of the patch in its frame (patches, not merged units). */
  hpos: string;
  wpos: string;
  /** Row and column of its merged unit in the frame. */
  unitRow: string;
  unitCol: string;
}

function patchIndex(g: Graph, pixels: string, grid: string, m: number): PatchIndex {
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
  // the processor's order: merged units row-major over the frame, merge² patches each
  const M = g.i64([m], []),
    MM = g.i64([m * m], []);
  const blk = g.op('Div', [r, MM]);
  const within = g.op('Mod', [r, MM]);
  const wb = g.op('Div', [g.op('Gather', [wk, img]), M]);
  const unitRow = g.op('Div', [blk, wb]),
    unitCol = g.op('Mod', [blk, wb]);
  const hpos = g.op('Add', [g.op('Mul', [unitRow, M]), g.op('Div', [within, M])]);
  const wpos = g.op('Add', [g.op('Mul', [unitCol, M]), g.op('Mod', [within, M])]);
  return { img, frameId, hpos, wpos, unitRow, unitCol };
}

/** [1, N, N] bool: patches i and j have equal `key`. */
function sameKey(g: Graph, key: string): string {
  return g.op('Unsqueeze', [
    g.op('Equal', [g.op('Unsqueeze', [key, g.i64([1])]), g.op('Unsqueeze', [key, g.i64([0])])]),
    g.i64([0]),
  ]);
}

/**
 * torch.linspace(0, end, steps)[i] in float32 as ATen computes it (from both ends toward the middle),
 * for int64 [N] steps and i; native/src/model.cc linspace_at.
 */
function linspaceAt(g: Graph, end: number, steps: string, i: string): string {
  const f = (x: string) => g.op('Cast', [x], { to: DataType.FLOAT });
  const endF = g.f32([end], []);
  const step = g.op('Div', [endF, f(g.op('Sub', [steps, g.i64([1], [])]))]); // inf for one step: not selected
  const fromStart = g.op('Mul', [step, f(i)]);
  const fromEnd = g.op('Sub', [endF, g.op('Mul', [step, f(g.op('Sub', [g.op('Sub', [steps, i]), g.i64([1], [])]))])]);
  const v = g.op('Where', [g.op('Less', [i, g.op('Div', [steps, g.i64([2], [])])]), fromStart, fromEnd]);
  return g.op('Where', [g.op('Equal', [steps, g.i64([1], [])]), g.f32([0], []), v]);
}

/**
 * Qwen3-VL: the learned side × side position embeddings bilinearly interpolated to each patch's image
 * grid (transformers' fast_pos_embed_interpolate) → [N, E].
 */
function positionEmbeddings(b: Builder, grid: string, ix: PatchIndex, cfg: EngineConfig): string {
  const g = b.g;
  const E = cfg.vision.embedDim,
    NP = cfg.vision.numPositionEmbeddings!,
    S = Math.round(Math.sqrt(NP));
  const table = b.param('visual.pos_embed.weight', [NP, E]);
  const gh = g.op('Gather', [g.op('Gather', [grid, g.i64([1], [])], { axis: 1 }), ix.img]);
  const gw = g.op('Gather', [g.op('Gather', [grid, g.i64([2], [])], { axis: 1 }), ix.img]);
  const hi = linspaceAt(g, S - 1, gh, ix.hpos),
    wi = linspaceAt(g, S - 1, gw, ix.wpos);
  const hfF = g.op('Floor', [hi]),
    wfF = g.op('Floor', [wi]);
  const dh = g.op('Sub', [hi, hfF]),
    dw = g.op('Sub', [wi, wfF]);
  const i64 = (x: string) => g.op('Cast', [x], { to: DataType.INT64 });
  const hf = i64(hfF),
    wf = i64(wfF);
  const last = g.i64([S - 1], []),
    one = g.i64([1], []);
  const hc = g.op('Min', [g.op('Add', [hf, one]), last]),
    wc = g.op('Min', [g.op('Add', [wf, one]), last]);
  const oneF = g.f32([1], []);
  const ndh = g.op('Sub', [oneF, dh]),
    ndw = g.op('Sub', [oneF, dw]);
  const Sc = g.i64([S], []);
  const corner = (h: string, w: string, wh: string, ww: string) => {
    const rows = g.op('Gather', [table, g.op('Add', [g.op('Mul', [h, Sc]), w])]); // [N, E]
    return g.op('Mul', [rows, g.op('Unsqueeze', [g.op('Mul', [wh, ww]), g.i64([1])])]);
  };
  const a = g.op('Add', [corner(hf, wf, ndh, ndw), corner(hf, wc, ndh, dw)]);
  return g.op('Add', [a, g.op('Add', [corner(hc, wf, dh, ndw), corner(hc, wc, dh, dw)])]);
}

/** A patch merger: norm, groups of merge² rows → fc1, gelu, fc2. `postShuffle`: the norm runs on the merged rows (DeepStack). */
function merger(
  b: Builder,
  x: string,
  names: { norm: string; fc1: string; fc2: string },
  cfg: EngineConfig,
  postShuffle: boolean,
): string {
  const g = b.g;
  const vc = cfg.vision,
    E = vc.embedDim,
    M = E * vc.spatialMergeSize ** 2;
  const merged = postShuffle
    ? b.layernorm(g.op('Reshape', [x, g.i64([-1, M])]), names.norm, M)
    : g.op('Reshape', [b.visionNorm(x, names.norm, E, Boolean(vc.rmsNorm)), g.i64([-1, M])]);
  const h = b.gelu(b.linear(merged, names.fc1, M, M, true));
  return b.linear(h, names.fc2, M, vc.hiddenSize, true);
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
  const q3 = cfg.modelType === 'qwen3_vl';
  const g = new Graph('vision_encoder', external);
  const b = new Builder(g, w, dtype);
  const E = vc.embedDim,
    NH = vc.numHeads,
    hd = E / NH,
    m = vc.spatialMergeSize,
    F = vc.mlpHidden;
  const PD = vc.inChannels * vc.temporalPatchSize * vc.patchSize * vc.patchSize;
  const K = deepstackCount(cfg);
  const pixels = g.input('pixel_values', DataType.FLOAT, ['num_patches', PD]);
  const grid = g.input(gridInputName(cfg), DataType.INT64, ['num_images', 3]);
  g.output('image_features', DataType.FLOAT, ['num_features', vc.hiddenSize * (1 + K)]);

  const ix = patchIndex(g, pixels, grid, m);
  // rotary table: first hd/4 frequencies on the row, the next hd/4 on the column
  const inv = g.f32(invFreq(vc.ropeTheta, hd / 4, hd / 2), [1, hd / 4]);
  const ang = (pos: string) =>
    g.op('Mul', [g.op('Unsqueeze', [g.op('Cast', [pos], { to: DataType.FLOAT }), g.i64([1])]), inv]);
  const angles = g.op('Concat', [ang(ix.hpos), ang(ix.wpos)], { axis: 1 }); // [N, hd/2]
  const full = (x: string) => g.op('Unsqueeze', [g.op('Concat', [x, x], { axis: 1 }), g.i64([1])]); // [N, 1, hd]
  const cos = full(g.op('Cos', [angles])),
    sin = full(g.op('Sin', [angles]));
  // attention masks: within a frame; Qwen2.5-VL's windowed blocks within a window of the frame
  const sameFrame = sameKey(g, ix.frameId);
  let sameWindow: string | undefined;
  if (vc.windowSize) {
    const vw = g.i64([vc.windowSize / m / vc.patchSize], []),
      big = g.i64([1 << 20], []);
    const winRow = g.op('Div', [ix.unitRow, vw]),
      winCol = g.op('Div', [ix.unitCol, vw]);
    sameWindow = sameKey(
      g,
      g.op('Add', [g.op('Mul', [g.op('Add', [g.op('Mul', [ix.frameId, big]), winRow]), big]), winCol]),
    );
  }
  const fullatt = new Set(vc.fullattBlockIndexes ?? []);
  const deepstack = vc.deepstackVisualIndexes ?? [];

  let x = b.linear(pixels, 'visual.patch_embed.proj', PD, E, q3);
  if (q3) x = g.op('Add', [x, positionEmbeddings(b, grid, ix, cfg)]);
  const scale = g.f32([1 / Math.sqrt(hd)], []);
  const features: string[] = [];
  const rms = Boolean(vc.rmsNorm);
  for (let i = 0; i < vc.depth; i++) {
    const pre = `visual.blocks.${i}.`;
    const h = b.visionNorm(x, `${pre}norm1`, E, rms);
    const qkv = g.op('Reshape', [b.linear(h, `${pre}attn.qkv`, E, 3 * E, true), g.i64([-1, 3, NH, hd])]);
    const part = (k: number) => g.op('Gather', [qkv, g.i64([k], [])], { axis: 1 }); // [N, NH, hd]
    const q = g.op('Transpose', [b.rope(part(0), cos, sin, hd / 2)], { perm: [1, 0, 2] }); // [NH, N, hd]
    const kT = g.op('Transpose', [b.rope(part(1), cos, sin, hd / 2)], { perm: [1, 2, 0] }); // [NH, hd, N]
    const v = g.op('Transpose', [part(2)], { perm: [1, 0, 2] });
    const mask = sameWindow && !fullatt.has(i) ? sameWindow : sameFrame;
    const s = g.op('Where', [mask, g.op('Mul', [g.op('MatMul', [q, kT]), scale]), g.f32([NEG], [])]);
    const att = g.op('MatMul', [g.op('Softmax', [s], { axis: -1 }), v]); // [NH, N, hd]
    const merged = g.op('Reshape', [g.op('Transpose', [att], { perm: [1, 0, 2] }), g.i64([-1, E])]);
    x = g.op('Add', [x, b.linear(merged, `${pre}attn.proj`, E, E, true)]);
    const h2 = b.visionNorm(x, `${pre}norm2`, E, rms);
    let mlp: string;
    if (vc.hiddenAct === 'silu') {
      // Qwen2.5-VL: gated, down(silu(gate) · up), every projection with bias
      const gate = b.linear(h2, `${pre}mlp.gate_proj`, E, F, true);
      const up = b.linear(h2, `${pre}mlp.up_proj`, E, F, true);
      mlp = b.linear(g.op('Mul', [b.silu(gate), up]), `${pre}mlp.down_proj`, F, E, true);
    } else {
      const fc = q3 ? 'mlp.linear_fc' : 'mlp.fc';
      const f = b.linear(h2, `${pre}${fc}1`, E, F, true);
      const act =
        vc.hiddenAct === 'quick_gelu'
          ? b.quickGelu(f)
          : vc.hiddenAct === 'gelu_pytorch_tanh'
            ? b.geluTanh(f)
            : b.gelu(f);
      mlp = b.linear(act, `${pre}${fc}2`, F, E, true);
    }
    x = g.op('Add', [x, mlp]);
    // DeepStack: this block's output through its own merger (norm after the merge)
    const k = deepstack.indexOf(i);
    if (k >= 0) {
      const p = `visual.deepstack_merger_list.${k}.`;
      features.push(merger(b, x, { norm: `${p}norm`, fc1: `${p}linear_fc1`, fc2: `${p}linear_fc2` }, cfg, true));
    }
  }
  const main = q3
    ? merger(
        b,
        x,
        { norm: 'visual.merger.norm', fc1: 'visual.merger.linear_fc1', fc2: 'visual.merger.linear_fc2' },
        cfg,
        false,
      )
    : merger(b, x, { norm: 'visual.merger.ln_q', fc1: 'visual.merger.mlp.0', fc2: 'visual.merger.mlp.2' }, cfg, false);
  if (features.length !== K) throw new Error(`internal error: ${features.length} DeepStack features for ${K} indexes`);
  // features in the order they are added to decoder layers 0, 1, …: the blocks' order
  if (K > 0) g.op('Concat', [main, ...features], { axis: 1 });
  g.renameLast('image_features');
  return g;
}
