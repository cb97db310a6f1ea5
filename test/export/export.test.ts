/**
 * vqalab export onnx: the files (transformers.js layout), onnxruntime-node's logits against the
 * engine's on the same prompts (one and two images; fp32 ≤ 1e-4 of scale, fp16 ≤ 1e-2, int8 ≤ 0.15),
 * a merged LoRA adapter, external data, and the errors (an unsupported architecture, an adapter
 * for another base, an existing folder, a failure mid-export leaving nothing behind).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadModel } from '../../src/engine/model.js';
import type { ImageInput, Prompt } from '../../src/engine/types.js';
import { exportOnnx, graphParameters } from '../../src/export/index.js';
import { readConfig } from '../../src/engine/config.js';
import { decodeModel } from '../../src/export/onnx-schema.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { OnnxModel } from '../../src/rollout/onnx.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { logprobsAt, maxDiff } from './helpers.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');
let work: string;
let policy: LocalPolicy;
let prompts: Prompt[];
const continuation = Int32Array.from([5, 17, 99, 3, 250]);

async function png(width: number, height: number, rgb: [number, number, number]): Promise<Buffer> {
  const svg =
    `<svg width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg"><rect width="${width}" height="${height}" fill="white"/>` +
    `<circle cx="${width / 2}" cy="${height / 2}" r="${Math.min(width, height) / 3}" fill="rgb(${rgb.join(',')})"/></svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'vqalab-export-'));
  policy = await LocalPolicy.load(DEFAULT_MODEL_DIR, { threads: 2 });
  // two images of different grids (6x8 and 10x12 patches)
  const images: ImageInput[] = [
    await policy.image(await png(112, 84, [200, 30, 30])),
    await policy.image(await png(168, 140, [30, 30, 200])),
  ];
  assert.notDeepEqual(images[0]!.gridThw, images[1]!.gridThw);
  prompts = [1, 2].map((k) =>
    policy.prompt(VlmTokenizer.vqaMessages('what color is the circle?', k), images.slice(0, k)),
  );
});

after(() => {
  policy?.dispose();
  rmSync(work, { recursive: true, force: true });
});

/** Engine vs onnxruntime logits (every position of prompt + continuation) and completion log-probs. */
async function compare(dir: string, prompt: Prompt, engine = policy.model, dtype?: 'fp32' | 'fp16' | 'int8') {
  const [ref] = await engine.forward([{ prompt, completions: [continuation], returnLogits: true }]);
  const om = await OnnxModel.load(dir, { threads: 2, ...(dtype ? { dtype } : {}) });
  try {
    const got = await om.logits(prompt, continuation);
    const V = om.config.vocabSize;
    const logits = maxDiff(ref!.logits![0]!, got);
    const lp = maxDiff(ref!.logprobs[0]!, logprobsAt(got, V, prompt.ids.length - 1, continuation));
    return { logits, lp };
  } finally {
    await om.dispose();
  }
}

test("fp32 export: the transformers.js layout, valid ONNX, and logits equal the engine's (one and two images)", async () => {
  const out = path.join(work, 'fp32');
  const r = await exportOnnx({ model: DEFAULT_MODEL_DIR, out });
  assert.equal(r.externalData, false);
  for (const f of [
    'onnx/vision_encoder.onnx',
    'onnx/embed_tokens.onnx',
    'onnx/decoder_model_merged.onnx',
    'config.json',
    'generation_config.json',
    'preprocessor_config.json',
    'tokenizer.json',
    'tokenizer_config.json',
  ]) {
    assert.ok(existsSync(path.join(out, f)), `${f} written`);
  }
  const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
  assert.equal(cfg.model_type, 'qwen2_vl');
  assert.equal(cfg['transformers.js_config'].dtype, 'fp32');
  // the protobuf reads back: opset 17, IR 8, the decoder's cache inputs and outputs
  const m = decodeModel(readFileSync(path.join(out, 'onnx/decoder_model_merged.onnx')));
  assert.equal(m.ir_version, 8);
  assert.deepEqual(m.opset_import, [{ domain: '', version: 17 }]);
  const ins = m.graph.input.map((v: { name: string }) => v.name);
  assert.deepEqual(ins.slice(0, 5), [
    'inputs_embeds',
    'attention_mask',
    'position_ids',
    'past_key_values.0.key',
    'past_key_values.0.value',
  ]);
  assert.ok(m.graph.output.some((v: { name: string }) => v.name === 'present.3.value'));
  assert.deepEqual(
    readdirSync(work).filter((f) => f.startsWith('.')),
    [],
    'no temporary folder left',
  );
  for (const [k, prompt] of prompts.entries()) {
    const { logits, lp } = await compare(out, prompt);
    assert.ok(logits.scale > 0.5, `logits of a real scale (${logits.scale})`);
    assert.ok(
      logits.diff <= 1e-4 * logits.scale,
      `${k + 1} image(s): max |Δlogit| ${logits.diff} > 1e-4 × ${logits.scale}`,
    );
    assert.ok(lp.diff <= 1e-4 * logits.scale, `${k + 1} image(s): max |Δlogprob| ${lp.diff}`);
  }
});

test('fp16 and int8 exports: suffixed files, logits within their tolerances (1e-2 and 0.15 of scale)', async () => {
  for (const [dtype, tol] of [
    ['fp16', 1e-2],
    ['int8', 0.15],
  ] as const) {
    const out = path.join(work, dtype);
    await exportOnnx({ model: DEFAULT_MODEL_DIR, out, dtype });
    assert.ok(existsSync(path.join(out, `onnx/decoder_model_merged_${dtype}.onnx`)));
    assert.ok(!existsSync(path.join(out, 'onnx/decoder_model_merged.onnx')));
    for (const prompt of prompts) {
      const { logits } = await compare(out, prompt);
      assert.ok(logits.diff <= tol * logits.scale, `${dtype}: max |Δlogit| ${logits.diff} > ${tol} × ${logits.scale}`);
      assert.ok(logits.diff > 0, `${dtype} weights are not fp32`);
    }
  }
  const sizes = (d: string) =>
    readdirSync(path.join(work, d, 'onnx')).reduce((s, f) => s + readFileSync(path.join(work, d, 'onnx', f)).length, 0);
  assert.ok(sizes('fp16') < 0.6 * sizes('fp32') && sizes('int8') < 0.4 * sizes('fp32'), 'smaller files');
});

test('external data: the same graphs with weights in .onnx_data load and give the same logits', async () => {
  const out = path.join(work, 'external');
  const r = await exportOnnx({ model: DEFAULT_MODEL_DIR, out, externalDataThreshold: 0 });
  assert.equal(r.externalData, true);
  assert.ok(existsSync(path.join(out, 'onnx/decoder_model_merged.onnx_data')));
  assert.ok(
    readFileSync(path.join(out, 'onnx/decoder_model_merged.onnx')).length < 100_000,
    'weights are outside the .onnx',
  );
  assert.equal(
    JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'))['transformers.js_config'].use_external_data_format,
    true,
  );
  // the size estimate that decides external data counts every weight (tied head: vision + decoder = all)
  const counts = graphParameters(readConfig(path.join(DEFAULT_MODEL_DIR, 'config.json')));
  assert.equal(counts.vision_encoder + counts.decoder_model_merged, policy.model.numParameters.total);
  const dataBytes = readFileSync(path.join(out, 'onnx/decoder_model_merged.onnx_data')).length;
  assert.ok(
    dataBytes >= 4 * counts.decoder_model_merged - 4 * 4096 && dataBytes <= 4 * counts.decoder_model_merged + 64 * 200,
    `data file ${dataBytes} bytes`,
  );
  const a = await OnnxModel.load(path.join(work, 'fp32'), { threads: 2 });
  const b = await OnnxModel.load(out, { threads: 2 });
  assert.deepEqual(await b.logits(prompts[1]!, continuation), await a.logits(prompts[1]!, continuation));
  await a.dispose();
  await b.dispose();
});

test('a LoRA adapter is merged on export: logits equal the engine with the adapter', async () => {
  const lora = {
    rank: 4,
    alpha: 8,
    targetModules: ['q_proj', 'v_proj', 'down_proj', 'qkv', 'fc2'],
    vision: true,
    seed: 3,
  };
  const m = await loadModel(DEFAULT_MODEL_DIR, { lora, threads: 2 });
  // B = 0 at init: give every B values so that the adapter changes the outputs
  const nm = m._native;
  let k = 0;
  for (const name of nm._names().filter((n) => n.endsWith('.lora_B.weight'))) {
    const b = nm._get(name);
    for (let i = 0; i < b.length; i++) b[i] = 0.05 * Math.sin(++k);
    nm._set(name, b);
  }
  const adapter = path.join(work, 'adapter');
  await m.saveAdapter(adapter);
  m.dispose();
  const withAdapter = await loadModel(DEFAULT_MODEL_DIR, { lora, adapter, threads: 2 });
  const out = path.join(work, 'merged');
  const r = await exportOnnx({ model: DEFAULT_MODEL_DIR, adapter, out });
  assert.equal(r.adapterMerged, true);
  for (const prompt of prompts) {
    const { logits } = await compare(out, prompt, withAdapter);
    assert.ok(
      logits.diff <= 1e-4 * logits.scale,
      `merged adapter: max |Δlogit| ${logits.diff} > 1e-4 × ${logits.scale}`,
    );
    const base = await compare(out, prompt);
    assert.ok(base.logits.diff > 1e-2, 'the adapter changed the logits');
  }
  withAdapter.dispose();
});

test('bad inputs: clear errors, and no folder (final or temporary) left behind', async () => {
  const bad = path.join(work, 'other-arch');
  cpSync(DEFAULT_MODEL_DIR, bad, { recursive: true });
  const cfg = JSON.parse(readFileSync(path.join(bad, 'config.json'), 'utf8'));
  writeFileSync(path.join(bad, 'config.json'), JSON.stringify({ ...cfg, model_type: 'llava' }));
  await assert.rejects(
    exportOnnx({ model: bad, out: path.join(work, 'x1') }),
    /model_type "llava".*supported: "qwen2_vl"/,
  );

  // an adapter trained on another base (a different config): named in the error
  const otherBase = path.join(work, 'other-base');
  cpSync(DEFAULT_MODEL_DIR, otherBase, { recursive: true });
  writeFileSync(path.join(otherBase, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 256 }));
  const adapter = path.join(work, 'adapter-other');
  cpSync(path.join(work, 'adapter'), adapter, { recursive: true });
  const ac = JSON.parse(readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8'));
  writeFileSync(
    path.join(adapter, 'adapter_config.json'),
    JSON.stringify({ ...ac, base_model_name_or_path: otherBase }),
  );
  await assert.rejects(
    exportOnnx({ model: DEFAULT_MODEL_DIR, adapter, out: path.join(work, 'x2') }),
    /trained on .*other-base.*differs/,
  );
  // an adapter whose shapes do not fit (rank in the config differs from its tensors)
  writeFileSync(path.join(adapter, 'adapter_config.json'), JSON.stringify({ ...ac, r: 8 }));
  await assert.rejects(
    exportOnnx({ model: DEFAULT_MODEL_DIR, adapter, out: path.join(work, 'x3') }),
    /does not fit .*shape/,
  );

  // the output exists
  await assert.rejects(exportOnnx({ model: DEFAULT_MODEL_DIR, out: path.join(work, 'fp32') }), /already exists/);
  // a failure after the graphs were written (no tokenizer to ship): nothing left
  const noTok = path.join(work, 'no-tokenizer');
  cpSync(DEFAULT_MODEL_DIR, noTok, { recursive: true });
  rmSync(path.join(noTok, 'tokenizer.json'));
  await assert.rejects(exportOnnx({ model: noTok, out: path.join(work, 'x4') }), /no tokenizer.json/);
  for (const x of ['x1', 'x2', 'x3', 'x4']) assert.ok(!existsSync(path.join(work, x)), `${x} not created`);
  assert.deepEqual(
    readdirSync(work).filter((f) => f.startsWith('.')),
    [],
    'no temporary folder left',
  );

  // the CLI: usage errors and the message, exit codes
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [BIN, 'export', 'onnx', ...args], { encoding: 'utf8' });
  const r1 = cli('--model', bad, '--out', path.join(work, 'x5'));
  assert.equal(r1.status, 1);
  assert.match(r1.stderr, /does not support model_type "llava"/);
  const r2 = cli('--out', path.join(work, 'x6'), '--dtype', 'int4');
  assert.equal(r2.status, 2);
  assert.match(r2.stderr, /--dtype must be one of fp32, fp16, int8/);
  const help = cli('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: vqalab export onnx --out DIR/);
  const r3 = cli('--out', path.join(work, 'cli'), '--dtype', 'fp16', '--quiet');
  assert.equal(r3.status, 0, r3.stderr);
  assert.ok(existsSync(path.join(work, 'cli', 'onnx', 'vision_encoder_fp16.onnx')));
});
