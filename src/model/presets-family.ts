/**
 * Qwen2.5-VL and Qwen3-VL (dense) checkpoint layouts for `vqalab model init --preset
 * qwen2.5-vl-3b | qwen3-vl-2b`: the dims of the released Instruct checkpoints, their config.json
 * (same keys and values as the published files, for any dims), every tensor of model.safetensors
 * with its published name and shape (the processor files: src/model/processor-files.ts).
 *
 * This file only exports data and pure functions; the presets mechanism (src/model/presets.ts,
 * init) wires them in. `familyTensorSpecs` matches the engine's parameter table
 * (native/src/model_load.cc), which test/engine/families.test.ts checks by loading a shrunk folder.
 *
 * Layouts (transformers' modeling_qwen2_5_vl.py / modeling_qwen3_vl.py):
 * - Qwen2.5-VL: vision blocks with RMSNorm (weight only), qkv/proj with bias, a gated SiLU MLP with
 *   biases (gate_proj, up_proj, down_proj); the merger's ln_q is an RMSNorm; the language model is
 *   Qwen2-VL's (q/k/v bias). Flat config.json like Qwen2-VL's, vision_config with window_size,
 *   fullatt_block_indexes, out_hidden_size.
 * - Qwen3-VL: patch embedding with bias, learned position embeddings (num_position_embeddings), vision
 *   blocks with LayerNorm and linear_fc1/linear_fc2 (gelu_pytorch_tanh), merger norm/linear_fc1/
 *   linear_fc2, one DeepStack merger per deepstack_visual_indexes entry (LayerNorm over 4E);
 *   language model without q/k/v bias, with q_norm/k_norm (head_dim) and an explicit head_dim.
 *   Nested config.json (text_config, vision_config), rope in text_config.rope_scaling.
 */
import type { TensorSpec } from './qwen2vl.js';
import { scaleMropeSection, type DimOverrides } from './presets.js';
import { QWEN_TOKENIZER_FAMILIES } from './qwen-tokenizer.js';

export type FamilyModelType = 'qwen2_5_vl' | 'qwen3_vl';

export interface FamilyDims {
  modelType: FamilyModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  /** Qwen3-VL: given in config.json; Qwen2.5-VL: hiddenSize / numAttentionHeads. */
  headDim: number;
  mropeSection: [number, number, number];
  tieWordEmbeddings: boolean;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  initializerRange: number;
  /** Qwen2.5-VL config.json max_window_layers (70 in the 3B file, 28 in the 7B file; unused by the model). */
  maxWindowLayers?: number;
  vision: {
    depth: number;
    hiddenSize: number;
    intermediateSize: number;
    numHeads: number;
    patchSize: number;
    temporalPatchSize: number;
    spatialMergeSize: number;
    inChannels: number;
    /** Qwen2.5-VL */
    windowSize?: number;
    fullattBlockIndexes?: number[];
    tokensPerSecond?: number;
    /** Qwen3-VL */
    numPositionEmbeddings?: number;
    deepstackVisualIndexes?: number[];
  };
}

/** The special token ids of the Qwen tokenizer that the configs name. */
export const FAMILY_TOKEN_IDS = {
  bos: 151643,
  eos: 151645,
  visionStart: 151652,
  visionEnd: 151653,
  visionPad: 151654,
  image: 151655,
  video: 151656,
} as const;

/**
 * What the Qwen2.5-VL and Qwen3-VL releases share: the Qwen vocabulary (the 7B pads it), norms,
 * initialisation, heads of 128, a tied head (the 7B and 8B untie it).
 */
const QWEN_VL_COMMON = {
  vocabSize: 151936,
  rmsNormEps: 1e-6,
  initializerRange: 0.02,
  headDim: 128,
  tieWordEmbeddings: true,
};

/** The vision patching both families share: 2 frames a temporal patch, 2 × 2 merge, RGB. */
const QWEN_VL_PATCHING = { temporalPatchSize: 2, spatialMergeSize: 2, inChannels: 3 };

/** The fields a released size sets; its family gives the rest. */
type SizeField = 'hiddenSize' | 'intermediateSize' | 'numHiddenLayers' | 'numAttentionHeads' | 'numKeyValueHeads';
type Family = Omit<FamilyDims, SizeField>;

/** A released size in the terms of `vqalab model init`'s overrides: the language model's depth, width, MLP, heads. */
type ReleasedSize = Required<Pick<DimOverrides, 'layers' | 'hidden' | 'intermediate' | 'heads' | 'kvHeads'>>;

/** A family at one released size; `rest`: what the size changes beyond that (vocabulary, head, vision tower). */
function sized(family: Family, size: ReleasedSize, rest: Partial<FamilyDims> = {}): FamilyDims {
  return {
    ...family,
    numHiddenLayers: size.layers,
    hiddenSize: size.hidden,
    intermediateSize: size.intermediate,
    numAttentionHeads: size.heads,
    numKeyValueHeads: size.kvHeads,
    ...rest,
  };
}

/** The vision tower of every Qwen2.5-VL size: 32 × 1280, windows of 112 px, full attention at 7/15/23/31. */
const QWEN25VL_VISION: FamilyDims['vision'] = {
  ...QWEN_VL_PATCHING,
  depth: 32,
  hiddenSize: 1280,
  intermediateSize: 3420,
  numHeads: 16,
  patchSize: 14,
  windowSize: 112,
  fullattBlockIndexes: [7, 15, 23, 31],
  tokensPerSecond: 2,
};

/** The vision tower of Qwen3-VL-2B and -4B: 24 × 1024, learned positions, DeepStack at 5/11/17. */
const QWEN3VL_VISION: FamilyDims['vision'] = {
  ...QWEN_VL_PATCHING,
  depth: 24,
  hiddenSize: 1024,
  intermediateSize: 4096,
  numHeads: 16,
  patchSize: 16,
  numPositionEmbeddings: 2304,
  deepstackVisualIndexes: [5, 11, 17],
};

/** Every Qwen2.5-VL size: rope, context and vision tower. */
const QWEN25VL: Family = {
  ...QWEN_VL_COMMON,
  modelType: 'qwen2_5_vl',
  mropeSection: [16, 24, 24],
  ropeTheta: 1_000_000,
  maxPositionEmbeddings: 128000,
  vision: QWEN25VL_VISION,
};

/** Every Qwen3-VL size: rope and context (interleaved M-RoPE), the small sizes' vision tower. */
const QWEN3VL: Family = {
  ...QWEN_VL_COMMON,
  modelType: 'qwen3_vl',
  mropeSection: [24, 20, 20],
  ropeTheta: 5_000_000,
  maxPositionEmbeddings: 262144,
  vision: QWEN3VL_VISION,
};

/** Qwen/Qwen2.5-VL-3B-Instruct. */
export const QWEN25VL_3B = sized(QWEN25VL, { layers: 36, hidden: 2048, intermediate: 11008, heads: 16, kvHeads: 2 });

/** Qwen/Qwen2.5-VL-7B-Instruct: untied head, vocab 152064, max_window_layers 28. */
export const QWEN25VL_7B = sized(
  QWEN25VL,
  { layers: 28, hidden: 3584, intermediate: 18944, heads: 28, kvHeads: 4 },
  { vocabSize: 152064, tieWordEmbeddings: false, maxWindowLayers: 28 },
);

/** Qwen/Qwen3-VL-2B-Instruct. */
export const QWEN3VL_2B = sized(QWEN3VL, { layers: 28, hidden: 2048, intermediate: 6144, heads: 16, kvHeads: 8 });

/** Qwen/Qwen3-VL-4B-Instruct: the 2B's vision tower, a 36 × 2560 language model, tied head. */
export const QWEN3VL_4B = sized(QWEN3VL, { layers: 36, hidden: 2560, intermediate: 9728, heads: 32, kvHeads: 8 });

/** Qwen/Qwen3-VL-8B-Instruct: vision 27 × 1152 (DeepStack at 8/16/24), 36 × 4096, untied head. */
export const QWEN3VL_8B = sized(
  QWEN3VL,
  { layers: 36, hidden: 4096, intermediate: 12288, heads: 32, kvHeads: 8 },
  {
    tieWordEmbeddings: false,
    vision: {
      ...QWEN3VL_VISION,
      depth: 27,
      hiddenSize: 1152,
      intermediateSize: 4304,
      deepstackVisualIndexes: [8, 16, 24],
    },
  },
);

/**
 * The presets by CLI name, for the presets mechanism to list.
 *
 * Sources of the numbers (the published config.json of each checkpoint could not be downloaded
 * here; the values were read from copies of those files quoted in public code and checked against
 * each other): Qwen2.5-VL-3B-Instruct and -7B-Instruct (flat form, transformers 4.41.2 era:
 * hidden 2048/3584, MLP 11008/18944, 36/28 layers, 16/28 heads, 2/4 KV heads, vocab 151936/152064,
 * tied/untied, max_window_layers 70/28, vision 32 × 1280 with MLP 3420, window 112, full attention
 * at 7/15/23/31, tokens_per_second 2); Qwen3-VL-2B/4B/8B-Instruct (nested form, transformers
 * 4.57.0.dev0: text 28 × 2048 / 36 × 2560 / 36 × 4096, MLP 6144/9728/12288, 16/32/32 heads of 128,
 * 8 KV heads, rope_theta 5e6, mrope_section [24, 20, 20] interleaved, max positions 262144,
 * tied/tied/untied; vision 24 × 1024 (MLP 4096, DeepStack 5/11/17) for 2B and 4B, 27 × 1152 (MLP
 * 4304, DeepStack 8/16/24) for 8B; patch 16, 2304 position embeddings). The module tree of the
 * 7B (Embedding(152064, 3584), k_proj 3584 → 512) matches.
 */
export const FAMILY_PRESETS: Record<string, { checkpoint: string; description: string; dims: FamilyDims }> = {
  'qwen2.5-vl-3b': {
    checkpoint: 'Qwen/Qwen2.5-VL-3B-Instruct',
    description:
      'Qwen2.5-VL-3B-Instruct: 36 layers × 2048 (16 heads, 2 KV heads), MLP 11008, vision 32 × 1280 (windows of 112 px, full attention at 7/15/23/31)',
    dims: QWEN25VL_3B,
  },
  'qwen2.5-vl-7b': {
    checkpoint: 'Qwen/Qwen2.5-VL-7B-Instruct',
    description:
      'Qwen2.5-VL-7B-Instruct: 28 layers × 3584 (28 heads, 4 KV heads), MLP 18944, untied head over 152064, vision 32 × 1280',
    dims: QWEN25VL_7B,
  },
  'qwen3-vl-2b': {
    checkpoint: 'Qwen/Qwen3-VL-2B-Instruct',
    description:
      'Qwen3-VL-2B-Instruct: 28 layers × 2048 (16 heads of 128, 8 KV heads), MLP 6144, vision 24 × 1024 (patch 16, DeepStack at 5/11/17)',
    dims: QWEN3VL_2B,
  },
  'qwen3-vl-4b': {
    checkpoint: 'Qwen/Qwen3-VL-4B-Instruct',
    description:
      'Qwen3-VL-4B-Instruct: 36 layers × 2560 (32 heads of 128, 8 KV heads), MLP 9728, vision 24 × 1024 (DeepStack at 5/11/17)',
    dims: QWEN3VL_4B,
  },
  'qwen3-vl-8b': {
    checkpoint: 'Qwen/Qwen3-VL-8B-Instruct',
    description:
      'Qwen3-VL-8B-Instruct: 36 layers × 4096 (32 heads of 128, 8 KV heads), MLP 12288, untied head, vision 27 × 1152 (DeepStack at 8/16/24)',
    dims: QWEN3VL_8B,
  },
};

/** Errors name what to change; called by the config and tensor writers. */
export function checkFamilyDims(d: FamilyDims): void {
  const bad = (m: string) => {
    throw new Error(`${d.modelType} dims: ${m}`);
  };
  if (d.numAttentionHeads % d.numKeyValueHeads !== 0)
    bad(`num_attention_heads ${d.numAttentionHeads} is not a multiple of num_key_value_heads ${d.numKeyValueHeads}`);
  if (d.modelType === 'qwen2_5_vl' && d.headDim * d.numAttentionHeads !== d.hiddenSize)
    bad(`head_dim ${d.headDim} must be hidden_size / num_attention_heads = ${d.hiddenSize / d.numAttentionHeads}`);
  if (d.headDim % 2 !== 0) bad(`head_dim ${d.headDim} must be even`);
  const s = d.mropeSection;
  if (s[0] + s[1] + s[2] !== d.headDim / 2)
    bad(`mrope_section ${JSON.stringify(s)} must sum to head_dim / 2 = ${d.headDim / 2}`);
  const v = d.vision;
  if (v.hiddenSize % v.numHeads !== 0 || (v.hiddenSize / v.numHeads) % 4 !== 0)
    bad(`vision hidden_size ${v.hiddenSize} must split into ${v.numHeads} heads of a size divisible by 4`);
  if (d.modelType === 'qwen2_5_vl') {
    if (!v.windowSize || v.windowSize % (v.patchSize * v.spatialMergeSize) !== 0)
      bad(`window_size ${v.windowSize} must be a multiple of ${v.patchSize * v.spatialMergeSize}`);
    if ((v.fullattBlockIndexes ?? []).some((i) => i >= v.depth))
      bad(`fullatt_block_indexes ${JSON.stringify(v.fullattBlockIndexes)} must be below depth ${v.depth}`);
  } else {
    const n = v.numPositionEmbeddings ?? 0;
    if (n <= 0 || Math.round(Math.sqrt(n)) ** 2 !== n) bad(`num_position_embeddings ${n} must be a positive square`);
    const ds = v.deepstackVisualIndexes ?? [];
    if (ds.some((i) => i >= v.depth))
      bad(`deepstack_visual_indexes ${JSON.stringify(ds)} must be below depth ${v.depth}`);
    if (ds.length > d.numHiddenLayers)
      bad(`${ds.length} deepstack_visual_indexes need as many language model layers (${d.numHiddenLayers})`);
  }
}

/** Qwen2.5-VL-3B-Instruct's config.json layout (flat), for any dims. */
export function qwen25vlConfigJson(d: FamilyDims): Record<string, unknown> {
  checkFamilyDims(d);
  const id = FAMILY_TOKEN_IDS,
    v = d.vision;
  return {
    architectures: ['Qwen2_5_VLForConditionalGeneration'],
    attention_dropout: 0.0,
    bos_token_id: id.bos,
    eos_token_id: id.eos,
    vision_start_token_id: id.visionStart,
    vision_end_token_id: id.visionEnd,
    vision_token_id: id.visionPad,
    image_token_id: id.image,
    video_token_id: id.video,
    hidden_act: 'silu',
    hidden_size: d.hiddenSize,
    initializer_range: d.initializerRange,
    intermediate_size: d.intermediateSize,
    max_position_embeddings: d.maxPositionEmbeddings,
    max_window_layers: d.maxWindowLayers ?? 70,
    model_type: 'qwen2_5_vl',
    num_attention_heads: d.numAttentionHeads,
    num_hidden_layers: d.numHiddenLayers,
    num_key_value_heads: d.numKeyValueHeads,
    rms_norm_eps: d.rmsNormEps,
    rope_theta: d.ropeTheta,
    sliding_window: 32768,
    tie_word_embeddings: d.tieWordEmbeddings,
    torch_dtype: 'bfloat16',
    transformers_version: '4.41.2',
    use_cache: true,
    use_sliding_window: false,
    vision_config: {
      depth: v.depth,
      hidden_act: 'silu',
      hidden_size: v.hiddenSize,
      intermediate_size: v.intermediateSize,
      num_heads: v.numHeads,
      in_chans: v.inChannels,
      out_hidden_size: d.hiddenSize,
      patch_size: v.patchSize,
      spatial_merge_size: v.spatialMergeSize,
      spatial_patch_size: v.patchSize,
      window_size: v.windowSize,
      fullatt_block_indexes: [...(v.fullattBlockIndexes ?? [])],
      tokens_per_second: v.tokensPerSecond ?? 2,
      temporal_patch_size: v.temporalPatchSize,
    },
    rope_scaling: { type: 'mrope', mrope_section: [...d.mropeSection] },
    vocab_size: d.vocabSize,
  };
}

/** Qwen3-VL-2B-Instruct's config.json layout (nested), for any dims. */
export function qwen3vlConfigJson(d: FamilyDims): Record<string, unknown> {
  checkFamilyDims(d);
  const id = FAMILY_TOKEN_IDS,
    v = d.vision;
  return {
    architectures: ['Qwen3VLForConditionalGeneration'],
    image_token_id: id.image,
    model_type: 'qwen3_vl',
    text_config: {
      attention_bias: false,
      attention_dropout: 0.0,
      bos_token_id: id.bos,
      dtype: 'bfloat16',
      eos_token_id: id.eos,
      head_dim: d.headDim,
      hidden_act: 'silu',
      hidden_size: d.hiddenSize,
      initializer_range: d.initializerRange,
      intermediate_size: d.intermediateSize,
      max_position_embeddings: d.maxPositionEmbeddings,
      model_type: 'qwen3_vl_text',
      num_attention_heads: d.numAttentionHeads,
      num_hidden_layers: d.numHiddenLayers,
      num_key_value_heads: d.numKeyValueHeads,
      rms_norm_eps: d.rmsNormEps,
      rope_scaling: { mrope_interleaved: true, mrope_section: [...d.mropeSection], rope_type: 'default' },
      rope_theta: d.ropeTheta,
      tie_word_embeddings: d.tieWordEmbeddings,
      use_cache: true,
      vocab_size: d.vocabSize,
    },
    tie_word_embeddings: d.tieWordEmbeddings,
    transformers_version: '4.57.0.dev0',
    video_token_id: id.video,
    vision_config: {
      deepstack_visual_indexes: [...(v.deepstackVisualIndexes ?? [])],
      depth: v.depth,
      hidden_act: 'gelu_pytorch_tanh',
      hidden_size: v.hiddenSize,
      in_channels: v.inChannels,
      initializer_range: d.initializerRange,
      intermediate_size: v.intermediateSize,
      model_type: 'qwen3_vl',
      num_heads: v.numHeads,
      num_position_embeddings: v.numPositionEmbeddings,
      out_hidden_size: d.hiddenSize,
      patch_size: v.patchSize,
      spatial_merge_size: v.spatialMergeSize,
      temporal_patch_size: v.temporalPatchSize,
    },
    vision_end_token_id: id.visionEnd,
    vision_start_token_id: id.visionStart,
  };
}

export function familyConfigJson(d: FamilyDims): Record<string, unknown> {
  return d.modelType === 'qwen2_5_vl' ? qwen25vlConfigJson(d) : qwen3vlConfigJson(d);
}

/**
 * Every tensor of model.safetensors with the published names (Qwen2.5-VL: `visual.*`,
 * `model.layers.*`; Qwen3-VL's released files use transformers 5's `model.visual.*` /
 * `model.language_model.*`, which the engine reads as well: pass `internal` to get those).
 */
export function familyTensorSpecs(d: FamilyDims, { internal = d.modelType === 'qwen3_vl' } = {}): TensorSpec[] {
  checkFamilyDims(d);
  const out: TensorSpec[] = [];
  const rename = (n: string) => {
    if (!internal) return n;
    if (n.startsWith('visual.')) return `model.${n}`;
    if (n.startsWith('model.')) return `model.language_model.${n.slice('model.'.length)}`;
    return n;
  };
  const w = (name: string, ...shape: number[]) => out.push({ name: rename(name), shape, init: 'normal' });
  const z = (name: string, ...shape: number[]) => out.push({ name: rename(name), shape, init: 'zeros' });
  const one = (name: string, ...shape: number[]) => out.push({ name: rename(name), shape, init: 'ones' });
  const lin = (name: string, i: number, o: number, bias = true) => {
    w(`${name}.weight`, o, i);
    if (bias) z(`${name}.bias`, o);
  };
  const v = d.vision,
    E = v.hiddenSize,
    F = v.intermediateSize,
    M = E * v.spatialMergeSize ** 2,
    H = d.hiddenSize;
  const q3 = d.modelType === 'qwen3_vl';
  w('visual.patch_embed.proj.weight', E, v.inChannels, v.temporalPatchSize, v.patchSize, v.patchSize);
  if (q3) {
    z('visual.patch_embed.proj.bias', E);
    w('visual.pos_embed.weight', v.numPositionEmbeddings!, E);
  }
  for (let i = 0; i < v.depth; i++) {
    const p = `visual.blocks.${i}`;
    one(`${p}.norm1.weight`, E);
    if (q3) z(`${p}.norm1.bias`, E);
    one(`${p}.norm2.weight`, E);
    if (q3) z(`${p}.norm2.bias`, E);
    lin(`${p}.attn.qkv`, E, 3 * E);
    lin(`${p}.attn.proj`, E, E);
    if (q3) {
      lin(`${p}.mlp.linear_fc1`, E, F);
      lin(`${p}.mlp.linear_fc2`, F, E);
    } else {
      lin(`${p}.mlp.gate_proj`, E, F);
      lin(`${p}.mlp.up_proj`, E, F);
      lin(`${p}.mlp.down_proj`, F, E);
    }
  }
  if (q3) {
    one('visual.merger.norm.weight', E);
    z('visual.merger.norm.bias', E);
    lin('visual.merger.linear_fc1', M, M);
    lin('visual.merger.linear_fc2', M, H);
    (v.deepstackVisualIndexes ?? []).forEach((_, k) => {
      const p = `visual.deepstack_merger_list.${k}`;
      one(`${p}.norm.weight`, M);
      z(`${p}.norm.bias`, M);
      lin(`${p}.linear_fc1`, M, M);
      lin(`${p}.linear_fc2`, M, H);
    });
  } else {
    one('visual.merger.ln_q.weight', E);
    lin('visual.merger.mlp.0', M, M);
    lin('visual.merger.mlp.2', M, H);
  }
  const D = d.headDim,
    KV = d.numKeyValueHeads * D,
    Q = d.numAttentionHeads * D,
    I = d.intermediateSize;
  w('model.embed_tokens.weight', d.vocabSize, H);
  for (let i = 0; i < d.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    lin(`${p}.self_attn.q_proj`, H, Q, !q3);
    lin(`${p}.self_attn.k_proj`, H, KV, !q3);
    lin(`${p}.self_attn.v_proj`, H, KV, !q3);
    lin(`${p}.self_attn.o_proj`, Q, H, false);
    if (q3) {
      one(`${p}.self_attn.q_norm.weight`, D);
      one(`${p}.self_attn.k_norm.weight`, D);
    }
    lin(`${p}.mlp.gate_proj`, H, I, false);
    lin(`${p}.mlp.up_proj`, H, I, false);
    lin(`${p}.mlp.down_proj`, I, H, false);
    one(`${p}.input_layernorm.weight`, H);
    one(`${p}.post_attention_layernorm.weight`, H);
  }
  one('model.norm.weight', H);
  if (!d.tieWordEmbeddings) w('lm_head.weight', d.vocabSize, H);
  return out;
}

/**
 * Block indexes of a released layout mapped to a shrunk depth: Qwen2.5-VL's full-attention blocks
 * keep their period (every 8th block; the last block when fewer than 8), Qwen3-VL's DeepStack
 * blocks keep their relative depth (rounded, deduplicated).
 */
function shrinkIndexes(
  base: readonly number[],
  baseDepth: number,
  depth: number,
  mode: 'period' | 'relative',
): number[] {
  if (depth === baseDepth) return [...base];
  if (base.length === 0) return [];
  if (mode === 'period') {
    const period = Math.round(baseDepth / base.length);
    const out: number[] = [];
    for (let i = 0; i < depth; i++) if ((i + 1) % period === 0) out.push(i);
    return out.length ? out : [depth - 1];
  }
  const out = base.map((i) => Math.min(depth - 1, Math.round((i * depth) / baseDepth)));
  return [...new Set(out)];
}

/** A family preset's dims with `vqalab model init` overrides applied; errors name the flag to change. */
export function familyPresetDims(base: FamilyDims, o: DimOverrides): FamilyDims {
  const d: FamilyDims = { ...base, mropeSection: [...base.mropeSection], vision: { ...base.vision } };
  const q3 = d.modelType === 'qwen3_vl';
  if (o.hidden !== undefined) d.hiddenSize = o.hidden;
  if (o.layers !== undefined) d.numHiddenLayers = o.layers;
  if (o.heads !== undefined) d.numAttentionHeads = o.heads;
  if (o.kvHeads !== undefined) d.numKeyValueHeads = o.kvHeads;
  if (o.intermediate !== undefined) d.intermediateSize = o.intermediate;
  if (o.vocab !== undefined) d.vocabSize = o.vocab;
  if (o.maxPositions !== undefined) d.maxPositionEmbeddings = o.maxPositions;
  if (o.initStd !== undefined) d.initializerRange = o.initStd;
  if (o.tie !== undefined) d.tieWordEmbeddings = o.tie;
  if (!q3 || o.hidden !== undefined || o.heads !== undefined || o.headDim !== undefined) {
    if (o.headDim !== undefined && !q3)
      throw new Error("--head-dim is a Qwen3-VL setting; Qwen2.5-VL's head size is --hidden / --heads");
    if (o.headDim === undefined && d.hiddenSize % d.numAttentionHeads !== 0) {
      throw new Error(
        `--hidden ${d.hiddenSize} is not divisible by --heads ${d.numAttentionHeads}; pick a head count that divides it${q3 ? ' or give --head-dim' : ''}`,
      );
    }
    d.headDim = o.headDim ?? d.hiddenSize / d.numAttentionHeads;
  }
  if (d.numAttentionHeads % d.numKeyValueHeads !== 0)
    throw new Error(`--heads ${d.numAttentionHeads} is not divisible by --kv-heads ${d.numKeyValueHeads}`);
  if (d.headDim % 2 !== 0) throw new Error(`head size ${d.headDim} must be even (rotary halves)`);
  d.mropeSection =
    o.mropeSection ??
    (d.headDim === base.headDim ? [...base.mropeSection] : scaleMropeSection(base.mropeSection, d.headDim));
  const v = d.vision;
  if (o.visionDim !== undefined) {
    v.hiddenSize = o.visionDim;
    v.intermediateSize = Math.max(1, Math.round((base.vision.intermediateSize * o.visionDim) / base.vision.hiddenSize));
  }
  if (o.visionIntermediate !== undefined) v.intermediateSize = o.visionIntermediate;
  if (o.visionHeads !== undefined) v.numHeads = o.visionHeads;
  if (o.visionDepth !== undefined) v.depth = o.visionDepth;
  if (v.hiddenSize % v.numHeads !== 0 || (v.hiddenSize / v.numHeads) % 4 !== 0) {
    throw new Error(
      `--vision-dim ${v.hiddenSize} must split into --vision-heads ${v.numHeads} heads of a size divisible by 4`,
    );
  }
  if (q3) {
    v.deepstackVisualIndexes = shrinkIndexes(
      base.vision.deepstackVisualIndexes ?? [],
      base.vision.depth,
      v.depth,
      'relative',
    ).slice(0, d.numHiddenLayers);
  } else {
    v.fullattBlockIndexes = shrinkIndexes(base.vision.fullattBlockIndexes ?? [], base.vision.depth, v.depth, 'period');
  }
  const tokenizerIds = QWEN_TOKENIZER_FAMILIES[d.modelType].lastAddedId + 1;
  if (d.vocabSize < tokenizerIds) {
    throw new Error(
      `--vocab ${d.vocabSize} is smaller than the ${d.modelType} tokenizer (${tokenizerIds} ids); it must hold every token id`,
    );
  }
  checkFamilyDims(d);
  return d;
}
