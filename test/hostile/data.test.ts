/**
 * Hostile dataset rows (issue 20, defect 7) and bad dataset files: `vqalab data verify --model`
 * applies the limits a training run will (the prompt with the model's template, against its
 * context; an image's pixels from its header, before decoding) and names each bad row by its id;
 * corrupt Parquet and JSON are clear errors.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { VqaDataset } from '../../src/data/dataset.js';
import { verifyDataset } from '../../src/data/verify.js';
import type { VqaSample } from '../../src/data/types.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { bombPng } from './files.js';

const BIN = path.resolve('bin/vqalab.js');
let dir: string;
let file: string;

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-hostile-data-'));
  const good = path.join(dir, 'good.png');
  await sharp({ create: { width: 64, height: 48, channels: 3, background: '#3366cc' } })
    .png()
    .toFile(good);
  const bomb = path.join(dir, 'bomb.png');
  writeFileSync(bomb, bombPng(16000, 16000));
  const s = (id: string, imagePath: string, question: string): VqaSample => ({
    id,
    imagePath,
    question,
    answer: 'a',
    answers: ['a'],
    answerType: 'other',
  });
  const samples = [
    s('ok-1', good, 'What color is it?'),
    s('huge-question', good, 'why '.repeat(262_144)), // 1 MiB
    s('bomb', bomb, 'What is in the picture?'),
    s('long-question', good, 'blue '.repeat(1200)), // under the character budget, over the context in tokens
    s('ok-2', good, 'Is it blue?'),
  ];
  file = path.join(dir, 'hostile.parquet');
  await VqaDataset.fromSamples(samples).writeParquet(file);
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('verify --model flags a 1 MB question, a too-long prompt and a 16000x16000 PNG by row id, before decoding or tokenising them', async () => {
  // Peak memory, not time: decoding the bomb grows the peak by ~760 MB (its RGB), whatever the machine's speed.
  const peakBefore = process.resourceUsage().maxRSS;
  const r = await verifyDataset(file, { quiet: true, model: DEFAULT_MODEL_DIR });
  const grewMiB = (process.resourceUsage().maxRSS - peakBefore) / 1024;
  assert.deepEqual(
    r.issues.map((i) => [i.id, i.field, i.problem]),
    [
      ['huge-question', 'question', 'prompt too long'],
      ['bomb', 'image_path', 'image too large'],
      ['long-question', 'question', 'prompt too long'],
    ],
  );
  assert.match(
    r.issues[0]!.detail,
    /the question has 1,048,576 characters; no prompt that long fits .*context of 1024 tokens/,
  );
  assert.match(
    r.issues[1]!.detail,
    /16000x16000 = 256,000,000 pixels, more than the limit of 16,777,216 \(--max-image-pixels\)/,
  );
  assert.match(
    r.issues[2]!.detail,
    /the prompt is [\d,]+ tokens \(images included\) \+ 1 new > the context of 1024 tokens/,
  );
  assert.equal(r.badRows, 3);
  assert.ok(grewMiB < 400, `the peak memory grew by ${grewMiB.toFixed(0)} MiB: was the bomb decoded?`);
});

test('without --model the pixel budget still applies; the CLI prints the row ids and exits 1', () => {
  const r = spawnSync(process.execPath, [BIN, 'data', 'verify', file, '--model', DEFAULT_MODEL_DIR, '--quiet'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stdout, /row 1 \(id huge-question\): question: prompt too long/);
  assert.match(r.stdout, /row 2 \(id bomb\): image_path: image too large/);
  assert.match(r.stdout, /verify: 3 bad rows/);
  const plain = spawnSync(process.execPath, [BIN, 'data', 'verify', file, '--quiet'], { encoding: 'utf8' });
  assert.equal(plain.status, 1);
  assert.match(plain.stdout, /row 2 \(id bomb\): image_path: image too large/);
  assert.ok(!/huge-question/.test(plain.stdout), 'prompt length needs --model');
});

test('corrupt Parquet and JSON files are clear errors (exit 2), not crashes', () => {
  const notParquet = path.join(dir, 'garbage.parquet');
  writeFileSync(notParquet, Buffer.from('PAR1 this is not really parquet PAR1'));
  let r = spawnSync(process.execPath, [BIN, 'data', 'verify', notParquet, '--quiet'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /garbage\.parquet/);
  assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace: ${r.stderr}`);
  const truncated = path.join(dir, 'truncated.parquet');
  writeFileSync(truncated, Buffer.alloc(3));
  r = spawnSync(process.execPath, [BIN, 'data', 'verify', truncated, '--quiet'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /truncated\.parquet/);
  const badJson = path.join(dir, 'questions.json');
  writeFileSync(badJson, '{"questions": [ {"question_id": 1, "question": "x"');
  r = spawnSync(
    process.execPath,
    [
      BIN,
      'data',
      'convert',
      '--questions',
      badJson,
      '--annotations',
      badJson,
      '--image-dir',
      dir,
      '--output',
      path.join(dir, 'o.parquet'),
    ],
    { encoding: 'utf8' },
  );
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /questions\.json/);
  assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace: ${r.stderr}`);
});
