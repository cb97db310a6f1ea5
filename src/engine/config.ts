/**
 * Reads a Hugging Face config.json of the Qwen-VL family and normalises it. Families (`model_type`):
 * - qwen2_vl: Qwen2-VL;
 * - qwen2_5_vl: Qwen2.5-VL (vision tower with RMSNorm, gated SiLU MLP, window attention);
 * - qwen3_vl: Qwen3-VL, dense (q/k RMSNorm, interleaved M-RoPE, learned vision position
 *   embeddings, DeepStack). The MoE variant (qwen3_vl_moe) is refused.
 * Forms:
 * - nested (transformers 5, and Qwen3-VL's published files): text_config / vision_config, rope in
 *   text_config.rope_parameters (or rope_scaling + rope_theta);
 * - flat (published Qwen2-VL / Qwen2.5-VL checkpoints): the language model's fields at the top
 *   level, rope_scaling {type: "mrope", mrope_section}, vision_config with in_chans.
 * Errors name the file and the field; an unsupported family is refused here, before anything is
 * allocated.
 */
import { readFileSync } from 'node:fs';
import type { NativeConfig } from './native.js';

export type ModelType = 'qwen2_vl' | 'qwen2_5_vl' | 'qwen3_vl';

export interface EngineConfig {
  modelType: ModelType;
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
  // The fields below marked optional are absent (= Qwen2-VL's values) in configs built by hand.
  /** Qwen3-VL: frequencies alternate t, h, w (interleaved M-RoPE) instead of one block per axis. */
  mropeInterleaved?: boolean;
  /** q/k/v projections with bias (Qwen2-VL, Qwen2.5-VL) or without (Qwen3-VL). */
  attentionBias?: boolean;
  /** Qwen3-VL: per-head RMSNorm of q and k before the rotary embedding. */
  qkNorm?: boolean;
  tieWordEmbeddings: boolean;
  maxPositionEmbeddings: number;
  imageTokenId: number;
  /** video_token_id (absent: the model takes no video). */
  videoTokenId?: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  vision: {
    depth: number;
    embedDim: number;
    numHeads: number;
    mlpHidden: number;
    hiddenSize: number;
    /** The block MLP's activation; 'silu' (Qwen2.5-VL) is a gated MLP (gate, up, down). */
    hiddenAct: 'quick_gelu' | 'gelu' | 'silu' | 'gelu_pytorch_tanh';
    /** Qwen2.5-VL: RMSNorm in the blocks and the merger (else LayerNorm). */
    rmsNorm?: boolean;
    /** Qwen2.5-VL: attention window side in pixels (0: every block attends over the whole frame). */
    windowSize?: number;
    /** Qwen2.5-VL: blocks that attend over the whole frame. */
    fullattBlockIndexes?: number[];
    /** Qwen3-VL: learned position embeddings (a square grid, interpolated to the image's); 0 = none. */
    numPositionEmbeddings?: number;
    /** Qwen3-VL: blocks whose outputs are merged and added to the first decoder layers (DeepStack). */
    deepstackVisualIndexes?: number[];
    /** Qwen2.5-VL: M-RoPE time positions per second of video. */
    tokensPerSecond?: number;
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

export const SUPPORTED_MODEL_TYPES = ['qwen2_vl', 'qwen2_5_vl', 'qwen3_vl'] as const;

const supportedList = () => SUPPORTED_MODEL_TYPES.map((t) => JSON.stringify(t)).join(', ');

/**
 * The family of a parsed config.json, or an error naming the supported ones. Called first, so an
 * unsupported model is refused before anything else is read or allocated.
 */
export function detectModelType(raw: unknown, file: string): ModelType {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${file}: expected a JSON object`);
  const modelType = (raw as Obj).model_type;
  if ((SUPPORTED_MODEL_TYPES as readonly unknown[]).includes(modelType)) return modelType as ModelType;
  if (modelType === 'qwen3_vl_moe' || modelType === 'qwen3_vl_moe_text') {
    throw new Error(
      `${file}: model_type "qwen3_vl_moe" (Qwen3-VL with mixture-of-experts layers) is not supported; supported: ${supportedList()} (Qwen3-VL dense)`,
    );
  }
  throw new Error(`${file}: unsupported model_type ${JSON.stringify(modelType)}; supported: ${supportedList()}`);
}

export function parseConfig(raw: unknown, file: string): EngineConfig {
  const modelType = detectModelType(raw, file);
  const top = raw as Obj;
  const nested = typeof top.text_config === 'object' && top.text_config !== null;
  const text = (nested ? top.text_config : top) as Obj;
  const vis = top.vision_config as Obj | undefined;
  if (!vis || typeof vis !== 'object') throw new Error(`${file}: missing vision_config`);
  const where = nested ? 'text_config.' : '';
  const q3 = modelType === 'qwen3_vl';
  const q25 = modelType === 'qwen2_5_vl';
  if (q3 && !nested) throw new Error(`${file}: a qwen3_vl config needs text_config (the nested form)`);

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
  if (heads === 0 || (modelType !== 'qwen3_vl' && hidden % heads !== 0))
    throw new Error(`${file}: ${where}hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  const kvHeads = int(text, 'num_key_value_heads', where, heads);
  if (kvHeads === 0 || heads % kvHeads !== 0)
    throw new Error(
      `${file}: ${where}num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`,
    );
  // Qwen3-VL gives head_dim (transformers' default 128); the others derive it
  const headDim = q3 ? int(text, 'head_dim', where, 128) : hidden / heads;
  if (headDim === 0 || headDim % 2 !== 0)
    throw new Error(`${file}: ${where}head_dim ${headDim} must be a positive even number`);

  // rope: transformers 5 writes rope_parameters; older files rope_scaling (+ rope_theta beside it)
  const rope = (text.rope_parameters ?? text.rope_scaling ?? top.rope_scaling) as Obj | undefined;
  if (!rope || typeof rope !== 'object')
    throw new Error(`${file}: missing ${where}rope_parameters (or rope_scaling) with mrope_section`);
  const ropeType = rope.rope_type ?? rope.type ?? 'default';
  if (ropeType !== 'default' && ropeType !== 'mrope') {
    throw new Error(`${file}: unsupported rope type ${JSON.stringify(ropeType)}; supported: "default", "mrope"`);
  }
  const sec = rope.mrope_section;
  if (!Array.isArray(sec) || sec.length !== 3 || !sec.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new Error(`${file}: expected 3 non-negative integers for mrope_section but found ${JSON.stringify(sec)}`);
  }
  if (sec[0] + sec[1] + sec[2] !== headDim / 2) {
    throw new Error(
      `${file}: mrope_section ${JSON.stringify(sec)} sums to ${sec[0] + sec[1] + sec[2]}, but head_dim / 2 is ${headDim / 2}`,
    );
  }
  const theta = number(
    rope,
    'rope_theta',
    'rope_parameters.',
    (text.rope_theta ?? top.rope_theta ?? (q3 ? 500000 : 1000000)) as number,
  );
  const interleavedRaw = rope.mrope_interleaved ?? q3;
  if (typeof interleavedRaw !== 'boolean')
    throw new Error(`${file}: expected a boolean for mrope_interleaved but found ${JSON.stringify(interleavedRaw)}`);
  if (interleavedRaw !== q3)
    throw new Error(
      `${file}: mrope_interleaved ${interleavedRaw} does not fit model_type ${modelType} (interleaved M-RoPE is Qwen3-VL's)`,
    );
  const attnBias = text.attention_bias ?? false;
  if (q3 && attnBias !== false)
    throw new Error(
      `${file}: ${where}attention_bias ${JSON.stringify(attnBias)} is not supported for qwen3_vl (the published models have none)`,
    );
  if (text.use_sliding_window === true) throw new Error(`${file}: use_sliding_window is not supported`);

  const tieRaw = text.tie_word_embeddings ?? top.tie_word_embeddings ?? false;
  if (typeof tieRaw !== 'boolean')
    throw new Error(`${file}: expected a boolean for tie_word_embeddings but found ${JSON.stringify(tieRaw)}`);

  // Qwen2-VL: embed_dim is the tower's width, hidden_size the merger's output; Qwen2.5-VL and
  // Qwen3-VL: hidden_size is the tower's width, out_hidden_size the merger's output
  const q2 = modelType === 'qwen2_vl';
  const embedKey = q2 ? 'embed_dim' : 'hidden_size';
  const embedDim = int(vis, embedKey, 'vision_config.');
  const vHeads = int(vis, 'num_heads', 'vision_config.');
  if (vHeads === 0 || embedDim % vHeads !== 0 || (embedDim / vHeads) % 4 !== 0) {
    throw new Error(
      `${file}: vision_config.${embedKey} ${embedDim} must split into num_heads ${vHeads} heads of a size divisible by 4`,
    );
  }
  const mlpHidden = q2
    ? Math.trunc(embedDim * number(vis, 'mlp_ratio', 'vision_config.', 4))
    : int(vis, 'intermediate_size', 'vision_config.');
  const acts = q2 ? ['quick_gelu', 'gelu'] : q25 ? ['silu'] : ['gelu_pytorch_tanh'];
  const act = vis.hidden_act ?? acts[0];
  if (typeof act !== 'string' || !acts.includes(act)) {
    throw new Error(
      `${file}: unsupported vision_config.hidden_act ${JSON.stringify(act)} for ${modelType}; supported: ${acts.map((a) => JSON.stringify(a)).join(', ')}`,
    );
  }
  const depth = int(vis, 'depth', 'vision_config.');
  const layers = int(text, 'num_hidden_layers', where);
  const indexList = (key: string, max: number, what: string): number[] => {
    const v = vis[key] ?? [];
    if (
      !Array.isArray(v) ||
      !v.every((x) => Number.isInteger(x) && x >= 0 && x < max) ||
      new Set(v).size !== v.length
    ) {
      throw new Error(
        `${file}: expected vision_config.${key} to be distinct ${what} in [0, ${max}) but found ${JSON.stringify(v)}`,
      );
    }
    return v as number[];
  };
  const fullatt = q25 ? indexList('fullatt_block_indexes', Math.max(depth, 1), 'block indexes') : [];
  const deepstack = q3 ? indexList('deepstack_visual_indexes', Math.max(depth, 1), 'block indexes') : [];
  if (deepstack.length > layers) {
    throw new Error(
      `${file}: vision_config.deepstack_visual_indexes has ${deepstack.length} entries but the language model has only ${layers} layers to add them to`,
    );
  }
  const patchSize = int(vis, 'patch_size', 'vision_config.', q3 ? 16 : 14);
  const merge = int(vis, 'spatial_merge_size', 'vision_config.', 2);
  const windowSize = q25 ? int(vis, 'window_size', 'vision_config.', 112) : 0;
  if (q25 && (windowSize === 0 || windowSize % (patchSize * merge) !== 0)) {
    throw new Error(
      `${file}: vision_config.window_size ${windowSize} must be a positive multiple of patch_size × spatial_merge_size = ${patchSize * merge}`,
    );
  }
  const numPos = q3 ? int(vis, 'num_position_embeddings', 'vision_config.', 2304) : 0;
  if (q3 && (numPos === 0 || Math.round(Math.sqrt(numPos)) ** 2 !== numPos)) {
    throw new Error(
      `${file}: vision_config.num_position_embeddings ${numPos} must be a positive square (a side × side grid)`,
    );
  }
  const cfg: EngineConfig = {
    modelType,
    vocabSize: int(text, 'vocab_size', where),
    hiddenSize: hidden,
    intermediateSize: int(text, 'intermediate_size', where),
    numLayers: layers,
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    rmsNormEps: number(text, 'rms_norm_eps', where, 1e-6),
    ropeTheta: theta,
    mropeSection: [sec[0], sec[1], sec[2]],
    mropeInterleaved: q3,
    attentionBias: !q3,
    qkNorm: q3,
    tieWordEmbeddings: tieRaw,
    maxPositionEmbeddings: int(text, 'max_position_embeddings', where, 32768),
    imageTokenId: int(top, 'image_token_id', '', 151655),
    videoTokenId: int(top, 'video_token_id', '', 151656),
    visionStartTokenId: int(top, 'vision_start_token_id', '', 151652),
    visionEndTokenId: int(top, 'vision_end_token_id', '', 151653),
    vision: {
      depth,
      embedDim,
      numHeads: vHeads,
      mlpHidden,
      hiddenSize: q2
        ? int(vis, 'hidden_size', 'vision_config.', hidden)
        : int(vis, 'out_hidden_size', 'vision_config.', hidden),
      hiddenAct: act as EngineConfig['vision']['hiddenAct'],
      rmsNorm: q25,
      windowSize,
      fullattBlockIndexes: fullatt,
      numPositionEmbeddings: numPos,
      deepstackVisualIndexes: deepstack,
      tokensPerSecond: number(vis, 'tokens_per_second', 'vision_config.', q25 ? 2 : 1),
      inChannels: int(vis, vis.in_channels !== undefined ? 'in_channels' : 'in_chans', 'vision_config.', 3),
      patchSize,
      temporalPatchSize: int(vis, 'temporal_patch_size', 'vision_config.', 2),
      spatialMergeSize: merge,
      ropeTheta: number((vis.rope_parameters ?? {}) as Obj, 'rope_theta', 'vision_config.rope_parameters.', 10000),
    },
    form: nested ? 'nested' : 'flat',
  };
  if (cfg.vision.hiddenSize !== hidden) {
    throw new Error(
      `${file}: vision_config.${q2 ? 'hidden_size' : 'out_hidden_size'} ${cfg.vision.hiddenSize} must equal the language model's hidden_size ${hidden}`,
    );
  }
  if (cfg.imageTokenId >= cfg.vocabSize) {
    throw new Error(`${file}: image_token_id ${cfg.imageTokenId} is outside the vocabulary [0, ${cfg.vocabSize})`);
  }
  // A small vocabulary (tests) may leave the default video id out: the model then takes no video.
  if (cfg.videoTokenId! >= cfg.vocabSize || cfg.videoTokenId === cfg.imageTokenId) {
    delete cfg.videoTokenId;
  }
  return cfg;
}

export function readConfig(file: string): EngineConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(
      `${file}: cannot read the model config (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
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
      vocab: c.vocabSize,
      hidden: c.hiddenSize,
      inter: c.intermediateSize,
      layers: c.numLayers,
      heads: c.numHeads,
      kvHeads: c.numKvHeads,
      headDim: c.headDim,
      eps: c.rmsNormEps,
      theta: c.ropeTheta,
      section: c.mropeSection,
      tied: c.tieWordEmbeddings,
      qkvBias: c.attentionBias ?? true,
      qkNorm: c.qkNorm ?? false,
      mropeInterleaved: c.mropeInterleaved ?? false,
    },
    vision: {
      depth: c.vision.depth,
      embedDim: c.vision.embedDim,
      numHeads: c.vision.numHeads,
      mlpHidden: c.vision.mlpHidden,
      outHidden: c.vision.hiddenSize,
      inChannels: c.vision.inChannels,
      patchSize: c.vision.patchSize,
      temporalPatchSize: c.vision.temporalPatchSize,
      merge: c.vision.spatialMergeSize,
      quickGelu: c.vision.hiddenAct === 'quick_gelu',
      theta: c.vision.ropeTheta,
      act: c.vision.hiddenAct,
      rmsNorm: c.vision.rmsNorm ?? false,
      windowSize: c.vision.windowSize ?? 0,
      fullatt: c.vision.fullattBlockIndexes ?? [],
      numPos: c.vision.numPositionEmbeddings ?? 0,
      deepstack: c.vision.deepstackVisualIndexes ?? [],
    },
    family: c.modelType,
    imageTokenId: c.imageTokenId,
    ...(c.videoTokenId === undefined ? {} : { videoTokenId: c.videoTokenId }),
    tokensPerSecond: c.vision.tokensPerSecond ?? 1,
  };
}
