import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { bundleFor, sampleBundle } from '../../src/display/bundle.js';
import { Dashboard, thin } from '../../src/display/dashboard.js';
import { imageRef } from '../../src/display/image.js';
import { DISPLAYED, setDisplaySink, type DisplayOptions, type DisplaySink } from '../../src/display/output.js';
import { browse, plot, show } from '../../src/display/show.js';
import { MIME, type MimeBundle } from '../../src/display/types.js';
import type { VqaSample } from '../../src/data/types.js';
import * as fx from './fixtures.js';

const image = await fx.sceneImage();

class RecordingSink implements DisplaySink {
  calls: { bundle: MimeBundle; options?: DisplayOptions }[] = [];
  display(bundle: MimeBundle, options?: DisplayOptions): void {
    this.calls.push({ bundle, options });
  }
}

test('every bundle carries the vendor type, a static text/html and text/plain; the sample card adds a PNG', async () => {
  const b = await sampleBundle(fx.sample(image));
  assert.deepEqual(Object.keys(b).sort(), [
    'application/vnd.vqalab.sample.v1+json',
    'image/png',
    'text/html',
    'text/plain',
  ]);
  assert.match(b['text/html'] as string, /^<style>/);
  assert.match(
    b['text/plain'] as string,
    /^Sample #42001 \(other\): What color is the square\?\n {2}answers: red ×7, dark red, maroon, crimson/,
  );
  const png = await sharp(Buffer.from(b['image/png'] as string, 'base64')).metadata();
  assert.equal(png.format, 'png');
  // The 48×32 image is enlarged by an integer factor (6) with nearest-neighbour, next to a 380 px text panel.
  assert.equal(png.width, 48 * 6 + 16 + 380);
  assert.ok(png.height! >= 32 * 6 + 16);
  const noImage = await sampleBundle(fx.sample(image, { images: [] }));
  assert.equal(noImage['image/png'], undefined);
  for (const [mime, payload] of [
    [MIME.group, fx.group(image)],
    [MIME.rewards, fx.rewardTable()],
    [MIME.metrics, fx.metrics(image)],
    [MIME.dataset, fx.dataset(image)],
  ] as const) {
    const bundle = bundleFor(mime, payload as never);
    assert.deepEqual(Object.keys(bundle).sort(), [mime, 'text/html', 'text/plain'].sort());
    assert.deepEqual(
      JSON.parse(JSON.stringify(bundle[mime])),
      JSON.parse(JSON.stringify(payload)),
      'the vendor payload survives JSON',
    );
  }
});

test('builders reject a bad payload with the field named', () => {
  const g = fx.group(image) as unknown as { completions: { length: unknown }[] };
  g.completions[1]!.length = -2;
  assert.throws(() => bundleFor(MIME.group, g as never), {
    name: 'PayloadError',
    message: 'Expected non-negative integer for group.completions[1].length but received -2 of type number',
  });
  assert.throws(() => bundleFor('text/x-nope' as never, {} as never), {
    message: 'Expected a vqalab vendor MIME type for mime but received "text/x-nope"',
  });
});

test('imageRef bounds the size, keeps PNG sources lossless, turns photos into JPEG, and names unreadable files', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqa-img-'));
  try {
    const big = path.join(dir, 'photo.jpg');
    await sharp({ create: { width: 1200, height: 800, channels: 3, background: '#884422' } })
      .jpeg()
      .toFile(big);
    const ref = await imageRef(big, { alt: 'brown' });
    assert.deepEqual([ref.width, ref.height, ref.alt], [448, 299, 'brown']);
    assert.match(ref.src, /^data:image\/jpeg;base64,/);
    const small = path.join(dir, 'shape.png');
    await sharp({ create: { width: 300, height: 200, channels: 3, background: '#fff' } })
      .png()
      .toFile(small);
    const refPng = await imageRef(small, { alt: 'white', maxSide: 150 });
    assert.deepEqual([refPng.width, refPng.height], [150, 100]);
    assert.match(refPng.src, /^data:image\/png;base64,/);
    writeFileSync(path.join(dir, 'broken.png'), 'not an image');
    await assert.rejects(imageRef(path.join(dir, 'broken.png'), { alt: '' }), {
      message: new RegExp(`^cannot read image ${dir}/broken.png: `),
    });
    await assert.rejects(imageRef(big, undefined as never), {
      message: 'Expected string (alt text for the image) for alt but received undefined',
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('show() dispatches on the value, sends through the sink and marks the bundle; a script (no sink) just gets the bundle', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqa-show-'));
  try {
    const imagePath = path.join(dir, 'img.png');
    await sharp({ create: { width: 64, height: 64, channels: 3, background: '#00aa00' } })
      .png()
      .toFile(imagePath);
    const vqa: VqaSample = {
      id: 'q1',
      imagePath,
      question: 'Is it green?',
      answer: 'yes',
      answers: Array(10).fill('yes'),
      answerType: 'yes/no',
    };
    const plain = await show(vqa, { prediction: 'yes' });
    assert.equal((plain as Record<symbol, unknown>)[DISPLAYED], undefined, 'nothing was sent without a sink');
    const payload = plain[MIME.sample] as { images: { alt: string; width: number }[]; prediction: string };
    assert.equal(payload.prediction, 'yes');
    assert.equal(payload.images[0]!.alt, 'image img.png for the question "Is it green?"');
    assert.ok(plain['image/png']);

    const sink = new RecordingSink();
    const previous = setDisplaySink(sink);
    try {
      await show(fx.group(image));
      await show(fx.rewardTable(), { displayId: 'tbl' });
      plot(fx.points(5), { title: 'bare points', name: 'mine' });
      await browse([vqa, { ...vqa, id: 'q2', answerType: 'number' }], { name: 'tiny' });
    } finally {
      setDisplaySink(previous);
    }
    assert.deepEqual(
      sink.calls.map((c) => Object.keys(c.bundle).find((k) => k.startsWith('application/'))),
      [MIME.group, MIME.rewards, MIME.metrics, MIME.dataset],
    );
    assert.equal(sink.calls[1]!.options?.displayId, 'tbl');
    assert.equal((sink.calls[0]!.bundle as Record<symbol, unknown>)[DISPLAYED], true);
    const m = sink.calls[2]!.bundle[MIME.metrics] as { title: string; runs: { name: string; points: unknown[] }[] };
    assert.deepEqual([m.title, m.runs[0]!.name, m.runs[0]!.points.length], ['bare points', 'mine', 5]);
    const d = sink.calls[3]!.bundle[MIME.dataset] as {
      name: string;
      total: number;
      answerTypes: Record<string, number>;
      fingerprint: string;
    };
    assert.deepEqual([d.name, d.total, d.answerTypes], ['tiny', 2, { 'yes/no': 1, number: 1 }]);
    assert.match(d.fingerprint, /^sha256:[0-9a-f]{16}$/);
    await assert.rejects(show(42 as never), {
      message:
        'Expected a sample, a group, a reward table, metrics or a dataset for value but received 42 of type number',
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dashboard: a fast loop sends few bundles, always the newest state, all to one display id', async () => {
  let clock = 0;
  const sink = new RecordingSink();
  const dash = new Dashboard({ total: 1000, intervalMs: 100, sink, now: () => clock, title: 'live' });
  assert.equal(sink.calls.length, 1, 'shown at once, empty');
  assert.ok(!sink.calls[0]!.options?.update, 'the first send is a display, not an update');
  for (let step = 0; step < 1000; step++) {
    clock += 0.5; // 2000 steps per second
    dash.log({ step, reward: step / 1000 });
  }
  // 500 ms of loop at one bundle per 100 ms at most: the leading sends only (the loop never yielded).
  assert.ok(sink.calls.length <= 7, `sent ${sink.calls.length}`);
  assert.ok(sink.calls.slice(1).every((c) => c.options?.update === true && c.options.displayId === dash.displayId));
  // The trailing edge delivers the newest state once the loop yields.
  await new Promise((r) => setTimeout(r, 150));
  const last = sink.calls.at(-1)!.bundle[MIME.metrics] as {
    runs: { points: { step: number }[] }[];
    progress: { step: number; etaSeconds: number; status: string };
  };
  assert.equal(last.runs[0]!.points.at(-1)!.step, 999);
  assert.equal(last.progress.step, 1000, 'steps are 0-based: after step 999 all 1000 are done');
  assert.equal(last.progress.etaSeconds, 0);
  const before = sink.calls.length;
  dash.finish('done');
  assert.equal(sink.calls.length, before + 1, 'finish sends at once');
  const fin = sink.calls.at(-1)!.bundle[MIME.metrics] as { progress: { status: string } };
  assert.equal(fin.progress.status, 'done');
  assert.match(sink.calls.at(-1)!.bundle['text/plain'] as string, /step 1000\/1000, 0\.5s elapsed, done/);
});

test('dashboard ETA: measured from the first logged step (start-up time excluded); 1-based steps supported', () => {
  let clock = 0;
  const dash = new Dashboard({ total: 100, now: () => clock });
  clock = 60_000; // a minute of model loading before the first step
  dash.log({ step: 0, loss: 1 });
  assert.equal(dash.payload().progress!.etaSeconds, null, 'unknown after one step');
  clock += 9_000;
  dash.log({ step: 9, loss: 1 });
  const pr = dash.payload().progress!;
  assert.deepEqual([pr.step, pr.etaSeconds, pr.elapsedSeconds], [10, 90, 69]);
  const one = new Dashboard({ total: 10, firstStep: 1, now: () => clock });
  one.log({ step: 1 });
  assert.equal(one.payload().progress!.step, 1);
  assert.throws(() => new Dashboard({ firstStep: 2 }), {
    message: 'Expected integer between 0 and 1 for firstStep but received 2 of type number',
  });
});

test('dashboard without a sink keeps state for bundle(); overlays earlier runs and thins long ones', () => {
  setDisplaySink(undefined);
  const dash = new Dashboard({ compare: [{ name: 'old', points: fx.points(10) }], run: 'new', maxPoints: 50 });
  for (let s = 0; s < 500; s++) dash.log({ step: s, loss: 1 / (s + 1) });
  dash.setGroup(fx.group(image));
  assert.equal(dash.sent, 0);
  const p = dash.bundle()[MIME.metrics] as {
    runs: { name: string; points: { step: number }[] }[];
    latestGroup: unknown;
    progress?: unknown;
  };
  assert.deepEqual(
    p.runs.map((r) => r.name),
    ['old', 'new'],
  );
  assert.ok(p.runs[1]!.points.length <= 50 && p.runs[1]!.points.at(-1)!.step === 499);
  assert.ok(p.latestGroup);
  assert.equal(p.progress, undefined, 'no total, no progress bar');
  assert.deepEqual(
    thin(
      [1, 2, 3, 4, 5].map((step) => ({ step })),
      3,
    ).map((x) => x.step),
    [1, 4, 5],
  );
  assert.throws(() => dash.log({ step: 1, loss: NaN }), {
    message: 'Expected finite number for point.loss but received NaN of type number',
  });
  assert.throws(() => new Dashboard({ total: -1 }), {
    message: 'Expected non-negative integer for total but received -1 of type number',
  });
});

test('a real reward lab table (class instance, NaN statistics, per-row errors) shows as a reward table', async () => {
  const { vqaAccuracy, exactMatch } = await import('../../src/reward/basic.js');
  const { defineReward } = await import('../../src/reward/core.js');
  const { rewardLab } = await import('../../src/display/reward-lab.js');
  const flaky = defineReward('flaky', (_s: unknown, completion: string) => {
    if (completion.includes('boom')) throw new Error('judge unavailable');
    return completion.length > 3 ? 1 : 0;
  });
  const sample = (id: string, answer: string): VqaSample => ({
    id,
    imagePath: '/nonexistent.png',
    question: `q${id}?`,
    answer,
    answers: Array(10).fill(answer),
  });
  const table = await rewardLab(
    [
      { sample: sample('1', 'two'), completions: ['two', '2', 'boom two'] },
      { sample: sample('2', 'red'), completions: ['red'] },
    ],
    [vqaAccuracy(), exactMatch(), flaky],
  );
  const b = await show(table);
  const p = b[MIME.rewards] as {
    rows: { errors?: Record<string, string> }[];
    stats: { zeroVarianceGroupFraction: Record<string, number | null> };
  };
  assert.equal(p.rows.length, 4);
  assert.ok(Object.values(p.stats.zeroVarianceGroupFraction).every((x) => x === null || typeof x === 'number'));
  assert.match(p.rows[2]!.errors?.flaky ?? '', /judge unavailable/);
  const html = b['text/html'] as string;
  assert.doesNotMatch(html, /data-vqa="error"/);
  assert.match(html, /title="error: [^"]*judge unavailable/);
});
