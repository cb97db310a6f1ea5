/**
 * Qwen2.5-VL and Qwen3-VL on the CPU engine without transformers: tiny random checkpoints written
 * here (the tensor layout of the published checkpoints), checked for
 * - finite differences of d(Σ w·logp)/dθ on a sample of every tensor kind the family adds (window
 *   attention blocks and full-attention blocks, RMSNorm, the gated vision MLP; learned position
 *   embeddings, DeepStack mergers, q/k norms);
 * - the shared-prefix packing (G completions in one pass) against one completion at a time;
 * - greedy sampling against the argmax of the forward's logits.
 * Parity with transformers itself is the fixtures' job (test/fixtures/engine, `vqalab check-parity`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import type { ImageInput } from '../../src/engine/types.js';
import { initTensors } from '../../src/model/init.js';
import {
  familyConfigJson,
  familyTensorSpecs,
  FAMILY_PRESETS,
  type FamilyDims,
} from '../../src/model/presets-family.js';
import { parseConfig } from '../../src/engine/config.js';
import { checkFiniteDifferences, maxAbsDiff, randn, rng, tmpDir, weightedLogp } from './helpers.js';

const V = 64,
  IMAGE = 60,
  VSTART = 58,
  VEND = 59;

interface Tiny {
  family: 'qwen2_5_vl' | 'qwen3_vl';
  hidden: number;
  inter: number;
  layers: number;
  heads: number;
  kv: number;
  headDim: number;
  section: [number, number, number];
  vdepth: number;
  vembed: number;
  vheads: number;
  vinter: number;
  patch: number;
  window?: number;
  fullatt?: number[];
  npos?: number;
  deepstack?: number[];
  tied: boolean;
}

function tensors(c: Tiny): [string, number[]][] {
  const E = c.vembed,
    M = E * 4,
    H = c.hidden,
    D = c.headDim,
    q3 = c.family === 'qwen3_vl';
  const out: [string, number[]][] = [['visual.patch_embed.proj.weight', [E, 3, 2, c.patch, c.patch]]];
  const lin = (n: string, i: number, o: number, bias = true) => {
    out.push([`${n}.weight`, [o, i]]);
    if (bias) out.push([`${n}.bias`, [o]]);
  };
  if (q3) out.push(['visual.patch_embed.proj.bias', [E]], ['visual.pos_embed.weight', [c.npos!, E]]);
  for (let b = 0; b < c.vdepth; b++) {
    const p = `visual.blocks.${b}.`;
    out.push([`${p}norm1.weight`, [E]], [`${p}norm2.weight`, [E]]);
    if (q3) out.push([`${p}norm1.bias`, [E]], [`${p}norm2.bias`, [E]]);
    lin(`${p}attn.qkv`, E, 3 * E);
    lin(`${p}attn.proj`, E, E);
    if (q3) {
      lin(`${p}mlp.linear_fc1`, E, c.vinter);
      lin(`${p}mlp.linear_fc2`, c.vinter, E);
    } else {
      lin(`${p}mlp.gate_proj`, E, c.vinter);
      lin(`${p}mlp.up_proj`, E, c.vinter);
      lin(`${p}mlp.down_proj`, c.vinter, E);
    }
  }
  if (q3) {
    out.push(['visual.merger.norm.weight', [E]], ['visual.merger.norm.bias', [E]]);
    lin('visual.merger.linear_fc1', M, M);
    lin('visual.merger.linear_fc2', M, H);
    c.deepstack!.forEach((_, k) => {
      const p = `visual.deepstack_merger_list.${k}.`;
      out.push([`${p}norm.weight`, [M]], [`${p}norm.bias`, [M]]);
      lin(`${p}linear_fc1`, M, M);
      lin(`${p}linear_fc2`, M, H);
    });
  } else {
    out.push(['visual.merger.ln_q.weight', [E]]);
    lin('visual.merger.mlp.0', M, M);
    lin('visual.merger.mlp.2', M, H);
  }
  out.push(['model.embed_tokens.weight', [V, H]]);
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    out.push([`${p}input_layernorm.weight`, [H]], [`${p}post_attention_layernorm.weight`, [H]]);
    lin(`${p}self_attn.q_proj`, H, c.heads * D, !q3);
    lin(`${p}self_attn.k_proj`, H, c.kv * D, !q3);
    lin(`${p}self_attn.v_proj`, H, c.kv * D, !q3);
    lin(`${p}self_attn.o_proj`, c.heads * D, H, false);
    if (q3) out.push([`${p}self_attn.q_norm.weight`, [D]], [`${p}self_attn.k_norm.weight`, [D]]);
    lin(`${p}mlp.gate_proj`, H, c.inter, false);
    lin(`${p}mlp.up_proj`, H, c.inter, false);
    lin(`${p}mlp.down_proj`, c.inter, H, false);
  }
  out.push(['model.norm.weight', [H]]);
  if (!c.tied) out.push(['lm_head.weight', [V, H]]);
  return out;
}

function writeTiny(c: Tiny, seed: number): string {
  const dir = path.join(tmpDir('vqalab-family-'), c.family);
  mkdirSync(dir, { recursive: true });
  const r = rng(seed);
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [n, shape] of tensors(c)) {
    const size = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (shape.length >= 2)
      data = randn(
        size,
        r,
        (/embed_tokens|lm_head/.test(n) ? 0.5 : 1) / (/embed_tokens|lm_head/.test(n) ? 1 : Math.sqrt(size / shape[0]!)),
      );
    else if (n.endsWith('.bias')) data = randn(size, r, 0.1);
    else data = Float32Array.from(randn(size, r, 0.1), (x) => 1 + x);
    t[n] = { shape, data };
  }
  native()._writeSafetensors(path.join(dir, 'model.safetensors'), t);
  const text = {
    vocab_size: V,
    hidden_size: c.hidden,
    intermediate_size: c.inter,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kv,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 256,
    tie_word_embeddings: c.tied,
    ...(c.family === 'qwen3_vl'
      ? {
          head_dim: c.headDim,
          attention_bias: false,
          rope_parameters: { rope_type: 'default', rope_theta: 5e6, mrope_section: c.section, mrope_interleaved: true },
        }
      : { rope_parameters: { rope_type: 'default', rope_theta: 1e4, mrope_section: c.section } }),
  };
  const vision =
    c.family === 'qwen3_vl'
      ? {
          depth: c.vdepth,
          hidden_size: c.vembed,
          hidden_act: 'gelu_pytorch_tanh',
          intermediate_size: c.vinter,
          num_heads: c.vheads,
          in_channels: 3,
          patch_size: 16,
          spatial_merge_size: 2,
          temporal_patch_size: 2,
          out_hidden_size: c.hidden,
          num_position_embeddings: c.npos,
          deepstack_visual_indexes: c.deepstack,
        }
      : {
          depth: c.vdepth,
          hidden_size: c.vembed,
          hidden_act: 'silu',
          intermediate_size: c.vinter,
          num_heads: c.vheads,
          in_channels: 3,
          patch_size: 14,
          spatial_merge_size: 2,
          temporal_patch_size: 2,
          out_hidden_size: c.hidden,
          window_size: c.window,
          fullatt_block_indexes: c.fullatt,
          tokens_per_second: 2,
        };
  writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      model_type: c.family,
      text_config: text,
      vision_config: vision,
      image_token_id: IMAGE,
      video_token_id: 61,
      vision_start_token_id: VSTART,
      vision_end_token_id: VEND,
      tie_word_embeddings: c.tied,
    }),
  );
  return dir;
}

function image(c: Tiny, h: number, w: number, seed: number): ImageInput {
  return { pixels: randn(h * w * 3 * 2 * c.patch * c.patch, rng(seed)), gridThw: [1, h, w] };
}

function promptFor(images: ImageInput[], r: () => number) {
  const ids: number[] = [3, 14, 15];
  for (const im of images) {
    ids.push(VSTART, ...new Array<number>((im.gridThw[1] * im.gridThw[2]) / 4).fill(IMAGE), VEND, Math.floor(r() * 57));
  }
  ids.push(9, 2, 6);
  return { ids: Int32Array.from(ids), images };
}

/** What both tiny checkpoints share: a 32-wide language model (4 heads over 2 KV heads), 3 vision blocks 16 wide. */
const TINY_SIZES = { hidden: 32, inter: 40, heads: 4, kv: 2, vdepth: 3, vembed: 16, vheads: 2, vinter: 24 };

const Q25: Tiny = {
  ...TINY_SIZES,
  family: 'qwen2_5_vl',
  layers: 2,
  headDim: 8,
  section: [2, 1, 1],
  patch: 14,
  window: 56,
  fullatt: [1],
  tied: false,
};
const Q3: Tiny = {
  ...TINY_SIZES,
  family: 'qwen3_vl',
  layers: 3,
  headDim: 16,
  section: [3, 3, 2],
  patch: 16,
  npos: 16,
  deepstack: [2, 0],
  tied: true,
};

const PATTERNS: Record<Tiny['family'], RegExp> = {
  // block 0 windowed, block 1 full attention; RMSNorm; the gated MLP; the merger's RMSNorm
  qwen2_5_vl:
    /patch_embed|blocks\.[01]\.(attn\.qkv\.weight|norm1\.weight)|blocks\.2\.mlp\.(gate_proj|up_proj)\.weight|blocks\.2\.mlp\.down_proj\.bias|merger\.ln_q|merger\.mlp\.0\.weight|layers\.0\.self_attn\.k_proj\.bias|layers\.1\.mlp\.up_proj/,
  // position embeddings, patch bias, both DeepStack mergers, q/k norms, the tanh-gelu MLP
  qwen3_vl:
    /patch_embed\.proj\.bias|pos_embed|blocks\.1\.(mlp\.linear_fc1\.weight|norm1\.bias)|deepstack_merger_list\.[01]\.(norm\.weight|linear_fc1\.weight)|merger\.norm\.weight|layers\.[02]\.self_attn\.(q_norm|k_norm)|layers\.1\.self_attn\.q_proj|embed_tokens/,
};

for (const c of [Q25, Q3]) {
  test(`${c.family}: finite differences of d(Σ w·logp)/dθ on the tensors the family adds`, async () => {
    const dir = writeTiny(c, 5);
    const m = await loadModel(dir);
    try {
      const r = rng(7);
      // two images: one with windows padded at the edges (grid 6x10 patches = 3x5 merged), one small
      const images =
        c.family === 'qwen2_5_vl' ? [image(c, 6, 10, 1), image(c, 2, 2, 2)] : [image(c, 6, 4, 1), image(c, 2, 6, 2)];
      const prompt = promptFor(images, r);
      const comps = [Int32Array.from([5, 9, 33, 57]), Int32Array.from([12, 40])];
      const w = comps.map((cc, i) => Float32Array.from(cc, (_, t) => Math.sin(1 + i * 3 + t)));
      const objective = () => weightedLogp(m, prompt, comps, w);
      await m.forward([{ prompt, completions: comps, keepForBackward: true }]);
      m.zeroGrad();
      await m.backward([w]);
      const names = m._native._names().filter((n) => PATTERNS[c.family].test(n));
      assert.ok(names.length >= 10, names.join(','));
      await checkFiniteDifferences(m, names, objective, r, { nonZero: true });
    } finally {
      m.dispose();
    }
  });

  test(`${c.family}: shared-prefix packing equals one completion at a time; greedy sampling follows the logits`, async () => {
    const dir = writeTiny(c, 11);
    const m = await loadModel(dir);
    try {
      const prompt = promptFor([image(c, 4, 6, 3)], rng(4));
      const comps = [Int32Array.from([5, 9, 33]), Int32Array.from([12, 40, 41, 2]), Int32Array.from([7])];
      const [all] = await m.forward([{ prompt, completions: comps }]);
      for (let i = 0; i < comps.length; i++) {
        const [one] = await m.forward([{ prompt, completions: [comps[i]!] }]);
        assert.ok(maxAbsDiff(one!.logprobs[0]!, all!.logprobs[i]!) < 1e-5, `completion ${i}`);
      }
      const s = await m.sample({ prompt, n: 1, temperature: 0, maxTokens: 5, seed: 0 });
      const toks = s.tokenIds[0]!;
      assert.equal(toks.length, 5);
      // each greedy token is the argmax of the forward's logits after the tokens before it
      const [f] = await m.forward([{ prompt, completions: [Int32Array.from(toks)], returnLogits: true }]);
      const L = prompt.ids.length;
      const logits = f!.logits![0]!;
      for (let t = 0; t < toks.length; t++) {
        const row = logits.subarray((L - 1 + t) * V, (L + t) * V);
        let best = 0;
        for (let j = 1; j < V; j++) if (row[j]! > row[best]!) best = j;
        assert.equal(toks[t], best, `token ${t}`);
      }
    } finally {
      m.dispose();
    }
  });
}

test('presets-family: the released dims parse; a shrunk folder of each layout loads and runs in the engine', async () => {
  for (const [name, p] of Object.entries(FAMILY_PRESETS)) {
    const full = parseConfig(familyConfigJson(p.dims), name);
    assert.equal(full.modelType, p.dims.modelType);
    assert.equal(full.headDim, p.dims.headDim);
    const d: FamilyDims = {
      ...p.dims,
      hiddenSize: 32,
      intermediateSize: 48,
      numHiddenLayers: 3,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: p.dims.modelType === 'qwen3_vl' ? 16 : 8,
      mropeSection: p.dims.modelType === 'qwen3_vl' ? [4, 2, 2] : [2, 1, 1],
      vision: {
        ...p.dims.vision,
        depth: 3,
        hiddenSize: 16,
        intermediateSize: 24,
        numHeads: 2,
        ...(p.dims.modelType === 'qwen3_vl'
          ? { deepstackVisualIndexes: [0, 2], numPositionEmbeddings: 16 }
          : { fullattBlockIndexes: [2] }),
      },
    };
    const dir = path.join(tmpDir('vqalab-preset-'), name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(familyConfigJson(d)));
    const specs = familyTensorSpecs(d);
    const t = initTensors(specs, 1, 0.02);
    const out: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const sp of specs) out[sp.name] = { shape: [...sp.shape], data: t.get(sp.name)! };
    native()._writeSafetensors(path.join(dir, 'model.safetensors'), out);
    const m = await loadModel(dir);
    try {
      // One description of the checkpoint layout (familyTensorSpecs, which `model init` writes) and the
      // native loader's own table must agree name for name and shape for shape.
      const nativeLayout = m._native
        ._names()
        .map((n) => `${n} ${m._native._shape(n).join('x')}`)
        .sort();
      // The native table names tensors as published (model.*, visual.*); Qwen3-VL folders use
      // transformers 5's internal names (model.language_model.*, model.visual.*), which load the same.
      const published = (n: string) =>
        n.replace(/^model\.language_model\./, 'model.').replace(/^model\.visual\./, 'visual.');
      const written = specs.map((sp) => `${published(sp.name)} ${sp.shape.join('x')}`).sort();
      assert.deepEqual(nativeLayout, written, `${name}: the native layout equals the TypeScript one`);
      const c: Tiny = { ...Q3, family: d.modelType, patch: d.vision.patchSize };
      const prompt = promptFor([image(c, 4, 4, 1)], rng(2));
      prompt.ids = Int32Array.from(prompt.ids, (x) =>
        x === IMAGE ? 151655 : x === VSTART ? 151652 : x === VEND ? 151653 : x,
      );
      const [r] = await m.forward([{ prompt, completions: [Int32Array.from([1, 2, 3])] }]);
      assert.ok(
        r!.logprobs[0]!.every((x) => Number.isFinite(x) && x < 0),
        name,
      );
    } finally {
      m.dispose();
    }
  }
});
