/**
 * `vqalab model init`: config.json exactly as Qwen/Qwen2-VL-2B-Instruct's, the real Qwen tokenizer
 * (vision special tokens at 151652–151656), Qwen2-VL-2B-Instruct's chat template, streamed bf16
 * weights; a small override loads in the engine and samples from an image prompt.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadModel } from '../../src/engine/index.js';
import { writeRandomSafetensors } from '../../src/model/init-folder.js';
import { MODEL_PRESETS, presetDims, scaleMropeSection } from '../../src/model/presets.js';
import { qwen2vlTensorSpecs, numelOf } from '../../src/model/qwen2vl.js';
import { QWEN2VL_CHAT_TEMPLATE } from '../../src/model/qwen-tokenizer.js';
import { processorOptionsFrom } from '../../src/vision/processor-config.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { readSafetensors, toFloat32 } from '../../src/util/safetensors.js';
import { Qwen2VLImageProcessor } from '../../src/vision/qwen2vl.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');
const work = mkdtempSync(path.join(tmpdir(), 'vqalab-model-init-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const vqalab = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
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
  '128',
  '--vision-depth',
  '1',
  '--vision-dim',
  '32',
  '--vision-heads',
  '2',
  '--max-pixels',
  '12544',
];

/** Qwen/Qwen2-VL-2B-Instruct's config.json, as published (key order included). */
const QWEN2VL_2B_INSTRUCT_CONFIG = `{
  "architectures": [
    "Qwen2VLForConditionalGeneration"
  ],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "vision_start_token_id": 151652,
  "vision_end_token_id": 151653,
  "vision_token_id": 151654,
  "image_token_id": 151655,
  "video_token_id": 151656,
  "hidden_act": "silu",
  "hidden_size": 1536,
  "initializer_range": 0.02,
  "intermediate_size": 8960,
  "max_position_embeddings": 32768,
  "max_window_layers": 28,
  "model_type": "qwen2_vl",
  "num_attention_heads": 12,
  "num_hidden_layers": 28,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.41.2",
  "use_cache": true,
  "use_sliding_window": false,
  "vision_config": {
    "depth": 32,
    "embed_dim": 1280,
    "mlp_ratio": 4,
    "num_heads": 16,
    "in_chans": 3,
    "hidden_size": 1536,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "spatial_patch_size": 14,
    "temporal_patch_size": 2
  },
  "rope_scaling": {
    "type": "mrope",
    "mrope_section": [
      16,
      24,
      24
    ]
  },
  "vocab_size": 151936
}`;

test("the qwen2-vl-2b preset: config.json equals the checkpoint's (keys, values, order) and 2,208,985,600 parameters", () => {
  const p = MODEL_PRESETS['qwen2-vl-2b']!;
  const config = p.configJson(presetDims(p, {}));
  assert.equal(JSON.stringify(config), JSON.stringify(JSON.parse(QWEN2VL_2B_INSTRUCT_CONFIG)));
  const specs = qwen2vlTensorSpecs(p.dims);
  assert.equal(
    specs.reduce((a, s) => a + numelOf(s.shape), 0),
    2_208_985_600,
  );
  assert.deepEqual(specs.find((s) => s.name === 'model.embed_tokens.weight')!.shape, [151936, 1536]);
  assert.deepEqual(specs.find((s) => s.name === 'model.layers.27.self_attn.k_proj.weight')!.shape, [256, 1536]);
  assert.deepEqual(specs.find((s) => s.name === 'visual.merger.mlp.2.weight')!.shape, [1536, 5120]);
  // Overrides keep the rotary proportions (16:24:24 of head_dim / 2).
  assert.deepEqual(scaleMropeSection([16, 24, 24], 16), [2, 3, 3]);
  assert.deepEqual(presetDims(p, { hidden: 512, heads: 4, kvHeads: 2 }).mropeSection, [16, 24, 24]);
  assert.throws(() => presetDims(p, { hidden: 100, heads: 3 }), {
    message: '--hidden 100 is not divisible by --heads 3; pick a head count that divides it',
  });
  assert.throws(() => presetDims(p, { heads: 12, kvHeads: 5 }), {
    message: '--heads 12 is not divisible by --kv-heads 5',
  });
  assert.throws(() => presetDims(p, { vocab: 1000 }), {
    message: '--vocab 1000 is smaller than the Qwen tokenizer (151657 ids); it must hold every token id',
  });
});

test('vqalab model init with small overrides: the real tokenizer, the template, streamed bf16 weights; loads in the engine and samples', async () => {
  const dir = path.join(work, 'small');
  const r = vqalab('model', 'init', dir, ...SMALL, '--seed', '3', '--quiet');
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stdout,
    /^wrote .*small: qwen2-vl-2b \(with overrides\), 0\.010 B parameters \(2 layers × 64, 4 heads \/ 2 KV, MLP 128; vision 1 × 32; vocab 151936\), 0\.02 GiB bf16, seed 3/,
  );

  const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, any>;
  assert.deepEqual(Object.keys(config), Object.keys(JSON.parse(QWEN2VL_2B_INSTRUCT_CONFIG)));
  assert.equal(config.hidden_size, 64);
  assert.equal(config.vision_config.hidden_size, 64);
  assert.deepEqual(config.rope_scaling, { type: 'mrope', mrope_section: [2, 3, 3] });
  assert.equal(config.vocab_size, 151936);
  const tokConfig = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, any>;
  assert.equal(tokConfig.chat_template, QWEN2VL_CHAT_TEMPLATE);
  assert.deepEqual(
    JSON.parse(readFileSync(path.join(dir, 'generation_config.json'), 'utf8')).eos_token_id,
    [151645, 151643],
  );

  // The tokenizer: Qwen's BPE with exactly Qwen2-VL's added tokens at their ids.
  const tok = VlmTokenizer.load(dir);
  assert.equal(tok.vocabSize, 151657);
  const ids = {
    '<|vision_start|>': 151652,
    '<|vision_end|>': 151653,
    '<|vision_pad|>': 151654,
    '<|image_pad|>': 151655,
    '<|video_pad|>': 151656,
    '<|im_start|>': 151644,
    '<|im_end|>': 151645,
    '<|endoftext|>': 151643,
  };
  for (const [t, id] of Object.entries(ids)) {
    assert.equal(tok.tokenToId(t), id, t);
    assert.deepEqual(tok.encode(t), [id], t);
  }
  assert.equal(tok.tokenToId('<think>'), undefined, 'Qwen3-only tokens are dropped');
  assert.deepEqual(tok.encode('Hello world'), [9707, 1879]);
  assert.deepEqual(tok.stopTokenIds, [151645, 151643]);
  const text = tok.applyChatTemplate(VlmTokenizer.vqaMessages('What colour is the circle?'));
  assert.equal(
    text,
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is the circle?<|im_end|>\n<|im_start|>assistant\n',
  );

  // Weights: bf16, norms 1, biases 0, matrices ~ N(0, 0.02²); the seed fixes the bytes.
  const { tensors, metadata } = await readSafetensors(path.join(dir, 'model.safetensors'));
  assert.equal(metadata.format, 'pt');
  assert.ok([...tensors.values()].every((t) => t.dtype === 'BF16'));
  assert.ok(toFloat32(tensors.get('model.norm.weight')!).every((x) => x === 1));
  assert.ok(toFloat32(tensors.get('model.layers.0.self_attn.q_proj.bias')!).every((x) => x === 0));
  const emb = toFloat32(tensors.get('model.embed_tokens.weight')!);
  const mean = emb.reduce((a, b) => a + b, 0) / emb.length;
  const std = Math.sqrt(emb.reduce((a, b) => a + (b - mean) ** 2, 0) / emb.length);
  assert.ok(Math.abs(mean) < 1e-4 && Math.abs(std - 0.02) < 2e-4, `embedding mean ${mean}, std ${std}`);
  const again = path.join(work, 'again');
  assert.equal(vqalab('model', 'init', again, ...SMALL, '--seed', '3', '--quiet').status, 0);
  assert.ok(
    readFileSync(path.join(again, 'model.safetensors')).equals(readFileSync(path.join(dir, 'model.safetensors'))),
    'same seed, same bytes',
  );
  assert.equal(
    statSync(path.join(dir, 'model.safetensors')).size,
    statSync(path.join(again, 'model.safetensors')).size,
  );

  // The engine loads it and samples from an image prompt with the expanded image pads.
  const processor = new Qwen2VLImageProcessor(processorOptionsFrom(dir));
  const png = await sharp({ create: { width: 56, height: 56, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .png()
    .toBuffer();
  const img = await processor.process(png);
  const prompt = tok.buildPrompt(VlmTokenizer.vqaMessages('What colour is it?'), [
    { pixels: img.pixels, gridThw: img.gridThw },
  ]);
  const pads = [...prompt.ids].filter((x) => x === 151655).length;
  assert.equal(pads, (img.gridThw[0] * img.gridThw[1] * img.gridThw[2]) / 4);
  const model = await loadModel(dir, { threads: 1 });
  try {
    assert.equal(model.numParameters.total, 9_873_376);
    const out = await model.sample({ prompt, n: 2, temperature: 1, maxTokens: 4, seed: 1 });
    assert.equal(out.tokenIds.length, 2);
    for (const ids of out.tokenIds) {
      assert.ok(ids.length >= 1 && ids.length <= 4);
      assert.ok(ids.every((t) => t >= 0 && t < 151936));
    }
  } finally {
    model.dispose();
  }
});

test('streamed weights: the same bytes with 1 or 3 worker threads; chunks of one tensor differ', async () => {
  const specs = [
    { name: 'a', shape: [1100, 1000], init: 'normal' as const },
    { name: 'z', shape: [7], init: 'zeros' as const },
    { name: 'o', shape: [5], init: 'ones' as const },
    { name: 'b', shape: [3, 333], init: 'normal' as const },
  ];
  const one = path.join(work, 'one.safetensors'),
    three = path.join(work, 'three.safetensors');
  const n1 = await writeRandomSafetensors(one, specs, { seed: 9, std: 0.5, dtype: 'BF16', threads: 1 });
  const n3 = await writeRandomSafetensors(three, specs, { seed: 9, std: 0.5, dtype: 'BF16', threads: 3 });
  assert.equal(n1, n3);
  assert.equal(statSync(one).size, n1);
  assert.ok(readFileSync(one).equals(readFileSync(three)));
  const { tensors } = await readSafetensors(one);
  const a = toFloat32(tensors.get('a')!);
  // The first values of chunk 0 and chunk 1 (1,048,576 values each) are not the same draws.
  assert.notDeepEqual([...a.subarray(0, 8)], [...a.subarray(1 << 20, (1 << 20) + 8)]);
  const mean = a.reduce((x, y) => x + y, 0) / a.length;
  const std = Math.sqrt(a.reduce((x, y) => x + (y - mean) ** 2, 0) / a.length);
  assert.ok(Math.abs(mean) < 3e-3 && Math.abs(std - 0.5) < 3e-3, `mean ${mean} std ${std}`);
  assert.deepEqual([...toFloat32(tensors.get('z')!)], Array(7).fill(0));
  assert.deepEqual([...toFloat32(tensors.get('o')!)], Array(5).fill(1));
});

test('vqalab model init: bad flags and folders get exact messages', () => {
  const dir = path.join(work, 'bad');
  const cases: [string[], string][] = [
    [[], 'vqalab model: give the folder to write: vqalab model init DIR\n'],
    [
      [dir, '--preset', 'llama'],
      'vqalab model: --preset must be one of qwen2-vl-2b, qwen2.5-vl-3b, qwen2.5-vl-7b, qwen3-vl-2b, qwen3-vl-4b, qwen3-vl-8b; got "llama"\n',
    ],
    [[dir, '--hidden', '0'], 'vqalab model: --hidden must be an integer >= 2; got "0"\n'],
    [[dir, '--layers', 'two'], 'vqalab model: --layers must be an integer >= 1; got "two"\n'],
    [[dir, '--dtype', 'f16'], 'vqalab model: --dtype must be bf16 or f32; got "f16"\n'],
    [[dir, '--init-std=-1'], 'vqalab model: --init-std must be a positive number; got "-1"\n'],
    [
      [dir, '--hidden', '100', '--heads', '3'],
      'vqalab model: --hidden 100 is not divisible by --heads 3; pick a head count that divides it\n',
    ],
  ];
  for (const [args, message] of cases) {
    const r = vqalab('model', 'init', ...args);
    assert.equal(r.stderr, message, args.join(' '));
    assert.notEqual(r.status, 0);
  }
  const r = vqalab('model', 'init', dir, '--bogus');
  assert.match(
    r.stderr,
    /^vqalab model: Unknown option '--bogus'.*; run "vqalab model init --help" for the options\n$/,
  );
  // An existing non-empty folder is not overwritten without --force.
  writeFileSync(path.join(work, 'keep.txt'), 'x');
  const busy = vqalab('model', 'init', work, ...SMALL);
  assert.equal(
    busy.stderr,
    `vqalab model: ${work} exists and is not empty; choose a new folder or pass --force to replace it\n`,
  );
  assert.equal(busy.status, 1);
});
