/**
 * Tiny random models of the Qwen-VL families with a 64-token vocabulary (image 60, video 61,
 * vision start 58, vision end 59), for tests of prompts and M-RoPE positions with videos.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { native } from '../../src/engine/native.js';
import { initTensors } from '../../src/model/init.js';
import {
  familyConfigJson,
  familyTensorSpecs,
  FAMILY_PRESETS,
  type FamilyDims,
} from '../../src/model/presets-family.js';
import { MODEL_PRESETS, presetDims } from '../../src/model/presets.js';
import { qwen2vlTensorSpecs } from '../../src/model/qwen2vl.js';
import { tmpDir } from './helpers.js';

export const TINY_VOCAB = 64,
  TINY_IMAGE = 60,
  TINY_VIDEO = 61,
  TINY_VSTART = 58,
  TINY_VEND = 59;
export type Family = 'qwen2_vl' | 'qwen2_5_vl' | 'qwen3_vl';

/**
 * Writes a tiny random model of the family into a fresh folder and returns it.
 * `tokensPerSecond`: Qwen2.5-VL's vision_config.tokens_per_second (default the preset's, 2).
 */
export function writeTiny(family: Family, { tokensPerSecond }: { tokensPerSecond?: number } = {}): string {
  const dir = path.join(tmpDir('vqalab-video-'), family);
  mkdirSync(dir, { recursive: true });
  let config: Record<string, unknown>;
  let specs;
  if (family === 'qwen2_vl') {
    const p = MODEL_PRESETS['qwen2-vl-2b']!;
    const d = {
      ...presetDims(p, {
        hidden: 32,
        layers: 2,
        heads: 4,
        kvHeads: 2,
        intermediate: 48,
        visionDepth: 2,
        visionDim: 16,
        visionHeads: 2,
      }),
      vocabSize: TINY_VOCAB,
    };
    config = p.configJson(d);
    specs = qwen2vlTensorSpecs(d);
  } else {
    const base = FAMILY_PRESETS[family === 'qwen3_vl' ? 'qwen3-vl-2b' : 'qwen2.5-vl-3b']!.dims;
    const q3 = family === 'qwen3_vl';
    const d: FamilyDims = {
      ...base,
      vocabSize: TINY_VOCAB,
      hiddenSize: 32,
      intermediateSize: 48,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 8,
      mropeSection: [2, 1, 1],
      tieWordEmbeddings: false,
      vision: {
        ...base.vision,
        depth: 2,
        hiddenSize: 16,
        intermediateSize: 24,
        numHeads: 2,
        ...(q3 ? { deepstackVisualIndexes: [0], numPositionEmbeddings: 16 } : { fullattBlockIndexes: [1] }),
        ...(tokensPerSecond !== undefined ? { tokensPerSecond } : {}),
      },
    };
    config = familyConfigJson(d);
    specs = familyTensorSpecs(d);
  }
  config = {
    ...config,
    image_token_id: TINY_IMAGE,
    video_token_id: TINY_VIDEO,
    vision_start_token_id: TINY_VSTART,
    vision_end_token_id: TINY_VEND,
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const t = initTensors(specs, 7, 0.3);
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const sp of specs) out[sp.name] = { shape: [...sp.shape], data: t.get(sp.name)! };
  native()._writeSafetensors(path.join(dir, 'model.safetensors'), out);
  return dir;
}
