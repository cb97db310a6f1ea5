/**
 * Real architectures' dimensions, for `vqalab model init DIR --preset NAME`: a folder with random
 * weights at the released checkpoint's dims, config.json exactly as the Hugging Face checkpoint's
 * (same keys, same values, same order), and the real Qwen tokenizer (src/model/qwen-tokenizer.ts).
 * Overrides (`--hidden`, `--layers`, ...) shrink it for tests and CPU checks; the config then
 * keeps the checkpoint's shape with the changed numbers.
 */
import { checkDims, type Qwen2VLDims } from './qwen2vl.js';
import { QWEN2VL_SPECIAL_IDS } from './qwen-tokenizer.js';

export interface ModelPreset {
  name: string;
  /** The Hugging Face checkpoint whose config.json this reproduces. */
  checkpoint: string;
  description: string;
  dims: Qwen2VLDims;
  /** config.json of the checkpoint for these dims (exact for the preset's own dims). */
  configJson: (d: Qwen2VLDims) => Record<string, unknown>;
}

const QWEN2VL_2B: Qwen2VLDims = {
  vocabSize: 151936,
  hiddenSize: 1536,
  intermediateSize: 8960,
  numHiddenLayers: 28,
  numAttentionHeads: 12,
  numKeyValueHeads: 2,
  mropeSection: [16, 24, 24],
  tieWordEmbeddings: true,
  rmsNormEps: 1e-6,
  ropeTheta: 1_000_000,
  maxPositionEmbeddings: 32768,
  initializerRange: 0.02,
  vision: {
    depth: 32,
    embedDim: 1280,
    numHeads: 16,
    mlpRatio: 4,
    patchSize: 14,
    temporalPatchSize: 2,
    spatialMergeSize: 2,
    inChannels: 3,
  },
};

/** Qwen/Qwen2-VL-2B-Instruct's config.json layout (transformers 4.41-era flat form), for any dims. */
export function qwen2vlInstructConfigJson(d: Qwen2VLDims): Record<string, unknown> {
  checkDims(d);
  const id = QWEN2VL_SPECIAL_IDS;
  return {
    architectures: ['Qwen2VLForConditionalGeneration'],
    attention_dropout: 0.0,
    bos_token_id: id['<|endoftext|>'],
    eos_token_id: id['<|im_end|>'],
    vision_start_token_id: id['<|vision_start|>'],
    vision_end_token_id: id['<|vision_end|>'],
    vision_token_id: id['<|vision_pad|>'],
    image_token_id: id['<|image_pad|>'],
    video_token_id: id['<|video_pad|>'],
    hidden_act: 'silu',
    hidden_size: d.hiddenSize,
    initializer_range: d.initializerRange,
    intermediate_size: d.intermediateSize,
    max_position_embeddings: d.maxPositionEmbeddings,
    max_window_layers: d.numHiddenLayers,
    model_type: 'qwen2_vl',
    num_attention_heads: d.numAttentionHeads,
    num_hidden_layers: d.numHiddenLayers,
    num_key_value_heads: d.numKeyValueHeads,
    rms_norm_eps: d.rmsNormEps,
    rope_theta: d.ropeTheta,
    sliding_window: d.maxPositionEmbeddings,
    tie_word_embeddings: d.tieWordEmbeddings,
    torch_dtype: 'bfloat16',
    transformers_version: '4.41.2',
    use_cache: true,
    use_sliding_window: false,
    vision_config: {
      depth: d.vision.depth,
      embed_dim: d.vision.embedDim,
      mlp_ratio: d.vision.mlpRatio,
      num_heads: d.vision.numHeads,
      in_chans: d.vision.inChannels,
      hidden_size: d.hiddenSize,
      patch_size: d.vision.patchSize,
      spatial_merge_size: d.vision.spatialMergeSize,
      spatial_patch_size: d.vision.patchSize,
      temporal_patch_size: d.vision.temporalPatchSize,
    },
    rope_scaling: { type: 'mrope', mrope_section: [...d.mropeSection] },
    vocab_size: d.vocabSize,
  };
}

export const MODEL_PRESETS: Record<string, ModelPreset> = {
  'qwen2-vl-2b': {
    name: 'qwen2-vl-2b',
    checkpoint: 'Qwen/Qwen2-VL-2B-Instruct',
    description:
      'Qwen2-VL-2B-Instruct: 28 layers × 1536 (12 heads, 2 KV heads), MLP 8960, vision 32 × 1280; 2.21 B parameters',
    dims: QWEN2VL_2B,
    configJson: qwen2vlInstructConfigJson,
  },
};

/** Size overrides of a preset (flags of `vqalab model init`). */
export interface DimOverrides {
  hidden?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  intermediate?: number;
  visionDepth?: number;
  visionDim?: number;
  visionHeads?: number;
  /** Qwen2.5-VL / Qwen3-VL: vision_config.intermediate_size (default scaled with --vision-dim). */
  visionIntermediate?: number;
  /** Qwen3-VL: text_config.head_dim (default hidden / heads when either is overridden). */
  headDim?: number;
  vocab?: number;
  mropeSection?: [number, number, number];
  maxPositions?: number;
  initStd?: number;
  tie?: boolean;
}

/**
 * The rotary sections for a head size: the preset's proportions (Qwen2-VL: 16/24/24 of 64) scaled
 * to head_dim / 2, the remainder split between height and width.
 */
export function scaleMropeSection(base: readonly [number, number, number], headDim: number): [number, number, number] {
  const half = headDim / 2;
  const total = base[0] + base[1] + base[2];
  const t = Math.max(0, Math.round((half * base[0]) / total));
  const h = Math.ceil((half - t) / 2);
  return [t, h, half - t - h];
}

/** The preset's dims with overrides applied; errors name the flag to change. */
export function presetDims(preset: ModelPreset, o: DimOverrides): Qwen2VLDims {
  const d: Qwen2VLDims = { ...preset.dims, vision: { ...preset.dims.vision } };
  if (o.hidden !== undefined) d.hiddenSize = o.hidden;
  if (o.layers !== undefined) d.numHiddenLayers = o.layers;
  if (o.heads !== undefined) d.numAttentionHeads = o.heads;
  if (o.kvHeads !== undefined) d.numKeyValueHeads = o.kvHeads;
  if (o.intermediate !== undefined) d.intermediateSize = o.intermediate;
  if (o.visionDepth !== undefined) d.vision.depth = o.visionDepth;
  if (o.visionDim !== undefined) d.vision.embedDim = o.visionDim;
  if (o.visionHeads !== undefined) d.vision.numHeads = o.visionHeads;
  if (o.vocab !== undefined) d.vocabSize = o.vocab;
  if (o.maxPositions !== undefined) d.maxPositionEmbeddings = o.maxPositions;
  if (o.initStd !== undefined) d.initializerRange = o.initStd;
  if (o.tie !== undefined) d.tieWordEmbeddings = o.tie;
  if (d.hiddenSize % d.numAttentionHeads !== 0) {
    throw new Error(
      `--hidden ${d.hiddenSize} is not divisible by --heads ${d.numAttentionHeads}; pick a head count that divides it`,
    );
  }
  if (d.numAttentionHeads % d.numKeyValueHeads !== 0) {
    throw new Error(`--heads ${d.numAttentionHeads} is not divisible by --kv-heads ${d.numKeyValueHeads}`);
  }
  const headDim = d.hiddenSize / d.numAttentionHeads;
  if (headDim % 2 !== 0) throw new Error(`head size ${headDim} (--hidden / --heads) must be even (rotary halves)`);
  d.mropeSection =
    o.mropeSection ??
    (headDim === preset.dims.hiddenSize / preset.dims.numAttentionHeads
      ? preset.dims.mropeSection
      : scaleMropeSection(preset.dims.mropeSection, headDim));
  if (d.vision.embedDim % d.vision.numHeads !== 0 || (d.vision.embedDim / d.vision.numHeads) % 4 !== 0) {
    throw new Error(
      `--vision-dim ${d.vision.embedDim} must split into --vision-heads ${d.vision.numHeads} heads of a size divisible by 4`,
    );
  }
  if (d.vocabSize < QWEN2VL_SPECIAL_IDS['<|video_pad|>']! + 1) {
    throw new Error(
      `--vocab ${d.vocabSize} is smaller than the Qwen tokenizer (${QWEN2VL_SPECIAL_IDS['<|video_pad|>']! + 1} ids); it must hold every token id`,
    );
  }
  checkDims(d);
  return d;
}
