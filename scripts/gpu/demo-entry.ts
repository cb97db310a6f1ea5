/**
 * The `vqalab demo` path for the GPU machine (no npm there): scripts/gpu/pack-demo.sh bundles this
 * file with esbuild into demo.mjs. Two subcommands:
 *   node demo.mjs demo [vqalab demo options]      exactly what `vqalab demo` runs (src/cli/demo.ts)
 *   node demo.mjs make-model DIR HIDDEN LAYERS INTER HEADS KV [VISION_DEPTH VISION_DIM [INIT]]
 *     writes a random-init Qwen2-VL-architecture folder with the tiny model's tokenizer and the
 *     project's own writer (src/model: qwen2vlTensorSpecs, initTensors, writeSafetensors), larger dims.
 *     INIT: initializer_range (default: the one that gives attention logits the tiny model's spread,
 *     0.1 · sqrt(tiny hidden / HIDDEN); transformers' 0.02 leaves a wide model's attention near uniform,
 *     docs/grpo.md).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { demoCommand } from '../../src/cli/demo.js';
import { trainCommand } from '../../src/cli/train.js';
import { UsageError } from '../../src/util/errors.js';
import { synthVocabulary } from '../../src/data/synth-vocab.js';
import { buildTokenizerFiles } from '../../src/text/build.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { writeSafetensors, type Tensor } from '../../src/util/safetensors.js';
import { initTensors } from '../../src/model/init.js';
import { qwen2vlConfigJson, qwen2vlTensorSpecs } from '../../src/model/qwen2vl.js';
import { DEFAULT_MODEL_SEED, preprocessorConfig, tinyDims } from '../../src/model/default.js';

async function makeModel(args: string[]): Promise<void> {
  const [dir, hidden, layers, inter, heads, kv, vdepth, vdim, init] = args;
  if (!dir || !hidden || !layers || !inter || !heads || !kv) throw new Error('make-model DIR HIDDEN LAYERS INTER HEADS KV [VISION_DEPTH VISION_DIM]');
  const files = buildTokenizerFiles({ words: synthVocabulary(), modelMaxLength: 1024 });
  const tokenizer = VlmTokenizer.fromObjects({
    tokenizerJson: files['tokenizer.json'], tokenizerConfig: files['tokenizer_config.json'], generationConfig: files['generation_config.json'],
  });
  const s = tokenizer.special;
  const base = tinyDims(tokenizer.vocabSize);
  const h = Number(hidden), nh = Number(heads), headDim = h / nh;
  // mrope sections sum to head_dim / 2, split like Qwen2-VL's [16, 24, 24] of 64
  const half = headDim / 2, t = Math.round(half / 4), hw = (half - t) / 2;
  const dims = {
    ...base, hiddenSize: h, numHiddenLayers: Number(layers), intermediateSize: Number(inter), numAttentionHeads: nh, numKeyValueHeads: Number(kv),
    mropeSection: [t, Math.floor(hw), Math.ceil(hw)] as [number, number, number],
    // q·k logits scale with init² · hidden: keep the tiny model's (0.1 at its width) unless given.
    initializerRange: init ? Number(init) : 0.1 * Math.sqrt(base.hiddenSize / h),
    vision: { ...base.vision, ...(vdepth ? { depth: Number(vdepth) } : {}), ...(vdim ? { embedDim: Number(vdim), numHeads: Math.max(1, Number(vdim) / 64) } : {}) },
  };
  const config = qwen2vlConfigJson(dims, {
    bos: s.endOfText, eos: s.imEnd, pad: s.endOfText, visionStart: s.visionStart, visionEnd: s.visionEnd,
    visionPad: tokenizer.tokenToId('<|vision_pad|>')!, imagePad: s.imagePad, videoPad: s.videoPad,
  });
  const specs = qwen2vlTensorSpecs(dims);
  const values = initTensors(specs, DEFAULT_MODEL_SEED, dims.initializerRange);
  const tensors = new Map<string, Tensor>(specs.map((spec) => [spec.name, { dtype: 'F32', shape: spec.shape, data: values.get(spec.name)! }]));
  mkdirSync(dir, { recursive: true });
  const json = (name: string, value: unknown) => writeFileSync(path.join(dir, name), JSON.stringify(value, null, 2) + '\n');
  json('config.json', config);
  json('tokenizer.json', files['tokenizer.json']);
  json('tokenizer_config.json', files['tokenizer_config.json']);
  json('generation_config.json', { ...files['generation_config.json'], transformers_version: '4.45.0' });
  json('preprocessor_config.json', preprocessorConfig());
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const n = specs.reduce((a, sp) => a + sp.shape.reduce((x, y) => x * y, 1), 0);
  process.stdout.write(`wrote ${dir}: ${JSON.stringify({ hidden: h, layers: dims.numHiddenLayers, inter: dims.intermediateSize, heads: nh, kv: dims.numKeyValueHeads, mrope: dims.mropeSection, vision: dims.vision })}, ${n.toLocaleString('en-US')} parameters\n`);
}

async function entry(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'make-model') { await makeModel(rest); return 0; }
  if (cmd === 'train') return trainCommand.run(rest);
  if (cmd === 'demo') {
    if (rest.includes('-h') || rest.includes('--help')) { process.stdout.write(demoCommand.usage); return 0; }
    return demoCommand.run(rest);
  }
  process.stdout.write('usage: demo.mjs demo [options] | make-model DIR HIDDEN LAYERS INTER HEADS KV [VISION_DEPTH VISION_DIM] | train [vqalab train options]\n');
  return cmd === undefined || cmd === '--help' ? 0 : 2;
}

entry(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => {
  process.stderr.write(`vqalab: ${err instanceof UsageError ? '' : ''}${err && err.stack ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
