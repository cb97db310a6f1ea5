import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL_DIR, tinyDims, writeDefaultAssets } from '../../src/model/default.js';
import { qwen2vlConfigJson, qwen2vlTensorSpecs, checkDims } from '../../src/model/qwen2vl.js';
import { initTensors } from '../../src/model/init.js';
import { readSafetensors } from '../../src/util/safetensors.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { synthVocabulary } from '../../src/data/synth-vocab.js';

test('tensor names and shapes follow the published Qwen2-VL checkpoints', () => {
  const d = tinyDims(539);
  const specs = new Map(qwen2vlTensorSpecs(d).map((s) => [s.name, s]));
  const shape = (n: string) => specs.get(n)?.shape;
  assert.deepEqual(shape('visual.patch_embed.proj.weight'), [64, 3, 2, 14, 14]);
  assert.deepEqual(shape('visual.blocks.1.attn.qkv.weight'), [192, 64]);
  assert.deepEqual(shape('visual.blocks.1.attn.qkv.bias'), [192]);
  assert.deepEqual(shape('visual.blocks.0.attn.proj.weight'), [64, 64]);
  assert.deepEqual(shape('visual.blocks.0.mlp.fc1.weight'), [256, 64]);
  assert.deepEqual(shape('visual.blocks.0.mlp.fc2.weight'), [64, 256]);
  assert.deepEqual(shape('visual.blocks.0.norm1.bias'), [64]);
  assert.deepEqual(shape('visual.merger.ln_q.weight'), [64]);
  assert.deepEqual(shape('visual.merger.mlp.0.weight'), [256, 256]);
  assert.deepEqual(shape('visual.merger.mlp.2.weight'), [128, 256]);
  assert.deepEqual(shape('model.embed_tokens.weight'), [539, 128]);
  assert.deepEqual(shape('model.layers.3.self_attn.q_proj.weight'), [128, 128]);
  assert.deepEqual(shape('model.layers.3.self_attn.k_proj.weight'), [64, 128]);
  assert.deepEqual(shape('model.layers.3.self_attn.v_proj.bias'), [64]);
  assert.deepEqual(shape('model.layers.3.self_attn.o_proj.weight'), [128, 128]);
  assert.equal(specs.has('model.layers.3.self_attn.o_proj.bias'), false);
  assert.deepEqual(shape('model.layers.0.mlp.gate_proj.weight'), [384, 128]);
  assert.deepEqual(shape('model.layers.0.mlp.down_proj.weight'), [128, 384]);
  assert.deepEqual(shape('model.layers.0.input_layernorm.weight'), [128]);
  assert.deepEqual(shape('model.norm.weight'), [128]);
  assert.equal(specs.has('lm_head.weight'), false, 'tied embeddings: no lm_head');
  assert.deepEqual(qwen2vlTensorSpecs({ ...d, tieWordEmbeddings: false }).at(-1), {
    name: 'lm_head.weight',
    shape: [539, 128],
    init: 'normal',
  });
  assert.equal(specs.size, 1 + 2 * 12 + 6 + 1 + 4 * 12 + 1);
  assert.throws(() => checkDims({ ...d, mropeSection: [4, 6, 4] }), {
    message: 'Qwen2-VL dims: mropeSection [4,6,4] sums to 14, but head_dim / 2 is 16',
  });
});

test('config.json is the flat published form', () => {
  const ids = { bos: 1, eos: 2, pad: 1, visionStart: 3, visionEnd: 4, visionPad: 5, imagePad: 6, videoPad: 7 };
  const c = qwen2vlConfigJson(tinyDims(539), ids) as Record<string, any>;
  assert.equal(c.model_type, 'qwen2_vl');
  assert.deepEqual(c.architectures, ['Qwen2VLForConditionalGeneration']);
  assert.equal(c.image_token_id, 6);
  assert.equal(c.vision_start_token_id, 3);
  assert.deepEqual(c.rope_scaling, { type: 'mrope', mrope_section: [4, 6, 6] });
  assert.equal(c.vision_config.hidden_size, c.hidden_size);
  assert.equal(c.vision_config.embed_dim, 64);
  assert.equal(c.vision_config.spatial_merge_size, 2);
  assert.equal(c.tie_word_embeddings, true);
  assert.equal(c.text_config, undefined);
});

test('initialisation: N(0, 0.02) weights, zero biases, unit norms; a seed fixes every value', () => {
  const specs = qwen2vlTensorSpecs(tinyDims(100));
  const a = initTensors(specs, 5, 0.02),
    b = initTensors(specs, 5, 0.02),
    c = initTensors(specs, 6, 0.02);
  assert.deepEqual(a.get('model.layers.0.mlp.up_proj.weight'), b.get('model.layers.0.mlp.up_proj.weight'));
  assert.notDeepEqual(a.get('model.layers.0.mlp.up_proj.weight'), c.get('model.layers.0.mlp.up_proj.weight'));
  const w = a.get('model.layers.0.mlp.up_proj.weight')!;
  const mean = w.reduce((s, x) => s + x, 0) / w.length;
  const std = Math.sqrt(w.reduce((s, x) => s + (x - mean) ** 2, 0) / w.length);
  assert.ok(Math.abs(mean) < 1e-3 && Math.abs(std - 0.02) < 1e-3, `mean ${mean} std ${std}`);
  assert.ok(a.get('model.layers.0.self_attn.q_proj.bias')!.every((x) => x === 0));
  assert.ok(a.get('visual.blocks.0.norm1.bias')!.every((x) => x === 0));
  assert.ok(a.get('visual.blocks.0.norm1.weight')!.every((x) => x === 1));
  assert.ok(a.get('model.norm.weight')!.every((x) => x === 1));
});

test('the committed assets are what the generator writes (regenerate: node dist/src/model/write-default.js)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-default-'));
  try {
    await writeDefaultAssets(dir);
    for (const f of [
      'config.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'generation_config.json',
      'preprocessor_config.json',
      'model.safetensors',
    ]) {
      assert.ok(
        readFileSync(path.join(dir, f)).equals(readFileSync(path.join(DEFAULT_MODEL_DIR, f))),
        `${f} differs from assets/tiny-qwen2-vl/${f}`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the default folder loads: every synthetic word is one token, 112×112 images take 16 pads, tensors match config', async () => {
  const t = VlmTokenizer.load(DEFAULT_MODEL_DIR);
  for (const w of synthVocabulary()) {
    // Qwen2's pre-tokenizer splits numerals into single digits and keeps a space before them apart.
    if (/^\d+$/.test(w)) {
      assert.equal(t.encode(w).length, w.length, `"${w}"`);
      continue;
    }
    assert.equal(t.encode(w).length, 1, `"${w}"`);
    assert.equal(t.encode(` ${w}`).length, 1, `" ${w}"`);
  }
  const p = t.buildPrompt(VlmTokenizer.vqaMessages('How many circles are there?'), [
    { pixels: new Float32Array(64 * 1176), gridThw: [1, 8, 8] },
  ]);
  assert.equal(Array.from(p.ids).filter((x) => x === t.special.imagePad).length, 16);
  assert.ok(p.ids.length < 48, `prompt of ${p.ids.length} tokens`);
  const config = JSON.parse(readFileSync(path.join(DEFAULT_MODEL_DIR, 'config.json'), 'utf8')) as {
    vocab_size: number;
    image_token_id: number;
    eos_token_id: number;
  };
  assert.equal(config.vocab_size, t.vocabSize);
  assert.equal(config.image_token_id, t.special.imagePad);
  assert.equal(config.eos_token_id, t.special.imEnd);
  const { tensors } = await readSafetensors(path.join(DEFAULT_MODEL_DIR, 'model.safetensors'));
  const specs = qwen2vlTensorSpecs(tinyDims(t.vocabSize));
  assert.deepEqual([...tensors.keys()].sort(), specs.map((s) => s.name).sort());
  for (const s of specs) assert.deepEqual(tensors.get(s.name)!.shape, s.shape, s.name);
});
