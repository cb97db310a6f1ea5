/**
 * Qwen2-VL checkpoint layout: config.json in the flat form of the published checkpoints
 * (Qwen/Qwen2-VL-2B-Instruct: text fields at the top, `vision_config` nested, `rope_scaling` with
 * `mrope_section`) and the tensor names and shapes of model.safetensors as those checkpoints spell
 * them (`model.layers.N...`, `visual.blocks.N...`, `lm_head.weight` unless tied). Shapes follow
 * transformers' modeling_qwen2_vl.py: q/k/v projections with bias, o_proj and the SwiGLU MLP
 * without; the vision patch embedding is a Conv3d without bias; the merger is LayerNorm →
 * Linear(4E, 4E) → GELU → Linear(4E, hidden).
 */

export interface Qwen2VLDims {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  /** Per head: t, h, w rotary sections; they sum to head_dim / 2. */
  mropeSection: [number, number, number];
  tieWordEmbeddings: boolean;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  initializerRange: number;
  vision: {
    depth: number;
    embedDim: number;
    numHeads: number;
    mlpRatio: number;
    patchSize: number;
    temporalPatchSize: number;
    spatialMergeSize: number;
    inChannels: number;
  };
}

/** Ids of the special tokens the config names. */
export interface Qwen2VLTokenIds {
  bos: number;
  eos: number;
  pad: number;
  visionStart: number;
  visionEnd: number;
  visionPad: number;
  imagePad: number;
  videoPad: number;
}

export type InitKind = 'normal' | 'zeros' | 'ones';

export interface TensorSpec {
  name: string;
  shape: number[];
  init: InitKind;
}

export function checkDims(d: Qwen2VLDims): void {
  const fail = (msg: string) => {
    throw new Error(`Qwen2-VL dims: ${msg}`);
  };
  if (d.hiddenSize % d.numAttentionHeads !== 0)
    fail(`hiddenSize ${d.hiddenSize} is not divisible by numAttentionHeads ${d.numAttentionHeads}`);
  if (d.numAttentionHeads % d.numKeyValueHeads !== 0)
    fail(`numAttentionHeads ${d.numAttentionHeads} is not divisible by numKeyValueHeads ${d.numKeyValueHeads}`);
  const headDim = d.hiddenSize / d.numAttentionHeads;
  const sum = d.mropeSection.reduce((a, b) => a + b, 0);
  if (sum * 2 !== headDim)
    fail(`mropeSection ${JSON.stringify(d.mropeSection)} sums to ${sum}, but head_dim / 2 is ${headDim / 2}`);
  if (d.vision.embedDim % d.vision.numHeads !== 0)
    fail(`vision embedDim ${d.vision.embedDim} is not divisible by numHeads ${d.vision.numHeads}`);
  if ((d.vision.embedDim / d.vision.numHeads) % 4 !== 0)
    fail(`vision head_dim ${d.vision.embedDim / d.vision.numHeads} must be a multiple of 4 (2-D rotary halves)`);
}

/** config.json, flat published form. */
export function qwen2vlConfigJson(d: Qwen2VLDims, ids: Qwen2VLTokenIds): Record<string, unknown> {
  checkDims(d);
  return {
    architectures: ['Qwen2VLForConditionalGeneration'],
    model_type: 'qwen2_vl',
    attention_dropout: 0.0,
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
    vision_start_token_id: ids.visionStart,
    vision_end_token_id: ids.visionEnd,
    vision_token_id: ids.visionPad,
    image_token_id: ids.imagePad,
    video_token_id: ids.videoPad,
    hidden_act: 'silu',
    hidden_size: d.hiddenSize,
    initializer_range: d.initializerRange,
    intermediate_size: d.intermediateSize,
    max_position_embeddings: d.maxPositionEmbeddings,
    max_window_layers: d.numHiddenLayers,
    num_attention_heads: d.numAttentionHeads,
    num_hidden_layers: d.numHiddenLayers,
    num_key_value_heads: d.numKeyValueHeads,
    rms_norm_eps: d.rmsNormEps,
    rope_theta: d.ropeTheta,
    sliding_window: d.maxPositionEmbeddings,
    use_sliding_window: false,
    tie_word_embeddings: d.tieWordEmbeddings,
    torch_dtype: 'float32',
    use_cache: true,
    vocab_size: d.vocabSize,
    rope_scaling: { type: 'mrope', mrope_section: [...d.mropeSection] },
    vision_config: {
      depth: d.vision.depth,
      embed_dim: d.vision.embedDim,
      hidden_size: d.hiddenSize,
      hidden_act: 'quick_gelu',
      mlp_ratio: d.vision.mlpRatio,
      num_heads: d.vision.numHeads,
      in_chans: d.vision.inChannels,
      in_channels: d.vision.inChannels,
      patch_size: d.vision.patchSize,
      spatial_patch_size: d.vision.patchSize,
      spatial_merge_size: d.vision.spatialMergeSize,
      temporal_patch_size: d.vision.temporalPatchSize,
      initializer_range: d.initializerRange,
    },
  };
}

/** Every tensor of model.safetensors, in a fixed order (vision tower, then language model). */
export function qwen2vlTensorSpecs(d: Qwen2VLDims): TensorSpec[] {
  checkDims(d);
  const out: TensorSpec[] = [];
  const w = (name: string, ...shape: number[]) => out.push({ name, shape, init: 'normal' });
  const z = (name: string, ...shape: number[]) => out.push({ name, shape, init: 'zeros' });
  const one = (name: string, ...shape: number[]) => out.push({ name, shape, init: 'ones' });
  const v = d.vision,
    E = v.embedDim,
    M = Math.round(E * v.mlpRatio),
    Q = E * v.spatialMergeSize ** 2;
  w('visual.patch_embed.proj.weight', E, v.inChannels, v.temporalPatchSize, v.patchSize, v.patchSize);
  for (let i = 0; i < v.depth; i++) {
    const p = `visual.blocks.${i}`;
    one(`${p}.norm1.weight`, E);
    z(`${p}.norm1.bias`, E);
    one(`${p}.norm2.weight`, E);
    z(`${p}.norm2.bias`, E);
    w(`${p}.attn.qkv.weight`, 3 * E, E);
    z(`${p}.attn.qkv.bias`, 3 * E);
    w(`${p}.attn.proj.weight`, E, E);
    z(`${p}.attn.proj.bias`, E);
    w(`${p}.mlp.fc1.weight`, M, E);
    z(`${p}.mlp.fc1.bias`, M);
    w(`${p}.mlp.fc2.weight`, E, M);
    z(`${p}.mlp.fc2.bias`, E);
  }
  one('visual.merger.ln_q.weight', E);
  z('visual.merger.ln_q.bias', E);
  w('visual.merger.mlp.0.weight', Q, Q);
  z('visual.merger.mlp.0.bias', Q);
  w('visual.merger.mlp.2.weight', d.hiddenSize, Q);
  z('visual.merger.mlp.2.bias', d.hiddenSize);

  const H = d.hiddenSize,
    hd = H / d.numAttentionHeads,
    kv = d.numKeyValueHeads * hd,
    I = d.intermediateSize;
  w('model.embed_tokens.weight', d.vocabSize, H);
  for (let i = 0; i < d.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    w(`${p}.self_attn.q_proj.weight`, d.numAttentionHeads * hd, H);
    z(`${p}.self_attn.q_proj.bias`, d.numAttentionHeads * hd);
    w(`${p}.self_attn.k_proj.weight`, kv, H);
    z(`${p}.self_attn.k_proj.bias`, kv);
    w(`${p}.self_attn.v_proj.weight`, kv, H);
    z(`${p}.self_attn.v_proj.bias`, kv);
    w(`${p}.self_attn.o_proj.weight`, H, d.numAttentionHeads * hd);
    w(`${p}.mlp.gate_proj.weight`, I, H);
    w(`${p}.mlp.up_proj.weight`, I, H);
    w(`${p}.mlp.down_proj.weight`, H, I);
    one(`${p}.input_layernorm.weight`, H);
    one(`${p}.post_attention_layernorm.weight`, H);
  }
  one('model.norm.weight', H);
  if (!d.tieWordEmbeddings) w('lm_head.weight', d.vocabSize, H);
  return out;
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
