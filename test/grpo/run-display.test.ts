/**
 * `trainer.run()`'s built-in live dashboard and the report facts a trainer records, on the native
 * engine with the embedded tiny Qwen2-VL: one display under one display id, updated in place and
 * throttled; shown automatically when a display sink is installed (the vqalab kernel), never in a
 * script; a failing front end does not stop training. Facts: config, seeds, data fingerprints,
 * weight hashes (start and checkpoints), engine, device, evaluations and final metrics, as
 * src/report's `recordedFacts()` sees them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { VqaDataset } from '../../src/data/dataset.js';
import { setDisplaySink, type DisplayOptions, type DisplaySink } from '../../src/display/sink.js';
import { MIME, type GroupPayload, type MetricsPayload, type MimeBundle } from '../../src/display/types.js';
import { show } from '../../src/display/show.js';
import sharp from 'sharp';
import { Trainer, type TrainerOptions } from '../../src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { mergeFacts, recordedFacts, STAMP_MIME, type StampFacts } from '../../src/report/facts.js';
// The report layer's trainer subscriber (the package entry loads it; a test of the trainer module alone does here).
import '../../src/report/trainer-facts.js';
import {
  loadTiny,
  TINY_COLORS,
  tinyImages,
  tinyModel,
  tinySamples,
  tinyShaped,
  tinyTokenizer,
} from './helpers/tiny-task.js';

const tokenizer = tinyTokenizer();

async function options(extra: Partial<TrainerOptions> = {}): Promise<TrainerOptions> {
  return {
    model: await tinyModel(),
    tokenizer,
    train: tinySamples(16),
    evalSets: { val: tinySamples(4, 100) },
    rewards: [tinyShaped],
    loadImages: tinyImages,
    loadModel: loadTiny,
    config: {
      promptsPerStep: 2,
      numGenerations: 4,
      maxCompletionLength: 3,
      learningRate: 1e-3,
      seed: 2,
      evalMaxTokens: 3,
    },
    ...extra,
  };
}

interface Sent {
  bundle: MimeBundle;
  options: DisplayOptions | undefined;
}

/** A sink like the kernel's: it records every bundle (JSON round trip, as the wire does). */
function recordingSink(): DisplaySink & { sent: Sent[] } {
  const sent: Sent[] = [];
  return {
    sent,
    display: (bundle, opts) => {
      sent.push({ bundle: JSON.parse(JSON.stringify(bundle)) as MimeBundle, options: opts && { ...opts } });
    },
  };
}

const dashboards = (sent: Sent[]) => sent.filter((s) => MIME.metrics in s.bundle);
const stamps = (sent: Sent[]) =>
  sent.filter((s) => STAMP_MIME in s.bundle).map((s) => s.bundle[STAMP_MIME] as StampFacts);

async function withSink<T>(sink: DisplaySink | undefined, fn: () => Promise<T>): Promise<T> {
  const previous = setDisplaySink(sink);
  try {
    return await fn();
  } finally {
    setDisplaySink(previous);
  }
}

test('with a display sink, run() shows one live dashboard: one display id, throttled updates, metrics, progress, the latest group', async () => {
  const o = await options();
  const trainer = new Trainer(o);
  const sink = recordingSink();
  try {
    // A long interval: the first bundle at once, then nothing until the run ends (throttled).
    const result = await withSink(sink, () =>
      trainer.run({ steps: 3, evalEvery: 3, handleSigint: false, dashboard: { intervalMs: 60_000, run: 'tiny' } }),
    );
    const dash = dashboards(sink.sent);
    assert.equal(
      dash.length,
      2,
      `bundles: ${dash.length} (the first display, then the final state; updates in between are throttled away)`,
    );
    assert.equal(dash[0]!.options?.update, undefined);
    assert.ok(dash[0]!.options?.displayId?.startsWith('vqalab-dashboard-'));
    assert.deepEqual(dash[1]!.options, { displayId: dash[0]!.options!.displayId, update: true });
    assert.equal(result.dashboard?.dashboard.displayId, dash[0]!.options!.displayId);
    const first = dash[0]!.bundle[MIME.metrics] as MetricsPayload;
    assert.deepEqual([first.progress?.step, first.progress?.total, first.runs[0]!.points.length], [0, 3, 0]);
    const p = dash[1]!.bundle[MIME.metrics] as MetricsPayload;
    assert.equal(p.title, 'GRPO training');
    assert.deepEqual(
      p.runs.map((r) => r.name),
      ['tiny'],
    );
    const points = p.runs[0]!.points;
    assert.deepEqual(
      points.filter((x) => 'reward' in x).map((x) => x.step),
      [0, 1, 2],
    );
    assert.ok(
      ['reward', 'accuracy', 'entropy', 'loss', 'grad_norm', 'completion_length', 'reward/tinyShaped'].every(
        (k) => k in points[2]!,
      ),
      Object.keys(points[2]!).join(),
    );
    assert.ok(
      points.every((x) => !('step_seconds' in x) && !('tokens_per_second' in x)),
      'no wall-clock values: a report of the run reproduces exactly',
    );
    const evalPoint = points.find((x) => 'eval/val' in x)!;
    assert.equal(evalPoint.step, 2);
    assert.equal(evalPoint['eval/val'], result.evals[0]!.overall / 100);
    assert.ok(p.keys!.includes('eval/val') && !p.keys!.includes('kl'), p.keys!.join());
    assert.deepEqual([p.progress!.step, p.progress!.total, p.progress!.status], [3, 3, 'done']);
    const g = p.latestGroup as GroupPayload;
    assert.equal(g.step, 2);
    assert.equal(g.completions.length, 4);
    assert.equal(g.sample.question, 'What color is the circle?');
    assert.ok(g.completions.every((c) => c.tokens?.length === c.length && c.tokenLogprobs?.every((x) => x <= 0)));
    assert.match(dash[1]!.bundle['text/html'] as string, /GRPO training/);
    assert.equal(typeof dash[1]!.bundle['text/plain'], 'string');

    // A second run of the same trainer: a new dashboard whose progress counts global steps.
    sink.sent.length = 0;
    await withSink(sink, () => trainer.run({ steps: 1, handleSigint: false, dashboard: { intervalMs: 0 } }));
    const again = dashboards(sink.sent);
    assert.ok(again.length >= 3, `interval 0: every change is sent (${again.length})`);
    assert.notEqual(again[0]!.options!.displayId, dash[0]!.options!.displayId);
    assert.ok(again.every((s) => s.options!.displayId === again[0]!.options!.displayId));
    const last = again.at(-1)!.bundle[MIME.metrics] as MetricsPayload;
    assert.deepEqual([last.progress!.step, last.progress!.total], [4, 4]);
  } finally {
    o.model.dispose();
  }
});

test('no sink: no dashboard by default; dashboard: true keeps its state; dashboard: false shows none even in a notebook', async () => {
  const o = await options();
  const trainer = new Trainer(o);
  try {
    const plain = await trainer.run({ steps: 1, handleSigint: false });
    assert.equal(plain.dashboard, undefined);
    const kept = await trainer.run({ steps: 1, handleSigint: false, dashboard: true });
    const p = kept.dashboard!.dashboard.payload();
    assert.deepEqual(
      p.runs[0]!.points.map((x) => x.step),
      [1],
    );
    assert.equal(p.progress!.status, 'done');
    assert.ok(!p.keys!.includes('eval/val'), 'no periodic evaluation: no empty evaluation plot');
    assert.equal(kept.dashboard!.dashboard.sent, 0);

    const sink = recordingSink();
    await withSink(sink, () => trainer.run({ steps: 1, handleSigint: false, dashboard: false }));
    assert.equal(dashboards(sink.sent).length, 0);
    assert.ok(stamps(sink.sent).length > 0, 'facts still go to the notebook');
    await assert.rejects(trainer.run({ steps: 1, handleSigint: false, dashboard: 'yes' as never }), {
      message: 'Expected \'auto\', true, false or dashboard options for dashboard but received "yes" of type string',
    });
  } finally {
    o.model.dispose();
  }
});

test('an interrupted run marks its dashboard stopped; a front end that throws does not stop training', async () => {
  const o = await options();
  const lines: string[] = [];
  const trainer = new Trainer({ ...o, log: (l) => lines.push(l) });
  try {
    const controller = new AbortController();
    const sink = recordingSink();
    const stopped = await withSink(sink, () =>
      trainer.run({
        steps: 5,
        handleSigint: false,
        signal: controller.signal,
        dashboard: { intervalMs: 0 },
        onStep: () => controller.abort(),
      }),
    );
    assert.equal(stopped.stoppedBy, 'abort');
    const p = dashboards(sink.sent).at(-1)!.bundle[MIME.metrics] as MetricsPayload;
    assert.deepEqual([p.progress!.status, p.progress!.step, p.progress!.total], ['stopped', 1, 5]);
    assert.equal(p.progress!.message, 'interrupted after step 0; the trainer can go on');

    let calls = 0;
    const broken: DisplaySink = {
      display: () => {
        calls++;
        throw new Error('the front end went away');
      },
    };
    const result = await trainer.run({ steps: 2, handleSigint: false, dashboard: { sink: broken, intervalMs: 0 } });
    assert.equal(result.stepsRun, 2);
    assert.equal(trainer.globalStep, 3);
    assert.ok(calls >= 3, `the dashboard kept trying (${calls})`);
    assert.ok(lines.includes('dashboard: could not send an update: the front end went away'), lines.join('\n'));
  } finally {
    o.model.dispose();
  }
});

test('a trainer records its facts for the report: config, seeds, data, weights, engine, device, evaluations, checkpoints, final metrics', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-facts-'));
  const o = await options({ outputDir: dir, modelDir: DEFAULT_MODEL_DIR });
  try {
    const before = recordedFacts().length;
    const sink = recordingSink();
    const trainer = new Trainer(o);
    const summary = await withSink(sink, async () => {
      await trainer.sft({ steps: 1, batchSize: 2, learningRate: 1e-3 });
      const warm = await trainer.evaluate('val');
      await trainer.run({ steps: 2, handleSigint: false, dashboard: false });
      await trainer.save();
      await trainer.evaluate('val');
      return warm;
    });
    const records = recordedFacts().slice(before);
    assert.deepEqual(stamps(sink.sent), records, 'in a notebook every record is one stamp output');
    const f = mergeFacts(records) as Required<StampFacts>;
    assert.deepEqual(f.configs.grpo, { ...trainer.config });
    assert.deepEqual(f.configs.sft, { steps: 1, batchSize: 2, learningRate: 1e-3, warmupSteps: 0, from: 0 });
    assert.deepEqual(f.seeds, { trainer: 2 });
    assert.deepEqual(f.datasets, [
      {
        name: 'train',
        split: 'train',
        rows: 16,
        fingerprint: `sha256:${VqaDataset.fromSamples(o.train).fingerprint()}`,
      },
      {
        name: 'val',
        split: 'val',
        rows: 4,
        fingerprint: `sha256:${VqaDataset.fromSamples(o.evalSets!.val!).fingerprint()}`,
      },
    ]);
    const sha = (file: string) => `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;
    const [base, ckpt] = f.models;
    assert.deepEqual(base, {
      name: 'tiny-qwen2-vl',
      hash: sha(path.join(DEFAULT_MODEL_DIR, 'model.safetensors')),
      path: path.resolve(DEFAULT_MODEL_DIR),
      role: 'base',
    });
    assert.equal(ckpt!.role, 'checkpoint');
    assert.equal(ckpt!.step, 2);
    assert.equal(ckpt!.hash, sha(path.join(ckpt!.path!, 'model', 'model.safetensors')));
    assert.notEqual(ckpt!.hash, base!.hash);
    assert.match(f.versions.engine!, /^vqalab native engine \d+\.\d+\.\d+ \(cpu, gemm [\w-]+, 2 threads\)$/);
    assert.equal(f.devices.length, 1);
    assert.equal(f.devices[0]!.kind, 'cpu');
    assert.deepEqual(f.tolerances, {}, 'CPU runs compare exactly');
    assert.equal(f.metrics['eval/val@sft1'], summary.overall);
    assert.ok(Number.isFinite(f.metrics['eval/val@grpo2']!));
    const last = trainer.metrics.history.filter((m) => m.kind === 'grpo').at(-1)!;
    assert.equal(f.metrics['train/steps'], 2);
    assert.equal(f.metrics['train/reward'], last.rewardMean);
    assert.deepEqual(f.notes, { stoppedBy: 'steps' });

    // Facts off: nothing recorded.
    const n = recordedFacts().length;
    const quiet = new Trainer({ ...o, recordFacts: false, outputDir: undefined });
    await quiet.run({ steps: 1, handleSigint: false });
    await quiet.evaluate('val');
    assert.equal(recordedFacts().length, n);
  } finally {
    o.model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('show(group) shows a rollout group of trainer.step() as the group view, token log-probs with decodeToken', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-show-group-'));
  const o = await options();
  try {
    for (const [name, [r, g, b]] of Object.entries(TINY_COLORS)) {
      await sharp({ create: { width: 112, height: 112, channels: 3, background: { r, g, b } } })
        .png()
        .toFile(path.join(dir, `${name}.png`));
    }
    const train = o.train.map((s) => ({
      ...s,
      imagePath: path.join(dir, `${(s.extra as { color: string }).color}.png`),
    }));
    const trainer = new Trainer({ ...o, train });
    const { groups } = await trainer.step();
    const group = groups[0]!;
    const sink = recordingSink();
    const bundle = await withSink(sink, () =>
      show(group, { decodeToken: (id) => tokenizer.decode([id], { skipSpecialTokens: false }) }),
    );
    assert.equal(sink.sent.length, 1);
    assert.deepEqual(Object.keys(bundle).sort(), [MIME.group, 'text/html', 'text/plain'].sort());
    const p = bundle[MIME.group] as GroupPayload;
    assert.equal(p.sample.question, 'What color is the circle?');
    assert.equal(p.sample.images[0]!.width, 112);
    assert.deepEqual(
      p.completions.map((c) => [c.text, c.reward, c.advantage, c.length]),
      group.completions.map((c) => [c.text, c.reward, c.advantage, c.tokenIds.length]),
    );
    assert.ok(p.completions.every((c) => c.tokens!.length === c.length && c.tokenLogprobs!.length === c.length));
    assert.equal(
      tokenizer.decode(Array.from(group.completions[0]!.tokenIds), { skipSpecialTokens: false }),
      p.completions[0]!.tokens!.join(''),
    );
    const plain = (await show(group))[MIME.group] as GroupPayload;
    assert.ok(
      plain.completions.every((c) => c.tokens === undefined),
      'without decodeToken: no per-token view',
    );
  } finally {
    o.model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
