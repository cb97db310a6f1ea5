/**
 * A random-init Qwen2-VL folder of about 100 M parameters for the benches (hidden 1024, GQA 16/2,
 * the tiny model's tokenizer and vocabulary), written once under the system's temp folder and
 * reused: the safetensors file is written last (atomically), so its presence marks a complete folder.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL_DIR } from '../src/model/default.js';
import { initTensors } from '../src/model/init.js';
import { qwen2vlConfigJson, qwen2vlTensorSpecs, type Qwen2VLDims } from '../src/model/qwen2vl.js';
import { writeSafetensors, type Tensor } from '../src/util/safetensors.js';

export async function randomMidsizeModel(name: string, numHiddenLayers: number): Promise<string> {
  const dir = path.join(tmpdir(), name);
  if (existsSync(path.join(dir, 'model.safetensors'))) return dir;
  mkdirSync(dir, { recursive: true });
  const tiny = JSON.parse(readFileSync(path.join(DEFAULT_MODEL_DIR, 'config.json'), 'utf8')) as Record<string, number>;
  const dims: Qwen2VLDims = {
    vocabSize: tiny.vocab_size!,
    hiddenSize: 1024,
    intermediateSize: 2816,
    numHiddenLayers,
    numAttentionHeads: 16,
    numKeyValueHeads: 2,
    mropeSection: [8, 12, 12],
    tieWordEmbeddings: true,
    rmsNormEps: 1e-6,
    ropeTheta: 1_000_000,
    maxPositionEmbeddings: 1024,
    initializerRange: 0.02,
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
  const config = qwen2vlConfigJson(dims, {
    bos: tiny.bos_token_id!,
    eos: tiny.eos_token_id!,
    pad: tiny.pad_token_id!,
    visionStart: tiny.vision_start_token_id!,
    visionEnd: tiny.vision_end_token_id!,
    visionPad: tiny.vision_token_id!,
    imagePad: tiny.image_token_id!,
    videoPad: tiny.video_token_id!,
  });
  const specs = qwen2vlTensorSpecs(dims);
  const values = initTensors(specs, 7, dims.initializerRange);
  const tensors = new Map<string, Tensor>(
    specs.map((spec) => [spec.name, { dtype: 'F32', shape: spec.shape, data: values.get(spec.name)! }]),
  );
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'preprocessor_config.json'])
    copyFileSync(path.join(DEFAULT_MODEL_DIR, f), path.join(dir, f));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return dir;
}
