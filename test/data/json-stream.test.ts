import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { scanJsonArray } from '../../src/data/json-stream.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-json-'));
let k = 0;
const file = (text: string | Buffer) => {
  const p = path.join(dir, `f${k++}.json`);
  writeFileSync(p, text);
  return p;
};

async function collect(p: string, key: string, chunkSize?: number) {
  const items: unknown[] = [];
  const r = await scanJsonArray(p, {
    arrayKey: key,
    chunkSize,
    onItem: (x, i) => {
      assert.equal(i, items.length);
      items.push(x);
    },
  });
  return { items, ...r };
}

test('streams elements equal to JSON.parse at every chunk size, escapes and unicode included', async () => {
  const doc = {
    info: { description: 'x "quoted" \\ back', year: 2017 },
    data_subtype: 'val2014',
    questions: [
      { image_id: 1, question: 'What is "this"?', question_id: 1000 },
      { image_id: 2, question: 'Ends with a backslash \\', question_id: 2000 },
      { image_id: 3, question: 'Two \\\\ and a quote \\" and {braces} [brackets]', question_id: 3000 },
      { image_id: 4, question: 'café ☕ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u0000 \n', question_id: 4000 },
      [1, 2, { nested: [] }],
      'a string',
      42,
      -1.5e3,
      true,
      null,
    ],
    license: { name: 'CC' },
  };
  const text = JSON.stringify(doc, null, 1);
  const p = file('\ufeff' + text);
  for (const chunk of [1, 2, 3, 5, 7, 64, 1 << 20]) {
    const r = await collect(p, 'questions', chunk);
    assert.deepEqual(r.items, doc.questions, `chunk ${chunk}`);
    assert.deepEqual(r.topLevel, { info: doc.info, data_subtype: 'val2014', license: doc.license });
    assert.equal(r.count, doc.questions.length);
  }
  // Compact form, array last, a scalar as the last element.
  const r = await collect(file('{"a":[],"questions":[1,2,3]}'), 'questions', 4);
  assert.deepEqual(r.items, [1, 2, 3]);
  assert.deepEqual((await collect(file('{"questions":[]}'), 'questions')).items, []);
});

test('a large other member is skipped, not held', async () => {
  const big = {
    annotations: Array.from({ length: 50000 }, (_, i) => ({ question_id: i, answers: ['yes', 'no'] })),
    questions: [{ q: 1 }],
  };
  const r = await collect(file(JSON.stringify(big)), 'questions', 4096);
  assert.deepEqual(r.items, [{ q: 1 }]);
  assert.deepEqual(r.skippedKeys, ['annotations']);
  assert.deepEqual(r.topLevel, {});
});

test('wrong shapes and broken JSON fail naming the file, the byte and what was expected', async () => {
  const cases: [string, RegExp][] = [
    [
      '[{"question_id": 1}]',
      /byte 0: expected a JSON object with a "questions" array at the top level, found an array/,
    ],
    ['{"annotations": [1]}', /no "questions" array at the top level \(keys: "annotations"\)/],
    ['{"questions": {"a": 1}}', /byte 14: "questions" must be an array, found '\{'/],
    [
      '{"questions": [{"a": 1}, {"a": 2',
      /unexpected end of file at byte 32 inside "questions" \(after 1 complete elements\): the JSON is truncated/,
    ],
    ['{"questions": [{"a": 1}, {"a": 2}]', /unexpected end of file at byte 34: the JSON is truncated/],
    ['{"questions": [{"a": 1} {"a": 2}]}', /byte 24: after questions\[0\]: expected ',' or '\]', found '\{'/],
    ['{"questions": [{"a": 1}, {"a": tru}]}', /byte 25: questions\[1\] is not valid JSON/],
    ['{"questions": [1]} x', /byte 19: unexpected 'x' after the end of the top-level object/],
    ['{questions: [1]}', /byte 1: expected a key \(a string\) in the top-level object, found 'q'/],
    ['', /unexpected end of file at byte 0: the JSON is truncated/],
  ];
  for (const [text, re] of cases) {
    const p = file(text);
    await assert.rejects(
      collect(p, 'questions', 5),
      (err: Error) => {
        assert.ok(err.message.startsWith(p), `${err.message} should start with the file name`);
        assert.match(err.message, re);
        return true;
      },
      text,
    );
  }
  await assert.rejects(collect(path.join(dir, 'missing.json'), 'questions'), /ENOENT/);
});

test('onItem errors and abort stop the scan', async () => {
  const p = file(JSON.stringify({ questions: [1, 2, 3, 4] }));
  await assert.rejects(
    scanJsonArray(p, {
      arrayKey: 'questions',
      onItem: (x) => {
        if (x === 3) throw new Error('bad item 3');
      },
    }),
    /bad item 3/,
  );
  const ac = new AbortController();
  ac.abort(new Error('stop now'));
  await assert.rejects(scanJsonArray(p, { arrayKey: 'questions', signal: ac.signal, onItem: () => {} }), /stop now/);
});
