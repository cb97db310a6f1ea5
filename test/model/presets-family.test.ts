/**
 * `vqalab model init --preset` for Qwen2.5-VL and Qwen3-VL: the released dims (parameter counts of
 * the published checkpoints), config.json in each checkpoint's form, and for every preset a folder
 * at small dims (size overrides) that the engine loads and runs from an image prompt built by the
 * processor the folder's preprocessor_config.json describes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadModel } from '../../src/engine/index.js';
import { parseConfig } from '../../src/engine/config.js';
import { presetLayout, PRESET_NAMES } from '../../src/model/init-folder.js';
import { FAMILY_PRESETS, familyPresetDims } from '../../src/model/presets-family.js';
import { numelOf } from '../../src/model/qwen2vl.js';
import { processorOptionsFrom } from '../../src/vision/processor-config.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../../src/vision/qwen2vl.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');
const work = mkdtempSync(path.join(tmpdir(), 'vqalab-family-init-'));
test.after(() => rmSync(work, { recursive: true, force: true }));
const vqalab = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

test("family presets: the released dims give the published parameter counts; config.json in each checkpoint's form", () => {
  assert.deepEqual(PRESET_NAMES, [
    'qwen2-vl-2b',
    'qwen2.5-vl-3b',
    'qwen2.5-vl-7b',
    'qwen3-vl-2b',
    'qwen3-vl-4b',
    'qwen3-vl-8b',
  ]);
  // Parameter counts as the model pages state them (B, 2 decimals): 3.75, 8.29, 8.77.
  const billions = (name: string) => presetLayout(name).specs.reduce((a, s) => a + numelOf(s.shape), 0) / 1e9;
  assert.equal(billions('qwen2.5-vl-3b').toFixed(2), '3.75');
  assert.equal(billions('qwen2.5-vl-7b').toFixed(2), '8.29');
  assert.equal(billions('qwen3-vl-8b').toFixed(2), '8.77');
  for (const name of Object.keys(FAMILY_PRESETS)) {
    const { config, dims } = presetLayout(name);
    const c = parseConfig(config, name);
    assert.equal(c.modelType, FAMILY_PRESETS[name]!.dims.modelType, name);
    assert.equal(c.hiddenSize, dims.hiddenSize, name);
    assert.equal(c.numLayers, dims.numHiddenLayers, name);
    assert.equal(c.tieWordEmbeddings, dims.tieWordEmbeddings, name);
  }
  const q7 = presetLayout('qwen2.5-vl-7b').config as Record<string, any>;
  assert.equal(q7.max_window_layers, 28);
  assert.equal(q7.vocab_size, 152064);
  assert.equal(q7.vision_config.out_hidden_size, 3584);
  assert.equal(q7.tie_word_embeddings, false);
  assert.ok(presetLayout('qwen2.5-vl-7b').specs.some((s) => s.name === 'lm_head.weight'));
  const q8 = presetLayout('qwen3-vl-8b').config as Record<string, any>;
  assert.deepEqual(Object.keys(q8), [
    'architectures',
    'image_token_id',
    'model_type',
    'text_config',
    'tie_word_embeddings',
    'transformers_version',
    'video_token_id',
    'vision_config',
    'vision_end_token_id',
    'vision_start_token_id',
  ]);
  assert.deepEqual(q8.vision_config.deepstack_visual_indexes, [8, 16, 24]);
  assert.equal(q8.vision_config.out_hidden_size, 4096);
  assert.deepEqual(q8.text_config.rope_scaling, {
    mrope_interleaved: true,
    mrope_section: [24, 20, 20],
    rope_type: 'default',
  });
  // Shrunk depths keep the layout's pattern: a full-attention block every 8th (else the last), DeepStack at relative depths.
  assert.deepEqual(
    familyPresetDims(FAMILY_PRESETS['qwen2.5-vl-3b']!.dims, { visionDepth: 3 }).vision.fullattBlockIndexes,
    [2],
  );
  assert.deepEqual(
    familyPresetDims(FAMILY_PRESETS['qwen2.5-vl-3b']!.dims, { visionDepth: 16 }).vision.fullattBlockIndexes,
    [7, 15],
  );
  assert.deepEqual(
    familyPresetDims(FAMILY_PRESETS['qwen3-vl-2b']!.dims, { visionDepth: 3 }).vision.deepstackVisualIndexes,
    [1, 2],
  );
  assert.deepEqual(
    familyPresetDims(FAMILY_PRESETS['qwen3-vl-2b']!.dims, { hidden: 64, heads: 4, kvHeads: 2 }).mropeSection,
    [3, 3, 2],
  );
  // the vocabulary must hold the family's tokenizer: Qwen3-VL's added tokens run to 151668
  assert.throws(() => familyPresetDims(FAMILY_PRESETS['qwen3-vl-2b']!.dims, { vocab: 151665 }), {
    message: '--vocab 151665 is smaller than the qwen3_vl tokenizer (151669 ids); it must hold every token id',
  });
  assert.equal(familyPresetDims(FAMILY_PRESETS['qwen2.5-vl-3b']!.dims, { vocab: 151665 }).vocabSize, 151665);
  assert.throws(() => presetLayout('qwen3-vl-2b', {}, 50176), {
    message: "--max-pixels 50176 is below the qwen3-vl-2b processor's min_pixels 65536",
  });
  assert.throws(() => familyPresetDims(FAMILY_PRESETS['qwen2.5-vl-3b']!.dims, { headDim: 32 }), {
    message: /--head-dim is a Qwen3-VL setting/,
  });
  assert.throws(() => familyPresetDims(FAMILY_PRESETS['qwen3-vl-2b']!.dims, { visionDim: 30, visionHeads: 2 }), {
    message: '--vision-dim 30 must split into --vision-heads 2 heads of a size divisible by 4',
  });
});

const SMALL = [
  '--hidden',
  '64',
  '--layers',
  '2',
  '--heads',
  '4',
  '--kv-heads',
  '2',
  '--intermediate',
  '96',
  '--vocab',
  '151680',
  '--vision-depth',
  '3',
  '--vision-dim',
  '32',
  '--vision-heads',
  '2',
  '--vision-intermediate',
  '48',
  '--max-pixels',
  '65536',
  '--dtype',
  'f32',
];

for (const name of Object.keys(FAMILY_PRESETS)) {
  test(`vqalab model init --preset ${name} at small dims: the folder loads in the engine and runs an image prompt`, async () => {
    const dir = path.join(work, name);
    const r = vqalab('model', 'init', dir, '--preset', name, ...SMALL, '--seed', '2', '--quiet');
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `^wrote .*: ${name.replace(/\./g, '\\.')} \\(with overrides\\), .* \\(2 layers × 64, 4 heads / 2 KV, MLP 96; vision 3 × 32; vocab 151680\\)`,
      ),
    );
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, any>;
    const released = presetLayout(name).config;
    assert.deepEqual(Object.keys(config), Object.keys(released), "the checkpoint's keys, in order");
    const q3 = name.startsWith('qwen3');
    if (q3) {
      assert.equal(config.text_config.head_dim, 16);
      assert.equal(config.text_config.dtype, 'float32');
      assert.equal(config.vision_config.out_hidden_size, 64);
    } else {
      assert.deepEqual(config.vision_config.fullatt_block_indexes, [2]);
      assert.equal(config.torch_dtype, 'float32');
    }
    const pre = JSON.parse(readFileSync(path.join(dir, 'preprocessor_config.json'), 'utf8')) as Record<string, any>;
    assert.equal(pre.patch_size, q3 ? 16 : 14);
    // Qwen3-VL's file gives the pixel bounds as size {shortest_edge, longest_edge}, as released
    assert.equal(q3 ? pre.size.longest_edge : pre.max_pixels, 65536);
    assert.equal(pre.processor_class, q3 ? 'Qwen3VLProcessor' : 'Qwen2_5_VLProcessor');
    // the family's own tokenizer-side files (test/model/qwen-families.test.ts checks their contents)
    const json = (name: string) => JSON.parse(readFileSync(path.join(dir, name), 'utf8')) as Record<string, any>;
    assert.equal(json('tokenizer_config.json').processor_class, pre.processor_class);
    assert.equal(json('chat_template.json').chat_template, json('tokenizer_config.json').chat_template);
    assert.equal(existsSync(path.join(dir, 'video_preprocessor_config.json')), q3);
    if (q3) assert.equal(json('video_preprocessor_config.json').video_processor_type, 'Qwen3VLVideoProcessor');

    const tok = VlmTokenizer.load(dir);
    const processor = new Qwen2VLImageProcessor(processorOptionsFrom(dir));
    const png = await sharp({ create: { width: 96, height: 64, channels: 3, background: { r: 20, g: 200, b: 30 } } })
      .png()
      .toBuffer();
    const img = await processor.process(png);
    assert.equal(img.pixels.length / (img.gridThw[0] * img.gridThw[1] * img.gridThw[2]), 3 * 2 * pre.patch_size ** 2);
    const prompt = tok.buildPrompt(VlmTokenizer.vqaMessages('What colour is it?'), [
      { pixels: img.pixels, gridThw: img.gridThw },
    ]);
    const model = await loadModel(dir, { threads: 1 });
    try {
      assert.equal(
        model.numParameters.total,
        presetLayout(name, {
          hidden: 64,
          layers: 2,
          heads: 4,
          kvHeads: 2,
          intermediate: 96,
          vocab: 151680,
          visionDepth: 3,
          visionDim: 32,
          visionHeads: 2,
          visionIntermediate: 48,
        }).specs.reduce((a, s) => a + numelOf(s.shape), 0),
      );
      const [f] = await model.forward([{ prompt, completions: [Int32Array.from([9707, 1879])] }]);
      assert.ok(
        f!.logprobs[0]!.every((x) => Number.isFinite(x) && x < 0),
        `${name}: ${f!.logprobs[0]}`,
      );
      const out = await model.sample({ prompt, n: 1, temperature: 0, maxTokens: 2, seed: 1 });
      assert.ok(out.tokenIds[0]!.every((t) => t >= 0 && t < 151680));
    } finally {
      model.dispose();
    }
  });
}
