/**
 * Reads a Hugging Face Qwen2-VL config.json in either form and normalises it:
 * - nested (transformers 5): text_config / vision_config, rope in text_config.rope_parameters;
 * - flat (published checkpoints): the language model's fields at the top level, rope_scaling
 *   {type: "mrope", mrope_section}, vision_config with in_chans.
 * Errors name the file and the field.
 */
import { readFileSync } from 'node:fs';
import type { NativeConfig } from './native.js';

export interface EngineConfig {
  modelType: 'qwen2_vl';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  mropeSection: [number, number, number];
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  imageTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  vision: {
    depth: number;
    embedDim: number;
    numHeads: number;
    mlpHidden: number;
    hiddenSize: number;
    hiddenAct: 'quick_gelu' | 'gelu';
    inChannels: number;
    patchSize: number;
    temporalPatchSize: number;
    spatialMergeSize: number;
    /** Base of the vision tower's 2D rotary embedding (vision_config.rope_parameters.rope_theta; 10000). */
    ropeTheta: number;
  };
  /** Which form the file used. */
  form: 'nested' | 'flat';
}

type Obj = Record<string, unknown>;

export const SUPPORTED_MODEL_TYPES = ['qwen2_vl'] as const;

export function parseConfig(raw: unknown, file: string): EngineConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${file}: expected a JSON object`);
  const top = raw as Obj;
  const modelType = top.model_type;
  if (modelType !== 'qwen2_vl') {
    throw new Error(`${file}: unsupported model_type ${JSON.stringify(modelType)}; supported: ${SUPPORTED_MODEL_TYPES.map((t) => JSON.stringify(t)).join(', ')}`);
  }
  const nested = typeof top.text_config === 'object' && top.text_config !== null;
  const text = (nested ? top.text_config : top) as Obj;
  const vis = top.vision_config as Obj | undefined;
  if (!vis || typeof vis !== 'object') throw new Error(`${file}: missing vision_config`);
  const where = nested ? 'text_config.' : '';

  const int = (o: Obj, key: string, prefix: string, def?: number): number => {
    const v = o[key] ?? def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new Error(`${file}: expected a non-negative integer for ${prefix}${key} but found ${JSON.stringify(v)}`);
    }
    return v;
  };
  const number = (o: Obj, key: string, prefix: string, def?: number): number => {
    const v = o[key] ?? def;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new Error(`${file}: expected a number for ${prefix}${key} but found ${JSON.stringify(v)}`);
    }
    return v;
  };

  const hidden = int(text, 'hidden_size', where);
  const heads = int(text, 'num_attention_heads', where);
  if (heads === 0 || hidden % heads !== 0) throw new Error(`${file}: ${where}hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  const kvHeads = int(text, 'num_key_value_heads', where, heads);
  if (kvHeads === 0 || heads % kvHeads !== 0) throw new Error(`${file}: ${where}num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = hidden / heads;

  // rope: transformers 5 writes rope_parameters; older files rope_scaling (+ rope_theta beside it)
  const rope = (text.rope_parameters ?? text.rope_scaling ?? top.rope_scaling) as Obj | undefined;
  if (!rope || typeof rope !== 'object') throw new Error(`${file}: missing ${where}rope_parameters (or rope_scaling) with mrope_section`);
  const ropeType = rope.rope_type ?? rope.type ?? 'default';
  if (ropeType !== 'default' && ropeType !== 'mrope') {
    throw new Error(`${file}: unsupported rope type ${JSON.stringify(ropeType)}; supported: "default", "mrope"`);
  }
  const sec = rope.mrope_section;
  if (!Array.isArray(sec) || sec.length !== 3 || !sec.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new Error(`${file}: expected 3 non-negative integers for mrope_section but found ${JSON.stringify(sec)}`);
  }
  if (sec[0] + sec[1] + sec[2] !== headDim / 2) {
    throw new Error(`${file}: mrope_section ${JSON.stringify(sec)} sums to ${sec[0] + sec[1] + sec[2]}, but head_dim / 2 is ${headDim / 2}`);
  }
  const theta = number(rope, 'rope_theta', 'rope_parameters.', (text.rope_theta ?? top.rope_theta ?? 1000000) as number);
  if (text.use_sliding_window === true) throw new Error(`${file}: use_sliding_window is not supported`);

  const tieRaw = text.tie_word_embeddings ?? top.tie_word_embeddings ?? false;
  if (typeof tieRaw !== 'boolean') throw new Error(`${file}: expected a boolean for tie_word_embeddings but found ${JSON.stringify(tieRaw)}`);

  const embedDim = int(vis, 'embed_dim', 'vision_config.');
  const vHeads = int(vis, 'num_heads', 'vision_config.');
  if (vHeads === 0 || embedDim % vHeads !== 0 || (embedDim / vHeads) % 4 !== 0) {
    throw new Error(`${file}: vision_config.embed_dim ${embedDim} must split into num_heads ${vHeads} heads of a size divisible by 4`);
  }
  const mlpRatio = number(vis, 'mlp_ratio', 'vision_config.', 4);
  const act = vis.hidden_act ?? 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') {
    throw new Error(`${file}: unsupported vision_config.hidden_act ${JSON.stringify(act)}; supported: "quick_gelu", "gelu"`);
  }
  const cfg: EngineConfig = {
    modelType: 'qwen2_vl',
    vocabSize: int(text, 'vocab_size', where),
    hiddenSize: hidden,
    intermediateSize: int(text, 'intermediate_size', where),
    numLayers: int(text, 'num_hidden_layers', where),
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    rmsNormEps: number(text, 'rms_norm_eps', where, 1e-6),
    ropeTheta: theta,
    mropeSection: [sec[0], sec[1], sec[2]],
    tieWordEmbeddings: tieRaw,
    maxPositionEmbeddings: int(text, 'max_position_embeddings', where, 32768),
    imageTokenId: int(top, 'image_token_id', '', 151655),
    visionStartTokenId: int(top, 'vision_start_token_id', '', 151652),
    visionEndTokenId: int(top, 'vision_end_token_id', '', 151653),
    vision: {
      depth: int(vis, 'depth', 'vision_config.'),
      embedDim,
      numHeads: vHeads,
      mlpHidden: Math.trunc(embedDim * mlpRatio),
      hiddenSize: int(vis, 'hidden_size', 'vision_config.', hidden),
      hiddenAct: act,
      inChannels: int(vis, vis.in_channels !== undefined ? 'in_channels' : 'in_chans', 'vision_config.', 3),
      patchSize: int(vis, 'patch_size', 'vision_config.', 14),
      temporalPatchSize: int(vis, 'temporal_patch_size', 'vision_config.', 2),
      spatialMergeSize: int(vis, 'spatial_merge_size', 'vision_config.', 2),
      ropeTheta: number((vis.rope_parameters ?? {}) as Obj, 'rope_theta', 'vision_config.rope_parameters.', 10000),
    },
    form: nested ? 'nested' : 'flat',
  };
  if (cfg.vision.hiddenSize !== hidden) {
    throw new Error(`${file}: vision_config.hidden_size ${cfg.vision.hiddenSize} must equal the language model's hidden_size ${hidden}`);
  }
  if (cfg.imageTokenId >= cfg.vocabSize) {
    throw new Error(`${file}: image_token_id ${cfg.imageTokenId} is outside the vocabulary [0, ${cfg.vocabSize})`);
  }
  return cfg;
}

export function readConfig(file: string): EngineConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read the model config (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: invalid JSON (${(err as Error).message})`);
  }
  return parseConfig(raw, file);
}

export function toNativeConfig(c: EngineConfig): NativeConfig {
  return {
    text: {
      vocab: c.vocabSize, hidden: c.hiddenSize, inter: c.intermediateSize, layers: c.numLayers, heads: c.numHeads,
      kvHeads: c.numKvHeads, headDim: c.headDim, eps: c.rmsNormEps, theta: c.ropeTheta, section: c.mropeSection,
      tied: c.tieWordEmbeddings,
    },
    vision: {
      depth: c.vision.depth, embedDim: c.vision.embedDim, numHeads: c.vision.numHeads, mlpHidden: c.vision.mlpHidden,
      outHidden: c.vision.hiddenSize, inChannels: c.vision.inChannels, patchSize: c.vision.patchSize,
      temporalPatchSize: c.vision.temporalPatchSize, merge: c.vision.spatialMergeSize,
      quickGelu: c.vision.hiddenAct === 'quick_gelu', theta: c.vision.ropeTheta,
    },
    imageTokenId: c.imageTokenId,
  };
}
