import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { VqaDataset } from '../../src/data/dataset.js';
import { verifyDataset } from '../../src/data/verify.js';
import type { VqaSample } from '../../src/data/types.js';

const BIN = path.resolve('bin/vqalab.js');
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [BIN, 'data', ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });

async function badDataset() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-verify-'));
  const good = path.join(dir, 'good.jpg');
  await sharp({ create: { width: 40, height: 30, channels: 3, background: '#cc3300' } })
    .jpeg()
    .toFile(good);
  const bytes = readFileSync(good);
  const truncated = path.join(dir, 'truncated.jpg');
  writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
  const garbage = path.join(dir, 'garbage.jpg');
  writeFileSync(garbage, Buffer.from('this is not a jpeg, just text'));
  const missing = path.join(dir, 'missing.jpg');
  const s = (
    id: string,
    imagePath: string,
    question: string,
    answerType: string,
    extra?: Partial<VqaSample>,
  ): VqaSample => ({ id, imagePath, question, answer: 'a', answers: ['a'], answerType, ...extra });
  const samples = [
    s('1', good, 'Fine?', 'yes/no'),
    s('2', truncated, 'Truncated?', 'yes/no'),
    s('3', garbage, 'Garbage?', 'other'),
    s('4', missing, 'Missing?', 'other'),
    s('1', good, 'Duplicate id?', 'number'),
    s('6', good, '   ', 'number'),
    s('7', good, 'Two images, second missing?', 'other', { imagePaths: [good, missing] }),
    s('8', good, 'Fine too?', 'number'),
  ];
  const file = path.join(dir, 'bad.parquet');
  await VqaDataset.fromSamples(samples).writeParquet(file);
  return { dir, file, good, truncated, garbage, missing };
}

test('verify finds corrupt JPEGs, garbage, missing files, duplicate ids, empty questions; summary by answer type', async () => {
  const f = await badDataset();
  const r = await verifyDataset(f.file, { quiet: true, dropBad: path.join(f.dir, 'clean.parquet') });
  assert.equal(r.rows, 8);
  assert.deepEqual(
    r.issues.map((i) => [i.row, i.id, i.field, i.problem]),
    [
      [1, '2', 'image_path', 'undecodable image'],
      [2, '3', 'image_path', 'undecodable image'],
      [3, '4', 'image_path', 'missing image'],
      [4, '1', 'id', 'duplicate id'],
      [5, '6', 'question', 'empty question'],
      [6, '7', 'image_paths[1]', 'missing image'],
    ],
  );
  assert.match(r.issues[0]!.detail, new RegExp(`^${f.truncated}: .*(premature end|truncated)`, 'i'));
  assert.match(r.issues[1]!.detail, /unsupported image format/);
  assert.equal(r.issues[2]!.detail, `${f.missing} does not exist`);
  assert.equal(r.issues[3]!.detail, 'id "1" already used by row 0');
  assert.equal(r.badRows, 6);
  assert.deepEqual(r.images, { checked: 4, missing: 1, undecodable: 2 });
  assert.deepEqual(
    [...r.byAnswerType],
    [
      ['other', { rows: 3, bad: 3 }],
      ['number', { rows: 3, bad: 2 }],
      ['yes/no', { rows: 2, bad: 1 }],
    ],
  );
  // The clean copy holds the good rows, and verifies clean.
  const clean = await VqaDataset.fromParquet(path.join(f.dir, 'clean.parquet'));
  assert.deepEqual(
    [...clean].map((s) => s.id),
    ['1', '8'],
  );
  assert.equal((await verifyDataset(path.join(f.dir, 'clean.parquet'), { quiet: true })).badRows, 0);
});

test('verify CLI: problems with row, id and field; exit 1; --drop-bad; exit 2 for a non-VQA file', async () => {
  const f = await badDataset();
  const out = path.join(f.dir, 'cli-clean.parquet');
  const r = cli('verify', f.file, '--drop-bad', out, '--quiet');
  assert.equal(r.status, 1, r.stderr);
  assert.match(
    r.stdout,
    new RegExp(`^${f.file}: row 1 \\(id 2\\): image_path: undecodable image: ${f.truncated}: `, 'm'),
  );
  assert.match(
    r.stdout,
    new RegExp(`^${f.file}: row 3 \\(id 4\\): image_path: missing image: ${f.missing} does not exist$`, 'm'),
  );
  assert.match(r.stdout, /^.*row 4 \(id 1\): id: duplicate id: id "1" already used by row 0$/m);
  assert.match(r.stdout, /^.*row 5 \(id 6\): question: empty question: question is empty$/m);
  assert.match(r.stdout, /^ {2}answer type +rows +bad\n {2}other +3 +3\n {2}number +3 +2\n {2}yes\/no +2 +1$/m);
  assert.match(
    r.stdout,
    /^verify: 6 bad rows \(1 duplicate id, 1 empty question, 2 missing images, 2 undecodable images\)$/m,
  );
  assert.match(r.stdout, /^verify: wrote 2 good rows to .*cli-clean\.parquet$/m);
  assert.ok(existsSync(out));
  assert.equal(cli('verify', out, '--quiet').status, 0);
  // --no-decode only checks existence: the corrupt files pass, the missing ones do not.
  const nd = cli('verify', f.file, '--no-decode', '--quiet');
  assert.match(nd.stdout, /verify: 4 bad rows \(1 duplicate id, 1 empty question, 2 missing images\)/);
  // A Parquet file without the required columns, and a file that is not Parquet.
  const noCols = path.join(f.dir, 'nocols.parquet');
  const { writeParquetAtomic } = await import('../../src/data/parquet.js');
  const arrow = await import('apache-arrow');
  await writeParquetAtomic(noCols, async (w) => {
    await w(new arrow.Table({ id: arrow.vectorFromArray(['1'], new arrow.Utf8()) }));
  });
  const nc = cli('verify', noCols);
  assert.equal(nc.status, 2);
  assert.match(nc.stderr, /nocols\.parquet: missing required columns "image_path", "question", "answer"/);
  const np = cli('verify', f.good);
  assert.equal(np.status, 2);
  assert.match(np.stderr, /good\.jpg: not a readable Parquet file/);
  assert.equal(cli('verify').status, 2);
});
