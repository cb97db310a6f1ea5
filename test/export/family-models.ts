/**
 * Tiny Qwen2.5-VL and Qwen3-VL model folders for the export tests: the published tensor layout
 * (src/model/presets-family.ts) at a few dozen dims, every tensor random (norm weights near 1,
 * biases and q/k norm weights included, so a misplaced one shows in the logits), the default tiny
 * model's tokenizer (vocabulary 539, its image / video / vision start / end ids), and the family's
 * preprocessor_config.json.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { native } from '../../src/engine/native.js';
import type { ImageInput } from '../../src/engine/types.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { familyPreprocessorConfig } from '../../src/model/processor-files.js';
import {
  familyConfigJson,
  familyTensorSpecs,
  FAMILY_PRESETS,
  type FamilyDims,
  type FamilyModelType,
} from '../../src/model/presets-family.js';
import { randn, rng } from '../engine/helpers.js';

export const TOKENS = { vocab: 539, vstart: 534, vend: 535, image: 537, video: 538 } as const;

export function familyDims(family: FamilyModelType): FamilyDims {
  const q3 = family === 'qwen3_vl';
  const base = FAMILY_PRESETS[q3 ? 'qwen3-vl-2b' : 'qwen2.5-vl-3b']!.dims;
  return {
    ...base,
    vocabSize: TOKENS.vocab,
    hiddenSize: 64,
    intermediateSize: 96,
    numHiddenLayers: 3,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: q3 ? 24 : 16, // Qwen3-VL: head_dim apart from hidden / heads
    mropeSection: q3 ? [4, 4, 4] : [2, 3, 3],
    maxPositionEmbeddings: 1024,
    tieWordEmbeddings: q3,
    vision: {
      ...base.vision,
      depth: 3,
      hiddenSize: 32,
      intermediateSize: 48,
      numHeads: 2,
      // Qwen2.5-VL: windows of 112 px = 4 × 4 merged patches, block 1 over the whole frame;
      // Qwen3-VL: a 4 × 4 position grid interpolated to larger images, DeepStack after blocks 0 and 2
      ...(q3 ? { numPositionEmbeddings: 16, deepstackVisualIndexes: [0, 2] } : { fullattBlockIndexes: [1] }),
    },
  };
}

/** Write the folder; returns its path. */
export function writeFamilyModel(dir: string, family: FamilyModelType, seed = 5): string {
  mkdirSync(dir, { recursive: true });
  const d = familyDims(family);
  const config = {
    ...familyConfigJson(d),
    image_token_id: TOKENS.image,
    video_token_id: TOKENS.video,
    vision_start_token_id: TOKENS.vstart,
    vision_end_token_id: TOKENS.vend,
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify(familyPreprocessorConfig(d), null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'])
    copyFileSync(path.join(DEFAULT_MODEL_DIR, f), path.join(dir, f));
  const r = rng(seed);
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const sp of familyTensorSpecs(d)) {
    const shape = [...sp.shape];
    const size = shape.reduce((a, b) => a * b, 1);
    const n = sp.name;
    let data: Float32Array;
    if (/embed_tokens|lm_head/.test(n)) data = randn(size, r, 0.5);
    else if (n.endsWith('pos_embed.weight')) data = randn(size, r, 0.5);
    else if (shape.length >= 2) data = randn(size, r, 1 / Math.sqrt(size / shape[0]!));
    else if (n.endsWith('.bias')) data = randn(size, r, 0.1);
    else data = Float32Array.from(randn(size, r, 0.1), (x) => 1 + x);
    t[n] = { shape, data };
  }
  native()._writeSafetensors(path.join(dir, 'model.safetensors'), t);
  return dir;
}

/** Random pixels of t temporal patches of h × w patches (a video when `video`). */
export function randomVisual(
  family: FamilyModelType,
  grid: [number, number, number],
  seed: number,
  video = false,
): ImageInput {
  const P = familyDims(family).vision.patchSize;
  const [t, h, w] = grid;
  return {
    pixels: randn(t * h * w * 3 * 2 * P * P, rng(seed)),
    gridThw: grid,
    ...(video ? { video: true, secondPerGrid: 1 } : {}),
  };
}

/**
 * Prompt ids around the inputs, in order: text, then each input's run (vision start, its pads, vision
 * end) and text after it. Qwen3-VL writes a video as one run per temporal patch, each after a
 * "timestamp" token, as its prompt builder does.
 */
export function promptIds(family: FamilyModelType, inputs: readonly ImageInput[], seed: number): Int32Array {
  const r = rng(seed);
  const text = (n: number) => Array.from({ length: n }, () => Math.floor(r() * 500));
  const ids = text(5);
  for (const im of inputs) {
    const [t, h, w] = im.gridThw;
    const per = (h * w) / 4;
    const run = (n: number, tok: number) => ids.push(TOKENS.vstart, ...new Array<number>(n).fill(tok), TOKENS.vend);
    if (im.video && family === 'qwen3_vl') {
      for (let i = 0; i < t; i++) {
        ids.push(...text(2));
        run(per, TOKENS.video);
      }
    } else run(t * per, im.video ? TOKENS.video : TOKENS.image);
    ids.push(...text(3));
  }
  return Int32Array.from(ids);
}
