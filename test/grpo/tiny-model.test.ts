/**
 * The trainer over the native engine and the embedded tiny Qwen2-VL (assets/tiny-qwen2-vl): a
 * few steps change every tensor of the checkpoint (TRL's smoke test), and a resumed run equals
 * the uninterrupted one bit for bit on CPU.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel } from '../../src/engine/index.js';
import type { VqaSample } from '../../src/data/types.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { Trainer, type TrainerOptions } from '../../src/grpo/trainer.js';
import { Qwen2VLImageProcessor } from '../../src/vision/qwen2vl.js';
import { readSafetensors } from '../../src/util/safetensors.js';
import { Rng } from '../../src/grpo/rng.js';
import type { RewardFn } from '../../src/reward/types.js';

const tokenizer = VlmTokenizer.load(DEFAULT_MODEL_DIR);
const processor = new Qwen2VLImageProcessor();
const COLORS = ['red', 'green', 'blue', 'yellow'];
const RGB: Record<string, [number, number, number]> = { red: [214, 39, 40], green: [44, 160, 44], blue: [31, 95, 214], yellow: [242, 210, 27] };

function samples(n: number, offset = 0): VqaSample[] {
  return Array.from({ length: n }, (_, i) => {
    const color = COLORS[(i + offset) % COLORS.length]!;
    return { id: `tiny-${i + offset}`, imagePath: `memory:${color}`, question: 'What color is the circle?', answer: color, answers: Array(10).fill(color), answerType: 'other', extra: { color } };
  });
}

async function loadImages(sample: VqaSample) {
  const color = (sample.extra as { color: string }).color;
  const rng = new Rng(Number(sample.id.split('-')[1]));
  const data = new Uint8Array(112 * 112 * 3);
  for (let p = 0; p < 112 * 112; p++) for (let c = 0; c < 3; c++) data[p * 3 + c] = Math.max(0, Math.min(255, RGB[color]![c]! + rng.int(41) - 20));
  const img = await processor.process({ data, width: 112, height: 112 });
  return [{ pixels: img.pixels, gridThw: img.gridThw }];
}

/** Exact match plus a small length term, so random completions rarely tie. */
const shaped: RewardFn = (sample, completion) => (completion.trim() === sample.answer ? 1 : 0) - 0.01 * completion.length;

async function options(outputDir?: string): Promise<TrainerOptions> {
  return {
    model: await loadModel(DEFAULT_MODEL_DIR, { threads: 2 }), tokenizer, train: samples(16), evalSets: { val: samples(4, 100) },
    rewards: [shaped], loadImages, loadModel: (dir) => loadModel(dir, { threads: 2, loadOptimizer: true }), outputDir,
    config: { promptsPerStep: 2, numGenerations: 4, maxCompletionLength: 4, learningRate: 1e-3, seed: 1, numIterations: 2, evalMaxTokens: 4 },
  };
}

async function tensorsOf(model: TrainerOptions['model'], dir: string): Promise<Map<string, Float32Array>> {
  await model.save(dir);
  const { tensors } = await readSafetensors(path.join(dir, 'model.safetensors'));
  return new Map([...tensors].map(([k, t]) => [k, t.data as Float32Array]));
}

test('SFT then GRPO steps on the tiny Qwen2-VL change every tensor', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-tiny-'));
  try {
    const o = await options();
    const before = await tensorsOf(o.model, path.join(dir, 'before'));
    const t = new Trainer(o);
    await t.sft({ steps: 2, batchSize: 4, learningRate: 1e-3 });
    const out = await t.run({ steps: 2, handleSigint: false });
    assert.equal(out.stepsRun, 2);
    const m = t.metrics.history.filter((x) => x.kind === 'grpo');
    assert.ok(m.every((x) => Number.isFinite(x.loss) && x.skippedUpdates === 0), JSON.stringify(m.map((x) => [x.loss, x.skippedUpdates])));
    const after = await tensorsOf(o.model, path.join(dir, 'after'));
    assert.equal(after.size, before.size);
    for (const [name, old] of before) {
      assert.ok(after.get(name)!.some((v, i) => v !== old[i]), `Parameter ${name} has not changed.`);
    }
    const e = await t.evaluate('val');
    assert.equal(e.n, 4);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resume equals the uninterrupted run on the native engine (CPU, bit-exact)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-tiny-resume-'));
  try {
    const a = new Trainer(await options());
    await a.run({ steps: 4, handleSigint: false });
    await a.model.save(path.join(dir, 'a'));

    const run = path.join(dir, 'run');
    const b = new Trainer(await options(run));
    await b.run({ steps: 2, checkpointEvery: 2, handleSigint: false });
    b.model.dispose();
    const o = await options(run);
    o.model.dispose();
    const c = await Trainer.resume(run, { ...o, loadModel: o.loadModel! });
    assert.equal(c.globalStep, 2);
    await c.run({ steps: 2, handleSigint: false });
    await c.model.save(path.join(dir, 'c'));

    const wa = readFileSync(path.join(dir, 'a', 'model.safetensors')), wc = readFileSync(path.join(dir, 'c', 'model.safetensors'));
    assert.ok(wa.equals(wc), 'weights after 2 + resume + 2 steps differ from 4 uninterrupted steps');
    const rewards = (t: Trainer) => t.metrics.history.filter((x) => x.kind === 'grpo').map((x) => [x.step, x.rewardMean, x.loss]);
    assert.deepEqual(rewards(c), rewards(a));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
