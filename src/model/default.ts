/**
 * The embedded default: a tiny Qwen2-VL-architecture checkpoint with its tokenizer, committed
 * under assets/tiny-qwen2-vl/ so `vqalab demo` and the notebooks work offline, out of the box.
 * It is an ordinary Hugging Face folder (config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json with the chat template, generation_config.json, preprocessor_config.json):
 * transformers loads it as Qwen2VLForConditionalGeneration, and our engine loads it like any
 * released Qwen2-VL checkpoint.
 *
 * Sizes are picked for the CPU demo on 2 cores: 112×112 images → 8×8 patches → 16 image tokens;
 * vision 2 blocks × 64; language model 4 layers × 128 (4 query heads, 2 key/value heads), tied
 * embeddings, vocabulary = the tiny tokenizer's. Weights are drawn with initializer_range 0.1
 * (transformers' default is 0.02) so the model can learn to look at the image in minutes.
 *
 * Regenerate (deterministic: same words + seed → same bytes):
 *     npm run build && node dist/src/model/write-default.js [outDir]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { synthVocabulary } from '../data/synth-vocab.js';
import { buildTokenizerFiles } from '../text/build.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { writeSafetensors, type Tensor } from '../util/safetensors.js';
import { initTensors } from './init.js';
import { qwen2vlConfigJson, qwen2vlTensorSpecs, type Qwen2VLDims } from './qwen2vl.js';

/** assets/tiny-qwen2-vl in the package (from dist/src/model or src/model alike). */
export const DEFAULT_MODEL_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  ...(import.meta.url.includes('/dist/') ? ['..'] : []),
  'assets',
  'tiny-qwen2-vl',
);

export const DEFAULT_MODEL_SEED = 20261127;

/** The tiny model's dimensions for a given vocabulary size. */
export function tinyDims(vocabSize: number): Qwen2VLDims {
  return {
    vocabSize,
    hiddenSize: 128,
    intermediateSize: 384,
    numHiddenLayers: 4,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    mropeSection: [4, 6, 6],
    tieWordEmbeddings: true,
    rmsNormEps: 1e-6,
    ropeTheta: 1_000_000,
    maxPositionEmbeddings: 1024,
    // transformers' 0.02 leaves this narrow model blind for hundreds of updates (attention is
    // near uniform and the image tokens drown in the text); 0.1 lets it learn to read colours
    // from the pixels within the demo's few minutes (docs/grpo.md has the measurements).
    initializerRange: 0.1,
    vision: {
      depth: 2,
      embedDim: 64,
      numHeads: 4,
      mlpRatio: 4,
      patchSize: 14,
      temporalPatchSize: 2,
      spatialMergeSize: 2,
      inChannels: 3,
    },
  };
}

/** Qwen2-VL's image processor settings; 112×112 images keep their size (16 tokens). */
export function preprocessorConfig(): Record<string, unknown> {
  return {
    image_processor_type: 'Qwen2VLImageProcessor',
    processor_class: 'Qwen2VLProcessor',
    do_resize: true,
    do_rescale: true,
    do_normalize: true,
    do_convert_rgb: true,
    rescale_factor: 1 / 255,
    resample: 3,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    min_pixels: 56 * 56,
    max_pixels: 28 * 28 * 1280,
    patch_size: 14,
    temporal_patch_size: 2,
    merge_size: 2,
  };
}

export interface DefaultAssetsOptions {
  /** Words that become single tokens; default: the synthetic shapes set's vocabulary. */
  words?: readonly string[];
  seed?: number;
}

/** Write the whole folder; returns the tokenizer and the parameter count. */
export async function writeDefaultAssets(
  outDir: string,
  options: DefaultAssetsOptions = {},
): Promise<{ vocabSize: number; parameters: number }> {
  const files = buildTokenizerFiles({ words: options.words ?? synthVocabulary(), modelMaxLength: 1024 });
  const tokenizer = VlmTokenizer.fromObjects({
    tokenizerJson: files['tokenizer.json'],
    tokenizerConfig: files['tokenizer_config.json'],
    generationConfig: files['generation_config.json'],
  });
  const s = tokenizer.special;
  const dims = tinyDims(tokenizer.vocabSize);
  const config = qwen2vlConfigJson(dims, {
    bos: s.endOfText,
    eos: s.imEnd,
    pad: s.endOfText,
    visionStart: s.visionStart,
    visionEnd: s.visionEnd,
    visionPad: tokenizer.tokenToId('<|vision_pad|>')!,
    imagePad: s.imagePad,
    videoPad: s.videoPad,
  });
  const specs = qwen2vlTensorSpecs(dims);
  const values = initTensors(specs, options.seed ?? DEFAULT_MODEL_SEED, dims.initializerRange);
  const tensors = new Map<string, Tensor>(
    specs.map((spec) => [spec.name, { dtype: 'F32', shape: spec.shape, data: values.get(spec.name)! }]),
  );
  mkdirSync(outDir, { recursive: true });
  const json = (name: string, value: unknown) =>
    writeFileSync(path.join(outDir, name), JSON.stringify(value, null, 2) + '\n');
  json('config.json', config);
  json('tokenizer.json', files['tokenizer.json']);
  json('tokenizer_config.json', files['tokenizer_config.json']);
  json('generation_config.json', { ...files['generation_config.json'], transformers_version: '4.45.0' });
  json('preprocessor_config.json', preprocessorConfig());
  await writeSafetensors(path.join(outDir, 'model.safetensors'), tensors, { format: 'pt' });
  return {
    vocabSize: tokenizer.vocabSize,
    parameters: specs.reduce((a, sp) => a + sp.shape.reduce((x, y) => x * y, 1), 0),
  };
}
