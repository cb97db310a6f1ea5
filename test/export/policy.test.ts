/**
 * OnnxPolicy (onnxruntime-node, KV cache) against LocalPolicy (the engine) on the synthetic set:
 * greedy answers equal token for token and the same evaluation; sampling with the same seed gives
 * the same tokens; `vqalab eval-policy --policy onnx:DIR`; and transformers.js (npm, offline from
 * the exported folder) generates the same greedy tokens as the engine.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { VqaSample } from '../../src/data/types.js';
import { scoreVqa } from '../../src/eval/vqa-metric.js';
import { exportOnnx } from '../../src/export/index.js';
import { Trainer } from '../../src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { evaluatePolicies } from '../../src/rollout/compare.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { OnnxPolicy, sampleToken, uniform01 } from '../../src/rollout/onnx.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { synthOnDisk } from './helpers.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');
let work: string;
let samples: VqaSample[];
let local: LocalPolicy;
let onnx: OnnxPolicy;
let exported: string;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'vqalab-onnx-policy-'));
  samples = await synthOnDisk(path.join(work, 'synth'), 40);
  // a briefly trained policy (SFT on the synthetic answers), so that the answers depend on the image
  local = await LocalPolicy.load(DEFAULT_MODEL_DIR, { threads: 2 });
  const trainer = new Trainer({
    model: local.model,
    tokenizer: local.tokenizer,
    train: samples,
    rewards: [(s, c) => scoreVqa(c, s.answers).accuracy],
    vqaAccuracy: (p, a) => scoreVqa(p, a).accuracy,
    loadImages: async (s) => [await local.image(s.imagePath)],
    outputDir: path.join(work, 'run'),
    config: { promptsPerStep: 2, numGenerations: 2, maxCompletionLength: 4, seed: 1 },
  });
  await trainer.sft({ steps: 12, batchSize: 8, learningRate: 5e-3 });
  const ckpt = await trainer.save();
  exported = path.join(work, 'onnx');
  await exportOnnx({ model: ckpt, out: exported }); // a trainer checkpoint folder (trainer.json + model/)
  onnx = await OnnxPolicy.load(exported, { threads: 2 });
});

after(async () => {
  local?.dispose();
  await onnx?.dispose();
  rmSync(work, { recursive: true, force: true });
});

test("greedy: OnnxPolicy answers every synthetic question with the engine's tokens, and evaluates the same", async () => {
  const greedy = { n: 1, temperature: 0, maxTokens: 8 };
  const answers = new Set<string>();
  for (const s of samples) {
    const [a] = await local.generate(s, greedy);
    const [b] = await onnx.generate(s, greedy);
    assert.deepEqual(b!.tokenIds, a!.tokenIds, `sample ${s.id}`);
    assert.equal(b!.text, a!.text);
    assert.equal(b!.finishReason, a!.finishReason);
    for (let t = 0; t < a!.logprobs!.length; t++)
      assert.ok(Math.abs(b!.logprobs![t]! - a!.logprobs![t]!) < 1e-4, `log-prob ${t} of ${s.id}`);
    answers.add(a!.text);
  }
  assert.ok(answers.size >= 2, `the answers vary with the question and image (${[...answers].join(' | ')})`);
  const cmp = await evaluatePolicies([local, onnx], samples, { maxTokens: 8, nRunners: 2 });
  const [l, o] = cmp.policies;
  assert.equal(o!.overall, l!.overall);
  assert.deepEqual(
    o!.rows.map((r) => r.prediction),
    l!.rows.map((r) => r.prediction),
  );
  assert.equal(o!.errors, 0);
});

test("sampling: the same seed and options give the engine's tokens (temperature, top-k, top-p, n rows)", async () => {
  for (const opts of [{ temperature: 1 }, { temperature: 0.7, topK: 5 }, { temperature: 1.3, topP: 0.8 }]) {
    for (const s of samples.slice(0, 4)) {
      const o = { n: 3, maxTokens: 6, seed: 11, ...opts };
      const a = await local.generate(s, o);
      const b = await onnx.generate(s, o);
      assert.deepEqual(
        b.map((c) => c.tokenIds),
        a.map((c) => c.tokenIds),
        `${JSON.stringify(opts)} ${s.id}`,
      );
    }
  }
  // the ported sampler: deterministic in (seed, row, step), argmax at temperature 0, top-k 1 is argmax
  assert.equal(uniform01(5, 1, 2), uniform01(5, 1, 2));
  assert.notEqual(uniform01(5, 1, 2), uniform01(5, 2, 2));
  const logits = Float32Array.from([0.1, 2, 0.3, 2, -1]);
  assert.equal(sampleToken(logits, { temperature: 0, seed: 0 }, 0, 0).id, 1);
  assert.equal(sampleToken(logits, { temperature: 1, topK: 1, seed: 9 }, 0, 0).id, 1);
});

test('vqalab eval-policy compares local: and onnx: policies on the same questions', () => {
  const file = path.join(work, 'samples.jsonl');
  writeFileSync(
    file,
    samples
      .slice(0, 6)
      .map((s) =>
        JSON.stringify({
          id: s.id,
          image_path: s.imagePath,
          question: s.question,
          answer: s.answer,
          answers: s.answers,
        }),
      )
      .join('\n') + '\n',
  );
  const r = spawnSync(
    process.execPath,
    [
      BIN,
      'eval-policy',
      '--dataset',
      file,
      '--policy',
      `onnx:${exported}`,
      '--max-tokens',
      '6',
      '--threads',
      '2',
      '--json',
      '--quiet',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.policies[0].name, `onnx:${exported}`);
  assert.equal(out.policies[0].errors, 0);
});

test("transformers.js (npm) loads the exported folder offline and generates the engine's greedy tokens", async () => {
  const tjs = await import('@huggingface/transformers');
  tjs.env.allowRemoteModels = false;
  tjs.env.localModelPath = path.dirname(exported);
  const model = await tjs.Qwen2VLForConditionalGeneration.from_pretrained(path.basename(exported), {
    local_files_only: true,
    dtype: 'fp32',
  });
  try {
    for (const s of samples.slice(0, 10)) {
      const img = await local.image(s.imagePath);
      const prompt = local.prompt(VlmTokenizer.vqaMessages(s.question, 1), [img]);
      const L = prompt.ids.length;
      const out = (await model.generate({
        input_ids: new tjs.Tensor('int64', BigInt64Array.from(Array.from(prompt.ids, BigInt)), [1, L]),
        attention_mask: new tjs.Tensor('int64', new BigInt64Array(L).fill(1n), [1, L]),
        pixel_values: new tjs.Tensor('float32', img.pixels, [img.pixels.length / 1176, 1176]),
        image_grid_thw: new tjs.Tensor('int64', BigInt64Array.from(img.gridThw.map(BigInt)), [1, 3]),
        max_new_tokens: 8,
        do_sample: false,
      } as never)) as unknown as { data: BigInt64Array };
      const theirs = Array.from(out.data).slice(L).map(Number);
      const ours = (await local.complete(prompt, { n: 1, temperature: 0, maxTokens: 8 })).choices[0]!.tokenIds;
      assert.deepEqual(theirs, ours, `sample ${s.id}`);
    }
  } finally {
    await model.dispose();
  }
});
