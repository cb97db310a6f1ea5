/**
 * Budget checks on a model folder before the native engine allocates anything (issue 20, defect 3):
 * every dimension of config.json in range, rms_norm_eps and rope_theta positive and finite, the
 * weight files regular files (a FIFO would hang the reader), and the parameter total the config
 * describes no larger than the weight files can hold (at least 2 bytes per parameter: BF16/F16).
 * Errors name the file and the field.
 *
 * The limits are far above any released Qwen2-VL (hidden 8192, 80 layers, vocabulary 151,936) and
 * far below what overflows 32-bit sizes in the engine.
 */
import { statSync } from 'node:fs';
import type { EngineConfig } from './config.js';

/** Inclusive upper bounds, by config.json field. */
export const CONFIG_LIMITS = {
  vocab_size: 1 << 24,
  hidden_size: 1 << 16,
  intermediate_size: 1 << 18,
  num_hidden_layers: 1024,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  max_position_embeddings: 1 << 22,
  'vision_config.depth': 1024,
  'vision_config.embed_dim': 1 << 16,
  'vision_config.num_heads': 1024,
  'vision_config.mlp_hidden (embed_dim x mlp_ratio)': 1 << 18,
  'vision_config.in_channels': 16,
  'vision_config.patch_size': 1024,
  'vision_config.temporal_patch_size': 64,
  'vision_config.spatial_merge_size': 64,
} as const;

/** Parameters of the Qwen2-VL layout the engine builds (native/src/model_load.cc, Model::Model), as a float64. */
export function parameterCount(c: EngineConfig): number {
  const H = c.hiddenSize,
    D = c.headDim,
    v = c.vision;
  let n = 0;
  if (v.depth > 0) {
    const E = v.embedDim,
      F = v.mlpHidden,
      M = E * v.spatialMergeSize * v.spatialMergeSize;
    n += E * v.inChannels * v.temporalPatchSize * v.patchSize * v.patchSize;
    n += v.depth * (4 * E + (3 * E * E + 3 * E) + (E * E + E) + (E * F + F) + (F * E + E));
    n += 2 * E + (M * M + M) + (M * v.hiddenSize + v.hiddenSize);
  }
  n += c.vocabSize * H;
  n +=
    c.numLayers *
    (2 * H +
      (H * c.numHeads * D + c.numHeads * D) +
      2 * (H * c.numKvHeads * D + c.numKvHeads * D) +
      c.numHeads * D * H +
      3 * H * c.intermediateSize);
  n += H + (c.tieWordEmbeddings ? 0 : c.vocabSize * H);
  return n;
}

function fmt(n: number): string {
  return n.toLocaleString('en-US');
}

/** Throws naming `configFile` (or the weight file) and the field; returns the parameter count. */
export function checkModelBudget(
  c: EngineConfig,
  configFile: string,
  files: readonly string[],
  maxSequenceLength: number,
): number {
  const check = (field: string, value: number, min: number, max: number) => {
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new Error(`${configFile}: ${field} is ${value}; expected an integer from ${min} to ${fmt(max)}`);
    }
  };
  const L = CONFIG_LIMITS;
  check('vocab_size', c.vocabSize, 1, L.vocab_size);
  check('hidden_size', c.hiddenSize, 1, L.hidden_size);
  check('intermediate_size', c.intermediateSize, 1, L.intermediate_size);
  check('num_hidden_layers', c.numLayers, 1, L.num_hidden_layers);
  check('num_attention_heads', c.numHeads, 1, L.num_attention_heads);
  check('num_key_value_heads', c.numKvHeads, 1, L.num_key_value_heads);
  check(
    'max_position_embeddings (or the maximum sequence length asked for)',
    maxSequenceLength,
    1,
    L.max_position_embeddings,
  );
  const v = c.vision;
  check('vision_config.depth', v.depth, 0, L['vision_config.depth']);
  if (v.depth > 0) {
    check('vision_config.embed_dim', v.embedDim, 1, L['vision_config.embed_dim']);
    check('vision_config.num_heads', v.numHeads, 1, L['vision_config.num_heads']);
    check(
      'vision_config.mlp_hidden (embed_dim x mlp_ratio)',
      v.mlpHidden,
      1,
      L['vision_config.mlp_hidden (embed_dim x mlp_ratio)'],
    );
    check('vision_config.in_channels', v.inChannels, 1, L['vision_config.in_channels']);
    check('vision_config.patch_size', v.patchSize, 1, L['vision_config.patch_size']);
    check('vision_config.temporal_patch_size', v.temporalPatchSize, 1, L['vision_config.temporal_patch_size']);
    check('vision_config.spatial_merge_size', v.spatialMergeSize, 1, L['vision_config.spatial_merge_size']);
  }
  const positive = (field: string, value: number) => {
    if (!(Number.isFinite(value) && value > 0))
      throw new Error(`${configFile}: ${field} is ${value}; expected a finite number > 0`);
  };
  positive('rms_norm_eps', c.rmsNormEps);
  positive('rope_theta', c.ropeTheta);
  if (v.depth > 0) positive('vision_config.rope_theta', v.ropeTheta);

  let bytes = 0;
  for (const f of files) {
    let st;
    try {
      st = statSync(f);
    } catch (err) {
      throw new Error(
        `${f}: cannot read the weights (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      );
    }
    if (!st.isFile())
      throw new Error(
        `${f}: not a regular file (a ${st.isFIFO() ? 'FIFO' : st.isDirectory() ? 'folder' : 'special file'}); the weights must be a safetensors file`,
      );
    bytes += st.size;
  }
  const params = parameterCount(c);
  if (params * 2 > bytes) {
    throw new Error(
      `${configFile}: the config describes ${fmt(params)} parameters (at least ${fmt(params * 2)} bytes at 2 bytes each), ` +
        `but the weight files hold ${fmt(bytes)} bytes (${files.join(', ')}): the config does not match the weights`,
    );
  }
  return params;
}
