import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as arrow from 'apache-arrow';
import sharp from 'sharp';
import { VqaDataset } from '../../src/data/dataset.js';
import { ImageCache } from '../../src/data/images.js';
import { readParquetFooter, readParquetTable, writeParquetAtomic } from '../../src/data/parquet.js';
import { utf8Data, utf8ListData } from '../../src/data/schema.js';
import type { VqaSample } from '../../src/data/types.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-ds-'));

/** A Parquet file written from Arrow columns, like one from pandas/pyarrow with these columns. */
async function parquetOf(name: string, columns: Record<string, arrow.Vector>, rowGroupSize?: number): Promise<string> {
  const file = path.join(dir, name);
  await writeParquetAtomic(
    file,
    async (write) => {
      await write(new arrow.Table(columns));
    },
    { rowGroupSize },
  );
  return file;
}

const str = (v: (string | null)[]) => arrow.makeVector(utf8Data(v));

test("a Parquet file with only the seed's four columns loads; extra columns are kept in extra", async () => {
  mkdirSync(path.join(dir, 'imgs'), { recursive: true });
  const file = await parquetOf('seed.parquet', {
    id: str(['1', '2', '3']),
    image_path: str([path.join(dir, 'imgs/a.jpg'), 'imgs/b.jpg', '/abs/c.jpg']),
    question: str(['What is it?', 'How many?', 'Is it red?']),
    answer: str(['cat', '2', null]),
    source: str(['coco', 'coco', 'web']),
    score: arrow.vectorFromArray([0.5, 1, 2], new arrow.Float64()),
    n: arrow.vectorFromArray([1n, 2n, 3n], new arrow.Int64()),
  });
  const ds = await VqaDataset.fromParquet(file);
  assert.equal(ds.size, 3);
  assert.deepEqual(ds.get(0), {
    id: '1',
    imagePath: path.join(dir, 'imgs/a.jpg'),
    question: 'What is it?',
    answer: 'cat',
    answers: ['cat'],
    row: 0,
    extra: { source: 'coco', score: 0.5, n: 1 },
  });
  // Relative image paths resolve against the Parquet file's folder.
  assert.equal(ds.get(1).imagePath, path.join(dir, 'imgs/b.jpg'));
  // A null answer (test split) reads as '' with no answers.
  assert.deepEqual([ds.get(2).answer, ds.get(2).answers], ['', []]);
  assert.equal(ds.get(-1).id, '3');
  assert.throws(() => ds.get(3), {
    message: 'Expected integer between -3 and 2 for index but received 3 of type number',
  });
});

test('integer ids, answers and image_paths list columns, VQAv2 columns', async () => {
  const file = await parquetOf('full.parquet', {
    id: arrow.vectorFromArray([10n, 11n], new arrow.Int64()),
    image_path: str(['/i/1.jpg', '/i/2.jpg']),
    question: str(['Q1?', 'Compare?']),
    answer: str(['yes', 'left']),
    answers: arrow.makeVector(utf8ListData([['yes', 'yes', 'no'], ['left']])),
    image_paths: arrow.makeVector(utf8ListData([[], ['/i/2.jpg', '/i/3.jpg']])),
    answer_type: str(['yes/no', 'other']),
    question_type: str(['is the', 'which']),
    multiple_choice_answer: str(['yes', 'left']),
    image_id: arrow.vectorFromArray([1, 2], new arrow.Int32()),
  });
  const ds = await VqaDataset.fromParquet(file);
  assert.deepEqual(ds.get(0), {
    id: '10',
    imagePath: '/i/1.jpg',
    question: 'Q1?',
    answer: 'yes',
    answers: ['yes', 'yes', 'no'],
    row: 0,
    multipleChoiceAnswer: 'yes',
    answerType: 'yes/no',
    questionType: 'is the',
    imageId: 1,
  });
  assert.deepEqual(ds.get(1).imagePaths, ['/i/2.jpg', '/i/3.jpg']);
  assert.deepEqual(ds.imagePaths(0), ['/i/1.jpg']);
  assert.deepEqual(ds.imagePaths(1), ['/i/2.jpg', '/i/3.jpg']);
});

test('Parquet without the required columns, with wrong types, or with null ids fails naming file and column', async () => {
  const noAnswer = await parquetOf('noanswer.parquet', {
    id: str(['1']),
    image_path: str(['/a.jpg']),
    question: str(['q']),
  });
  await assert.rejects(VqaDataset.fromParquet(noAnswer), {
    message: `${noAnswer}: missing required column "answer"; a VQA table needs id, image_path, question, answer (it has: id, image_path, question)`,
  });
  const two = await parquetOf('two.parquet', { id: str(['1']), question: str(['q']) });
  await assert.rejects(VqaDataset.fromParquet(two), /missing required columns "image_path", "answer"/);
  const badType = await parquetOf('badtype.parquet', {
    id: str(['1']),
    image_path: str(['/a.jpg']),
    question: arrow.vectorFromArray([1.5], new arrow.Float64()),
    answer: str(['a']),
  });
  await assert.rejects(VqaDataset.fromParquet(badType), {
    message: `${badType}: column "question" holds Float64; expected strings`,
  });
  const nullId = await parquetOf('nullid.parquet', {
    id: str(['1', null]),
    image_path: str(['/a.jpg', '/b.jpg']),
    question: str(['q', 'r']),
    answer: str(['a', 'b']),
  });
  await assert.rejects(VqaDataset.fromParquet(nullId), {
    message: `${nullId}: row 1: column "id" is null; expected an id`,
  });
  const notParquet = path.join(dir, 'not.parquet');
  writeFileSync(notParquet, 'PAR1 this is not parquet at all');
  await assert.rejects(
    VqaDataset.fromParquet(notParquet),
    new RegExp(`^Error: ${notParquet.replace(/[.]/g, '\\.')}: not a readable Parquet file`.slice(7)),
  );
  await assert.rejects(VqaDataset.fromParquet(path.join(dir, 'nope.parquet')), {
    message: `${path.join(dir, 'nope.parquet')}: no such file`,
  });
});

function samples(n: number): VqaSample[] {
  const types = ['yes/no', 'number', 'other'];
  return Array.from({ length: n }, (_, i) => ({
    id: `s${i}`,
    imagePath: `/img/${i % 7}.png`,
    question: `Question ${i}?`,
    answer: String(i % 3),
    answers: [String(i % 3)],
    answerType: types[i % 3],
    questionType: i % 2 ? 'how many' : 'what color is the',
  }));
}

test('shuffle and split are deterministic by seed, disjoint and complete', () => {
  const ds = VqaDataset.fromSamples(samples(1000));
  const a = ds.shuffle(7),
    b = ds.shuffle(7),
    c = ds.shuffle(8);
  assert.deepEqual(
    [...a].map((s) => s.id),
    [...b].map((s) => s.id),
  );
  assert.notDeepEqual(
    [...a].map((s) => s.id),
    [...c].map((s) => s.id),
  );
  assert.deepEqual([...a].map((s) => s.id).sort(), [...ds].map((s) => s.id).sort());
  const sp = ds.split({ train: 0.8, val: 0.1, test: 0.1 }, { seed: 3 });
  assert.deepEqual([sp.train.size, sp.val.size, sp.test.size], [800, 100, 100]);
  const ids = [...sp.train, ...sp.val, ...sp.test].map((s) => s.id);
  assert.equal(new Set(ids).size, 1000);
  assert.deepEqual(
    [...ds.split({ train: 0.8, val: 0.1, test: 0.1 }, { seed: 3 }).val].map((s) => s.id),
    [...sp.val].map((s) => s.id),
  );
  // Fixed expectations: the order is part of the contract (same seed, same split on every machine).
  assert.deepEqual(
    [...ds.take(10).shuffle(1)].map((s) => s.id),
    ['s7', 's8', 's3', 's2', 's1', 's5', 's9', 's4', 's0', 's6'],
  );
  assert.throws(() => ds.split({ a: 0.5, b: 0.4 }), {
    message: 'Expected fractions summing to 1 for fractions but received "a sum of 0.9" of type string',
  });
  // Views compose: a split of a filter of a shuffle.
  const numbers = ds.shuffle(1).filter({ answerType: 'number' });
  assert.ok([...numbers].every((s) => s.answerType === 'number'));
  assert.equal(numbers.size, 333);
});

test('filters by answer type, question type, answer and predicate; batches without images', () => {
  const ds = VqaDataset.fromSamples(samples(30));
  assert.equal(ds.filter({ answerType: ['yes/no', 'number'] }).size, 20);
  assert.equal(ds.filter({ questionType: /^how/ }).size, 15);
  assert.equal(ds.filter({ questionType: 'what color is the', answerType: 'other' }).size, 5);
  assert.equal(ds.filter({ answer: '0' }).size, 10);
  assert.equal(ds.filter((s) => s.question.includes('1')).size, 12);
  assert.throws(() => ds.filter({ colour: 'x' } as never), /Expected an object with keys among answerType/);
  const batches = [...ds.batches(8)];
  assert.deepEqual(
    batches.map((b) => b.length),
    [8, 8, 8, 6],
  );
  assert.deepEqual([...ds.batches(8, { dropLast: true })].length, 3);
  assert.deepEqual(
    [...ds.countBy('answerType')],
    [
      ['number', 10],
      ['other', 10],
      ['yes/no', 10],
    ],
  );
  assert.deepEqual(ds.select([5, 2]).get(1).id, 's2');
  assert.equal(ds.slice(10, 12).size, 2);
  assert.match(String(ds), /^VqaDataset\(<samples>, 30 samples; number: 10, other: 10, yes\/no: 10\)$/);
});

test('fingerprint: same content same hash, independent of folders, sensitive to content and order', async () => {
  const a = VqaDataset.fromSamples(samples(50));
  const moved = VqaDataset.fromSamples(
    samples(50).map((s) => ({ ...s, imagePath: s.imagePath.replace('/img/', '/elsewhere/') })),
  );
  assert.match(a.fingerprint(), /^[0-9a-f]{64}$/);
  assert.equal(a.fingerprint(), moved.fingerprint());
  const changed = samples(50);
  changed[10]!.answers = ['other'];
  assert.notEqual(VqaDataset.fromSamples(changed).fingerprint(), a.fingerprint());
  assert.notEqual(a.shuffle(1).fingerprint(), a.fingerprint());
  // Round trip through Parquet keeps the fingerprint.
  const file = path.join(dir, 'fp.parquet');
  await a.writeParquet(file, { rowGroupSize: 16 });
  const back = await VqaDataset.fromParquet(file);
  assert.equal(back.fingerprint(), a.fingerprint());
  assert.deepEqual((await readParquetFooter(file)).rowGroups, [16, 16, 16, 2]);
});

test('images decode on demand through an LRU cache; errors name sample and file', async () => {
  const imgDir = path.join(dir, 'cache');
  mkdirSync(imgDir);
  for (let i = 0; i < 3; i++) {
    await sharp({ create: { width: 20 + i, height: 10, channels: 3, background: { r: 10 * i, g: 0, b: 0 } } })
      .png()
      .toFile(path.join(imgDir, `${i}.png`));
  }
  // Room for two of the three decoded images (20x10x3 = 600 bytes each).
  const cache = new ImageCache(1300);
  const ds = VqaDataset.fromSamples(
    [0, 1, 2, 0, 9].map((k, i) => ({
      id: `x${i}`,
      imagePath: path.join(imgDir, `${k}.png`),
      question: 'q',
      answer: 'a',
      answers: ['a'],
    })),
    { imageCache: cache },
  );
  const img = await ds.image(0);
  assert.deepEqual([img.width, img.height, img.data.length], [20, 10, 600]);
  await ds.image(1);
  await ds.image(3); // same file as sample 0: a hit
  assert.deepEqual([cache.hits, cache.misses, cache.size], [1, 2, 2]);
  await ds.image(2); // evicts the least recently used (1.png)
  assert.equal(cache.size, 2);
  assert.ok(cache.bytes <= 1300);
  await ds.image(1);
  assert.equal(cache.misses, 4);
  const [a, b] = await Promise.all([ds.image(2), ds.image(2)]);
  assert.equal(a, b);
  await assert.rejects(ds.image(4), {
    message: `<samples>: sample x4 (row 4): image_path: ${path.join(imgDir, '9.png')}: image file not found`,
  });
  assert.equal(readdirSync(imgDir).length, 3);
});

test('the writer checks row counts and schemas, and leaves nothing on failure', async () => {
  const file = path.join(dir, 'fail.parquet');
  const t = (ids: string[]) => new arrow.Table({ id: str(ids) });
  await assert.rejects(
    writeParquetAtomic(file, async (write) => {
      await write(t(['a']));
      await write(new arrow.Table({ other: str(['b']) }));
    }),
    /a batch's schema \(other: Utf8\) differs from the first \(id: Utf8\)/,
  );
  await assert.rejects(
    writeParquetAtomic(file, async (write) => {
      await write(t(['a']));
      throw new Error('producer failed');
    }),
    /producer failed/,
  );
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('fail.parquet')),
    [],
  );
  const ok = await writeParquetAtomic(
    file,
    async (write) => {
      for (let i = 0; i < 5; i++) await write(t([`a${i}`, `b${i}`]));
    },
    { rowGroupSize: 3, metadata: { k: 'v' } },
  );
  assert.deepEqual([ok.rows, ok.rowGroups], [10, 4]);
  const { table, metadata } = await readParquetTable(file);
  assert.equal(table.numRows, 10);
  assert.equal(metadata.k, 'v');
});
