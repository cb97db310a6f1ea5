import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { VqaDataset } from '../../src/data/dataset.js';
import { synthSamples, writeSynth, type SynthShapeSpec } from '../../src/data/synth.js';
import { synthTokens, synthVocabulary, SYNTH_FAMILIES } from '../../src/data/synth-vocab.js';
import { Qwen2VLImageProcessor } from '../../src/vision/qwen2vl.js';

const BIN = path.resolve('bin/vqalab.js');
const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'vqalab-synth-'));

function filesOf(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(dir, p), readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

test('same seed, byte-identical output (Parquet and every PNG); another seed differs', async () => {
  const a = path.join(tmp(), 'a'),
    b = path.join(tmp(), 'b'),
    c = path.join(tmp(), 'c');
  const opts = { images: 24, questionsPerImage: 2, seed: 11, difficulty: 'medium' as const, quiet: true };
  await writeSynth(a, opts);
  const r = spawnSync(
    process.execPath,
    [
      BIN,
      'data',
      'synth',
      '--out',
      b,
      '--images',
      '24',
      '--questions-per-image',
      '2',
      '--seed',
      '11',
      '--difficulty',
      'medium',
      '--quiet',
      '--show',
      '0',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const fa = filesOf(a),
    fb = filesOf(b);
  assert.deepEqual([...fa.keys()].sort(), [...fb.keys()].sort());
  assert.equal(fa.size, 25);
  for (const [k, v] of fa) assert.ok(v.equals(fb.get(k)!), `${k} differs between runs`);
  await writeSynth(c, { ...opts, seed: 12 });
  assert.ok(!filesOf(c).get('synth.parquet')!.equals(fa.get('synth.parquet')!));
  // Rewriting into an existing synth folder replaces it, atomically, with the same bytes.
  await writeSynth(a, opts);
  assert.ok(filesOf(a).get('synth.parquet')!.equals(fb.get('synth.parquet')!));
});

test('every question and answer token is in synthVocabulary, across difficulties and seeds', async () => {
  const vocab = new Set(synthVocabulary());
  const families = new Set<string>();
  for (const difficulty of ['easy', 'medium', 'hard'] as const) {
    for await (const { sample } of synthSamples({
      images: 150,
      questionsPerImage: 3,
      seed: 3,
      difficulty,
      imageSize: 56,
    })) {
      for (const text of [sample.question, ...sample.answers]) {
        for (const t of synthTokens(text)) assert.ok(vocab.has(t), `"${t}" of "${text}" is not in synthVocabulary()`);
      }
      families.add(String(sample.extra!.family));
      assert.equal(sample.answers.length, 10);
    }
  }
  assert.deepEqual([...families].sort(), [...SYNTH_FAMILIES].sort());
});

test('answers are right: checked against the stored scene with independent code', async () => {
  const dir = path.join(tmp(), 'ds');
  await writeSynth(dir, { images: 120, questionsPerImage: 3, seed: 5, difficulty: 'hard', quiet: true });
  const ds = await VqaDataset.fromParquet(path.join(dir, 'synth.parquet'));
  assert.equal(ds.size, 360);
  let checked = 0;
  for (const s of ds) {
    const shapes = JSON.parse(String(s.extra!.shapes)) as SynthShapeSpec[];
    const q = s.question;
    let m: RegExpMatchArray | null;
    let expected: string | undefined;
    if ((m = q.match(/^How many (\w+)s are there\?$/)) && m[1] !== 'shape')
      expected = String(shapes.filter((x) => x.kind === m![1]).length);
    else if ((m = q.match(/^How many (\w+) shapes are there\?$/)))
      expected = String(shapes.filter((x) => x.color === m![1]).length);
    else if (q === 'How many shapes are there?') expected = String(shapes.length);
    else if ((m = q.match(/^What (?:color is the|is the color of the) (\w+)\?$/)))
      expected = shapes.find((x) => x.kind === m![1])!.color;
    else if ((m = q.match(/^Is there a (\w+) (\w+)\?$/)))
      expected = shapes.some((x) => x.color === m![1] && x.kind === m![2]) ? 'yes' : 'no';
    else if ((m = q.match(/^Is the (\w+) (\w+) on the left or right of the (\w+) (\w+)\?$/))) {
      const a = shapes.find((x) => x.color === m![1] && x.kind === m![2])!,
        b = shapes.find((x) => x.color === m![3] && x.kind === m![4])!;
      expected = a.x < b.x ? 'left' : 'right';
    }
    if (expected === undefined) continue;
    // The majority of the 10 annotators gives the right answer (number words count as digits).
    const words = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten'];
    const norm = (a: string) => (words.includes(a) ? String(words.indexOf(a)) : a);
    const agree = s.answers.filter((a) => norm(a) === expected).length;
    assert.ok(agree >= 6, `${s.id}: "${q}" expected ${expected}, annotators said ${s.answers.join(', ')}`);
    checked++;
  }
  assert.ok(checked > 100, `only ${checked} questions checked`);
  // Hard scenes hold 5 to 10 shapes.
  const counts = [...ds].map((s) => (JSON.parse(String(s.extra!.shapes)) as unknown[]).length);
  assert.ok(
    Math.min(...counts) >= 5 && Math.max(...counts) <= 10,
    `shape counts ${Math.min(...counts)}..${Math.max(...counts)}`,
  );
});

test('image size knob, PNG images the vision processor takes without resizing', async () => {
  const dir = path.join(tmp(), 'size');
  const r = await writeSynth(dir, { images: 3, seed: 1, imageSize: 56, quiet: true });
  assert.deepEqual([r.images, r.samples], [3, 3]);
  const ds = await VqaDataset.fromParquet(r.parquet);
  const meta = await sharp(ds.get(0).imagePath).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 56, 56, 3]);
  const p = await new Qwen2VLImageProcessor({ minPixels: 28 * 28 }).process(ds.get(0).imagePath);
  assert.deepEqual([p.gridThw, p.resizedSize], [[1, 4, 4], { height: 56, width: 56 }]);
  const d = await new Qwen2VLImageProcessor().process(
    (await VqaDataset.fromParquet((await writeSynth(path.join(tmp(), 'd'), { images: 1, quiet: true })).parquet)).get(0)
      .imagePath,
  );
  assert.deepEqual(d.gridThw, [1, 8, 8]); // the default 112x112: 16 image tokens
  assert.equal(d.numTokens, 16);
});

test('bad options and an occupied folder are refused with clear messages', async () => {
  await assert.rejects(writeSynth(path.join(tmp(), 'x'), { images: 0 }), {
    message: 'Expected positive integer for images but received 0 of type number',
  });
  await assert.rejects(
    writeSynth(path.join(tmp(), 'x'), { difficulty: 'extreme' as 'easy' }),
    /Expected one of "easy", "medium", "hard" for difficulty/,
  );
  await assert.rejects(
    writeSynth(path.join(tmp(), 'x'), { families: ['colour' as 'color'] }),
    /for families\[0\] but received "colour"/,
  );
  const busy = tmp();
  mkdirSync(path.join(busy, 'mine'));
  writeFileSync(path.join(busy, 'mine', 'notes.txt'), 'keep me');
  await assert.rejects(
    writeSynth(path.join(busy, 'mine'), { images: 1 }),
    /mine: exists and is not a synth output folder \(no synth\.parquet\); choose another --out/,
  );
  assert.equal(readFileSync(path.join(busy, 'mine', 'notes.txt'), 'utf8'), 'keep me');
  const r = spawnSync(process.execPath, [BIN, 'data', 'synth', '--images', '2'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--out DIR is required/);
});
