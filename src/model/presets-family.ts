/**
 * Qwen2.5-VL and Qwen3-VL (dense) checkpoint layouts for `vqalab model init --preset
 * qwen2.5-vl-3b | qwen3-vl-2b`: the dims of the released Instruct checkpoints, their config.json
 * (same keys and values as the published files, for any dims), every tensor of model.safetensors
 * with its published name and shape, and the image processor's settings.
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
  bos: 151643, eos: 151645, visionStart: 151652, visionEnd: 151653, visionPad: 151654, image: 151655, video: 151656,
} as const;

/** Qwen/Qwen2.5-VL-3B-Instruct. */
export const QWEN25VL_3B: FamilyDims = {
  modelType: 'qwen2_5_vl',
  vocabSize: 151936,
  hiddenSize: 2048,
  intermediateSize: 11008,
  numHiddenLayers: 36,
  numAttentionHeads: 16,
  numKeyValueHeads: 2,
  headDim: 128,
  mropeSection: [16, 24, 24],
  tieWordEmbeddings: true,
  rmsNormEps: 1e-6,
  ropeTheta: 1_000_000,
  maxPositionEmbeddings: 128000,
  initializerRange: 0.02,
  vision: {
    depth: 32, hiddenSize: 1280, intermediateSize: 3420, numHeads: 16, patchSize: 14, temporalPatchSize: 2,
    spatialMergeSize: 2, inChannels: 3, windowSize: 112, fullattBlockIndexes: [7, 15, 23, 31], tokensPerSecond: 2,
  },
};

/** Qwen/Qwen3-VL-2B-Instruct. */
export const QWEN3VL_2B: FamilyDims = {
  modelType: 'qwen3_vl',
  vocabSize: 151936,
  hiddenSize: 2048,
  intermediateSize: 6144,
  numHiddenLayers: 28,
  numAttentionHeads: 16,
  numKeyValueHeads: 8,
  headDim: 128,
  mropeSection: [24, 20, 20],
  tieWordEmbeddings: true,
  rmsNormEps: 1e-6,
  ropeTheta: 5_000_000,
  maxPositionEmbeddings: 262144,
  initializerRange: 0.02,
  vision: {
    depth: 24, hiddenSize: 1024, intermediateSize: 4096, numHeads: 16, patchSize: 16, temporalPatchSize: 2,
    spatialMergeSize: 2, inChannels: 3, numPositionEmbeddings: 2304, deepstackVisualIndexes: [5, 11, 17],
  },
};

/** The presets by CLI name, for the presets mechanism to list. */
export const FAMILY_PRESETS: Record<string, { checkpoint: string; description: string; dims: FamilyDims }> = {
  'qwen2.5-vl-3b': {
    checkpoint: 'Qwen/Qwen2.5-VL-3B-Instruct',
    description: 'Qwen2.5-VL-3B-Instruct: 36 layers × 2048 (16 heads, 2 KV heads), MLP 11008, vision 32 × 1280 (windows of 112 px, full attention at 7/15/23/31)',
    dims: QWEN25VL_3B,
  },
  'qwen3-vl-2b': {
    checkpoint: 'Qwen/Qwen3-VL-2B-Instruct',
    description: 'Qwen3-VL-2B-Instruct: 28 layers × 2048 (16 heads of 128, 8 KV heads), MLP 6144, vision 24 × 1024 (patch 16, DeepStack at 5/11/17)',
    dims: QWEN3VL_2B,
  },
};

/** Errors name what to change; called by the config and tensor writers. */
export function checkFamilyDims(d: FamilyDims): void {
  const bad = (m: string) => { throw new Error(`${d.modelType} dims: ${m}`); };
  if (d.numAttentionHeads % d.numKeyValueHeads !== 0) bad(`num_attention_heads ${d.numAttentionHeads} is not a multiple of num_key_value_heads ${d.numKeyValueHeads}`);
  if (d.modelType === 'qwen2_5_vl' && d.headDim * d.numAttentionHeads !== d.hiddenSize) bad(`head_dim ${d.headDim} must be hidden_size / num_attention_heads = ${d.hiddenSize / d.numAttentionHeads}`);
  if (d.headDim % 2 !== 0) bad(`head_dim ${d.headDim} must be even`);
  const s = d.mropeSection;
  if (s[0] + s[1] + s[2] !== d.headDim / 2) bad(`mrope_section ${JSON.stringify(s)} must sum to head_dim / 2 = ${d.headDim / 2}`);
  const v = d.vision;
  if (v.hiddenSize % v.numHeads !== 0 || (v.hiddenSize / v.numHeads) % 4 !== 0) bad(`vision hidden_size ${v.hiddenSize} must split into ${v.numHeads} heads of a size divisible by 4`);
  if (d.modelType === 'qwen2_5_vl') {
    if (!v.windowSize || v.windowSize % (v.patchSize * v.spatialMergeSize) !== 0) bad(`window_size ${v.windowSize} must be a multiple of ${v.patchSize * v.spatialMergeSize}`);
    if ((v.fullattBlockIndexes ?? []).some((i) => i >= v.depth)) bad(`fullatt_block_indexes ${JSON.stringify(v.fullattBlockIndexes)} must be below depth ${v.depth}`);
  } else {
    const n = v.numPositionEmbeddings ?? 0;
    if (n <= 0 || Math.round(Math.sqrt(n)) ** 2 !== n) bad(`num_position_embeddings ${n} must be a positive square`);
    const ds = v.deepstackVisualIndexes ?? [];
    if (ds.some((i) => i >= v.depth)) bad(`deepstack_visual_indexes ${JSON.stringify(ds)} must be below depth ${v.depth}`);
    if (ds.length > d.numHiddenLayers) bad(`${ds.length} deepstack_visual_indexes need as many language model layers (${d.numHiddenLayers})`);
  }
}

/** Qwen2.5-VL-3B-Instruct's config.json layout (flat), for any dims. */
export function qwen25vlConfigJson(d: FamilyDims): Record<string, unknown> {
  checkFamilyDims(d);
  const id = FAMILY_TOKEN_IDS, v = d.vision;
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
    max_window_layers: 70,
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
  const id = FAMILY_TOKEN_IDS, v = d.vision;
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
  const lin = (name: string, i: number, o: number, bias = true) => { w(`${name}.weight`, o, i); if (bias) z(`${name}.bias`, o); };
  const v = d.vision, E = v.hiddenSize, F = v.intermediateSize, M = E * v.spatialMergeSize ** 2, H = d.hiddenSize;
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
    one('visual.merger.norm.weight', E); z('visual.merger.norm.bias', E);
    lin('visual.merger.linear_fc1', M, M);
    lin('visual.merger.linear_fc2', M, H);
    (v.deepstackVisualIndexes ?? []).forEach((_, k) => {
      const p = `visual.deepstack_merger_list.${k}`;
      one(`${p}.norm.weight`, M); z(`${p}.norm.bias`, M);
      lin(`${p}.linear_fc1`, M, M);
      lin(`${p}.linear_fc2`, M, H);
    });
  } else {
    one('visual.merger.ln_q.weight', E);
    lin('visual.merger.mlp.0', M, M);
    lin('visual.merger.mlp.2', M, H);
  }
  const D = d.headDim, KV = d.numKeyValueHeads * D, Q = d.numAttentionHeads * D, I = d.intermediateSize;
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

/** preprocessor_config.json of the family (Qwen3-VL: patch 16, mean/std 0.5). */
export function familyPreprocessorConfig(d: FamilyDims): Record<string, unknown> {
  const q3 = d.modelType === 'qwen3_vl';
  const f = d.vision.patchSize * d.vision.spatialMergeSize;
  return {
    image_processor_type: q3 ? 'Qwen2VLImageProcessorFast' : 'Qwen2VLImageProcessor',
    processor_class: q3 ? 'Qwen3VLProcessor' : 'Qwen2_5_VLProcessor',
    do_resize: true,
    do_rescale: true,
    do_normalize: true,
    do_convert_rgb: true,
    rescale_factor: 1 / 255,
    resample: 3,
    image_mean: q3 ? [0.5, 0.5, 0.5] : [0.48145466, 0.4578275, 0.40821073],
    image_std: q3 ? [0.5, 0.5, 0.5] : [0.26862954, 0.26130258, 0.27577711],
    min_pixels: q3 ? f * f * 64 : 56 * 56,
    max_pixels: q3 ? f * f * 16384 : 28 * 28 * 1280,
    patch_size: d.vision.patchSize,
    temporal_patch_size: d.vision.temporalPatchSize,
    merge_size: d.vision.spatialMergeSize,
  };
}
