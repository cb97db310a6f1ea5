import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { Trainer } from '../../src/grpo/trainer.js';
import type { DisplayOptions } from '../../src/display/output.js';
import { metricsPoint, trainingDashboard } from '../../src/display/training.js';
import { MIME, type GroupPayload, type MetricsPayload, type MimeBundle } from '../../src/display/types.js';
import { ToyEngine } from '../grpo/helpers/toy-engine.js';
import { exactMatch, toyImages, toySamples, toyTokenizer } from '../grpo/helpers/toy-task.js';

test('a real trainer run feeds the live dashboard: one display, updates per step, metrics, progress, the latest group with token log-probs', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqa-train-dash-'));
  try {
    const png = path.join(dir, 'circle.png');
    await sharp({ create: { width: 32, height: 32, channels: 3, background: '#c33' } })
      .png()
      .toFile(png);
    const tokenizer = toyTokenizer();
    const model = new ToyEngine(tokenizer.vocabSize, 16, 1);
    const trainer = new Trainer({
      model,
      tokenizer,
      train: toySamples(16).map((s) => ({ ...s, imagePath: png })),
      rewards: [exactMatch],
      loadImages: toyImages,
      config: { promptsPerStep: 2, numGenerations: 4, maxCompletionLength: 4, learningRate: 0.05, seed: 5 },
    });
    const calls: { bundle: MimeBundle; options?: DisplayOptions }[] = [];
    const live = trainingDashboard({
      total: 3,
      run: 'toy',
      intervalMs: 0,
      sink: { display: (bundle, options) => calls.push({ bundle, options }) },
      decodeToken: (id) => tokenizer.decode([id]),
    });
    await trainer.run({ steps: 3, onStep: live.onStep, handleSigint: false });
    live.finish();
    assert.ok(calls.length >= 5, `display + updates: ${calls.length}`);
    assert.ok(calls.every((c) => c.options?.displayId === live.dashboard.displayId));
    assert.ok(calls.slice(1).every((c) => c.options?.update));
    const p = calls.at(-1)!.bundle[MIME.metrics] as MetricsPayload;
    assert.deepEqual(
      p.runs.map((r) => [r.name, r.points.map((pt) => pt.step)]),
      [['toy', [0, 1, 2]]],
    );
    assert.ok(
      ['reward', 'reward_std', 'completion_length', 'lr', 'reward/exactMatch'].every((k) => k in p.runs[0]!.points[2]!),
      Object.keys(p.runs[0]!.points[2]!).join(),
    );
    assert.ok(!('kl' in p.runs[0]!.points[0]!), 'no reference model: KL is NaN and left out');
    assert.deepEqual([p.progress!.step, p.progress!.total, p.progress!.status], [3, 3, 'done']);
    const g = p.latestGroup as GroupPayload;
    assert.equal(g.step, 2);
    assert.equal(g.completions.length, 4);
    assert.equal(g.sample.images[0]!.width, 32);
    for (const c of g.completions) {
      assert.equal(c.tokens!.length, c.length);
      assert.equal(c.tokenLogprobs!.length, c.length);
      assert.ok(c.tokens!.every((t) => typeof t === 'string') && c.tokenLogprobs!.every((x) => x <= 0));
    }
    assert.match(calls.at(-1)!.bundle['text/html'] as string, /class="vqa-tok"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("metricsPoint renames the trainer's numbers and drops non-finite ones", () => {
  const m = {
    step: 4,
    rewardMean: 0.5,
    rewardStd: 0.1,
    rewardParts: { vqa: 0.4, bad: NaN },
    accuracy: NaN,
    kl: NaN,
    entropy: 1.2,
    loss: 0.3,
    clipFractionLow: 0,
    clipFractionHigh: 0.01,
    gradNorm: 2,
    learningRate: 1e-5,
    completionLength: 7,
  } as never;
  assert.deepEqual(metricsPoint(m), {
    step: 4,
    reward: 0.5,
    reward_std: 0.1,
    entropy: 1.2,
    'clip_ratio/low_mean': 0,
    'clip_ratio/high_mean': 0.01,
    completion_length: 7,
    grad_norm: 2,
    loss: 0.3,
    lr: 1e-5,
    'reward/vqa': 0.4,
  });
});
